//! Step 6 (waitForTaskToken): first weight, then schedule the canary's ticks.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "canary-start",
        |deps, input: ferry_steps::canary::StartInput| async move {
            ferry_steps::canary::start(&deps, input).await
        },
    )
    .await
}
