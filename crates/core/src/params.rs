//! The narrow interface to SSM Parameter Store: where secrets (database URLs, tokens) and the
//! app's config vars live. Values are secrets: never log them.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{errors::StepErrorName, secret::Secret};

/// Why a parameter call failed. Messages name the parameter, never its value.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// No such parameter.
    #[error(
        "SSM parameter {name} does not exist; create it (as a SecureString) or fix the name in the spec"
    )]
    NotFound {
        /// The parameter name.
        name: String,
    },
    /// The caller may not read or write it.
    #[error("access to SSM parameter {name} was denied: {reason}")]
    AccessDenied {
        /// The parameter name.
        name: String,
        /// What AWS said.
        reason: String,
    },
    /// AWS asked us to slow down.
    #[error("SSM throttled: {0}")]
    Throttled(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// SSM could not be reached or failed.
    #[error("SSM unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StepErrorName for ParamError {
    fn step_error_name(&self) -> &'static str {
        match self {
            ParamError::NotFound { .. } => "Ferry.Blocked.ParamNotFound",
            ParamError::AccessDenied { .. } => "Ferry.Blocked.ParamAccessDenied",
            ParamError::Throttled(_) => "Ferry.Retryable.Throttled",
            ParamError::Unavailable(_) => "Ferry.Retryable.ParamUnavailable",
        }
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The parameter did not exist.
    Added,
    /// It existed with another value.
    Changed,
    /// It existed with this value: nothing written.
    Unchanged,
}

/// SSM Parameter Store, as Ferry uses it.
#[async_trait]
pub trait ParamStore: Send + Sync {
    /// Reads a parameter, decrypting a SecureString. Every parameter Ferry reads holds a secret
    /// (a database URL, a token, a signing key, a webhook URL), so the value comes back typed
    /// so that it cannot be printed.
    async fn get(&self, name: &str) -> Result<Secret, ParamError>;

    /// Writes a SecureString unless it already holds `value`.
    async fn put_secure(&self, name: &str, value: &str) -> Result<PutOutcome, ParamError>;

    /// Every parameter under `prefix` (recursively), decrypted, by full name.
    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>, ParamError>;
}

/// Why a Secrets Manager read failed. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No such secret.
    #[error(
        "Secrets Manager secret {id} does not exist; fix target.password_secret in the spec (the ARN RDS shows under the instance's master credentials)"
    )]
    NotFound {
        /// The secret's ARN or name.
        id: String,
    },
    /// The caller may not read it.
    #[error(
        "reading Secrets Manager secret {id} was denied: {reason}; deploy the template with TargetMasterSecretArn set to it (and, for a secret under a customer-managed key, grant kms:Decrypt on that key)"
    )]
    AccessDenied {
        /// The secret's ARN or name.
        id: String,
        /// What AWS said.
        reason: String,
    },
    /// Secrets Manager could not be reached, throttled, or failed.
    #[error("Secrets Manager unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StepErrorName for SecretError {
    fn step_error_name(&self) -> &'static str {
        // The parameter names: a secret is read where a parameter would be, for the same
        // purpose, and the state machine treats both alike.
        match self {
            SecretError::NotFound { .. } => "Ferry.Blocked.ParamNotFound",
            SecretError::AccessDenied { .. } => "Ferry.Blocked.ParamAccessDenied",
            SecretError::Unavailable(_) => "Ferry.Retryable.ParamUnavailable",
        }
    }
}

/// Secrets Manager, as Ferry uses it: reading the current value of a secret it does not own
/// (the RDS-managed master password, which Secrets Manager rotates).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret's current (`AWSCURRENT`) string value.
    async fn current(&self, id: &str) -> Result<Secret, SecretError>;
}
