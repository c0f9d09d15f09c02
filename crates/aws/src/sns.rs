//! [`Notifier`] on SNS.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use ferry_core::cloud::{
    AUDIENCE_ALL, AUDIENCE_ATTRIBUTE, CloudResult, Notifier, Service, Subscription,
};

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

impl SnsNotifier {
    async fn send(
        &self,
        topic_arn: &str,
        subj: &str,
        message: &str,
        audience: &str,
    ) -> CloudResult<()> {
        let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(audience)
            .build()
            .map_err(|e| ferry_core::cloud::CloudError::Refused {
                service: Service::Sns,
                what: "message attribute".into(),
                reason: e.to_string(),
            })?;
        self.client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject(subj))
            .message(message)
            .message_attributes(AUDIENCE_ATTRIBUTE, attribute)
            .send()
            .await
            .map_err(|e| classify(Service::Sns, "Publish", e))?;
        Ok(())
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, topic_arn: &str, subj: &str, message: &str) -> CloudResult<()> {
        self.send(topic_arn, subj, message, AUDIENCE_ALL).await
    }

    async fn publish_for(
        &self,
        topic_arn: &str,
        subj: &str,
        message: &str,
        approver: &str,
    ) -> CloudResult<()> {
        self.send(topic_arn, subj, message, approver).await
    }

    async fn subscriptions(&self, topic_arn: &str) -> CloudResult<Vec<Subscription>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .list_subscriptions_by_topic()
                .topic_arn(topic_arn)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify(Service::Sns, "ListSubscriptionsByTopic", e))?;
            for s in page.subscriptions() {
                let arn = s.subscription_arn().unwrap_or_default();
                // A subscription waiting for its confirmation has no attributes yet.
                let filter_policy = if arn.starts_with("arn:") {
                    self.client
                        .get_subscription_attributes()
                        .subscription_arn(arn)
                        .send()
                        .await
                        .map_err(|e| classify(Service::Sns, "GetSubscriptionAttributes", e))?
                        .attributes()
                        .and_then(|a| a.get("FilterPolicy").cloned())
                } else {
                    None
                };
                out.push(Subscription {
                    protocol: s.protocol().unwrap_or_default().to_string(),
                    endpoint: s.endpoint().unwrap_or_default().to_string(),
                    filter_policy,
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }
}
