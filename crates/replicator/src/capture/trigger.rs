//! Trigger capture: works on stock Heroku Postgres (table owner, no superuser, no REPLICATION).
//!
//! A `ferry.changes` log on the capture side, and per table AFTER row triggers (running with
//! the writer's rights) that record the primary key of every inserted, updated (old and new key
//! when it changes) or deleted row, plus a statement trigger for TRUNCATE. Only keys are
//! logged: the applier fetches the current row, so hot rows coalesce and the target converges
//! to the source state.
//!
//! The layout is chosen for the writer's cost (`tests/bench/trigger-rowcost.sh`): a log without
//! an index, a single integer or uuid key in a typed column (jsonb only for other keys), and
//! one function per table and row image, so no function branches on the operation.
//!
//! The log is a queue: rows are deleted once the target has committed what they describe, so a
//! change committed late with a low id is never skipped.

use ferry_pg::catalog::{Table, quote_ident, quote_literal};
use tokio_postgres::Client;

use super::Waiting;
use crate::{
    ChangeBatch, KeyChange,
    error::{ReplError, ReplResult},
};

/// AFTER INSERT OR UPDATE, per row: logs the new key.
const TRIGGER: &str = "ferry_capture";
/// AFTER DELETE, per row: logs the old key.
const DELETE_TRIGGER: &str = "ferry_capture_delete";
/// AFTER UPDATE, per row, only when the key changed (the trigger's WHEN, evaluated without
/// calling a function): logs the old key. Fires after [`TRIGGER`] (triggers fire by name).
const REKEY_TRIGGER: &str = "ferry_capture_rekey";
/// AFTER TRUNCATE, per statement.
const TRUNCATE_TRIGGER: &str = "ferry_capture_truncate";

/// Every trigger Ferry's capture puts on a source table.
pub(crate) const OWN_TRIGGERS: [&str; 4] =
    [TRIGGER, DELETE_TRIGGER, REKEY_TRIGGER, TRUNCATE_TRIGGER];

/// How many log rows one read of the log brings into memory (see [`LogReader`]).
const WINDOW: i64 = 20_000;

/// A log row's key as a JSON array, NULL for a TRUNCATE: from whichever key column is set.
pub(crate) const KEY_SQL: &str = "CASE WHEN k IS NOT NULL THEN pg_catalog.jsonb_build_array(k) \
     WHEN u IS NOT NULL THEN pg_catalog.jsonb_build_array(u) ELSE pk END";

/// Which log column a table's key goes into. A typed column costs the writer less than
/// building a jsonb value in the trigger (about 0.9 µs a row here, see
/// `docs/benchmarks-trigger-floor.md`); the reader turns either into the same JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySlot {
    /// One smallint, integer or bigint column: `k bigint`.
    Integer,
    /// One uuid column: `u uuid`.
    Uuid,
    /// Anything else (several columns, other types): `pk jsonb`.
    Json,
}

impl KeySlot {
    fn of(t: &Table) -> Self {
        match t.primary_key.as_slice() {
            [only] => match t.column(only).map(|c| c.type_sql.as_str()) {
                Some("smallint" | "integer" | "bigint") => Self::Integer,
                Some("uuid") => Self::Uuid,
                _ => Self::Json,
            },
            _ => Self::Json,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Integer => "k",
            Self::Uuid => "u",
            Self::Json => "pk",
        }
    }
}

