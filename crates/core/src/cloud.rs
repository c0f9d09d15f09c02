//! Narrow interfaces to the other AWS services the steps use: EventBridge (canary schedule),
//! CloudWatch (health alarms), SNS (approval prompts), ECS (the worker task, app services) and
//! RDS (the target instance). Adapters live in `ferry-aws`; each is tested against the
//! emulator.

use std::fmt;

use async_trait::async_trait;

use crate::errors::StepErrorName;

/// Which service an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Amazon EventBridge.
    EventBridge,
    /// Amazon CloudWatch.
    CloudWatch,
    /// Amazon SNS.
    Sns,
    /// Amazon ECS.
    Ecs,
    /// Amazon RDS.
    Rds,
    /// Slack (incoming webhook).
    Slack,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::EventBridge => "EventBridge",
            Service::CloudWatch => "CloudWatch",
            Service::Sns => "SNS",
            Service::Ecs => "ECS",
            Service::Rds => "RDS",
            Service::Slack => "Slack",
        })
    }
}

/// Why a call to one of these services failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The service refused the request (access denied, invalid value, missing resource): a
    /// person must fix the setup.
    #[error("{service} refused {what}: {reason}")]
    Refused {
        /// The service.
        service: Service,
        /// What was asked, e.g. `RunTask`.
        what: String,
        /// The service's explanation.
        reason: String,
    },
    /// Throttled or unreachable: worth a retry.
    #[error("{service} unavailable: {source}")]
    Unavailable {
        /// The service.
        service: Service,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StepErrorName for CloudError {
    fn step_error_name(&self) -> &'static str {
        match self {
            CloudError::Refused { service, .. } => match service {
                Service::EventBridge => "Ferry.Blocked.EventBridge",
                Service::CloudWatch => "Ferry.Blocked.CloudWatch",
                Service::Sns => "Ferry.Blocked.Sns",
                Service::Ecs => "Ferry.Blocked.Ecs",
                Service::Rds => "Ferry.Blocked.Rds",
                Service::Slack => "Ferry.Blocked.Slack",
            },
            CloudError::Unavailable { service, .. } => match service {
                Service::EventBridge => "Ferry.Retryable.EventBridge",
                Service::CloudWatch => "Ferry.Retryable.CloudWatch",
                Service::Sns => "Ferry.Retryable.Sns",
                Service::Ecs => "Ferry.Retryable.Ecs",
                Service::Rds => "Ferry.Retryable.Rds",
                Service::Slack => "Ferry.Retryable.Slack",
            },
        }
    }
}

/// Result of a call to one of these services.
pub type CloudResult<T> = Result<T, CloudError>;

/// A scheduled rule that invokes a function with a fixed input (the canary's ticks).
#[async_trait]
pub trait Schedule: Send + Sync {
    /// Creates or replaces rule `name` firing every `minutes` minutes, targeting the function
    /// `target_arn` with `input` as its event.
    async fn put_rate_rule(
        &self,
        name: &str,
        minutes: u32,
        target_arn: &str,
        input: &serde_json::Value,
    ) -> CloudResult<()>;

    /// Deletes the rule and its targets; `false` if there was none.
    async fn delete_rule(&self, name: &str) -> CloudResult<bool>;

    /// Whether the rule exists.
    async fn rule_exists(&self, name: &str) -> CloudResult<bool>;
}

/// The state of the health alarms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmStates {
    /// Alarms in ALARM.
    pub firing: Vec<String>,
    /// Alarms that do not exist (a typo would otherwise make the gate pass forever).
    pub missing: Vec<String>,
}

/// CloudWatch alarms.
#[async_trait]
pub trait Alarms: Send + Sync {
    /// Which of `names` are in ALARM, and which do not exist.
    async fn states(&self, names: &[String]) -> CloudResult<AlarmStates>;
}

/// Publishes approval prompts and notices.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Publishes `message` with `subject` to the topic, for every subscriber (message
    /// attribute `ferry_approver` = `all`).
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> CloudResult<()>;

    /// Publishes `message` for one approver only: message attribute `ferry_approver` =
    /// `approver`, which a subscription's filter policy (`{"ferry_approver": ["all",
    /// "<address>"]}`) delivers to that approver's subscription alone.
    async fn publish_for(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        approver: &str,
    ) -> CloudResult<()>;

    /// The topic's subscriptions with their filter policies (preflight checks that an email
    /// subscription cannot receive another approver's links).
    async fn subscriptions(&self, topic_arn: &str) -> CloudResult<Vec<Subscription>>;
}

/// One subscription to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `email`, `email-json`, `sqs`, `https`…
    pub protocol: String,
    /// The address, queue or URL it delivers to.
    pub endpoint: String,
    /// Its filter policy (JSON), if any.
    pub filter_policy: Option<String>,
}

