//! [`Notifier`] on SNS.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use ferry_core::cloud::{CloudResult, Notifier, Service};

use crate::cloud::classify;

/// SNS topics.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
}

impl SnsNotifier {
    /// Publishes through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// SNS subjects: ASCII, no line breaks, at most 100 characters.
fn subject(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                ' '
            }
        })
        .take(100)
        .collect()
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, topic_arn: &str, subj: &str, message: &str) -> CloudResult<()> {
        self.client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject(subj))
            .message(message)
            .send()
            .await
            .map_err(|e| classify(Service::Sns, "Publish", e))?;
        Ok(())
    }
}
