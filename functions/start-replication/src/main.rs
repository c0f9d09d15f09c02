//! Step 3: start the replication worker as an ECS task.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "start-replication",
        |deps, input: ferry_steps::MigrationRef| async move {
            ferry_steps::replication::start(&deps, input).await
        },
    )
    .await
}
