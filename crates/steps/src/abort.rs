//! Aborting a migration on an operator's request (`ferry abort`): the request is recorded once
//! (who, when) and audited; a task waiting on a token (an approval gate, the canary) is failed
//! with `Ferry.Aborted` at once, and every other step refuses to start once it is recorded. The
//! state machine's Catch then runs the rollback, which undoes exactly what was done (after a
//! cutover, only with the reverse stream drained: nothing written on AWS is lost).

use chrono::{DateTime, Utc};
use ferry_core::{
    MigrationStore,
    approval::TaskCallbacks,
    state::{ApprovalStatus, Gate, Outcome, Phase},
};
use serde::{Deserialize, Serialize};

use crate::{
    Deps, StepError, StepResult,
    facts::{self, CanaryFact, CanaryState},
    now,
};

/// The fact recording an abort request.
pub const ABORT: &str = "abort";

/// Who asked for the abort, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRequest {
    /// The operator's identity.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Fails with `Ferry.Aborted` when an abort was requested.
pub async fn check(deps: &Deps, migration_id: &str) -> StepResult<()> {
    match facts::get::<AbortRequest>(deps.store.as_ref(), migration_id, ABORT).await? {
        Some(a) => Err(StepError::Aborted { by: a.by }),
        None => Ok(()),
    }
}

/// What the abort did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aborted {
    /// The request as stored (the first one, if asked twice).
    pub request: AbortRequest,
    /// Waiting tasks failed at once (`gate:<name>`, `canary`).
    pub interrupted: Vec<String>,
}

/// Records the abort and interrupts a waiting task.
pub async fn request_with(
    store: &dyn MigrationStore,
    callbacks: &dyn TaskCallbacks,
    migration_id: &str,
    by: &str,
) -> StepResult<Aborted> {
    let rec = store.migration(migration_id).await?;
    if rec.phase.is_final() || matches!(rec.phase, Phase::CleaningUp | Phase::RollingBack) {
        return Err(StepError::Ended {
            migration_id: migration_id.to_string(),
            phase: rec.phase.to_string(),
        });
    }
    let request = facts::put_once(
        store,
        migration_id,
        ABORT,
        &AbortRequest {
            by: by.to_string(),
            at: now(),
        },
    )
    .await?;
    let mut event = ferry_core::state::AuditEvent::new(
        now(),
        "abort",
        by,
        "abort_requested",
        Outcome::Info,
        serde_json::json!({ "phase": rec.phase.as_str() }),
    );
    event = event.with_key("abort/requested");
    store.append_audit(migration_id, &event).await?;
    let cause = format!("aborted by {}", request.by);
    let mut interrupted = Vec::new();
    for gate in [Gate::ShiftTraffic, Gate::Cutover, Gate::Finish] {
        if let Some(a) = store.approval(migration_id, gate).await?
            && a.status == ApprovalStatus::Pending
            && callbacks.fail(&a.task_token, ABORTED, &cause).await.is_ok()
        {
            interrupted.push(format!("gate:{gate}"));
        }
    }
    if let Some(c) = facts::get::<CanaryFact>(store, migration_id, facts::CANARY).await?
        && c.state == CanaryState::Running
    {
        // No more ticks move the weights; the rollback sends traffic back to Heroku.
        let stopped = CanaryFact {
            state: CanaryState::Aborted,
            reason: Some(cause.clone()),
            ..c.clone()
        };
        facts::swap(store, migration_id, facts::CANARY, Some(&c), &stopped).await?;
        if callbacks.fail(&c.task_token, ABORTED, &cause).await.is_ok() {
            interrupted.push("canary".into());
        }
    }
    Ok(Aborted {
        request,
        interrupted,
    })
}

/// The error name an aborted migration fails with.
pub const ABORTED: &str = "Ferry.Aborted";
