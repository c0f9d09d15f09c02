//! Ferry's AWS adapters. Each implements one narrow capability trait of `ferry-core` and is
//! tested against the local AWS emulator; the SDK reaches the emulator only through
//! `AWS_ENDPOINT_URL`, never through a code branch.

mod cloud;
mod cloudwatch;
mod dynamo;
mod ecs;
mod eventbridge;
mod rds;
mod route53;
mod secrets;
mod sfn;
mod sns;
mod ssm;

pub use cloudwatch::CloudWatchAlarms;
pub use dynamo::{DynamoStore, create_table};
pub use ecs::{EcsCompute, WorkerTask};
pub use eventbridge::{EventBridgeSchedule, rate_expression};
pub use rds::RdsDatabases;
pub use route53::Route53Router;
pub use secrets::SecretsManagerStore;
pub use sfn::SfnCallbacks;
pub use sns::SnsNotifier;
pub use ssm::SsmParams;

/// Loads the shared SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL`), once per process.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