/// Creates the log, or brings one from an earlier layout (an identity primary key, jsonb keys
/// only) to this one. The log has no index: an index on a queue every write appends to cost
/// about 1.3 µs a row; the reader sorts a window of it instead.
const LOG_DDL: &str = "CREATE SCHEMA IF NOT EXISTS ferry;
     CREATE TABLE IF NOT EXISTS ferry.changes (
         id bigint GENERATED ALWAYS AS IDENTITY,
         rel text NOT NULL,
         k bigint,
         u uuid,
         pk jsonb,
         at timestamptz NOT NULL DEFAULT clock_timestamp())
       WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
     DO $d$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_attribute
                         WHERE attrelid = 'ferry.changes'::regclass AND attname = 'u'
                           AND NOT attisdropped) THEN
             ALTER TABLE ferry.changes ADD COLUMN IF NOT EXISTS k bigint,
                                       ADD COLUMN IF NOT EXISTS u uuid,
                                       DROP CONSTRAINT IF EXISTS changes_pkey,
                                       SET (autovacuum_vacuum_scale_factor = 0,
                                            autovacuum_vacuum_threshold = 10000);
         END IF;
     END $d$;
     -- The triggers run with the writer's rights (a SECURITY DEFINER function with a
     -- pinned search_path costs ~10% of pgbench throughput on every row): any role
     -- may append to the log. A forged entry only makes the applier re-read that key.
     GRANT USAGE ON SCHEMA ferry TO PUBLIC;
     GRANT INSERT ON ferry.changes TO PUBLIC;
     CREATE OR REPLACE FUNCTION ferry.capture_truncate() RETURNS trigger LANGUAGE plpgsql AS $f$
     BEGIN
         INSERT INTO ferry.changes (rel) VALUES (TG_ARGV[0]);
         RETURN NULL;
     END $f$;";

/// Installs the log and the triggers on every capture unit (idempotent; replaces the triggers
/// of an earlier layout).
pub async fn install(client: &Client, tables: &[Table]) -> ReplResult<()> {
    client
        .batch_execute(LOG_DDL)
        .await
        .map_err(ReplError::sql("create the change log"))?;
    for t in tables.iter().filter(|t| t.is_capture_unit()) {
        client
            .batch_execute(&capture_sql(t)?)
            .await
            .map_err(ReplError::sql(format!(
                "install capture on {}",
                t.display_name()
            )))?;
    }
    Ok(())
}

