//! Step 8: the database cutover (write freeze, drain, switch, reverse stream).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "cutover",
        |deps, input: ferry_steps::MigrationRef| async move {
            ferry_steps::cutover::run(&deps, input).await
        },
    )
    .await
}
