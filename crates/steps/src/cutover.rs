//! Step 8: the database cutover, in one function because every state transition inside the
//! write freeze costs time.
//!
//! In `proxy` mode (the default) the AWS fleet talks to Ferry's endpoint: pause every endpoint
//! task (its queries wait), then freeze the source for the app's role (read-only, open sessions
//! ended: the safety net for writers that bypass the endpoint, e.g. Heroku dynos; Heroku
//! maintenance mode and scale-down alongside), take the source position, have the worker drain
//! to it, sync sequences, optionally compare counts, retarget every endpoint task to the
//! target, unfreeze the target for the app's role, resume the endpoint (the held queries run on
//! the target), and turn the stream around (target → source) so a rollback loses nothing. In
//! `redeploy` mode the switch is the SSM `DATABASE_URL` and ECS redeployments instead of the
//! endpoint. A failure before the switch undoes everything (source writable, endpoint resumed
//! on the source, `DATABASE_URL` as it was). Each sub-step's time is recorded: the freeze and
//! the endpoint's pause are the figures users care about.

use chrono::{DateTime, Utc};
use ferry_core::{
    endpoint::{Backend, EndpointTask},
    metrics::{Metric, Unit},
    spec::{CaptureMode, CutoverVerify, MigrationSpec},
    state::{Outcome, Phase, WorkerCommand},
};
use ferry_heroku::{FormationUpdate, HerokuClient};
use ferry_pg::{PgUrl, freeze};
use ferry_replicator::{
    engine::{Config, Replicator},
    schema::Tools,
};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::{
    Deps, MigrationRef, StepError, StepResult,
    endpoint::{self, Fleet, Goal},
    facts::{self, AppRoles, CutoverFact, CutoverState, HerokuBefore},
    redis_switch,
};

/// Gap added to every sequence on the target, so ids handed out on the source during the
/// last instants can never collide.
pub const SEQUENCE_GAP: i64 = 1000;

/// Output: the timeline and the freeze window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Source writes frozen → target writable for the app, in milliseconds.
    pub freeze_ms: i64,
    /// Endpoint pause asked → every endpoint task resumed (proxy mode), in milliseconds: how
    /// long the app's queries were held.
    pub paused_ms: Option<i64>,
    /// The longest time one endpoint task held the app's queries (PgBouncer PAUSE sent →
    /// RESUME done, on the task's clock), in milliseconds: what the app saw, without the
    /// control plane's round trips before the first pause and after the last resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<i64>,
    /// The source position drained to.
    pub position: String,
    /// Sequences set on the target.
    pub sequences: usize,
    /// Tables whose counts were compared inside the freeze.
    pub counts_checked: usize,
    /// Sub-step → time.
    pub timeline: Vec<(String, DateTime<Utc>)>,
}

impl Output {
    fn from_fact(fact: &CutoverFact) -> Self {
        Self {
            freeze_ms: fact.freeze_ms().unwrap_or(-1),
            paused_ms: fact.paused_ms(),
            held_ms: fact.held_ms,
            position: fact.position.clone().unwrap_or_default(),
            sequences: fact.sequences,
            counts_checked: fact.counts_checked,
            timeline: fact.timeline.clone(),
        }
    }
}

/// The capture mode the worker uses, from what is installed on the source.
pub async fn installed_capture(source: &Client) -> StepResult<CaptureMode> {
    Ok(
        if ferry_replicator::capture::trigger::is_installed(source).await? {
            CaptureMode::Trigger
        } else {
            CaptureMode::Logical
        },
    )
}

/// A replicator on the migration's databases (for positions and sequences; the worker does
/// the applying).
pub async fn replicator(
    deps: &Deps,
    spec: &MigrationSpec,
    source: &PgUrl,
    target: &PgUrl,
    capture: CaptureMode,
) -> StepResult<Replicator> {
    Ok(Replicator::connect(Config {
        source: source.clone(),
        target: target.clone(),
        tools: Tools {
            bin_dir: deps.settings.pg_bin.clone(),
        },
        parallelism: spec.replication.parallelism as usize,
        rows_per_chunk: 250_000,
        batch_size: 5_000,
        capture,
        // The cutover copies nothing.
        max_copy_bytes_per_second: None,
        logical_transport: spec.replication.logical_transport,
    })
    .await?)
}

