//! The database endpoint, as the cutover and the rollback steer it: set a desired state for
//! the app's endpoint, tell it to every task that listens on a control channel (signed, in
//! parallel; `ferry_core::control`) and wait until every task that was live when it was set
//! has reached it, within a bound: by their answers, or for tasks without a channel (or whose
//! channel failed) by their reports in the state table. A task that answers with an error, stops heartbeating or does not answer in
//! time fails the wait, naming the task; the caller then undoes.

use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_core::{
    MigrationSpec,
    control::{ControlReply, MIN_KEY},
    endpoint::{Backend, EndpointDesired, EndpointTask},
};

use crate::{Deps, StepError, StepResult};

/// A report older than this means the task is gone (tasks report every second).
pub const STALE_AFTER: Duration = Duration::from_secs(5);

fn stale_after() -> chrono::Duration {
    chrono::Duration::from_std(STALE_AFTER).unwrap_or(chrono::Duration::MAX)
}

/// Extra time over the pause bound for the tasks to read the state and report.
const ANSWER_SLACK: Duration = Duration::from_millis(1_500);

/// How long a retarget (login check, ini rewrite, RELOAD) may take.
const RETARGET_LIMIT: Duration = Duration::from_secs(10);

/// How long a resume may take to be confirmed.
const RESUME_LIMIT: Duration = Duration::from_secs(5);

/// The endpoint's live tasks now.
pub async fn live_tasks(deps: &Deps, app: &str) -> StepResult<Vec<EndpointTask>> {
    let now = Utc::now();
    let stale = stale_after();
    Ok(deps
        .endpoints
        .endpoint_tasks(app)
        .await?
        .into_iter()
        .filter(|t| t.alive(now, stale))
        .collect())
}

/// Endpoint tasks a step steers, and the number of the desired state it knows was stored
/// last: its next state is then told while it is written ([`converge`]'s `after`).
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// The tasks, as listed before anything was held.
    pub tasks: Vec<EndpointTask>,
    /// The desired state stored last, as this step knows it (`None`: store first, then tell).
    pub seq: Option<u64>,
}

/// Checks, before anything is frozen, that the endpoint can be switched: at least
/// `endpoint.min_tasks` live tasks, all unpaused on `expect`, reading the migration's
/// parameters. Returns the live tasks and the desired state's number.
pub async fn ready(deps: &Deps, spec: &MigrationSpec, expect: Backend) -> StepResult<Fleet> {
    let min = spec.endpoint.as_ref().map_or(1, |e| e.min_tasks) as usize;
    let (live, desired) = tokio::join!(
        live_tasks(deps, &spec.heroku.app),
        deps.endpoints.endpoint_desired(&spec.heroku.app)
    );
    let (live, seq) = (live?, desired?.map_or(0, |d| d.seq));
    // Read now, not inside the window the app's queries are held in.
    control_key(deps).await;
    let unavailable = |reason: String| StepError::EndpointUnavailable {
        app: spec.heroku.app.clone(),
        reason,
    };
    if live.len() < min {
        return Err(unavailable(format!(
            "{} live task(s), endpoint.min_tasks is {min}; start the endpoint service (its tasks report every second) or lower min_tasks",
            live.len()
        )));
    }
    for t in &live {
        if t.paused || t.backend != expect {
            return Err(unavailable(format!(
                "task {} is {} on the {} database, expected unpaused on the {expect}; see `ferry status`",
                t.task_id,
                if t.paused { "paused" } else { "serving" },
                t.backend
            )));
        }
        if t.source_param != spec.source.database_url_param
            || t.target_param != spec.endpoint_target_param()
        {
            return Err(unavailable(format!(
                "task {} reads its databases from {} and {}, not this migration's {} and {}; redeploy the endpoint with the migration's parameters",
                t.task_id,
                t.source_param,
                t.target_param,
                spec.source.database_url_param,
                spec.endpoint_target_param()
            )));
        }
        if let Some(r) = &spec.redis {
            match &t.redis {
                None => {
                    return Err(unavailable(format!(
                        "task {} runs no Redis proxy and the spec has a redis section; redeploy the endpoint with its Redis parameters (EndpointRedisSourceParam, EndpointRedisTargetParam)",
                        t.task_id
                    )));
                }
                Some(p)
                    if p.source_param != r.source_url_param
                        || p.target_param != r.target_url_param =>
                {
                    return Err(unavailable(format!(
                        "task {}'s Redis proxy reads {} and {}, not this migration's {} and {}; redeploy the endpoint with the migration's Redis parameters",
                        t.task_id,
                        p.source_param,
                        p.target_param,
                        r.source_url_param,
                        r.target_url_param
                    )));
                }
                Some(p) if p.paused || p.backend != expect => {
                    return Err(unavailable(format!(
                        "task {}'s Redis proxy is {} on the {} Redis, expected unpaused on the {expect}",
                        t.task_id,
                        if p.paused { "paused" } else { "serving" },
                        p.backend
                    )));
                }
                Some(_) => {}
            }
        }
    }
    // A task ahead of the table acted on a state told whose write never landed: the next
    // state is then stored first, numbered above it.
    let ahead = live.iter().any(|t| t.seq > seq);
    Ok(Fleet {
        tasks: live,
        seq: (!ahead).then_some(seq),
    })
}

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Paused on the source (the cutover's first move) or on the target (the rollback's).
    Pause(Backend),
    /// Paused, now pointing at `Backend`.
    Retarget(Backend),
    /// Unpaused on `Backend`.
    Resume(Backend),
}

