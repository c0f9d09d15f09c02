//! Step 6: the canary. [`start`] runs as a `.waitForTaskToken` task: it sets the first weight,
//! keeps the token and creates an EventBridge rule whose ticks call [`tick`]. Each tick checks
//! the health gate, then moves one step, or finishes (rule deleted, task succeeded), or sends
//! all traffic back to Heroku (rule deleted, task failed with `Ferry.CanaryUnhealthy`).
//!
//! A duplicate tick (EventBridge delivers at least once) does not skip a weight: a move is a
//! compare-and-set of the canary fact, and a tick within half an interval of the last move
//! does nothing.

use std::time::Duration;

use ferry_core::{
    StepErrorName,
    metrics::{Metric, Unit},
    spec::MigrationSpec,
    state::{Outcome, Phase},
    traffic::Weights,
};
use serde::{Deserialize, Serialize};

use crate::{
    Deps, StepError, StepResult,
    facts::{self, CanaryFact, CanaryState},
};

/// Input of the start.
#[derive(Debug, Clone, Deserialize)]
pub struct StartInput {
    /// The migration.
    pub migration_id: String,
    /// `$$.Task.Token`.
    pub task_token: ferry_core::secret::Secret,
}

/// What a start or a tick did (written as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The first weight set and the ticks scheduled.
    Started,
    /// One step further.
    Moved,
    /// At the last step, waiting out the DNS hold.
    Holding,
    /// The canary ended: all traffic on AWS, the waiting task succeeded.
    Completed,
    /// The health gate failed: all traffic back on Heroku, the waiting task failed.
    Unhealthy,
    /// A repeated tick (too soon after the last move, or a move another tick made).
    Duplicate,
    /// A tick of a canary that is not running: its rule removed.
    Idle,
}

/// Output of the start and of each tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// What happened.
    pub action: Action,
    /// Percent of traffic on AWS now.
    pub aws_percent: u32,
    /// The rule's name.
    pub rule: String,
}

/// Input of a tick (the rule's fixed input).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TickInput {
    /// The migration.
    pub migration_id: String,
    /// Seconds between ticks (read by a local scheduler; EventBridge uses the rule's rate).
    pub interval_seconds: u32,
}

/// The EventBridge rule of a migration (at most 64 characters).
pub fn rule_name(deps: &Deps, migration_id: &str) -> String {
    // EventBridge rule names hold 64 characters; migration ids up to 80.
    ferry_core::cloud::bounded_name(&deps.settings.rule_prefix, migration_id, 64)
}

fn interval_seconds(spec: &MigrationSpec) -> u32 {
    spec.timing
        .canary_interval_seconds
        .unwrap_or(spec.traffic.step_interval_minutes * 60)
}

/// Sets the first weight and schedules the ticks.
pub async fn start(deps: &Deps, input: StartInput) -> StepResult<Output> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.enter(id, Phase::ShiftingTraffic).await?;
    let spec = &rec.spec;
    let rule = rule_name(deps, id);
    let first = spec.traffic.steps[0];
    let fresh = CanaryFact {
        index: 0,
        aws_percent: first,
        moved_at: deps.clock.now(),
        state: CanaryState::Running,
        reason: None,
        task_token: input.task_token.clone(),
        interval_seconds: interval_seconds(spec),
    };
    let store = deps.store.as_ref();
    let fact = match facts::get::<CanaryFact>(store, id, facts::CANARY).await? {
        None => {
            deps.router
                .set_weights(&spec.traffic, Weights::for_aws_percent(first))
                .await?;
            weight_metric(deps, id, first);
            facts::put_once(store, id, facts::CANARY, &fresh).await?
        }
        // A retried start: keep the weight reached, take the new token.
        Some(old) => {
            let new = CanaryFact {
                task_token: input.task_token.clone(),
                ..old.clone()
            };
            facts::swap(store, id, facts::CANARY, Some(&old), &new).await?;
            new
        }
    };
    deps.schedule
        .put_rate_rule(
            &rule,
            spec.traffic.step_interval_minutes,
            &deps.settings.canary_function_arn,
            &serde_json::to_value(TickInput {
                migration_id: id.clone(),
                interval_seconds: fact.interval_seconds,
            })
            .unwrap_or_default(),
        )
        .await?;
    deps.audit(
        id,
        "canary",
        "set_weights",
        Outcome::Info,
        serde_json::json!({ "aws_percent": fact.aws_percent, "step": fact.index }),
        Some(format!("canary/step/{}", fact.index)),
    )
    .await?;
    Ok(Output {
        action: Action::Started,
        aws_percent: fact.aws_percent,
        rule,
    })
}

