//! The replication run, resumable at every stage: schema (pre-data) → capture installed →
//! snapshot copy → post-data → streaming. Stage markers live on the target and commit with the
//! work they mark, so a worker killed at any instant picks up where it stopped.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use ferry_core::spec::{CaptureMode, LogicalTransport};
use ferry_pg::{
    PgUrl,
    catalog::{self, Table},
};
use tokio_postgres::Client;

use crate::{
    ChangeBatch,
    apply::{Applied, Applier, WriteMode},
    bookkeeping,
    capture::{logical, stream::LogicalStream, trigger},
    copy::{self, CopyProgress},
    error::{ReplError, ReplResult},
    schema::{Section, Tools},
    verify::{self, TableCheck},
};

/// Stage markers, in order.
pub mod stage {
    /// Pre-data restored on the target.
    pub const SCHEMA: &str = "schema";
    /// Capture installed on the source.
    pub const CAPTURE: &str = "capture";
    /// Snapshot copy complete.
    pub const COPIED: &str = "copied";
    /// Post-data restored: streaming.
    pub const STREAMING: &str = "streaming";
    /// After cutover: capture on the target, apply to the source.
    pub const REVERSE: &str = "reverse";
}

/// The forward stream's name in `ferry.apply_state`.
pub const FORWARD: &str = "forward";
/// The reverse stream's name (its `ferry.apply_state` lives on the source).
pub const REVERSE: &str = "reverse";

/// What the replicator needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The source (Heroku Postgres).
    pub source: PgUrl,
    /// The target (RDS).
    pub target: PgUrl,
    /// pg_dump / psql, at least as new as the source.
    pub tools: Tools,
    /// Parallel copy sessions.
    pub parallelism: usize,
    /// Rows per copy chunk for tables with an integer key.
    pub rows_per_chunk: i64,
    /// Changes per apply batch.
    pub batch_size: i64,
    /// Trigger or logical (already resolved from `auto` by preflight).
    pub capture: CaptureMode,
    /// The snapshot copy's read rate limit, bytes per second across its sessions.
    pub max_copy_bytes_per_second: Option<u64>,
    /// How logical capture reads the slot.
    pub logical_transport: LogicalTransport,
}

/// Counters for the heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// The stage reached (`None` before the schema copy).
    pub stage: Option<String>,
    /// Tables fully copied / to copy.
    pub tables_done: u64,
    /// Tables to copy.
    pub tables_total: u64,
    /// Rows copied by the snapshot.
    pub rows_copied: u64,
    /// Bytes copied by the snapshot.
    pub bytes_copied: u64,
    /// An estimate of the bytes the snapshot copy moves in all (0 before it is planned).
    pub bytes_total: u64,
    /// The source's latest change position (log id, or WAL LSN).
    pub source_position: Option<String>,
    /// Last position applied on the target.
    pub applied_position: Option<String>,
    /// Changes applied so far.
    pub changes_applied: i64,
    /// Changes waiting: an upper bound in trigger mode (log id span); in logical mode the
    /// changes of a small look-ahead (at most about 100).
    pub lag_changes: u64,
    /// Age of the oldest waiting change.
    pub lag_seconds: Option<f64>,
}

/// How long each preparation stage took (zero for stages done by an earlier run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrepareTimings {
    /// Schema dump and pre-data restore.
    pub schema: std::time::Duration,
    /// Capture installation.
    pub capture: std::time::Duration,
    /// Snapshot copy.
    pub copy: std::time::Duration,
    /// Post-data restore after the copy: keys and indexes not built during it (none, unless
    /// a restart came between), then foreign keys, triggers, rules; then ANALYZE.
    pub post_data: std::time::Duration,
}

