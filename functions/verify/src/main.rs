//! Step 4: ask the replication worker to compare source and target, wait for its verdicts
//! (at most `wait_seconds` per invocation) and report them.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "verify",
        |deps, input: ferry_steps::verify::VerifyInput| async move {
            ferry_steps::verify::run(&deps, input, None).await
        },
    )
    .await
}
