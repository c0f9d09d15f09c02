//! Step 2: Heroku config vars into SSM Parameter Store.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "config-sync",
        |deps, input: ferry_steps::MigrationRef| async move {
            ferry_steps::config_sync::run(&deps, input).await
        },
    )
    .await
}
