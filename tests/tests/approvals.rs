//! Approval gates end to end against the emulator: a real `.waitForTaskToken` execution, the
//! token delivered through SNS to SQS, the decision stored once and delivered to the execution.

use aws_sdk_sfn::types::ExecutionStatus;
use chrono::Utc;
use ferry_core::{
    MigrationStore, StepErrorName,
    approval::{ApprovalError, Decision, decide},
    state::{ApprovalStatus, Gate},
};
use ferry_tests::{fresh_store, gate::Gatekeeper, pending_approval, unique};

#[tokio::test]
async fn approval_resumes_the_execution_once_and_only_for_listed_approvers() {
    let gk = Gatekeeper::new().await;
    let store = fresh_store().await;
    let callbacks = ferry_aws::SfnCallbacks::new(gk.sfn.clone());
    let approvers = vec!["ops@acme.example".to_string(), "U024BE7LH".to_string()];
    let id = unique("mig-");

    let (arn, token) = gk.waiting_execution().await;
    store
        .put_approval(&pending_approval(&id, Gate::ShiftTraffic, &token))
        .await
        .expect("pending");
    let decision = |who: &str, approve| Decision {
        migration_id: id.clone(),
        gate: Gate::ShiftTraffic,
        approve,
        approver: who.into(),
        accept_differences: false,
    };

    // Not on the list: refused, nothing changes.
    let err = decide(
        store.as_ref(),
        &callbacks,
        &approvers,
        &decision("mallory@evil.example", true),
        Utc::now(),
    )
    .await
    .expect_err("not listed");
    assert!(matches!(err, ApprovalError::NotAllowed { .. }));
    assert_eq!(err.step_error_name(), "Ferry.Blocked.NotAllowed");
    let stored = store
        .approval(&id, Gate::ShiftTraffic)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(stored.status, ApprovalStatus::Pending);

    // Approved by a listed approver (case-insensitively): the execution goes on.
    let decided = decide(
        store.as_ref(),
        &callbacks,
        &approvers,
        &decision("OPS@acme.example", true),
        Utc::now(),
    )
    .await
    .expect("approve");
    assert_eq!(decided.status, ApprovalStatus::Approved);
    let done = gk.finished(&arn).await;
    assert_eq!(done.status(), &ExecutionStatus::Succeeded);
    let output: serde_json::Value =
        serde_json::from_str(done.output().unwrap_or("{}")).expect("output");
    assert_eq!(output["approval"]["approved_by"], "OPS@acme.example");

    // A late reject (a replayed or second click) changes nothing.
    let err = decide(
        store.as_ref(),
        &callbacks,
        &approvers,
        &decision("U024BE7LH", false),
        Utc::now(),
    )
    .await
    .expect_err("already decided");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.ApprovalNotPending");
    let stored = store
        .approval(&id, Gate::ShiftTraffic)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(
        (stored.status, stored.decided_by.as_deref()),
        (ApprovalStatus::Approved, Some("OPS@acme.example"))
    );
    let log = store.audit_log(&id).await.expect("audit");
    assert_eq!(log.iter().filter(|e| e.action == "approve").count(), 1);
}

#[tokio::test]
async fn rejection_fails_the_task_with_the_rejected_error() {
    let gk = Gatekeeper::new().await;
    let store = fresh_store().await;
    let callbacks = ferry_aws::SfnCallbacks::new(gk.sfn.clone());
    let id = unique("mig-");
    let (arn, token) = gk.waiting_execution().await;
    store
        .put_approval(&pending_approval(&id, Gate::Cutover, &token))
        .await
        .expect("pending");
    let decision = Decision {
        migration_id: id.clone(),
        gate: Gate::Cutover,
        approve: false,
        approver: "ops@acme.example".into(),
        accept_differences: false,
    };
    decide(
        store.as_ref(),
        &callbacks,
        &["ops@acme.example".to_string()],
        &decision,
        Utc::now(),
    )
    .await
    .expect("reject");
    let done = gk.finished(&arn).await;
    assert_eq!(done.status(), &ExecutionStatus::Failed);
    assert_eq!(done.error(), Some("Ferry.Rejected"));
    let stored = store
        .approval(&id, Gate::Cutover)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(stored.status, ApprovalStatus::Rejected);
}
