//! Logical capture: a publication and a pgoutput slot on the source, read through the SQL
//! interface (`pg_logical_slot_peek_binary_changes`), so no replication-protocol client is
//! needed. Needs `wal_level=logical` and a role with REPLICATION (or superuser): RDS,
//! self-hosted, or Heroku after a support grant. Cheaper on the source than triggers.
//!
//! Decoded changes become the same key batches as trigger capture; the slot is advanced only
//! after the target has committed, to the end of the last whole transaction applied.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use ferry_pg::{
    catalog::{Table, quote_literal},
    walstream::{PG_EPOCH_MICROS, lsn_text},
};
use tokio_postgres::Client;

use super::Waiting;
use crate::{
    ChangeBatch, KeyChange,
    error::{ReplError, ReplResult},
};

/// The publication name (publications belong to one database).
pub const PUBLICATION: &str = "ferry_pub";

/// The slot name for a source database. Slots are cluster-wide, so the name carries the
/// database: two migrations from one server never touch each other's slot.
pub fn slot_name(database: &str) -> String {
    let clean: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("ferry_{clean}");
    name.truncate(63);
    name
}

/// Creates the publication over every capture unit and the slot (idempotent).
pub async fn install(client: &Client, slot: &str, tables: &[Table]) -> ReplResult<()> {
    let column_lists = client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 150000",
            &[],
        )
        .await
        .map_err(ReplError::sql("read the server version"))?
        .get(0);
    let units: Vec<String> = tables
        .iter()
        .filter(|t| t.is_capture_unit())
        .map(|t| published(t, column_lists))
        .collect();
    if units.is_empty() {
        return Err(ReplError::State("no tables to publish".into()));
    }
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&PUBLICATION],
        )
        .await
        .map_err(ReplError::sql("look for the publication"))?
        .get(0);
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {PUBLICATION} FOR TABLE {} WITH (publish_via_partition_root = true)",
                units.join(", ")
            ))
            .await
            .map_err(ReplError::sql("create the publication"))?;
    }
    let slot_exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(ReplError::sql("look for the slot"))?
        .get(0);
    if !slot_exists {
        client
            .query_one(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .map_err(ReplError::sql("create the replication slot"))?;
    }
    Ok(())
}

/// A table as the publication lists it. The apply reads rows from the source by key, so only
/// the key is worth decoding and sending: on PostgreSQL 15+ a plain table whose replica
/// identity is its primary key publishes the key columns only. Anything else publishes every
/// column — a column list that does not cover the replica identity makes the source refuse
/// UPDATE and DELETE, and a partition's identity may differ from its root's.
fn published(t: &Table, column_lists: bool) -> String {
    let keyed = column_lists
        && t.kind == ferry_pg::catalog::TableKind::Ordinary
        && t.replica_identity == 'd'
        && !t.primary_key.is_empty();
    if !keyed {
        return t.qualified();
    }
    let cols: Vec<String> = t
        .primary_key
        .iter()
        .map(|c| ferry_pg::catalog::quote_ident(c))
        .collect();
    format!("{} ({})", t.qualified(), cols.join(", "))
}

/// Whether `slot` exists in this database.
pub async fn slot_exists(client: &Client, slot: &str) -> ReplResult<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots
                             WHERE slot_name = $1 AND database = current_database())",
            &[&slot],
        )
        .await
        .map_err(ReplError::sql("look for the slot"))?
        .get(0))
}

/// Drops the slot and the publication. Safe to run twice. A slot still streamed by a session
/// (a worker's walsender, or one whose client died and the server has not noticed yet) is
/// waited for, then that session is ended: a slot cannot be dropped while in use.
pub async fn uninstall(client: &Client, slot: &str) -> ReplResult<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let pid: Option<i32> = client
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots
                  WHERE slot_name = $1 AND database = current_database()",
                &[&slot],
            )
            .await
            .map_err(ReplError::sql("look for the slot's session"))?
            .and_then(|r| r.get(0));
        let Some(pid) = pid else { break };
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(slot, pid, "ending the session that still streams the slot");
            client
                .execute("SELECT pg_terminate_backend($1, 5000)", &[&pid])
                .await
                .map_err(ReplError::sql("end the session streaming the slot"))?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name = {} AND database = current_database();
             DROP PUBLICATION IF EXISTS {PUBLICATION};",
            quote_literal(slot)
        ))
        .await
        .map_err(ReplError::sql("drop the slot and publication"))
}

