//! The worker's main loop: prepare (schema, capture, copy), then stream, heartbeat to the
//! progress item, and carry out commands from the command item. Lambdas never talk to the
//! worker directly: they read its progress and write commands.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::Utc;
use ferry_core::{
    StepErrorName,
    metrics::{Metric, MetricSink, Unit},
    state::{
        AuditEvent, DRAIN_CHECK_FACT, DrainCheck, DrainCheckState, Outcome, WorkerCommand,
        WorkerPhase, WorkerProgress,
    },
    store::{MigrationStore, StoreError},
};

use crate::{
    ReplError,
    copy::CopyProgress,
    drain_check::{self, Report},
    engine::{Config, Replicator, Status},
};

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The migration.
    pub migration_id: String,
    /// This process (ECS task ARN, or host/pid).
    pub worker_id: String,
    /// Between heartbeats.
    pub heartbeat: Duration,
    /// Between command checks while streaming.
    pub command_poll: Duration,
    /// Sleep when a batch comes back empty (not after a streamed read: it waited already).
    pub idle: Duration,
    /// Between schema fingerprint checks.
    pub schema_check: Duration,
    /// The replication settings.
    pub replicator: Config,
    /// Where the heartbeat's EMF metric lines go (stdout in the ECS task).
    pub metrics: Arc<dyn MetricSink>,
    /// The time limit of the exact comparison after a drain (None: not run).
    pub drain_check: Option<Duration>,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A stop command was carried out.
    Stopped {
        /// Whether capture objects were removed.
        cleaned_up: bool,
    },
    /// A newer worker took over: this one must end.
    Superseded,
}

/// Why the run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Replication failed.
    #[error(transparent)]
    Repl(#[from] ReplError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    /// Whether a server refused a login (credentials rotated under the worker).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, RunError::Repl(e) if e.is_auth_failure())
    }
}

impl StepErrorName for RunError {
    fn step_error_name(&self) -> &'static str {
        match self {
            RunError::Repl(e) => e.step_error_name(),
            RunError::Store(e) => e.step_error_name(),
        }
    }
}

struct Beat<'a> {
    store: &'a dyn MigrationStore,
    cfg: &'a RunnerConfig,
    epoch: u64,
    seq: u64,
    last: Option<Instant>,
    acked: u64,
    paused: bool,
    drained_to: Option<String>,
    error: Option<(String, String)>,
    /// Bytes copied at the previous heartbeat, and when: the copy throughput between beats.
    copied_before: Option<(u64, Instant)>,
    /// Bytes copied when this worker first saw the copy, and when: its average throughput.
    copy_started: Option<(u64, Instant)>,
}

