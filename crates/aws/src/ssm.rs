//! [`ParamStore`] on SSM Parameter Store (SecureString, KMS-encrypted with the account's key).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ssm::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::ParameterType,
};
use ferry_core::{
    params::{ParamError, ParamStore, PutOutcome},
    secret::Secret,
};

/// SSM Parameter Store.
#[derive(Debug, Clone)]
pub struct SsmParams {
    client: Client,
}

impl SsmParams {
    /// Parameters through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn classify<E>(name: &str, e: SdkError<E>) -> ParamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some("ParameterNotFound") => ParamError::NotFound {
            name: name.to_string(),
        },
        Some("AccessDeniedException") => ParamError::AccessDenied {
            name: name.to_string(),
            reason: e.message().unwrap_or("denied").to_string(),
        },
        Some("ThrottlingException" | "TooManyUpdates") => ParamError::Throttled(Box::new(e)),
        _ => ParamError::Unavailable(Box::new(e)),
    }
}

#[async_trait]
impl ParamStore for SsmParams {
    async fn get(&self, name: &str) -> Result<Secret, ParamError> {
        let out = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| classify(name, e))?;
        out.parameter
            .and_then(|p| p.value)
            .map(Secret::new)
            .ok_or_else(|| ParamError::NotFound {
                name: name.to_string(),
            })
    }

    async fn put_secure(&self, name: &str, value: &str) -> Result<PutOutcome, ParamError> {
        let outcome = match self.get(name).await {
            Ok(current) if current.expose() == value => return Ok(PutOutcome::Unchanged),
            Ok(_) => PutOutcome::Changed,
            Err(ParamError::NotFound { .. }) => PutOutcome::Added,
            Err(e) => return Err(e),
        };
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(outcome == PutOutcome::Changed)
            .send()
            .await
            .map_err(|e| classify(name, e))?;
        Ok(outcome)
    }

    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>, ParamError> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_parameters_by_path()
                .path(prefix)
                .recursive(true)
                .with_decryption(true)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify(prefix, e))?;
            for p in page.parameters.unwrap_or_default() {
                if let (Some(n), Some(v)) = (p.name, p.value) {
                    out.insert(n, v);
                }
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }
}