/// The health gate: alarms in ALARM or missing, or the health URL not answering 2xx.
pub async fn health(deps: &Deps, spec: &MigrationSpec) -> StepResult<Result<(), String>> {
    let gate = &spec.traffic.health;
    let mut problems = Vec::new();
    if !gate.alarm_names.is_empty() {
        let states = deps.alarms.states(&gate.alarm_names).await?;
        if !states.firing.is_empty() {
            problems.push(format!("alarms in ALARM: {}", states.firing.join(", ")));
        }
        if !states.missing.is_empty() {
            problems.push(format!(
                "alarms that do not exist: {}",
                states.missing.join(", ")
            ));
        }
    }
    if let Some(url) = &gate.url {
        match deps
            .http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => problems.push(format!("{url} answered {}", r.status())),
            Err(e) => problems.push(format!("{url} did not answer: {}", e.without_url())),
        }
    }
    Ok(if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    })
}

/// One tick of the canary.
pub async fn tick(deps: &Deps, input: TickInput) -> StepResult<Output> {
    let id = &input.migration_id;
    let rule = rule_name(deps, id);
    let store = deps.store.as_ref();
    let rec = deps.record(id).await?;
    let spec = &rec.spec;
    let Some(fact) = facts::get::<CanaryFact>(store, id, facts::CANARY).await? else {
        deps.schedule.delete_rule(&rule).await?;
        return Ok(idle(rule, 0));
    };
    if fact.state != CanaryState::Running || rec.phase != Phase::ShiftingTraffic {
        // A stale rule (the canary ended, or the migration moved on): remove it.
        deps.schedule.delete_rule(&rule).await?;
        return Ok(idle(rule, fact.aws_percent));
    }
    let since = (deps.clock.now() - fact.moved_at).num_milliseconds() as f64 / 1000.0;
    if since < f64::from(fact.interval_seconds) / 2.0 {
        return Ok(Output {
            action: Action::Duplicate,
            aws_percent: fact.aws_percent,
            rule,
        });
    }
    if let Err(reason) = health(deps, spec).await? {
        return unhealthy(deps, spec, fact, rule, reason).await;
    }
    let steps = &spec.traffic.steps;
    if fact.index + 1 >= steps.len() {
        return complete(deps, spec, fact, rule, since).await;
    }
    let next = fact.index + 1;
    let percent = steps[next];
    // Weights first, then the fact: a crash between them repeats the same move, never skips.
    deps.router
        .set_weights(&spec.traffic, Weights::for_aws_percent(percent))
        .await?;
    let moved = CanaryFact {
        index: next,
        aws_percent: percent,
        moved_at: deps.clock.now(),
        ..fact.clone()
    };
    if !facts::swap(store, id, facts::CANARY, Some(&fact), &moved).await? {
        return Ok(Output {
            action: Action::Duplicate,
            aws_percent: percent,
            rule,
        });
    }
    // After the swap: a tick that lost the race to a duplicate reports no second move.
    weight_metric(deps, id, percent);
    deps.audit(
        id,
        "canary",
        "set_weights",
        Outcome::Info,
        serde_json::json!({ "aws_percent": percent, "step": next }),
        Some(format!("canary/step/{next}")),
    )
    .await?;
    Ok(Output {
        action: Action::Moved,
        aws_percent: percent,
        rule,
    })
}