/// One replication run between a source and a target.
#[derive(Debug)]
pub struct Replicator {
    cfg: Config,
    source: Client,
    target: Client,
    tables: Vec<Table>,
    copy_progress: Arc<CopyProgress>,
    applier: Option<Applier>,
    slot: String,
    reverse: bool,
    /// Whether `pg_log_standby_snapshot()` works on the source (PostgreSQL 16+, permitted).
    log_snapshots: bool,
    /// The replication-protocol session on the slot (logical capture, `stream` transport),
    /// opened when the apply first reads.
    stream: Option<LogicalStream>,
    /// The trigger log's read window (forward on the source, reverse on the target).
    log_reader: trigger::LogReader,
}

impl Replicator {
    /// Connects to both sides, creates the target's bookkeeping, and reads the source catalog.
    pub async fn connect(cfg: Config) -> ReplResult<Self> {
        let source = cfg.source.connect().await?;
        let target = cfg.target.connect().await?;
        bookkeeping::ensure(&target).await?;
        let tables = catalog::tables(&source).await?;
        let slot = logical::slot_name(cfg.source.dbname().unwrap_or("postgres"));
        let reverse = bookkeeping::get(&target, "stage").await?.as_deref() == Some(stage::REVERSE);
        Ok(Self {
            log_snapshots: true,
            reverse,
            slot,
            cfg,
            source,
            target,
            tables,
            copy_progress: Arc::new(CopyProgress::default()),
            applier: None,
            stream: None,
            log_reader: trigger::LogReader::default(),
        })
    }

    /// The replicated tables as read from the source.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Live copy counters (shared with a heartbeat task).
    pub fn copy_progress(&self) -> Arc<CopyProgress> {
        self.copy_progress.clone()
    }

    /// The stage reached so far.
    pub async fn stage(&self) -> ReplResult<Option<String>> {
        bookkeeping::get(&self.target, "stage").await
    }

    /// Runs every stage not yet done, up to streaming; returns how long each took.
    pub async fn prepare(&mut self) -> ReplResult<PrepareTimings> {
        let mut timings = PrepareTimings::default();
        let mut t = std::time::Instant::now();
        if self.stage().await?.is_none() {
            self.copy_schema().await?;
        }
        timings.schema = t.elapsed();
        t = std::time::Instant::now();
        if self.stage().await?.as_deref() == Some(stage::SCHEMA) {
            match self.cfg.capture {
                CaptureMode::Logical => {
                    logical::install(&self.source, &self.slot, &self.tables).await?
                }
                _ => trigger::install(&self.source, &self.tables).await?,
            }
            self.reach(stage::CAPTURE).await?;
        }
        timings.capture = t.elapsed();
        t = std::time::Instant::now();
        if self.stage().await?.as_deref() == Some(stage::CAPTURE) {
            self.snapshot_copy().await?;
            self.reach(stage::COPIED).await?;
        }
        timings.copy = t.elapsed();
        t = std::time::Instant::now();
        if self.stage().await?.as_deref() == Some(stage::COPIED) {
            let (post, sizes) = self.post_data().await?;
            crate::postdata::restore(&self.cfg.target, &post, &sizes, self.cfg.parallelism).await?;
            crate::postdata::analyse(&self.target, &self.tables).await?;
            self.reach(stage::STREAMING).await?;
        }
        timings.post_data = t.elapsed();
        let (rows, bytes) = copy::done_totals(&self.target).await?;
        self.copy_progress.rows.store(rows, Ordering::Relaxed);
        self.copy_progress.bytes.store(bytes, Ordering::Relaxed);
        Ok(timings)
    }

    /// Records that the preparation reached `s`; a restart begins at it.
    async fn reach(&self, s: &str) -> ReplResult<()> {
        bookkeeping::set(&self.target, "stage", s).await?;
        // A crash right after a stage marker: the next run starts at the stage it names.
        fail::fail_point!("stage::marked", |_| Err(ReplError::State(format!(
            "stopped at the crash point stage::marked ({s})"
        ))));
        Ok(())
    }

