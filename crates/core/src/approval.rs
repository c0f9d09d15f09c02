//! Deciding an approval gate: the approver must be on the spec's list, the gate must be
//! pending, the decision is stored once (a replayed click changes nothing), audited, and
//! delivered to the waiting execution (`SendTaskSuccess` / `SendTaskFailure`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    errors::StepErrorName,
    state::{ApprovalRequest, ApprovalStatus, AuditEvent, Gate, Outcome},
    store::{MigrationStore, StoreError},
};

/// Why delivering a decision to Step Functions failed.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The task token is unknown or its task already ended (timed out, or decided before).
    #[error("the waiting task is gone: {0}")]
    TaskGone(String),
    /// Step Functions could not be reached or throttled us.
    #[error("Step Functions unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Resumes executions waiting on `.waitForTaskToken`.
#[async_trait]
pub trait TaskCallbacks: Send + Sync {
    /// `SendTaskSuccess` with `output` (JSON).
    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<(), CallbackError>;
    /// `SendTaskFailure` with an error name the state machine's Catch matches.
    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), CallbackError>;
}

/// The error name a rejected gate fails its task with.
pub const REJECTED: &str = "Ferry.Rejected";

/// A person's decision on a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The migration.
    pub migration_id: String,
    /// The gate.
    pub gate: Gate,
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Who decided (email or Slack member id, as verified by the caller).
    pub approver: String,
    /// Finish even though the exact comparison of the cutover found differences or did not
    /// finish: an explicit, audited override (`ferry approve --accept-differences`, Slack's
    /// separate button; never an email link).
    pub accept_differences: bool,
}

/// Why a decision was refused or not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The approver is not on the spec's list.
    #[error(
        "{approver} may not approve this migration; the spec's approvals.approvers lists who may"
    )]
    NotAllowed {
        /// Who tried.
        approver: String,
    },
    /// No pending request, already decided, or a replay.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The decision is stored but could not be delivered.
    #[error("decision recorded but not delivered: {0}")]
    Callback(#[from] CallbackError),
    /// A plain approve of the finish gate while the exact comparison of the cutover found
    /// differences (or did not finish).
    #[error(
        "the exact comparison of the cutover says {found}, so a plain approve cannot finish (finishing decommissions Heroku). Reject to roll back, losing nothing; or finish anyway with an explicit override: `ferry approve <id> --gate finish --accept-differences`, or Slack's \"Finish despite differences\" button"
    )]
    Differences {
        /// What the comparison found.
        found: String,
    },
}

impl StepErrorName for ApprovalError {
    fn step_error_name(&self) -> &'static str {
        match self {
            ApprovalError::NotAllowed { .. } => "Ferry.Blocked.NotAllowed",
            ApprovalError::Differences { .. } => "Ferry.Blocked.Differences",
            ApprovalError::Store(e) => e.step_error_name(),
            ApprovalError::Callback(CallbackError::TaskGone(_)) => "Ferry.Failed.TaskGone",
            ApprovalError::Callback(CallbackError::Unavailable(_)) => {
                "Ferry.Retryable.StepFunctions"
            }
        }
    }
}

/// Whether `who` (an email, a Slack member id, or a caller's IAM ARN) matches the listed
/// approver `listed`. An IAM role listed as `arn:aws:iam::<acct>:role/<name>` matches its
/// sessions, `arn:aws:sts::<acct>:assumed-role/<name>/<session>`.
pub fn may_approve(listed: &str, who: &str) -> bool {
    if listed.eq_ignore_ascii_case(who) {
        return true;
    }
    // The same IAM user written as an STS ARN (what the local emulator's GetCallerIdentity
    // answers for a user) is the same principal.
    if let Some(rest) = who.strip_prefix("arn:aws:sts::")
        && rest.contains(":user/")
        && listed.strip_prefix("arn:aws:iam::") == Some(rest)
    {
        return true;
    }
    let role = listed
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.split_once(":role/"));
    let session = who
        .strip_prefix("arn:aws:sts::")
        .and_then(|rest| rest.split_once(":assumed-role/"));
    match (role, session) {
        (Some((acct, name)), Some((acct2, rest))) => {
            acct == acct2
                && rest
                    .split_once('/')
                    .is_some_and(|(n, _)| n == name.rsplit('/').next().unwrap_or(name))
        }
        _ => false,
    }
}

