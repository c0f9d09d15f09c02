//! In-memory Route 53, ECS, EventBridge, CloudWatch, SNS, Step Functions callbacks, SSM,
//! Secrets Manager and RDS: each keeps what it was told and answers from it, refusing what the
//! real service refuses where the steps depend on it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;

use crate::{
    ParamError, ParamStore, SecretError, SecretStore,
    approval::{CallbackError, TaskCallbacks},
    cloud::{
        AlarmStates, Alarms, CloudError, CloudResult, Compute, Databases, DbInstance, Notifier,
        Schedule, Service, Subscription, TaskState,
    },
    params::PutOutcome,
    secret::Secret,
    spec::TrafficSpec,
    traffic::{NameState, OtherRecord, ReplacedRecord, TrafficError, TrafficRouter, Weights},
};

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn down(service: Service) -> CloudError {
    CloudError::Unavailable {
        service,
        source: "the in-memory service was told to fail".into(),
    }
}

#[derive(Debug, Default)]
struct Name {
    zone_name: String,
    others: Vec<OtherRecord>,
    heroku: Option<u32>,
    aws: Option<u32>,
    written: Vec<Weights>,
    unavailable: bool,
}

/// Route 53 for one record name: the records beside Ferry's pair, the pair's weights, and
/// every weight pair written, in order.
#[derive(Debug, Default, Clone)]
pub struct MemoryRouter(Arc<Mutex<Name>>);

impl MemoryRouter {
    /// A name in zone `zone_name` (`acme.example.`) holding `others` (e.g. the simple CNAME to
    /// Heroku the pair replaces).
    pub fn with(zone_name: &str, others: Vec<OtherRecord>) -> Self {
        Self(Arc::new(Mutex::new(Name {
            zone_name: zone_name.to_string(),
            others,
            ..Name::default()
        })))
    }

    /// Every pair written, in order.
    pub fn written(&self) -> Vec<Weights> {
        guard(&self.0).written.clone()
    }

    /// The records beside the pair now.
    pub fn others(&self) -> Vec<OtherRecord> {
        guard(&self.0).others.clone()
    }

    /// Makes every later call fail as unavailable (`true`) or work again.
    pub fn set_unavailable(&self, unavailable: bool) {
        guard(&self.0).unavailable = unavailable;
    }

    fn open(&self) -> Result<MutexGuard<'_, Name>, TrafficError> {
        let n = guard(&self.0);
        if n.unavailable {
            return Err(TrafficError::Unavailable(
                "the in-memory Route 53 was told to fail".into(),
            ));
        }
        Ok(n)
    }
}

fn refused(spec: &TrafficSpec, reason: impl Into<String>) -> TrafficError {
    TrafficError::Refused {
        name: spec.record_name.clone(),
        reason: reason.into(),
    }
}

#[async_trait]
impl TrafficRouter for MemoryRouter {
    async fn set_weights(&self, spec: &TrafficSpec, weights: Weights) -> Result<(), TrafficError> {
        if weights.heroku == 0 && weights.aws == 0 {
            return Err(refused(spec, "both weights 0 would split traffic evenly"));
        }
        let mut n = self.open()?;
        // The batch deletes the simple CNAME; anything else beside a weighted CNAME set is
        // refused, as Route 53 refuses it (the whole batch, so nothing changes).
        let rest: Vec<&OtherRecord> = n
            .others
            .iter()
            .filter(|o| !(o.rtype == "CNAME" && o.set_identifier.is_none()))
            .collect();
        if let Some(o) = rest.first() {
            return Err(refused(
                spec,
                format!(
                    "RRSet of type CNAME with DNS name {} is not permitted beside a {} record set",
                    spec.record_name, o.rtype
                ),
            ));
        }
        n.others.clear();
        n.heroku = Some(weights.heroku);
        n.aws = Some(weights.aws);
        n.written.push(weights);
        Ok(())
    }

    async fn weights(&self, _spec: &TrafficSpec) -> Result<Option<Weights>, TrafficError> {
        let n = self.open()?;
        Ok(match (n.heroku, n.aws) {
            (Some(heroku), Some(aws)) => Some(Weights { heroku, aws }),
            (None, Some(aws)) if aws > 0 => Some(Weights { heroku: 0, aws }),
            _ => None,
        })
    }