/// The cutover fact being written, and the version of it last stored: a save is one
/// compare-and-set write, no read (two of the saves happen inside the write freeze).
struct Clock {
    fact: CutoverFact,
    stored: Option<CutoverFact>,
    /// The endpoint tasks this attempt paused (none on a retried finish) and the state it
    /// stored last: resumed without listing them again, told while the state is written.
    held: Fleet,
}

impl Clock {
    fn mark(&mut self, name: &str) {
        self.mark_at(name, Utc::now());
    }

    fn mark_at(&mut self, name: &str, at: chrono::DateTime<Utc>) {
        self.fact.timeline.push((name.to_string(), at));
    }

    async fn save(&mut self, deps: &Deps, id: &str) -> StepResult<()> {
        let store = deps.store.as_ref();
        if !facts::swap(store, id, facts::CUTOVER, self.stored.as_ref(), &self.fact).await? {
            return Err(StepError::Store(ferry_core::StoreError::VersionConflict {
                migration_id: id.to_string(),
                expected: 0,
                found: 0,
            }));
        }
        self.stored = Some(self.fact.clone());
        Ok(())
    }
}

/// Runs the cutover.
pub async fn run(deps: &Deps, input: MigrationRef) -> StepResult<Output> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let store = deps.store.as_ref();
    let rec = deps.record(id).await?;
    if rec.phase == Phase::RollbackWindow
        && let Some(done) = facts::get::<CutoverFact>(store, id, facts::CUTOVER).await?
        && done.state == CutoverState::Done
    {
        // A retry after success reports what the cutover did, as stored.
        return Ok(Output::from_fact(&done));
    }
    let rec = deps.enter(id, Phase::CuttingOver).await?;
    let spec = &rec.spec;
    let roles: AppRoles = facts::get(store, id, facts::APP_ROLES)
        .await?
        .ok_or_else(|| StepError::Input("preflight has not recorded the app roles".into()))?;
    let (source_url, target_url) = deps.urls(spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    let heroku = deps.heroku(spec).await?;
    let previous: Option<CutoverFact> = facts::get(store, id, facts::CUTOVER).await?;
    match previous.as_ref().map(|f| f.state) {
        Some(CutoverState::Switched) => {
            // The app already runs on the target: finish, never go back to the source here.
            let mut clock = Clock {
                fact: previous.clone().unwrap_or_default(),
                stored: previous.clone(),
                held: Fleet::default(),
            };
            return finish(deps, spec, &target, &target_url, &roles, &mut clock).await;
        }
        Some(CutoverState::Frozen) => {
            // An earlier attempt died inside the freeze: undo it, then start over.
            undo(deps, spec, &source, &heroku, &roles).await?;
        }
        _ => {}
    }
    let capture = installed_capture(&source).await?;
    let rep = replicator(deps, spec, &source_url, &target_url, capture).await?;
    let fault = deps.fault_for(id).await?;
    let mut clock = Clock {
        fact: CutoverFact {
            state: CutoverState::Frozen,
            ..CutoverFact::default()
        },
        stored: previous,
        held: Fleet::default(),
    };
    prepare(deps, spec, &heroku, &rep, &mut clock).await?;
    // Redis sessions opened before the freeze: no SSM read inside it.
    let mut redis = redis_switch::open(deps, spec, Backend::Source).await?;
    let (ended, paused) = freeze_source(deps, spec, &source, &roles, &heroku, &mut clock).await?;
    let parts = Frozen {
        rep: &rep,
        target: &target,
        heroku: &heroku,
        fault: fault.as_deref(),
        paused: &paused,
    };
    match frozen_part(deps, spec, &parts, redis.as_mut(), &mut clock).await {
        Ok((sequences, counts)) => {
            clock.fact.sequences = sequences;
            clock.fact.counts_checked = counts;
            let out = finish(deps, spec, &target, &target_url, &roles, &mut clock).await?;
            succeeded(deps, id, &out, ended).await?;
            Ok(out)
        }
        Err(cause) => {
            tracing::error!(error = %cause, "cutover failed inside the freeze; undoing");
            match undo(deps, spec, &source, &heroku, &roles).await {
                Ok(()) => {
                    clock.mark("undone");
                    clock.fact.state = CutoverState::Undone;
                    clock.save(deps, id).await?;
                    deps.audit(
                        id,
                        "cutover",
                        "undo",
                        Outcome::Failed,
                        serde_json::json!({ "cause": cause.to_string(), "timeline": clock.fact.timeline }),
                        None,
                    )
                    .await?;
                    Err(StepError::CutoverUndone(Box::new(cause)))
                }
                Err(undo_err) => Err(StepError::UndoFailed {
                    what: "the cutover".into(),
                    cause: cause.to_string(),
                    undo: undo_err.to_string(),
                }),
            }
        }
    }
}

