//! Ferry's PostgreSQL side. Today: TLS connections to the source and target and what a
//! server says about itself. Preflight, copy, capture, apply and verify build on these.

pub mod catalog;
mod connect;
pub mod freeze;
pub mod grants;
pub mod net;
pub mod preflight;
pub mod rds_ca;
pub mod rds_secret;
pub mod wake;
pub mod walstream;

pub use connect::{PgUrl, TlsCheck, client_tls, redact};
use tokio_postgres::Client;

/// Why a PostgreSQL operation failed. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL cannot be used.
    #[error("database URL {url} is not usable: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// TLS could not be set up.
    #[error("TLS setup for {url} failed: {reason}")]
    Tls {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server could not be reached or refused us.
    #[error("connect to {url}: {}", describe(source))]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A query failed.
    #[error("{what}: {}", describe(source))]
    Query {
        /// What we were doing, as a verb phrase.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A replication-protocol session (see [`walstream`]) failed.
    #[error("replication session to {url}: {what}: {detail}")]
    Replication {
        /// The URL, password redacted.
        url: String,
        /// What we were doing.
        what: String,
        /// What went wrong.
        detail: String,
        /// The server's SQLSTATE, or [`walstream::LOST`] for a broken connection.
        code: Option<String>,
    },
    /// Something the server should have done in time did not happen.
    #[error("{what}")]
    Stuck {
        /// What did not happen.
        what: String,
    },
}

impl PgError {
    /// Whether the server refused the login (wrong password or user: SQLSTATE 28P01/28000),
    /// as after Heroku rotated the credentials.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            PgError::Connect { source, .. } | PgError::Query { source, .. } => {
                is_auth_error(source)
            }
            PgError::Replication { code: Some(c), .. } => c == "28P01" || c == "28000",
            _ => false,
        }
    }

    /// The stable Step Functions error name.
    pub fn step_error_name(&self) -> &'static str {
        match self {
            PgError::InvalidUrl { .. } => "Ferry.Blocked.InvalidUrl",
            PgError::Tls { .. } => "Ferry.Blocked.Tls",
            PgError::Connect { .. } => "Ferry.Retryable.PgConnect",
            PgError::Query { source, .. } if is_connection_lost(source) => {
                "Ferry.Retryable.PgConnect"
            }
            PgError::Query { .. } => "Ferry.Failed.PgQuery",
            // Lost, shut down, or the slot still held by a walsender whose client died (55006).
            PgError::Replication { code: Some(c), .. }
                if c == walstream::LOST || c.starts_with("57P") || c == "55006" =>
            {
                "Ferry.Retryable.PgConnect"
            }
            PgError::Replication { code: None, .. } => "Ferry.Retryable.PgConnect",
            PgError::Replication { .. } => "Ferry.Failed.PgQuery",
            PgError::Stuck { .. } => "Ferry.Failed.PgStuck",
        }
    }
}

/// Whether the session is gone (closed, or ended by the server: an administrator, a
/// failover, a credential rotation) rather than the statement failing.
pub fn is_connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.is_closed()
        || matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN
        )
}

/// Whether `e` is the server refusing a login.
pub fn is_auth_error(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

/// The driver's error with its cause chain (tokio-postgres' own Display says only "db error"
/// or "error performing TLS handshake").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({}): {}", db.message(), db.code().code(), db.severity());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What a server says about itself and this session.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150018 or 170011.
    pub version_num: i32,
    /// The major version, e.g. 15 or 17.
    pub major: i32,
    /// `wal_level`: `replica` on stock Heroku, `logical` where slots are possible.
    pub wal_level: String,
    /// Whether this session is encrypted (from `pg_stat_ssl`).
    pub ssl: bool,
    /// The TLS version of this session, if encrypted.
    pub ssl_version: Option<String>,
}

/// Reads version, `wal_level` and this session's TLS state.
pub async fn server_info(client: &Client) -> Result<ServerInfo, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int,
                    current_setting('wal_level'),
                    s.ssl, s.version
               FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "read server version and TLS state",
            source,
        })?;
    let version_num: i32 = row.get(0);
    Ok(ServerInfo {
        version_num,
        major: version_num / 10_000,
        wal_level: row.get(1),
        ssl: row.get(2),
        ssl_version: row.get(3),
    })
}
