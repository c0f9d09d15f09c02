//! The database endpoint the AWS app fleet connects to instead of a database host: PgBouncer
//! in transaction pooling with protocol-level prepared statements, run by a small supervisor
//! that Ferry's cutover steers through the state store (see [`ferry_core::endpoint`]).
//!
//! - [`ini`] renders `pgbouncer.ini` and the auth file (pure; secrets quoted, never logged);
//! - [`admin`] speaks to PgBouncer's admin console (PAUSE with a bound, RESUME, RELOAD, SHOW);
//! - [`supervisor`] runs PgBouncer and converges it to the desired state, reporting each step;
//! - [`control`] takes desired states sent directly by the cutover (signed), for the loop.

pub mod admin;
pub mod control;
pub mod ini;
pub mod supervisor;

use ferry_core::endpoint::Backend;

/// Why an endpoint task could not do what it was asked. Messages never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A setting or URL cannot be used.
    #[error("{field}: {reason}")]
    Config {
        /// The parameter or setting.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// SSM could not be read.
    #[error("read the endpoint's parameters: {0}")]
    Params(String),
    /// A file or process could not be handled.
    #[error("{0}")]
    Io(String),
    /// PgBouncer's console refused or failed a command.
    #[error("PgBouncer console, {what}: {reason}")]
    Admin {
        /// The command.
        what: String,
        /// Its error.
        reason: String,
    },
    /// Open transactions held the pause past its bound; the endpoint was resumed.
    #[error(
        "pause timed out after {ms} ms with {busy} server connection(s) still in a transaction; resumed"
    )]
    PauseTimeout {
        /// The bound.
        ms: u64,
        /// Server connections still active when it ran out.
        busy: usize,
    },
    /// The backend to switch to refused our login or did not answer; nothing was switched.
    #[error("the {backend} database refused the endpoint's login: {reason}")]
    BackendRefused {
        /// Which backend.
        backend: Backend,
        /// The error (no password).
        reason: String,
    },
    /// PgBouncer exited.
    #[error("pgbouncer exited: {0}")]
    PgBouncerExited(String),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] ferry_core::StoreError),
}