/// Outside the freeze: remember the Heroku app as it is, put capture on the target.
async fn prepare(
    deps: &Deps,
    spec: &MigrationSpec,
    heroku: &HerokuClient,
    rep: &Replicator,
    clock: &mut Clock,
) -> StepResult<()> {
    let id = &spec.migration_id;
    // Remember the Heroku app as it is, once (a retry sees it already scaled down).
    let app = heroku.app(&spec.heroku.app).await?;
    let formation = heroku.formation(&spec.heroku.app).await?;
    facts::put_once(
        deps.store.as_ref(),
        id,
        facts::HEROKU_BEFORE,
        &HerokuBefore {
            maintenance: app.maintenance,
            formation: formation
                .iter()
                .map(|f| (f.process_type.clone(), f.quantity))
                .collect(),
        },
    )
    .await?;
    // Capture on the target before it can become writable for the app: its first write must
    // reach the reverse stream (the worker turns around only when it reads the command).
    // Done before the freeze, where its cost (a catalog read and a trigger per table, about
    // a second on a few hundred MB) does not count: the worker's forward writes that it may
    // capture meanwhile are applied back by key from the target's current rows, a no-op.
    rep.install_reverse_capture().await?;
    clock.mark("reverse_capture_installed");
    Ok(())
}

/// Pauses the endpoint (proxy mode), then freezes the source for the app's role and ends its
/// sessions, while Heroku goes into maintenance mode and scales down. A failure is undone
/// (source writable, endpoint resumed on the source, Heroku as it was) before it is returned.
/// Returns how many sessions were ended and the endpoint tasks paused (the ones the switch
/// retargets; none in redeploy mode).
async fn freeze_source(
    deps: &Deps,
    spec: &MigrationSpec,
    source: &Client,
    roles: &AppRoles,
    heroku: &HerokuClient,
    clock: &mut Clock,
) -> StepResult<(u64, Vec<EndpointTask>)> {
    let id = &spec.migration_id;
    // Recorded before anything is held or frozen (state Frozen): a retry after a crash from
    // here on undoes first, and undoing what was not done yet is harmless. No store write in
    // the window for it.
    clock.save(deps, id).await?;
    let fleet = if spec.proxied() {
        let ready = endpoint::ready(deps, spec, Backend::Source).await;
        clock.mark("endpoint_pause_requested");
        match ready {
            Ok(fleet) => Some(fleet),
            Err(e) => return Err(pause_failed(deps, id, e).await),
        }
    } else {
        None
    };
    // Heroku's maintenance mode and scale-down beside the pause and the freeze (the role
    // freeze is what stops the writes; this only starts the dynos' exit sooner). Whatever
    // fails here is undone, Heroku included, before the error is returned.
    let (held, app_side) = tokio::join!(
        hold_and_freeze(deps, spec, source, roles, fleet, clock),
        heroku_down(heroku, spec)
    );
    let failed = match (held, app_side) {
        (Ok(frozen), Ok(())) => return Ok(frozen),
        (Err(e), _) | (Ok(_), Err(e)) => e,
    };
    if let Err(undo_err) = undo(deps, spec, source, heroku, roles).await {
        return Err(StepError::UndoFailed {
            what: "the cutover's freeze".into(),
            cause: failed.to_string(),
            undo: undo_err.to_string(),
        });
    }
    Err(failed)
}

/// The endpoint's tasks paused (proxy mode: `fleet` from [`endpoint::ready`]), then the
/// source's app role frozen and its sessions ended. Returns the sessions ended and the tasks
/// paused.
async fn hold_and_freeze(
    deps: &Deps,
    spec: &MigrationSpec,
    source: &Client,
    roles: &AppRoles,
    fleet: Option<Fleet>,
    clock: &mut Clock,
) -> StepResult<(u64, Vec<EndpointTask>)> {
    let mut paused = Vec::new();
    if let Some(fleet) = fleet {
        // A failed pause is released by freeze_source's undo, with everything else.
        match endpoint::pause_unreleased(deps, spec, fleet, Backend::Source, "ferry:cutover").await
        {
            Ok(fleet) => {
                clock.held = fleet;
                paused = clock.held.tasks.clone();
            }
            Err(e) => return Err(pause_failed(deps, &spec.migration_id, e).await),
        }
        clock.mark("endpoint_paused");
    }
    clock.mark("freeze_start");
    freeze::freeze_role(source, &roles.source).await?;
    let ended = freeze::end_sessions(source, &roles.source).await?;
    clock.mark("source_frozen");
    Ok((ended, paused))
}

