//! Applies a batch of changed keys to the target: for each key, the row as it is on the source
//! *now* replaces whatever the target has (or the target's row is deleted when the source has
//! none). Applying the same batch twice gives the same result, so a crash anywhere between the
//! target's commit and the acknowledgement on the source loses nothing and duplicates nothing.
//!
//! One target transaction per batch, holding the data and the applied position together.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_pg::catalog::{Table, quote_ident, quote_literal};
use futures_util::pin_mut;
use tokio_postgres::{Client, IsolationLevel, SimpleQueryMessage, Transaction, types::Type};

use crate::{
    ChangeBatch, KeyChange, bookkeeping,
    error::{ReplError, ReplResult},
};

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Log entries consumed.
    pub changes: usize,
    /// Distinct keys looked up.
    pub keys: usize,
    /// Rows written (inserted or replaced) on the target.
    pub upserted: u64,
    /// Rows deleted on the write side (in replica mode this includes the rows deleted and then
    /// written again from the stage).
    pub deleted: u64,
    /// Tables truncated on the target.
    pub truncated: usize,
}

/// A unique index of a target table other than its primary key (plain columns, no predicate).
#[derive(Debug, Clone)]
struct UniqueIndex {
    columns: Vec<String>,
}

/// How the write side may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `session_replication_role = replica` is allowed (RDS master user, superuser): triggers
    /// and foreign keys are off during the apply, so changed rows are deleted and re-inserted.
    Replica,
    /// Not allowed (stock Heroku, during reverse replication): rows are upserted in place and
    /// deleted only when gone, parents before children (deletes children first), so no
    /// cascade fires and no foreign key is broken mid-batch. The app's own triggers fire.
    Ordered,
}

/// Applies key batches for a fixed set of tables.
#[derive(Debug)]
pub struct Applier {
    tables: HashMap<String, Table>,
    uniques: HashMap<String, Vec<UniqueIndex>>,
    /// Foreign-key depth on the write side: referenced tables have a lower rank.
    rank: HashMap<String, usize>,
    mode: WriteMode,
}

impl Applier {
    /// An applier for the capture units among `tables` (read from the capture side), writing
    /// to `target` (the write side, forward or reverse). Reads the write side's extra unique
    /// indexes, so rows that swap unique values converge, and its foreign keys for ordering.
    pub async fn new(tables: &[Table], target: &Client, mode: WriteMode) -> ReplResult<Self> {
        let units: HashMap<String, Table> = tables
            .iter()
            .filter(|t| t.is_capture_unit())
            .map(|t| (t.display_name(), t.clone()))
            .collect();
        // Plain-column unique indexes without a predicate: a conflict on those can only come
        // from a row that has itself changed on the source (see `apply_keys`).
        let rows = target
            .query(
                "SELECT format('%s.%s', n.nspname, c.relname),
                        array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL
                    AND i.indexprs IS NULL
                  GROUP BY i.indexrelid, n.nspname, c.relname",
                &[],
            )
            .await
            .map_err(ReplError::sql("read the target's unique indexes"))?;
        let mut uniques: HashMap<String, Vec<UniqueIndex>> = HashMap::new();
        for r in rows {
            let rel: String = r.get(0);
            if units.contains_key(&rel) {
                uniques
                    .entry(rel)
                    .or_default()
                    .push(UniqueIndex { columns: r.get(1) });
            }
        }
        let rank = fk_ranks(target).await?;
        Ok(Self {
            tables: units,
            uniques,
            rank,
            mode,
        })
    }

