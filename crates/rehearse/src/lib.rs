//! `ferry rehearse`: the real replication pipeline — preflight, schema, capture, snapshot copy,
//! catch-up under an optional synthetic write load, verification, cutover freezes — from a
//! database the user names (a Heroku fork, a restored snapshot, any PostgreSQL URL) into a
//! scratch target, timed stage by stage, with a projection for the real run.
//!
//! On the source it writes only Ferry's own objects (capture triggers and log, or slot and
//! publication; `ferry_rehearsal.load` for the synthetic load) and removes them at the end,
//! success or not; it freezes the source's role for a moment to time a cutover, and unfreezes
//! it. It refuses a standby, and a source with other sessions or writes (a live primary)
//! unless told the operator knows.

mod guard;
pub mod load;
mod local;
mod pipeline;
pub mod report;

use std::path::PathBuf;

use ferry_core::spec::CaptureMode;
use ferry_pg::PgUrl;

pub use guard::Traffic;
pub use local::{LocalServer, find_bin};
pub use pipeline::run;
pub use report::Report;

/// What to rehearse and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The copy of production to read (never the live primary).
    pub source: PgUrl,
    /// The scratch target; `None`: a local PostgreSQL started for the run.
    pub target: Option<PgUrl>,
    /// Folder with initdb, pg_ctl, pg_dump and psql (else found, see [`find_bin`]).
    pub pg_bin: Option<PathBuf>,
    /// Capture mode (`auto`: logical where the source allows it).
    pub capture: CaptureMode,
    /// Parallel copy sessions.
    pub parallelism: u32,
    /// The copy's read rate limit on the source, MB per second (the spec's
    /// `replication.max_copy_mb_per_second`).
    pub max_copy_mb_per_second: Option<u32>,
    /// Synthetic writes per second during the copy and the catch-up (0: none).
    pub load_per_second: u32,
    /// How long to stream under load after the catch-up, measuring lag.
    pub stream_seconds: u64,
    /// Cutover freezes to time.
    pub freezes: u32,
    /// The operator knows the source is a live primary.
    pub production: bool,
    /// Keep the local scratch server (and its data) after the run.
    pub keep_target: bool,
    /// The production database's size, when the source is smaller (a subset).
    pub production_bytes: Option<u64>,
    /// Production's write rate, for the catch-up projection (else the load's).
    pub production_writes_per_second: Option<f64>,
}

/// Why a rehearsal could not run.
#[derive(Debug, thiserror::Error)]
pub enum RehearseError {
    /// The source has traffic.
    #[error(
        "the source looks like a live primary with traffic ({evidence}); rehearse on a fork or a restored snapshot (heroku addons:create heroku-postgresql:<plan> --fork DATABASE_URL), or pass --i-know-this-is-production to go on anyway"
    )]
    LivePrimary {
        /// What was seen.
        evidence: String,
    },
    /// The source is a standby.
    #[error(
        "the source is a standby (in recovery): capture cannot be installed on it; name a fork or a restored snapshot, which accept writes"
    )]
    Standby,
    /// The given target holds tables.
    #[error(
        "the target {url} already holds {tables} table(s) (for example {example}); give an empty database, or leave --target-url out to let Ferry start a scratch PostgreSQL"
    )]
    TargetNotEmpty {
        /// The target, password redacted.
        url: String,
        /// How many tables.
        tables: i64,
        /// One of them.
        example: String,
    },
    /// PostgreSQL's programs are missing.
    #[error("{0}")]
    Tools(String),
    /// The scratch server could not be started.
    #[error("local scratch server: {0}")]
    Local(String),
    /// A PostgreSQL call failed.
    #[error(transparent)]
    Pg(#[from] ferry_pg::PgError),
    /// The replication engine failed.
    #[error(transparent)]
    Repl(#[from] ferry_replicator::ReplError),
    /// A query of the rehearsal's own failed.
    #[error("{what}: {detail}")]
    Sql {
        /// What was being done.
        what: String,
        /// The server's message.
        detail: String,
    },
}

impl RehearseError {
    fn sql(what: &str, e: &tokio_postgres::Error) -> Self {
        RehearseError::Sql {
            what: what.to_string(),
            detail: ferry_pg::describe(e),
        }
    }

    /// Whether a person must act before a rehearsal can run (as opposed to a failure).
    pub fn is_blocked(&self) -> bool {
        matches!(
            self,
            RehearseError::LivePrimary { .. }
                | RehearseError::Standby
                | RehearseError::TargetNotEmpty { .. }
                | RehearseError::Tools(_)
        )
    }
}
