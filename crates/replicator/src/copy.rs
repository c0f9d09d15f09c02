//! The consistent snapshot copy: every table's rows as of one exported source snapshot,
//! streamed with COPY from source to target by N parallel sessions. A large table is split so
//! it is copied in parallel: by ranges of its key when it has one integer key, otherwise by
//! ranges of heap blocks (`ctid`, read with TID range scans: PostgreSQL 14 or newer; on older
//! sources such a table is one chunk, since every block range would scan the whole heap).
//!
//! The plan (chunks and their ranges) is stored on the target before any row is copied, and
//! each chunk is marked done in the same transaction as its rows, so a restarted copy skips
//! what is done. Chunks copied under different snapshots after a restart still converge:
//! capture started before the first snapshot, and its log holds every change since (the
//! apply upserts each changed key from the source). A key never moves between key ranges; a
//! row does move between block ranges when it is updated, so a block-split table resumed
//! with part of it done may hold a row twice: it is marked, and once its chunks are done the
//! copies of each key but one are deleted ([`dedupe_resumed`]), before keys are built. A table
//! rewritten meanwhile (VACUUM FULL, CLUSTER: a new relfilenode, rows at new places with no
//! change captured) is copied again from the start.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ferry_pg::{
    PgUrl,
    catalog::{Table, quote_ident, quote_literal},
};
use futures_util::pin_mut;
use tokio_postgres::{Client, GenericClient};

use crate::error::{ReplError, ReplResult};

/// One unit of copy work: a table's rows, or one key range or block range of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// `schema.name` of the table holding the rows (a plain table or a leaf partition).
    pub rel: String,
    /// Chunk number within the table.
    pub chunk: i32,
    /// Inclusive lower bound (a key, or a block number for a table without an integer key),
    /// or unbounded.
    pub lo: Option<i64>,
    /// Exclusive upper bound (a key or a block number), or unbounded.
    pub hi: Option<i64>,
    /// Whether it has been copied.
    pub done: bool,
}

/// How the copy's sessions run.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    /// How many (at least 1).
    pub parallelism: usize,
    /// Their counters, shared with the heartbeat.
    pub progress: Arc<CopyProgress>,
    /// A read rate limit they share.
    pub throttle: Option<Arc<crate::throttle::Throttle>>,
    /// Told the name (`schema.name`) of each table whose last chunk this run copied, once
    /// that table is deduplicated (if it was resumed part-way): its keys and indexes can be
    /// built while the other tables are still copied.
    pub finished: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// Live counters of a running copy, read by the heartbeat.
#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Rows copied so far (including chunks done before a restart).
    pub rows: AtomicU64,
    /// Bytes of COPY data copied so far.
    pub bytes: AtomicU64,
    /// Chunks done.
    pub chunks_done: AtomicU64,
    /// Chunks in the plan.
    pub chunks_total: AtomicU64,
    /// Tables whose every chunk is done.
    pub tables_done: AtomicU64,
    /// Tables to copy.
    pub tables_total: AtomicU64,
    /// An estimate of the bytes to move: the tables' size on disk without indexes (COPY data
    /// is usually somewhat smaller: a progress bar, not an invariant).
    pub bytes_total: AtomicU64,
}

/// Exports a snapshot on `holder` (which must stay open, in its transaction, until every copy
/// session has imported it) and returns its id.
pub async fn export_snapshot(holder: &mut Client) -> ReplResult<String> {
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(ReplError::sql("begin the snapshot transaction"))?;
    let row = holder
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(ReplError::sql("export the snapshot"))?;
    Ok(row.get(0))
}

/// The bookkeeping key holding a block-split table's relfilenode when it was planned.
fn file_key(rel: &str) -> String {
    format!("copy_file:{rel}")
}

/// The bookkeeping key marking a block-split table resumed part-way (it may hold a row twice).
fn dedupe_key(rel: &str) -> String {
    format!("copy_dedupe:{rel}")
}

