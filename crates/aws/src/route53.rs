//! [`TrafficRouter`] on Route 53: two weighted CNAME records of the spec's name, with set
//! identifiers `ferry-heroku` and `ferry-aws`, always changed in one batch. Route 53 refuses a
//! weighted set beside a simple one of the same name and type, so the batch that first writes
//! the pair deletes the app's simple CNAME (exactly as listed), and a rollback's batch deletes
//! the pair and creates that CNAME again.

use async_trait::async_trait;
use aws_sdk_route53::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType},
};
use ferry_core::{
    spec::TrafficSpec,
    traffic::{
        AWS_ID, HEROKU_ID, NameState, OtherRecord, ReplacedRecord, TrafficError, TrafficRouter,
        Weights,
    },
};

/// Route 53.
#[derive(Debug, Clone)]
pub struct Route53Router {
    client: Client,
}

impl Route53Router {
    /// Records through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

fn zone_id(spec: &TrafficSpec) -> &str {
    spec.hosted_zone_id
        .strip_prefix("/hostedzone/")
        .unwrap_or(&spec.hosted_zone_id)
}

fn classify<E>(spec: &TrafficSpec, e: SdkError<E>) -> TrafficError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let reason = e.message().unwrap_or("no detail").to_string();
    match e.code() {
        Some("NoSuchHostedZone" | "AccessDenied") => TrafficError::Zone {
            zone: spec.hosted_zone_id.clone(),
            reason,
        },
        Some("InvalidChangeBatch" | "InvalidInput") => TrafficError::Refused {
            name: spec.record_name.clone(),
            reason,
        },
        _ => TrafficError::Unavailable(Box::new(e)),
    }
}

fn refused(spec: &TrafficSpec, e: impl std::fmt::Display) -> TrafficError {
    TrafficError::Refused {
        name: spec.record_name.clone(),
        reason: e.to_string(),
    }
}

impl Route53Router {
    /// The record sets of the spec's name, every type (both weighted records, when present,
    /// and whatever record they replace).
    async fn records(&self, spec: &TrafficSpec) -> Result<Vec<ResourceRecordSet>, TrafficError> {
        let name = fqdn(&spec.record_name);
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone_id(spec))
            .start_record_name(&name)
            .max_items(20)
            .send()
            .await
            .map_err(|e| classify(spec, e))?;
        Ok(out
            .resource_record_sets()
            .iter()
            .filter(|r| fqdn(r.name()) == name)
            .cloned()
            .collect())
    }

    /// One of the pair, by set identifier.
    async fn record_of(
        &self,
        spec: &TrafficSpec,
        id: &str,
    ) -> Result<Option<ResourceRecordSet>, TrafficError> {
        Ok(self
            .records(spec)
            .await?
            .into_iter()
            .find(|r| r.set_identifier() == Some(id)))
    }

    async fn submit(&self, spec: &TrafficSpec, batch: ChangeBatch) -> Result<(), TrafficError> {
        self.client
            .change_resource_record_sets()
            .hosted_zone_id(zone_id(spec))
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| classify(spec, e))?;
        Ok(())
    }
}

fn ours(r: &ResourceRecordSet) -> bool {
    matches!(r.set_identifier(), Some(HEROKU_ID | AWS_ID))
}

/// The simple CNAME at the name, which the pair replaces.
fn simple_cname(r: &ResourceRecordSet) -> bool {
    r.set_identifier().is_none() && *r.r#type() == RrType::Cname
}

fn change(
    spec: &TrafficSpec,
    action: ChangeAction,
    rrs: ResourceRecordSet,
) -> Result<Change, TrafficError> {
    Change::builder()
        .action(action)
        .resource_record_set(rrs)
        .build()
        .map_err(|e| refused(spec, e))
}

fn simple_record(
    spec: &TrafficSpec,
    r: &ReplacedRecord,
) -> Result<ResourceRecordSet, TrafficError> {
    ResourceRecordSet::builder()
        .name(fqdn(&spec.record_name))
        .r#type(RrType::Cname)
        .ttl(i64::from(r.ttl))
        .resource_records(
            ResourceRecord::builder()
                .value(&r.value)
                .build()
                .map_err(|e| refused(spec, e))?,
        )
        .build()
        .map_err(|e| refused(spec, e))
}

fn record(
    spec: &TrafficSpec,
    id: &str,
    target: &str,
    weight: u32,
) -> Result<ResourceRecordSet, TrafficError> {
    let invalid = |e: aws_sdk_route53::error::BuildError| TrafficError::Refused {
        name: spec.record_name.clone(),
        reason: e.to_string(),
    };
    ResourceRecordSet::builder()
        .name(fqdn(&spec.record_name))
        .r#type(RrType::Cname)
        .set_identifier(id)
        .weight(i64::from(weight))
        .ttl(i64::from(spec.ttl_seconds))
        .resource_records(
            ResourceRecord::builder()
                .value(target)
                .build()
                .map_err(invalid)?,
        )
        .build()
        .map_err(invalid)
}