/// Decodes up to about `limit` changes (whole transactions) past the slot's position, or only
/// those committed up to `upto` (an LSN).
pub async fn read_batch(
    client: &Client,
    slot: &str,
    limit: i64,
    upto: Option<&str>,
) -> ReplResult<ChangeBatch> {
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3::int,
                 'proto_version', '1', 'publication_names', $4)",
            &[
                &slot,
                &upto,
                &(limit.clamp(1, i64::from(i32::MAX)) as i32),
                &PUBLICATION,
            ],
        )
        .await
        .map_err(ReplError::sql("decode the slot"))?;
    let mut decoder = Decoder::default();
    for r in rows {
        let data: &[u8] = r.get(0);
        decoder.message(data)?;
    }
    Ok(decoder.finish())
}

/// Moves the slot past what the target has committed.
pub async fn ack(client: &Client, slot: &str, position: &str) -> ReplResult<()> {
    client
        .query_one(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot, &position],
        )
        .await
        .map_err(ReplError::sql("advance the slot"))?;
    Ok(())
}

/// Asks the server (PostgreSQL 16+) to log its running transactions now. Decoding through the
/// SQL interface restarts from the slot's restart point on every call, and that point moves
/// only past such a record — by default one every 15 s — so logging one after each batch keeps
/// every read short. Returns false where the function is missing or not permitted (then the
/// caller stops asking).
pub async fn log_running_xacts(client: &Client) -> bool {
    client
        .batch_execute(
            "DO $d$ BEGIN
                 IF current_setting('server_version_num')::int >= 160000 THEN
                     PERFORM pg_log_standby_snapshot();
                 ELSE
                     RAISE EXCEPTION 'not available before PostgreSQL 16';
                 END IF;
             END $d$",
        )
        .await
        .is_ok()
}

/// The source's current WAL position (the drain target once writes have stopped) and the
/// slot's lag behind it in bytes.
pub async fn head_and_lag(client: &Client, slot: &str) -> ReplResult<(String, i64)> {
    let row = client
        .query_one(
            "SELECT pg_current_wal_lsn()::text,
                    coalesce((SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
                                FROM pg_replication_slots WHERE slot_name = $1), 0)",
            &[&slot],
        )
        .await
        .map_err(ReplError::sql("read the WAL position"))?;
    Ok((row.get(0), row.get(1)))
}

/// Whether nothing committed at or before `position` is left to apply.
pub async fn drained_to(client: &Client, slot: &str, position: &str) -> ReplResult<bool> {
    Ok(read_batch(client, slot, 1, Some(position))
        .await?
        .changes
        .is_empty())
}

/// Temporary slot copies made by this process (their names must differ).
static COPIES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The changes the worker has not confirmed yet, decoded from a temporary copy of `slot`: the
/// worker's slot is never read or moved (a slot serves one session at a time, and a peek
/// would contend with the worker's). At most about `limit` changes (whole transactions),
/// committed up to `upto` (an LSN) or now. Returns them and whether that was everything.
pub async fn peek_unconfirmed(
    client: &Client,
    slot: &str,
    limit: i64,
    upto: Option<&str>,
) -> ReplResult<(ChangeBatch, bool)> {
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut copy = format!(
        "{}_v{}_{n}",
        &slot[..slot.len().min(40)],
        std::process::id()
    );
    copy.truncate(63);
    let mut tries = 0;
    loop {
        // The copy fails when the worker moves the slot at that instant: try again.
        match client
            .query_one(
                "SELECT pg_copy_logical_replication_slot($1, $2, true)",
                &[&slot, &copy],
            )
            .await
        {
            Ok(_) => break,
            Err(e)
                if tries < 5
                    && e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) =>
            {
                tries += 1;
                tracing::debug!(error = %e, "slot copy retried");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(ReplError::sql("copy the slot to read what waits")(e)),
        }
    }
    let limit = limit.clamp(1, i64::from(i32::MAX)) as i32;
    let peeked = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3::int,
                 'proto_version', '1', 'publication_names', $4)",
            &[&copy, &upto, &limit, &PUBLICATION],
        )
        .await;
    let dropped = client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name = $1",
            &[&copy],
        )
        .await;
    let rows = peeked.map_err(ReplError::sql("decode the slot's copy"))?;
    dropped.map_err(ReplError::sql("drop the slot's copy"))?;
    let complete = rows.len() < limit as usize;
    let mut decoder = Decoder::default();
    for r in rows {
        let data: &[u8] = r.get(0);
        decoder.message(data)?;
    }
    Ok((decoder.finish(), complete))
}