/// The last step reached: hold 100 % for the DNS TTL, then end the canary (rule deleted,
/// the waiting task resumed).
async fn complete(
    deps: &Deps,
    spec: &MigrationSpec,
    fact: CanaryFact,
    rule: String,
    since: f64,
) -> StepResult<Output> {
    let id = &spec.migration_id;
    let store = deps.store.as_ref();
    // Resolvers that cached an answer before the last move may still send users to
    // Heroku: the cutover is not asked for until the longest TTL involved has passed.
    let hold = dns_hold_seconds(deps, spec).await?;
    if since < f64::from(hold) {
        return Ok(Output {
            action: Action::Holding,
            aws_percent: fact.aws_percent,
            rule,
        });
    }
    let done = CanaryFact {
        state: CanaryState::Done,
        ..fact.clone()
    };
    if !facts::swap(store, id, facts::CANARY, Some(&fact), &done).await? {
        return Ok(idle(rule, fact.aws_percent));
    }
    deps.schedule.delete_rule(&rule).await?;
    deps.audit(
        id,
        "canary",
        "complete",
        Outcome::Succeeded,
        serde_json::json!({ "aws_percent": fact.aws_percent, "dns_hold_seconds": hold }),
        Some("canary/complete".into()),
    )
    .await?;
    let steps = spec.traffic.steps.len();
    let out = serde_json::json!({ "aws_percent": fact.aws_percent, "steps": steps });
    if let Err(e) = deps.callbacks.succeed(&fact.task_token, &out).await {
        tracing::warn!(error = %e, "canary finished but its task is gone");
    }
    Ok(Output {
        action: Action::Completed,
        aws_percent: fact.aws_percent,
        rule,
    })
}

/// How long the last step must hold: the rehearsal override, or the longest TTL of the
/// weighted pair and the record it replaced (read by preflight).
pub fn hold_seconds(spec: &MigrationSpec, replaced_ttl: Option<u32>) -> u32 {
    spec.timing
        .dns_hold_seconds
        .unwrap_or(replaced_ttl.unwrap_or(0).max(spec.traffic.ttl_seconds))
}

/// [`hold_seconds`] with the replaced record's TTL preflight stored.
pub async fn dns_hold_seconds(deps: &Deps, spec: &MigrationSpec) -> StepResult<u32> {
    let dns: Option<facts::DnsFact> =
        facts::get(deps.store.as_ref(), &spec.migration_id, facts::DNS).await?;
    Ok(hold_seconds(spec, dns.and_then(|d| d.replaced_ttl_seconds)))
}

fn idle(rule: String, aws_percent: u32) -> Output {
    Output {
        action: Action::Idle,
        aws_percent,
        rule,
    }
}

async fn unhealthy(
    deps: &Deps,
    spec: &MigrationSpec,
    fact: CanaryFact,
    rule: String,
    reason: String,
) -> StepResult<Output> {
    let id = &spec.migration_id;
    deps.router
        .set_weights(&spec.traffic, Weights::for_aws_percent(0))
        .await?;
    weight_metric(deps, id, 0);
    deps.schedule.delete_rule(&rule).await?;
    let failed = CanaryFact {
        state: CanaryState::Unhealthy,
        reason: Some(reason.clone()),
        ..fact.clone()
    };
    facts::swap(deps.store.as_ref(), id, facts::CANARY, Some(&fact), &failed).await?;
    deps.audit(
        id,
        "canary",
        "unhealthy",
        Outcome::Failed,
        serde_json::json!({ "aws_percent": fact.aws_percent, "reason": reason }),
        Some("canary/unhealthy".into()),
    )
    .await?;
    let err = StepError::CanaryUnhealthy {
        aws_percent: fact.aws_percent,
        reason,
    };
    if let Err(e) = deps
        .callbacks
        .fail(&fact.task_token, err.step_error_name(), &err.to_string())
        .await
    {
        tracing::warn!(error = %e, "canary unhealthy but its task is gone");
    }
    Ok(Output {
        action: Action::Unhealthy,
        aws_percent: 0,
        rule,
    })
}

/// The share of traffic on AWS as a metric, after every weight change.
fn weight_metric(deps: &Deps, id: &str, aws_percent: u32) {
    deps.metrics(
        id,
        "canary",
        &[Metric::new(
            "AwsTrafficPercent",
            f64::from(aws_percent),
            Unit::Percent,
        )],
    );
}

