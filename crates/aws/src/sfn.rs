//! [`TaskCallbacks`] on Step Functions (`SendTaskSuccess` / `SendTaskFailure`).

use async_trait::async_trait;
use aws_sdk_sfn::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
};
use ferry_core::approval::{CallbackError, TaskCallbacks};

/// Step Functions task callbacks.
#[derive(Debug, Clone)]
pub struct SfnCallbacks {
    client: Client,
}

impl SfnCallbacks {
    /// Callbacks through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn classify<E>(e: SdkError<E>) -> CallbackError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some("TaskDoesNotExist" | "InvalidToken" | "TaskTimedOut") => {
            CallbackError::TaskGone(e.message().unwrap_or("no detail").to_string())
        }
        _ => CallbackError::Unavailable(Box::new(e)),
    }
}

#[async_trait]
impl TaskCallbacks for SfnCallbacks {
    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<(), CallbackError> {
        self.client
            .send_task_success()
            .task_token(token)
            .output(output.to_string())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), CallbackError> {
        self.client
            .send_task_failure()
            .task_token(token)
            .error(error)
            .cause(cause)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
