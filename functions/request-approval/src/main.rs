//! Approval gates (waitForTaskToken): store the token, prompt through SNS and Slack.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "request-approval",
        |deps, input: ferry_steps::approval::RequestInput| async move {
            ferry_steps::approval::request(&deps, input).await
        },
    )
    .await
}
