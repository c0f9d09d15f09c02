//! Typed facts the steps keep in the store (see [`ferry_core::MigrationStore::fact`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ferry_core::MigrationStore;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{StepError, StepResult};

/// [`WorkerFact`].
pub const WORKER: &str = "worker";
/// [`CanaryFact`].
pub const CANARY: &str = "canary";
/// [`HerokuBefore`].
pub const HEROKU_BEFORE: &str = "heroku_before";
/// [`AppRoles`].
pub const APP_ROLES: &str = "app_roles";
/// [`CutoverFact`].
pub const CUTOVER: &str = "cutover";
/// The phase a rollback started from (a string).
pub const ROLLBACK_FROM: &str = "rollback_from";
/// [`DnsFact`].
pub const DNS: &str = "dns";
/// The last Verify's figures ([`crate::verify::Output`]).
pub const VERIFY: &str = "verify";
/// The exact comparison of the last drained freeze ([`ferry_core::state::DrainCheck`]),
/// written by the worker.
pub const DRAIN_CHECK: &str = ferry_core::state::DRAIN_CHECK_FACT;
/// The final report ([`crate::decommission::Report`]).
pub const REPORT: &str = "report";

/// What preflight found in DNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsFact {
    /// The longest TTL of the records at `traffic.record_name` that are not Ferry's pair.
    pub replaced_ttl_seconds: Option<u32>,
    /// The simple CNAME the pair replaces, which a rollback puts back (`None`: a new name).
    #[serde(default)]
    pub replaced: Option<ferry_core::traffic::ReplacedRecord>,
}

/// The replication worker task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerFact {
    /// The ECS task ARN.
    pub task_arn: String,
    /// When the first task started (the catch-up clock).
    pub first_started_at: DateTime<Utc>,
    /// When this task started.
    pub started_at: DateTime<Utc>,
    /// Tasks started after the first died.
    pub restarts: u32,
}

/// Where the canary stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryFact {
    /// Index into `traffic.steps` of the weight in effect.
    pub index: usize,
    /// Percent on AWS in effect.
    pub aws_percent: u32,
    /// When that weight was set.
    pub moved_at: DateTime<Utc>,
    /// Where the canary stands; ticks move weights only while it is running.
    pub state: CanaryState,
    /// Why it ended, when it did.
    pub reason: Option<String>,
    /// The waiting task's token (never logged or audited).
    pub task_token: ferry_core::secret::Secret,
    /// Seconds between ticks.
    pub interval_seconds: u32,
}

/// Where the canary stands (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryState {
    /// Ticks move the weights.
    Running,
    /// The last weight held for the DNS hold; the waiting task succeeded.
    Done,
    /// The health gate failed; traffic went back to Heroku and the task failed.
    Unhealthy,
    /// An abort stopped it; the rollback sends traffic back.
    Aborted,
}

/// The Heroku app as it was before the cutover touched it, to restore on rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HerokuBefore {
    /// Maintenance mode before.
    pub maintenance: bool,
    /// Dyno counts per process type before.
    pub formation: BTreeMap<String, u32>,
}

/// The roles the app logs in as: frozen and unfrozen at cutover and rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRoles {
    /// On the source (from Heroku's DATABASE_URL).
    pub source: String,
    /// On the target (from the target URL the app will use).
    pub target: String,
}

pub use ferry_core::state::CutoverState;

/// How far the cutover got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CutoverFact {
    /// Where the cutover stands.
    pub state: CutoverState,
    /// The source position drained to.
    pub position: Option<String>,
    /// Sub-step timestamps, in order.
    pub timeline: Vec<(String, DateTime<Utc>)>,
    /// Sequences set on the target.
    #[serde(default)]
    pub sequences: usize,
    /// Tables whose row counts were compared inside the freeze.
    #[serde(default)]
    pub counts_checked: usize,
    /// The longest time an endpoint task held the app's queries at the cutover (PAUSE sent →
    /// RESUME done, on the task's clock), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<i64>,
    /// The same at the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_held_ms: Option<i64>,
}

