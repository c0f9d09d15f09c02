//! Migration state: the record of one migration, its audit log, the worker's progress and the
//! approval gates. Persisted by a [`crate::store::MigrationStore`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::MigrationSpec;

/// Where a migration is. Phases advance in order; any live phase may go to `RollingBack` or
/// `Failed`; `Completed`, `RolledBack` and `Failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Record created, lock held, nothing checked yet.
    Created,
    /// Checking source, target, RDS and the Heroku app.
    Preflight,
    /// Copying config vars into SSM.
    ConfigSync,
    /// Worker copying the snapshot and streaming changes.
    Replicating,
    /// Comparing counts and checksums.
    Verifying,
    /// Waiting for a person to approve the traffic shift.
    AwaitingTrafficApproval,
    /// Canary: Route 53 weights moving towards AWS.
    ShiftingTraffic,
    /// Waiting for a person to approve the database cutover.
    AwaitingCutoverApproval,
    /// Write freeze, final catch-up, switch of the primary.
    CuttingOver,
    /// RDS is primary; Heroku Postgres kept in sync for a lossless rollback.
    RollbackWindow,
    /// Removing capture objects, Heroku resources, schedules.
    CleaningUp,
    /// Done: the app runs on AWS.
    Completed,
    /// Undoing: traffic and database back to Heroku.
    RollingBack,
    /// Undone: the app runs on Heroku as before.
    RolledBack,
    /// Stopped by an error that needs a person.
    Failed,
}

impl Phase {
    /// All phases, in order.
    pub const ALL: [Phase; 15] = [
        Phase::Created,
        Phase::Preflight,
        Phase::ConfigSync,
        Phase::Replicating,
        Phase::Verifying,
        Phase::AwaitingTrafficApproval,
        Phase::ShiftingTraffic,
        Phase::AwaitingCutoverApproval,
        Phase::CuttingOver,
        Phase::RollbackWindow,
        Phase::CleaningUp,
        Phase::Completed,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Failed,
    ];

    /// Whether the migration has ended (the app lock may be released).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Failed)
    }

    /// Whether `self → next` is a legal move.
    pub fn can_move_to(self, next: Phase) -> bool {
        use Phase::*;
        if self.is_final() {
            return false;
        }
        match next {
            Failed => true,
            RollingBack => self != RollingBack,
            RolledBack => self == RollingBack,
            _ => self != RollingBack && forward(self) == Some(next),
        }
    }

    /// The snake_case name used in JSON and DynamoDB.
    pub fn as_str(self) -> &'static str {
        use Phase::*;
        match self {
            Created => "created",
            Preflight => "preflight",
            ConfigSync => "config_sync",
            Replicating => "replicating",
            Verifying => "verifying",
            AwaitingTrafficApproval => "awaiting_traffic_approval",
            ShiftingTraffic => "shifting_traffic",
            AwaitingCutoverApproval => "awaiting_cutover_approval",
            CuttingOver => "cutting_over",
            RollbackWindow => "rollback_window",
            CleaningUp => "cleaning_up",
            Completed => "completed",
            RollingBack => "rolling_back",
            RolledBack => "rolled_back",
            Failed => "failed",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

fn forward(p: Phase) -> Option<Phase> {
    use Phase::*;
    Some(match p {
        Created => Preflight,
        Preflight => ConfigSync,
        ConfigSync => Replicating,
        Replicating => Verifying,
        Verifying => AwaitingTrafficApproval,
        AwaitingTrafficApproval => ShiftingTraffic,
        ShiftingTraffic => AwaitingCutoverApproval,
        AwaitingCutoverApproval => CuttingOver,
        CuttingOver => RollbackWindow,
        RollbackWindow => CleaningUp,
        CleaningUp => Completed,
        _ => return None,
    })
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One migration as stored: its spec, phase and optimistic-concurrency version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// The spec's migration id.
    pub migration_id: String,
    /// The Heroku app (the lock key).
    pub app: String,
    /// The spec the migration was started with.
    pub spec: MigrationSpec,
    /// Current phase.
    pub phase: Phase,
    /// Incremented by every change; writers name the version they read.
    pub version: u64,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
    /// The Step Functions execution running it, once known.
    pub execution_arn: Option<String>,
}

impl MigrationRecord {
    /// A new record in phase `Created`, version 1.
    pub fn new(spec: MigrationSpec, now: DateTime<Utc>) -> Self {
        Self {
            migration_id: spec.migration_id.clone(),
            app: spec.heroku.app.clone(),
            spec,
            phase: Phase::Created,
            version: 1,
            created_at: now,
            updated_at: now,
            execution_arn: None,
        }
    }
}

/// The result of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Started, nothing known yet.
    Started,
    /// Done.
    Succeeded,
    /// Failed; `detail` says why.
    Failed,
    /// A fact recorded (an approval, a weight, a measurement).
    Info,
}

