//! Ferry's own tables on a server it writes to: stage markers, the copy plan, and the applied
//! position, each committed in the same transaction as the data it describes.

use tokio_postgres::GenericClient;

use crate::error::{ReplError, ReplResult};

/// Creates the `ferry` schema and bookkeeping tables if missing.
pub async fn ensure(client: &impl GenericClient) -> ReplResult<()> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ferry;
             CREATE TABLE IF NOT EXISTS ferry.state (
                 key text PRIMARY KEY,
                 value text NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE TABLE IF NOT EXISTS ferry.copy_chunks (
                 rel text NOT NULL,
                 chunk int NOT NULL,
                 lo bigint,
                 hi bigint,
                 done boolean NOT NULL DEFAULT false,
                 rows bigint NOT NULL DEFAULT 0,
                 bytes bigint NOT NULL DEFAULT 0,
                 PRIMARY KEY (rel, chunk));
             CREATE TABLE IF NOT EXISTS ferry.post_done (
                 key text PRIMARY KEY,
                 done_at timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE TABLE IF NOT EXISTS ferry.apply_state (
                 stream text PRIMARY KEY,
                 position text NOT NULL,
                 changes bigint NOT NULL DEFAULT 0,
                 applied_at timestamptz NOT NULL DEFAULT clock_timestamp());",
        )
        .await
        .map_err(ReplError::sql("create ferry bookkeeping tables"))
}

/// Reads a stage marker.
pub async fn get(client: &impl GenericClient, key: &str) -> ReplResult<Option<String>> {
    Ok(client
        .query_opt("SELECT value FROM ferry.state WHERE key = $1", &[&key])
        .await
        .map_err(ReplError::sql("read ferry state"))?
        .map(|r| r.get(0)))
}

/// Writes a stage marker.
pub async fn set(client: &impl GenericClient, key: &str, value: &str) -> ReplResult<()> {
    client
        .execute(
            "INSERT INTO ferry.state (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = clock_timestamp()",
            &[&key, &value],
        )
        .await
        .map_err(ReplError::sql("write ferry state"))?;
    Ok(())
}

/// The last applied position of a change stream, and how many changes it has applied.
pub async fn applied(
    client: &impl GenericClient,
    stream: &str,
) -> ReplResult<Option<(String, i64)>> {
    Ok(client
        .query_opt(
            "SELECT position, changes FROM ferry.apply_state WHERE stream = $1",
            &[&stream],
        )
        .await
        .map_err(ReplError::sql("read applied position"))?
        .map(|r| (r.get(0), r.get(1))))
}

/// Records the applied position; call inside the transaction that applied the changes.
pub async fn set_applied(
    client: &impl GenericClient,
    stream: &str,
    position: &str,
    changes: i64,
) -> ReplResult<()> {
    client
        .execute(
            "INSERT INTO ferry.apply_state (stream, position, changes) VALUES ($1, $2, $3)
             ON CONFLICT (stream) DO UPDATE
                SET position = EXCLUDED.position,
                    changes = ferry.apply_state.changes + EXCLUDED.changes,
                    applied_at = clock_timestamp()",
            &[&stream, &position, &changes],
        )
        .await
        .map_err(ReplError::sql("record applied position"))?;
    Ok(())
}