/// Audits a pause that failed (the caller's undo releases what it held) and returns its
/// error.
async fn pause_failed(deps: &Deps, id: &str, e: StepError) -> StepError {
    if let Err(audit) = deps
        .audit(
            id,
            "cutover",
            "endpoint_pause",
            Outcome::Failed,
            serde_json::json!({ "cause": e.to_string() }),
            None,
        )
        .await
    {
        return audit;
    }
    e
}

/// Metrics and the audit entry of a cutover that completed.
async fn succeeded(deps: &Deps, id: &str, out: &Output, ended: u64) -> StepResult<()> {
    let mut metrics = Vec::new();
    if out.freeze_ms >= 0 {
        metrics.push(Metric::new(
            "WriteFreezeMilliseconds",
            out.freeze_ms as f64,
            Unit::Milliseconds,
        ));
    }
    if let Some(ms) = out.paused_ms {
        metrics.push(Metric::new(
            "EndpointPausedMilliseconds",
            ms as f64,
            Unit::Milliseconds,
        ));
    }
    if !metrics.is_empty() {
        deps.metrics(id, "cutover", &metrics);
    }
    deps.audit(
        id,
        "cutover",
        "cutover",
        Outcome::Succeeded,
        serde_json::json!({
            "freeze_ms": out.freeze_ms,
            "paused_ms": out.paused_ms,
            "sessions_ended": ended,
            "sequences": out.sequences,
            "counts_checked": out.counts_checked,
            "timeline": out.timeline,
        }),
        Some("cutover/done".into()),
    )
    .await?;
    Ok(())
}

/// What the frozen part works with.
struct Frozen<'a> {
    rep: &'a Replicator,
    /// The target, for the rehearsal's damage fault.
    target: &'a Client,
    heroku: &'a HerokuClient,
    fault: Option<&'a str>,
    /// The endpoint tasks paused before the freeze: the ones retargeted inside it.
    paused: &'a [EndpointTask],
}

/// Asks the worker to apply every change up to `position` (the frozen source's head) and
/// waits for it, at most `cutover.drain_timeout_seconds`.
async fn drain_forward(
    deps: &Deps,
    spec: &MigrationSpec,
    rep: &Replicator,
    position: &str,
    target: &tokio_postgres::Client,
    fault: Option<&str>,
) -> StepResult<()> {
    let limit = std::time::Duration::from_secs(u64::from(spec.cutover.drain_timeout_seconds));
    let damage = async {
        if fault == Some("cutover:damage_target") {
            damage_target(target).await?;
        }
        Ok(())
    };
    match crate::drain::drain_to(
        deps,
        rep,
        &spec.migration_id,
        position,
        limit,
        "ferry:cutover",
        damage,
    )
    .await?
    {
        Ok(()) => Ok(()),
        Err(_) => Err(StepError::DrainTimeout {
            position: position.to_string(),
            seconds: spec.cutover.drain_timeout_seconds,
        }),
    }
}

/// Heroku's maintenance mode on and the spec's process types scaled to zero.
async fn heroku_down(heroku: &ferry_heroku::HerokuClient, spec: &MigrationSpec) -> StepResult<()> {
    if spec.cutover.maintenance_mode {
        heroku.set_maintenance(&spec.heroku.app, true).await?;
    }
    if !spec.cutover.scale_down.is_empty() {
        let updates: Vec<FormationUpdate> = spec
            .cutover
            .scale_down
            .iter()
            .map(|p| FormationUpdate {
                process_type: p.clone(),
                quantity: 0,
                size: None,
            })
            .collect();
        heroku.scale(&spec.heroku.app, &updates).await?;
    }
    Ok(())
}

/// How often the dyno list is read while Heroku's scaled-down dynos exit: every 50 ms for the
/// first second (the app's queries are held), then every 500 ms, so dynos slow to exit do not
/// spend the Platform API's hourly request budget (4,500) on one cutover.
const DYNO_POLL: std::time::Duration = std::time::Duration::from_millis(50);
const DYNO_POLL_SLOW: std::time::Duration = std::time::Duration::from_millis(500);