/// One entry of the append-only audit log. Never holds a secret or a row value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique within the migration; a retried step that appends with the same key is recorded
    /// once. [`AuditEvent::new`] makes a fresh time-ordered key.
    pub key: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The step or component (`preflight`, `canary`, `worker`, `approval`…).
    pub step: String,
    /// Who acted: `ferry:<step>` for automation, or the approver's identity.
    pub actor: String,
    /// What was done (`acquire_lock`, `approve`, `set_weights`…).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Small structured detail (counts, names, weights).
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event with a fresh unique key derived from the time and a random suffix.
    pub fn new(
        at: DateTime<Utc>,
        step: impl Into<String>,
        actor: impl Into<String>,
        action: impl Into<String>,
        outcome: Outcome,
        detail: serde_json::Value,
    ) -> Self {
        let key = format!("{}-{:08x}", at.format("%Y%m%dT%H%M%S%.6fZ"), rand_suffix());
        Self {
            key,
            at,
            step: step.into(),
            actor: actor.into(),
            action: action.into(),
            outcome,
            detail,
        }
    }

    /// The same event with a caller-chosen idempotency key (e.g. execution + state + attempt).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }
}

fn rand_suffix() -> u32 {
    use std::{
        collections::hash_map::RandomState,
        hash::{BuildHasher, Hasher},
    };
    // RandomState is seeded per process from the OS; mixing in a counter makes each call differ.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish() as u32
}

/// Whether `append_audit` wrote a new entry or found the key already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// A new entry was written.
    New,
    /// An entry with this key existed: nothing was written.
    AlreadyRecorded,
}

/// The fact name under which the worker keeps [`DrainCheck`].
pub const DRAIN_CHECK_FACT: &str = "drain_check";

/// The fact the worker keeps about the Redis live sync (spec `redis`), one entry per database.
pub const REDIS_FACT: &str = "redis";

/// How far the cutover got; the cutover, the rollback and config sync and the worker's Redis part branch on it (some of
/// them inside the write freeze), so it is a closed set, not a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutoverState {
    /// Nothing done yet.
    #[default]
    NotStarted,
    /// Source read-only (endpoint paused, in proxy mode); the app not switched.
    Frozen,
    /// The app is on the target (endpoint retargeted, or DATABASE_URL moved).
    Switched,
    /// The reverse stream runs: the cutover is complete.
    Done,
    /// A failed cutover was compensated: the app is on the source again.
    Undone,
    /// A rollback after the cutover moved the app back to the source.
    RolledBack,
}

impl CutoverState {
    /// The snake_case name (as stored).
    pub fn as_str(self) -> &'static str {
        match self {
            CutoverState::NotStarted => "not_started",
            CutoverState::Frozen => "frozen",
            CutoverState::Switched => "switched",
            CutoverState::Done => "done",
            CutoverState::Undone => "undone",
            CutoverState::RolledBack => "rolled_back",
        }
    }

    /// Whether the app runs on the target.
    pub fn on_target(self) -> bool {
        matches!(self, CutoverState::Switched | CutoverState::Done)
    }
}

impl std::fmt::Display for CutoverState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Redis live sync of one logical database, as the worker last wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSyncDb {
    /// The logical database.
    pub db: u32,
    /// Full passes done (the first is the copy; each later one healed a notification gap).
    pub full_passes: u64,
    /// Keys the first pass copied.
    pub copied: u64,
    /// Keys rewritten from notifications.
    pub applied: u64,
    /// Keys deleted on the target.
    pub deleted: u64,
    /// Changed keys not yet written to the target.
    pub pending: u64,
    /// Age of the oldest change written in the last flush, in milliseconds.
    pub lag_ms: u64,
    /// Why the sync of this database stopped, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which way data moves now.
    #[serde(default)]
    pub direction: RedisDirection,
    /// Queue jobs handed over so far in this direction.
    #[serde(default)]
    pub jobs_handed_over: u64,
    /// Queue jobs still on the side the app left (0 before the switch: nothing to hand over).
    #[serde(default)]
    pub jobs_waiting: u64,
}

