//! Step errors and their stable Step Functions names. `Ferry.Retryable.*` names are retried by
//! the state machine; `Ferry.Blocked.*` need a person; `Ferry.Failed.*` ended the step. The
//! ASL's Retry and Catch lists are checked against [`StepError::NAMES`] by a test.

use ferry_core::{
    ParamError, Problems, StepErrorName, StoreError,
    approval::{ApprovalError, CallbackError},
    cloud::CloudError,
    signing::SignatureError,
    traffic::TrafficError,
};
use ferry_heroku::HerokuError;
use ferry_pg::PgError;
use ferry_replicator::ReplError;

/// Why a step failed. Messages never carry a secret (URLs are redacted, parameters are named
/// by their SSM name, tokens are never included).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The task input is not what the state machine sends.
    #[error("step input is not usable: {0}")]
    Input(String),
    /// The function's environment is incomplete.
    #[error("{0}")]
    Config(String),
    /// The migration spec has problems.
    #[error("the migration spec has problems; fix them and start again:\n{0}")]
    Spec(Problems),
    /// A parameter holds something unusable.
    #[error("SSM parameter {param} holds an unusable value: {reason}")]
    BadParam {
        /// The parameter name.
        param: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// Another execution runs this migration.
    #[error(
        "migration {migration_id:?} is run by execution {execution}; stop that one (ferry abort) or choose a new migration_id"
    )]
    AlreadyRunning {
        /// The migration.
        migration_id: String,
        /// The execution holding it.
        execution: String,
    },
    /// The migration ended already.
    #[error(
        "migration {migration_id:?} has ended ({phase}); start a new one with a new migration_id"
    )]
    Ended {
        /// The migration.
        migration_id: String,
        /// Its final phase.
        phase: String,
    },
    /// Preflight found problems a person must fix.
    #[error("preflight found {count} blocker(s); fix them and start again:\n{list}")]
    PreflightBlocked {
        /// How many.
        count: usize,
        /// One per line: what, where, and the fix.
        list: String,
    },
    /// The worker task ended or stopped reporting, and restarting it did not help.
    #[error("the replication worker is dead: {0}")]
    WorkerDead(String),
    /// The worker reported an error a person must fix.
    #[error("the replication worker is blocked ({name}): {message}")]
    WorkerBlocked {
        /// The worker's error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The copy did not finish and catch up in time.
    #[error("replication did not catch up within {hours} h: {detail}")]
    CatchUpTimeout {
        /// The limit.
        hours: u32,
        /// Where it stands.
        detail: String,
    },
    /// Source and target differ.
    #[error("verification found differences in {tables}")]
    VerifyMismatch {
        /// The tables, with the mismatching key ranges.
        tables: String,
    },
    /// The role the app will log in as on the target cannot do what it does on the source.
    #[error("the app's role {role} on the target {reason}")]
    AppPrivileges {
        /// The role.
        role: String,
        /// What is missing and what to do.
        reason: String,
    },
    /// The canary's health gate failed; traffic is back on Heroku.
    #[error("canary unhealthy at {aws_percent}% on AWS: {reason}; all traffic is back on Heroku")]
    CanaryUnhealthy {
        /// The share when it failed.
        aws_percent: u32,
        /// Why.
        reason: String,
    },
    /// The worker did not apply the last changes in time; the cutover was undone.
    #[error("the worker did not drain to {position} within {seconds} s")]
    DrainTimeout {
        /// The position.
        position: String,
        /// The limit.
        seconds: u32,
    },
    /// The cutover failed inside the freeze and was undone: the app is on the source.
    /// The endpoint cannot be switched (too few live tasks, a task in the wrong state or
    /// reading other parameters); nothing was frozen.
    #[error("the database endpoint of {app} is not ready: {reason}")]
    EndpointUnavailable {
        /// The Heroku app.
        app: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The endpoint could not pause within `cutover.pause_timeout_ms` (a transaction held it,
    /// or a task was lost); it was resumed and nothing was frozen: retried.
    #[error(
        "the database endpoint could not pause: {reason}; resumed on the source, nothing frozen"
    )]
    EndpointPauseFailed {
        /// Which task and why.
        reason: String,
    },
    /// The endpoint could not be switched to a backend (login refused, task lost).
    #[error("the database endpoint could not switch to the {backend} database: {reason}")]
    EndpointSwitchFailed {
        /// `source` or `target`.
        backend: String,
        /// Which task and why.
        reason: String,
    },
    #[error("cutover undone, the app stays on Heroku Postgres (source writable again): {0}")]
    CutoverUndone(Box<StepError>),
    /// Undoing failed: a person must look now.
    #[error("{what} failed and could not be undone: {cause}; undo error: {undo}")]
    UndoFailed {
        /// What was being done.
        what: String,
        /// Why it failed.
        cause: String,
        /// Why the undo failed.
        undo: String,
    },
    /// The reverse stream has not applied the target's writes yet: rolling back now would
    /// lose them. Retried.
    #[error(
        "reverse replication is {waiting} change(s) behind; rolling back once it has caught up"
    )]
    ReverseBehind {
        /// Changes waiting.
        waiting: u64,
    },
    /// An operator asked for the migration to be aborted.
    #[error("aborted by {by}; the rollback undoes what was done")]
    Aborted {
        /// Who asked.
        by: String,
    },
    /// A signed approval request was used before.
    #[error("this approval request was already used; a decision is taken once")]
    Replayed,
    /// A rehearsal fault.
    #[error("injected fault at {0} (rehearsal)")]
    Injected(String),
    /// The state store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SSM.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Secrets Manager.
    #[error(transparent)]
    Secret(#[from] ferry_core::SecretError),
    /// Route 53.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    /// EventBridge, CloudWatch, SNS, ECS, RDS, Slack.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The Heroku Platform API.
    #[error(transparent)]
    Heroku(#[from] HerokuError),
    /// PostgreSQL.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The replication library.
    #[error(transparent)]
    Repl(#[from] ReplError),
    /// An approval decision.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// A task callback.
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// A signed request.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl StepErrorName for StepError {
    fn step_error_name(&self) -> &'static str {
        match self {
            StepError::Input(_) => "Ferry.Failed.Input",
            StepError::Config(_) => "Ferry.Failed.Config",
            StepError::Spec(_) => "Ferry.Blocked.InvalidSpec",
            StepError::BadParam { .. } => "Ferry.Blocked.BadParam",
            StepError::AlreadyRunning { .. } => "Ferry.Blocked.AlreadyRunning",
            StepError::Ended { .. } => "Ferry.Blocked.Ended",
            StepError::PreflightBlocked { .. } => "Ferry.Blocked.Preflight",
            StepError::WorkerDead(_) => "Ferry.Failed.WorkerDead",
            StepError::WorkerBlocked { name, .. } if name == "Ferry.Blocked.SchemaChanged" => {
                "Ferry.Blocked.SchemaChanged"
            }
            StepError::WorkerBlocked { .. } => "Ferry.Failed.Worker",
            StepError::CatchUpTimeout { .. } => "Ferry.Failed.CatchUpTimeout",
            StepError::VerifyMismatch { .. } => "Ferry.Failed.VerifyMismatch",
            StepError::AppPrivileges { .. } => "Ferry.Blocked.AppPrivileges",
            StepError::CanaryUnhealthy { .. } => "Ferry.CanaryUnhealthy",
            StepError::DrainTimeout { .. } => "Ferry.Failed.DrainTimeout",
            StepError::EndpointUnavailable { .. } => "Ferry.Blocked.EndpointUnavailable",
            StepError::EndpointPauseFailed { .. } => "Ferry.Retryable.EndpointPause",
            StepError::EndpointSwitchFailed { .. } => "Ferry.Failed.EndpointSwitch",
            StepError::CutoverUndone(_) => "Ferry.Failed.CutoverUndone",
            StepError::UndoFailed { .. } => "Ferry.Failed.UndoFailed",
            StepError::ReverseBehind { .. } => "Ferry.Retryable.ReverseBehind",
            StepError::Replayed => "Ferry.Blocked.Replayed",
            StepError::Aborted { .. } => "Ferry.Aborted",
            StepError::Injected(_) => "Ferry.Failed.Injected",
            StepError::Store(e) => e.step_error_name(),
            StepError::Param(e) => e.step_error_name(),
            StepError::Secret(e) => e.step_error_name(),
            StepError::Traffic(e) => e.step_error_name(),
            StepError::Cloud(e) => e.step_error_name(),
            StepError::Heroku(e) => e.step_error_name(),
            StepError::Pg(e) => e.step_error_name(),
            StepError::Repl(e) => e.step_error_name(),
            StepError::Approval(e) => e.step_error_name(),
            StepError::Callback(CallbackError::TaskGone(_)) => "Ferry.Failed.TaskGone",
            StepError::Callback(CallbackError::Unavailable(_)) => "Ferry.Retryable.StepFunctions",
            StepError::Signature(e) => e.step_error_name(),
        }
    }
}

impl StepError {
    /// Every name a step can fail with (the agreement test checks the ASL against these).
    pub const NAMES: &'static [&'static str] = &[
        "Ferry.Failed.Input",
        "Ferry.Failed.Config",
        "Ferry.Blocked.InvalidSpec",
        "Ferry.Blocked.BadParam",
        "Ferry.Blocked.AlreadyRunning",
        "Ferry.Blocked.Ended",
        "Ferry.Blocked.Preflight",
        "Ferry.Failed.WorkerDead",
        "Ferry.Blocked.SchemaChanged",
        "Ferry.Failed.Worker",
        "Ferry.Failed.CatchUpTimeout",
        "Ferry.Failed.VerifyMismatch",
        "Ferry.Blocked.AppPrivileges",
        "Ferry.CanaryUnhealthy",
        "Ferry.Failed.DrainTimeout",
        "Ferry.Blocked.EndpointUnavailable",
        "Ferry.Retryable.EndpointPause",
        "Ferry.Failed.EndpointSwitch",
        "Ferry.Failed.CutoverUndone",
        "Ferry.Failed.UndoFailed",
        "Ferry.Retryable.ReverseBehind",
        "Ferry.Blocked.Replayed",
        "Ferry.Aborted",
        "Ferry.Failed.Injected",
        // The state store.
        "Ferry.Blocked.LockHeld",
        "Ferry.Blocked.MigrationExists",
        "Ferry.Failed.NotFound",
        "Ferry.Retryable.Conflict",
        "Ferry.Failed.IllegalTransition",
        "Ferry.Blocked.ApprovalNotPending",
        "Ferry.Failed.WorkerSuperseded",
        "Ferry.Retryable.Throttled",
        "Ferry.Retryable.StoreUnavailable",
        "Ferry.Failed.StoreCorrupt",
        // SSM.
        "Ferry.Blocked.ParamNotFound",
        "Ferry.Blocked.ParamAccessDenied",
        "Ferry.Retryable.ParamUnavailable",
        // Route 53.
        "Ferry.Blocked.HostedZone",
        "Ferry.Blocked.RecordRefused",
        "Ferry.Retryable.Route53",
        // Other AWS services and Slack.
        "Ferry.Blocked.EventBridge",
        "Ferry.Blocked.CloudWatch",
        "Ferry.Blocked.Sns",
        "Ferry.Blocked.Ecs",
        "Ferry.Blocked.Rds",
        "Ferry.Blocked.Slack",
        "Ferry.Retryable.EventBridge",
        "Ferry.Retryable.CloudWatch",
        "Ferry.Retryable.Sns",
        "Ferry.Retryable.Ecs",
        "Ferry.Retryable.Rds",
        "Ferry.Retryable.Slack",
        // Heroku.
        "Ferry.Blocked.HerokuUnauthorized",
        "Ferry.Blocked.HerokuNotFound",
        "Ferry.Retryable.HerokuRateLimited",
        "Ferry.Failed.HerokuRefused",
        "Ferry.Retryable.HerokuUnreachable",
        // PostgreSQL and replication.
        "Ferry.Blocked.InvalidUrl",
        "Ferry.Blocked.Tls",
        "Ferry.Retryable.PgConnect",
        "Ferry.Failed.PgQuery",
        "Ferry.Failed.PgStuck",
        "Ferry.Failed.ReplicationSql",
        "Ferry.Failed.ReplicationTool",
        "Ferry.Failed.ReplicationState",
        // Approvals.
        "Ferry.Blocked.NotAllowed",
        "Ferry.Blocked.Differences",
        "Ferry.Failed.TaskGone",
        "Ferry.Retryable.StepFunctions",
        "Ferry.Blocked.BadSignature",
    ];
}

/// Result of a step.
pub type StepResult<T> = Result<T, StepError>;