    /// The stored post-data, split, and the tables' sizes (bytes by `schema.name`).
    async fn post_data(&self) -> ReplResult<(crate::schema::PostData, HashMap<String, i64>)> {
        let post = bookkeeping::get(&self.target, "post_data")
            .await?
            .ok_or_else(|| ReplError::State("post-data schema missing from ferry.state".into()))?;
        let sizes = self
            .tables
            .iter()
            .map(|t| (t.display_name(), t.total_bytes))
            .collect();
        Ok((crate::schema::split_post_data(&post), sizes))
    }

    /// Dumps both schema sections before capture exists (so post-data never carries Ferry's
    /// triggers), keeps post-data on the target, restores pre-data with its stage marker in
    /// the same transaction.
    async fn copy_schema(&mut self) -> ReplResult<()> {
        let pre = self
            .cfg
            .tools
            .dump(&self.cfg.source, Section::PreData)
            .await?;
        let post = self
            .cfg
            .tools
            .dump(&self.cfg.source, Section::PostData)
            .await?;
        bookkeeping::set(&self.target, "post_data", &post).await?;
        let restored = self
            .cfg
            .tools
            .restore(&self.cfg.target, &with_stage(&pre, stage::SCHEMA))
            .await;
        self.unless_stage_reached(restored, stage::SCHEMA).await
    }

    /// A restore that failed because an earlier, killed worker's psql committed the same
    /// script meanwhile (its marker is there now) is not an error.
    async fn unless_stage_reached(&self, result: ReplResult<()>, reached: &str) -> ReplResult<()> {
        match result {
            Err(e) => {
                let order = [
                    stage::SCHEMA,
                    stage::CAPTURE,
                    stage::COPIED,
                    stage::STREAMING,
                ];
                let want = order.iter().position(|s| *s == reached);
                let now = self.stage().await?;
                let have = now
                    .as_deref()
                    .and_then(|n| order.iter().position(|s| *s == n));
                match (want, have) {
                    (Some(w), Some(h)) if h >= w => Ok(()),
                    _ => Err(e),
                }
            }
            ok => ok,
        }
    }

    async fn snapshot_copy(&mut self) -> ReplResult<()> {
        let mut holder = self.cfg.source.connect().await?;
        let snapshot = copy::export_snapshot(&mut holder).await?;
        let chunks =
            copy::plan(&holder, &self.target, &self.tables, self.cfg.rows_per_chunk).await?;
        let oids: Vec<u32> = self
            .tables
            .iter()
            .filter(|t| t.holds_rows())
            .map(|t| t.oid)
            .collect();
        let estimate: i64 = holder
            .query_one(
                "SELECT coalesce(sum(pg_table_size(o)), 0)::bigint FROM unnest($1::oid[]) o",
                &[&oids],
            )
            .await
            .map_err(ReplError::sql("estimate the bytes to copy"))?
            .get(0);
        self.copy_progress
            .bytes_total
            .store(estimate.max(0) as u64, Ordering::Relaxed);
        // Each table's keys and indexes are built as soon as its last chunk is in, by their
        // own sessions, while the other tables are still copied (as pgcopydb does).
        let (post, sizes) = self.post_data().await?;
        let (finished, copied) = tokio::sync::mpsc::unbounded_channel();
        let copy = copy::run(
            &self.cfg.source,
            &self.cfg.target,
            &snapshot,
            &self.tables,
            chunks,
            copy::Sessions {
                parallelism: self.cfg.parallelism,
                progress: self.copy_progress.clone(),
                throttle: self
                    .cfg
                    .max_copy_bytes_per_second
                    .map(|r| Arc::new(crate::throttle::Throttle::new(r))),
                finished: Some(finished),
            },
        );
        let build = crate::postdata::build_as_copied(
            &self.cfg.target,
            &post,
            &sizes,
            self.cfg.parallelism,
            copied,
        );
        let result = tokio::try_join!(copy, build).map(|_| ());
        let _ = holder.batch_execute("COMMIT").await;
        result?;
        copy::dedupe_resumed(&mut self.target, &self.tables).await?;
        Ok(())
    }

