//! Trigger capture: works on stock Heroku Postgres (table owner, no superuser, no REPLICATION).
//!
//! A `ferry.changes` log on the capture side, and per table an AFTER row trigger (running with
//! the writer's rights) that records
//! the primary key of every inserted, updated (old and new key when it changes) or deleted row,
//! plus a statement trigger for TRUNCATE. Only keys are logged: the applier fetches the current
//! row, so hot rows coalesce and the target converges to the source state.
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

const TRIGGER: &str = "ferry_capture";
const TRUNCATE_TRIGGER: &str = "ferry_capture_truncate";

/// Installs the log and the triggers on every capture unit (idempotent).
pub async fn install(client: &Client, tables: &[Table]) -> ReplResult<()> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ferry;
             CREATE TABLE IF NOT EXISTS ferry.changes (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 rel text NOT NULL,
                 pk jsonb,
                 at timestamptz NOT NULL DEFAULT clock_timestamp());
             -- The triggers run with the writer's rights (a SECURITY DEFINER function with a
             -- pinned search_path costs ~10% of pgbench throughput on every row): any role
             -- may append to the log. A forged entry only makes the applier re-read that key.
             GRANT USAGE ON SCHEMA ferry TO PUBLIC;
             GRANT INSERT ON ferry.changes TO PUBLIC;",
        )
        .await
        .map_err(ReplError::sql("create the change log"))?;
    for t in tables.iter().filter(|t| t.is_capture_unit()) {
        if t.primary_key.is_empty() {
            return Err(ReplError::State(format!(
                "{} has no primary key; preflight reports this as a blocker",
                t.display_name()
            )));
        }
        let func = format!("ferry.capture_{}", t.oid);
        let rel = quote_literal(&t.display_name());
        let keys = |row: &str| {
            t.primary_key
                .iter()
                .map(|c| format!("{row}.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (new_keys, old_keys) = (keys("NEW"), keys("OLD"));
        let sql = format!(
            "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN
                 IF TG_OP = 'TRUNCATE' THEN
                     INSERT INTO ferry.changes (rel, pk) VALUES ({rel}, NULL);
                 ELSIF TG_OP = 'INSERT' THEN
                     INSERT INTO ferry.changes (rel, pk) VALUES ({rel}, pg_catalog.jsonb_build_array({new_keys}));
                 ELSIF TG_OP = 'DELETE' THEN
                     INSERT INTO ferry.changes (rel, pk) VALUES ({rel}, pg_catalog.jsonb_build_array({old_keys}));
                 ELSE
                     INSERT INTO ferry.changes (rel, pk) VALUES ({rel}, pg_catalog.jsonb_build_array({new_keys}));
                     IF ROW({old_keys}) IS DISTINCT FROM ROW({new_keys}) THEN
                         INSERT INTO ferry.changes (rel, pk) VALUES ({rel}, pg_catalog.jsonb_build_array({old_keys}));
                     END IF;
                 END IF;
                 RETURN NULL;
             END $f$;
             DROP TRIGGER IF EXISTS {TRIGGER} ON {q};
             CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {q}
                 FOR EACH ROW EXECUTE FUNCTION {func}();
             DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {q};
             CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {q}
                 FOR EACH STATEMENT EXECUTE FUNCTION {func}();",
            q = t.qualified(),
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(ReplError::sql(format!(
                "install capture on {}",
                t.display_name()
            )))?;
    }
    Ok(())
}

/// Removes the triggers, their functions and the log. Safe to run twice.
pub async fn uninstall(client: &Client, tables: &[Table]) -> ReplResult<()> {
    for t in tables.iter().filter(|t| t.is_capture_unit()) {
        client
            .batch_execute(&format!(
                "DROP TRIGGER IF EXISTS {TRIGGER} ON {q}; DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {q};",
                q = t.qualified()
            ))
            .await
            .map_err(ReplError::sql(format!("remove capture from {}", t.display_name())))?;
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

/// Reads the oldest `limit` committed log rows as a batch of keys.
pub async fn read_batch(client: &Client, limit: i64) -> ReplResult<ChangeBatch> {
    let rows = client
        .query(
            "SELECT id, rel, pk, at FROM ferry.changes ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(ReplError::sql("read the change log"))?;
    let mut batch = ChangeBatch::default();
    for r in rows {
        let id: i64 = r.get(0);
        let rel: String = r.get(1);
        let pk: Option<serde_json::Value> = r.get(2);
        let at: chrono::DateTime<chrono::Utc> = r.get(3);
        batch.ids.push(id);
        batch.oldest = Some(
            batch
                .oldest
                .map_or(at, |o: chrono::DateTime<chrono::Utc>| o.min(at)),
        );
        batch.changes.push(match pk {
            Some(key) => KeyChange::Key { rel, key },
            None => KeyChange::Truncate { rel },
        });
    }
    batch.position = batch.ids.iter().max().map(|m| m.to_string());
    Ok(batch)
}

/// Deletes log rows the target has committed.
pub async fn ack(client: &Client, ids: &[i64]) -> ReplResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    client
        .execute("DELETE FROM ferry.changes WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(ReplError::sql("trim the change log"))?;
    Ok(())
}

/// The highest id the log has handed out (the drain target for cutover), and the oldest
/// unapplied change's age and an upper bound of how many are waiting.
pub async fn backlog(client: &Client) -> ReplResult<Backlog> {
    let row = client
        .query_one(
            "SELECT (SELECT last_value FROM ferry.changes_id_seq),
                    (SELECT min(id) FROM ferry.changes), (SELECT max(id) FROM ferry.changes),
                    extract(epoch FROM clock_timestamp() - (SELECT at FROM ferry.changes ORDER BY id LIMIT 1))::float8",
            &[],
        )
        .await
        .map_err(ReplError::sql("measure the change log"))?;
    let min: Option<i64> = row.get(1);
    let max: Option<i64> = row.get(2);
    Ok(Backlog {
        head: row.get(0),
        waiting: match (min, max) {
            (Some(a), Some(b)) => (b - a + 1) as u64,
            _ => 0,
        },
        oldest_age_seconds: row.get(3),
        lowest_waiting: min,
    })
}

/// The state of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// The last id handed out (a change committed after this has a higher id).
    pub head: i64,
    /// Upper bound of log rows waiting.
    pub waiting: u64,
    /// Age of the oldest waiting row, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// The lowest waiting id.
    pub lowest_waiting: Option<i64>,
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
    let canonical = crate::keys::canonical(t, "pk")?;
    let sql = format!(
        "SELECT coalesce(bool_or(pk IS NULL), false),
                coalesce(array_agg(DISTINCT c) FILTER (WHERE c = ANY($2::text[])), '{{}}')
           FROM (SELECT pk, CASE WHEN pk IS NOT NULL
                                 THEN {canonical} END AS c
                   FROM ferry.changes WHERE rel = $1) s"
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
    Ok(backlog(client).await?.head)
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
