//! Rollback (Catch from any step): undo exactly what was done.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "rollback",
        |deps, input: ferry_steps::rollback::Input| async move {
            ferry_steps::rollback::run(&deps, input).await
        },
    )
    .await
}
