//! Ferry's migration steps. Each public `run` function is one Step Functions task: it takes
//! the task's JSON input, does one step of the migration through the narrow interfaces in
//! [`Deps`], and returns a small JSON-able summary (never a secret). The Lambda crates under
//! `functions/` only deserialize, call, and map errors to their stable names.
//!
//! Every step is idempotent: phase moves are replay-safe, facts are compare-and-set, audit
//! entries carry fixed keys, and external effects (weights, rules, SSM values, role settings)
//! are set to a value rather than toggled.

pub mod abort;
pub mod app_grants;
pub mod approval;
pub mod canary;
pub mod config_sync;
pub mod cutover;
pub mod decommission;
mod drain;
pub mod endpoint;
mod error;
pub mod facts;
#[cfg(test)]
mod memory;
pub mod preflight;
pub mod redis_switch;
pub mod replication;
pub mod rollback;
pub mod verify;
pub mod verify_redis;

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ferry_core::{
    MigrationSpec, MigrationStore, ParamStore,
    approval::TaskCallbacks,
    cloud::{Alarms, Compute, Databases, Notifier, Schedule},
    state::{AuditEvent, MigrationRecord, Outcome, Phase},
    traffic::TrafficRouter,
};
use ferry_heroku::HerokuClient;
use ferry_pg::PgUrl;
use serde::Deserialize;

pub use error::{StepError, StepResult};

/// How a deployment is wired: names and ARNs that come from the environment the template
/// sets, not from the spec.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Heroku Platform API base URL (`https://api.heroku.com`).
    pub heroku_api_url: String,
    /// The approval callback's public URL (the Lambda function URL), for email links.
    pub approval_url: Option<String>,
    /// SSM parameter (SecureString) with the key that signs email approval links.
    pub link_secret_param: String,
    /// SSM parameter (SecureString) with the Slack app's signing secret.
    pub slack_signing_secret_param: Option<String>,
    /// ARN of the canary step function, the EventBridge rule's target.
    pub canary_function_arn: String,
    /// Prefix of EventBridge rule names (the IAM policy scopes Ferry to it).
    pub rule_prefix: String,
    /// Directory of pg_dump / psql (the verify step's replicator does not run them, but its
    /// configuration names them).
    pub pg_bin: PathBuf,
    /// Rehearsal fault injection (`cutover:after_freeze`, …); never set in production.
    pub fault: Option<String>,
    /// Rehearsals only: an SSM prefix under which `<prefix><migration id>` may name a fault
    /// for that migration (so one rehearsal bed can inject a fault into one migration).
    pub fault_prefix: Option<String>,
    /// SSM SecureString with the endpoint control channel's key (`ferry_core::control`):
    /// when set, the cutover and the rollback tell the endpoint's tasks each step directly
    /// and take their answers; the state table stays the record and the fallback.
    pub endpoint_control_key_param: Option<String>,
    /// How often the cutover polls the worker while it drains and the endpoint's tasks while
    /// they pause, switch and resume (each poll is one DynamoDB read; it runs for about a
    /// second).
    pub drain_poll: Duration,
}

impl Settings {
    /// Reads the settings through `var` (the process environment in a Lambda).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> StepResult<Self> {
        let need = |name: &str| {
            var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                StepError::Config(format!(
                    "{name} is not set; the SAM template sets it for every function"
                ))
            })
        };
        Ok(Self {
            heroku_api_url: var("FERRY_HEROKU_API_URL")
                .unwrap_or_else(|| ferry_heroku::DEFAULT_BASE_URL.to_string()),
            approval_url: var("FERRY_APPROVAL_URL").filter(|v| !v.is_empty()),
            link_secret_param: need("FERRY_LINK_SECRET_PARAM")?,
            slack_signing_secret_param: var("FERRY_SLACK_SIGNING_SECRET_PARAM")
                .filter(|v| !v.is_empty()),
            canary_function_arn: var("FERRY_CANARY_FUNCTION_ARN").unwrap_or_default(),
            rule_prefix: var("FERRY_RULE_PREFIX").unwrap_or_else(|| "ferry-canary-".into()),
            pg_bin: PathBuf::from(
                var("FERRY_PG_BIN").unwrap_or_else(|| "/usr/lib/postgresql/17/bin".into()),
            ),
            fault: var("FERRY_INJECT_FAULT").filter(|v| !v.is_empty()),
            fault_prefix: var("FERRY_REHEARSAL_FAULT_PREFIX").filter(|v| !v.is_empty()),
            endpoint_control_key_param: var("FERRY_ENDPOINT_CONTROL_KEY_PARAM")
                .filter(|v| !v.is_empty()),
            drain_poll: Duration::from_millis(
                var("FERRY_DRAIN_POLL_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10),
            ),
        })
    }
}

