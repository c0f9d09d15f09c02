//! The migration spec: the JSON document users pass as the Step Functions execution input
//! (`aws stepfunctions start-execution --input file://migration.json`).
//!
//! Parsing goes through [`parse`], which reports every problem at once: first the shape
//! (unknown fields, wrong types, missing fields) against the JSON Schema generated from these
//! types, then the rules that a schema cannot say (weights increase, ARNs are well formed…).

pub mod limits;
mod rules;
mod shape;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::shape::unsupported_keywords;
use crate::problems::{Problem, Problems};

/// The whole migration: what to move, where to, and how carefully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Ferry migration spec")]
pub struct MigrationSpec {
    /// Path or URL of this schema, for editors. Ignored by Ferry.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Unique id of this migration; also used as the Step Functions execution name.
    /// 1-80 characters: letters, digits, `-` and `_`.
    pub migration_id: String,
    /// The Heroku app being moved.
    pub heroku: HerokuSpec,
    /// The Heroku Postgres database being moved.
    pub source: SourceSpec,
    /// The Amazon RDS instance that becomes the primary database.
    pub target: TargetSpec,
    /// How the target is kept in sync with the source until cutover.
    #[serde(default)]
    pub replication: ReplicationSpec,
    /// How web traffic moves from Heroku to AWS.
    pub traffic: TrafficSpec,
    /// Who is asked, and who may approve, before traffic and the database move.
    pub approvals: ApprovalsSpec,
    /// Which Heroku config vars are copied into SSM Parameter Store.
    #[serde(default)]
    pub config_vars: ConfigVarsSpec,
    /// Hours after the database cutover during which Heroku Postgres is kept in sync from
    /// RDS, so that a rollback loses no write. 1-720.
    #[serde(default = "default_rollback_window_hours")]
    pub rollback_window_hours: u32,
    /// How the database cutover freezes writes and points the app at RDS.
    #[serde(default)]
    pub cutover: CutoverSpec,
    /// The database endpoint (PgBouncer run by Ferry) the AWS app fleet connects to; required
    /// when `cutover.endpoint` is `proxy` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointSpec>,
    /// Heroku Key-Value Store (Redis) to move to ElastiCache with the database. Without it,
    /// Redis is left to you (config sync copies REDIS_URL as a plain config var).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// How often the state machine polls and how long its waits last. The defaults suit a
    /// real migration; a rehearsal may shorten them.
    #[serde(default)]
    pub timing: TimingSpec,
}

/// The database cutover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CutoverSpec {
    /// Turn on Heroku maintenance mode during the write freeze (Heroku's router answers 503
    /// for the few seconds it lasts). Turned off again if the cutover is undone.
    #[serde(default = "default_true")]
    pub maintenance_mode: bool,
    /// Heroku process types (e.g. `worker`, `clock`) scaled to 0 during the freeze, because
    /// they write without going through the router. Their counts are restored on rollback.
    #[serde(default)]
    pub scale_down: Vec<String>,
    /// ECS services (`cluster/service`) that read DATABASE_URL from SSM; each gets a new
    /// deployment after the switch so that its tasks read the new value.
    #[serde(default)]
    pub ecs_services: Vec<String>,
    /// Longest wait, in seconds, for the worker to apply the last changes after writes froze;
    /// past it the cutover is undone. 1-300.
    #[serde(default = "default_drain_timeout_seconds")]
    pub drain_timeout_seconds: u32,
    /// What is compared inside the freeze: `counts` (row counts per table) or `none`
    /// (rely on the verification before the approval). Full checksums run before the gate.
    #[serde(default)]
    pub verify: CutoverVerify,
    /// How the AWS app fleet reaches the new database: `proxy` (default: through the endpoint,
    /// which Ferry pauses and switches in place; queries wait, none fail) or `redeploy` (the
    /// `DATABASE_URL` parameter is rewritten and `ecs_services` redeployed; the app fails
    /// writes until its new tasks are up — for apps that cannot pool per transaction).
    #[serde(default)]
    pub endpoint: EndpointMode,
    /// Longest time, in milliseconds, the endpoint waits for open transactions to finish when
    /// pausing; past it the cutover is undone and retried. 100-30000.
    #[serde(default = "default_pause_timeout_ms")]
    pub pause_timeout_ms: u32,
    /// Time limit, in seconds, of the exact comparison the worker runs after the drain through
    /// two snapshots taken inside the freeze (0 turns it off). The snapshots are held as long
    /// as it runs, which keeps VACUUM from removing rows that die meanwhile. 0-86400.
    #[serde(default = "default_exact_check_seconds")]
    pub exact_check_seconds: u32,
}