impl Beat<'_> {
    /// Lag, changes waiting, bytes copied and the copy throughput since the last beat.
    fn metrics(&mut self, status: &Status) {
        let now = Instant::now();
        let mut m = vec![
            Metric::new("CopiedBytes", status.bytes_copied as f64, Unit::Bytes),
            Metric::new("ChangesWaiting", status.lag_changes as f64, Unit::Count),
        ];
        if let Some(lag) = status.lag_seconds {
            m.push(Metric::new("ReplicationLagSeconds", lag, Unit::Seconds));
        }
        if let Some((bytes, at)) = self.copied_before {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 && status.bytes_copied >= bytes {
                m.push(Metric::new(
                    "CopyBytesPerSecond",
                    (status.bytes_copied - bytes) as f64 / secs,
                    Unit::BytesPerSecond,
                ));
            }
        }
        self.copied_before = Some((status.bytes_copied, now));
        self.cfg.metrics.emit(&self.cfg.migration_id, "worker", &m);
    }

    async fn write(&mut self, phase: WorkerPhase, status: &Status) -> Result<bool, StoreError> {
        self.seq += 1;
        self.last = Some(Instant::now());
        let progress = WorkerProgress {
            migration_id: self.cfg.migration_id.clone(),
            worker_id: self.cfg.worker_id.clone(),
            epoch: self.epoch,
            seq: self.seq,
            phase,
            tables_done: status.tables_done as u32,
            tables_total: status.tables_total as u32,
            rows_copied: status.rows_copied,
            bytes_copied: status.bytes_copied,
            bytes_total: (status.bytes_total > 0).then_some(status.bytes_total),
            copy_bytes_per_second: self.copy_rate(status),
            source_position: status.source_position.clone(),
            applied_position: status.applied_position.clone(),
            lag_seconds: status.lag_seconds,
            lag_changes: Some(status.lag_changes),
            heartbeat_at: Utc::now(),
            error: self.error.as_ref().map(|e| e.1.clone()),
            error_name: self.error.as_ref().map(|e| e.0.clone()),
            acked_command: self.acked,
            paused: self.paused,
            drained_to: self.drained_to.clone(),
        };
        match self.store.put_progress(&progress).await {
            Ok(()) => {
                self.metrics(status);
                Ok(true)
            }
            Err(StoreError::WorkerSuperseded { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The copy's average throughput since this worker first saw it move (None before, and
    /// once the copy has ended).
    fn copy_rate(&mut self, status: &Status) -> Option<f64> {
        if status.tables_total == 0 || status.tables_done >= status.tables_total {
            return None;
        }
        let (bytes, at) = *self
            .copy_started
            .get_or_insert((status.bytes_copied, Instant::now()));
        let secs = at.elapsed().as_secs_f64();
        (secs >= 1.0 && status.bytes_copied > bytes)
            .then(|| (status.bytes_copied - bytes) as f64 / secs)
    }

    fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.cfg.heartbeat)
    }
}

fn copy_status(p: &CopyProgress) -> Status {
    Status {
        tables_done: p.tables_done.load(Ordering::Relaxed),
        tables_total: p.tables_total.load(Ordering::Relaxed),
        rows_copied: p.rows.load(Ordering::Relaxed),
        bytes_copied: p.bytes.load(Ordering::Relaxed),
        bytes_total: p.bytes_total.load(Ordering::Relaxed),
        ..Status::default()
    }
}

/// Records a schema-change block in the heartbeat; returns the tables to watch.
fn block(beat: &mut Beat<'_>, e: &ReplError, tables: Vec<String>) -> Vec<String> {
    tracing::warn!(error = %e, "apply paused");
    beat.error = Some((e.step_error_name().to_string(), e.to_string()));
    tables
}

fn phase(rep: &Replicator) -> WorkerPhase {
    if rep.is_reverse() {
        WorkerPhase::Reverse
    } else {
        WorkerPhase::Streaming
    }
}

/// Runs the worker until a stop command, supersession, or an error (which is recorded in the
/// progress item before it is returned).
pub async fn run(store: &dyn MigrationStore, cfg: RunnerConfig) -> Result<Exit, RunError> {
    let epoch = Utc::now().timestamp_millis().max(0) as u64;
    let mut beat = Beat {
        store,
        cfg: &cfg,
        epoch,
        seq: 0,
        last: None,
        acked: store
            .progress(&cfg.migration_id)
            .await?
            .map_or(0, |p| p.acked_command),
        paused: false,
        drained_to: None,
        error: None,
        copied_before: None,
        copy_started: None,
    };
    if !beat
        .write(WorkerPhase::Starting, &Status::default())
        .await?
    {
        return Ok(Exit::Superseded);
    }
    match stream(&mut beat, &cfg).await {
        Ok(exit) => Ok(exit),
        Err(e) => {
            let name = e.step_error_name().to_string();
            beat.error = Some((name, e.to_string()));
            let _ = beat.write(WorkerPhase::Failed, &Status::default()).await;
            Err(e)
        }
    }
}

/// Waits for the target's writer lock (see [`crate::fence`]), beating meanwhile: the worker it
/// supersedes sees the new epoch, exits and lets go. `None`: superseded while waiting.
async fn fence(
    beat: &mut Beat<'_>,
    cfg: &RunnerConfig,
) -> Result<Option<crate::fence::Fence>, RunError> {
    let mut warned = Instant::now() - Duration::from_secs(60);
    let mut waiter = crate::fence::Waiter::connect(&cfg.replicator.target).await?;
    loop {
        match waiter.try_take().await? {
            Ok(f) => return Ok(Some(f)),
            Err((again, holder)) => {
                waiter = again;
                if warned.elapsed() >= Duration::from_secs(60) {
                    tracing::warn!(%holder, "another worker holds the target; waiting for it to exit");
                    warned = Instant::now();
                }
                if !beat
                    .write(WorkerPhase::Starting, &Status::default())
                    .await?
                {
                    return Ok(None);
                }
                tokio::time::sleep(cfg.heartbeat.min(Duration::from_secs(1))).await;
            }
        }
    }
}

/// Prepares (schema, copy, post-data), with heartbeats from the copy counters meanwhile;
/// `false` when a newer worker superseded this one.
async fn prepare(
    rep: &mut Replicator,
    beat: &mut Beat<'_>,
    cfg: &RunnerConfig,
) -> Result<bool, RunError> {
    let progress = rep.copy_progress();
    let prepare = rep.prepare();
    tokio::pin!(prepare);
    let mut tick = tokio::time::interval(cfg.heartbeat);
    loop {
        tokio::select! {
            r = &mut prepare => { r?; return Ok(true); }
            _ = tick.tick() => {
                let status = copy_status(&progress);
                let phase = if status.tables_total == 0 { WorkerPhase::Schema } else { WorkerPhase::Copying };
                if !beat.write(phase, &status).await? {
                    return Ok(false);
                }
            }
        }
    }
}

/// What the streaming loop carries from one turn to the next.
#[derive(Default)]
struct LoopState {
    /// The position a drain was asked up to, until it is reached.
    drain_target: Option<String>,
    /// The tables whose shape changed, while the apply is blocked on them.
    schema_block: Option<Vec<String>>,
    /// Whether the foreign keys were validated (once, when first caught up).
    fks_validated: bool,
    /// Whether a `Pause` command holds the apply.
    paused_by_command: bool,
    /// The session listening for wake-ups on the source ([`ferry_pg::wake`]) and what it
    /// hears; none when it could not be opened or ended (the loop then only polls).
    wake: Option<(
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    )>,
}

impl LoopState {
    /// Starts listening for wake-ups on `source`; without it the loop still polls.
    async fn listen(&mut self, source: &ferry_pg::PgUrl) {
        match source.listen(ferry_pg::wake::CHANNEL).await {
            Ok(l) => self.wake = Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for wake-ups; commands are read every poll interval")
            }
        }
    }

    /// Whether a wake-up for `migration_id` arrived since the last look (without waiting).
    fn woken(&mut self, migration_id: &str) -> bool {
        let mut woken = false;
        if let Some((_, rx)) = self.wake.as_mut() {
            loop {
                match rx.try_recv() {
                    Ok(id) => woken |= id == migration_id,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        self.wake = None;
                        break;
                    }
                }
            }
        }
        woken
    }

    /// Sleeps `idle`, or less if a wake-up for `migration_id` arrives; whether one did.
    async fn idle(&mut self, idle: Duration, migration_id: &str) -> bool {
        let Some((_, rx)) = self.wake.as_mut() else {
            tokio::time::sleep(idle).await;
            return false;
        };
        let deadline = tokio::time::Instant::now() + idle;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => return false,
                Ok(Some(id)) if id == migration_id => return true,
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.wake = None;
                    tokio::time::sleep_until(deadline).await;
                    return false;
                }
            }
        }
    }
}

