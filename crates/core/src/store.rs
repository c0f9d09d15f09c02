//! The narrow interface to migration state. The real implementation is DynamoDB
//! (`ferry_aws::DynamoStore`); every state-changing call is conditional so that a retried step
//! cannot apply twice and two migrations of one app cannot run at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    errors::StepErrorName,
    state::{
        AppLock, Appended, ApprovalRequest, ApprovalStatus, AuditEvent, CommandRecord, Gate,
        MigrationRecord, Phase, WorkerCommand, WorkerProgress,
    },
};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another migration holds the app.
    #[error(
        "Heroku app {app:?} is locked by migration {holder:?} since {since}; wait for it to end (or abort it) before starting another"
    )]
    LockHeld {
        /// The app.
        app: String,
        /// The migration holding it.
        holder: String,
        /// Since when.
        since: DateTime<Utc>,
    },
    /// A migration with this id exists with a different spec.
    #[error(
        "migration {migration_id:?} already exists with a different spec; choose a new migration_id"
    )]
    MigrationExists {
        /// The id.
        migration_id: String,
    },
    /// No such migration.
    #[error("migration {migration_id:?} not found")]
    NotFound {
        /// The id.
        migration_id: String,
    },
    /// The record changed since the caller read it.
    #[error(
        "migration {migration_id:?} changed concurrently: expected version {expected}, found {found}"
    )]
    VersionConflict {
        /// The id.
        migration_id: String,
        /// The version the caller read.
        expected: u64,
        /// The version stored now.
        found: u64,
    },
    /// The phase change is not allowed.
    #[error("migration {migration_id:?} cannot move from {from} to {to}")]
    IllegalTransition {
        /// The id.
        migration_id: String,
        /// Current phase.
        from: Phase,
        /// Requested phase.
        to: Phase,
    },
    /// The approval was already decided, or the token does not match the pending request.
    #[error("approval {gate} of {migration_id:?} is not pending with that token (status {status})")]
    ApprovalNotPending {
        /// The id.
        migration_id: String,
        /// The gate.
        gate: Gate,
        /// Its status now (`missing` if there is no request).
        status: String,
    },
    /// A newer worker has written progress: this one must stop.
    #[error(
        "worker {worker_id:?} of {migration_id:?} was superseded by a newer worker (epoch {newer_epoch})"
    )]
    WorkerSuperseded {
        /// The id.
        migration_id: String,
        /// This worker.
        worker_id: String,
        /// The newer worker's epoch.
        newer_epoch: u64,
    },
    /// The backend asked us to slow down.
    #[error("state store throttled: {0}")]
    Throttled(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend could not be reached or failed.
    #[error("state store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored item could not be read back.
    #[error("state store item {key} is unreadable: {reason}")]
    Corrupt {
        /// The item's key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl StepErrorName for StoreError {
    fn step_error_name(&self) -> &'static str {
        match self {
            StoreError::LockHeld { .. } => "Ferry.Blocked.LockHeld",
            StoreError::MigrationExists { .. } => "Ferry.Blocked.MigrationExists",
            StoreError::NotFound { .. } => "Ferry.Failed.NotFound",
            StoreError::VersionConflict { .. } => "Ferry.Retryable.Conflict",
            StoreError::IllegalTransition { .. } => "Ferry.Failed.IllegalTransition",
            StoreError::ApprovalNotPending { .. } => "Ferry.Blocked.ApprovalNotPending",
            StoreError::WorkerSuperseded { .. } => "Ferry.Failed.WorkerSuperseded",
            StoreError::Throttled(_) => "Ferry.Retryable.Throttled",
            StoreError::Unavailable(_) => "Ferry.Retryable.StoreUnavailable",
            StoreError::Corrupt { .. } => "Ferry.Failed.StoreCorrupt",
        }
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Migration state, audit log, worker progress, approvals and the per-app lock.
#[async_trait]
pub trait MigrationStore: Send + Sync {
    /// Takes the per-app lock for `migration_id`. Taking it again for the same migration
    /// succeeds (retries are safe); another migration gets [`StoreError::LockHeld`].
    async fn acquire_app_lock(
        &self,
        app: &str,
        migration_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<AppLock>;

    /// Releases the lock if `migration_id` holds it; releasing a free lock succeeds.
    async fn release_app_lock(&self, app: &str, migration_id: &str) -> StoreResult<()>;

    /// Who holds the app's lock, if anyone.
    async fn app_lock(&self, app: &str) -> StoreResult<Option<AppLock>>;

    /// Creates the record. Creating it again with the same spec returns the stored record;
    /// a different spec gets [`StoreError::MigrationExists`].
    async fn create_migration(&self, record: &MigrationRecord) -> StoreResult<MigrationRecord>;

    /// Reads a record.
    async fn migration(&self, migration_id: &str) -> StoreResult<MigrationRecord>;

    /// Moves the migration to `to` if it is still at `expected_version` and the move is legal.
    /// A retry of a move that was already applied returns the stored record.
    async fn advance_phase(
        &self,
        migration_id: &str,
        expected_version: u64,
        to: Phase,
        now: DateTime<Utc>,
    ) -> StoreResult<MigrationRecord>;

    /// Records the Step Functions execution ARN (version-checked like a phase change).
    async fn set_execution_arn(
        &self,
        migration_id: &str,
        expected_version: u64,
        execution_arn: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<MigrationRecord>;

    /// Appends to the audit log; an event whose key exists is not written again.
    async fn append_audit(&self, migration_id: &str, event: &AuditEvent) -> StoreResult<Appended>;

    /// The audit log in time order.
    async fn audit_log(&self, migration_id: &str) -> StoreResult<Vec<AuditEvent>>;

    /// Writes the worker's heartbeat. Rejected with [`StoreError::WorkerSuperseded`] when a
    /// newer worker (higher epoch) or a later heartbeat of this one is stored.
    async fn put_progress(&self, progress: &WorkerProgress) -> StoreResult<()>;

    /// The latest worker heartbeat, if any.
    async fn progress(&self, migration_id: &str) -> StoreResult<Option<WorkerProgress>>;

    /// Sends the worker a command, numbered one above the last; returns the stored record.
    async fn send_command(
        &self,
        migration_id: &str,
        command: WorkerCommand,
        issued_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CommandRecord>;

    /// The latest command, if any.
    async fn command(&self, migration_id: &str) -> StoreResult<Option<CommandRecord>>;

    /// Stores a pending approval with its task token. A retried gate step may replace a
    /// pending request (its token is new); a decided one is never replaced.
    async fn put_approval(&self, request: &ApprovalRequest) -> StoreResult<()>;

    /// Reads a gate's approval request.
    async fn approval(
        &self,
        migration_id: &str,
        gate: Gate,
    ) -> StoreResult<Option<ApprovalRequest>>;

    /// Decides a pending approval whose token matches; a second decision (a replayed click)
    /// gets [`StoreError::ApprovalNotPending`].
    async fn decide_approval(
        &self,
        migration_id: &str,
        gate: Gate,
        task_token: &str,
        decision: ApprovalStatus,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalRequest>;

    /// A named fact the steps keep about the migration (the worker task, the canary's step,
    /// the Heroku formation before the freeze…); `None` if never written.
    async fn fact(&self, migration_id: &str, name: &str) -> StoreResult<Option<serde_json::Value>>;

    /// Writes `value` if the fact is still `expected` (`None`: absent). Returns whether it was
    /// written; a concurrent writer that got there first makes it `false`.
    async fn swap_fact(
        &self,
        migration_id: &str,
        name: &str,
        expected: Option<&serde_json::Value>,
        value: &serde_json::Value,
    ) -> StoreResult<bool>;
}