    async fn retire_heroku(&self, spec: &TrafficSpec) -> Result<bool, TrafficError> {
        if self.weights(spec).await?.is_none() {
            return Ok(false);
        }
        let mut n = self.open()?;
        if n.heroku.is_none() {
            return Ok(false);
        }
        n.heroku = None;
        n.aws = Some(100);
        Ok(true)
    }

    async fn inspect(&self, _spec: &TrafficSpec) -> Result<NameState, TrafficError> {
        let n = self.open()?;
        Ok(NameState {
            zone_name: n.zone_name.clone(),
            others: n.others.clone(),
        })
    }

    async fn restore(
        &self,
        _spec: &TrafficSpec,
        replaced: &ReplacedRecord,
    ) -> Result<bool, TrafficError> {
        let mut n = self.open()?;
        if n.heroku.is_none() && n.aws.is_none() {
            return Ok(false);
        }
        n.heroku = None;
        n.aws = None;
        n.others.push(OtherRecord {
            rtype: "CNAME".into(),
            set_identifier: None,
            ttl: Some(replaced.ttl),
            values: vec![replaced.value.clone()],
        });
        Ok(true)
    }
}

#[derive(Debug, Default)]
struct Tasks {
    next: u64,
    tasks: BTreeMap<String, TaskState>,
    redeployed: Vec<String>,
    unavailable: bool,
}

/// ECS: worker tasks started, stopped and redeployed services.
#[derive(Debug, Default, Clone)]
pub struct MemoryCompute(Arc<Mutex<Tasks>>);

impl MemoryCompute {
    /// Every task ever started, by ARN.
    pub fn tasks(&self) -> BTreeMap<String, TaskState> {
        guard(&self.0).tasks.clone()
    }

    /// `cluster/service` of every redeploy, in order.
    pub fn redeployed(&self) -> Vec<String> {
        guard(&self.0).redeployed.clone()
    }

    /// Stops a task as if it had crashed (`reason` as ECS would report it).
    pub fn crash(&self, task_arn: &str, reason: &str) {
        if let Some(t) = guard(&self.0).tasks.get_mut(task_arn) {
            t.last_status = "STOPPED".into();
            t.stopped_reason = Some(reason.to_string());
        }
    }

    /// Makes every later call fail as unavailable (`true`) or work again.
    pub fn set_unavailable(&self, unavailable: bool) {
        guard(&self.0).unavailable = unavailable;
    }

    fn open(&self) -> CloudResult<MutexGuard<'_, Tasks>> {
        let t = guard(&self.0);
        if t.unavailable {
            return Err(down(Service::Ecs));
        }
        Ok(t)
    }
}

#[async_trait]
impl Compute for MemoryCompute {
    async fn run_worker(&self, migration_id: &str) -> CloudResult<String> {
        let mut t = self.open()?;
        t.next += 1;
        let arn = format!(
            "arn:aws:ecs:us-east-1:000000000000:task/ferry/{migration_id}-{}",
            t.next
        );
        t.tasks.insert(
            arn.clone(),
            TaskState {
                task_arn: arn.clone(),
                last_status: "RUNNING".into(),
                stopped_reason: None,
            },
        );
        Ok(arn)
    }

    async fn task(&self, task_arn: &str) -> CloudResult<Option<TaskState>> {
        Ok(self.open()?.tasks.get(task_arn).cloned())
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> CloudResult<()> {
        if let Some(task) = self.open()?.tasks.get_mut(task_arn)
            && !task.is_stopped()
        {
            task.last_status = "STOPPED".into();
            task.stopped_reason = Some(reason.to_string());
        }
        Ok(())
    }

    async fn redeploy(&self, cluster: &str, service: &str) -> CloudResult<()> {
        self.open()?.redeployed.push(format!("{cluster}/{service}"));
        Ok(())
    }
}

/// One EventBridge rule as put.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Every how many minutes.
    pub minutes: u32,
    /// The function it invokes.
    pub target_arn: String,
    /// The event it sends.
    pub input: serde_json::Value,
}

/// EventBridge rules by name.
#[derive(Debug, Default, Clone)]
pub struct MemorySchedule(Arc<Mutex<BTreeMap<String, Rule>>>);

impl MemorySchedule {
    /// The rules now.
    pub fn rules(&self) -> BTreeMap<String, Rule> {
        guard(&self.0).clone()
    }
}