#[cfg(test)]
mod tests {
    //! The canary's decisions on in-memory services with a driven clock: which tick moves,
    //! which is a duplicate, when the last step holds, what an unhealthy gate undoes.

    use chrono::Duration;
    use ferry_core::{MigrationStore, memory::Resumed, state::Phase, traffic::Weights};

    use super::*;
    use crate::memory::{World, spec_with};

    const TOKEN: &str = "canary-task-token";

    async fn shifting() -> World {
        let spec = spec_with(|v| {
            v["traffic"]["steps"] = serde_json::json!([10, 50, 100]);
            v["traffic"]["step_interval_minutes"] = 5.into();
            v["traffic"]["ttl_seconds"] = 60.into();
            v["traffic"]["health"] = serde_json::json!({"alarm_names": ["acme-5xx"]});
        });
        let w = World::at(spec, Phase::AwaitingTrafficApproval).await;
        w.alarms.set("acme-5xx", false);
        w
    }

    async fn start_it(w: &World) -> Output {
        start(
            &w.deps,
            StartInput {
                migration_id: w.spec.migration_id.clone(),
                task_token: TOKEN.into(),
            },
        )
        .await
        .expect("start")
    }

    async fn tick_it(w: &World) -> Output {
        tick(
            &w.deps,
            TickInput {
                migration_id: w.spec.migration_id.clone(),
                interval_seconds: 300,
            },
        )
        .await
        .expect("tick")
    }

    #[tokio::test]
    async fn start_replaces_the_cname_with_the_first_weight_and_schedules_ticks() {
        let w = shifting().await;
        let out = start_it(&w).await;
        assert_eq!((out.action, out.aws_percent), (Action::Started, 10));
        assert_eq!(w.router.written(), [Weights::for_aws_percent(10)]);
        assert!(
            w.router.others().is_empty(),
            "the simple CNAME went in the same batch"
        );
        let rules = w.schedule.rules();
        let rule = rules.get(&out.rule).expect("the tick rule");
        assert_eq!(rule.minutes, 5);
        assert_eq!(rule.input["interval_seconds"], 300);
        assert_eq!(w.phase().await, Phase::ShiftingTraffic);

        // A retried start (the state machine's Retry) keeps the weight and takes the new token.
        w.clock.advance(Duration::seconds(400));
        assert_eq!(tick_it(&w).await.action, Action::Moved);
        let again = start(
            &w.deps,
            StartInput {
                migration_id: w.spec.migration_id.clone(),
                task_token: "second-token".into(),
            },
        )
        .await
        .expect("start again");
        assert_eq!(again.aws_percent, 50, "not reset to the first step");
        assert_eq!(
            w.router.written().len(),
            2,
            "no weight written by the retry"
        );
    }

    #[tokio::test]
    async fn a_tick_within_half_an_interval_of_a_move_is_a_duplicate_whatever_the_machine_speed() {
        let w = shifting().await;
        start_it(&w).await;
        w.clock.advance(Duration::seconds(149));
        assert_eq!(tick_it(&w).await.action, Action::Duplicate);
        w.clock.advance(Duration::seconds(1));
        let moved = tick_it(&w).await;
        assert_eq!((moved.action, moved.aws_percent), (Action::Moved, 50));
        assert_eq!(
            tick_it(&w).await.action,
            Action::Duplicate,
            "EventBridge's second delivery"
        );
        assert_eq!(
            w.router.written(),
            [Weights::for_aws_percent(10), Weights::for_aws_percent(50)]
        );
        assert_eq!(
            w.audited().await,
            ["canary/set_weights", "canary/set_weights"],
            "one entry per move"
        );
    }

