//! Rollback, reached by the state machine's Catch from any step. It reads what was done (the
//! phase and the facts) and undoes exactly that: traffic back to Heroku and the canary rule
//! deleted; after a cutover the database moved back only once the reverse stream has applied
//! every write made on AWS (endpoint paused, target frozen, drained, sequences synced, the
//! endpoint retargeted to the source — or DATABASE_URL back in redeploy mode — source
//! unfrozen, endpoint resumed); a frozen source unfrozen; Heroku maintenance and dynos as they were; the
//! worker stopped and capture removed; the target role writable again; the lock released.
//! Idempotent, and it touches nothing of a migration another execution runs.

use std::time::Duration;

use chrono::Utc;
use ferry_core::{
    StepErrorName,
    endpoint::Backend,
    state::{Outcome, Phase, WorkerCommand, WorkerPhase},
    traffic::Weights,
};
use ferry_pg::freeze;
use serde::{Deserialize, Serialize};

use crate::{
    Deps, StepError, StepResult,
    canary::rule_name,
    cutover::{self, SEQUENCE_GAP},
    endpoint::{self, Goal},
    facts::{self, AppRoles, CanaryFact, CutoverFact, CutoverState},
    replication,
};

/// The error the Catch recorded. Step Functions writes `null` for a missing cause (a task
/// failed without one), so both may be null.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtError {
    /// Its name.
    #[serde(rename = "Error", default, deserialize_with = "null_as_empty")]
    pub error: String,
    /// Its message.
    #[serde(rename = "Cause", default, deserialize_with = "null_as_empty")]
    pub cause: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Input.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// The migration (the spec's id; its record may not exist when preflight failed early).
    pub migration_id: String,
    /// `$$.Execution.Id`: only this execution's migration is rolled back.
    pub execution_arn: String,
    /// What failed.
    #[serde(default)]
    pub error: Option<CaughtError>,
}

/// Output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The phase the migration was in.
    pub from_phase: Option<String>,
    /// What was undone, in order.
    pub undone: Vec<String>,
    /// The error that caused the rollback.
    pub error: Option<CaughtError>,
}

