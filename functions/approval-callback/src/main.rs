//! The approval function URL: signed email links and Slack buttons decide a gate once. Every
//! refusal (bad signature, stale, replayed, approver not listed) is an HTTP answer that says
//! why and changes nothing.

use ferry_steps::approval::{self, HttpRequest};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "approval-callback",
        |deps, event: serde_json::Value| async move {
            let request = HttpRequest::from_event(&event)?;
            Ok(approval::callback(&deps, request).await)
        },
    )
    .await
}
