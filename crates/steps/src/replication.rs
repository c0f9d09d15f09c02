//! Step 3: start the replication worker (an ECS task), and the status check the state
//! machine's wait loop calls until the copy is done and the lag is under the spec's limit.
//! A worker that died or stopped reporting is started again (the replicator resumes where it
//! stopped); after [`MAX_RESTARTS`] the migration fails.

use chrono::Utc;
use ferry_core::state::{DrainCheck, DrainCheckState, Outcome, Phase, WorkerPhase};
use ferry_pg::freeze;
use serde::{Deserialize, Serialize};

use crate::{
    Deps, MigrationRef, StepError, StepResult,
    facts::{self, AppRoles, WorkerFact},
    now,
};

/// Restarts of a dead worker before the migration fails.
pub const MAX_RESTARTS: u32 = 3;

/// The longest a status check waits for the worker in one invocation: well inside the
/// function's 15-minute timeout, with room for the last check.
pub const STATUS_WAIT_MAX_SECONDS: u32 = ferry_core::spec::limits::STATUS_WAIT_MAX_SECONDS;

/// Output of the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The worker task.
    pub task_arn: String,
    /// Whether a running task was found (a retried step).
    pub reused: bool,
    /// The role made read-only on the target until cutover.
    pub target_role_frozen: String,
}

/// Starts the worker unless one runs; freezes the app's role on the target so nothing but the
/// worker writes there before the cutover.
pub async fn start(deps: &Deps, input: MigrationRef) -> StepResult<Started> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.enter(id, Phase::Replicating).await?;
    let roles: AppRoles = facts::get(deps.store.as_ref(), id, facts::APP_ROLES)
        .await?
        .ok_or_else(|| StepError::Input("preflight has not recorded the app roles".into()))?;
    let (_, target_url) = deps.urls(&rec.spec).await?;
    let target = target_url.connect().await?;
    freeze::freeze_role(&target, &roles.target).await?;

    let existing: Option<WorkerFact> = facts::get(deps.store.as_ref(), id, facts::WORKER).await?;
    if let Some(w) = &existing
        && let Some(task) = deps.compute.task(&w.task_arn).await?
        && !task.is_stopped()
    {
        return Ok(Started {
            task_arn: w.task_arn.clone(),
            reused: true,
            target_role_frozen: roles.target,
        });
    }
    let task_arn = launch(deps, id, existing).await?;
    Ok(Started {
        task_arn,
        reused: false,
        target_role_frozen: roles.target,
    })
}

/// Runs a worker task and records it (a restart when `previous` is set).
async fn launch(deps: &Deps, id: &str, previous: Option<WorkerFact>) -> StepResult<String> {
    let task_arn = deps.compute.run_worker(id).await?;
    let at = now();
    let fact = match &previous {
        None => WorkerFact {
            task_arn: task_arn.clone(),
            first_started_at: at,
            started_at: at,
            restarts: 0,
        },
        Some(p) => WorkerFact {
            task_arn: task_arn.clone(),
            first_started_at: p.first_started_at,
            started_at: at,
            restarts: p.restarts + 1,
        },
    };
    if !facts::swap(
        deps.store.as_ref(),
        id,
        facts::WORKER,
        previous.as_ref(),
        &fact,
    )
    .await?
    {
        // Another attempt started one at the same time: keep theirs, stop ours.
        deps.compute
            .stop_task(&task_arn, "ferry: duplicate worker")
            .await?;
        let theirs: Option<WorkerFact> = facts::get(deps.store.as_ref(), id, facts::WORKER).await?;
        return Ok(theirs.map(|w| w.task_arn).unwrap_or(task_arn));
    }
    deps.audit(
        id,
        "replication",
        if previous.is_some() {
            "restart_worker"
        } else {
            "start_worker"
        },
        Outcome::Started,
        serde_json::json!({ "task_arn": task_arn, "restarts": fact.restarts }),
        None,
    )
    .await?;
    Ok(task_arn)
}