/// Everything a step talks to.
#[derive(Clone)]
pub struct Deps {
    /// Migration state, audit log, progress, approvals, facts, lock.
    pub store: Arc<dyn MigrationStore>,
    /// The database endpoint's desired state and its tasks' reports.
    pub endpoints: Arc<dyn ferry_core::endpoint::EndpointStore>,
    /// SSM Parameter Store.
    pub params: Arc<dyn ParamStore>,
    /// Secrets Manager (the RDS-managed master password).
    pub secrets: Arc<dyn ferry_core::SecretStore>,
    /// Route 53 weighted records.
    pub router: Arc<dyn TrafficRouter>,
    /// SendTaskSuccess / SendTaskFailure.
    pub callbacks: Arc<dyn TaskCallbacks>,
    /// EventBridge rules.
    pub schedule: Arc<dyn Schedule>,
    /// CloudWatch alarms.
    pub alarms: Arc<dyn Alarms>,
    /// SNS.
    pub notifier: Arc<dyn Notifier>,
    /// ECS.
    pub compute: Arc<dyn Compute>,
    /// RDS.
    pub databases: Arc<dyn Databases>,
    /// HTTP for Slack webhooks and health URLs.
    pub http: reqwest::Client,
    /// Where CloudWatch EMF metric lines go (stdout in a function).
    pub metrics: Arc<dyn ferry_core::metrics::MetricSink>,
    /// The time the steps read ([`ferry_core::clock::SystemClock`] outside tests).
    pub clock: Arc<dyn ferry_core::clock::Clock>,
    /// Deployment settings.
    pub settings: Settings,
    /// The endpoint control channel's key, read once per invocation (`None` inside: off).
    pub control_key: Arc<std::sync::OnceLock<Option<ferry_core::secret::Secret>>>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The input of every step after preflight.
#[derive(Debug, Clone, Deserialize)]
pub struct MigrationRef {
    /// The migration.
    pub migration_id: String,
}

/// The clock steps use.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

impl Deps {
    /// The migration's record.
    pub async fn record(&self, migration_id: &str) -> StepResult<MigrationRecord> {
        Ok(self.store.migration(migration_id).await?)
    }

    /// Moves the migration to `phase` unless it is there already (a retried step).
    pub async fn enter(&self, migration_id: &str, phase: Phase) -> StepResult<MigrationRecord> {
        let rec = self.record(migration_id).await?;
        if rec.phase == phase {
            return Ok(rec);
        }
        Ok(self
            .store
            .advance_phase(migration_id, rec.version, phase, now())
            .await?)
    }

    /// Appends an audit entry; with a `key`, a retry records it once.
    pub async fn audit(
        &self,
        migration_id: &str,
        step: &str,
        action: &str,
        outcome: Outcome,
        detail: serde_json::Value,
        key: Option<String>,
    ) -> StepResult<()> {
        let mut event = AuditEvent::new(
            now(),
            step,
            format!("ferry:{step}"),
            action,
            outcome,
            detail,
        );
        if let Some(k) = key {
            event = event.with_key(k);
        }
        self.store.append_audit(migration_id, &event).await?;
        Ok(())
    }

    /// Publishes `metrics` of the migration as one EMF line from step `step`.
    pub fn metrics(&self, migration_id: &str, step: &str, metrics: &[ferry_core::metrics::Metric]) {
        self.metrics
            .emit(migration_id, &format!("step:{step}"), metrics);
    }

    /// A Heroku client with the spec's API token.
    pub async fn heroku(&self, spec: &MigrationSpec) -> StepResult<HerokuClient> {
        let token = self.params.get(&spec.heroku.api_token_param).await?;
        Ok(HerokuClient::new(&self.settings.heroku_api_url, token)?)
    }

    /// The source and target URLs from SSM, checked.
    pub async fn urls(&self, spec: &MigrationSpec) -> StepResult<(PgUrl, PgUrl)> {
        let source = self.params.get(&spec.source.database_url_param).await?;
        let target = self.params.get(&spec.target.database_url_param).await?;
        let source = PgUrl::parse(&source).map_err(|e| StepError::BadParam {
            param: spec.source.database_url_param.clone(),
            reason: e.to_string(),
        })?;
        let target = PgUrl::parse(&target).map_err(|e| StepError::BadParam {
            param: spec.target.database_url_param.clone(),
            reason: e.to_string(),
        })?;
        let target = self.follow_password_secret(spec, target).await?;
        Ok((source, target))
    }

    /// The target URL with the current password of `target.password_secret`, when the spec
    /// names one (RDS rotates it). The step uses it as read; the worker, which follows the
    /// secret for the whole migration, stores it back in the parameter for the endpoint.
    pub async fn follow_password_secret(
        &self,
        spec: &MigrationSpec,
        stale: PgUrl,
    ) -> StepResult<PgUrl> {
        let Some(id) = &spec.target.password_secret else {
            return Ok(stale);
        };
        let secret = self.secrets.current(id).await?;
        match ferry_pg::rds_secret::login_from_secret(&stale, &secret) {
            Ok(Some(fresh)) => {
                tracing::info!(secret = %id, "the target's password was rotated; using the current one");
                Ok(fresh)
            }
            Ok(None) => Ok(stale),
            Err(e) => Err(StepError::BadParam {
                param: spec.target.database_url_param.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The rehearsal fault for this migration, if any (read once, before anything is frozen).
    pub async fn fault_for(&self, migration_id: &str) -> StepResult<Option<String>> {
        if self.settings.fault.is_some() {
            return Ok(self.settings.fault.clone());
        }
        let Some(prefix) = &self.settings.fault_prefix else {
            return Ok(None);
        };
        match self.params.get(&format!("{prefix}{migration_id}")).await {
            Ok(v) => Ok(Some(v.expose().to_string())),
            Err(ferry_core::ParamError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Fails with an injected fault when the rehearsal asked for one at `point`.
pub fn fault(fault: Option<&str>, point: &str) -> StepResult<()> {
    match fault {
        Some(f) if f == point => Err(StepError::Injected(point.to_string())),
        _ => Ok(()),
    }
}

/// The role the app logs in as on a side, from the URL it uses.
pub(crate) fn role_of(url: &PgUrl, what: &str) -> StepResult<String> {
    url.user()
        .map(str::to_string)
        .ok_or_else(|| StepError::BadParam {
            param: what.to_string(),
            reason: "the URL names no user; write it as postgres://user:password@host/db".into(),
        })
}