#[async_trait]
impl TrafficRouter for Route53Router {
    async fn set_weights(&self, spec: &TrafficSpec, weights: Weights) -> Result<(), TrafficError> {
        if weights.heroku == 0 && weights.aws == 0 {
            return Err(TrafficError::Refused {
                name: spec.record_name.clone(),
                reason: "both weights 0 would split traffic evenly".into(),
            });
        }
        // The simple CNAME goes in the batch that writes the pair, deleted exactly as listed.
        let mut batch = ChangeBatch::builder().comment("ferry: traffic weights");
        for r in self.records(spec).await?.into_iter().filter(simple_cname) {
            batch = batch.changes(change(spec, ChangeAction::Delete, r)?);
        }
        let batch = batch
            .changes(change(
                spec,
                ChangeAction::Upsert,
                record(spec, HEROKU_ID, &spec.heroku_target, weights.heroku)?,
            )?)
            .changes(change(
                spec,
                ChangeAction::Upsert,
                record(spec, AWS_ID, &spec.aws_target, weights.aws)?,
            )?)
            .build()
            .map_err(|e| refused(spec, e))?;
        self.submit(spec, batch).await
    }

    async fn retire_heroku(&self, spec: &TrafficSpec) -> Result<bool, TrafficError> {
        match self.weights(spec).await? {
            Some(w) if w.heroku == 0 && w.aws > 0 => {}
            Some(_) => {
                self.set_weights(spec, Weights::for_aws_percent(100))
                    .await?
            }
            None => return Ok(false),
        }
        // The Heroku record as stored now (weight 0): a delete must match it exactly.
        let Some(existing) = self.record_of(spec, HEROKU_ID).await? else {
            return Ok(false);
        };
        let batch = ChangeBatch::builder()
            .comment("ferry: retire the Heroku record")
            .changes(change(spec, ChangeAction::Delete, existing)?)
            .build()
            .map_err(|e| refused(spec, e))?;
        self.submit(spec, batch).await?;
        Ok(true)
    }

    async fn inspect(&self, spec: &TrafficSpec) -> Result<NameState, TrafficError> {
        let zone = self
            .client
            .get_hosted_zone()
            .id(zone_id(spec))
            .send()
            .await
            .map_err(|e| classify(spec, e))?;
        let zone_name = zone
            .hosted_zone()
            .map(|z| z.name().to_string())
            .unwrap_or_default();
        let others = self
            .records(spec)
            .await?
            .iter()
            .filter(|r| !ours(r))
            .map(|r| OtherRecord {
                rtype: r.r#type().as_str().to_string(),
                set_identifier: r.set_identifier().map(str::to_string),
                ttl: r.ttl().map(|t| t.clamp(0, i64::from(u32::MAX)) as u32),
                values: match r.alias_target() {
                    Some(alias) => vec![alias.dns_name().to_string()],
                    None => r
                        .resource_records()
                        .iter()
                        .map(|v| v.value().to_string())
                        .collect(),
                },
            })
            .collect();
        Ok(NameState { zone_name, others })
    }

    async fn restore(
        &self,
        spec: &TrafficSpec,
        replaced: &ReplacedRecord,
    ) -> Result<bool, TrafficError> {
        let pair: Vec<ResourceRecordSet> =
            self.records(spec).await?.into_iter().filter(ours).collect();
        if pair.is_empty() {
            return Ok(false);
        }
        let mut batch = ChangeBatch::builder().comment("ferry: restore the replaced record");
        for r in pair {
            batch = batch.changes(change(spec, ChangeAction::Delete, r)?);
        }
        let batch = batch
            .changes(change(
                spec,
                ChangeAction::Create,
                simple_record(spec, replaced)?,
            )?)
            .build()
            .map_err(|e| refused(spec, e))?;
        self.submit(spec, batch).await?;
        Ok(true)
    }

    async fn weights(&self, spec: &TrafficSpec) -> Result<Option<Weights>, TrafficError> {
        let records = self.records(spec).await?;
        let weight_of = |id: &str| {
            records
                .iter()
                .find(|r| r.set_identifier() == Some(id))
                .and_then(|r| r.weight())
                .map(|w| w.clamp(0, 255) as u32)
        };
        Ok(match (weight_of(HEROKU_ID), weight_of(AWS_ID)) {
            (Some(heroku), Some(aws)) => Some(Weights { heroku, aws }),
            // The Heroku record was retired: the AWS record alone answers every query.
            (None, Some(aws)) if aws > 0 => Some(Weights { heroku: 0, aws }),
            _ => None,
        })
    }
}