    /// Whether the forward stream reads the slot over the replication protocol.
    fn streams(&self) -> bool {
        self.cfg.capture == CaptureMode::Logical
            && self.cfg.logical_transport == LogicalTransport::Stream
            && !self.reverse
    }

    /// Whether an empty [`Replicator::apply_once`] has already waited for changes to arrive
    /// (a stream's read waits on its session's notification): the caller need not sleep.
    pub fn waits_for_changes(&self) -> bool {
        self.streams()
    }

    /// The replication session, opened on first use.
    async fn stream(&mut self) -> ReplResult<&LogicalStream> {
        if self.stream.is_none() {
            let opened = LogicalStream::open(&self.cfg.source, &self.slot).await?;
            tracing::info!(slot = %self.slot, "streaming from the slot");
            self.stream = Some(opened);
        }
        self.stream
            .as_ref()
            .ok_or_else(|| ReplError::State("replication stream not open".into()))
    }

    /// Ends the replication session (before the slot is dropped).
    async fn close_stream(&mut self) {
        if let Some(s) = self.stream.take() {
            s.close().await;
        }
    }

    async fn read_batch(&mut self) -> ReplResult<ChangeBatch> {
        if self.streams() {
            // Batches of the configured size: a stream has no per-read start-up to amortise.
            let limit = usize::try_from(self.cfg.batch_size).unwrap_or(5_000);
            let wait = std::time::Duration::from_millis(100);
            let taken = self.stream().await?.take(limit, wait).await;
            if taken.is_err() {
                // A broken session is opened again on the next read, from the slot's
                // confirmed position.
                self.stream = None;
            }
            return taken;
        }
        match self.cfg.capture {
            // Decoding through the SQL interface starts again from the slot's restart point on
            // every call (which moves only with the server's running-transactions records,
            // every 15 s on PostgreSQL 15), so read big batches to pay that start-up rarely.
            CaptureMode::Logical => {
                logical::read_batch(&self.source, &self.slot, self.cfg.batch_size * 10, None).await
            }
            _ => {
                self.log_reader
                    .read_batch(&self.source, self.cfg.batch_size)
                    .await
            }
        }
    }

    /// Applies one batch of captured changes; returns what it did (zero changes: caught up).
    /// Forward: source → target; after [`Replicator::start_reverse`]: target → source.
    pub async fn apply_once(&mut self) -> ReplResult<Applied> {
        let reverse = self.reverse;
        if self.applier.is_none() {
            let (tables, write_side) = if reverse {
                (catalog::tables(&self.target).await?, &self.source)
            } else {
                (self.tables.clone(), &self.target)
            };
            let mode = write_mode(write_side).await?;
            self.applier = Some(Applier::new(&tables, write_side, mode).await?);
        }
        let batch = if reverse {
            self.log_reader
                .read_batch(&self.target, self.cfg.batch_size)
                .await?
        } else {
            self.read_batch().await?
        };
        if batch.changes.is_empty() {
            // Streamed transactions that touched no published table still move the slot.
            if let (Some(stream), Some(position)) = (&self.stream, &batch.position) {
                stream.ack(position)?;
            }
            return Ok(Applied::default());
        }
        let applier = self
            .applier
            .as_ref()
            .ok_or_else(|| ReplError::State("no applier".into()))?;
        let (fetch, write, stream) = if reverse {
            (&mut self.target, &mut self.source, REVERSE)
        } else {
            (&mut self.source, &mut self.target, FORWARD)
        };
        let applied = match applier.apply(fetch, write, stream, &batch).await {
            Ok(applied) => applied,
            Err(e) => {
                // Read again from the oldest unapplied row, not past this batch.
                self.log_reader.forget();
                return Err(e);
            }
        };
        match (reverse, self.cfg.capture, &batch.position) {
            (true, _, _) => trigger::ack(&self.target, &batch).await?,
            (false, CaptureMode::Logical, Some(position)) if self.stream.is_some() => {
                if let Some(stream) = &self.stream {
                    stream.ack(position)?;
                }
            }
            (false, CaptureMode::Logical, Some(position)) => {
                logical::ack(&self.source, &self.slot, position).await?;
                if self.log_snapshots {
                    self.log_snapshots = logical::log_running_xacts(&self.source).await;
                }
            }
            (false, _, _) => trigger::ack(&self.source, &batch).await?,
        }
        Ok(applied)
    }