/// After the scale-down: waits until Heroku lists no dyno of the scaled-down process types
/// that may still run. A dyno's process gets SIGTERM and up to 30 s to exit, and may write to
/// Redis on its way out (a worker pushes its unfinished jobs back, a web dyno finishes its
/// requests); the Redis final marker must come after that. Bounded by the drain's timeout
/// (the AWS side's queries are held meanwhile); past it the cutover is undone.
pub async fn dynos_exited(heroku: &HerokuClient, spec: &MigrationSpec) -> StepResult<()> {
    if spec.cutover.scale_down.is_empty() {
        return Ok(());
    }
    let seconds = spec.cutover.drain_timeout_seconds;
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(u64::from(seconds));
    loop {
        let running: Vec<String> = heroku
            .dynos(&spec.heroku.app)
            .await?
            .into_iter()
            .filter(|d| d.may_run() && spec.cutover.scale_down.contains(&d.process_type))
            .map(|d| d.name)
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(StepError::DrainTimeout {
                position: format!(
                    "the exit of Heroku's dynos {} after the scale-down",
                    running.join(", ")
                ),
                seconds,
            });
        }
        let quick = started.elapsed() < std::time::Duration::from_secs(1);
        tokio::time::sleep(if quick { DYNO_POLL } else { DYNO_POLL_SLOW }).await;
    }
}

/// Everything between the source freeze and the switch, the endpoint's retarget included
/// (a failure anywhere here is undone). Returns (sequences, tables counted).
///
/// Three paths at once, each waiting only on what it needs: the database (the worker's drain
/// to the position, then the sequences and the counts); Redis (Heroku's scaled-down dynos'
/// exit, then the final marker); the endpoint's retarget (its tasks stay paused, so pointing them at the target early sends nothing there
/// until the resume, which waits for the target to be writable; an undo points them back to
/// the source as it resumes them).
async fn frozen_part(
    deps: &Deps,
    spec: &MigrationSpec,
    parts: &Frozen<'_>,
    redis: Option<&mut redis_switch::Sides>,
    clock: &mut Clock,
) -> StepResult<(usize, usize)> {
    let Frozen {
        rep,
        target,
        heroku,
        fault,
        paused,
    } = *parts;
    crate::fault(fault, "cutover:after_freeze")?;
    let position = rep.source_head().await?;
    clock.fact.position = Some(position.clone());
    clock.mark("position");
    let seq = clock.held.seq;
    let retarget = async {
        if !spec.proxied() {
            return Ok::<_, StepError>(None);
        }
        // The tasks paused before the freeze, as listed then: no listing inside the freeze.
        let done = endpoint::converge(
            deps,
            spec,
            paused,
            Goal::Retarget(Backend::Target),
            "ferry:cutover",
            seq,
        )
        .await?;
        Ok(Some((done.reached_at, done.want.seq)))
    };
    let (database, app_side, retargeted) = tokio::join!(
        database_path(deps, spec, rep, &position, target, fault),
        redis_path(heroku, spec, redis),
        retarget
    );
    let (sequences, counts, mut marks) = database?;
    marks.extend(app_side?);
    if let Some((at, seq)) = retargeted? {
        marks.push(("endpoint_retargeted", at));
        clock.held.seq = Some(seq);
    }
    marks.sort_by_key(|(_, at)| *at);
    clock
        .fact
        .timeline
        .extend(marks.into_iter().map(|(n, at)| (n.to_string(), at)));
    crate::fault(fault, "cutover:before_switch")?;
    Ok((sequences, counts))
}