/// Runs the rollback.
pub async fn run(deps: &Deps, input: Input) -> StepResult<Output> {
    let id = &input.migration_id;
    let store = deps.store.as_ref();
    let mut out = Output {
        from_phase: None,
        undone: Vec::new(),
        error: input.error.clone(),
    };
    let rec = match store.migration(id).await {
        Ok(r) => r,
        Err(ferry_core::StoreError::NotFound { .. }) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    if rec.execution_arn.as_deref() != Some(input.execution_arn.as_str()) {
        // Another execution's migration (e.g. this one failed with AlreadyRunning).
        return Ok(out);
    }
    let spec = &rec.spec;
    if rec.phase.is_final() {
        out.from_phase = Some(rec.phase.to_string());
        store.release_app_lock(&spec.heroku.app, id).await?;
        return Ok(out);
    }
    let from = facts::put_once(
        store,
        id,
        facts::ROLLBACK_FROM,
        &rec.phase.as_str().to_string(),
    )
    .await?;
    out.from_phase = Some(from.clone());
    deps.enter(id, Phase::RollingBack).await?;

    let canary: Option<CanaryFact> = facts::get(store, id, facts::CANARY).await?;
    if deps.schedule.delete_rule(&rule_name(deps, id)).await? {
        out.undone.push("canary rule deleted".into());
    }
    let cut: Option<CutoverFact> = facts::get(store, id, facts::CUTOVER).await?;
    // Traffic first: users go back to Heroku's app whatever else happens — except after a
    // cutover through the endpoint, where the AWS fleet moves back to the source without a
    // failed request while Heroku's dynos are still in maintenance and scaled down, so
    // traffic follows once the database and the Heroku app are back.
    let database_first = spec.proxied() && cut.as_ref().is_some_and(|c| c.state.on_target());
    if !database_first {
        traffic_back(deps, spec, canary.is_some(), &mut out).await?;
    }
    let roles: Option<AppRoles> = facts::get(store, id, facts::APP_ROLES).await?;
    if let Some(roles) = &roles {
        undo_on_databases(deps, spec, cut.as_ref(), roles, &mut out).await?;
    }
    if database_first {
        traffic_back(deps, spec, canary.is_some(), &mut out).await?;
    }
    deps.enter(id, Phase::RolledBack).await?;
    store.release_app_lock(&spec.heroku.app, id).await?;
    report(deps, spec, &from, input.error.as_ref(), &out).await?;
    Ok(out)
}

/// The rollback's audit entry and its notice to the approvals topic (a notice that cannot be
/// sent is logged, not an error: the rollback is done).
async fn report(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    from: &str,
    error: Option<&CaughtError>,
    out: &Output,
) -> StepResult<()> {
    let why = error
        .map(|e| format!("{}: {}", e.error, e.cause))
        .unwrap_or_else(|| "requested".into());
    deps.audit(
        &spec.migration_id,
        "rollback",
        "rollback",
        Outcome::Succeeded,
        serde_json::json!({ "from": from, "undone": out.undone, "cause": why }),
        Some("rollback/done".into()),
    )
    .await?;
    let message = format!(
        "Ferry migration {} of Heroku app {} was rolled back from phase {from}.\nCause: {why}\nUndone:\n- {}\n",
        spec.migration_id,
        spec.heroku.app,
        out.undone.join("\n- ")
    );
    if let Err(e) = deps
        .notifier
        .publish(
            &spec.approvals.sns_topic_arn,
            &format!("Ferry: {} rolled back", spec.heroku.app),
            &message,
        )
        .await
    {
        tracing::warn!(error = %e, name = e.step_error_name(), "rollback notice not sent");
    }
    Ok(())
}

/// What the rollback undoes where Ferry touched the databases (with the app's roles known):
/// the database back on Heroku Postgres after a switch, or the freeze undone; ElastiCache's
/// queued jobs handed back; Heroku's app restored; the worker stopped; the target writable.
async fn undo_on_databases(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    cut: Option<&CutoverFact>,
    roles: &AppRoles,
    out: &mut Output,
) -> StepResult<()> {
    let (source_url, target_url) = deps.urls(spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    let heroku = deps.heroku(spec).await?;
    match cut.map(|c| c.state) {
        Some(CutoverState::Switched | CutoverState::Done) => {
            database_back(
                deps,
                spec,
                roles,
                &source,
                &target,
                &source_url,
                &target_url,
            )
            .await?;
            out.undone.push(
                "database back on Heroku Postgres (reverse stream drained, DATABASE_URL restored)"
                    .into(),
            );
        }
        Some(CutoverState::Frozen) => {
            cutover::undo(deps, spec, &source, &heroku, roles).await?;
            out.undone
                .push("source writable again (freeze undone)".into());
        }
        _ => {}
    }
    // Jobs the AWS side enqueued on ElastiCache go back to Heroku's queues, each once
    // (again on a retry: the hand-over moves only what is left).
    if cut
        .as_ref()
        .is_some_and(|c| c.state.on_target() || c.state == CutoverState::RolledBack)
        && let Some(mut r) = crate::redis_switch::open(deps, spec, Backend::Target).await?
    {
        let jobs = r.hand_over().await?;
        out.undone
            .push(format!("{jobs} Redis queue job(s) handed back to Heroku"));
    }
    cutover::restore_heroku(deps, spec, &heroku).await?;
    if replication::stop_worker(deps, &spec.migration_id, Duration::from_secs(30)).await? {
        out.undone
            .push("worker stopped, capture objects removed".into());
    }
    if freeze::is_frozen(&target, &roles.target).await? {
        freeze::unfreeze_role(&target, &roles.target).await?;
        out.undone.push("target role writable again".into());
    }
    Ok(())
}

/// Route 53 all on Heroku: the app's own record back as preflight found it (the pair deleted
/// in the same batch), or, for a name that had none, the pair at 0 % on AWS.
async fn traffic_back(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    canary_ran: bool,
    out: &mut Output,
) -> StepResult<()> {
    let dns: Option<facts::DnsFact> =
        facts::get(deps.store.as_ref(), &spec.migration_id, facts::DNS).await?;
    let weights = deps.router.weights(&spec.traffic).await?;
    let was = weights.map_or(0.0, |w| w.aws_share_percent());
    match (weights, dns.and_then(|d| d.replaced)) {
        (Some(_), Some(replaced)) => {
            let restored = deps.router.restore(&spec.traffic, &replaced).await?;
            if restored {
                out.undone.push(format!(
                    "traffic back to Heroku (was {was:.0}% on AWS): {} is its CNAME to {} again",
                    spec.traffic.record_name, replaced.value
                ));
            }
        }
        (Some(w), None) if w.aws > 0 => {
            deps.router
                .set_weights(&spec.traffic, Weights::for_aws_percent(0))
                .await?;
            out.undone
                .push(format!("traffic back to Heroku (was {was:.0}% on AWS)"));
        }
        _ if canary_ran => out.undone.push("traffic already on Heroku".into()),
        _ => {}
    }
    Ok(())
}

/// After a cutover: pause the endpoint (proxy mode), freeze the target for the app, let the
/// reverse stream apply everything, point the app back at the source (endpoint retargeted, or
/// DATABASE_URL moved back), unfreeze the source, resume the endpoint. If the stream is behind, the target is
/// unfrozen again and the error is retryable (no write is lost by waiting).
async fn database_back(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    roles: &AppRoles,
    source: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    source_url: &ferry_pg::PgUrl,
    target_url: &ferry_pg::PgUrl,
) -> StepResult<()> {
    let store = deps.store.as_ref();
    let id = &spec.migration_id;
    // The reverse stream must run before anything is frozen.
    let progress = store.progress(id).await?;
    if progress.as_ref().map(|p| p.phase) != Some(WorkerPhase::Reverse) {
        let last = store.command(id).await?;
        if !matches!(last.map(|c| c.command), Some(WorkerCommand::Reverse)) {
            store
                .send_command(id, WorkerCommand::Reverse, "ferry:rollback", Utc::now())
                .await?;
        }
        return Err(StepError::ReverseBehind {
            waiting: progress.and_then(|p| p.lag_changes).unwrap_or(0),
        });
    }
    let proxy = spec.proxied();
    // Redis sessions opened before anything is frozen.
    let mut redis = crate::redis_switch::open(deps, spec, Backend::Target).await?;
    // This attempt's marks; kept in the cutover fact once it succeeds.
    let mut marks: Vec<(String, chrono::DateTime<Utc>)> = Vec::new();
    let mut mark = |name: &str| marks.push((name.to_string(), Utc::now()));
    // A pause that fails is resumed and retried later (nothing frozen).
    let mut paused = if proxy {
        let fleet = endpoint::ready(deps, spec, Backend::Target).await?;
        mark("rollback_pause_requested");
        endpoint::pause_tasks(deps, spec, fleet, Backend::Target, "ferry:rollback").await?
    } else {
        mark("rollback_pause_requested");
        endpoint::Fleet::default()
    };
    mark("rollback_paused");
    freeze::freeze_role(target, &roles.target).await?;
    mark("target_frozen");
    freeze::end_sessions(target, &roles.target).await?;
    let capture = cutover::installed_capture(source).await?;
    let rep = cutover::replicator(deps, spec, source_url, target_url, capture).await?;
    let position = rep.source_head().await?;
    // Whatever fails from here to the retarget leaves the app on the target: writable there
    // again, held queries run there.
    if let Err(e) =
        drain_and_retarget(deps, spec, &rep, &position, redis.as_mut(), &mut paused).await
    {
        freeze::unfreeze_role(target, &roles.target).await?;
        if proxy {
            endpoint::release(deps, spec, Backend::Target, "ferry:rollback").await?;
        }
        return Err(e);
    }
    mark("rollback_drained");
    // Sequences on the source must be past anything the target handed out.
    ferry_replicator::verify::sync_sequences(target, source, SEQUENCE_GAP).await?;
    if !proxy {
        // The URL read from SSM when the rollback began: no parameter read while the target
        // is frozen.
        deps.params
            .put_secure(&spec.app_database_url_param(), source_url.expose_secret())
            .await?;
        for svc in &spec.cutover.ecs_services {
            if let Some((cluster, service)) = svc.split_once('/') {
                deps.compute.redeploy(cluster, service).await?;
            }
        }
    }
    mark("rollback_retargeted");
    freeze::unfreeze_role(source, &roles.source).await?;
    mark("source_writable");
    let mut held_ms = None;
    if proxy {
        let (held, at) =
            cutover::resume_on(deps, spec, Backend::Source, "rollback", &paused).await?;
        held_ms = held;
        marks.push(("rollback_resumed".into(), at));
    }
    let mut fact: CutoverFact = facts::get(store, id, facts::CUTOVER)
        .await?
        .unwrap_or_default();
    let old = fact.clone();
    fact.state = CutoverState::RolledBack;
    fact.rollback_held_ms = held_ms;
    fact.timeline.extend(marks);
    fact.timeline.push(("rolled_back".into(), Utc::now()));
    facts::swap(store, id, facts::CUTOVER, Some(&old), &fact).await?;
    Ok(())
}

/// Inside the target's freeze, at once: the reverse stream drained to `position`, (with
/// `redis`) the reverse Redis sync drained, and (proxy mode) the endpoint's tasks pointed at
/// the source — still paused, so nothing runs there before the source is writable.
async fn drain_and_retarget(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    rep: &ferry_replicator::engine::Replicator,
    position: &str,
    redis: Option<&mut crate::redis_switch::Sides>,
    paused: &mut endpoint::Fleet,
) -> StepResult<()> {
    let id = &spec.migration_id;
    let limit = Duration::from_secs(u64::from(spec.cutover.drain_timeout_seconds) * 4);
    let drain = crate::drain::drain_to(deps, rep, id, position, limit, "ferry:rollback", async {
        Ok(())
    });
    // ElastiCache's writes back on Heroku Redis (the reverse sync drains and ends).
    let kv = async {
        let Some(r) = redis else { return Ok(()) };
        let bound = Duration::from_secs(u64::from(spec.cutover.drain_timeout_seconds));
        r.drain(&format!("{id}:rollback"), bound)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "the Redis reverse sync did not drain; staying on the target");
                StepError::ReverseBehind { waiting: 0 }
            })
    };
    let retarget = async {
        if !spec.proxied() {
            return Ok(None);
        }
        // The tasks paused before the target froze: no listing while it is frozen.
        endpoint::converge(
            deps,
            spec,
            &paused.tasks,
            Goal::Retarget(Backend::Source),
            "ferry:rollback",
            paused.seq,
        )
        .await
        .map(|done| Some(done.want.seq))
    };
    let (drained, kv_done, retargeted) = tokio::join!(drain, kv, retarget);
    if let Err(waiting) = drained? {
        return Err(StepError::ReverseBehind { waiting });
    }
    kv_done?;
    if let Some(seq) = retargeted? {
        paused.seq = Some(seq);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Input;

    #[test]
    fn a_caught_error_without_a_cause_is_accepted() {
        let input: Input = serde_json::from_value(serde_json::json!({
            "migration_id": "m", "execution_arn": "e",
            "error": {"Error": "Ferry.Rejected", "Cause": null}
        }))
        .expect("null cause");
        assert_eq!(
            input.error.map(|e| e.error).as_deref(),
            Some("Ferry.Rejected")
        );
    }
}