/// Which way the Redis data moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisDirection {
    /// Before the cutover: Heroku → ElastiCache by live sync (queues stay on Heroku).
    #[default]
    Forward,
    /// A drain marker ended the sync: waiting for the switch (or its undoing).
    Drained,
    /// After the cutover: ElastiCache → Heroku by live sync (for a rollback), and Heroku's
    /// remaining queue jobs handed over to ElastiCache.
    Reverse,
    /// After a rollback: ElastiCache's remaining queue jobs handed over to Heroku.
    Back,
}

impl RedisDirection {
    /// The snake_case name, with what it means.
    pub fn describe(self) -> &'static str {
        match self {
            RedisDirection::Forward => "forward (Heroku → ElastiCache)",
            RedisDirection::Drained => "drained (waiting for the switch)",
            RedisDirection::Reverse => {
                "reverse (ElastiCache → Heroku; Heroku's queues handed over)"
            }
            RedisDirection::Back => "back (ElastiCache's queues handed over to Heroku)",
        }
    }
}

impl RedisSyncDb {
    /// One line for `ferry status` and the report.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "redis db {}: {} key(s) copied, {} written live, {} deleted, {} pending, lag {} ms, {} full pass(es)",
            self.db,
            self.copied,
            self.applied,
            self.deleted,
            self.pending,
            self.lag_ms,
            self.full_passes
        );
        if self.full_passes > 1 {
            line.push_str(&format!(
                " ({} after lost notifications)",
                self.full_passes - 1
            ));
        }
        if self.direction != RedisDirection::Forward {
            line.push_str(&format!("; {}", self.direction.describe()));
        }
        if self.jobs_handed_over > 0 || self.jobs_waiting > 0 {
            line.push_str(&format!(
                "; {} queue job(s) handed over, {} waiting",
                self.jobs_handed_over, self.jobs_waiting
            ));
        }
        if let Some(e) = &self.error {
            line.push_str(&format!("; STOPPED: {e}"));
        }
        line
    }
}

/// The Redis live sync, as the worker last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSync {
    /// One entry per database of the spec.
    pub databases: Vec<RedisSyncDb>,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// Where an exact comparison of a drained freeze stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainCheckState {
    /// Comparing through the two snapshots.
    Running,
    /// Every table compared: both sides held the same rows.
    Equal,
    /// Rows differ (see `differences`): an alarm, put to the operator at the rollback gate.
    Different,
    /// Stopped at its time limit before every table was compared (no difference found in
    /// the tables it did compare).
    Incomplete,
    /// The worker that held the snapshots ended, or a query failed (see `error`).
    Interrupted,
}

impl DrainCheckState {
    /// Whether the comparison has ended.
    pub fn finished(self) -> bool {
        self != DrainCheckState::Running
    }
}

/// One table that differed in an exact comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainDifference {
    /// `schema.name`.
    pub table: String,
    /// Rows on the source (Heroku) side.
    pub source_rows: i64,
    /// Rows on the target (RDS) side.
    pub target_rows: i64,
    /// The first differing keys (canonical texts: JSON arrays of key values; no row values).
    pub keys: Vec<String>,
}

/// The exact comparison of a drained freeze: inside the freeze, once every change up to the
/// frozen position was applied, the worker took a snapshot on each side (both hold the same
/// rows by construction); after the freeze it compares every table through them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainCheck {
    /// The drain position the snapshots were taken at.
    pub position: String,
    /// `forward` (cutover) or `reverse` (rollback after cutover).
    pub direction: String,
    /// The worker holding the snapshots (its epoch).
    pub worker_epoch: u64,
    /// Where it stands.
    pub state: DrainCheckState,
    /// When the snapshots were taken.
    pub snapshots_at: DateTime<Utc>,
    /// How long taking both snapshots took (inside the freeze), in milliseconds.
    pub snapshot_ms: u64,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Tables to compare.
    pub tables_total: usize,
    /// Tables compared.
    pub tables_compared: usize,
    /// Rows compared (source side).
    pub rows_compared: i64,
    /// Tables that differed.
    pub differences: Vec<DrainDifference>,
    /// Why it was interrupted.
    pub error: Option<String>,
}

impl DrainCheck {
    /// Whether finishing after this comparison takes an explicit override: the cutover's
    /// comparison found rows that differ, or did not compare every table.
    pub fn needs_override(&self) -> bool {
        self.direction == "forward"
            && matches!(
                self.state,
                DrainCheckState::Different
                    | DrainCheckState::Incomplete
                    | DrainCheckState::Interrupted
            )
    }

    /// Seconds the snapshots were (or have been) held.
    pub fn held_seconds(&self, now: DateTime<Utc>) -> f64 {
        (self.finished_at.unwrap_or(now) - self.snapshots_at).num_milliseconds() as f64 / 1000.0
    }

