//! Step 1: validate the spec, take the app's lock, check both databases, the RDS instance and the Heroku app.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "preflight",
        |deps, input: ferry_steps::preflight::Input| async move {
            ferry_steps::preflight::run(&deps, input).await
        },
    )
    .await
}