    /// Turns the stream around after cutover: forward capture comes off the source, trigger
    /// capture goes on the target, and from now on changes made on the target are applied to
    /// the source, so a rollback loses no write. Idempotent.
    pub async fn start_reverse(&mut self) -> ReplResult<()> {
        self.close_stream().await;
        if self.stage().await?.as_deref() != Some(stage::REVERSE) {
            match self.cfg.capture {
                CaptureMode::Logical => logical::uninstall(&self.source, &self.slot).await?,
                _ => trigger::uninstall(&self.source, &self.tables).await?,
            }
            bookkeeping::ensure(&self.source).await?;
            let target_tables = catalog::tables(&self.target).await?;
            trigger::install(&self.target, &target_tables).await?;
            bookkeeping::set(&self.target, "stage", stage::REVERSE).await?;
        }
        self.reverse = true;
        self.applier = None;
        self.log_reader.forget();
        Ok(())
    }

    /// Installs trigger capture on the target (idempotent) without turning the stream around:
    /// the cutover does this inside the write freeze, after the drain and before the target
    /// becomes writable, so that the app's first write on the target is already captured for
    /// the reverse stream. (Installed later, by the worker's [`Replicator::start_reverse`],
    /// writes made in between would never reach the source: found by the rollback-window
    /// end-to-end test, which lost the first writes made on AWS.)
    pub async fn install_reverse_capture(&self) -> ReplResult<()> {
        let target_tables = catalog::tables(&self.target).await?;
        trigger::install(&self.target, &target_tables).await
    }

    /// Whether the stream runs from the target back to the source.
    pub fn is_reverse(&self) -> bool {
        self.reverse
    }

    /// Applies batches until everything up to `position` (the source head taken after writes
    /// stopped: the cutover drain) is applied, or, without a position, until nothing waits.
    pub async fn drain(&mut self, position: Option<&str>) -> ReplResult<u64> {
        // A stream delivers what commits a moment later, so an empty read does not mean
        // nothing waits: drain to the head as it is now instead.
        let head = match position {
            None if self.streams() => Some(self.source_head().await?),
            p => p.map(str::to_string),
        };
        let position = head.as_deref();
        let mut total = 0u64;
        loop {
            if let Some(p) = position
                && self.drained_to(p).await?
            {
                return Ok(total);
            }
            // An empty batch means nothing waits: no separate look at the capture side (in
            // logical mode that would decode the slot a second time per round).
            let applied = self.apply_once().await?.changes as u64;
            match (applied, position) {
                (0, None) => return Ok(total),
                // A streamed read waited already (and wakes as changes arrive).
                (0, Some(_)) if self.waits_for_changes() => {}
                // The position's changes are not visible yet: wait a little, don't spin.
                (0, Some(_)) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                _ => total += applied,
            }
        }
    }