/// The current WAL position: once every change committed up to it is confirmed, everything
/// committed before this call has been applied (see [`applied_past`]).
pub async fn mark(client: &Client) -> ReplResult<String> {
    Ok(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(ReplError::sql("read the WAL position"))?
        .get(0))
}

/// Whether every change committed up to `mark` has been applied (confirmed on the slot).
pub async fn applied_past(client: &Client, slot: &str, mark: &str) -> ReplResult<bool> {
    Ok(peek_unconfirmed(client, slot, 1, Some(mark))
        .await?
        .0
        .changes
        .is_empty())
}

/// Which of the given keys (canonical texts) of each table have a change waiting in the slot,
/// from one bounded read (`limit` changes) of what the worker has not confirmed.
pub async fn waiting(
    client: &Client,
    slot: &str,
    tables: &[(&Table, &[String])],
    limit: i64,
) -> ReplResult<HashMap<String, Waiting>> {
    let (batch, complete) = peek_unconfirmed(client, slot, limit, None).await?;
    let mut raw: HashMap<&str, (bool, Vec<serde_json::Value>)> = HashMap::new();
    for c in &batch.changes {
        match c {
            KeyChange::Key { rel, key } => raw.entry(rel).or_default().1.push(key.clone()),
            KeyChange::Truncate { rel } => raw.entry(rel).or_default().0 = true,
        }
    }
    let mut out = HashMap::new();
    for (t, keys) in tables {
        let name = t.display_name();
        let mut w = Waiting {
            complete,
            ..Waiting::default()
        };
        if let Some((truncate, found)) = raw.get(name.as_str()) {
            w.truncate = *truncate;
            let wanted: std::collections::HashSet<&String> = keys.iter().collect();
            w.keys = crate::verify::canonical_keys(client, t, found)
                .await?
                .into_iter()
                .filter(|k| wanted.contains(k))
                .collect();
        }
        out.insert(name, w);
    }
    Ok(out)
}

/// Turns pgoutput messages into a key batch.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    batch: ChangeBatch,
    commit_time: Option<DateTime<Utc>>,
    /// The open transaction's id (from its Begin).
    xid: u32,
    in_tx: usize,
}

#[derive(Debug, Clone)]
struct Relation {
    name: String,
    key_columns: Vec<usize>,
}

/// A cursor over one message.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> ReplResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return Err(ReplError::State(format!(
                "pgoutput message ends early (wanted {n} bytes at {})",
                self.pos
            )));
        };
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> ReplResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> ReplResult<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> ReplResult<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32(&mut self) -> ReplResult<u32> {
        Ok(self.i32()? as u32)
    }
    fn i64(&mut self) -> ReplResult<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn cstr(&mut self) -> ReplResult<String> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| ReplError::State("pgoutput string without terminator".into()))?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.pos += len + 1;
        Ok(s)
    }
    /// TupleData: the text values of every column (None: NULL or unchanged TOAST).
    fn tuple(&mut self) -> ReplResult<Vec<Option<String>>> {
        let n = self.i16()?.max(0) as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.u8()? {
                b'n' | b'u' => out.push(None),
                b't' | b'b' => {
                    let len = self.i32()?.max(0) as usize;
                    out.push(Some(String::from_utf8_lossy(self.take(len)?).into_owned()));
                }
                other => {
                    return Err(ReplError::State(format!(
                        "unknown pgoutput column kind {:?}",
                        other as char
                    )));
                }
            }
        }
        Ok(out)
    }
}

