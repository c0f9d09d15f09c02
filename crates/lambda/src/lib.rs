//! The adapter between the Lambda runtime and a step of `ferry-steps`: builds the step's
//! dependencies from the environment once per cold start, deserializes the task input, and
//! turns a step error into a `Diagnostic` whose `errorType` is the error's stable name, which
//! the state machine's Retry and Catch match.
//!
//! Environment (set by `infra/template.yaml`): `FERRY_STATE_TABLE`, `FERRY_LINK_SECRET_PARAM`
//! (required); `FERRY_HEROKU_API_URL`, `FERRY_APPROVAL_URL`, `FERRY_SLACK_SIGNING_SECRET_PARAM`,
//! `FERRY_CANARY_FUNCTION_ARN`, `FERRY_RULE_PREFIX`, `FERRY_WORKER_CLUSTER`,
//! `FERRY_WORKER_TASK_DEFINITION`, `FERRY_WORKER_CONTAINER`, `FERRY_WORKER_SUBNETS`,
//! `FERRY_WORKER_SECURITY_GROUPS`, `FERRY_WORKER_PUBLIC_IP`, `FERRY_PG_BIN`.

pub mod logs;

use std::{future::Future, sync::Arc, time::Duration};

use ferry_core::StepErrorName;
use ferry_steps::{Deps, Settings, StepError};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn list(name: &str) -> Vec<String> {
    var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Builds every dependency from the environment, as a deployed function does.
pub async fn deps_from_env() -> Result<Deps, StepError> {
    let settings = Settings::from_vars(var)?;
    let table = var("FERRY_STATE_TABLE")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            StepError::Config("FERRY_STATE_TABLE is not set; the SAM template sets it".into())
        })?;
    let worker = ferry_aws::WorkerTask {
        cluster: var("FERRY_WORKER_CLUSTER").unwrap_or_default(),
        task_definition: var("FERRY_WORKER_TASK_DEFINITION").unwrap_or_default(),
        container: var("FERRY_WORKER_CONTAINER").unwrap_or_else(|| "worker".into()),
        subnets: list("FERRY_WORKER_SUBNETS"),
        security_groups: list("FERRY_WORKER_SECURITY_GROUPS"),
        public_ip: var("FERRY_WORKER_PUBLIC_IP").as_deref() == Some("true"),
    };
    deps(settings, table, worker).await
}

/// Every dependency on the real AWS adapters (endpoint, region and credentials from the
/// environment), with the given settings, state table and worker task.
pub async fn deps(
    settings: Settings,
    table: String,
    worker: ferry_aws::WorkerTask,
) -> Result<Deps, StepError> {
    let aws = ferry_aws::sdk_config().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("ferry")
        .build()
        .map_err(|e| StepError::Config(format!("HTTP client: {e}")))?;
    let store = Arc::new(ferry_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        table,
    ));
    Ok(Deps {
        store: store.clone(),
        endpoints: store,
        params: Arc::new(ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&aws))),
        secrets: Arc::new(ferry_aws::SecretsManagerStore::new(&aws)),
        router: Arc::new(ferry_aws::Route53Router::new(aws_sdk_route53::Client::new(
            &aws,
        ))),
        callbacks: Arc::new(ferry_aws::SfnCallbacks::new(aws_sdk_sfn::Client::new(&aws))),
        schedule: Arc::new(ferry_aws::EventBridgeSchedule::new(
            aws_sdk_eventbridge::Client::new(&aws),
        )),
        alarms: Arc::new(ferry_aws::CloudWatchAlarms::new(
            aws_sdk_cloudwatch::Client::new(&aws),
        )),
        notifier: Arc::new(ferry_aws::SnsNotifier::new(aws_sdk_sns::Client::new(&aws))),
        compute: Arc::new(ferry_aws::EcsCompute::new(
            aws_sdk_ecs::Client::new(&aws),
            worker,
        )),
        databases: Arc::new(ferry_aws::RdsDatabases::new(aws_sdk_rds::Client::new(&aws))),
        http,
        metrics: Arc::new(ferry_core::metrics::Stdout),
        clock: Arc::new(ferry_core::clock::SystemClock),
        settings,
        control_key: Arc::default(),
    })
}

/// The Lambda error for a step error: `errorType` is its stable name.
pub fn diagnostic(e: &StepError) -> Diagnostic {
    Diagnostic {
        error_type: e.step_error_name().to_string(),
        error_message: e.to_string(),
    }
}

/// Serves one step: `handler` gets the dependencies and the task input.
pub async fn serve<I, O, F, Fut>(
    step: &'static str,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(Arc<Deps>, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, StepError>> + Send,
{
    logs::init();
    let deps = match deps_from_env().await {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::error!(step, error = %e, "cannot start");
            return Err(e.into());
        }
    };
    let handler = Arc::new(handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        let handler = handler.clone();
        async move {
            let migration_id = logs::migration_of(&event.payload);
            let span = tracing::info_span!(
                "step",
                step,
                migration_id = migration_id.as_deref(),
                request_id = %event.context.request_id
            );
            let input: I = serde_json::from_value(event.payload).map_err(|e| {
                let e = StepError::Input(e.to_string());
                span.in_scope(
                    || tracing::error!(error = %e, name = e.step_error_name(), "input refused"),
                );
                diagnostic(&e)
            })?;
            match handler(deps, input).instrument(span).await {
                Ok(out) => {
                    tracing::info!("done");
                    Ok::<O, Diagnostic>(out)
                }
                Err(e) => {
                    tracing::error!(error = %e, name = e.step_error_name(), "failed");
                    Err(diagnostic(&e))
                }
            }
        }
    }))
    .await
}
