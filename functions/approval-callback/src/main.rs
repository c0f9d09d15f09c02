//! The approval function URL: signed email links and Slack buttons decide a gate once. Every
//! refusal (bad signature, stale, replayed, approver not listed) is an HTTP answer that says
//! why and changes nothing.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use ferry_steps::approval::{self, HttpRequest};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(
        "approval-callback",
        |deps, event: LambdaFunctionUrlRequest| async move {
            let request = HttpRequest::from_url_event(&event)?;
            Ok(approval::callback(&deps, request).await)
        },
    )
    .await
}
