//! [`Schedule`] on EventBridge rules (the canary's ticks).

use async_trait::async_trait;
use aws_sdk_eventbridge::{
    Client,
    types::{RuleState, Target},
};
use ferry_core::cloud::{CloudResult, Schedule, Service};

use crate::cloud::{build_error, classify, code};

/// The id of the single target Ferry puts on its rules.
const TARGET_ID: &str = "ferry-canary-step";

/// EventBridge scheduled rules.
#[derive(Debug, Clone)]
pub struct EventBridgeSchedule {
    client: Client,
}

impl EventBridgeSchedule {
    /// Rules through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The schedule expression AWS accepts: `rate(1 minute)` is singular, everything else plural.
pub fn rate_expression(minutes: u32) -> String {
    if minutes == 1 {
        "rate(1 minute)".to_string()
    } else {
        format!("rate({minutes} minutes)")
    }
}

#[async_trait]
impl Schedule for EventBridgeSchedule {
    async fn put_rate_rule(
        &self,
        name: &str,
        minutes: u32,
        target_arn: &str,
        input: &serde_json::Value,
    ) -> CloudResult<()> {
        const WHAT: &str = "PutRule";
        self.client
            .put_rule()
            .name(name)
            .schedule_expression(rate_expression(minutes))
            .state(RuleState::Enabled)
            .description("Ferry canary: moves the Route 53 weights one step per tick")
            .send()
            .await
            .map_err(|e| classify(Service::EventBridge, WHAT, e))?;
        let target = Target::builder()
            .id(TARGET_ID)
            .arn(target_arn)
            .input(input.to_string())
            .build()
            .map_err(|e| build_error(Service::EventBridge, "PutTargets", e))?;
        let out = self
            .client
            .put_targets()
            .rule(name)
            .targets(target)
            .send()
            .await
            .map_err(|e| classify(Service::EventBridge, "PutTargets", e))?;
        if let Some(failed) = out.failed_entries.filter(|f| !f.is_empty()) {
            return Err(ferry_core::cloud::CloudError::Refused {
                service: Service::EventBridge,
                what: "PutTargets".into(),
                reason: failed
                    .iter()
                    .map(|f| f.error_message.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(())
    }

    async fn delete_rule(&self, name: &str) -> CloudResult<bool> {
        match self
            .client
            .remove_targets()
            .rule(name)
            .ids(TARGET_ID)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(false),
            Err(e) => return Err(classify(Service::EventBridge, "RemoveTargets", e)),
        }
        match self.client.delete_rule().name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(classify(Service::EventBridge, "DeleteRule", e)),
        }
    }

    async fn rule_exists(&self, name: &str) -> CloudResult<bool> {
        match self.client.describe_rule().name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(classify(Service::EventBridge, "DescribeRule", e)),
        }
    }
}