impl Goal {
    fn state(self) -> (bool, Backend) {
        match self {
            Goal::Pause(b) | Goal::Retarget(b) => (true, b),
            Goal::Resume(b) => (false, b),
        }
    }
}

/// A desired state every task reached, and their reports saying so.
#[derive(Debug, Clone)]
pub struct Converged {
    /// The state, as stored.
    pub want: EndpointDesired,
    /// Each task's report once it reached it.
    pub reports: Vec<EndpointTask>,
    /// When the last task was known to have reached it (its answer, or its report read).
    pub reached_at: chrono::DateTime<Utc>,
}

impl Converged {
    /// The longest time a task held the app's queries, in milliseconds (PAUSE sent → RESUME
    /// done, on the task's clock), when the tasks report completed holds.
    pub fn longest_hold_ms(&self) -> Option<i64> {
        self.reports
            .iter()
            .filter_map(|r| r.hold.and_then(|h| h.ms()))
            .max()
    }
}

/// Sets the desired state for `goal` and waits for every task in `tasks` to reach it.
/// `after` is the state number this caller stored last, when it knows it: the new state is
/// then told to the tasks while it is written (numbered `after + 1`, stored only if nothing
/// else was stored since), so a slow store does not hold the app's queries; without it the
/// state is stored first (read, numbered above, written) and then told.
pub async fn converge(
    deps: &Deps,
    spec: &MigrationSpec,
    tasks: &[EndpointTask],
    goal: Goal,
    by: &str,
    after: Option<u64>,
) -> StepResult<Converged> {
    let (paused, backend) = goal.state();
    let pause_ms = u64::from(spec.cutover.pause_timeout_ms);
    let t0 = Instant::now();
    let draft = EndpointDesired {
        paused,
        backend,
        pause_timeout_ms: pause_ms,
        migration_id: spec.migration_id.clone(),
        issued_at: Utc::now(),
        issued_by: by.to_string(),
        ..EndpointDesired::initial(&spec.heroku.app)
    };
    let limit = match goal {
        Goal::Pause(_) => Duration::from_millis(pause_ms) + ANSWER_SLACK,
        Goal::Retarget(_) => RETARGET_LIMIT,
        Goal::Resume(_) => RESUME_LIMIT,
    };
    let deadline = Instant::now() + limit;
    let told = match after {
        None => {
            let want = deps.endpoints.set_endpoint_desired(draft).await?;
            let stored = t0.elapsed();
            let answers = tell_all(deps, tasks, &want, goal, (limit, t0)).await?;
            Told::new(want, stored, answers, t0)
        }
        Some(after) => tell_while_storing(deps, tasks, draft, after, goal, limit, t0).await?,
    };
    let Told {
        want,
        stored_ms,
        told_ms,
        answers:
            Answers {
                rest,
                mut reports,
                answered_ms,
            },
        mut reached_at,
    } = told;
    if !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        reports.extend(wait(deps, spec, &rest, &want, goal, left).await?);
        reached_at = Utc::now();
    }
    tracing::info!(
        ?goal,
        seq = want.seq,
        tasks = tasks.len(),
        through_table = rest.len(),
        stored_ms,
        told_ms,
        ?answered_ms,
        total_ms = t0.elapsed().as_millis() as u64,
        "endpoint converged"
    );
    Ok(Converged {
        want,
        reports,
        reached_at,
    })
}