type Marks = Vec<(&'static str, DateTime<Utc>)>;

/// The worker's drain to `position`, then the sequences and (spec `verify: counts`) the
/// counts: (sequences, tables counted, marks).
async fn database_path(
    deps: &Deps,
    spec: &MigrationSpec,
    rep: &Replicator,
    position: &str,
    target: &Client,
    fault: Option<&str>,
) -> StepResult<(usize, usize, Marks)> {
    drain_forward(deps, spec, rep, position, target, fault).await?;
    let mut marks = vec![("drained", Utc::now())];
    let sequences = rep.sync_sequences(SEQUENCE_GAP).await?;
    marks.push(("sequences_synced", Utc::now()));
    let counts = match spec.cutover.verify {
        CutoverVerify::None => 0,
        CutoverVerify::Counts => count_check(rep).await?,
    };
    if counts > 0 {
        marks.push(("counts_checked", Utc::now()));
    }
    Ok((sequences, counts, marks))
}

/// With `redis`, after Heroku's scale-down (begun beside the freeze): the scaled-down dynos'
/// exit, then the Redis final marker. The endpoint's proxy is paused, so every change the AWS fleet
/// made is on Heroku Redis, and Heroku's dynos have exited, so none is made after it: the
/// marker carries every change and ends the forward sync.
async fn redis_path(
    heroku: &HerokuClient,
    spec: &MigrationSpec,
    redis: Option<&mut redis_switch::Sides>,
) -> StepResult<Marks> {
    let Some(redis) = redis else {
        return Ok(Vec::new());
    };
    // One bound for the dynos' exit and the drain together: the AWS side's queries are held
    // meanwhile, so the two waits do not each get the whole drain timeout.
    let started = std::time::Instant::now();
    let bound = std::time::Duration::from_secs(u64::from(spec.cutover.drain_timeout_seconds));
    dynos_exited(heroku, spec).await?;
    let mut marks = vec![("heroku_dynos_exited", Utc::now())];
    marks.push(("redis_drain_started", Utc::now()));
    redis
        .drain(
            &format!("{}:cutover", spec.migration_id),
            bound.saturating_sub(started.elapsed()),
        )
        .await?;
    marks.push(("redis_drained", Utc::now()));
    Ok(marks)
}

/// The rehearsal's `cutover:damage_target` fault: while the worker drains, one row of the
/// first table (by name) that has rows and that no foreign key references is deleted on the
/// target behind the worker's back — what the exact comparison after the freeze must catch.
async fn damage_target(target: &Client) -> StepResult<()> {
    let rows = target
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND NOT c.relispartition
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferry')
                AND n.nspname NOT LIKE 'pg\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_constraint f
                                 WHERE f.contype = 'f' AND f.confrelid = c.oid)
              ORDER BY n.nspname, c.relname",
            &[],
        )
        .await
        .map_err(|source| ferry_pg::PgError::Query {
            what: "list the target's tables (damage fault)",
            source,
        })?;
    for r in rows {
        let table: String = r.get(0);
        let n = target
            .execute(
                &format!("DELETE FROM {table} WHERE ctid = (SELECT ctid FROM {table} LIMIT 1)"),
                &[],
            )
            .await
            .map_err(|source| ferry_pg::PgError::Query {
                what: "delete a target row (damage fault)",
                source,
            })?;
        if n > 0 {
            tracing::warn!(%table, "rehearsal fault: one row deleted on the target during the drain");
            return Ok(());
        }
    }
    Ok(())
}

/// Compares row counts of every table on both sides.
async fn count_check(rep: &Replicator) -> StepResult<usize> {
    let checks = rep.count_rows().await?;
    let differ: Vec<String> = checks
        .iter()
        .filter(|(_, s, t)| s != t)
        .map(|(name, s, t)| format!("{name} (source {s}, target {t})"))
        .collect();
    if differ.is_empty() {
        Ok(checks.len())
    } else {
        Err(StepError::VerifyMismatch {
            tables: differ.join("; "),
        })
    }
}