/// How the app fleet is moved to the new database at cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointMode {
    /// Through Ferry's endpoint: pause → retarget → resume; no redeploy.
    #[default]
    Proxy,
    /// Rewrite `DATABASE_URL` and redeploy `cutover.ecs_services`.
    Redeploy,
}

/// Heroku Key-Value Store (Redis) → ElastiCache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// SSM SecureString holding the Heroku Redis URL (`rediss://:password@host:port`; add
    /// `?ssl_cert_reqs=none` for Heroku's self-signed certificates). Keep it outside the
    /// config prefix.
    pub source_url_param: String,
    /// SSM SecureString holding the ElastiCache URL Ferry writes to (`rediss://`, with AUTH
    /// or an ACL user allowed RESTORE, DEL and the read commands).
    pub target_url_param: String,
    /// Logical databases to move. Default `[0]`; 0-15, each once.
    #[serde(default = "default_redis_databases")]
    pub databases: Vec<u32>,
    /// Key patterns (Redis globs, e.g. `cache:*`) that are disposable cache: not copied,
    /// not compared. At most 32.
    #[serde(default)]
    pub disposable_patterns: Vec<String>,
    /// Job queues (Redis globs): lists workers pop from and sorted sets of scheduled jobs.
    /// They are not copied key by key; after the switch their jobs are handed over one by one,
    /// each exactly once. Default: Sidekiq's `queue:*`, `schedule`, `retry`, `dead`; `[]` for
    /// none. At most 32; each must name only lists and sorted sets.
    #[serde(default = "default_queue_patterns")]
    pub queue_patterns: Vec<String>,
}

fn default_redis_databases() -> Vec<u32> {
    vec![0]
}

/// Sidekiq's job queues: one list per queue, and the scheduled, retry and dead sorted sets.
pub fn default_queue_patterns() -> Vec<String> {
    ["queue:*", "schedule", "retry", "dead"]
        .map(String::from)
        .to_vec()
}

impl RedisSpec {
    /// Keys the copy, the live sync and the comparison leave out: the disposable cache and the
    /// queues (which move by hand-over).
    pub fn not_synced(&self) -> Vec<String> {
        let mut all = self.disposable_patterns.clone();
        all.extend(self.queue_patterns.iter().cloned());
        all
    }
}

/// The endpoint the AWS app fleet uses as its database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// SSM SecureString holding the URL the AWS app fleet uses to reach the endpoint (the
    /// template's `EndpointHost`, the client user and password the endpoint tasks accept,
    /// the database name). Config sync copies it into the fleet's `DATABASE_URL`.
    pub url_param: String,
    /// Endpoint tasks that must be up and answer at the cutover. 1-20.
    #[serde(default = "default_min_tasks")]
    pub min_tasks: u32,
    /// SSM SecureString with the URL the endpoint logs in to RDS with after the cutover
    /// (default: `target.database_url_param`). Give the app's own RDS role here so the app
    /// does not run as the master user; the cutover freezes and unfreezes that role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url_param: Option<String>,
}

fn default_exact_check_seconds() -> u32 {
    3_600
}

fn default_pause_timeout_ms() -> u32 {
    2_000
}

fn default_min_tasks() -> u32 {
    2
}

impl Default for CutoverSpec {
    fn default() -> Self {
        Self {
            maintenance_mode: true,
            scale_down: Vec::new(),
            ecs_services: Vec::new(),
            drain_timeout_seconds: default_drain_timeout_seconds(),
            verify: CutoverVerify::default(),
            endpoint: EndpointMode::default(),
            pause_timeout_ms: default_pause_timeout_ms(),
            exact_check_seconds: default_exact_check_seconds(),
        }
    }
}

/// What the cutover compares inside the write freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CutoverVerify {
    /// Row counts of every table on both sides (a scan of each table: long freezes on big
    /// databases).
    Counts,
    /// Nothing inside the freeze: the drained position is the proof.
    #[default]
    None,
}