/// A state told: the tasks still to wait for through the table (`rest`), the others'
/// reports, when they had all answered, and how long the store and the telling took.
struct Told {
    want: EndpointDesired,
    stored_ms: u64,
    told_ms: u64,
    answers: Answers,
    reached_at: chrono::DateTime<Utc>,
}

impl Told {
    fn new(want: EndpointDesired, stored: Duration, answers: Answers, t0: Instant) -> Self {
        Told {
            want,
            stored_ms: stored.as_millis() as u64,
            told_ms: t0.elapsed().as_millis() as u64,
            answers,
            reached_at: Utc::now(),
        }
    }
}

/// The state numbered `after + 1`, told and stored at once. A store that finds another
/// state stored since fails the step (another command steers this endpoint); the tasks may
/// have acted on the told state, and whatever the caller does next is stored numbered above
/// it ([`ferry_core::endpoint::UNTOLD_GAP`]).
async fn tell_while_storing(
    deps: &Deps,
    tasks: &[EndpointTask],
    draft: EndpointDesired,
    after: u64,
    goal: Goal,
    limit: Duration,
    t0: Instant,
) -> StepResult<Told> {
    let want = EndpointDesired {
        seq: after + 1,
        ..draft
    };
    let store = async {
        let r = deps
            .endpoints
            .put_endpoint_desired_after(after, want.clone())
            .await;
        (r, t0.elapsed())
    };
    let tell = async {
        let r = tell_all(deps, tasks, &want, goal, (limit, t0)).await;
        (r, t0.elapsed(), Utc::now())
    };
    let ((stored, stored_in), (told, told_in, reached_at)) = tokio::join!(store, tell);
    if stored?.is_none() {
        let reason = format!(
            "another endpoint state was stored after #{after} while #{} was told; is another ferry command or migration steering this app's endpoint?",
            after + 1
        );
        return Err(goal_failed(goal, reason));
    }
    Ok(Told {
        want,
        stored_ms: stored_in.as_millis() as u64,
        told_ms: told_in.as_millis() as u64,
        answers: told?,
        reached_at,
    })
}

/// The control channel's key: read from SSM once per invocation ([`ready`] reads it, before
/// anything is held). A key that cannot be read leaves the channel off (the table still
/// works), with a warning.
async fn control_key(deps: &Deps) -> Option<ferry_core::secret::Secret> {
    if let Some(k) = deps.control_key.get() {
        return k.clone();
    }
    let param = deps.settings.endpoint_control_key_param.as_ref()?;
    let key = match deps.params.get(param).await {
        Ok(k) if k.expose().len() >= MIN_KEY => Some(k),
        Ok(_) => {
            tracing::warn!(%param, "the endpoint control key has fewer than {MIN_KEY} characters; steering the endpoint through the state table only (store a random one: openssl rand -hex 32)");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the endpoint control key; steering the endpoint through the state table only");
            None
        }
    };
    deps.control_key.get_or_init(|| key).clone()
}

/// How long connecting to a task's control port may take (inside a VPC: well under a
/// millisecond; a task that cannot be reached is waited for through the table instead).
const CONNECT_LIMIT: Duration = Duration::from_millis(500);