    /// Applies `batch`: fetches the current rows from `source`, writes them to `target` with
    /// the stream's new position, commits the target. The caller acknowledges the batch on
    /// the capture side only after this returns.
    ///
    /// Round trips are what a batch's fixed cost is made of (on a busy host each one waits for
    /// the scheduler as well as the network), so statements with no reply the next one needs
    /// go together: the target's preparation, its deletes and its writes are one simple-query
    /// message each, run in order by the server, and the two sides' begins, each table's two
    /// COPY starts and the two commits are sent at once.
    pub async fn apply(
        &self,
        source: &mut Client,
        target: &mut Client,
        stream: &str,
        batch: &ChangeBatch,
    ) -> ReplResult<Applied> {
        let mut applied = Applied {
            changes: batch.changes.len(),
            ..Applied::default()
        };
        let Some(position) = &batch.position else {
            return Ok(applied);
        };
        let work = self.plan(batch)?;
        applied.truncated = work.iter().filter(|w| w.truncate).count();
        applied.keys = work.iter().map(|w| w.keys).sum();
        let (stx, ttx) = begin(source, target, &batch.commits).await?;
        run_all(
            &ttx,
            &self.preparation(&work),
            "prepare the batch on the target",
        )
        .await?;
        for w in work.iter().filter(|w| w.keys > 0) {
            stage(&stx, &ttx, w).await?;
        }
        // The fetches above held their tables' locks since they began, so a column change can
        // only have committed before them: compare the fetch side's columns with ours now,
        // and refuse the batch (it stays in the log) if any differ.
        let fetched: Vec<&Table> = work
            .iter()
            .filter(|w| w.keys > 0)
            .map(|w| w.table)
            .collect();
        self.check_columns(&stx, &fetched).await?;
        let (deletes, writes) = self.writes(&work);
        let names = fetched
            .iter()
            .map(|t| t.display_name())
            .collect::<Vec<_>>()
            .join(", ");
        let counts = run_all(&ttx, &deletes, &format!("delete changed rows of {names}")).await?;
        applied.deleted = counts.iter().sum();
        let what = format!("write current rows of {names}");
        let (counts, ()) = tokio::try_join!(
            run_all(&ttx, &writes, &what),
            bookkeeping::set_applied(&ttx, stream, position, batch.changes.len() as i64)
        )?;
        for (statement, n) in writes.iter().zip(counts) {
            match statement.kind {
                Write::ClearUnique => applied.deleted += n,
                Write::Current => applied.upserted += n,
            }
        }
        // A failed source commit after the target's is harmless: the batch is not
        // acknowledged, and applying it again gives the same rows.
        tokio::try_join!(
            async {
                ttx.commit()
                    .await
                    .map_err(ReplError::sql("commit the applied batch"))
            },
            async {
                stx.commit()
                    .await
                    .map_err(ReplError::sql("end the source read"))
            }
        )?;
        Ok(applied)
    }