/// Reads the stored plan, or makes one under `snapshot_client` (a session holding the
/// snapshot) and stores it on the target. Block-split tables are locked `ACCESS SHARE` in the
/// snapshot's transaction, so nothing rewrites them while they are copied.
pub async fn plan(
    snapshot_client: &impl GenericClient,
    target: &Client,
    tables: &[Table],
    rows_per_chunk: i64,
) -> ReplResult<Vec<Chunk>> {
    let version: i32 = snapshot_client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(ReplError::sql("read the source's version"))?
        .get(0);
    let tid_ranges = version >= 140_000;
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| t.holds_rows()) {
        let stored = stored_chunks(target, &t.display_name()).await?;
        let chunks = if stored.is_empty() {
            new_plan(snapshot_client, target, t, rows_per_chunk, tid_ranges).await?
        } else if t.integer_key().is_none() && stored.len() > 1 {
            resume_blocks(snapshot_client, target, t, stored).await?
        } else {
            stored
        };
        if t.integer_key().is_none() && chunks.len() > 1 {
            snapshot_client
                .batch_execute(&format!(
                    "LOCK TABLE ONLY {} IN ACCESS SHARE MODE",
                    t.qualified()
                ))
                .await
                .map_err(ReplError::sql(format!(
                    "lock {} for its copy",
                    t.display_name()
                )))?;
        }
        out.extend(chunks);
    }
    Ok(out)
}

async fn stored_chunks(target: &Client, rel: &str) -> ReplResult<Vec<Chunk>> {
    let rows = target
        .query(
            "SELECT chunk, lo, hi, done FROM ferry.copy_chunks WHERE rel = $1 ORDER BY chunk",
            &[&rel],
        )
        .await
        .map_err(ReplError::sql("read the copy plan"))?;
    Ok(rows
        .iter()
        .map(|r| Chunk {
            rel: rel.to_string(),
            chunk: r.get(0),
            lo: r.get(1),
            hi: r.get(2),
            done: r.get(3),
        })
        .collect())
}

/// Chunk bounds for one table: whole, by key ranges, or by block ranges.
async fn new_plan(
    snapshot_client: &impl GenericClient,
    target: &Client,
    t: &Table,
    rows_per_chunk: i64,
    tid_ranges: bool,
) -> ReplResult<Vec<Chunk>> {
    let rel = t.display_name();
    let estimate = if t.estimated_rows >= 0 {
        t.estimated_rows
    } else {
        t.total_bytes / 100
    };
    let n = ((estimate + rows_per_chunk - 1) / rows_per_chunk.max(1)).clamp(1, 10_000);
    let bounds = match (t.integer_key(), n > 1) {
        (_, false) => vec![(None, None)],
        (Some(key), true) => {
            let row = snapshot_client
                .query_one(
                    &format!(
                        "SELECT min({k})::bigint, max({k})::bigint FROM ONLY {q}",
                        k = quote_ident(key),
                        q = t.qualified()
                    ),
                    &[],
                )
                .await
                .map_err(ReplError::sql(format!("measure the key range of {rel}")))?;
            match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
                (Some(min), Some(max)) => ranges(min, max, n),
                _ => vec![(None, None)],
            }
        }
        (None, true) if tid_ranges => {
            let (blocks, file) = heap_of(snapshot_client, t).await?;
            crate::bookkeeping::set(target, &file_key(&rel), &file.to_string()).await?;
            ranges(0, blocks - 1, n)
        }
        (None, true) => vec![(None, None)],
    };
    // One statement, so one transaction: a worker killed while writing the plan leaves
    // none of it, never a partial plan the restart would trust (and copy only part of).
    let ids: Vec<i32> = (0..bounds.len() as i32).collect();
    let (los, his): (Vec<Option<i64>>, Vec<Option<i64>>) = bounds.iter().copied().unzip();
    target
        .execute(
            "INSERT INTO ferry.copy_chunks (rel, chunk, lo, hi)
             SELECT $1, c, lo, hi FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS p(c, lo, hi)",
            &[&rel, &ids, &los, &his],
        )
        .await
        .map_err(ReplError::sql("store the copy plan"))?;
    Ok(ids
        .iter()
        .zip(bounds)
        .map(|(chunk, (lo, hi))| Chunk {
            rel: rel.clone(),
            chunk: *chunk,
            lo,
            hi,
            done: false,
        })
        .collect())
}

/// `n` ranges over `[min, max]`, the first unbounded below and the last unbounded above.
fn ranges(min: i64, max: i64, n: i64) -> Vec<(Option<i64>, Option<i64>)> {
    let step = ((max - min) / n.max(1)).max(1);
    let cuts: Vec<i64> = (1..n)
        .map(|i| min + i * step)
        .filter(|c| *c <= max)
        .collect();
    let mut bounds = Vec::with_capacity(cuts.len() + 1);
    let mut lo = None;
    for c in cuts {
        bounds.push((lo, Some(c)));
        lo = Some(c);
    }
    bounds.push((lo, None));
    bounds
}