    /// Counters for the heartbeat.
    pub async fn status(&self) -> ReplResult<Status> {
        let stage = self.stage().await?;
        let applied = if self.reverse {
            bookkeeping::applied(&self.source, REVERSE).await?
        } else {
            bookkeeping::applied(&self.target, FORWARD).await?
        };
        let capture_on = matches!(
            stage.as_deref(),
            Some(stage::CAPTURE | stage::COPIED | stage::STREAMING | stage::REVERSE)
        );
        let (source_position, lag_changes, lag_seconds) = if !capture_on {
            (None, 0, None)
        } else if self.reverse {
            let b = trigger::backlog(&self.target).await?;
            (
                Some(b.head.to_string()),
                b.waiting,
                b.oldest_age_seconds.or(Some(0.0)),
            )
        } else if let Some(stream) = &self.stream {
            let (head, _) = logical::head_and_lag(&self.source, &self.slot).await?;
            let (waiting, oldest) = stream.backlog();
            let age =
                oldest.map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
            (Some(head), waiting, age.or(Some(0.0)))
        } else if self.cfg.capture == CaptureMode::Logical {
            let (head, _) = logical::head_and_lag(&self.source, &self.slot).await?;
            // Decode a small look-ahead: whether anything waits, and since when.
            let next = logical::read_batch(&self.source, &self.slot, 100, None).await?;
            let age = next
                .oldest
                .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
            (Some(head), next.changes.len() as u64, age.or(Some(0.0)))
        } else {
            let b = trigger::backlog(&self.source).await?;
            (
                Some(b.head.to_string()),
                b.waiting,
                b.oldest_age_seconds.or(Some(0.0)),
            )
        };
        let p = &self.copy_progress;
        Ok(Status {
            stage,
            tables_done: p.tables_done.load(Ordering::Relaxed),
            tables_total: p.tables_total.load(Ordering::Relaxed),
            rows_copied: p.rows.load(Ordering::Relaxed),
            bytes_copied: p.bytes.load(Ordering::Relaxed),
            bytes_total: p.bytes_total.load(Ordering::Relaxed),
            source_position,
            applied_position: applied.as_ref().map(|a| a.0.clone()),
            changes_applied: applied.map_or(0, |a| a.1),
            lag_changes,
            lag_seconds,
        })
    }

    /// Tables whose columns differ between source and target (DDL on one side only).
    pub async fn schema_changes(&self) -> ReplResult<Vec<String>> {
        crate::watch::changed_tables(&self.source, &self.target).await
    }

    /// Rereads the source catalog (after a person reconciled a schema change).
    pub async fn reload_catalog(&mut self) -> ReplResult<()> {
        self.tables = catalog::tables(&self.source).await?;
        self.applier = None;
        Ok(())
    }

    /// The source's change head: the drain target once writes have stopped.
    /// Wakes the worker of `migration_id` (listening on the source, [`ferry_pg::wake`]) to
    /// read its command now.
    pub async fn wake_worker(&self, migration_id: &str) -> ReplResult<()> {
        Ok(ferry_pg::wake::wake(&self.source, migration_id).await?)
    }

    /// The current position of the change source (the source's head; the target's in reverse).
    pub async fn source_head(&self) -> ReplResult<String> {
        if self.reverse {
            return Ok(trigger::mark(&self.target).await?.to_string());
        }
        match self.cfg.capture {
            CaptureMode::Logical => Ok(logical::head_and_lag(&self.source, &self.slot).await?.0),
            _ => Ok(trigger::mark(&self.source).await?.to_string()),
        }
    }

    /// Whether the target is, right now, the source as of one instant: an empty read of the
    /// trigger log says so; a stream says so only once the server confirms it has sent
    /// everything up to the current head and all of it is applied (an empty queue alone may
    /// just mean the next transaction is still on its way, while rows already applied were
    /// read at a later state of the source). Foreign keys are validated only then.
    pub async fn consistent_now(&mut self) -> ReplResult<bool> {
        if !self.streams() {
            return Ok(true);
        }
        let head = self.source_head().await?;
        self.drained_to(&head).await
    }

    /// Whether every change up to `position` is applied.
    pub async fn drained_to(&mut self, position: &str) -> ReplResult<bool> {
        if self.streams() {
            let drained = self.stream().await?.drained_to(position).await;
            if drained.is_err() {
                self.stream = None;
            }
            return drained;
        }
        let capture_side = if self.reverse {
            &self.target
        } else {
            &self.source
        };
        match self.cfg.capture {
            CaptureMode::Logical if !self.reverse => {
                logical::drained_to(&self.source, &self.slot, position).await
            }
            _ => {
                let p: i64 = position.parse().map_err(|_| {
                    ReplError::State(format!("{position:?} is not a change-log position"))
                })?;
                trigger::applied_past(capture_side, p).await
            }
        }
    }