impl Subscription {
    /// For an email subscription: why it could receive a message meant for another approver
    /// (its filter policy must limit `ferry_approver` to `all` and its own address), or None.
    pub fn leaks_links(&self) -> Option<String> {
        if !self.protocol.starts_with("email") {
            return None;
        }
        let allowed: Option<Vec<String>> = self
            .filter_policy
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|v| {
                v.get(AUDIENCE_ATTRIBUTE)?
                    .as_array()?
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect()
            });
        match allowed {
            None => Some(
                "has no filter policy on ferry_approver, so it receives every approver's links"
                    .into(),
            ),
            Some(list) => list
                .iter()
                .find(|x| *x != AUDIENCE_ALL && !x.eq_ignore_ascii_case(&self.endpoint))
                .map(|x| format!("lets through messages for {x}, whose links decide as them")),
        }
    }
}

/// The SNS message attribute that names who a message is for.
pub const AUDIENCE_ATTRIBUTE: &str = "ferry_approver";
/// Its value on a message for every subscriber.
pub const AUDIENCE_ALL: &str = "all";

/// A worker task as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The task ARN.
    pub task_arn: String,
    /// `PROVISIONING`, `PENDING`, `RUNNING`, `STOPPED`…
    pub last_status: String,
    /// Why it stopped, when it did.
    pub stopped_reason: Option<String>,
}

impl TaskState {
    /// Whether the task has ended (or is ending).
    pub fn is_stopped(&self) -> bool {
        matches!(
            self.last_status.as_str(),
            "STOPPED" | "DEPROVISIONING" | "STOPPING"
        )
    }
}

/// Runs the replication worker and redeploys the app's ECS services.
#[async_trait]
pub trait Compute: Send + Sync {
    /// Starts one worker task for the migration; returns its ARN.
    async fn run_worker(&self, migration_id: &str) -> CloudResult<String>;

    /// The task's state; `None` if ECS no longer knows it.
    async fn task(&self, task_arn: &str) -> CloudResult<Option<TaskState>>;

    /// Stops a task (stopping a stopped task succeeds).
    async fn stop_task(&self, task_arn: &str, reason: &str) -> CloudResult<()>;

    /// Forces a new deployment of `cluster/service` so its tasks reread their secrets.
    async fn redeploy(&self, cluster: &str, service: &str) -> CloudResult<()>;
}

/// What the preflight needs to know about the RDS instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInstance {
    /// `available`, `modifying`, …
    pub status: String,
    /// `postgres`, `aurora-postgresql`, …
    pub engine: String,
    /// e.g. `17.2`.
    pub engine_version: String,
    /// The DB parameter group in use.
    pub parameter_group: Option<String>,
    /// The endpoint's address.
    pub endpoint: Option<String>,
    /// The master user's name.
    pub master_username: Option<String>,
    /// The Secrets Manager secret in which RDS manages (and rotates) the master password, when
    /// it does (`ManageMasterUserPassword`).
    pub master_secret_arn: Option<String>,
}

/// Amazon RDS.
#[async_trait]
pub trait Databases: Send + Sync {
    /// The instance; `None` if there is none of that id.
    async fn instance(&self, id: &str) -> CloudResult<Option<DbInstance>>;

    /// A parameter's value in a DB parameter group (`None`: not set / engine default).
    async fn parameter(&self, group: &str, name: &str) -> CloudResult<Option<String>>;
}

/// A resource name `prefix` + `id` that fits `max` characters and stays unique per id: when it
/// would not fit, the id is cut and a hash of the whole id (12 hex digits of SHA-256) is
/// appended, so two long ids sharing a beginning never get the same name.
pub fn bounded_name(prefix: &str, id: &str, max: usize) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{prefix}{id}");
    if full.len() <= max {
        return full;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let keep = max.saturating_sub(hash.len() + 1);
    let mut cut: String = full.chars().take(keep).collect();
    cut.push('-');
    cut.push_str(&hash);
    cut
}

#[cfg(test)]
mod bounded_name_tests {
    use super::bounded_name;

    #[test]
    fn short_names_are_kept_and_long_ones_stay_apart() {
        assert_eq!(
            bounded_name("ferry-canary-", "acme-1", 64),
            "ferry-canary-acme-1"
        );
        let common = "a".repeat(51);
        let (one, two) = (
            format!("{common}{}", "b".repeat(29)),
            format!("{common}{}", "c".repeat(29)),
        );
        let (n1, n2) = (
            bounded_name("ferry-canary-", &one, 64),
            bounded_name("ferry-canary-", &two, 64),
        );
        assert_eq!(n1.len(), 64);
        assert_eq!(n2.len(), 64);
        assert_ne!(n1, n2, "two 80-character ids sharing 51 characters");
        assert!(n1.starts_with("ferry-canary-aaaa"));
        assert_eq!(n1, bounded_name("ferry-canary-", &one, 64), "stable");
    }
}
