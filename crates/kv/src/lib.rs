//! Heroku Key-Value Store (Redis) → Amazon ElastiCache, the data part: a small RESP client over
//! TLS with AUTH ([`conn`]), the key copy that keeps every value's type and TTL
//! (SCAN, `DUMP`/`PTTL`, `RESTORE … REPLACE`, pipelined; [`copy`]), the live sync from keyspace
//! notifications with a full pass after every gap ([`sync`]), and the check that the two
//! sides hold the same keys and values ([`verify`]); job queues move by hand-over, each job
//! exactly once ([`handover`]).
//!
//! Our own client rather than a crate: Ferry needs a handful of commands, pipelining, and the
//! same TLS checks as its PostgreSQL connections (`ferry_pg::client_tls`), and nothing of a
//! general client's pooling or cluster routing.

pub mod conn;
pub mod copy;
pub mod deny;
pub mod glob;
pub mod handover;
pub mod probe;
pub mod proxy;
pub mod resp;
pub mod sync;
pub mod url;
pub mod verify;

pub use conn::Conn;
pub use url::RedisUrl;

/// A key for a message: printable (escaped), cut at 80 characters. Keys only (queue and key
/// names), never values.
pub fn shown(key: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(key).escape_debug().collect();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// Why a Redis operation failed. Messages name the server by its redacted URL, never a
/// password.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The URL cannot be used.
    #[error("Redis URL {url}: {reason}")]
    BadUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The server could not be reached or the session broke.
    #[error("Redis {server}: {reason}")]
    Io {
        /// The server (redacted URL).
        server: String,
        /// What happened.
        reason: String,
    },
    /// The server answered with an error.
    #[error("Redis {server} refused {command}: {message}")]
    Refused {
        /// The server (redacted URL).
        server: String,
        /// The command (name only, never arguments).
        command: String,
        /// The server's message.
        message: String,
    },
    /// The server's answer is not what the command returns.
    #[error("Redis {server}: unexpected answer to {command}: {answer}")]
    Protocol {
        /// The server (redacted URL).
        server: String,
        /// The command (name only).
        command: String,
        /// What came back (shape only).
        answer: String,
    },
}

/// Result of a Redis operation.
pub type KvResult<T> = Result<T, KvError>;