#[cfg(test)]
mod decisions {
    //! The rollback's decisions before any database was touched (no app roles recorded yet),
    //! on in-memory services: what it undoes, in what order, and that it touches nothing of
    //! another execution's migration.

    use ferry_core::{
        MigrationStore,
        state::Phase,
        traffic::{ReplacedRecord, Weights},
    };

    use super::*;
    use crate::{
        canary,
        memory::{EXECUTION, World, spec_with},
    };

    fn input(w: &World, execution: &str) -> Input {
        Input {
            migration_id: w.spec.migration_id.clone(),
            execution_arn: execution.into(),
            error: Some(CaughtError {
                error: "Ferry.CanaryUnhealthy".into(),
                cause: "alarms in ALARM: acme-5xx".into(),
            }),
        }
    }

    async fn mid_canary(replaced: Option<ReplacedRecord>) -> World {
        let spec = spec_with(|v| {
            v["traffic"]["health"] = serde_json::json!({"alarm_names": ["acme-5xx"]});
        });
        let w = World::at(spec, Phase::AwaitingTrafficApproval).await;
        w.alarms.set("acme-5xx", false);
        facts::put_once(
            w.store.as_ref(),
            &w.spec.migration_id,
            facts::DNS,
            &facts::DnsFact {
                replaced_ttl_seconds: replaced.as_ref().map(|r| r.ttl),
                replaced,
            },
        )
        .await
        .expect("dns fact");
        canary::start(
            &w.deps,
            canary::StartInput {
                migration_id: w.spec.migration_id.clone(),
                task_token: "t".into(),
            },
        )
        .await
        .expect("canary start");
        w
    }