/// Output of a status check: what the console shows while the copy runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Whether the state machine may go on (streaming, lag under the limit).
    pub ready: bool,
    /// The worker's phase (`starting` before its first heartbeat).
    pub worker_phase: String,
    /// Tables copied.
    pub tables_done: u32,
    /// Tables to copy.
    pub tables_total: u32,
    /// Rows copied.
    pub rows_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Replication lag in seconds.
    pub lag_seconds: Option<f64>,
    /// Changes waiting.
    pub lag_changes: Option<u64>,
    /// Seconds since the worker's last heartbeat.
    pub heartbeat_age_seconds: Option<f64>,
    /// Worker restarts so far.
    pub restarts: u32,
    /// After the cutover (`exact_check` asked): the exact comparison of the drained freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_check: Option<DrainCheck>,
}

/// Checks the worker; restarts a dead one; fails when it cannot go on.
/// The status step's input: the migration, and for the check before the cutover, since when
/// the worker has had to be caught up again.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusInput {
    /// The migration.
    pub migration_id: String,
    /// Where the catch-up limit (`timing.catch_up_hours`) counts from, when later than the
    /// worker's first start: the state machine passes the time it entered the check before
    /// the cutover, so a worker that died during the gates gets the whole limit to catch up.
    #[serde(default)]
    pub since: Option<chrono::DateTime<Utc>>,
    /// The check after the cutover: `ready` once the exact comparison of the drained freeze
    /// has ended (or was not run), which the rollback-window gate then reports.
    #[serde(default)]
    pub exact_check: bool,
    /// Keep checking, every `timing.poll_seconds`, for up to this many seconds until `ready`
    /// (the state machine passes `timing.status_wait_seconds`). A long catch-up then costs
    /// the execution one loop turn — about nine history events — per wait, not per poll.
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

impl From<MigrationRef> for StatusInput {
    fn from(r: MigrationRef) -> Self {
        Self {
            migration_id: r.migration_id,
            since: None,
            exact_check: false,
            wait_seconds: None,
        }
    }
}

/// The worker's status, checked every `timing.poll_seconds` until it is ready or
/// `input.wait_seconds` have passed (at most [`STATUS_WAIT_MAX_SECONDS`]); errors at once.
pub async fn status(deps: &Deps, input: impl Into<StatusInput>) -> StepResult<Status> {
    let input: StatusInput = input.into();
    let wait = std::time::Duration::from_secs(u64::from(
        input.wait_seconds.unwrap_or(0).min(STATUS_WAIT_MAX_SECONDS),
    ));
    let poll = if wait.is_zero() {
        wait
    } else {
        let spec = deps.record(&input.migration_id).await?.spec;
        std::time::Duration::from_secs(u64::from(spec.timing.poll_seconds))
    };
    let started = std::time::Instant::now();
    loop {
        let out = status_once(deps, &input).await?;
        if out.ready || started.elapsed() + poll > wait {
            return Ok(out);
        }
        tokio::time::sleep(poll).await;
    }
}

/// The worker as the last check found it.
pub(crate) struct Liveness {
    /// The worker task.
    pub worker: WorkerFact,
    /// Its last heartbeat.
    pub progress: Option<ferry_core::state::WorkerProgress>,
    /// Seconds since that heartbeat.
    pub age: Option<f64>,
    /// Tasks started after the first died, this check's restart included.
    pub restarts: u32,
}

