//! Waking the replication worker without waiting for its next poll: the cutover and the
//! rollback store a command in the state table (the record), then NOTIFY on the source's
//! `ferry_wake` channel with the migration id; the worker LISTENs there
//! ([`crate::PgUrl::listen`]) and reads its command at once instead of up to a poll interval
//! later, inside the write freeze. A lost notification costs only that interval: the worker
//! still polls.

use tokio_postgres::Client;

use crate::PgError;

/// The channel the worker listens on.
pub const CHANNEL: &str = "ferry_wake";

/// Tells the worker of `migration_id` listening on this database to read its command now.
pub async fn wake(client: &Client, migration_id: &str) -> Result<(), PgError> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &migration_id])
        .await
        .map(|_| ())
        .map_err(|source| PgError::Query {
            what: "wake the worker (pg_notify)",
            source,
        })
}
