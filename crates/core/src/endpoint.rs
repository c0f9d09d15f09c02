//! The database endpoint the AWS app fleet connects to: PgBouncer tasks that Ferry switches in
//! place at cutover (pause → retarget → resume), so an app that read `DATABASE_URL` once at
//! boot sees held queries, not failed ones.
//!
//! The control plane stores the *desired* state of an app's endpoint ([`EndpointDesired`],
//! numbered); every task's supervisor converges to the latest one and reports what it did
//! ([`EndpointTask`]). A task that starts late reads the desired state first, so it comes up
//! already pointing where the others do. Inside the cutover the control plane also sends the
//! state to each task directly ([`crate::control`]) and takes its answer, so a step does not
//! wait for table polls; the table stays the record and the fallback.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreResult;

/// Which database the endpoint's pool connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Heroku Postgres (before the cutover, and after a rollback).
    #[default]
    Source,
    /// Amazon RDS (after the cutover).
    Target,
}

impl Backend {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Source => "source",
            Backend::Target => "target",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every task of an app's endpoint should look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointDesired {
    /// The Heroku app whose endpoint this is.
    pub app: String,
    /// 1, 2, 3…: a task reports the number it converged to.
    pub seq: u64,
    /// Hold new transactions (PgBouncer `PAUSE`): clients wait, nothing fails.
    pub paused: bool,
    /// Where the pool connects.
    pub backend: Backend,
    /// Longest time a task waits for open transactions to end when pausing; past it the task
    /// resumes and reports the pause as failed.
    pub pause_timeout_ms: u64,
    /// The migration that set it (audit).
    pub migration_id: String,
    /// When it was set.
    pub issued_at: DateTime<Utc>,
    /// Who set it (`ferry:<step>` or a person).
    pub issued_by: String,
}

impl EndpointDesired {
    /// The state before any command: unpaused, on the source.
    pub fn initial(app: &str) -> Self {
        Self {
            app: app.to_string(),
            seq: 0,
            paused: false,
            backend: Backend::Source,
            pause_timeout_ms: 2_000,
            migration_id: String::new(),
            issued_at: DateTime::<Utc>::UNIX_EPOCH,
            issued_by: String::new(),
        }
    }
}

/// One endpoint task's report: its heartbeat and what it converged to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointTask {
    /// The Heroku app whose endpoint this is.
    pub app: String,
    /// The task (ECS task id, or a local name in the rehearsal).
    pub task_id: String,
    /// When the task started.
    pub started_at: DateTime<Utc>,
    /// When this report was written.
    pub heartbeat_at: DateTime<Utc>,
    /// The desired state's number this report answers (0: none yet).
    pub seq: u64,
    /// Whether PgBouncer is paused now.
    pub paused: bool,
    /// Where PgBouncer's pool points now.
    pub backend: Backend,
    /// Why the task could not reach desired state `seq` (no secrets), if it could not.
    pub error: Option<String>,
    /// PgBouncer's version (`SHOW VERSION`).
    pub pgbouncer_version: String,
    /// The SSM parameters the task reads its backends from (source, target): preflight checks
    /// they are the migration's.
    pub source_param: String,
    /// See `source_param`.
    pub target_param: String,
    /// The task's Redis proxy, when it runs one (spec `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisProxyReport>,
    /// Where the task listens for control requests (`host:port`, see [`crate::control`]),
    /// when its control channel is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// The task's current or last hold of the app's queries, on its own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

/// How long a task held the app's queries: PgBouncer's `PAUSE` sent (new transactions wait
/// from then) → `RESUME` done; what the app saw, without the control plane's own round trips
/// before the first pause and after the last resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// When the pause was sent.
    pub from: DateTime<Utc>,
    /// When the resume was done; none while held.
    pub to: Option<DateTime<Utc>>,
}

impl Hold {
    /// Milliseconds held, once resumed.
    pub fn ms(&self) -> Option<i64> {
        Some((self.to? - self.from).num_milliseconds())
    }
}

/// The Redis proxy of an endpoint task, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisProxyReport {
    /// Whether its sessions are held.
    pub paused: bool,
    /// Where its sessions go.
    pub backend: Backend,
    /// Client sessions open.
    pub sessions: u64,
    /// Pub/sub or MONITOR sessions closed by a switch so far.
    pub closed_by_switch: u64,
    /// The SSM parameters it reads its Redis servers from (source, target).
    pub source_param: String,
    /// See `source_param`.
    pub target_param: String,
}

impl EndpointTask {
    /// Whether the task answered `seq` by reaching it (no error).
    pub fn reached(&self, want: &EndpointDesired) -> bool {
        self.seq >= want.seq
            && self.error.is_none()
            && self.paused == want.paused
            && self.backend == want.backend
            && self
                .redis
                .as_ref()
                .is_none_or(|r| r.paused == want.paused && r.backend == want.backend)
    }

