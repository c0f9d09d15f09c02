//! The price table: a dated, sourced JSON file checked into the repository
//! (`crates/plan/prices.json`), which a user may override key by key with a file of their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PlanError;

/// The table that ships with Ferry.
pub const BUILT_IN: &str = include_str!("../prices.json");

/// Every price `ferry plan` uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// The day the prices were compiled.
    pub as_of: String,
    /// Always `USD` in the built-in table.
    pub currency: String,
    /// The AWS region the AWS prices are for.
    pub aws_region: String,
    /// Hours in a billing month (730).
    pub hours_per_month: f64,
    /// Where the prices come from.
    pub sources: Vec<String>,
    /// What to keep in mind about them.
    pub caveat: String,
    /// Heroku's side.
    pub heroku: HerokuPrices,
    /// AWS's side.
    pub aws: AwsPrices,
}

/// Heroku list prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HerokuPrices {
    /// Dyno size (`standard-2X`) → price.
    pub dynos: BTreeMap<String, Dyno>,
    /// Heroku Postgres plan (`standard-0`, without the `heroku-postgresql:` prefix) → price.
    pub postgres: BTreeMap<String, PostgresPlan>,
    /// Heroku Key-Value Store (Redis) plan (`premium-0`) → price.
    pub key_value: BTreeMap<String, KeyValuePlan>,
}

/// One dyno size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dyno {
    /// Price per dyno per month.
    pub monthly: f64,
    /// Its memory.
    pub memory_mb: u32,
    /// A remark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One Heroku Postgres plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresPlan {
    /// Price per month.
    pub monthly: f64,
    /// Its memory.
    pub ram_gb: f64,
    /// Its storage limit.
    pub storage_gb: f64,
    /// Its connection limit.
    pub connections: u32,
    /// Whether it has a standby (premium and up): the RDS side is then Multi-AZ.
    pub ha: bool,
}

/// One Heroku Key-Value Store plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValuePlan {
    /// Price per month.
    pub monthly: f64,
    /// Its memory.
    pub memory_mb: u32,
}

/// AWS list prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsPrices {
    /// Fargate per architecture (`arm64`, `x86_64`).
    pub fargate: BTreeMap<String, FargateRate>,
    /// Dyno size → the Fargate task size that replaces it.
    pub dyno_to_fargate: BTreeMap<String, TaskSize>,
    /// RDS for PostgreSQL instance classes (single-AZ).
    pub rds_postgres: BTreeMap<String, RdsClass>,
    /// gp3 storage per GB-month (single-AZ).
    pub rds_storage_gp3_gb_month: f64,
    /// ElastiCache node types.
    pub elasticache: BTreeMap<String, CacheNode>,
    /// An Application Load Balancer per month before LCUs.
    pub alb_monthly: f64,
    /// A Route 53 hosted zone per month.
    pub route53_hosted_zone_monthly: f64,
    /// A NAT gateway per hour, before data processing.
    pub nat_gateway_hourly: f64,
    /// A public IPv4 address per hour (the NAT gateway's).
    pub public_ipv4_hourly: f64,
    /// A Secrets Manager secret per month.
    pub secret_monthly: f64,
    /// A standard-resolution CloudWatch alarm per month.
    pub alarm_monthly: f64,
}

/// Fargate's per-hour rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FargateRate {
    /// Per vCPU-hour.
    pub vcpu_hour: f64,
    /// Per GB-hour.
    pub gb_hour: f64,
}

/// A Fargate task size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSize {
    /// vCPUs.
    pub vcpu: f64,
    /// Memory.
    pub memory_gb: f64,
}

/// An RDS instance class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsClass {
    /// Price per hour, single-AZ.
    pub hourly: f64,
    /// vCPUs.
    pub vcpu: u32,
    /// Memory.
    pub ram_gb: f64,
    /// A burstable (T) class: chosen only for small databases.
    pub burstable: bool,
}

/// An ElastiCache node type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheNode {
    /// Price per hour.
    pub hourly: f64,
    /// Memory.
    pub memory_mb: u32,
}