/// Carries out one command of the control plane and acknowledges it in a heartbeat; a `Stop`
/// ends the loop with its exit.
async fn handle_command(
    cmd: ferry_core::state::CommandRecord,
    rep: &mut Replicator,
    beat: &mut Beat<'_>,
    cfg: &RunnerConfig,
    check: &mut Checker,
    state: &mut LoopState,
) -> Result<Option<Exit>, RunError> {
    match cmd.command {
        WorkerCommand::Pause => state.paused_by_command = true,
        WorkerCommand::Resume { force } => {
            state.paused_by_command = false;
            if force && state.schema_block.take().is_some() {
                rep.reload_catalog().await?;
                beat.error = None;
            }
        }
        WorkerCommand::Drain { until } => {
            let target = match until {
                Some(p) => p,
                None => rep.source_head().await?,
            };
            state.drain_target = Some(target);
            beat.drained_to = None;
            check.prepare(cfg);
            // Acknowledged by the heartbeat that reports the drain, not by one now: this
            // runs inside the cutover's write freeze, where every round trip counts.
            beat.acked = cmd.seq;
            return Ok(None);
        }
        WorkerCommand::Stop { cleanup } => {
            check
                .stop(beat.store, cfg, "the worker was stopped")
                .await?;
            if cleanup {
                rep.cleanup().await?;
            }
            beat.acked = cmd.seq;
            beat.write(WorkerPhase::Stopped, &Status::default()).await?;
            return Ok(Some(Exit::Stopped {
                cleaned_up: cleanup,
            }));
        }
        WorkerCommand::Reverse => {
            rep.start_reverse().await?;
            state.drain_target = None;
            beat.drained_to = None;
        }
    }
    beat.acked = cmd.seq;
    // The heartbeat that acknowledges a pause or resume says so (before this, it
    // showed the old state until the next beat: found by `ferry pause`'s test).
    beat.paused = state.paused_by_command || state.schema_block.is_some();
    beat.write(phase(rep), &rep.status().await?).await?;
    Ok(None)
}