    #[tokio::test]
    async fn a_rollback_mid_canary_puts_the_cname_back_deletes_the_rule_and_frees_the_app() {
        let cname = ReplacedRecord {
            value: "acme-prod-8f3a.herokudns.com".into(),
            ttl: 300,
        };
        let w = mid_canary(Some(cname.clone())).await;
        let out = run(&w.deps, input(&w, EXECUTION)).await.expect("rollback");
        assert_eq!(out.from_phase.as_deref(), Some("shifting_traffic"));
        assert_eq!(out.undone[0], "canary rule deleted");
        assert!(
            out.undone[1].starts_with("traffic back to Heroku"),
            "{:?}",
            out.undone
        );
        let others = w.router.others();
        assert_eq!(others.len(), 1, "the pair is gone, the CNAME is back");
        assert_eq!(
            (others[0].values[0].as_str(), others[0].ttl),
            (cname.value.as_str(), Some(300))
        );
        assert!(w.schedule.rules().is_empty());
        assert_eq!(w.phase().await, Phase::RolledBack);
        assert_eq!(
            w.store.app_lock(&w.spec.heroku.app).await.expect("lock"),
            None,
            "the app is free for another migration"
        );
        let notice = &w.notifier.published()[0];
        assert!(
            notice
                .message
                .contains("rolled back from phase shifting_traffic")
                && notice.message.contains("Ferry.CanaryUnhealthy"),
            "{}",
            notice.message
        );

        // The state machine's Retry runs it again: nothing more is undone.
        let again = run(&w.deps, input(&w, EXECUTION)).await.expect("again");
        assert_eq!(again.from_phase.as_deref(), Some("rolled_back"));
        assert!(again.undone.is_empty(), "{:?}", again.undone);
        assert_eq!(w.router.others().len(), 1);
    }