    /// Whether its heartbeat is newer than `stale_after` at `now`.
    pub fn alive(&self, now: DateTime<Utc>, stale_after: chrono::Duration) -> bool {
        now - self.heartbeat_at <= stale_after
    }
}

/// Whether a PgBouncer version string (`SHOW VERSION`, e.g. `PgBouncer 1.24.1`) is 1.21 or
/// newer: protocol-level prepared statements in transaction pooling.
pub fn supports_prepared_statements(version: &str) -> bool {
    let nums: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    matches!(nums.as_slice(), [major, minor] if (*major, *minor) >= (1, 21))
}

/// How far above the stored desired state [`EndpointStore::set_endpoint_desired`] numbers
/// the next one: `after + 1` may be a state told over the control channel whose write never
/// landed (a control plane stopped between the two), which tasks already act on; the next
/// stored state must be above it, or the tasks would ignore it as old.
pub const UNTOLD_GAP: u64 = 2;

/// Desired endpoint states and the tasks' reports (DynamoDB in production).
#[async_trait]
pub trait EndpointStore: Send + Sync {
    /// Stores `want` (its `seq` is ignored) as a new desired state of the app's endpoint,
    /// numbered [`UNTOLD_GAP`] above the stored one (a state told beside its write, see
    /// [`EndpointStore::put_endpoint_desired_after`], may have reached tasks without being
    /// stored: a new number must be above it); returns it as stored.
    async fn set_endpoint_desired(&self, want: EndpointDesired) -> StoreResult<EndpointDesired>;

    /// Stores `want` as state `after + 1`, only if the stored state is still number `after`
    /// (the one its caller stored last); `None` when another was stored since. The control
    /// plane tells the tasks this state while it is being written, so a store slower than
    /// the tasks does not lengthen the switch.
    async fn put_endpoint_desired_after(
        &self,
        after: u64,
        want: EndpointDesired,
    ) -> StoreResult<Option<EndpointDesired>>;

    /// The latest desired state, if any was ever set.
    async fn endpoint_desired(&self, app: &str) -> StoreResult<Option<EndpointDesired>>;

    /// Writes a task's report (last write wins: each task writes only its own item).
    async fn put_endpoint_task(&self, task: &EndpointTask) -> StoreResult<()>;

    /// Every task's latest report, live or not.
    async fn endpoint_tasks(&self, app: &str) -> StoreResult<Vec<EndpointTask>>;

    /// Removes a task's report (a task that stops cleanly).
    async fn remove_endpoint_task(&self, app: &str, task_id: &str) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(seq: u64, paused: bool, backend: Backend, error: Option<&str>) -> EndpointTask {
        EndpointTask {
            app: "a".into(),
            task_id: "t".into(),
            started_at: Utc::now(),
            heartbeat_at: Utc::now(),
            seq,
            paused,
            backend,
            error: error.map(str::to_string),
            pgbouncer_version: "1.24.1".into(),
            source_param: "/s".into(),
            target_param: "/t".into(),
            redis: None,
            control: None,
            hold: None,
        }
    }

    #[test]
    fn reached_needs_the_number_the_state_and_no_error() {
        let want = EndpointDesired {
            seq: 3,
            paused: true,
            backend: Backend::Target,
            ..EndpointDesired::initial("a")
        };
        assert!(task(3, true, Backend::Target, None).reached(&want));
        assert!(task(4, true, Backend::Target, None).reached(&want));
        assert!(!task(2, true, Backend::Target, None).reached(&want));
        assert!(!task(3, false, Backend::Target, None).reached(&want));
        assert!(!task(3, true, Backend::Source, None).reached(&want));
        assert!(!task(3, true, Backend::Target, Some("pause timed out")).reached(&want));
        // A task's Redis proxy must be there too.
        let mut t = task(3, true, Backend::Target, None);
        t.redis = Some(RedisProxyReport {
            paused: true,
            backend: Backend::Source,
            sessions: 1,
            closed_by_switch: 0,
            source_param: "/rs".into(),
            target_param: "/rt".into(),
        });
        assert!(!t.reached(&want));
        if let Some(r) = t.redis.as_mut() {
            r.backend = Backend::Target;
        }
        assert!(t.reached(&want));
    }

    #[test]
    fn prepared_statements_need_1_21() {
        assert!(supports_prepared_statements("PgBouncer 1.24.1"));
        assert!(supports_prepared_statements("PgBouncer 1.21.0"));
        assert!(supports_prepared_statements("PgBouncer 2.0.0"));
        assert!(!supports_prepared_statements("PgBouncer 1.18.0"));
        assert!(!supports_prepared_statements(""));
    }

    #[test]
    fn json_shape_is_stable() {
        let want = EndpointDesired::initial("acme");
        let v = serde_json::to_value(&want).expect("json");
        assert_eq!(v["backend"], "source");
        assert_eq!(v["paused"], false);
        assert_eq!(v["seq"], 0);
    }
}
