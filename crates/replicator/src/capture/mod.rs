//! Change capture on the source side. Both modes produce [`crate::ChangeBatch`]es of keys.

use std::collections::BTreeSet;

pub mod logical;
pub mod stream;
pub mod trigger;

/// What waits in a capture for some keys of one table (see [`trigger::waiting`] and
/// [`logical::waiting`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    /// A TRUNCATE of the table waits: every key of it does.
    pub truncate: bool,
    /// The keys (canonical texts) with a change waiting.
    pub keys: BTreeSet<String>,
    /// Whether everything waiting was looked at (a bounded read of a long backlog may not).
    pub complete: bool,
}

impl Waiting {
    /// Nothing waits, and that is certain.
    pub fn complete() -> Self {
        Self {
            complete: true,
            ..Self::default()
        }
    }

    /// Whether a change for `key` waits.
    pub fn has(&self, key: &str) -> bool {
        self.truncate || self.keys.contains(key)
    }

    /// Adds what `other` saw (two looks around a comparison).
    pub fn merge(&mut self, other: Waiting) {
        self.truncate |= other.truncate;
        self.keys.extend(other.keys);
        self.complete &= other.complete;
    }
}