    /// The batch's tables in first-seen order of their changes grouped: each with its distinct
    /// keys as a typed row source, whether it was truncated (applied before its keys), and its
    /// stage.
    fn plan<'a>(&'a self, batch: &ChangeBatch) -> ReplResult<Vec<TableWork<'a>>> {
        let mut per_table: BTreeMap<&str, (bool, Vec<&serde_json::Value>)> = BTreeMap::new();
        // Seen keys by their JSON text (a search of the list instead cost ~20 ms of CPU per
        // batch of 2,000-5,000 changes under pgbench, growing with the square of a table's
        // keys).
        let mut seen: HashSet<(&str, String)> = HashSet::new();
        for change in &batch.changes {
            match change {
                KeyChange::Truncate { rel } => per_table.entry(rel).or_default().0 = true,
                KeyChange::Key { rel, key } => {
                    let keys = &mut per_table.entry(rel).or_default().1;
                    if seen.insert((rel, key.to_string())) {
                        keys.push(key);
                    }
                }
            }
        }
        per_table
            .into_iter()
            .enumerate()
            .map(|(n, (rel, (truncate, keys)))| {
                let table = self.tables.get(rel).ok_or_else(|| {
                    ReplError::State(format!(
                        "change for unknown table {rel}; restart the worker to reread the catalog"
                    ))
                })?;
                let json = serde_json::Value::Array(keys.iter().map(|k| (*k).clone()).collect());
                Ok(TableWork {
                    table,
                    truncate,
                    keys: keys.len(),
                    stage: format!("ferry_stage_{n}"),
                    key_select: key_select(table, &json.to_string())?,
                })
            })
            .collect()
    }

    /// What runs on the target before the fetch: the apply's role, truncates, stage tables.
    fn preparation(&self, work: &[TableWork<'_>]) -> Vec<Statement> {
        let mut out = Vec::new();
        if self.mode == WriteMode::Replica {
            out.push(Statement::of(
                "SET LOCAL session_replication_role = replica",
            ));
        }
        for w in work {
            let q = w.table.qualified();
            if w.truncate {
                out.push(Statement::of(format!("TRUNCATE {q} CASCADE")));
            }
            if w.keys > 0 {
                out.push(Statement::of(format!(
                    "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {q} WITH NO DATA",
                    w.stage,
                    w.table.copy_column_list()
                )));
            }
        }
        out
    }

    /// The deletes (children before parents) and then the writes (parents before children).
    fn writes(&self, work: &[TableWork<'_>]) -> (Vec<Statement>, Vec<Statement>) {
        let rank = |t: &Table| self.rank.get(&t.display_name()).copied().unwrap_or(0);
        let mut keyed: Vec<&TableWork<'_>> = work.iter().filter(|w| w.keys > 0).collect();
        keyed.sort_by_key(|w| std::cmp::Reverse(rank(w.table)));
        let deletes = keyed.iter().map(|w| self.delete_gone(w)).collect();
        let writes = keyed
            .iter()
            .rev()
            .flat_map(|w| self.write_current(w))
            .collect();
        (deletes, writes)
    }

    async fn check_columns(&self, stx: &Transaction<'_>, tables: &[&Table]) -> ReplResult<()> {
        if tables.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = tables.iter().map(|t| t.display_name()).collect();
        // The bare names let the catalog's name index find the candidates; the qualified
        // names pick the right schema among them (without it, every batch read all of
        // pg_class, a cost that grows with the source's relations).
        let bare: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let rows = stx
            .query(
                "SELECT format('%s.%s', n.nspname, c.relname),
                        string_agg(format('%s:%s', a.attname, format_type(a.atttypid, a.atttypmod)), ',' ORDER BY a.attnum)
                   FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  WHERE c.relname = ANY($2::text[]::name[])
                    AND format('%s.%s', n.nspname, c.relname) = ANY($1)
                  GROUP BY 1",
                &[&names, &bare],
            )
            .await
            .map_err(ReplError::sql("check the fetched tables' columns"))?;
        let now: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let changed: Vec<String> = tables
            .iter()
            .filter(|t| {
                let expected = t
                    .columns
                    .iter()
                    .map(|c| format!("{}:{}", c.name, c.type_sql))
                    .collect::<Vec<_>>()
                    .join(",");
                now.get(&t.display_name()) != Some(&expected)
            })
            .map(|t| t.display_name())
            .collect();
        if changed.is_empty() {
            Ok(())
        } else {
            Err(ReplError::SchemaChanged {
                tables: changed.join(", "),
            })
        }
    }

    /// Replica mode: deletes every row with a changed key (they are re-inserted from the
    /// stage). Ordered mode: deletes only rows whose key is gone from the fetch side.
    fn delete_gone(&self, w: &TableWork<'_>) -> Statement {
        let (pk, q, stage, keys) = (
            w.table.pk_list(),
            w.table.qualified(),
            &w.stage,
            &w.key_select,
        );
        Statement::of(match self.mode {
            WriteMode::Replica => format!("DELETE FROM {q} WHERE ({pk}) IN ({keys})"),
            WriteMode::Ordered => format!(
                "DELETE FROM {q} WHERE ({pk}) IN ({keys}) AND ({pk}) NOT IN (SELECT {pk} FROM {stage})"
            ),
        })
    }

    /// Writes the staged rows. Replica mode first removes rows holding a unique value a staged
    /// row needs (such a row has changed on the fetch side too, so its own change is still in
    /// the log and will restore it), then inserts. Ordered mode upserts in place.
    fn write_current(&self, w: &TableWork<'_>) -> Vec<Statement> {
        let table = w.table;
        let (cols, pk, q, stage) = (
            table.copy_column_list(),
            table.pk_list(),
            table.qualified(),
            &w.stage,
        );
        let overriding = if table.columns.iter().any(|c| c.identity_always) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let mut out = Vec::new();
        let conflict = match self.mode {
            WriteMode::Replica => {
                for u in self
                    .uniques
                    .get(&table.display_name())
                    .into_iter()
                    .flatten()
                {
                    let cond = u
                        .columns
                        .iter()
                        .map(|c| format!("d.{c} = s.{c}", c = quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    out.push(Statement {
                        sql: format!("DELETE FROM {q} d USING {stage} s WHERE {cond}"),
                        kind: Write::ClearUnique,
                    });
                }
                String::new()
            }
            WriteMode::Ordered => {
                let sets: Vec<String> = table
                    .copy_columns()
                    .iter()
                    .filter(|c| !table.primary_key.contains(&c.name))
                    .map(|c| format!("{n} = EXCLUDED.{n}", n = quote_ident(&c.name)))
                    .collect();
                if sets.is_empty() {
                    format!(" ON CONFLICT ({pk}) DO NOTHING")
                } else {
                    format!(" ON CONFLICT ({pk}) DO UPDATE SET {}", sets.join(", "))
                }
            }
        };
        out.push(Statement::of(format!(
            "INSERT INTO {q} ({cols}){overriding} SELECT {cols} FROM {stage}{conflict}"
        )));
        out
    }
}

/// How long the apply waits for decoded commits to become visible on the source.
const VISIBLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// How many of the given 32-bit transaction ids a new snapshot of the source does not yet
/// see: each widened to its 64-bit id from the snapshot's `xmax` (an assigned id lies below
/// it, within one wraparound), then looked up in the snapshot.
const HIDDEN_COMMITS: &str = "SELECT count(*)
   FROM (SELECT txid_current_snapshot() AS s) n
  CROSS JOIN LATERAL (SELECT txid_snapshot_xmax(n.s) AS xmax) m
  CROSS JOIN unnest($1::int8[]) AS x
  WHERE NOT txid_visible_in_snapshot(
          m.xmax - ((m.xmax - x) % 4294967296 + 4294967296) % 4294967296, n.s)";

/// Waits until every transaction in `commits` (ids decoded from the source's WAL) is visible
/// to new snapshots of the source, so the fetch that follows sees their writes. Logical
/// decoding hands a transaction over once its commit record is flushed; the committing
/// session leaves the list of running transactions just after, and until then a snapshot
/// still sees it as running: a fetch in that window would find an inserted row missing and
/// the apply would delete it on the target, with the slot then moved past it. The window is
/// normally microseconds; a snapshot taken after this returns sees them all.
pub async fn wait_visible(source: &Client, commits: &[u32]) -> ReplResult<()> {
    if commits.is_empty() {
        return Ok(());
    }
    let xids: Vec<i64> = commits.iter().map(|&x| i64::from(x)).collect();
    let started = std::time::Instant::now();
    loop {
        let hidden: i64 = source
            .query_typed(HIDDEN_COMMITS, &[(&xids, Type::INT8_ARRAY)])
            .await
            .map_err(ReplError::sql("check that decoded commits are visible"))?
            .first()
            .map_or(0, |r| r.get(0));
        if hidden == 0 {
            return Ok(());
        }
        if started.elapsed() > VISIBLE_WITHIN {
            return Err(ReplError::State(format!(
                "{hidden} decoded source transactions are still not visible to new snapshots \
                 after {} s; a session on the source may be stuck committing",
                VISIBLE_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Begins the source read (repeatable read, once `commits` are visible) and the target
/// write, both at once.
async fn begin<'s, 't>(
    source: &'s mut Client,
    target: &'t mut Client,
    commits: &[u32],
) -> ReplResult<(Transaction<'s>, Transaction<'t>)> {
    tokio::try_join!(
        async {
            wait_visible(source, commits).await?;
            source
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(ReplError::sql("begin the source read"))
        },
        async {
            target
                .transaction()
                .await
                .map_err(ReplError::sql("begin the target write"))
        }
    )
}

/// One table's share of a batch.
struct TableWork<'a> {
    table: &'a Table,
    truncate: bool,
    /// Distinct changed keys.
    keys: usize,
    /// The temporary table its current rows are staged in.
    stage: String,
    /// The keys as a typed row source (see [`key_select`]).
    key_select: String,
}

/// What a written statement's row count means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Rows written from the stage.
    Current,
    /// Rows deleted because they held a unique value a staged row needs.
    ClearUnique,
}

/// A statement sent with others in one message.
struct Statement {
    sql: String,
    kind: Write,
}

impl Statement {
    fn of(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            kind: Write::Current,
        }
    }
}

/// Runs `statements` as one simple-query message (one round trip; the server runs them in
/// order and stops at the first failure, which fails the transaction); returns each one's row
/// count.
async fn run_all(
    tx: &Transaction<'_>,
    statements: &[Statement],
    what: &str,
) -> ReplResult<Vec<u64>> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let sql: String = statements.iter().map(|s| format!("{};", s.sql)).collect();
    let replies = tx.simple_query(&sql).await.map_err(ReplError::sql(what))?;
    let counts: Vec<u64> = replies
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    if counts.len() != statements.len() {
        return Err(ReplError::State(format!(
            "{what}: {} statements sent, {} completed",
            statements.len(),
            counts.len()
        )));
    }
    Ok(counts)
}

/// Streams the fetch side's current rows for a table's keys into its stage on the write side
/// (the two COPY commands are started at once).
async fn stage(stx: &Transaction<'_>, ttx: &Transaction<'_>, w: &TableWork<'_>) -> ReplResult<()> {
    let table = w.table;
    let rel = table.display_name();
    let cols = table.copy_column_list();
    let (pk, q, format) = (table.pk_list(), table.qualified(), table.copy_format());
    let (out, sink) = tokio::try_join!(
        async {
            stx.copy_out(&format!(
                "COPY (SELECT {cols} FROM {q} WHERE ({pk}) IN ({})) TO STDOUT (FORMAT {format})",
                w.key_select
            ))
            .await
            .map_err(ReplError::sql(format!("read current rows of {rel}")))
        },
        async {
            ttx.copy_in(&format!(
                "COPY {} ({cols}) FROM STDIN (FORMAT {format})",
                w.stage
            ))
            .await
            .map_err(ReplError::sql(format!("stage rows of {rel}")))
        }
    )?;
    pin_mut!(out);
    pin_mut!(sink);
    crate::pipe::pipe(out, sink.as_mut(), &format!("current rows of {rel}"), None).await?;
    sink.finish()
        .await
        .map_err(ReplError::sql(format!("stage rows of {rel}")))?;
    Ok(())
}

/// Foreign-key depth of every table on a server: 0 for tables referencing nothing, else one
/// more than the deepest table they reference (self-references and cycles are cut).
async fn fk_ranks(client: &Client) -> ReplResult<HashMap<String, usize>> {
    let rows = client
        .query(
            "SELECT DISTINCT format('%s.%s', cn.nspname, c.relname), format('%s.%s', pn.nspname, p.relname)
               FROM pg_constraint k
               JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
               JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
              WHERE k.contype = 'f' AND k.conrelid <> k.confrelid AND k.conparentid = 0",
            &[],
        )
        .await
        .map_err(ReplError::sql("read foreign keys"))?;
    let edges: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut rank: HashMap<String, usize> = HashMap::new();
    // Longest-path relaxation, bounded by the number of edges (cycles stop growing there).
    for _ in 0..=edges.len() {
        let mut changed = false;
        for (child, parent) in &edges {
            let want = rank.get(parent).copied().unwrap_or(0) + 1;
            if rank.get(child).copied().unwrap_or(0) < want && want <= edges.len() {
                rank.insert(child.clone(), want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(rank)
}

/// `SELECT (k->>0)::type0, (k->>1)::type1 … FROM jsonb_array_elements('<keys>'::jsonb) k`:
/// the logged keys as typed rows, comparable with the table's primary key.
fn key_select(table: &Table, keys_json: &str) -> ReplResult<String> {
    Ok(format!(
        "SELECT {} FROM jsonb_array_elements({}::jsonb) k",
        crate::keys::typed(table, "k")?.join(", "),
        quote_literal(keys_json)
    ))
}

#[cfg(test)]
mod tests {
    use ferry_pg::catalog::{Column, TableKind};

    use super::*;

    fn table(name: &str) -> Table {
        Table {
            oid: 1,
            schema: "public".into(),
            name: name.into(),
            kind: TableKind::Ordinary,
            columns: vec![Column {
                name: "id".into(),
                type_sql: "bigint".into(),
                generated: false,
                identity_always: false,
                identity: false,
                binary_portable: true,
            }],
            primary_key: vec!["id".into()],
            replica_identity: 'd',
            unlogged: false,
            estimated_rows: 0,
            total_bytes: 0,
            owner: "app".into(),
            can_trigger: true,
        }
    }

    #[test]
    fn a_batch_is_planned_per_table_with_each_key_once_in_first_seen_order() {
        let tables: HashMap<String, Table> = ["a", "b"]
            .into_iter()
            .map(|n| (format!("public.{n}"), table(n)))
            .collect();
        let applier = Applier {
            tables,
            uniques: HashMap::new(),
            rank: HashMap::new(),
            mode: WriteMode::Replica,
        };
        let key = |rel: &str, k: &str| KeyChange::Key {
            rel: rel.into(),
            key: serde_json::json!([k]),
        };
        let batch = ChangeBatch {
            changes: vec![
                key("public.a", "2"),
                key("public.a", "1"),
                KeyChange::Truncate {
                    rel: "public.b".into(),
                },
                key("public.a", "2"),
                key("public.b", "2"),
                key("public.a", "3"),
                key("public.a", "1"),
            ],
            ..ChangeBatch::default()
        };
        let work = applier.plan(&batch).expect("plan");
        let got: Vec<(String, bool, usize)> = work
            .iter()
            .map(|w| (w.table.display_name(), w.truncate, w.keys))
            .collect();
        assert_eq!(
            got,
            [("public.a".into(), false, 3), ("public.b".into(), true, 1)]
        );
        assert!(
            work[0].key_select.contains(r#"'[["2"],["1"],["3"]]'"#),
            "{}",
            work[0].key_select
        );
        let unknown = ChangeBatch {
            changes: vec![key("public.c", "1")],
            ..ChangeBatch::default()
        };
        assert!(applier.plan(&unknown).is_err(), "a table the applier lacks");
    }
}