/// Checks the worker: one that reported a blocking error is an error, a dead one (task
/// stopped or gone, or no heartbeat for `timing.stall_seconds`) is restarted.
pub(crate) async fn liveness(
    deps: &Deps,
    id: &str,
    spec: &ferry_core::MigrationSpec,
) -> StepResult<Liveness> {
    let worker: WorkerFact = facts::get(deps.store.as_ref(), id, facts::WORKER)
        .await?
        .ok_or_else(|| StepError::Input("no worker was started for this migration".into()))?;
    let progress = deps.store.progress(id).await?;
    let task = deps.compute.task(&worker.task_arn).await?;
    let now = Utc::now();
    let age = progress
        .as_ref()
        .map(|p| (now - p.heartbeat_at).num_milliseconds() as f64 / 1000.0);

    if let Some(p) = &progress
        && let Some(name) = &p.error_name
        && !name.starts_with("Ferry.Retryable.")
    {
        return Err(StepError::WorkerBlocked {
            name: name.clone(),
            message: p.error.clone().unwrap_or_default(),
        });
    }
    let stall = f64::from(spec.timing.stall_seconds);
    // A task started after the last heartbeat has not had its first beat yet.
    let since_start = (now - worker.started_at).num_milliseconds() as f64 / 1000.0;
    let dead_reason = match &task {
        None => Some("ECS no longer knows the task".to_string()),
        Some(t) if t.is_stopped() => Some(format!(
            "task stopped: {}",
            t.stopped_reason.as_deref().unwrap_or("no reason given")
        )),
        Some(_) if since_start > stall && age.is_none_or(|a| a > stall) => Some(format!(
            "no heartbeat for {} s",
            age.map_or(since_start, |a| a.min(since_start)).round()
        )),
        Some(_) => None,
    };
    let restarts = match dead_reason {
        Some(reason) => restart(deps, id, &worker, task.as_ref(), reason).await?,
        None => worker.restarts,
    };
    Ok(Liveness {
        worker,
        progress,
        age,
        restarts,
    })
}

/// One check of the worker's status: a dead worker restarted, a blocked one or a catch-up past
/// its limit an error.
async fn status_once(deps: &Deps, input: &StatusInput) -> StepResult<Status> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.record(id).await?;
    let spec = &rec.spec;
    let Liveness {
        worker,
        progress,
        age,
        restarts,
    } = liveness(deps, id, spec).await?;
    let now = Utc::now();
    let stall = f64::from(spec.timing.stall_seconds);
    let elapsed_hours = catch_up_hours(worker.first_started_at, input.since, now);
    let ready = progress.as_ref().is_some_and(|p| {
        p.phase == WorkerPhase::Streaming
            && !p.paused
            && p.lag_seconds
                .is_some_and(|l| l <= f64::from(spec.replication.max_lag_seconds))
            && age.is_some_and(|a| a <= stall)
    });
    let out = Status {
        ready,
        worker_phase: progress
            .as_ref()
            .map(|p| serde_json::to_value(p.phase).ok())
            .and_then(|v| v.and_then(|v| v.as_str().map(str::to_string)))
            .unwrap_or_else(|| "starting".into()),
        tables_done: progress.as_ref().map_or(0, |p| p.tables_done),
        tables_total: progress.as_ref().map_or(0, |p| p.tables_total),
        rows_copied: progress.as_ref().map_or(0, |p| p.rows_copied),
        bytes_copied: progress.as_ref().map_or(0, |p| p.bytes_copied),
        lag_seconds: progress.as_ref().and_then(|p| p.lag_seconds),
        lag_changes: progress.as_ref().and_then(|p| p.lag_changes),
        heartbeat_age_seconds: age,
        restarts,
        exact_check: None,
    };
    if input.exact_check {
        let (ready, check) = exact_check(deps, spec, progress.as_ref()).await?;
        return Ok(Status {
            ready,
            exact_check: check,
            ..out
        });
    }
    if !ready && elapsed_hours > f64::from(spec.timing.catch_up_hours) {
        return Err(StepError::CatchUpTimeout {
            hours: spec.timing.catch_up_hours,
            detail: format!(
                "worker {}, {}/{} tables, lag {:?} s",
                out.worker_phase, out.tables_done, out.tables_total, out.lag_seconds
            ),
        });
    }
    Ok(out)
}