async fn stream(beat: &mut Beat<'_>, cfg: &RunnerConfig) -> Result<Exit, RunError> {
    let Some(_fence) = fence(beat, cfg).await? else {
        return Ok(Exit::Superseded);
    };
    let mut rep = Replicator::connect(cfg.replicator.clone()).await?;
    if !prepare(&mut rep, beat, cfg).await? {
        return Ok(Exit::Superseded);
    }

    let mut last_command = Instant::now() - cfg.command_poll;
    let mut last_schema = Instant::now();
    let mut state = LoopState::default();
    state.listen(&cfg.replicator.source).await;
    let mut check = Checker::default();
    loop {
        check.poll(beat.store, cfg).await?;
        if last_command.elapsed() >= cfg.command_poll || state.woken(&cfg.migration_id) {
            last_command = Instant::now();
            if let Some(cmd) = beat.store.command(&cfg.migration_id).await?
                && cmd.seq > beat.acked
                && let Some(exit) =
                    handle_command(cmd, &mut rep, beat, cfg, &mut check, &mut state).await?
            {
                return Ok(exit);
            }
        }
        if last_schema.elapsed() >= cfg.schema_check {
            last_schema = Instant::now();
            let changed = rep.schema_changes().await?;
            if changed.is_empty() {
                if state.schema_block.take().is_some() {
                    rep.reload_catalog().await?;
                    beat.error = None;
                }
            } else if state.schema_block.as_ref() != Some(&changed) {
                let e = ReplError::SchemaChanged {
                    tables: changed.join(", "),
                };
                state.schema_block = Some(block(beat, &e, changed));
            }
        }
        beat.paused = state.paused_by_command || state.schema_block.is_some();
        let applied = if beat.paused {
            0
        } else {
            match rep.apply_once().await {
                Ok(a) => a.changes,
                // A batch refused because its tables changed shape: block like the watch does;
                // the batch stays in the log until the target matches again.
                Err(e @ ReplError::SchemaChanged { .. }) => {
                    let tables = rep.schema_changes().await?;
                    state.schema_block = Some(block(beat, &e, tables));
                    beat.paused = true;
                    last_schema = Instant::now();
                    0
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(target) = state.drain_target.as_deref()
            && !beat.paused
            && rep.drained_to(target).await?
        {
            // Snapshots first: once the drain is reported, the cutover makes the target
            // writable.
            let snapshots = check.take(target, &rep, beat.epoch).await;
            beat.drained_to = Some(target.to_string());
            state.drain_target = None;
            if !beat.write(phase(&rep), &rep.status().await?).await? {
                return Ok(Exit::Superseded);
            }
            check.start(beat.store, cfg, &rep, snapshots).await?;
        }
        if beat.due() && !beat.write(phase(&rep), &rep.status().await?).await? {
            return Ok(Exit::Superseded);
        }
        if applied == 0 {
            // Caught up: the parents of every copied child row are on the target now.
            if !state.fks_validated
                && !beat.paused
                && !rep.is_reverse()
                && rep.consistent_now().await?
            {
                let n = rep.validate_foreign_keys().await?;
                if n > 0 {
                    tracing::info!(validated = n, "foreign keys validated");
                }
                state.fks_validated = true;
            }
            // A streamed read has just waited for changes and wakes as one arrives: sleeping
            // on top would hold the next change back by up to `idle`.
            if (beat.paused || !rep.waits_for_changes())
                && state.idle(cfg.idle, &cfg.migration_id).await
            {
                // Woken: the command is read on the next turn, not a poll interval later.
                last_command = Instant::now() - cfg.command_poll;
            }
        }
    }
}

/// The exact comparison after a drain (see [`drain_check`]): sessions connected in the
/// background from the moment the drain is commanded (the drain runs inside the write freeze:
/// connecting must not hold it up), snapshots taken when it completes, the comparison run as a
/// task whose reports the loop turns into the `drain_check` fact, an audit entry and metrics.
#[derive(Default)]
struct Checker {
    connecting: Option<tokio::task::JoinHandle<crate::ReplResult<drain_check::Sessions>>>,
    running: Option<Running>,
}

struct Running {
    fact: DrainCheck,
    written: Option<serde_json::Value>,
    last_write: Instant,
    reports: tokio::sync::mpsc::Receiver<Report>,
    task: tokio::task::JoinHandle<()>,
}

impl Checker {
    /// Starts connecting the two sessions while the drain goes on (replacing sessions an
    /// earlier drain left unused).
    fn prepare(&mut self, cfg: &RunnerConfig) {
        if cfg.drain_check.is_none() {
            return;
        }
        if let Some(old) = self.connecting.take() {
            old.abort();
        }
        let (source, target) = (cfg.replicator.source.clone(), cfg.replicator.target.clone());
        self.connecting = Some(tokio::spawn(async move {
            drain_check::Sessions::connect(&source, &target).await
        }));
    }

    /// Takes the snapshots, the drain being complete.
    async fn take(
        &mut self,
        position: &str,
        rep: &Replicator,
        epoch: u64,
    ) -> Option<(drain_check::Snapshots, DrainCheck)> {
        // Normally connected long before the drain completes; a failure only means no
        // comparison.
        let sessions = match self.connecting.take()?.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no exact comparison after this drain");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no exact comparison after this drain");
                return None;
            }
        };
        match sessions.take().await {
            Ok(s) => {
                let fact = DrainCheck {
                    position: position.to_string(),
                    direction: if rep.is_reverse() {
                        "reverse"
                    } else {
                        "forward"
                    }
                    .into(),
                    worker_epoch: epoch,
                    state: DrainCheckState::Running,
                    snapshots_at: s.taken_at,
                    snapshot_ms: s.took.as_millis() as u64,
                    finished_at: None,
                    tables_total: rep.tables().iter().filter(|t| t.is_capture_unit()).count(),
                    tables_compared: 0,
                    rows_compared: 0,
                    differences: Vec::new(),
                    error: None,
                };
                Some((s, fact))
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the snapshots; no exact comparison");
                None
            }
        }
    }

    /// Starts comparing (after the drain was reported), replacing an earlier comparison.
    async fn start(
        &mut self,
        store: &dyn MigrationStore,
        cfg: &RunnerConfig,
        rep: &Replicator,
        taken: Option<(drain_check::Snapshots, DrainCheck)>,
    ) -> Result<(), StoreError> {
        let (Some((snapshots, fact)), Some(limit)) = (taken, cfg.drain_check) else {
            return Ok(());
        };
        self.stop(store, cfg, "a newer drain replaced it").await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tables = rep.tables().to_vec();
        let sessions = cfg.replicator.parallelism.max(1);
        let task = tokio::spawn(snapshots.compare(tables, limit, sessions, tx));
        let mut running = Running {
            fact,
            written: None,
            last_write: Instant::now(),
            reports: rx,
            task,
        };
        running.write(store, cfg).await?;
        self.running = Some(running);
        Ok(())
    }

    /// Takes in what the comparison reported; writes the fact now and then, and at the end.
    async fn poll(
        &mut self,
        store: &dyn MigrationStore,
        cfg: &RunnerConfig,
    ) -> Result<(), StoreError> {
        let Some(r) = self.running.as_mut() else {
            return Ok(());
        };
        let mut changed = false;
        while let Ok(report) = r.reports.try_recv() {
            changed = true;
            let f = &mut r.fact;
            match report {
                Report::Table { rows, difference } => {
                    f.tables_compared += 1;
                    f.rows_compared += rows;
                    f.differences.extend(difference);
                }
                Report::Done if f.differences.is_empty() => f.state = DrainCheckState::Equal,
                Report::Done => f.state = DrainCheckState::Different,
                Report::TimedOut if f.differences.is_empty() => {
                    f.state = DrainCheckState::Incomplete
                }
                Report::TimedOut => f.state = DrainCheckState::Different,
                Report::Failed(e) => {
                    f.state = DrainCheckState::Interrupted;
                    f.error = Some(e);
                }
            }
        }
        if r.task.is_finished() && !r.fact.state.finished() {
            r.fact.state = DrainCheckState::Interrupted;
            r.fact.error = Some("the comparison task ended early".into());
        }
        if r.fact.state.finished() {
            r.fact.finished_at = Some(Utc::now());
            let done = self.running.take();
            if let Some(mut done) = done {
                done.write(store, cfg).await?;
                done.finished(store, cfg).await?;
            }
        } else if changed && r.last_write.elapsed() >= Duration::from_secs(5) {
            r.write(store, cfg).await?;
        }
        Ok(())
    }

    /// Ends a running comparison (worker stopping, or a newer drain).
    async fn stop(
        &mut self,
        store: &dyn MigrationStore,
        cfg: &RunnerConfig,
        why: &str,
    ) -> Result<(), StoreError> {
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        if let Some(mut r) = self.running.take() {
            r.task.abort();
            r.fact.state = DrainCheckState::Interrupted;
            r.fact.error = Some(why.to_string());
            r.fact.finished_at = Some(Utc::now());
            r.write(store, cfg).await?;
            r.finished(store, cfg).await?;
        }
        Ok(())
    }
}

