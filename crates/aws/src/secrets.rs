//! [`SecretStore`] on AWS Secrets Manager: the current value of a secret Ferry reads but does
//! not own (RDS's managed master password).

use async_trait::async_trait;
use aws_sdk_secretsmanager::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
};
use ferry_core::{
    params::{SecretError, SecretStore},
    secret::Secret,
};

/// Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretsManagerStore {
    client: Client,
}

impl SecretsManagerStore {
    /// Secrets through a client built from `config`.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }
}

fn classify<E>(id: &str, e: SdkError<E>) -> SecretError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some("ResourceNotFoundException") => SecretError::NotFound { id: id.to_string() },
        Some("AccessDeniedException" | "DecryptionFailure") => SecretError::AccessDenied {
            id: id.to_string(),
            reason: e.message().unwrap_or("denied").to_string(),
        },
        _ => SecretError::Unavailable(Box::new(e)),
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn current(&self, id: &str) -> Result<Secret, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| classify(id, e))?;
        out.secret_string
            .map(Secret::new)
            .ok_or_else(|| SecretError::AccessDenied {
                id: id.to_string(),
                reason: "the secret holds binary data, not the JSON RDS writes".into(),
            })
    }
}