/// A dead worker: a task ECS still runs is stopped, and the next one starts on a later check,
/// once ECS reports it STOPPED; a stopped one's death is audited and a new one launched. The
/// restarts so far. Past [`MAX_RESTARTS`] the migration fails instead.
async fn restart(
    deps: &Deps,
    id: &str,
    worker: &WorkerFact,
    task: Option<&ferry_core::cloud::TaskState>,
    reason: String,
) -> StepResult<u32> {
    if worker.restarts >= MAX_RESTARTS {
        return Err(StepError::WorkerDead(format!(
            "{reason}; restarted {MAX_RESTARTS} times already"
        )));
    }
    // ECS stops a task over tens of seconds (SIGTERM, SIGKILL 30 s later): the next worker
    // starts only once this one is STOPPED, on a later check, so two never run at once (the
    // target's writer lock would hold the second back; this keeps it from starting at all).
    if let Some(t) = task
        && !t.is_stopped()
    {
        tracing::warn!(%reason, "worker dead; stopping it before starting a new one");
        deps.compute
            .stop_task(&t.task_arn, "ferry: no heartbeat")
            .await?;
        deps.audit(
            id,
            "replication",
            "worker_stopping",
            Outcome::Failed,
            serde_json::json!({ "task_arn": t.task_arn, "reason": reason }),
            Some(format!("replication/worker_stopping/{}", t.task_arn)),
        )
        .await?;
        return Ok(worker.restarts);
    }
    tracing::warn!(%reason, "worker dead; starting a new one");
    deps.audit(
        id,
        "replication",
        "worker_dead",
        Outcome::Failed,
        serde_json::json!({ "task_arn": worker.task_arn, "reason": reason }),
        None,
    )
    .await?;
    launch(deps, id, Some(worker.clone())).await?;
    Ok(worker.restarts + 1)
}

/// Whether the exact comparison of the cutover's drained freeze has ended (or none runs for
/// it), and the comparison. One whose worker ended (a restarted worker holds no snapshot) or
/// that outlived its limit is marked interrupted here. The worker records a comparison just
/// after it reports the drain; for 30 s after the cutover a missing record means "not yet".
pub async fn exact_check(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    progress: Option<&ferry_core::state::WorkerProgress>,
) -> StepResult<(bool, Option<DrainCheck>)> {
    let store = deps.store.as_ref();
    let id = &spec.migration_id;
    let cutover: Option<facts::CutoverFact> = facts::get(store, id, facts::CUTOVER).await?;
    let position = cutover.as_ref().and_then(|c| c.position.clone());
    let check = facts::get::<DrainCheck>(store, id, facts::DRAIN_CHECK).await?;
    let Some(mut check) =
        check.filter(|c| Some(&c.position) == position.as_ref() && c.direction == "forward")
    else {
        let recent = cutover
            .and_then(|c| c.timeline.last().map(|t| t.1))
            .is_some_and(|at| (Utc::now() - at).num_seconds() < 30);
        return Ok((spec.cutover.exact_check_seconds == 0 || !recent, None));
    };
    let limit = i64::from(spec.cutover.exact_check_seconds) + 300;
    let now = Utc::now();
    let gone = progress.is_none_or(|p| {
        p.epoch != check.worker_epoch
            || matches!(p.phase, WorkerPhase::Stopped | WorkerPhase::Failed)
    });
    if check.state == DrainCheckState::Running
        && (gone || (now - check.snapshots_at).num_seconds() > limit)
    {
        let before = check.clone();
        check.state = DrainCheckState::Interrupted;
        check.finished_at = Some(now);
        check.error = Some(if gone {
            "the worker holding the snapshots ended".into()
        } else {
            "it outlived its time limit".into()
        });
        facts::swap(store, id, facts::DRAIN_CHECK, Some(&before), &check).await?;
    }
    Ok((check.state.finished(), Some(check)))
}