impl Running {
    async fn write(
        &mut self,
        store: &dyn MigrationStore,
        cfg: &RunnerConfig,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_value(&self.fact).unwrap_or_default();
        for _ in 0..5 {
            // The worker is the only writer; a step may have marked it interrupted.
            let current = match &self.written {
                Some(v) => Some(v.clone()),
                None => store.fact(&cfg.migration_id, DRAIN_CHECK_FACT).await?,
            };
            if store
                .swap_fact(
                    &cfg.migration_id,
                    DRAIN_CHECK_FACT,
                    current.as_ref(),
                    &value,
                )
                .await?
            {
                self.written = Some(value);
                self.last_write = Instant::now();
                return Ok(());
            }
            self.written = None;
        }
        tracing::warn!("the drain_check fact kept changing; not written");
        Ok(())
    }

    /// The audit entry and the metrics of an ended comparison; a difference is an alarm.
    async fn finished(
        &self,
        store: &dyn MigrationStore,
        cfg: &RunnerConfig,
    ) -> Result<(), StoreError> {
        let f = &self.fact;
        let now = Utc::now();
        let outcome = match f.state {
            DrainCheckState::Equal => Outcome::Succeeded,
            DrainCheckState::Different => Outcome::Failed,
            _ => Outcome::Info,
        };
        if f.state == DrainCheckState::Different {
            tracing::error!(summary = %f.summary(now), "ALARM: the exact comparison after the drain found differences");
        }
        let detail = serde_json::json!({
            "state": f.state,
            "direction": f.direction,
            "position": f.position,
            "tables_compared": f.tables_compared,
            "tables_total": f.tables_total,
            "rows_compared": f.rows_compared,
            "differences": f.differences,
            "snapshot_ms": f.snapshot_ms,
            "held_seconds": f.held_seconds(now),
            "error": f.error,
        });
        store
            .append_audit(
                &cfg.migration_id,
                &AuditEvent::new(
                    now,
                    "worker",
                    "ferry:worker",
                    "drain_check",
                    outcome,
                    detail,
                ),
            )
            .await?;
        cfg.metrics.emit(
            &cfg.migration_id,
            "worker",
            &[
                Metric::new(
                    "DrainCheckDifferences",
                    f.differences.len() as f64,
                    Unit::Count,
                ),
                Metric::new(
                    "DrainCheckSnapshotHeldSeconds",
                    f.held_seconds(now),
                    Unit::Seconds,
                ),
            ],
        );
        Ok(())
    }
}