/// Poll intervals and wait lengths of the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimingSpec {
    /// Seconds between replication status checks while the copy runs. 1-3600.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u32,
    /// Longest time, in hours, for the copy to finish and catch up before the migration
    /// fails. 1-720.
    #[serde(default = "default_catch_up_hours")]
    pub catch_up_hours: u32,
    /// A worker heartbeat older than this many seconds means the worker is dead. 10-3600.
    #[serde(default = "default_stall_seconds")]
    pub stall_seconds: u32,
    /// Hours an approval gate waits for a person before the migration rolls back. 1-720.
    #[serde(default = "default_approval_timeout_hours")]
    pub approval_timeout_hours: u32,
    /// Overrides the rollback window with a number of seconds (rehearsals only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window_seconds: Option<u32>,
    /// Overrides the canary interval with a number of seconds (rehearsals whose local
    /// scheduler honours it; EventBridge itself schedules whole minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_interval_seconds: Option<u32>,
    /// Overrides how long 100% on AWS must hold before the cutover gate is asked (rehearsals,
    /// whose resolver caches answers for this long). By default: the longest TTL of the
    /// records involved (the weighted pair's `traffic.ttl_seconds` and the record it replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_hold_seconds: Option<u32>,
    /// How long one invocation of the status and Verify functions waits for the worker before
    /// the state machine asks again (fewer history events the longer it is). It must end
    /// before the function's own timeout (900 s in the template). Default 600. 1-840.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_wait_seconds: Option<u32>,
}

impl TimingSpec {
    /// [`Self::status_wait_seconds`] or its default.
    pub fn status_wait_seconds(&self) -> u32 {
        self.status_wait_seconds
            .unwrap_or(limits::STATUS_WAIT_SECONDS)
    }
}

impl Default for TimingSpec {
    fn default() -> Self {
        Self {
            poll_seconds: default_poll_seconds(),
            catch_up_hours: default_catch_up_hours(),
            stall_seconds: default_stall_seconds(),
            approval_timeout_hours: default_approval_timeout_hours(),
            rollback_window_seconds: None,
            canary_interval_seconds: None,
            dns_hold_seconds: None,
            status_wait_seconds: None,
        }
    }
}

/// The Heroku side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HerokuSpec {
    /// Heroku app name (3-30 characters: lowercase letters, digits and `-`, starting with a letter).
    pub app: String,
    /// SSM parameter (SecureString) holding a Heroku Platform API token with access to the app.
    pub api_token_param: String,
}

/// The source database (Heroku Postgres).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// SSM parameter (SecureString) holding the source `postgres://` URL. Heroku rotates
    /// credentials: Ferry reads the parameter at the time of use and never caches it.
    pub database_url_param: String,
}

/// The target database (Amazon RDS for PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// RDS DB instance identifier (1-63 letters, digits and `-`, starting with a letter).
    pub rds_instance_id: String,
    /// SSM parameter (SecureString) holding the target `postgres://` URL.
    pub database_url_param: String,
    /// ARN of the Secrets Manager secret in which RDS manages (and rotates) the password of the
    /// URL's user (`ManageMasterUserPassword`; the console shows it under the instance's master
    /// credentials). Ferry then takes the secret's current password whenever it reads the URL,
    /// and stores it back in `database_url_param` so the worker and the endpoint follow a
    /// rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
}

/// Change capture mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Triggers on the source write a change log; works on stock Heroku Postgres (no superuser,
    /// no REPLICATION role).
    Trigger,
    /// A logical replication slot with pgoutput; needs the REPLICATION privilege and
    /// `wal_level=logical` on the source.
    Logical,
    /// Logical when preflight finds the source allows it, trigger otherwise.
    #[default]
    Auto,
}

/// How logical capture reads its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogicalTransport {
    /// A replication-protocol session streams changes as they commit (lag in milliseconds).
    /// Needs a direct connection: poolers such as PgBouncer do not pass replication sessions.
    #[default]
    Stream,
    /// The SQL functions (`pg_logical_slot_peek_binary_changes`) read the slot in batches:
    /// for a source reached only through a pooler that refuses replication sessions. Slower,
    /// and it decodes again from the slot's restart point on every read.
    Sql,
}

