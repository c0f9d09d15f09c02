//! Traffic between Heroku and AWS as a Route 53 weighted record pair. Route 53 sends each
//! record weight / (sum of weights) of the answers; two zero weights split evenly, so Ferry
//! never writes both as zero.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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

/// A record set at `traffic.record_name` that is not Ferry's pair, as Route 53 lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherRecord {
    /// `CNAME`, `A`, `AAAA`, `TXT`, …
    pub rtype: String,
    /// Set when the record set is weighted, latency-based, failover, … (not a simple record).
    pub set_identifier: Option<String>,
    /// Its TTL (none for an alias).
    pub ttl: Option<u32>,
    /// Its values (the alias target's DNS name for an alias).
    pub values: Vec<String>,
}

/// What is at `traffic.record_name` before Ferry writes its weighted pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState {
    /// The hosted zone's own name (its apex).
    pub zone_name: String,
    /// Every record set of the name that is not Ferry's pair.
    pub others: Vec<OtherRecord>,
}

/// The simple CNAME the weighted pair replaces, as it was: the first move deletes it in the
/// same change batch that creates the pair (Route 53 refuses a weighted set beside a simple one
/// of the same name and type), and a rollback puts it back the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedRecord {
    /// Where it pointed.
    pub value: String,
    /// Its TTL, in seconds.
    pub ttl: u32,
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl NameState {
    /// What Route 53 would refuse, or what would change the app's routing unasked, as
    /// blockers that name the field and the fix; otherwise the simple CNAME the pair replaces
    /// (`None`: a new name, nothing to replace).
    pub fn plan(&self, spec: &TrafficSpec) -> Result<Option<ReplacedRecord>, Vec<String>> {
        let name = &spec.record_name;
        let mut problems = Vec::new();
        if same_name(name, &self.zone_name) {
            problems.push(format!(
                "traffic.record_name: {name} is the apex of its hosted zone; Route 53 allows no CNAME there, so no weighted CNAME pair. Fix: shift a subdomain (www.{name}) and redirect the apex to it, then name that subdomain here"
            ));
        }
        let mut replaced = None;
        for other in &self.others {
            let values = other.values.join(", ");
            if other.rtype != "CNAME" {
                problems.push(format!(
                    "traffic.record_name: {name} has a {} record ({values}); a CNAME cannot sit beside another record of the same name. Fix: replace it with a CNAME to traffic.heroku_target ({}) before the migration",
                    other.rtype, spec.heroku_target
                ));
            } else if let Some(id) = &other.set_identifier {
                problems.push(format!(
                    "traffic.record_name: {name} already has a routing record set (set identifier {id}, to {values}); Ferry writes its own weighted pair. Fix: replace the routing records with one simple CNAME to traffic.heroku_target ({})",
                    spec.heroku_target
                ));
            } else if !other
                .values
                .iter()
                .all(|v| same_name(v, &spec.heroku_target))
            {
                problems.push(format!(
                    "traffic.record_name: {name} points at {values}, not at traffic.heroku_target ({}); the pair would send Heroku's share elsewhere than today. Fix: set traffic.heroku_target to {values}, or point the record at Heroku first",
                    spec.heroku_target
                ));
            } else {
                replaced = Some(ReplacedRecord {
                    value: other.values.first().cloned().unwrap_or_default(),
                    ttl: other.ttl.unwrap_or(spec.ttl_seconds),
                });
            }
        }
        if problems.is_empty() {
            Ok(replaced)
        } else {
            Err(problems)
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
    /// Writes both records (one change batch, so they change together). The first write
    /// deletes the simple CNAME of the same name in that batch.
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

    /// What is at the name besides Ferry's pair, and the zone's apex: preflight judges it with
    /// [`NameState::plan`].
    async fn inspect(&self, traffic: &TrafficSpec) -> Result<NameState, TrafficError>;

    /// Rollback: the pair deleted and `replaced` created again, in one change batch. `false`
    /// when there was no pair (nothing to undo, or a retry).
    async fn restore(
        &self,
        traffic: &TrafficSpec,
        replaced: &ReplacedRecord,
    ) -> Result<bool, TrafficError>;
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

    fn traffic() -> TrafficSpec {
        serde_json::from_value(serde_json::json!({
            "hosted_zone_id": "Z0123456789ABCDEFGHIJ",
            "record_name": "app.acme.example",
            "heroku_target": "acme-prod-123.herokudns.com",
            "aws_target": "acme-alb-1.us-east-1.elb.amazonaws.com",
            "health": {"url": "https://aws.acme.example/healthz"}
        }))
        .expect("traffic spec")
    }

    fn cname(value: &str, ttl: u32) -> OtherRecord {
        OtherRecord {
            rtype: "CNAME".into(),
            set_identifier: None,
            ttl: Some(ttl),
            values: vec![value.into()],
        }
    }

    #[test]
    fn a_simple_cname_to_heroku_is_the_record_replaced() {
        let t = traffic();
        let state = NameState {
            zone_name: "acme.example.".into(),
            others: vec![cname(&format!("{}.", t.heroku_target.to_uppercase()), 3600)],
        };
        assert_eq!(
            state.plan(&t),
            Ok(Some(ReplacedRecord {
                value: format!("{}.", t.heroku_target.to_uppercase()),
                ttl: 3600
            }))
        );
        let fresh = NameState {
            zone_name: "acme.example.".into(),
            others: vec![],
        };
        assert_eq!(fresh.plan(&t), Ok(None), "a new name replaces nothing");
    }

    #[test]
    fn what_route53_refuses_is_a_blocker_naming_the_field_and_the_fix() {
        let mut t = traffic();
        let refused = |state: NameState, t: &TrafficSpec, needle: &str| {
            let problems = state.plan(t).expect_err("refused");
            assert!(
                problems
                    .iter()
                    .all(|p| p.starts_with("traffic.record_name: ") && p.contains("Fix: ")),
                "{problems:?}"
            );
            assert!(problems.iter().any(|p| p.contains(needle)), "{problems:?}");
        };
        let zone = |others| NameState {
            zone_name: "acme.example.".into(),
            others,
        };
        let mut a = cname("203.0.113.9", 60);
        a.rtype = "A".into();
        refused(zone(vec![a]), &t, "has a A record");
        let mut weighted = cname(&t.heroku_target, 60);
        weighted.set_identifier = Some("blue".into());
        refused(zone(vec![weighted]), &t, "set identifier blue");
        refused(
            zone(vec![cname("acme.cdn.example", 60)]),
            &t,
            "points at acme.cdn.example",
        );
        t.record_name = "Acme.Example".into();
        refused(zone(vec![]), &t, "is the apex");
    }
}
