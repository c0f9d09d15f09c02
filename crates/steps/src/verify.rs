//! Step 4: compare source and target while the app writes, in either capture mode.
//!
//! The comparison runs in the replication worker (an ECS task: no 15-minute limit), as a job
//! ([`ferry_replicator::verify_job`]): every table bucket by bucket in parallel sessions, the
//! differing buckets narrowed to keys, the keys judged in rounds against what waits in the
//! capture. This step asks for the job, grants the app's own target role what it needs,
//! long-polls the job (at most `wait_seconds` per invocation: the state machine loops on
//! `done`, so a comparison of hours costs a few history events; it gives up after
//! `timing.catch_up_hours`, as the catch-up does), restarts a worker that died (its successor
//! resumes the job), and reports: the figures (tables, rows, keys rechecked and
//! tolerated, duration) go to the output, the audit log and the `verify` fact that
//! `ferry status` and `ferry report` read; keys that differ with no change waiting fail the
//! step, named with their table (keys only, never row values). Redis is compared here too
//! (spec `redis`).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ferry_core::{
    spec::CaptureMode,
    state::{Outcome, Phase},
};
use ferry_pg::catalog;
use ferry_replicator::verify_job::{self, Job, JobState, KeyList, Recorder, Verdicts};
use serde::{Deserialize, Serialize};

use crate::{Deps, MigrationRef, StepError, StepResult, facts};

/// Keys named per table in an error.
const NAMED_KEYS: usize = 10;
/// How often the job is read while waiting.
const READ_EVERY: Duration = Duration::from_millis(500);
/// How often the worker's health is checked while waiting.
const LIVENESS_EVERY: Duration = Duration::from_secs(10);

/// Input: the migration, and how long one invocation waits for the worker's job (the state
/// machine passes `timing.status_wait_seconds`; unset: the most a status wait may take).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyInput {
    /// The migration.
    pub migration_id: String,
    /// Seconds to wait for the job in this invocation.
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