/// Replication settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSpec {
    /// Change capture mode: `trigger`, `logical` or `auto`.
    #[serde(default)]
    pub capture: CaptureMode,
    /// Highest replication lag, in seconds, at which the migration may go on to verification
    /// and cutover. 1-3600.
    #[serde(default = "default_max_lag_seconds")]
    pub max_lag_seconds: u32,
    /// Parallel sessions for the snapshot copy. Each one is a connection to the source: keep
    /// them, the app's pool and the worker under the Heroku plan's connection limit. 1-32.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Upper bound on the snapshot copy's read rate from the source, in MB (10^6 bytes) per
    /// second across all its sessions, to spare production's disk and CPU while the app runs.
    /// Unset: as fast as the servers go. 1-10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_copy_mb_per_second: Option<u32>,
    /// Upper bound on Verify's read rate, in source rows per second across its sessions (each
    /// row is read on both sides). Verify runs in the worker while the app writes: on a busy
    /// Heroku database, bound it as the copy is. Unset: as fast as the servers go.
    /// 1-100000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_rows_per_second: Option<u32>,
    /// With logical capture: `stream` (the replication protocol, the default) or `sql` (the
    /// SQL functions, for a source reached through a pooler). Ignored by trigger capture.
    #[serde(default)]
    pub logical_transport: LogicalTransport,
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            capture: CaptureMode::default(),
            max_lag_seconds: default_max_lag_seconds(),
            parallelism: default_parallelism(),
            max_copy_mb_per_second: None,
            verify_rows_per_second: None,
            logical_transport: LogicalTransport::default(),
        }
    }
}

/// Traffic shifting through a Route 53 weighted record pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Route 53 hosted zone id, e.g. `Z0123456789ABCDEFGHIJ`.
    pub hosted_zone_id: String,
    /// The DNS name users reach, e.g. `app.example.com`. Ferry manages two weighted CNAME
    /// records of this name (set identifiers `ferry-heroku` and `ferry-aws`).
    pub record_name: String,
    /// Where the Heroku record points, e.g. `example-123.herokudns.com`.
    pub heroku_target: String,
    /// Where the AWS record points, e.g. the load balancer's DNS name.
    pub aws_target: String,
    /// TTL of the weighted records, in seconds. Lower it days before the migration. 1-86400.
    #[serde(default = "default_ttl_seconds")]
    pub ttl_seconds: u32,
    /// Percent of traffic sent to AWS at each canary step; strictly increasing, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// Minutes between canary steps; each step first passes the health gate. 1-1440.
    #[serde(default = "default_step_interval_minutes")]
    pub step_interval_minutes: u32,
    /// The health gate checked before every step; failing it sends all traffic back to Heroku.
    pub health: HealthGateSpec,
}

/// Health gate: CloudWatch alarms and/or an HTTPS health URL. At least one is required.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthGateSpec {
    /// CloudWatch alarm names; any of them in ALARM makes the gate fail.
    #[serde(default)]
    pub alarm_names: Vec<String>,
    /// An `https://` URL on the AWS side that must answer 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Approval gates (traffic shift, database cutover).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSpec {
    /// SNS topic that receives the approval prompts (e.g. subscribed by email).
    pub sns_topic_arn: String,
    /// SSM parameter holding a Slack incoming-webhook URL; when set, prompts also go to Slack
    /// with Approve / Reject buttons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_webhook_param: Option<String>,
    /// Who may approve: email addresses or Slack member ids (`U…`). At least one.
    pub approvers: Vec<String>,
}

/// Which config vars are copied to SSM Parameter Store.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigVarsSpec {
    /// SSM path prefix for the copied vars, starting and ending with `/`.
    /// Default: `/ferry/<heroku app>/config/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_prefix: Option<String>,
    /// Names to copy (`*` matches any run of characters). Empty: all.
    #[serde(default)]
    pub include: Vec<String>,
    /// Names never to copy, applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_rollback_window_hours() -> u32 {
    24
}
fn default_max_lag_seconds() -> u32 {
    10
}
fn default_parallelism() -> u32 {
    4
}
fn default_ttl_seconds() -> u32 {
    60
}
fn default_steps() -> Vec<u32> {
    vec![1, 5, 10, 25, 50, 100]
}
fn default_step_interval_minutes() -> u32 {
    10
}
fn default_true() -> bool {
    true
}
fn default_drain_timeout_seconds() -> u32 {
    15
}
fn default_poll_seconds() -> u32 {
    30
}
fn default_catch_up_hours() -> u32 {
    72
}
fn default_stall_seconds() -> u32 {
    120
}
fn default_approval_timeout_hours() -> u32 {
    72
}

