//! Step 4: compare source and target (counts and checksums).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "verify",
        |deps, input: ferry_steps::MigrationRef| async move {
            ferry_steps::verify::run(&deps, input, None).await
        },
    )
    .await
}
