//! Change capture on the source side. Both modes produce [`crate::ChangeBatch`]es of keys.

pub mod logical;
pub mod trigger;