/// Sends `want` to every task that listens for it, in parallel, and takes their answers.
/// Returns the tasks still to wait for through the table (no channel, not reached, refused)
/// and the reports of those that reached it. A task that answers it could not reach the state
/// fails the wait.
async fn tell_all(
    deps: &Deps,
    tasks: &[EndpointTask],
    want: &EndpointDesired,
    goal: Goal,
    (limit, t0): (Duration, Instant),
) -> StepResult<Answers> {
    let key = match control_key(deps).await {
        Some(k) if tasks.iter().any(|t| t.control.is_some()) => k,
        _ => {
            return Ok(Answers {
                rest: tasks.to_vec(),
                ..Answers::default()
            });
        }
    };
    let line = ferry_core::control::request_line(
        key.expose().as_bytes(),
        want,
        // The wall clock, not the steps' (a test may drive that): the task checks the age
        // against its own.
        Utc::now().timestamp(),
    );
    let mut asked = tokio::task::JoinSet::new();
    for (i, t) in tasks.iter().enumerate() {
        if let Some(addr) = t.control.clone() {
            let line = line.clone();
            asked.spawn(async move { (i, tell(&addr, &line, limit).await) });
        }
    }
    let mut done = vec![false; tasks.len()];
    let mut reports = Vec::new();
    let mut answered_ms = Vec::new();
    while let Some(joined) = asked.join_next().await {
        let Ok((i, answer)) = joined else { continue };
        answered_ms.push(t0.elapsed().as_millis() as u64);
        let id = &tasks[i].task_id;
        match answer {
            Ok(ControlReply::Report(r)) if r.reached(want) => {
                done[i] = true;
                reports.push(*r);
            }
            Ok(ControlReply::Report(r)) if r.seq >= want.seq => {
                return Err(failed(goal, id, r.error.as_deref()));
            }
            Ok(ControlReply::Report(_)) => {}
            Ok(ControlReply::Refused(why)) => {
                tracing::warn!(task = %id, %why, "the endpoint task refused the control request; waiting for it through the state table");
            }
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "the endpoint task's control channel did not answer; waiting for it through the state table");
            }
        }
    }
    let rest = tasks
        .iter()
        .zip(done)
        .filter(|(_, d)| !d)
        .map(|(t, _)| t.clone())
        .collect();
    Ok(Answers {
        rest,
        reports,
        answered_ms,
    })
}

/// What the tasks told a state answered: the tasks still to wait for through the table (no
/// channel, not reached, refused), the reports of the others, and when each answered (ms
/// since the converge began).
#[derive(Debug, Default)]
struct Answers {
    rest: Vec<EndpointTask>,
    reports: Vec<EndpointTask>,
    answered_ms: Vec<u64>,
}

/// One control request: connect, send the line, read the answer line, within `limit`.
async fn tell(addr: &str, line: &str, limit: Duration) -> Result<ControlReply, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(CONNECT_LIMIT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            format!(
                "no connection to {addr} within {} ms",
                CONNECT_LIMIT.as_millis()
            )
        })?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let exchange = async {
        stream.set_nodelay(true)?;
        stream.write_all(line.as_bytes()).await?;
        let mut out = String::new();
        tokio::io::BufReader::new(stream)
            .take(ferry_core::control::MAX_LINE as u64 + 1)
            .read_line(&mut out)
            .await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} within {} ms", limit.as_millis()))?
        .map_err(|e| format!("{addr}: {e}"))?;
    serde_json::from_str(out.trim_end()).map_err(|e| format!("{addr} answered {e}"))
}

async fn wait(
    deps: &Deps,
    spec: &MigrationSpec,
    tasks: &[EndpointTask],
    want: &EndpointDesired,
    goal: Goal,
    limit: Duration,
) -> StepResult<Vec<EndpointTask>> {
    let deadline = Instant::now() + limit;
    let stale = stale_after();
    loop {
        let reports = deps.endpoints.endpoint_tasks(&spec.heroku.app).await?;
        let now = Utc::now();
        let mut waiting = Vec::new();
        let mut reached = Vec::new();
        for t in tasks {
            match reports.iter().find(|r| r.task_id == t.task_id) {
                Some(r) if r.seq >= want.seq && r.reached(want) => reached.push(r.clone()),
                Some(r) if r.seq >= want.seq => {
                    return Err(failed(goal, &r.task_id, r.error.as_deref()));
                }
                Some(r) if !r.alive(now, stale) => {
                    return Err(failed(
                        goal,
                        &r.task_id,
                        Some("stopped reporting (task gone)"),
                    ));
                }
                None => {
                    return Err(failed(
                        goal,
                        &t.task_id,
                        Some("its report is gone (task stopped)"),
                    ));
                }
                Some(r) => waiting.push(r.task_id.clone()),
            }
        }
        if waiting.is_empty() {
            return Ok(reached);
        }
        if Instant::now() >= deadline {
            let what = format!("no answer within {} ms", limit.as_millis());
            return Err(failed(goal, &waiting.join(", "), Some(&what)));
        }
        tokio::time::sleep(deps.settings.drain_poll).await;
    }
}

fn failed(goal: Goal, task: &str, why: Option<&str>) -> StepError {
    goal_failed(
        goal,
        format!("task {task}: {}", why.unwrap_or("did not reach the state")),
    )
}

/// The error of a wait for `goal` that failed for `reason`.
fn goal_failed(goal: Goal, reason: String) -> StepError {
    match goal {
        Goal::Pause(_) => StepError::EndpointPauseFailed { reason },
        Goal::Retarget(b) | Goal::Resume(b) => StepError::EndpointSwitchFailed {
            backend: b.to_string(),
            reason,
        },
    }
}

