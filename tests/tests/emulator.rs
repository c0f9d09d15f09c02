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

/// A new state machine of `definition`, with the bed's history limit when given; its client
/// and ARN.
async fn machine(definition: &str, history_limit: Option<u32>) -> (aws_sdk_sfn::Client, String) {
    bed_var("AWS_ENDPOINT_URL");
    let config = ferry_aws::sdk_config().await;
    let client = aws_sdk_sfn::Client::new(&config);
    let mut create = client
        .create_state_machine()
        .name(unique("ferry-test-"))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/ferry-test");
    if let Some(limit) = history_limit {
        create = create.tags(
            aws_sdk_sfn::types::Tag::builder()
                .key("ferry-bed:history-limit")
                .value(limit.to_string())
                .build(),
        );
    }
    let arn = create
        .send()
        .await
        .expect("create state machine")
        .state_machine_arn()
        .to_string();
    (client, arn)
}

#[tokio::test]
async fn state_machines_really_execute() {
    let (client, arn) = machine(DEFINITION, None).await;
    let arn = arn.as_str();

    let ok = run(&client, arn, r#"{"go": true, "wait_seconds": 1}"#).await;
    assert_eq!(ok.status(), &ExecutionStatus::Succeeded);
    let output: serde_json::Value =
        serde_json::from_str(ok.output().unwrap_or("null")).expect("output");
    assert_eq!(output["mark"], "marked");

    let refused = run(&client, arn, r#"{"go": false, "wait_seconds": 0}"#).await;
    assert_eq!(refused.status(), &ExecutionStatus::Failed);
    assert_eq!(refused.error(), Some("Ferry.Rejected"));
}

/// A wait loop that never ends on its own: Pass → Wait 0 s → Choice → Pass …
const ENDLESS_LOOP: &str = r#"{
  "StartAt": "Count",
  "States": {
    "Count": {"Type": "Pass", "Next": "Pause"},
    "Pause": {"Type": "Wait", "Seconds": 0, "Next": "Again"},
    "Again": {
      "Type": "Choice",
      "Choices": [{"Variable": "$.stop", "BooleanEquals": true, "Next": "Done"}],
      "Default": "Count"
    },
    "Done": {"Type": "Succeed"}
  }
}"#;

#[tokio::test]
async fn an_execution_fails_past_its_history_limit_as_on_aws() {
    // The bed takes a lower limit from the state machine's tag, so this test reaches it in
    // seconds; AWS's is 25,000.
    let (client, arn) = machine(ENDLESS_LOOP, Some(60)).await;
    let arn = arn.as_str();
    let failed = run(&client, arn, r#"{"stop": false}"#).await;
    assert_eq!(failed.status(), &ExecutionStatus::Failed);
    assert_eq!(failed.error(), Some("States.Runtime"));
    assert!(
        failed
            .cause()
            .unwrap_or_default()
            .contains("history events (60)"),
        "{:?}",
        failed.cause()
    );
    let history = client
        .get_execution_history()
        .execution_arn(failed.execution_arn())
        .max_results(1000)
        .send()
        .await
        .expect("history");
    assert_eq!(
        history.events().len(),
        61,
        "the limit, then ExecutionFailed"
    );
    // The same machine with a loop that ends in time succeeds.
    let ok = run(&client, arn, r#"{"stop": true}"#).await;
    assert_eq!(ok.status(), &ExecutionStatus::Succeeded);
}

/// A state whose output doubles its input.
const DOUBLING: &str = r#"{
  "StartAt": "Double",
  "States": {
    "Double": {"Type": "Pass", "Parameters": {"a.$": "$.big", "b.$": "$.big"}, "End": true}
  }
}"#;

#[tokio::test]
async fn a_state_output_past_256_kib_fails_the_execution_as_on_aws() {
    let (client, arn) = machine(DOUBLING, None).await;
    let big = "x".repeat(150 * 1024);
    let failed = run(
        &client,
        &arn,
        &serde_json::json!({ "big": big }).to_string(),
    )
    .await;
    assert_eq!(failed.status(), &ExecutionStatus::Failed);
    assert_eq!(failed.error(), Some("States.DataLimitExceeded"));
    let small = run(&client, &arn, r#"{"big": "fits"}"#).await;
    assert_eq!(small.status(), &ExecutionStatus::Succeeded);
}