impl Prices {
    /// The built-in table.
    pub fn built_in() -> Self {
        Self::from_values(builtin_value(), None).unwrap_or_else(|e| {
            // The built-in table is checked by a unit test; this cannot happen in a release.
            panic!("the built-in price table does not parse: {e}")
        })
    }

    /// The built-in table with `override_json` laid over it key by key: an object replaces
    /// the keys it names and keeps the others; any other value replaces the built-in one.
    pub fn with_override(override_json: &str, origin: &str) -> Result<Self, PlanError> {
        let over: Value = serde_json::from_str(override_json).map_err(|e| PlanError::Prices {
            origin: origin.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        if !over.is_object() {
            return Err(PlanError::Prices {
                origin: origin.to_string(),
                reason: "must be a JSON object shaped like crates/plan/prices.json".into(),
            });
        }
        Self::from_values(builtin_value(), Some((over, origin)))
    }

    fn from_values(mut base: Value, over: Option<(Value, &str)>) -> Result<Self, PlanError> {
        let origin = over.as_ref().map_or("built-in prices.json", |(_, o)| *o);
        if let Some((over, _)) = over {
            merge(&mut base, over);
        }
        serde_path_to_error::deserialize(base).map_err(|e| PlanError::Prices {
            origin: origin.to_string(),
            reason: format!(
                "at {}: {}; see crates/plan/prices.json for the shape",
                e.path(),
                e.inner()
            ),
        })
    }

    /// Monthly price of `hourly` running all month.
    pub fn month(&self, hourly: f64) -> f64 {
        hourly * self.hours_per_month
    }
}

fn builtin_value() -> Value {
    serde_json::from_str(BUILT_IN).unwrap_or(Value::Null)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_parses_and_is_dated() {
        let p = Prices::built_in();
        assert_eq!(p.as_of.len(), 10, "as_of is a date");
        assert!(!p.sources.is_empty());
        // Every dyno size has a Fargate size, and every Fargate size is one Fargate offers.
        for size in p.heroku.dynos.keys() {
            let t = p.aws.dyno_to_fargate.get(size).unwrap_or_else(|| {
                panic!("dyno size {size} has no Fargate size in dyno_to_fargate")
            });
            // In quarter vCPUs, so the match is on whole numbers.
            let ok = match (t.vcpu * 4.0).round() as u32 {
                1 => [0.5, 1.0, 2.0].contains(&t.memory_gb),
                2 => (1.0..=4.0).contains(&t.memory_gb),
                4 => (2.0..=8.0).contains(&t.memory_gb),
                8 => (4.0..=16.0).contains(&t.memory_gb),
                16 => (8.0..=30.0).contains(&t.memory_gb),
                32 => (16.0..=60.0).contains(&t.memory_gb),
                64 => (32.0..=120.0).contains(&t.memory_gb),
                _ => false,
            };
            assert!(
                ok,
                "{size} maps to a task size Fargate does not offer: {t:?}"
            );
        }
    }

    #[test]
    fn an_override_replaces_only_the_keys_it_names() {
        let p = Prices::with_override(
            r#"{"as_of": "2027-01-01", "heroku": {"dynos": {"standard-2X": {"monthly": 60, "memory_mb": 1024}}}}"#,
            "mine.json",
        )
        .expect("override applies");
        assert_eq!(p.as_of, "2027-01-01");
        assert_eq!(p.heroku.dynos["standard-2X"].monthly, 60.0);
        assert_eq!(p.heroku.dynos["standard-1X"].monthly, 25.0, "kept");
    }

    #[test]
    fn a_bad_override_names_the_file_and_the_field() {
        let e = Prices::with_override(r#"{"aws": {"alb_monthly": "cheap"}}"#, "mine.json")
            .expect_err("a string is no price")
            .to_string();
        assert!(
            e.contains("mine.json") && e.contains("aws.alb_monthly"),
            "{e}"
        );
        let e = Prices::with_override(r#"{"heroku": {"dynoz": {}}}"#, "mine.json")
            .expect_err("typo")
            .to_string();
        assert!(e.contains("heroku") && e.contains("dynoz"), "{e}");
        let e = Prices::with_override("[1]", "mine.json")
            .expect_err("not an object")
            .to_string();
        assert!(e.contains("mine.json"), "{e}");
    }
}