/// Records and delivers `decision`. A retry by the same approver with the same decision after
/// a failed delivery delivers again; any other second decision is refused with no change.
pub async fn decide(
    store: &dyn MigrationStore,
    callbacks: &dyn TaskCallbacks,
    approvers: &[String],
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<ApprovalRequest, ApprovalError> {
    if !approvers.iter().any(|a| may_approve(a, &decision.approver)) {
        return Err(ApprovalError::NotAllowed {
            approver: decision.approver.clone(),
        });
    }
    let found = if decision.gate == Gate::Finish && decision.approve {
        differences(store, &decision.migration_id).await?
    } else {
        None
    };
    if let Some(found) = &found
        && !decision.accept_differences
    {
        return Err(ApprovalError::Differences {
            found: found.clone(),
        });
    }
    let wanted = if decision.approve {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Rejected
    };
    let current = store
        .approval(&decision.migration_id, decision.gate)
        .await?
        .ok_or_else(|| StoreError::ApprovalNotPending {
            migration_id: decision.migration_id.clone(),
            gate: decision.gate,
            status: "missing".into(),
        })?;
    let decided = if current.status == wanted
        && current.decided_by.as_deref() == Some(decision.approver.as_str())
    {
        // The same decision again: it was stored; deliver it again (delivery is idempotent).
        current
    } else {
        store
            .decide_approval(
                &decision.migration_id,
                decision.gate,
                &current.task_token,
                wanted,
                &decision.approver,
                now,
            )
            .await?
    };
    let action = match (decision.approve, &found) {
        (true, Some(_)) => "approve_accepting_differences",
        (true, None) => "approve",
        (false, _) => "reject",
    };
    let event = AuditEvent::new(
        now,
        "approval",
        decision.approver.clone(),
        action,
        Outcome::Info,
        serde_json::json!({ "gate": decision.gate.as_str(), "differences": found }),
    )
    .with_key(format!("approval/{}/{}", decision.gate.as_str(), action));
    store.append_audit(&decision.migration_id, &event).await?;
    if decision.approve {
        let output = serde_json::json!({
            "gate": decision.gate.as_str(),
            "approved_by": decision.approver,
        });
        callbacks.succeed(&decided.task_token, &output).await?;
    } else {
        let cause = format!(
            "{} rejected gate {}",
            decision.approver,
            decision.gate.as_str()
        );
        callbacks
            .fail(&decided.task_token, REJECTED, &cause)
            .await?;
    }
    Ok(decided)
}

/// What the exact comparison of the cutover found, when it is not "equal" (different,
/// incomplete or interrupted): the finish gate then takes only an explicit override. `None`
/// when it found the sides equal, or none ran.
pub async fn differences(
    store: &dyn MigrationStore,
    migration_id: &str,
) -> Result<Option<String>, StoreError> {
    let Some(raw) = store
        .fact(migration_id, crate::state::DRAIN_CHECK_FACT)
        .await?
    else {
        return Ok(None);
    };
    let check: crate::state::DrainCheck =
        serde_json::from_value(raw).map_err(|e| StoreError::Corrupt {
            key: format!("{migration_id}/{}", crate::state::DRAIN_CHECK_FACT),
            reason: e.to_string(),
        })?;
    Ok(check.needs_override().then(|| check.summary(Utc::now())))
}

#[cfg(test)]
mod may_approve_tests {
    use super::may_approve;

    #[test]
    fn listed_roles_match_their_sessions_and_nothing_else() {
        let role = "arn:aws:iam::123456789012:role/ops";
        assert!(may_approve(
            role,
            "arn:aws:sts::123456789012:assumed-role/ops/alice"
        ));
        assert!(!may_approve(
            role,
            "arn:aws:sts::999999999999:assumed-role/ops/alice"
        ));
        assert!(!may_approve(
            role,
            "arn:aws:sts::123456789012:assumed-role/ops-admin/alice"
        ));
        assert!(may_approve("Ops@Acme.example", "ops@acme.example"));
        assert!(!may_approve("ops@acme.example", "mallory@acme.example"));
        assert!(may_approve(
            "arn:aws:iam::123456789012:user/moto",
            "arn:aws:iam::123456789012:user/moto"
        ));
    }
}