impl Decoder {
    /// Feeds one message.
    pub fn message(&mut self, data: &[u8]) -> ReplResult<()> {
        let mut r = Reader { data, pos: 0 };
        match r.u8()? {
            b'B' => {
                let _final_lsn = r.i64()?;
                let ts = r.i64()?;
                self.xid = r.u32()?;
                self.commit_time = Utc.timestamp_micros(PG_EPOCH_MICROS + ts).single();
                self.in_tx = self.batch.changes.len();
            }
            b'C' => {
                let _flags = r.u8()?;
                let _commit_lsn = r.i64()?;
                let end_lsn = r.i64()?;
                self.batch.position = Some(lsn_text(end_lsn as u64));
                if self.batch.changes.len() > self.in_tx {
                    self.batch.commits.push(self.xid);
                    if let Some(t) = self.commit_time {
                        self.batch.oldest = Some(self.batch.oldest.map_or(t, |o| o.min(t)));
                    }
                }
            }
            b'R' => {
                let relid = r.u32()?;
                let namespace = r.cstr()?;
                let name = r.cstr()?;
                let _identity = r.u8()?;
                let ncols = r.i16()?.max(0) as usize;
                let mut key_columns = Vec::new();
                for i in 0..ncols {
                    let flags = r.u8()?;
                    let _col = r.cstr()?;
                    let _type = r.i32()?;
                    let _typmod = r.i32()?;
                    if flags & 1 == 1 {
                        key_columns.push(i);
                    }
                }
                self.relations.insert(
                    relid,
                    Relation {
                        name: format!("{namespace}.{name}"),
                        key_columns,
                    },
                );
            }
            b'I' => {
                let rel = self.relation(r.u32()?)?;
                let _n = r.u8()?;
                let new = r.tuple()?;
                self.key(&rel, &new)?;
            }
            b'U' => {
                let rel = self.relation(r.u32()?)?;
                let mut kind = r.u8()?;
                if kind == b'K' || kind == b'O' {
                    let old = r.tuple()?;
                    self.key(&rel, &old)?;
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err(ReplError::State(
                        "pgoutput update without a new tuple".into(),
                    ));
                }
                let new = r.tuple()?;
                self.key(&rel, &new)?;
            }
            b'D' => {
                let rel = self.relation(r.u32()?)?;
                let _kind = r.u8()?;
                let old = r.tuple()?;
                self.key(&rel, &old)?;
            }
            b'T' => {
                let n = r.i32()?.max(0);
                let _options = r.u8()?;
                for _ in 0..n {
                    let rel = self.relation(r.u32()?)?;
                    self.batch
                        .changes
                        .push(KeyChange::Truncate { rel: rel.name });
                }
            }
            // Type, Origin, Message: nothing to apply.
            _ => {}
        }
        Ok(())
    }

    fn relation(&self, relid: u32) -> ReplResult<Relation> {
        self.relations.get(&relid).cloned().ok_or_else(|| {
            ReplError::State(format!(
                "pgoutput change for relation {relid} before its Relation message"
            ))
        })
    }

    fn key(&mut self, rel: &Relation, tuple: &[Option<String>]) -> ReplResult<()> {
        let mut values = Vec::with_capacity(rel.key_columns.len());
        for i in &rel.key_columns {
            match tuple.get(*i) {
                Some(Some(v)) => values.push(serde_json::Value::String(v.clone())),
                _ => {
                    return Err(ReplError::State(format!(
                        "decoded change of {} lacks a key column; its replica identity must be the primary key",
                        rel.name
                    )));
                }
            }
        }
        self.batch.changes.push(KeyChange::Key {
            rel: rel.name.clone(),
            key: serde_json::Value::Array(values),
        });
        Ok(())
    }

    /// The transaction just committed (call after a Commit message); relations stay known.
    pub fn take_transaction(&mut self) -> ChangeBatch {
        self.in_tx = 0;
        self.commit_time = None;
        std::mem::take(&mut self.batch)
    }

