//! A real `.waitForTaskToken` execution in the emulator, for tests that need a task token
//! that resumes something: the token reaches an SQS queue through SNS.

use std::time::{Duration, Instant};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};

use crate::{bed_var, unique};

/// A one-gate state machine whose executions wait on a task token.
#[derive(Debug)]
pub struct Gatekeeper {
    /// Step Functions client.
    pub sfn: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    machine_arn: String,
}

impl Gatekeeper {
    /// A topic, a queue subscribed to it, and a one-gate state machine.
    pub async fn new() -> Self {
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
    pub async fn waiting_execution(&self) -> (String, String) {
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

    /// Waits for the execution to end.
    pub async fn finished(
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
