//! The replicator's errors, each with a stable Step Functions error name.

use ferry_core::StepErrorName;
use ferry_pg::PgError;

/// Why replication work failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// A PostgreSQL connection or query failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A SQL statement failed.
    #[error("{what}: {}", ferry_pg::describe(source))]
    Sql {
        /// What we were doing, as a verb phrase.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// pg_dump or psql failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// Which program.
        tool: String,
        /// Its exit status and stderr (no passwords: they travel in PGPASSWORD).
        detail: String,
    },
    /// The source's schema changed under replication.
    #[error(
        "schema of {tables} changed on the source; apply the same DDL on the target, then resume"
    )]
    SchemaChanged {
        /// The tables whose shape differs.
        tables: String,
    },
    /// Something the replicator needs is missing or inconsistent.
    #[error("{0}")]
    State(String),
}

impl ReplError {
    /// Wraps a driver error with what we were doing.
    pub fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ReplError {
        let what = what.into();
        move |source| ReplError::Sql { what, source }
    }
}

impl ReplError {
    /// Whether a server refused a login (see [`PgError::is_auth_failure`]).
    pub fn is_auth_failure(&self) -> bool {
        match self {
            ReplError::Pg(e) => e.is_auth_failure(),
            ReplError::Sql { source, .. } => ferry_pg::is_auth_error(source),
            _ => false,
        }
    }
}

impl StepErrorName for ReplError {
    fn step_error_name(&self) -> &'static str {
        match self {
            ReplError::Pg(e) => e.step_error_name(),
            ReplError::Sql { source, .. } if ferry_pg::is_connection_lost(source) => {
                "Ferry.Retryable.PgConnect"
            }
            ReplError::Sql { .. } => "Ferry.Failed.ReplicationSql",
            ReplError::Tool { .. } => "Ferry.Failed.ReplicationTool",
            ReplError::SchemaChanged { .. } => "Ferry.Blocked.SchemaChanged",
            ReplError::State(_) => "Ferry.Failed.ReplicationState",
        }
    }
}

/// Result of replication work.
pub type ReplResult<T> = Result<T, ReplError>;