/// One table's functions and triggers, in one statement batch (one transaction: the table is
/// never without capture while they are replaced).
fn capture_sql(t: &Table) -> ReplResult<String> {
    if t.primary_key.is_empty() {
        return Err(ReplError::State(format!(
            "{} has no primary key; preflight reports this as a blocker",
            t.display_name()
        )));
    }
    let rel = quote_literal(&t.display_name());
    let columns = |row: &str| {
        t.primary_key
            .iter()
            .map(|c| format!("{row}.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let slot = KeySlot::of(t);
    let value = |row: &str| match slot {
        KeySlot::Json => format!("pg_catalog.jsonb_build_array({})", columns(row)),
        KeySlot::Integer | KeySlot::Uuid => columns(row),
    };
    let function = |suffix: &str, row: &str| {
        format!(
            "CREATE OR REPLACE FUNCTION ferry.capture_{oid}_{suffix}() RETURNS trigger
                 LANGUAGE plpgsql AS $f$
             BEGIN
                 INSERT INTO ferry.changes (rel, {col}) VALUES ({rel}, {value});
                 RETURN NULL;
             END $f$;",
            oid = t.oid,
            col = slot.column(),
            value = value(row),
        )
    };
    let q = t.qualified();
    let oid = t.oid;
    Ok(format!(
        "{new}
         {old}
         DROP TRIGGER IF EXISTS {TRIGGER} ON {q};
         DROP TRIGGER IF EXISTS {DELETE_TRIGGER} ON {q};
         DROP TRIGGER IF EXISTS {REKEY_TRIGGER} ON {q};
         DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {q};
         CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE ON {q}
             FOR EACH ROW EXECUTE FUNCTION ferry.capture_{oid}_new();
         CREATE TRIGGER {DELETE_TRIGGER} AFTER DELETE ON {q}
             FOR EACH ROW EXECUTE FUNCTION ferry.capture_{oid}_old();
         CREATE TRIGGER {REKEY_TRIGGER} AFTER UPDATE ON {q}
             FOR EACH ROW WHEN (ROW({old_keys}) IS DISTINCT FROM ROW({new_keys}))
             EXECUTE FUNCTION ferry.capture_{oid}_old();
         CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {q}
             FOR EACH STATEMENT EXECUTE FUNCTION ferry.capture_truncate({rel});
         DROP FUNCTION IF EXISTS ferry.capture_{oid}();",
        new = function("new", "NEW"),
        old = function("old", "OLD"),
        old_keys = columns("OLD"),
        new_keys = columns("NEW"),
    ))
}

/// Removes the triggers, their functions and the log. Safe to run twice.
pub async fn uninstall(client: &Client, tables: &[Table]) -> ReplResult<()> {
    for t in tables.iter().filter(|t| t.is_capture_unit()) {
        let q = t.qualified();
        client
            .batch_execute(&format!(
                "DROP TRIGGER IF EXISTS {TRIGGER} ON {q};
                 DROP TRIGGER IF EXISTS {DELETE_TRIGGER} ON {q};
                 DROP TRIGGER IF EXISTS {REKEY_TRIGGER} ON {q};
                 DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {q};"
            ))
            .await
            .map_err(ReplError::sql(format!(
                "remove capture from {}",
                t.display_name()
            )))?;
    }
    client
        .batch_execute(
            "DO $d$ BEGIN
                 IF to_regclass('ferry.changes') IS NOT NULL THEN DROP TABLE ferry.changes; END IF;
             END $d$;
             DO $d$ DECLARE f record; BEGIN
                 FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                           JOIN pg_namespace n ON n.oid = p.pronamespace
                          WHERE n.nspname = 'ferry' AND p.proname LIKE 'capture\\_%' LOOP
                     EXECUTE 'DROP FUNCTION ' || f.sig;
                 END LOOP;
             END $d$;",
        )
        .await
        .map_err(ReplError::sql("remove the change log"))
}

/// One log row read but not yet handed out.
#[derive(Debug, Clone)]
struct LogRow {
    id: i64,
    location: String,
    rel: String,
    key: Option<serde_json::Value>,
    at: chrono::DateTime<chrono::Utc>,
}

/// Reads the log oldest id first. The log has no index, so every read sorts all of it: a
/// reader brings up to [`WINDOW`] rows into memory at a time and hands them out in batches,
/// so a backlog of millions (the copy's) costs a scan per window, not one per batch. It reads
/// again only once its window is handed out; a change committed meanwhile with a lower id
/// waits in the log until then (nothing is deleted before it is applied).
#[derive(Debug, Default)]
pub struct LogReader {
    pending: std::collections::VecDeque<LogRow>,
}

impl LogReader {
    /// The next `limit` log rows as a batch of keys.
    pub async fn read_batch(&mut self, client: &Client, limit: i64) -> ReplResult<ChangeBatch> {
        if self.pending.is_empty() {
            self.fill(client, WINDOW.max(limit)).await?;
        }
        let take = usize::try_from(limit).unwrap_or(0).min(self.pending.len());
        let mut batch = ChangeBatch::default();
        for row in self.pending.drain(..take) {
            batch.ids.push(row.id);
            batch.locations.push(row.location);
            batch.oldest = Some(batch.oldest.map_or(row.at, |o| o.min(row.at)));
            batch.changes.push(match row.key {
                Some(key) => KeyChange::Key { rel: row.rel, key },
                None => KeyChange::Truncate { rel: row.rel },
            });
        }
        batch.position = batch.ids.iter().max().map(|m| m.to_string());
        Ok(batch)
    }

    /// Drops what was read and not handed out (after a failed apply: the next read starts
    /// again from the oldest row in the log).
    pub fn forget(&mut self) {
        self.pending.clear();
    }

    async fn fill(&mut self, client: &Client, limit: i64) -> ReplResult<()> {
        // Only ids and locations are sorted (a top-N sort of narrow rows stays within a
        // default work_mem of 4 MB for 20,000 rows; whole rows would spill a backlog of millions
        // to disk on every read), then the window's rows are fetched by location.
        let rows = client
            .query(
                &format!(
                    "SELECT id, ctid::text, rel, {KEY_SQL}, at FROM ferry.changes
                      WHERE ctid = ANY(ARRAY(SELECT ctid FROM ferry.changes ORDER BY id LIMIT $1))"
                ),
                &[&limit],
            )
            .await
            .map_err(ReplError::sql("read the change log"))?;
        let mut rows: Vec<_> = rows
            .into_iter()
            .map(|r| LogRow {
                id: r.get(0),
                location: r.get(1),
                rel: r.get(2),
                key: r.get(3),
                at: r.get(4),
            })
            .collect();
        rows.sort_unstable_by_key(|r| r.id);
        self.pending.extend(rows);
        Ok(())
    }
}

/// Deletes log rows the target has committed: by location (the log has no index), each only
/// if it still holds its id (a row moved by a VACUUM FULL stays, to be applied again).
pub async fn ack(client: &Client, batch: &ChangeBatch) -> ReplResult<()> {
    if batch.ids.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "DELETE FROM ferry.changes WHERE ctid = ANY($1::text[]::tid[]) AND id = ANY($2)",
            &[&batch.locations, &batch.ids],
        )
        .await
        .map_err(ReplError::sql("trim the change log"))?;
    Ok(())
}

/// The highest id the log has handed out (the drain target for cutover), and how many
/// changes wait and since when: one scan of the log.
pub async fn backlog(client: &Client) -> ReplResult<Backlog> {
    let row = client
        .query_one(
            "SELECT (SELECT last_value FROM ferry.changes_id_seq), count(*),
                    extract(epoch FROM clock_timestamp() - min(at))::float8
               FROM ferry.changes",
            &[],
        )
        .await
        .map_err(ReplError::sql("measure the change log"))?;
    Ok(Backlog {
        head: row.get(0),
        waiting: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        oldest_age_seconds: row.get(2),
    })
}

/// The state of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// The last id handed out (a change committed after this has a higher id).
    pub head: i64,
    /// Log rows waiting.
    pub waiting: u64,
    /// Age of the oldest waiting row, in seconds.
    pub oldest_age_seconds: Option<f64>,
}

/// Whether trigger capture's change log exists on this side.
pub async fn is_installed(client: &Client) -> ReplResult<bool> {
    Ok(client
        .query_one("SELECT to_regclass('ferry.changes') IS NOT NULL", &[])
        .await
        .map_err(ReplError::sql("look for the change log"))?
        .get(0))
}

/// Which of `keys` (canonical texts, see [`crate::verify::key_text`]) of `t` have a change
/// waiting in the log, and whether a TRUNCATE of it waits (then every key does). For a side
/// with trigger capture installed (see [`is_installed`]; the caller knows its mode).
pub async fn waiting(client: &Client, t: &Table, keys: &[String]) -> ReplResult<Waiting> {
    if keys.is_empty() {
        return Ok(Waiting::complete());
    }
    let canonical = crate::keys::canonical(t, "key")?;
    let sql = format!(
        "SELECT coalesce(bool_or(key IS NULL), false),
                coalesce(array_agg(DISTINCT c) FILTER (WHERE c = ANY($2::text[])), '{{}}')
           FROM (SELECT key, CASE WHEN key IS NOT NULL THEN {canonical} END AS c
                   FROM (SELECT {KEY_SQL} AS key FROM ferry.changes WHERE rel = $1) k) s"
    );
    let row = client
        .query_one(&sql, &[&t.display_name(), &keys])
        .await
        .map_err(ReplError::sql(format!(
            "look for changes of {} in flight",
            t.display_name()
        )))?;
    Ok(Waiting {
        truncate: row.get(0),
        keys: row.get::<_, Vec<String>>(1).into_iter().collect(),
        complete: true,
    })
}

/// The log's last id handed out: once nothing at or below it waits, every change committed
/// before this call has been applied (see [`applied_past`]).
pub async fn mark(client: &Client) -> ReplResult<i64> {
    Ok(client
        .query_one("SELECT last_value FROM ferry.changes_id_seq", &[])
        .await
        .map_err(ReplError::sql("read the change log's head"))?
        .get(0))
}

/// Whether every change up to `mark` has been applied and trimmed from the log.
pub async fn applied_past(client: &Client, mark: i64) -> ReplResult<bool> {
    Ok(client
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM ferry.changes WHERE id <= $1)",
            &[&mark],
        )
        .await
        .map_err(ReplError::sql("look for changes in flight"))?
        .get(0))
}