    #[tokio::test]
    async fn a_new_name_with_no_record_to_restore_goes_to_zero_on_aws() {
        let w = mid_canary(None).await;
        run(&w.deps, input(&w, EXECUTION)).await.expect("rollback");
        assert_eq!(
            w.router.written().last(),
            Some(&Weights::for_aws_percent(0))
        );
        assert_eq!(w.phase().await, Phase::RolledBack);
    }

    #[tokio::test]
    async fn another_executions_migration_is_left_alone() {
        let w = mid_canary(None).await;
        let other = "arn:aws:states:us-east-1:000000000000:execution:ferry:run-2";
        let out = run(&w.deps, input(&w, other)).await.expect("rollback");
        assert!(out.undone.is_empty() && out.from_phase.is_none(), "{out:?}");
        assert_eq!(w.phase().await, Phase::ShiftingTraffic);
        assert_eq!(w.schedule.rules().len(), 1, "its canary still runs");
        assert!(
            w.store
                .app_lock(&w.spec.heroku.app)
                .await
                .expect("lock")
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_migration_that_never_got_a_record_has_nothing_to_undo() {
        let w = mid_canary(None).await;
        let mut missing = input(&w, EXECUTION);
        missing.migration_id = "never-recorded".into();
        let out = run(&w.deps, missing).await.expect("rollback");
        assert_eq!(out.from_phase, None);
        assert!(out.undone.is_empty());
    }
}