    /// One line for a status, a report or a gate message.
    pub fn summary(&self, now: DateTime<Utc>) -> String {
        let held = self.held_seconds(now);
        match self.state {
            DrainCheckState::Running => format!(
                "running: {}/{} tables compared, {} rows, snapshots held {held:.0} s",
                self.tables_compared, self.tables_total, self.rows_compared
            ),
            DrainCheckState::Equal => format!(
                "equal: {} tables, {} rows compared in {held:.1} s; snapshots taken in {} ms inside the freeze",
                self.tables_compared, self.rows_compared, self.snapshot_ms
            ),
            DrainCheckState::Different => format!(
                "DIFFERENT: {}",
                self.differences
                    .iter()
                    .map(|d| format!(
                        "{} (source {} rows, target {}; keys {})",
                        d.table,
                        d.source_rows,
                        d.target_rows,
                        d.keys.join(" ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            DrainCheckState::Incomplete => format!(
                "incomplete: stopped at its time limit after {}/{} tables ({} rows, no difference in those)",
                self.tables_compared, self.tables_total, self.rows_compared
            ),
            DrainCheckState::Interrupted => format!(
                "interrupted after {}/{} tables: {}",
                self.tables_compared,
                self.tables_total,
                self.error.as_deref().unwrap_or("the worker ended")
            ),
        }
    }
}

/// What the replication worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerPhase {
    /// Process up, connecting.
    Starting,
    /// Copying the schema (pre-data).
    Schema,
    /// Copying the snapshot; changes are being captured.
    Copying,
    /// Applying captured changes.
    Streaming,
    /// Applying changes from the target back to the source (rollback window).
    Reverse,
    /// Stopped on request.
    Stopped,
    /// Stopped by an error (see `error`).
    Failed,
}

/// The worker's progress item, rewritten every few seconds as its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// The migration.
    pub migration_id: String,
    /// Which worker process (ECS task ARN or local id).
    pub worker_id: String,
    /// Start time of this worker, in ms since the epoch: a newer worker supersedes an older one.
    pub epoch: u64,
    /// Increases with every heartbeat of one worker.
    pub seq: u64,
    /// What it is doing.
    pub phase: WorkerPhase,
    /// Tables whose snapshot copy is complete.
    pub tables_done: u32,
    /// Tables to copy.
    pub tables_total: u32,
    /// Rows copied by the snapshot so far.
    pub rows_copied: u64,
    /// Bytes copied by the snapshot so far.
    pub bytes_copied: u64,
    /// An estimate of the bytes the copy moves in all (tables' size on disk without indexes).
    #[serde(default)]
    pub bytes_total: Option<u64>,
    /// The copy's average throughput while it runs, bytes per second.
    #[serde(default)]
    pub copy_bytes_per_second: Option<f64>,
    /// Latest change position seen on the source (LSN or change-log id).
    pub source_position: Option<String>,
    /// Latest change position applied (and committed) on the target.
    pub applied_position: Option<String>,
    /// Seconds between the newest applied change and now.
    pub lag_seconds: Option<f64>,
    /// Captured changes not yet applied.
    pub lag_changes: Option<u64>,
    /// When this heartbeat was written.
    pub heartbeat_at: DateTime<Utc>,
    /// The error that stopped or paused the worker, without secrets.
    pub error: Option<String>,
    /// The stable error name of `error` (e.g. `Ferry.Blocked.SchemaChanged`).
    #[serde(default)]
    pub error_name: Option<String>,
    /// The sequence number of the last command the worker carried out.
    #[serde(default)]
    pub acked_command: u64,
    /// Whether apply is paused (by command, or by a schema change).
    #[serde(default)]
    pub paused: bool,
    /// After a drain command: the position everything up to which is applied.
    #[serde(default)]
    pub drained_to: Option<String>,
}

/// What the control plane asks of the worker (through the store; Lambdas never talk to the
/// worker directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum WorkerCommand {
    /// Stop applying (capture goes on).
    Pause,
    /// Apply again; `force` also clears a schema-change block a person has checked.
    Resume {
        /// Resume even though the schemas still differ.
        #[serde(default)]
        force: bool,
    },
    /// Apply everything up to `until` (the source position after writes froze; `None`: the
    /// position when the command is read), then report `drained_to`.
    Drain {
        /// The position to reach.
        until: Option<String>,
    },
    /// After cutover: capture on the target, apply to the source (lossless rollback).
    Reverse,
    /// Stop the worker; with `cleanup`, remove capture objects from both sides first.
    Stop {
        /// Remove triggers, change log, slot and publication.
        #[serde(default)]
        cleanup: bool,
    },
}