    /// The batch decoded so far.
    pub fn finish(self) -> ChangeBatch {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(relid: u32) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(relid.to_be_bytes());
        m.extend(b"public\0accounts\0");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        m.push(1);
        m.extend(b"id\0");
        m.extend(20i32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m.push(0);
        m.extend(b"email\0");
        m.extend(25i32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(s) => {
                    m.push(b't');
                    m.extend((s.len() as i32).to_be_bytes());
                    m.extend(s.as_bytes());
                }
                None => m.push(b'u'),
            }
        }
        m
    }

    #[test]
    fn decodes_keys_of_inserts_updates_deletes_and_truncates() {
        let mut d = Decoder::default();
        let mut begin = vec![b'B'];
        begin.extend(0i64.to_be_bytes());
        begin.extend(1_000_000i64.to_be_bytes());
        begin.extend(7i32.to_be_bytes());
        d.message(&begin).expect("begin");
        d.message(&relation(16384)).expect("relation");
        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("1"), Some("a@x")]));
        d.message(&insert).expect("insert");
        // An update that changed the key: old key first, then the new row (TOAST unchanged).
        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple(&[Some("1"), None]));
        update.push(b'N');
        update.extend(tuple(&[Some("2"), None]));
        d.message(&update).expect("update");
        let mut delete = vec![b'D'];
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("2"), None]));
        d.message(&delete).expect("delete");
        let mut truncate = vec![b'T'];
        truncate.extend(1i32.to_be_bytes());
        truncate.push(0);
        truncate.extend(16384u32.to_be_bytes());
        d.message(&truncate).expect("truncate");
        let mut commit = vec![b'C', 0];
        commit.extend(0x16B_3700i64.to_be_bytes());
        commit.extend(0x1_0000_0010i64.to_be_bytes());
        commit.extend(1_000_001i64.to_be_bytes());
        d.message(&commit).expect("commit");
        let batch = d.finish();
        let keys: Vec<String> = batch
            .changes
            .iter()
            .map(|c| match c {
                KeyChange::Key { rel, key } => format!("{rel} {key}"),
                KeyChange::Truncate { rel } => format!("truncate {rel}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "public.accounts [\"1\"]",
                "public.accounts [\"1\"]",
                "public.accounts [\"2\"]",
                "public.accounts [\"2\"]",
                "truncate public.accounts"
            ]
        );
        assert_eq!(batch.position.as_deref(), Some("1/10"));
        assert_eq!(
            batch.oldest.map(|t| t.timestamp()),
            Some(946_684_801),
            "commit time from the Begin message (PostgreSQL epoch)"
        );
        assert_eq!(
            batch.commits,
            [7],
            "the transaction id from the Begin message"
        );
    }

    #[test]
    fn only_transactions_with_changes_are_waited_for() {
        let mut d = Decoder::default();
        d.message(&relation(16384)).expect("relation");
        for (xid, rows) in [(u32::MAX, 1), (8, 0), (9, 2)] {
            let mut begin = vec![b'B'];
            begin.extend(0i64.to_be_bytes());
            begin.extend(0i64.to_be_bytes());
            begin.extend(xid.to_be_bytes());
            d.message(&begin).expect("begin");
            for _ in 0..rows {
                let mut insert = vec![b'I'];
                insert.extend(16384u32.to_be_bytes());
                insert.push(b'N');
                insert.extend(tuple(&[Some("1"), Some("a@x")]));
                d.message(&insert).expect("insert");
            }
            let mut commit = vec![b'C', 0];
            commit.extend(0i64.to_be_bytes());
            commit.extend(i64::from(xid).to_be_bytes());
            commit.extend(0i64.to_be_bytes());
            d.message(&commit).expect("commit");
        }
        let batch = d.finish();
        assert_eq!(
            batch.commits,
            [u32::MAX, 9],
            "ids past 2^31 kept whole; none for a transaction that touched no published table"
        );
        assert_eq!(batch.changes.len(), 3);
    }

    #[test]
    fn slot_names_carry_the_database() {
        assert_eq!(slot_name("App-DB.1"), "ferry_app_db_1");
        assert_eq!(slot_name(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let mut d = Decoder::default();
        assert!(d.message(&[b'R', 0, 0]).is_err());
        let mut insert = vec![b'I'];
        insert.extend(99u32.to_be_bytes());
        assert!(d.message(&insert).is_err(), "unknown relation");
    }
}