/// Points the app at the target, unfreezes the target for it, turns the stream around.
async fn finish(
    deps: &Deps,
    spec: &MigrationSpec,
    target: &Client,
    target_url: &PgUrl,
    roles: &AppRoles,
    clock: &mut Clock,
) -> StepResult<Output> {
    let id = &spec.migration_id;
    if clock.fact.state != CutoverState::Switched {
        if !spec.proxied() {
            // The URL read from SSM before the freeze: no parameter read inside it.
            deps.params
                .put_secure(&spec.app_database_url_param(), target_url.expose_secret())
                .await?;
        }
        clock.mark("switched");
        clock.fact.state = CutoverState::Switched;
        if spec.proxied() {
            // The record and the unfreeze at once: until the resume nothing reaches the
            // target (the endpoint is paused and is the app's only way there), so a crash
            // before the record lands is undone like any other inside the freeze.
            let (saved, unfrozen) = tokio::join!(
                clock.save(deps, id),
                freeze::unfreeze_role(target, &roles.target)
            );
            saved?;
            unfrozen?;
        } else {
            clock.save(deps, id).await?;
            freeze::unfreeze_role(target, &roles.target).await?;
        }
    } else {
        freeze::unfreeze_role(target, &roles.target).await?;
    }
    clock.mark("target_writable");
    if spec.proxied() {
        let (held_ms, at) = resume_on(deps, spec, Backend::Target, "cutover", &clock.held).await?;
        clock.fact.held_ms = held_ms;
        clock.mark_at("endpoint_resumed", at);
    } else {
        for svc in &spec.cutover.ecs_services {
            if let Some((cluster, service)) = svc.split_once('/') {
                deps.compute.redeploy(cluster, service).await?;
            }
        }
        if !spec.cutover.ecs_services.is_empty() {
            clock.mark("services_redeployed");
        }
    }
    deps.store
        .send_command(id, WorkerCommand::Reverse, "ferry:cutover", Utc::now())
        .await?;
    clock.mark("reverse_commanded");
    clock.fact.state = CutoverState::Done;
    clock.save(deps, id).await?;
    deps.enter(id, Phase::RollbackWindow).await?;
    Ok(Output::from_fact(&clock.fact))
}

/// After a switch: the endpoint resumes on `backend`; returns the longest hold a task
/// reported and when the tasks were known resumed. The data is there already, so a task
/// that does not confirm is not a reason to go back: the state is set again once, and a task
/// that still does not answer converges when it next reads it (a replaced task starts there).
pub(crate) async fn resume_on(
    deps: &Deps,
    spec: &MigrationSpec,
    backend: Backend,
    step: &str,
    held: &Fleet,
) -> StepResult<(Option<i64>, chrono::DateTime<Utc>)> {
    for attempt in 1..=2 {
        // First the tasks this attempt paused, told while the state is stored (no listing in
        // the window; a task started since reads the state itself), then every live one.
        let (tasks, after) = match attempt {
            1 if !held.tasks.is_empty() => (held.tasks.clone(), held.seq),
            _ => (endpoint::live_tasks(deps, &spec.heroku.app).await?, None),
        };
        let by = format!("ferry:{step}");
        match endpoint::converge(deps, spec, &tasks, Goal::Resume(backend), &by, after).await {
            Ok(done) => return Ok((done.longest_hold_ms(), done.reached_at)),
            Err(e @ StepError::Store(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "endpoint resume on the {backend} not confirmed");
                deps.audit(
                    &spec.migration_id,
                    step,
                    "endpoint_resume",
                    Outcome::Info,
                    serde_json::json!({ "attempt": attempt, "cause": e.to_string() }),
                    None,
                )
                .await?;
            }
        }
    }
    Ok((None, Utc::now()))
}

/// Undoes a freeze that did not switch: source writable, the endpoint resumed on the source,
/// Heroku as it was. Idempotent.
pub(crate) async fn undo(
    deps: &Deps,
    spec: &MigrationSpec,
    source: &Client,
    heroku: &HerokuClient,
    roles: &AppRoles,
) -> StepResult<()> {
    // The source first, so the queries the endpoint held run on a writable database.
    freeze::unfreeze_role(source, &roles.source).await?;
    if spec.proxied() {
        endpoint::release(deps, spec, Backend::Source, "ferry:cutover-undo").await?;
    }
    restore_heroku(deps, spec, heroku).await
}

/// Puts maintenance mode and the formation back as they were before the cutover.
pub(crate) async fn restore_heroku(
    deps: &Deps,
    spec: &MigrationSpec,
    heroku: &HerokuClient,
) -> StepResult<()> {
    let Some(before): Option<HerokuBefore> = facts::get(
        deps.store.as_ref(),
        &spec.migration_id,
        facts::HEROKU_BEFORE,
    )
    .await?
    else {
        return Ok(());
    };
    let updates: Vec<FormationUpdate> = spec
        .cutover
        .scale_down
        .iter()
        .filter_map(|p| {
            before.formation.get(p).map(|q| FormationUpdate {
                process_type: p.clone(),
                quantity: *q,
                size: None,
            })
        })
        .collect();
    if !updates.is_empty() {
        heroku.scale(&spec.heroku.app, &updates).await?;
    }
    let app = heroku.app(&spec.heroku.app).await?;
    if app.maintenance != before.maintenance {
        heroku
            .set_maintenance(&spec.heroku.app, before.maintenance)
            .await?;
    }
    Ok(())
}
