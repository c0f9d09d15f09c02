//! What every command that reads the migration's state opens first: settings from the
//! environment, the AWS configuration, the state store and a migration's record. A leaf: it
//! uses no other module of the CLI, so the commands can share it without importing each other.

use anyhow::Context;
use ferry_core::MigrationStore;

use crate::fail::Usage;

/// A setting from the environment, or a usage error naming it.
pub fn env(name: &str, what: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Usage(format!(
                "{name} is not set; set it to {what} (the stack's outputs name it)"
            ))
            .into()
        })
}

/// The AWS configuration from the usual chain (environment, profiles with SSO or
/// credential_process, instance and container roles).
pub async fn aws() -> aws_config::SdkConfig {
    ferry_aws::sdk_config().await
}

/// The state store.
pub fn store(aws: &aws_config::SdkConfig) -> anyhow::Result<ferry_aws::DynamoStore> {
    Ok(ferry_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(aws),
        env("FERRY_STATE_TABLE", "the state table's name")?,
    ))
}

/// The state store and the migration's record.
pub async fn opened(
    aws: &aws_config::SdkConfig,
    id: &str,
) -> anyhow::Result<(ferry_aws::DynamoStore, ferry_core::state::MigrationRecord)> {
    let store = store(aws)?;
    let rec = store
        .migration(id)
        .await
        .with_context(|| format!("read migration {id}"))?;
    Ok((store, rec))
}
