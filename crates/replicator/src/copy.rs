//! The consistent snapshot copy: every table's rows as of one exported source snapshot,
//! streamed with COPY from source to target by N parallel sessions. Tables with a single
//! integer key are split into key ranges so a large table is copied in parallel.
//!
//! The plan (chunks and their ranges) is stored on the target before any row is copied, and
//! each chunk is marked done in the same transaction as its rows, so a restarted copy skips
//! what is done and never copies a row twice. Chunks copied under different snapshots after a
//! restart still converge: capture started before the first snapshot, and its log holds every
//! change since.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ferry_pg::{
    PgUrl,
    catalog::{Table, quote_ident},
};
use futures_util::pin_mut;
use tokio_postgres::{Client, GenericClient};

use crate::error::{ReplError, ReplResult};

/// One unit of copy work: a table's rows, or one key range of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// `schema.name` of the table holding the rows (a plain table or a leaf partition).
    pub rel: String,
    /// Chunk number within the table.
    pub chunk: i32,
    /// Inclusive lower key bound, or unbounded.
    pub lo: Option<i64>,
    /// Exclusive upper key bound, or unbounded.
    pub hi: Option<i64>,
    /// Whether it has been copied.
    pub done: bool,
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

/// Reads the stored plan, or makes one under `snapshot_client` (a session holding the
/// snapshot) and stores it on the target.
pub async fn plan(
    snapshot_client: &impl GenericClient,
    target: &Client,
    tables: &[Table],
    rows_per_chunk: i64,
) -> ReplResult<Vec<Chunk>> {
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| t.holds_rows()) {
        let rel = t.display_name();
        let stored = target
            .query(
                "SELECT chunk, lo, hi, done FROM ferry.copy_chunks WHERE rel = $1 ORDER BY chunk",
                &[&rel],
            )
            .await
            .map_err(ReplError::sql("read the copy plan"))?;
        if !stored.is_empty() {
            out.extend(stored.iter().map(|r| Chunk {
                rel: rel.clone(),
                chunk: r.get(0),
                lo: r.get(1),
                hi: r.get(2),
                done: r.get(3),
            }));
            continue;
        }
        let estimate = if t.estimated_rows >= 0 {
            t.estimated_rows
        } else {
            t.total_bytes / 100
        };
        let mut bounds: Vec<(Option<i64>, Option<i64>)> = vec![(None, None)];
        if let Some(key) = t.integer_key()
            && estimate > rows_per_chunk
        {
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
            if let (Some(min), Some(max)) =
                (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
            {
                let n = ((estimate + rows_per_chunk - 1) / rows_per_chunk).clamp(1, 10_000);
                let step = ((max - min) / n).max(1);
                let cuts: Vec<i64> = (1..n)
                    .map(|i| min + i * step)
                    .filter(|c| *c <= max)
                    .collect();
                bounds = Vec::with_capacity(cuts.len() + 1);
                let mut lo = None;
                for c in cuts {
                    bounds.push((lo, Some(c)));
                    lo = Some(c);
                }
                bounds.push((lo, None));
            }
        }
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
        out.extend(ids.iter().zip(bounds).map(|(chunk, (lo, hi))| Chunk {
            rel: rel.clone(),
            chunk: *chunk,
            lo,
            hi,
            done: false,
        }));
    }
    Ok(out)
}

/// Copies every chunk not yet done with `parallelism` sessions, each importing `snapshot`.
pub async fn run(
    source: &PgUrl,
    target: &PgUrl,
    snapshot: &str,
    tables: &[Table],
    chunks: Vec<Chunk>,
    parallelism: usize,
    progress: Arc<CopyProgress>,
) -> ReplResult<()> {
    let total_tables = tables.iter().filter(|t| t.holds_rows()).count() as u64;
    progress.tables_total.store(total_tables, Ordering::Relaxed);
    progress
        .chunks_total
        .store(chunks.len() as u64, Ordering::Relaxed);
    let done_before = chunks.iter().filter(|c| c.done).count() as u64;
    progress.chunks_done.store(done_before, Ordering::Relaxed);
    let mut pending: Vec<Chunk> = chunks.iter().filter(|c| !c.done).cloned().collect();
    // Unbounded-above chunks and whole tables first: they tend to be the largest.
    pending.sort_by_key(|c| (c.hi.is_some(), c.rel.clone(), c.chunk));
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
        let (queue, by_name, progress, remaining) = (
            queue.clone(),
            by_name.clone(),
            progress.clone(),
            remaining_per_table.clone(),
        );
        sessions.spawn(async move {
            session(
                &source, &target, &snapshot, &queue, &by_name, &progress, &remaining,
            )
            .await
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

async fn session(
    source: &PgUrl,
    target: &PgUrl,
    snapshot: &str,
    queue: &Mutex<VecDeque<Chunk>>,
    tables: &std::collections::HashMap<String, Table>,
    progress: &CopyProgress,
    remaining: &Mutex<std::collections::HashMap<String, usize>>,
) -> ReplResult<()> {
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
        let (rows, bytes) = copy_chunk(&src, &mut tgt, table, &chunk).await?;
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
) -> ReplResult<(u64, u64)> {
    let rel = table.display_name();
    let cols = table.copy_column_list();
    let mut filter = Vec::new();
    if let Some(key) = table.integer_key() {
        if let Some(lo) = chunk.lo {
            filter.push(format!("{} >= {lo}", quote_ident(key)));
        }
        if let Some(hi) = chunk.hi {
            filter.push(format!("{} < {hi}", quote_ident(key)));
        }
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
    let bytes = crate::pipe::pipe(out, sink.as_mut(), &rel).await?;
    let rows = sink
        .finish()
        .await
        .map_err(ReplError::sql(format!("write {rel}")))?;
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
