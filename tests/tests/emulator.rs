//! The bed's AWS emulator really executes state machines (moto's interpreter is switched on):
//! Pass, Wait driven by the input, Choice, Retry-free Succeed/Fail paths.

use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use ferry_tests::{bed_var, unique};

const DEFINITION: &str = r#"{
  "StartAt": "Mark",
  "States": {
    "Mark": {"Type": "Pass", "Result": "marked", "ResultPath": "$.mark", "Next": "Pause"},
    "Pause": {"Type": "Wait", "SecondsPath": "$.wait_seconds", "Next": "Decide"},
    "Decide": {
      "Type": "Choice",
      "Choices": [{"Variable": "$.go", "BooleanEquals": true, "Next": "Done"}],
      "Default": "Refuse"
    },
    "Done": {"Type": "Succeed"},
    "Refuse": {"Type": "Fail", "Error": "Ferry.Rejected", "Cause": "go was false"}
  }
}"#;

async fn run(
    client: &aws_sdk_sfn::Client,
    arn: &str,
    input: &str,
) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
    let exec = client
        .start_execution()
        .state_machine_arn(arn)
        .name(unique("exec-"))
        .input(input)
        .send()
        .await
        .expect("start execution");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = client
            .describe_execution()
            .execution_arn(exec.execution_arn())
            .send()
            .await
            .expect("describe");
        if d.status() != &ExecutionStatus::Running {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "execution still RUNNING after 30 s: is the interpreter on?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn state_machines_really_execute() {
    bed_var("AWS_ENDPOINT_URL");
    let config = ferry_aws::sdk_config().await;
    let client = aws_sdk_sfn::Client::new(&config);
    let machine = client
        .create_state_machine()
        .name(unique("ferry-test-"))
        .definition(DEFINITION)
        .role_arn("arn:aws:iam::123456789012:role/ferry-test")
        .send()
        .await
        .expect("create state machine");
    let arn = machine.state_machine_arn();

    let ok = run(&client, arn, r#"{"go": true, "wait_seconds": 1}"#).await;
    assert_eq!(ok.status(), &ExecutionStatus::Succeeded);
    let output: serde_json::Value =
        serde_json::from_str(ok.output().unwrap_or("null")).expect("output");
    assert_eq!(output["mark"], "marked");

    let refused = run(&client, arn, r#"{"go": false, "wait_seconds": 0}"#).await;
    assert_eq!(refused.status(), &ExecutionStatus::Failed);
    assert_eq!(refused.error(), Some("Ferry.Rejected"));
}
