//! Step 6 (EventBridge target): health gate, then the next weight, the end, or all traffic back to Heroku.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "canary-tick",
        |deps, input: ferry_steps::canary::TickInput| async move {
            ferry_steps::canary::tick(&deps, input).await
        },
    )
    .await
}