    #[tokio::test]
    async fn the_last_step_holds_for_the_dns_ttl_then_resumes_the_waiting_task() {
        let w = shifting().await;
        start_it(&w).await;
        w.clock.advance(Duration::seconds(300));
        tick_it(&w).await;
        w.clock.advance(Duration::seconds(300));
        assert_eq!(tick_it(&w).await.aws_percent, 100);
        // At 100 %, the next tick half an interval on: the TTL (60 s) has passed since the
        // last move (150 s), so the canary completes.
        w.clock.advance(Duration::seconds(150));
        let done = tick_it(&w).await;
        assert_eq!(done.action, Action::Completed);
        assert!(w.schedule.rules().is_empty(), "the rule is deleted");
        assert!(matches!(
            w.callbacks.resumed(TOKEN),
            Some(Resumed::Succeeded(out)) if out["aws_percent"] == 100
        ));
        assert_eq!(
            tick_it(&w).await.action,
            Action::Idle,
            "a late tick changes nothing"
        );
    }

    #[tokio::test]
    async fn a_ttl_longer_than_the_tick_holds_the_last_step() {
        let spec = spec_with(|v| {
            v["traffic"]["steps"] = serde_json::json!([100]);
            v["traffic"]["ttl_seconds"] = 3600.into();
            v["traffic"]["health"] = serde_json::json!({"alarm_names": ["acme-5xx"]});
        });
        let w = World::at(spec, Phase::AwaitingTrafficApproval).await;
        w.alarms.set("acme-5xx", false);
        start_it(&w).await;
        w.clock.advance(Duration::seconds(3599));
        assert_eq!(tick_it(&w).await.action, Action::Holding);
        w.clock.advance(Duration::seconds(1));
        assert_eq!(tick_it(&w).await.action, Action::Completed);
    }

    #[tokio::test]
    async fn an_alarm_in_alarm_sends_all_traffic_back_and_fails_the_waiting_task() {
        let w = shifting().await;
        start_it(&w).await;
        w.clock.advance(Duration::seconds(300));
        tick_it(&w).await;
        w.alarms.set("acme-5xx", true);
        w.clock.advance(Duration::seconds(300));
        let out = tick_it(&w).await;
        assert_eq!((out.action, out.aws_percent), (Action::Unhealthy, 0));
        assert_eq!(
            w.router.written().last(),
            Some(&Weights::for_aws_percent(0))
        );
        assert!(w.schedule.rules().is_empty());
        match w.callbacks.resumed(TOKEN) {
            Some(Resumed::Failed { error, cause }) => {
                assert_eq!(error, "Ferry.CanaryUnhealthy");
                assert!(cause.contains("alarms in ALARM: acme-5xx"), "{cause}");
            }
            other => panic!("the task was not failed: {other:?}"),
        }
        let fact: CanaryFact = facts::get(w.store.as_ref(), &w.spec.migration_id, facts::CANARY)
            .await
            .expect("read")
            .expect("fact");
        assert_eq!(fact.state, CanaryState::Unhealthy);
    }

    #[tokio::test]
    async fn an_alarm_that_does_not_exist_fails_the_gate_rather_than_passing_forever() {
        let typo = spec_with(|v| {
            v["traffic"]["health"] = serde_json::json!({"alarm_names": ["acme-5xxx"]});
        });
        let w = World::at(typo, Phase::AwaitingTrafficApproval).await;
        w.alarms.set("acme-5xx", false);
        start_it(&w).await;
        w.clock.advance(Duration::seconds(300));
        assert_eq!(tick_it(&w).await.action, Action::Unhealthy);
        assert!(matches!(
            w.callbacks.resumed(TOKEN),
            Some(Resumed::Failed { cause, .. }) if cause.contains("alarms that do not exist: acme-5xxx")
        ));
    }

    #[tokio::test]
    async fn a_tick_after_the_migration_moved_on_removes_its_stale_rule() {
        let w = shifting().await;
        let out = start_it(&w).await;
        let rec = w.deps.record(&w.spec.migration_id).await.expect("record");
        w.store
            .advance_phase(
                &w.spec.migration_id,
                rec.version,
                Phase::AwaitingCutoverApproval,
                rec.updated_at,
            )
            .await
            .expect("move on");
        w.clock.advance(Duration::seconds(300));
        assert_eq!(tick_it(&w).await.action, Action::Idle);
        assert!(!w.schedule.rules().contains_key(&out.rule));
        assert_eq!(w.router.written().len(), 1, "no weight moved");
    }
}
