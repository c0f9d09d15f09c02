//! The replication engine: keeps the target an exact copy of the source until cutover.
//!
//! Pieces, in the order a migration uses them: [`schema`] (pre-data), capture
//! ([`capture::trigger`]) installed before the [`copy`] (a consistent snapshot copy), schema
//! post-data, then the [`apply`] loop, [`verify`] and sequence sync. [`engine::Replicator`]
//! strings them together with resumable stage markers ([`bookkeeping`]).

pub mod apply;
pub mod bookkeeping;
pub mod capture;
pub mod copy;
pub mod drain_check;
pub mod engine;
mod error;
pub mod fence;
pub mod keys;
mod pipe;
pub mod postdata;
pub mod runner;
pub mod schema;
pub mod throttle;
pub mod verify;
pub mod verify_job;
pub mod watch;

pub use error::{ReplError, ReplResult};

/// One captured change: a key of a table, or a TRUNCATE of it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyChange {
    /// The row with this primary key (a JSON array, one element per key column) changed.
    Key {
        /// `schema.name` of the capture unit.
        rel: String,
        /// The primary-key values.
        key: serde_json::Value,
    },
    /// The table was truncated.
    Truncate {
        /// `schema.name` of the capture unit.
        rel: String,
    },
}

/// A batch of changes read from the capture side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeBatch {
    /// Capture-side ids to acknowledge once applied (trigger log ids).
    pub ids: Vec<i64>,
    /// Where each of `ids` lies in the trigger log (`ctid` text, same order): the log has no
    /// index, so it is trimmed by row location, each checked against its id.
    pub locations: Vec<String>,
    /// The changes, in capture order.
    pub changes: Vec<KeyChange>,
    /// The stream position this batch reaches (None for an empty batch).
    pub position: Option<String>,
    /// When the oldest change in the batch happened.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    /// Source transaction ids (32-bit, as logical decoding gives them) of the batch's decoded
    /// transactions that carry changes. A commit is decoded once its record is flushed, a
    /// moment before it becomes visible to other sessions; the apply fetches the rows only
    /// once every one of these is visible (see `apply`), or it would miss their writes.
    pub commits: Vec<u32>,
}