    /// Compares source and target table by table.
    pub async fn verify(&self) -> ReplResult<Vec<TableCheck>> {
        verify::verify(
            &self.source,
            &self.target,
            &self.tables,
            verify::ROWS_PER_BUCKET,
        )
        .await
    }

    /// Validates the foreign keys the post-data restore added `NOT VALID` (call once caught
    /// up: then every parent row a child needs has been applied). Returns how many.
    pub async fn validate_foreign_keys(&self) -> ReplResult<usize> {
        crate::postdata::validate_foreign_keys(&self.source, &self.target).await
    }

    /// Row counts of every capture unit on both sides: `(schema.name, source, target)`. A
    /// scan of each table; the cutover's optional check inside the freeze.
    pub async fn count_rows(&self) -> ReplResult<Vec<(String, i64, i64)>> {
        let mut out = Vec::new();
        for t in self.tables.iter().filter(|t| t.is_capture_unit()) {
            let sql = format!("SELECT count(*) FROM {}", t.qualified());
            let what = format!("count the rows of {}", t.display_name());
            let s: i64 = self
                .source
                .query_one(&sql, &[])
                .await
                .map_err(ReplError::sql(what.clone()))?
                .get(0);
            let d: i64 = self
                .target
                .query_one(&sql, &[])
                .await
                .map_err(ReplError::sql(what))?
                .get(0);
            out.push((t.display_name(), s, d));
        }
        Ok(out)
    }

    /// Sets the target's sequences from the source's, plus `gap`.
    pub async fn sync_sequences(&self, gap: i64) -> ReplResult<usize> {
        verify::sync_sequences(&self.source, &self.target, gap).await
    }

    /// Removes capture from both sides and Ferry's bookkeeping. Idempotent.
    pub async fn cleanup(&mut self) -> ReplResult<()> {
        // The target's capture exists in reverse mode, and also after a cutover that installed
        // it and was then undone.
        self.close_stream().await;
        let target_tables = catalog::tables(&self.target).await?;
        trigger::uninstall(&self.target, &target_tables).await?;
        match self.cfg.capture {
            CaptureMode::Logical => logical::uninstall(&self.source, &self.slot).await?,
            _ => trigger::uninstall(&self.source, &self.tables).await?,
        }
        self.source
            .batch_execute("DROP SCHEMA IF EXISTS ferry CASCADE")
            .await
            .map_err(ReplError::sql("drop the source's ferry schema"))?;
        self.target
            .batch_execute("DROP SCHEMA IF EXISTS ferry CASCADE")
            .await
            .map_err(ReplError::sql("drop the target's ferry schema"))
    }
}

/// Replica mode where the role may set `session_replication_role`, ordered mode otherwise.
/// `has_parameter_privilege` exists from PostgreSQL 15 on: an older server is asked only
/// whether the role is a superuser (the function's name would fail the query on 14 whatever
/// guards it, since functions are resolved when the query is parsed).
async fn write_mode(client: &Client) -> ReplResult<WriteMode> {
    let row = client
        .query_one(
            "SELECT rolsuper, current_setting('server_version_num')::int >= 150000
               FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(ReplError::sql("check the write side's privileges"))?;
    let (superuser, grantable): (bool, bool) = (row.get(0), row.get(1));
    let can_set = superuser
        || (grantable
            && client
                .query_one(
                    "SELECT has_parameter_privilege('session_replication_role', 'SET')",
                    &[],
                )
                .await
                .map_err(ReplError::sql("check the write side's privileges"))?
                .get::<_, bool>(0));
    Ok(if can_set {
        WriteMode::Replica
    } else {
        WriteMode::Ordered
    })
}

/// Appends the stage marker to a schema script, so psql commits both in one transaction.
fn with_stage(sql: &str, stage: &str) -> String {
    format!(
        "{sql}\nINSERT INTO ferry.state (key, value) VALUES ('stage', '{stage}')
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = clock_timestamp();\n"
    )
}
