//! Step 3 (wait loop): the worker's progress; restarts a dead worker.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "replication-status",
        |deps, input: ferry_steps::replication::StatusInput| async move {
            ferry_steps::replication::status(&deps, input).await
        },
    )
    .await
}