#[async_trait]
impl Schedule for MemorySchedule {
    async fn put_rate_rule(
        &self,
        name: &str,
        minutes: u32,
        target_arn: &str,
        input: &serde_json::Value,
    ) -> CloudResult<()> {
        // EventBridge: names of 1-64 characters, rates of at least one minute.
        if name.is_empty() || name.len() > 64 || minutes == 0 {
            return Err(CloudError::Refused {
                service: Service::EventBridge,
                what: format!("rule {name}"),
                reason: "a rule name holds 1 to 64 characters and a rate at least 1 minute".into(),
            });
        }
        guard(&self.0).insert(
            name.to_string(),
            Rule {
                minutes,
                target_arn: target_arn.to_string(),
                input: input.clone(),
            },
        );
        Ok(())
    }

    async fn delete_rule(&self, name: &str) -> CloudResult<bool> {
        Ok(guard(&self.0).remove(name).is_some())
    }

    async fn rule_exists(&self, name: &str) -> CloudResult<bool> {
        Ok(guard(&self.0).contains_key(name))
    }
}

/// CloudWatch alarms by name: `true` in ALARM.
#[derive(Debug, Default, Clone)]
pub struct MemoryAlarms(Arc<Mutex<BTreeMap<String, bool>>>);

impl MemoryAlarms {
    /// Creates or sets alarm `name`: in ALARM (`true`) or OK.
    pub fn set(&self, name: &str, firing: bool) {
        guard(&self.0).insert(name.to_string(), firing);
    }
}

#[async_trait]
impl Alarms for MemoryAlarms {
    async fn states(&self, names: &[String]) -> CloudResult<AlarmStates> {
        let alarms = guard(&self.0);
        let mut out = AlarmStates::default();
        for name in names {
            match alarms.get(name) {
                Some(true) => out.firing.push(name.clone()),
                Some(false) => {}
                None => out.missing.push(name.clone()),
            }
        }
        Ok(out)
    }
}

/// One message published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic_arn: String,
    /// Its subject.
    pub subject: String,
    /// Its body.
    pub message: String,
    /// `all`, or the one approver it is for.
    pub audience: String,
}

#[derive(Debug, Default)]
struct Topics {
    published: Vec<Published>,
    subscriptions: Vec<Subscription>,
}

/// SNS: what was published, and the subscriptions a test sets.
#[derive(Debug, Default, Clone)]
pub struct MemoryNotifier(Arc<Mutex<Topics>>);

impl MemoryNotifier {
    /// Every message published, in order.
    pub fn published(&self) -> Vec<Published> {
        guard(&self.0).published.clone()
    }

    /// Adds a subscription every topic reports.
    pub fn subscribe(&self, s: Subscription) {
        guard(&self.0).subscriptions.push(s);
    }

    fn record(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        audience: &str,
    ) -> CloudResult<()> {
        // SNS Publish: a subject is under 100 characters, with no line break or control
        // character.
        if subject.is_empty()
            || subject.chars().count() >= 100
            || subject.chars().any(char::is_control)
        {
            return Err(CloudError::Refused {
                service: Service::Sns,
                what: format!("a message to {topic_arn}"),
                reason: format!(
                    "subject {subject:?} is not 1 to 99 characters without control characters"
                ),
            });
        }
        guard(&self.0).published.push(Published {
            topic_arn: topic_arn.to_string(),
            subject: subject.to_string(),
            message: message.to_string(),
            audience: audience.to_string(),
        });
        Ok(())
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> CloudResult<()> {
        self.record(topic_arn, subject, message, crate::cloud::AUDIENCE_ALL)
    }

    async fn publish_for(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        approver: &str,
    ) -> CloudResult<()> {
        self.record(topic_arn, subject, message, approver)
    }

    async fn subscriptions(&self, _topic_arn: &str) -> CloudResult<Vec<Subscription>> {
        Ok(guard(&self.0).subscriptions.clone())
    }
}

/// How a waiting task was resumed.
#[derive(Debug, Clone, PartialEq)]
pub enum Resumed {
    /// `SendTaskSuccess` with this output.
    Succeeded(serde_json::Value),
    /// `SendTaskFailure` with this error name and cause.
    Failed {
        /// The error name the Catch matches.
        error: String,
        /// The cause.
        cause: String,
    },
}

/// Step Functions task tokens: each may be resumed once, as Step Functions allows.
#[derive(Debug, Default, Clone)]
pub struct MemoryCallbacks(Arc<Mutex<BTreeMap<String, Resumed>>>);

impl MemoryCallbacks {
    /// How the task of `token` was resumed, if it was.
    pub fn resumed(&self, token: &str) -> Option<Resumed> {
        guard(&self.0).get(token).cloned()
    }

