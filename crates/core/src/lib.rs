//! Ferry's domain model: the migration spec users write, the migration state the steps share,
//! the store interface that persists it, and the stable error names the state machine matches.
//!
//! Nothing here talks to AWS, PostgreSQL or Heroku; adapters live in other crates.

pub mod approval;
pub mod clock;
pub mod cloud;
pub mod control;
pub mod endpoint;
pub mod errors;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod metrics;
pub mod params;
pub mod problems;
pub mod secret;
pub mod signing;
pub mod spec;
pub mod state;
pub mod store;
pub mod traffic;

pub use errors::StepErrorName;
pub use params::{ParamError, ParamStore, SecretError, SecretStore};
pub use problems::{Problem, Problems};
pub use spec::MigrationSpec;
pub use store::{MigrationStore, StoreError, StoreResult};