/// A command as stored: numbered, with who sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The migration.
    pub migration_id: String,
    /// 1, 2, 3…: the worker carries out each number once.
    pub seq: u64,
    /// The command.
    pub command: WorkerCommand,
    /// When it was sent.
    pub issued_at: DateTime<Utc>,
    /// Who sent it (`ferry:<step>` or a person).
    pub issued_by: String,
}

/// An approval gate of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Before the canary moves traffic.
    ShiftTraffic,
    /// Before the database cutover.
    Cutover,
    /// Before cleanup ends the rollback window early.
    Finish,
}

impl Gate {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::ShiftTraffic => "shift_traffic",
            Gate::Cutover => "cutover",
            Gate::Finish => "finish",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Gate> {
        [Gate::ShiftTraffic, Gate::Cutover, Gate::Finish]
            .into_iter()
            .find(|g| g.as_str() == s)
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
}

impl ApprovalStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A waiting `.waitForTaskToken` gate and, once decided, who decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The migration.
    pub migration_id: String,
    /// Which gate.
    pub gate: Gate,
    /// The Step Functions task token that resumes the execution.
    pub task_token: crate::secret::Secret,
    /// When the prompt was sent.
    pub requested_at: DateTime<Utc>,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
}

/// The per-app lock: which migration holds the Heroku app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppLock {
    /// The Heroku app.
    pub app: String,
    /// The migration holding it.
    pub migration_id: String,
    /// Since when.
    pub acquired_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_move_forward_one_at_a_time() {
        assert!(Phase::Created.can_move_to(Phase::Preflight));
        assert!(Phase::CleaningUp.can_move_to(Phase::Completed));
        assert!(!Phase::Created.can_move_to(Phase::Replicating));
        assert!(!Phase::Verifying.can_move_to(Phase::Replicating));
    }

    #[test]
    fn rollback_and_failure_are_reachable_from_live_phases_only() {
        assert!(Phase::ShiftingTraffic.can_move_to(Phase::RollingBack));
        assert!(Phase::RollingBack.can_move_to(Phase::RolledBack));
        assert!(Phase::RollingBack.can_move_to(Phase::Failed));
        assert!(!Phase::RollingBack.can_move_to(Phase::CleaningUp));
        assert!(!Phase::Replicating.can_move_to(Phase::RolledBack));
        for p in [Phase::Completed, Phase::RolledBack, Phase::Failed] {
            assert!(
                Phase::ALL.iter().all(|n| !p.can_move_to(*n)),
                "{p} is final"
            );
        }
    }

    #[test]
    fn phase_names_round_trip_and_match_serde() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_value(p).unwrap_or_default(),
                serde_json::Value::from(p.as_str())
            );
        }
    }

    #[test]
    fn fresh_audit_keys_differ_and_sort_by_time() {
        let t = Utc::now();
        let a = AuditEvent::new(t, "s", "a", "x", Outcome::Info, serde_json::Value::Null);
        let b = AuditEvent::new(t, "s", "a", "x", Outcome::Info, serde_json::Value::Null);
        assert_ne!(a.key, b.key);
        let later = AuditEvent::new(
            t + chrono::Duration::milliseconds(1),
            "s",
            "a",
            "x",
            Outcome::Info,
            serde_json::Value::Null,
        );
        assert!(later.key > a.key && later.key > b.key);
    }

    #[test]
    fn a_redis_sync_line_says_what_moved_and_whether_it_stopped() {
        let mut d = RedisSyncDb {
            db: 0,
            full_passes: 2,
            copied: 1200,
            applied: 35,
            deleted: 3,
            pending: 1,
            lag_ms: 40,
            error: None,
            ..RedisSyncDb::default()
        };
        assert_eq!(
            d.summary(),
            "redis db 0: 1200 key(s) copied, 35 written live, 3 deleted, 1 pending, lag 40 ms, 2 full pass(es) (1 after lost notifications)"
        );
        d.direction = RedisDirection::Reverse;
        d.jobs_handed_over = 12;
        d.jobs_waiting = 3;
        assert!(
            d.summary().ends_with(
                "; reverse (ElastiCache → Heroku; Heroku's queues handed over); 12 queue job(s) handed over, 3 waiting"
            ),
            "{}",
            d.summary()
        );
        d.error = Some("Redis rediss://:***@h:1 refused AUTH".into());
        assert!(
            d.summary()
                .ends_with("; STOPPED: Redis rediss://:***@h:1 refused AUTH")
        );
    }
}