/// A table's heap blocks now and its relfilenode.
async fn heap_of(snapshot_client: &impl GenericClient, t: &Table) -> ReplResult<(i64, i64)> {
    let row = snapshot_client
        .query_one(
            "SELECT pg_relation_size($1::oid) / current_setting('block_size')::bigint,
                    pg_relation_filenode($1::oid)::bigint",
            &[&t.oid],
        )
        .await
        .map_err(ReplError::sql(format!(
            "measure the heap of {}",
            t.display_name()
        )))?;
    Ok((row.get(0), row.get::<_, Option<i64>>(1).unwrap_or(0)))
}

/// A block-split table's stored plan at a restart: copied again from the start if the table
/// was rewritten meanwhile, marked for deduplication if it is part-way done.
async fn resume_blocks(
    snapshot_client: &impl GenericClient,
    target: &Client,
    t: &Table,
    mut stored: Vec<Chunk>,
) -> ReplResult<Vec<Chunk>> {
    let rel = t.display_name();
    let (_, file) = heap_of(snapshot_client, t).await?;
    let planned = crate::bookkeeping::get(target, &file_key(&rel)).await?;
    let done = stored.iter().filter(|c| c.done).count();
    if done == 0 || done == stored.len() {
        return Ok(stored);
    }
    if planned.as_deref() != Some(file.to_string().as_str()) {
        tracing::warn!(table = %rel, "rewritten since its copy began: copying it again");
        target
            .batch_execute(&format!(
                "BEGIN;
                 TRUNCATE ONLY {q};
                 UPDATE ferry.copy_chunks SET done = false, rows = 0, bytes = 0 WHERE rel = {r};
                 DELETE FROM ferry.state WHERE key = {d};
                 INSERT INTO ferry.state (key, value) VALUES ({f}, '{file}')
                   ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
                 COMMIT",
                q = t.qualified(),
                r = quote_literal(&rel),
                d = quote_literal(&dedupe_key(&rel)),
                f = quote_literal(&file_key(&rel)),
            ))
            .await
            .map_err(ReplError::sql(format!("restart the copy of {rel}")))?;
        stored.iter_mut().for_each(|c| c.done = false);
        return Ok(stored);
    }
    crate::bookkeeping::set(target, &dedupe_key(&rel), "pending").await?;
    Ok(stored)
}

/// After the copy: in each block-split table resumed part-way, deletes every copy of a key
/// but one (updates captured since hold the key's latest row; the apply writes it). Returns
/// the rows deleted. Idempotent: the mark goes with the deletion.
pub async fn dedupe_resumed(target: &mut Client, tables: &[Table]) -> ReplResult<u64> {
    let mut deleted = 0;
    for t in tables.iter().filter(|t| t.holds_rows()) {
        deleted += dedupe_table(target, t).await?;
    }
    Ok(deleted)
}

