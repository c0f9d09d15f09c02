//! Traffic between Heroku and AWS as a Route 53 weighted record pair. Route 53 sends each
//! record weight / (sum of weights) of the answers; two zero weights split evenly, so Ferry
//! never writes both as zero.

use async_trait::async_trait;

use crate::{errors::StepErrorName, spec::TrafficSpec};

/// Set identifier of the Heroku record.
pub const HEROKU_ID: &str = "ferry-heroku";
/// Set identifier of the AWS record.
pub const AWS_ID: &str = "ferry-aws";

/// The pair's weights as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// Weight of the Heroku record.
    pub heroku: u32,
    /// Weight of the AWS record.
    pub aws: u32,
}

impl Weights {
    /// The pair that sends `aws_percent` of traffic to AWS (0-100).
    pub fn for_aws_percent(aws_percent: u32) -> Self {
        let aws = aws_percent.min(100);
        Self {
            heroku: 100 - aws,
            aws,
        }
    }

    /// The share of answers that go to AWS, in percent, as Route 53 computes it.
    pub fn aws_share_percent(self) -> f64 {
        match self.heroku + self.aws {
            0 => 50.0,
            sum => 100.0 * f64::from(self.aws) / f64::from(sum),
        }
    }
}

/// Why a traffic call failed.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The hosted zone does not exist or is not ours to change.
    #[error("hosted zone {zone} cannot be used: {reason}")]
    Zone {
        /// The zone id.
        zone: String,
        /// What Route 53 said.
        reason: String,
    },
    /// Route 53 refused the change (e.g. a plain record of the same name is in the way).
    #[error("Route 53 refused the weighted records for {name}: {reason}")]
    Refused {
        /// The record name.
        name: String,
        /// What Route 53 said.
        reason: String,
    },
    /// Throttled or a transient failure.
    #[error("Route 53 unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StepErrorName for TrafficError {
    fn step_error_name(&self) -> &'static str {
        match self {
            TrafficError::Zone { .. } => "Ferry.Blocked.HostedZone",
            TrafficError::Refused { .. } => "Ferry.Blocked.RecordRefused",
            TrafficError::Unavailable(_) => "Ferry.Retryable.Route53",
        }
    }
}

/// The weighted pair in the spec's hosted zone.
#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Writes both records (one change batch, so they change together).
    async fn set_weights(
        &self,
        traffic: &TrafficSpec,
        weights: Weights,
    ) -> Result<(), TrafficError>;

    /// Reads the pair back; `None` when Ferry has not created it yet.
    async fn weights(&self, traffic: &TrafficSpec) -> Result<Option<Weights>, TrafficError>;

    /// After the migration: the Heroku record at weight 0, then deleted, so the AWS record
    /// answers alone. `false` if there was no Heroku record (a retry).
    async fn retire_heroku(&self, traffic: &TrafficSpec) -> Result<bool, TrafficError>;

    /// The longest TTL of the records at the name that are not Ferry's pair (the record being
    /// replaced): resolvers may keep sending users to Heroku that long after a move.
    async fn replaced_ttl(&self, traffic: &TrafficSpec) -> Result<Option<u32>, TrafficError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_route53_arithmetic() {
        assert_eq!(
            Weights::for_aws_percent(0),
            Weights {
                heroku: 100,
                aws: 0
            }
        );
        assert_eq!(Weights::for_aws_percent(25).aws_share_percent(), 25.0);
        assert_eq!(
            Weights::for_aws_percent(100),
            Weights {
                heroku: 0,
                aws: 100
            }
        );
        assert_eq!(Weights::for_aws_percent(250).aws, 100);
        // Both zero: Route 53 splits evenly, which is why Ferry never writes that.
        assert_eq!(Weights { heroku: 0, aws: 0 }.aws_share_percent(), 50.0);
        assert_eq!(Weights { heroku: 3, aws: 1 }.aws_share_percent(), 25.0);
    }
}
