//! Stable error names for Step Functions. A step's error becomes the Lambda `errorType`, which
//! the state machine's `Retry`/`Catch` match by name, so these names are a public contract.

/// An error that has a stable Step Functions error name.
pub trait StepErrorName {
    /// The name the ASL's `ErrorEquals` lists, e.g. `Ferry.Blocked.LockHeld`. Names under
    /// `Ferry.Retryable.` are retried by the state machine; the rest go to a Catch.
    fn step_error_name(&self) -> &'static str;
}

/// Whether a step error name is one the state machine retries.
pub fn is_retryable(name: &str) -> bool {
    name.starts_with("Ferry.Retryable.")
}