/// [`dedupe_resumed`] for one table whose every chunk is done.
async fn dedupe_table(target: &mut Client, t: &Table) -> ReplResult<u64> {
    let rel = t.display_name();
    let key = dedupe_key(&rel);
    if crate::bookkeeping::get(&*target, &key).await?.is_none() {
        return Ok(0);
    }
    if t.primary_key.is_empty() {
        return Err(ReplError::State(format!(
            "{rel} has no primary key: its resumed block-range copy cannot be deduplicated"
        )));
    }
    let same = t
        .primary_key
        .iter()
        .map(|c| format!("a.{c} = b.{c}", c = quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let tx = target
        .transaction()
        .await
        .map_err(ReplError::sql("begin the deduplication"))?;
    let deleted = tx
        .execute(
            &format!(
                "DELETE FROM ONLY {q} a USING ONLY {q} b WHERE {same} AND a.ctid < b.ctid",
                q = t.qualified()
            ),
            &[],
        )
        .await
        .map_err(ReplError::sql(format!("deduplicate {rel}")))?;
    tx.execute("DELETE FROM ferry.state WHERE key = $1", &[&key])
        .await
        .map_err(ReplError::sql("clear the deduplication mark"))?;
    tx.commit()
        .await
        .map_err(ReplError::sql(format!("commit the deduplication of {rel}")))?;
    tracing::info!(table = %rel, deleted, "resumed block-range copy deduplicated");
    Ok(deleted)
}

/// Copies every chunk not yet done with `parallelism` sessions, each importing `snapshot`.
pub async fn run(
    source: &PgUrl,
    target: &PgUrl,
    snapshot: &str,
    tables: &[Table],
    chunks: Vec<Chunk>,
    how: Sessions,
) -> ReplResult<()> {
    let Sessions {
        parallelism,
        progress,
        throttle,
        finished,
    } = how;
    let total_tables = tables.iter().filter(|t| t.holds_rows()).count() as u64;
    progress.tables_total.store(total_tables, Ordering::Relaxed);
    progress
        .chunks_total
        .store(chunks.len() as u64, Ordering::Relaxed);
    let done_before = chunks.iter().filter(|c| c.done).count() as u64;
    progress.chunks_done.store(done_before, Ordering::Relaxed);
    let mut pending: Vec<Chunk> = chunks.iter().filter(|c| !c.done).cloned().collect();
    // Table by table, the largest first, so that the largest tables' index builds start
    // earliest and overlap the copy of the rest; in a table, its unbounded-above chunk first.
    let size: std::collections::HashMap<String, i64> = tables
        .iter()
        .map(|t| (t.display_name(), t.total_bytes))
        .collect();
    pending.sort_by_key(|c| {
        (
            std::cmp::Reverse(size.get(&c.rel).copied().unwrap_or(0)),
            c.rel.clone(),
            c.hi.is_some(),
            c.chunk,
        )
    });
    let remaining_per_table = Arc::new(Mutex::new(pending.iter().fold(
        std::collections::HashMap::<String, usize>::new(),
        |mut m, c| {
            *m.entry(c.rel.clone()).or_default() += 1;
            m
        },
    )));
    let tables_with_work = remaining_per_table
        .lock()
        .map(|m| m.len() as u64)
        .unwrap_or(0);
    progress
        .tables_done
        .store(total_tables - tables_with_work, Ordering::Relaxed);
    let queue = Arc::new(Mutex::new(VecDeque::from(pending)));
    let by_name: Arc<std::collections::HashMap<String, Table>> = Arc::new(
        tables
            .iter()
            .filter(|t| t.holds_rows())
            .map(|t| (t.display_name(), t.clone()))
            .collect(),
    );
    let mut sessions = tokio::task::JoinSet::new();
    for _ in 0..parallelism.max(1) {
        let (source, target, snapshot) = (source.clone(), target.clone(), snapshot.to_string());
        let (queue, by_name, progress, remaining, throttle, finished) = (
            queue.clone(),
            by_name.clone(),
            progress.clone(),
            remaining_per_table.clone(),
            throttle.clone(),
            finished.clone(),
        );
        sessions.spawn(async move {
            let shared = Shared {
                tables: &by_name,
                progress: &progress,
                remaining: &remaining,
                throttle: throttle.as_deref(),
                finished: finished.as_ref(),
            };
            session(&source, &target, &snapshot, &queue, &shared).await
        });
    }
    // The first failure stops the other sessions at once (their open chunk transactions roll
    // back; done chunks stay done), so it is reported once and promptly.
    while let Some(joined) = sessions.join_next().await {
        let failure = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(join) if join.is_cancelled() => continue,
            Err(join) => ReplError::State(format!("copy session panicked: {join}")),
        };
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
        return Err(failure);
    }
    Ok(())
}

/// What the copy sessions share.
struct Shared<'a> {
    tables: &'a std::collections::HashMap<String, Table>,
    progress: &'a CopyProgress,
    remaining: &'a Mutex<std::collections::HashMap<String, usize>>,
    throttle: Option<&'a crate::throttle::Throttle>,
    finished: Option<&'a tokio::sync::mpsc::UnboundedSender<String>>,
}