    fn resume(&self, token: &str, how: Resumed) -> Result<(), CallbackError> {
        let mut tokens = guard(&self.0);
        if tokens.contains_key(token) {
            return Err(CallbackError::TaskGone(
                "the task was already resumed (TaskTimedOut)".into(),
            ));
        }
        tokens.insert(token.to_string(), how);
        Ok(())
    }
}

#[async_trait]
impl TaskCallbacks for MemoryCallbacks {
    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<(), CallbackError> {
        self.resume(token, Resumed::Succeeded(output.clone()))
    }

    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), CallbackError> {
        self.resume(
            token,
            Resumed::Failed {
                error: error.to_string(),
                cause: cause.to_string(),
            },
        )
    }
}

/// SSM parameters by name.
#[derive(Debug, Default, Clone)]
pub struct MemoryParams(Arc<Mutex<BTreeMap<String, String>>>);

impl MemoryParams {
    /// Sets `name` to `value`.
    pub fn set(&self, name: &str, value: &str) {
        guard(&self.0).insert(name.to_string(), value.to_string());
    }
}

#[async_trait]
impl ParamStore for MemoryParams {
    async fn get(&self, name: &str) -> Result<Secret, ParamError> {
        guard(&self.0)
            .get(name)
            .map(|v| Secret::new(v.clone()))
            .ok_or_else(|| ParamError::NotFound {
                name: name.to_string(),
            })
    }

    async fn put_secure(&self, name: &str, value: &str) -> Result<PutOutcome, ParamError> {
        let mut p = guard(&self.0);
        Ok(match p.insert(name.to_string(), value.to_string()) {
            None => PutOutcome::Added,
            Some(old) if old == value => PutOutcome::Unchanged,
            Some(_) => PutOutcome::Changed,
        })
    }

    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>, ParamError> {
        let under = format!("{}/", prefix.trim_end_matches('/'));
        Ok(guard(&self.0)
            .iter()
            .filter(|(k, _)| k.starts_with(&under))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Secrets Manager secrets by id.
#[derive(Debug, Default, Clone)]
pub struct MemorySecrets(Arc<Mutex<BTreeMap<String, String>>>);

impl MemorySecrets {
    /// Sets the current value of `id`.
    pub fn set(&self, id: &str, value: &str) {
        guard(&self.0).insert(id.to_string(), value.to_string());
    }
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn current(&self, id: &str) -> Result<Secret, SecretError> {
        guard(&self.0)
            .get(id)
            .map(|v| Secret::new(v.clone()))
            .ok_or_else(|| SecretError::NotFound { id: id.to_string() })
    }
}

#[derive(Debug, Default)]
struct Rds {
    instances: BTreeMap<String, DbInstance>,
    parameters: BTreeMap<(String, String), String>,
}

/// RDS instances by id, and parameter group values.
#[derive(Debug, Default, Clone)]
pub struct MemoryDatabases(Arc<Mutex<Rds>>);

impl MemoryDatabases {
    /// Sets instance `id`.
    pub fn set(&self, id: &str, instance: DbInstance) {
        guard(&self.0).instances.insert(id.to_string(), instance);
    }

    /// Sets parameter `name` of parameter group `group`.
    pub fn set_parameter(&self, group: &str, name: &str, value: &str) {
        guard(&self.0)
            .parameters
            .insert((group.to_string(), name.to_string()), value.to_string());
    }
}

#[async_trait]
impl Databases for MemoryDatabases {
    async fn instance(&self, id: &str) -> CloudResult<Option<DbInstance>> {
        Ok(guard(&self.0).instances.get(id).cloned())
    }

    async fn parameter(&self, group: &str, name: &str) -> CloudResult<Option<String>> {
        Ok(guard(&self.0)
            .parameters
            .get(&(group.to_string(), name.to_string()))
            .cloned())
    }
}
