//! Error classification shared by the EventBridge, CloudWatch, SNS, ECS and RDS adapters.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use ferry_core::cloud::{CloudError, Service};

/// Error codes that mean "try again later" across these services.
const TRANSIENT: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServiceError",
    "InternalError",
    "ServerException",
];

/// Sorts an SDK error into "a person must fix this" and "retry".
pub(crate) fn classify<E, R>(service: Service, what: &str, e: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            if TRANSIENT.contains(&code) {
                CloudError::Unavailable {
                    service,
                    source: format!("{code}: {}", err.message().unwrap_or("no detail")).into(),
                }
            } else {
                CloudError::Refused {
                    service,
                    what: what.to_string(),
                    reason: format!("{code}: {}", err.message().unwrap_or("no detail")),
                }
            }
        }
        _ => CloudError::Unavailable {
            service,
            source: aws_smithy_types::error::display::DisplayErrorContext(&e)
                .to_string()
                .into(),
        },
    }
}

/// The error code of a service error, if it is one.
pub(crate) fn code<E, R>(e: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// A builder that refused a missing required field: a bug in Ferry, reported as refused.
pub(crate) fn build_error(service: Service, what: &str, e: impl std::fmt::Display) -> CloudError {
    CloudError::Refused {
        service,
        what: what.to_string(),
        reason: format!("request could not be built: {e}"),
    }
}