async fn session(
    source: &PgUrl,
    target: &PgUrl,
    snapshot: &str,
    queue: &Mutex<VecDeque<Chunk>>,
    shared: &Shared<'_>,
) -> ReplResult<()> {
    let Shared {
        tables,
        progress,
        remaining,
        throttle,
        finished,
    } = *shared;
    let next = || queue.lock().ok().and_then(|mut q| q.pop_front());
    let Some(mut chunk) = next() else {
        return Ok(());
    };
    let src = source.connect().await?;
    // JIT compiling a plain scan costs more than it saves.
    src.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'; SET LOCAL jit = off"
    ))
    .await
    .map_err(ReplError::sql("import the snapshot"))?;
    let mut tgt = target.connect().await?;
    loop {
        let table = tables.get(&chunk.rel).ok_or_else(|| {
            ReplError::State(format!("copy plan names unknown table {}", chunk.rel))
        })?;
        let (rows, bytes) = copy_chunk(&src, &mut tgt, table, &chunk, throttle).await?;
        progress.rows.fetch_add(rows, Ordering::Relaxed);
        progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        progress.chunks_done.fetch_add(1, Ordering::Relaxed);
        let table_finished = remaining
            .lock()
            .map(|mut m| {
                let left = m.entry(chunk.rel.clone()).or_default();
                *left = left.saturating_sub(1);
                *left == 0
            })
            .unwrap_or(false);
        if table_finished {
            progress.tables_done.fetch_add(1, Ordering::Relaxed);
            if let Some(tell) = finished {
                dedupe_table(&mut tgt, table).await?;
                // The builder may have stopped (it failed, and the copy is being stopped).
                let _ = tell.send(chunk.rel.clone());
            }
        }
        match next() {
            Some(c) => chunk = c,
            None => break,
        }
    }
    src.batch_execute("COMMIT")
        .await
        .map_err(ReplError::sql("end the snapshot transaction"))?;
    Ok(())
}

async fn copy_chunk(
    src: &Client,
    tgt: &mut Client,
    table: &Table,
    chunk: &Chunk,
    throttle: Option<&crate::throttle::Throttle>,
) -> ReplResult<(u64, u64)> {
    let rel = table.display_name();
    let cols = table.copy_column_list();
    let mut filter = Vec::new();
    // A key range, or (no integer key) a block range: a TID range scan reads just its blocks.
    let (column, bound): (String, fn(i64) -> String) = match table.integer_key() {
        Some(key) => (quote_ident(key), |v| v.to_string()),
        None => ("ctid".into(), |v| format!("'({v},0)'::tid")),
    };
    if let Some(lo) = chunk.lo {
        filter.push(format!("{column} >= {}", bound(lo)));
    }
    if let Some(hi) = chunk.hi {
        filter.push(format!("{column} < {}", bound(hi)));
    }
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filter.join(" AND "))
    };
    let tx = tgt
        .transaction()
        .await
        .map_err(ReplError::sql("begin a copy transaction"))?;
    // The chunk and its done-marker commit together; asynchronous commit keeps that atomic.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(ReplError::sql("set up the copy transaction"))?;
    let format = table.copy_format();
    let out = src
        .copy_out(&format!(
            "COPY (SELECT {cols} FROM ONLY {q}{filter}) TO STDOUT (FORMAT {format})",
            q = table.qualified()
        ))
        .await
        .map_err(ReplError::sql(format!("read {rel}")))?;
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({cols}) FROM STDIN (FORMAT {format})",
            table.qualified()
        ))
        .await
        .map_err(ReplError::sql(format!("write {rel}")))?;
    pin_mut!(out);
    pin_mut!(sink);
    let bytes = crate::pipe::pipe(out, sink.as_mut(), &rel, throttle).await?;
    let rows = sink
        .finish()
        .await
        .map_err(ReplError::sql(format!("write {rel}")))?;
    // A crash between the chunk's rows and its done mark: the transaction holding both is
    // rolled back, and the chunk is copied again.
    fail::fail_point!("copy::chunk_copied", |_| Err(ReplError::State(
        "stopped at the crash point copy::chunk_copied".into()
    )));
    let marked = tx
        .execute(
            "UPDATE ferry.copy_chunks SET done = true, rows = $3, bytes = $4
              WHERE rel = $1 AND chunk = $2 AND NOT done",
            &[&chunk.rel, &chunk.chunk, &(rows as i64), &(bytes as i64)],
        )
        .await
        .map_err(ReplError::sql("mark the chunk done"))?;
    if marked != 1 {
        // Another session or an earlier run did it: never commit the rows twice.
        tx.rollback()
            .await
            .map_err(ReplError::sql("roll back a duplicate chunk"))?;
        return Ok((0, 0));
    }
    tx.commit()
        .await
        .map_err(ReplError::sql(format!("commit a chunk of {rel}")))?;
    Ok((rows, bytes))
}

/// Rows and bytes of the chunks done before now (for progress after a restart).
pub async fn done_totals(target: &Client) -> ReplResult<(u64, u64)> {
    let row = target
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(bytes), 0)::bigint FROM ferry.copy_chunks WHERE done",
            &[],
        )
        .await
        .map_err(ReplError::sql("read copy totals"))?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}
