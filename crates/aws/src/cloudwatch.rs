//! [`Alarms`] on CloudWatch (metric and composite alarms).

use async_trait::async_trait;
use aws_sdk_cloudwatch::{
    Client,
    types::{AlarmType, StateValue},
};
use ferry_core::cloud::{AlarmStates, Alarms, CloudResult, Service};

use crate::cloud::classify;

/// CloudWatch alarms.
#[derive(Debug, Clone)]
pub struct CloudWatchAlarms {
    client: Client,
}

impl CloudWatchAlarms {
    /// Alarms through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Alarms for CloudWatchAlarms {
    async fn states(&self, names: &[String]) -> CloudResult<AlarmStates> {
        let mut seen = std::collections::BTreeMap::new();
        // DescribeAlarms takes at most 100 names per call.
        for chunk in names.chunks(100) {
            let mut token = None;
            loop {
                let out = self
                    .client
                    .describe_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    // Without AlarmTypes CloudWatch lists metric alarms only: a composite
                    // alarm named in the gate would read as missing.
                    .alarm_types(AlarmType::MetricAlarm)
                    .alarm_types(AlarmType::CompositeAlarm)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| classify(Service::CloudWatch, "DescribeAlarms", e))?;
                for a in out.metric_alarms() {
                    if let Some(n) = a.alarm_name() {
                        seen.insert(n.to_string(), a.state_value() == Some(&StateValue::Alarm));
                    }
                }
                for a in out.composite_alarms() {
                    if let Some(n) = a.alarm_name() {
                        seen.insert(n.to_string(), a.state_value() == Some(&StateValue::Alarm));
                    }
                }
                match out.next_token {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => break,
                }
            }
        }
        let mut states = AlarmStates::default();
        for n in names {
            match seen.get(n) {
                Some(true) => states.firing.push(n.clone()),
                Some(false) => {}
                None => states.missing.push(n.clone()),
            }
        }
        Ok(states)
    }
}