impl From<MigrationRef> for VerifyInput {
    fn from(m: MigrationRef) -> Self {
        Self {
            migration_id: m.migration_id,
            wait_seconds: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Output: what was compared and what was tolerated (also stored as the `verify` fact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Whether the comparison has ended (`false`: the worker still compares; the figures below
    /// are its progress and the state machine asks again).
    #[serde(default = "yes")]
    pub done: bool,
    /// Tables compared.
    pub tables: usize,
    /// Rows on the source, summed (rows compared).
    pub source_rows: i64,
    /// Tables with keys that differed at first and were compared again.
    pub rechecked: Vec<String>,
    /// Rounds run.
    pub rounds: u32,
    /// Tables with keys still changing at the end (a change for each waiting): tolerated.
    pub in_flight: Vec<String>,
    /// Keys compared again after the first pass.
    #[serde(default)]
    pub keys_rechecked: u64,
    /// Keys tolerated at the end because a change for each still waited.
    #[serde(default)]
    pub keys_tolerated: u64,
    /// How long Verify took, in milliseconds (request to verdict).
    #[serde(default)]
    pub duration_ms: u64,
    /// The capture mode whose backlog decided what was in flight.
    #[serde(default)]
    pub capture: Option<CaptureMode>,
    /// When it finished.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// Redis databases verified (spec `redis`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redis: Vec<crate::verify_redis::Checked>,
    /// Objects on which the app's own target role was granted what its Heroku role may do (0
    /// when the app logs in as Ferry's login).
    #[serde(default)]
    pub app_grants: usize,
    /// Tables compared whole so far (while not done).
    #[serde(default)]
    pub tables_done: usize,
    /// Worker attempts at the job (a worker restarted or a connection lost resumes it).
    #[serde(default)]
    pub attempts: u32,
}

/// Asks the worker to verify and reports its verdicts. `settle` bounds each wait for the
/// worker's apply (the lag limit if unset).
pub async fn run(
    deps: &Deps,
    input: impl Into<VerifyInput>,
    settle: Option<Duration>,
) -> StepResult<Output> {
    let input: VerifyInput = input.into();
    let started = Instant::now();
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.enter(id, Phase::Verifying).await?;
    let spec = &rec.spec;
    let app_grants = grant_app_role(deps, id, spec).await?;
    let settle = settle.unwrap_or(Duration::from_secs(u64::from(
        spec.replication.max_lag_seconds.max(1),
    )));
    let wait = Duration::from_secs(u64::from(
        input
            .wait_seconds
            .unwrap_or(crate::replication::STATUS_WAIT_MAX_SECONDS)
            .min(crate::replication::STATUS_WAIT_MAX_SECONDS),
    ));
    let rows_per_second = spec.replication.verify_rows_per_second.map(u64::from);
    let mut rec = request(deps, id, settle, rows_per_second).await?;
    let mut checked = Instant::now();
    while !matches!(rec.job.state, JobState::Done | JobState::Failed) {
        let hours = (Utc::now() - rec.job.requested_at).num_seconds() as f64 / 3600.0;
        if hours > f64::from(spec.timing.catch_up_hours) {
            return Err(StepError::CatchUpTimeout {
                hours: spec.timing.catch_up_hours,
                detail: format!(
                    "Verify has compared {}/{} tables ({} source rows) since {}",
                    rec.job.pass.tables_done,
                    rec.job.pass.tables_total,
                    rec.job.pass.rows_compared,
                    rec.job.requested_at
                ),
            });
        }
        if started.elapsed() + READ_EVERY > wait {
            return Ok(pending(&rec.job, app_grants));
        }
        tokio::time::sleep(READ_EVERY).await;
        if checked.elapsed() >= LIVENESS_EVERY {
            alive(deps, id, spec, &rec.job).await?;
            checked = Instant::now();
        }
        let (raw, job) = verify_job::read(deps.store.as_ref(), id)
            .await?
            .ok_or_else(|| StepError::Input("the verify job vanished while waiting".into()))?;
        rec = Recorder::new(deps.store.as_ref(), id, Some(raw), job);
    }
    report(deps, id, spec, settle, rec, app_grants).await
}

/// A dead worker restarted (its successor resumes the job); no worker at all is an error
/// unless something runs the job (a beat in the last [`verify_job::STALE_SECONDS`]).
async fn alive(
    deps: &Deps,
    id: &str,
    spec: &ferry_core::MigrationSpec,
    job: &Job,
) -> StepResult<()> {
    let worker: Option<facts::WorkerFact> =
        facts::get(deps.store.as_ref(), id, facts::WORKER).await?;
    if worker.is_some() {
        crate::replication::liveness(deps, id, spec).await?;
        return Ok(());
    }
    let beating = job
        .beat_age_seconds(Utc::now())
        .is_some_and(|a| a < verify_job::STALE_SECONDS as f64);
    if beating {
        return Ok(());
    }
    Err(StepError::Input(
        "no replication worker runs for this migration, and Verify compares in it: start replication first".into(),
    ))
}

/// Grants the app's own target role (when it has one) what its Heroku role may do.
async fn grant_app_role(
    deps: &Deps,
    id: &str,
    spec: &ferry_core::MigrationSpec,
) -> StepResult<usize> {
    let (source_url, target_url) = deps.urls(spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    let schemas: Vec<String> = catalog::tables(&source)
        .await?
        .iter()
        .map(|t| t.schema.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let login = target_url.user().unwrap_or_default().to_string();
    crate::app_grants::ensure(deps, id, &source, &target, &login, &schemas).await
}

/// The job in the store: the one under way, or a new request when there is none or the last
/// one was reported.
async fn request<'a>(
    deps: &'a Deps,
    id: &str,
    settle: Duration,
    rows_per_second: Option<u64>,
) -> StepResult<Recorder<'a>> {
    let store = deps.store.as_ref();
    let current = verify_job::read(store, id).await?;
    if let Some((raw, job)) = current.clone()
        && job.state != JobState::Reported
    {
        return Ok(Recorder::new(store, id, Some(raw), job));
    }
    let now = Utc::now();
    let job = Job::request(
        format!("verify-{}", now.timestamp_millis()),
        now,
        settle,
        rows_per_second,
    );
    let mut rec = Recorder::new(store, id, current.map(|(raw, _)| raw), job);
    if !rec.save().await? {
        // Another invocation asked first: wait for its job.
        let (raw, job) = verify_job::read(store, id)
            .await?
            .ok_or_else(|| StepError::Input("the verify job vanished".into()))?;
        return Ok(Recorder::new(store, id, Some(raw), job));
    }
    deps.audit(
        id,
        "verify",
        "requested",
        Outcome::Info,
        serde_json::json!({ "job": rec.job.id, "settle_ms": rec.job.settle_ms, "rows_per_second": rows_per_second }),
        None,
    )
    .await?;
    Ok(rec)
}

/// The output while the worker still compares.
fn pending(job: &Job, app_grants: usize) -> Output {
    Output {
        done: false,
        tables: job.pass.tables_total,
        source_rows: job.pass.rows_compared,
        rechecked: Vec::new(),
        rounds: 0,
        in_flight: Vec::new(),
        keys_rechecked: 0,
        keys_tolerated: 0,
        duration_ms: (Utc::now() - job.requested_at).num_milliseconds().max(0) as u64,
        capture: None,
        at: None,
        redis: Vec::new(),
        app_grants,
        tables_done: job.pass.tables_done,
        attempts: job.attempts,
    }
}

/// Marks the job reported (the next Verify asks anew), compares Redis, records the outcome.
async fn report(
    deps: &Deps,
    id: &str,
    spec: &ferry_core::MigrationSpec,
    settle: Duration,
    mut rec: Recorder<'_>,
    app_grants: usize,
) -> StepResult<Output> {
    let job = rec.job.clone();
    rec.job.state = JobState::Reported;
    rec.save().await?;
    let verdicts = match (job.state, job.result) {
        (JobState::Done, Some(v)) => v,
        _ => {
            return Err(StepError::WorkerBlocked {
                name: job
                    .error_name
                    .unwrap_or_else(|| "Ferry.Failed.Worker".into()),
                message: format!(
                    "the worker's Verify job failed after {} attempt(s): {}",
                    job.attempts,
                    job.error.unwrap_or_default()
                ),
            });
        }
    };
    let redis = if verdicts.passed() {
        crate::verify_redis::run(deps, spec, settle).await?
    } else {
        Vec::new()
    };
    let end = job.finished_at.unwrap_or_else(Utc::now);
    let out = Output {
        done: true,
        tables: verdicts.tables,
        source_rows: verdicts.source_rows,
        rechecked: verdicts.rechecked.clone(),
        rounds: verdicts.rounds,
        in_flight: verdicts.in_flight.clone(),
        keys_rechecked: verdicts.keys_rechecked,
        keys_tolerated: verdicts.keys_tolerated,
        duration_ms: (end - job.requested_at).num_milliseconds().max(0) as u64,
        capture: verdicts.capture,
        at: Some(Utc::now()),
        redis,
        app_grants,
        tables_done: job.pass.tables_done,
        attempts: job.attempts,
    };
    record(deps, id, &out, &verdicts).await?;
    Ok(out)
}

fn named(k: &KeyList) -> String {
    let mut shown: Vec<&str> = k.keys.iter().take(NAMED_KEYS).map(String::as_str).collect();
    if k.count > shown.len() {
        shown.push("…");
    }
    shown.join(", ")
}

/// Audits the result, stores the `verify` fact; a failure becomes `VerifyMismatch`.
async fn record(deps: &Deps, id: &str, out: &Output, v: &Verdicts) -> StepResult<()> {
    let keys = |m: &BTreeMap<String, KeyList>| -> BTreeMap<String, Vec<String>> {
        m.iter().map(|(t, k)| (t.clone(), k.keys.clone())).collect()
    };
    let mut detail = serde_json::to_value(out).map_err(|e| StepError::Input(e.to_string()))?;
    detail["differing_keys"] = serde_json::json!(keys(&v.failed));
    detail["undecided_keys"] = serde_json::json!(keys(&v.undecided));
    detail["too_many"] = serde_json::json!(v.too_many);
    if v.passed() {
        deps.audit(id, "verify", "verify", Outcome::Succeeded, detail, None)
            .await?;
        facts::put(deps.store.as_ref(), id, facts::VERIFY, out).await?;
        return Ok(());
    }
    deps.audit(id, "verify", "verify", Outcome::Failed, detail, None)
        .await?;
    let mut parts = v.too_many.clone();
    parts.extend(v.failed.iter().map(|(t, k)| {
        format!(
            "{t}: {} key(s) differ with no change waiting: {}",
            k.count,
            named(k)
        )
    }));
    parts.extend(v.undecided.iter().map(|(t, k)| {
        format!(
            "{t}: {} key(s) differ and the capture's backlog (over {} changes) was too long to tell whether they are in flight: {}",
            k.count,
            verify_job::judge::PEEK_LIMIT,
            named(k)
        )
    }));
    Err(StepError::VerifyMismatch {
        tables: parts.join("; "),
    })
}