impl MigrationSpec {
    /// Whether the AWS fleet reaches its database (and Redis) through Ferry's endpoint, which
    /// the cutover switches in place (`cutover.endpoint` is `proxy`).
    pub fn proxied(&self) -> bool {
        self.cutover.endpoint == EndpointMode::Proxy
    }

    /// The SSM prefix config vars are copied under (the spec's, or the default for the app).
    pub fn config_ssm_prefix(&self) -> String {
        self.config_vars
            .ssm_prefix
            .clone()
            .unwrap_or_else(|| format!("/ferry/{}/config/", self.heroku.app))
    }

    /// The SSM parameter the endpoint's tasks read the target URL from.
    pub fn endpoint_target_param(&self) -> &str {
        self.endpoint
            .as_ref()
            .and_then(|e| e.target_url_param.as_deref())
            .unwrap_or(&self.target.database_url_param)
    }

    /// The SSM parameter the AWS side of the app reads its DATABASE_URL from.
    pub fn app_database_url_param(&self) -> String {
        format!("{}DATABASE_URL", self.config_ssm_prefix())
    }

    /// The rollback window in seconds (the rehearsal override, or the hours).
    pub fn rollback_window_seconds(&self) -> u64 {
        self.timing
            .rollback_window_seconds
            .map(u64::from)
            .unwrap_or(u64::from(self.rollback_window_hours) * 3600)
    }
}

/// Whether `name` can be a Heroku process type in `cutover.scale_down`: lowercase letters,
/// digits and `_`, starting with a letter, at most 30 characters.
pub fn is_process_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The JSON Schema of [`MigrationSpec`], as checked in at `examples/migration.schema.json`.
pub fn json_schema() -> serde_json::Value {
    schema().clone()
}

/// The schema, generated once per process (every parse checks against it).
fn schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(MigrationSpec))
            .expect("a generated schema is always valid JSON")
    })
}

/// Parses and validates a spec from JSON text, reporting every problem found.
pub fn parse(text: &str) -> Result<MigrationSpec, Problems> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(Problems::from(vec![Problem::new(
            "$",
            format!(
                "is {} bytes; Step Functions takes an execution input of at most 256 KiB ({MAX_SPEC_BYTES} bytes): shorten it",
                text.len()
            ),
        )]));
    }
    let duplicates = dupkeys::find(text);
    if !duplicates.is_empty() {
        return Err(Problems::from(duplicates));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Problems::from(vec![Problem::new(
            "$",
            format!(
                "not valid JSON at line {} column {}: {e}; fix the syntax first",
                e.line(),
                e.column()
            ),
        )])
    })?;
    from_value(&value)
}

/// Validates an already-parsed JSON value and converts it into a spec.
pub fn from_value(value: &serde_json::Value) -> Result<MigrationSpec, Problems> {
    let mut problems = shape::check(schema(), value);
    if problems.is_empty() {
        match serde_json::from_value::<MigrationSpec>(value.clone()) {
            Ok(spec) => {
                rules::check(&spec, &mut problems);
                if problems.is_empty() {
                    return Ok(spec);
                }
            }
            // The schema is generated from the same types, so this means a schema/serde
            // mismatch: report it rather than panic.
            Err(e) => problems.push(Problem::new("$", format!("cannot read the spec: {e}"))),
        }
    } else {
        // The shape is wrong somewhere; still check the rules of every section whose shape
        // is right, so the user sees all problems in one go.
        rules::check_sections(value, &mut problems);
    }
    problems.sort();
    Err(Problems::from(problems))
}

/// Step Functions' limit on an execution's input.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

mod dupkeys;

#[cfg(test)]
mod tests;

/// Config vars Heroku sets itself (labs `runtime-dyno-metadata`): Heroku's, not the app's, so
/// config sync does not copy them and the destination stack does not pass them.
pub const HEROKU_MANAGED: &[&str] = &[
    "HEROKU_APP_ID",
    "HEROKU_APP_NAME",
    "HEROKU_DYNO_ID",
    "HEROKU_RELEASE_CREATED_AT",
    "HEROKU_RELEASE_VERSION",
    "HEROKU_SLUG_COMMIT",
    "HEROKU_SLUG_DESCRIPTION",
];