/// Pauses every live task on `backend` (after [`ready`]); a pause that fails is released
/// (resumed on `backend`) before the error is returned, so nothing stays held.
pub async fn pause(
    deps: &Deps,
    spec: &MigrationSpec,
    backend: Backend,
    by: &str,
) -> StepResult<Fleet> {
    let fleet = ready(deps, spec, backend).await?;
    pause_tasks(deps, spec, fleet, backend, by).await
}

/// Pauses `fleet` (from [`ready`]) on `backend`; a pause that fails is released before the
/// error is returned. Returns the fleet with the pause's state number.
pub async fn pause_tasks(
    deps: &Deps,
    spec: &MigrationSpec,
    fleet: Fleet,
    backend: Backend,
    by: &str,
) -> StepResult<Fleet> {
    match pause_unreleased(deps, spec, fleet, backend, by).await {
        Ok(fleet) => Ok(fleet),
        Err(e) => {
            release(deps, spec, backend, by).await?;
            Err(e)
        }
    }
}

/// [`pause_tasks`] for a caller whose own undo releases the endpoint (the cutover's freeze):
/// a pause that fails is returned as it is, so the tasks are told to resume once, not twice
/// (each release waits for tasks that may not answer).
pub async fn pause_unreleased(
    deps: &Deps,
    spec: &MigrationSpec,
    fleet: Fleet,
    backend: Backend,
    by: &str,
) -> StepResult<Fleet> {
    let done = converge(
        deps,
        spec,
        &fleet.tasks,
        Goal::Pause(backend),
        by,
        fleet.seq,
    )
    .await?;
    Ok(Fleet {
        tasks: fleet.tasks,
        seq: Some(done.want.seq),
    })
}

/// Best effort back to unpaused on `backend` (an undo): sets the state and waits briefly;
/// a task that does not confirm is reported in the log (it converges when it next reads the
/// state, and a replaced task starts there).
pub async fn release(
    deps: &Deps,
    spec: &MigrationSpec,
    backend: Backend,
    by: &str,
) -> StepResult<()> {
    let tasks = live_tasks(deps, &spec.heroku.app).await?;
    match converge(deps, spec, &tasks, Goal::Resume(backend), by, None).await {
        Ok(_) => Ok(()),
        Err(e @ StepError::Store(_)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "an endpoint task did not confirm it resumed on the {backend}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod told_while_storing {
    //! A state told while it is stored, on the in-memory store: written only over the state its
    //! caller knew, and a failure that names both numbers when another was stored since.

    use ferry_core::{
        StepErrorName,
        endpoint::{EndpointDesired, EndpointStore},
        state::Phase,
    };

    use super::*;
    use crate::memory::{World, spec_with};

    #[tokio::test]
    async fn a_state_told_over_one_stored_since_fails_naming_both_and_overwrites_nothing() {
        let w = World::at(spec_with(|_| {}), Phase::ShiftingTraffic).await;
        let app = &w.spec.heroku.app;
        let known = w
            .store
            .set_endpoint_desired(EndpointDesired::initial(app))
            .await
            .expect("stored")
            .seq;
        // Another writer (another ferry command) stores a state after the step read `known`.
        let since = w
            .store
            .set_endpoint_desired(EndpointDesired::initial(app))
            .await
            .expect("stored")
            .seq;
        let goal = Goal::Pause(Backend::Source);
        let err = converge(&w.deps, &w.spec, &[], goal, "test", Some(known))
            .await
            .expect_err("another state was stored since");
        assert_eq!(err.step_error_name(), "Ferry.Retryable.EndpointPause");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "stored after #{known} while #{} was told",
                known + 1
            )),
            "{text}"
        );
        let stored = w
            .store
            .endpoint_desired(app)
            .await
            .expect("read")
            .expect("some");
        assert_eq!(
            (stored.seq, stored.paused),
            (since, false),
            "nothing overwritten"
        );

        // Told over the state stored last, it is stored as the next number.
        let done = converge(&w.deps, &w.spec, &[], goal, "test", Some(since))
            .await
            .expect("converged");
        assert_eq!(done.want.seq, since + 1);
        let stored = w
            .store
            .endpoint_desired(app)
            .await
            .expect("read")
            .expect("some");
        assert_eq!((stored.seq, stored.paused), (since + 1, true));
    }
}
