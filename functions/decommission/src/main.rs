//! Step 10: stop the worker, remove capture, retire the Heroku record and dynos, release the lock.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "decommission",
        |deps, input: ferry_steps::MigrationRef| async move {
            ferry_steps::decommission::run(&deps, input).await
        },
    )
    .await
}
