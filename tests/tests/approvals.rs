//! Approval gates end to end against the emulator: a real `.waitForTaskToken` execution, the
//! token delivered through SNS to SQS, the decision stored once and delivered to the execution.

use std::time::{Duration, Instant};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use chrono::Utc;
use ferry_core::{
    MigrationStore, StepErrorName,
    approval::{ApprovalError, Decision, decide},
    state::{ApprovalStatus, Gate},
};
use ferry_tests::{bed_var, fresh_store, pending_approval, unique};

struct Gatekeeper {
    sfn: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    machine_arn: String,
}

impl Gatekeeper {
    async fn new() -> Self {
        bed_var("AWS_ENDPOINT_URL");
        let config = ferry_aws::sdk_config().await;
        let (sfn, sns, sqs) = (
            aws_sdk_sfn::Client::new(&config),
            aws_sdk_sns::Client::new(&config),
            aws_sdk_sqs::Client::new(&config),
        );
        let topic = sns
            .create_topic()
            .name(unique("ferry-approvals-"))
            .send()
            .await
            .expect("topic");
        let topic_arn = topic.topic_arn().expect("topic arn").to_string();
        let queue = sqs
            .create_queue()
            .queue_name(unique("ferry-prompts-"))
            .send()
            .await
            .expect("queue");
        let queue_url = queue.queue_url().expect("queue url").to_string();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue arn");
        let queue_arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .expect("queue arn")
            .clone();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .expect("subscribe");
        let definition = serde_json::json!({
            "StartAt": "Gate",
            "States": {
                "Gate": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sns:publish.waitForTaskToken",
                    "Parameters": {"TopicArn": topic_arn, "Message": {"token.$": "$$.Task.Token"}},
                    "ResultPath": "$.approval",
                    "Catch": [{"ErrorEquals": ["Ferry.Rejected"], "ResultPath": "$.error", "Next": "Rejected"}],
                    "Next": "Approved"
                },
                "Approved": {"Type": "Succeed"},
                "Rejected": {"Type": "Fail", "Error": "Ferry.Rejected", "Cause": "a person rejected the gate"}
            }
        });
        let machine = sfn
            .create_state_machine()
            .name(unique("ferry-gate-"))
            .definition(definition.to_string())
            .role_arn("arn:aws:iam::123456789012:role/ferry-test")
            .send()
            .await
            .expect("state machine");
        Self {
            sfn,
            sqs,
            queue_url,
            machine_arn: machine.state_machine_arn().to_string(),
        }
    }

    /// Starts an execution and returns it with the task token it is waiting on.
    async fn waiting_execution(&self) -> (String, String) {
        let exec = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.machine_arn)
            .name(unique("gate-"))
            .input("{}")
            .send()
            .await
            .expect("start");
        let arn = exec.execution_arn().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            let msgs = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            if let Some(body) = msgs.messages().first().and_then(|m| m.body()) {
                let v: serde_json::Value = serde_json::from_str(body).expect("prompt is JSON");
                let inner = v
                    .get("Message")
                    .and_then(|m| m.as_str())
                    .map(|m| serde_json::from_str(m).expect("JSON"))
                    .unwrap_or(v);
                break inner["token"].as_str().expect("token").to_string();
            }
            assert!(Instant::now() < deadline, "no approval prompt arrived");
        };
        // moto drops a callback that arrives before the task is recorded as submitted.
        loop {
            let history = self
                .sfn
                .get_execution_history()
                .execution_arn(&arn)
                .send()
                .await
                .expect("history");
            if history
                .events()
                .iter()
                .any(|e| e.r#type() == &HistoryEventType::TaskSubmitted)
            {
                break;
            }
            assert!(Instant::now() < deadline, "task never submitted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (arn, token)
    }

    async fn finished(
        &self,
        arn: &str,
    ) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self
                .sfn
                .describe_execution()
                .execution_arn(arn)
                .send()
                .await
                .expect("describe");
            if d.status() != &ExecutionStatus::Running {
                return d;
            }
            assert!(Instant::now() < deadline, "execution still running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

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
    assert_eq!(err.step_error_name(), "Ferry.Approval.NotAllowed");
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
    assert_eq!(err.step_error_name(), "Ferry.ApprovalNotPending");
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