/// Hours the catch-up limit has run: from the worker's first start, or from `since` when that
/// is later (the check before the cutover).
fn catch_up_hours(
    first_started_at: chrono::DateTime<Utc>,
    since: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> f64 {
    let from = since.map_or(first_started_at, |s| s.max(first_started_at));
    (now - from).num_seconds() as f64 / 3600.0
}

/// Stops the worker: a `stop` command (with capture cleanup), a bounded wait for it to be
/// carried out, then `StopTask` whatever happened, then the cleanup done here as well
/// (idempotent), so a dead worker leaves no triggers or slot behind. Returns whether a worker
/// task was known.
pub async fn stop_worker(deps: &Deps, id: &str, wait: std::time::Duration) -> StepResult<bool> {
    let store = deps.store.as_ref();
    let rec = deps.record(id).await?;
    let Some(worker): Option<WorkerFact> = facts::get(store, id, facts::WORKER).await? else {
        return Ok(false);
    };
    // A stop already sent (a retried decommission or rollback) is not sent again.
    let seq = match store.command(id).await? {
        Some(c)
            if matches!(
                c.command,
                ferry_core::state::WorkerCommand::Stop { cleanup: true }
            ) =>
        {
            c.seq
        }
        _ => {
            store
                .send_command(
                    id,
                    ferry_core::state::WorkerCommand::Stop { cleanup: true },
                    "ferry:stop",
                    now(),
                )
                .await?
                .seq
        }
    };
    let deadline = std::time::Instant::now() + wait;
    let stall = f64::from(rec.spec.timing.stall_seconds);
    loop {
        let p = store.progress(id).await?;
        let alive = p.as_ref().is_some_and(|p| {
            (Utc::now() - p.heartbeat_at).num_milliseconds() as f64 / 1000.0 <= stall
        });
        let done = p
            .as_ref()
            .is_some_and(|p| p.acked_command >= seq && p.phase == WorkerPhase::Stopped);
        if done || !alive || std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    deps.compute
        .stop_task(&worker.task_arn, "ferry: migration ended")
        .await?;
    let (source_url, target_url) = deps.urls(&rec.spec).await?;
    let source = source_url.connect().await?;
    let capture = crate::cutover::installed_capture(&source).await?;
    let has_ferry = source
        .query_one(
            "SELECT to_regnamespace('ferry') IS NOT NULL
                 OR EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'ferry_pub')",
            &[],
        )
        .await
        .map_err(|source| ferry_pg::PgError::Query {
            what: "look for capture objects",
            source,
        })?
        .get::<_, bool>(0);
    let target = target_url.connect().await?;
    let target_has = target
        .query_one("SELECT to_regnamespace('ferry') IS NOT NULL", &[])
        .await
        .map_err(|source| ferry_pg::PgError::Query {
            what: "look for Ferry's schema on the target",
            source,
        })?
        .get::<_, bool>(0);
    if has_ferry || target_has {
        let mut rep =
            crate::cutover::replicator(deps, &rec.spec, &source_url, &target_url, capture).await?;
        rep.cleanup().await?;
    }
    deps.audit(
        id,
        "replication",
        "stop_worker",
        Outcome::Succeeded,
        serde_json::json!({ "task_arn": worker.task_arn, "capture_removed": true }),
        Some("replication/stop_worker".into()),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::catch_up_hours;

    #[test]
    fn the_catch_up_limit_counts_from_the_later_of_first_start_and_since() {
        let now = Utc::now();
        let first = now - Duration::hours(100);
        assert_eq!(catch_up_hours(first, None, now), 100.0);
        // Before the cutover, days after the first catch-up: the limit starts again.
        assert_eq!(
            catch_up_hours(first, Some(now - Duration::hours(2)), now),
            2.0
        );
        // A `since` before the first start changes nothing.
        assert_eq!(
            catch_up_hours(first, Some(first - Duration::hours(5)), now),
            100.0
        );
    }
}