impl CutoverFact {
    /// When sub-step `name` happened (its first mark).
    pub fn at(&self, name: &str) -> Option<DateTime<Utc>> {
        self.timeline
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
    }

    /// Milliseconds from mark `from` to mark `to`, when both were reached.
    pub fn window_ms(&self, from: &str, to: &str) -> Option<i64> {
        Some((self.at(to)? - self.at(from)?).num_milliseconds())
    }

    /// The write freeze: the source frozen → the target writable for the app.
    pub fn freeze_ms(&self) -> Option<i64> {
        self.window_ms("source_frozen", "target_writable")
    }

    /// How long the endpoint held the app's queries: first pause asked → every task resumed.
    pub fn paused_ms(&self) -> Option<i64> {
        self.window_ms("endpoint_pause_requested", "endpoint_resumed")
    }

    /// The rollback's write freeze: the target frozen → the source writable again.
    pub fn rollback_freeze_ms(&self) -> Option<i64> {
        self.window_ms("target_frozen", "source_writable")
    }

    /// How long the rollback's endpoint held the app's queries: first pause asked → every
    /// task resumed on the source.
    pub fn rollback_paused_ms(&self) -> Option<i64> {
        self.window_ms("rollback_pause_requested", "rollback_resumed")
    }
}

/// Reads a fact.
pub async fn get<T: DeserializeOwned>(
    store: &dyn MigrationStore,
    migration_id: &str,
    name: &str,
) -> StepResult<Option<T>> {
    match store.fact(migration_id, name).await? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
            StepError::Store(ferry_core::StoreError::Corrupt {
                key: format!("{migration_id}/FACT#{name}"),
                reason: e.to_string(),
            })
        }),
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Writes the fact if absent; returns what is stored (the first writer's value).
pub async fn put_once<T: Serialize + DeserializeOwned>(
    store: &dyn MigrationStore,
    migration_id: &str,
    name: &str,
    value: &T,
) -> StepResult<T> {
    store
        .swap_fact(migration_id, name, None, &to_value(value))
        .await?;
    get(store, migration_id, name)
        .await?
        .ok_or_else(|| StepError::Input(format!("fact {name} vanished after it was written")))
}

/// Replaces the fact if it is still `expected` (`None`: absent); `false` if someone else
/// changed it first.
pub async fn swap<T: Serialize>(
    store: &dyn MigrationStore,
    migration_id: &str,
    name: &str,
    expected: Option<&T>,
    value: &T,
) -> StepResult<bool> {
    let expected = expected.map(to_value);
    Ok(store
        .swap_fact(migration_id, name, expected.as_ref(), &to_value(value))
        .await?)
}

/// Writes the fact whatever it held (last writer wins; for figures a step recomputes whole).
pub async fn put<T: Serialize>(
    store: &dyn MigrationStore,
    migration_id: &str,
    name: &str,
    value: &T,
) -> StepResult<()> {
    let new = to_value(value);
    for _ in 0..5 {
        let current = store.fact(migration_id, name).await?;
        if store
            .swap_fact(migration_id, name, current.as_ref(), &new)
            .await?
        {
            return Ok(());
        }
    }
    Err(StepError::Input(format!(
        "fact {name} kept changing while it was written; try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::CutoverState;

    #[test]
    fn cutover_states_are_stored_by_their_names() {
        for s in [
            CutoverState::NotStarted,
            CutoverState::Frozen,
            CutoverState::Switched,
            CutoverState::Done,
            CutoverState::Undone,
            CutoverState::RolledBack,
        ] {
            let v = serde_json::to_value(s).expect("json");
            assert_eq!(v, serde_json::Value::from(s.as_str()));
            assert_eq!(serde_json::from_value::<CutoverState>(v).ok(), Some(s));
        }
        // A typo in a stored fact is refused, not read as another state.
        assert!(serde_json::from_value::<CutoverState>("swtiched".into()).is_err());
    }
}
