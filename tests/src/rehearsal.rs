//! The local rehearsal: the real state machine (`statemachines/migration.asl.json`) in the
//! emulator, running the real function binaries (cargo lambda watch, forwarded from the
//! emulator's Lambda invoke), against real PostgreSQL, with small honest stand-ins for what
//! the emulator does not do — all here, in the test bed, not in the product:
//!
//! - [`EcsRunner`]: starts the `ferry-worker` binary for each RUNNING task of a migration
//!   (with its overrides), stops it on StopTask, and marks the task STOPPED when the process
//!   dies, as ECS does.
//! - [`Scheduler`]: fires the canary's EventBridge rules on their schedule (compressed: the
//!   rule input's `interval_seconds`).
//! - [`App`]: the sample app, two instances ("Heroku" reads DATABASE_URL from the Heroku
//!   config, "AWS" from SSM), behind a resolver that splits requests by the Route 53 weights,
//!   fed by a load generator that records every acknowledged write and every error.
//! - [`Approver`]: approves or rejects a gate as a person would, through the approval callback
//!   with a correctly signed Slack request.

use std::{
    collections::{BTreeMap, HashMap},
    process::{Child, Command},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
use chrono::{DateTime, Utc};
use ferry_core::{
    MigrationStore, ParamStore,
    state::{ApprovalStatus, Gate},
    traffic::{TrafficRouter, Weights},
};
use ferry_pg::PgUrl;
use rand::Rng;

use crate::{
    bed_var,
    endpoint::{EndpointFleet, EndpointParams, Kind, Nlb, Pool, kind_of},
    heroku, heroku_app,
    sink::Sink,
    unique, workspace_bin,
};

/// The function ARN the state machine's `${<Step>FunctionArn}` becomes.
pub fn function_arn(binary: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{binary}")
}

/// The ASL with its substitutions filled in, as the SAM template's DefinitionSubstitutions do.
pub fn definition() -> String {
    let path = crate::repo_root().join("statemachines/migration.asl.json");
    let mut text = std::fs::read_to_string(path).expect("read the ASL");
    while let Some(start) = text.find("${") {
        let end = start + text[start..].find('}').expect("closing brace");
        let binary = function_binary(&text[start + 2..end])
            .expect("the ASL's substitutions are <Step>FunctionArn");
        text.replace_range(start..=end, &function_arn(&binary));
    }
    text
}

/// The function binary a `${<Step>FunctionArn}` substitution names: `PreflightFunctionArn` →
/// `ferry-preflight`, `ConfigSyncFunctionArn` → `ferry-config-sync`.
pub fn function_binary(substitution: &str) -> Option<String> {
    let stem = substitution.strip_suffix("FunctionArn")?;
    let mut name = String::from("ferry");
    for c in stem.chars() {
        if c.is_ascii_uppercase() {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    Some(name)
}

/// Invokes a function binary as the emulator's Lambda invoke does (through cargo lambda
/// watch); returns (ok, JSON body).
pub async fn invoke(binary: &str, payload: &serde_json::Value) -> (bool, serde_json::Value) {
    let url = format!(
        "{}/2015-03-31/functions/{binary}/invocations",
        bed_var("FERRY_BED_LAMBDA_URL")
    );
    let resp = reqwest::Client::new()
        .post(url)
        .json(payload)
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .expect("reach cargo lambda watch");
    let ok = resp.status().is_success();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (ok, body)
}

/// How a rehearsal's database and timing look.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows in the big table (about 150 bytes each).
    pub rows: i64,
    /// Percent steps of the canary.
    pub steps: Vec<u32>,
    /// Seconds between canary ticks (compressed time).
    pub canary_interval_seconds: u32,
    /// The rollback window in seconds.
    pub rollback_window_seconds: u32,
    /// Writes per second of the load generator.
    pub writes_per_second: u32,
    /// Reads per second of the load generator.
    pub reads_per_second: u32,
    /// How the AWS fleet is switched at cutover (`proxy`: through the endpoint).
    pub endpoint: ferry_core::spec::EndpointMode,
    /// How long the app's resolvers cache an answer (the records' TTL, compressed like the
    /// canary's time); the canary holds 100% this long before the cutover gate.
    pub dns_ttl_seconds: u32,
    /// Redeploy mode: seconds from the cutover's ECS UpdateService until the AWS app's new
    /// tasks serve (Fargate task provisioning, image pull, app boot and two load balancer
    /// health checks: about a minute on AWS).
    pub redeploy_seconds: u32,
    /// Copy parallelism.
    pub parallelism: u32,
    /// The capture mode. Logical capture needs REPLICATION: the migration then reads the
    /// source as the bed's superuser (as on RDS or self-hosted); the app keeps its own role.
    pub capture: ferry_core::spec::CaptureMode,
    /// Heroku Redis moves too: the logical database of the bed's Redis servers this rehearsal
    /// owns (emptied first on both).
    pub redis_db: Option<u32>,
    /// The execution's history limit in the bed (the state machine's `ferry-bed:history-limit`
    /// tag; AWS's 25,000 when unset).
    pub history_limit: Option<u32>,
    /// Proxy mode: the endpoint logs in on the target as a role of the app's own (created by
    /// the RDS master, as an operator would), not as Ferry's login.
    pub target_app_role: bool,
    /// Seconds ECS takes to start the worker's task (Fargate provisioning and image pull: 30 to
    /// 60 s on AWS); the status checks wait for it. The spec's stall limit grows by as much.
    pub task_start_seconds: u32,
    /// Functions (by binary) whose timeout the bed lowers to these seconds for this
    /// rehearsal's executions (the state machine's `ferry-bed:lambda-timeout:<binary>` tags).
    pub lambda_timeouts: Vec<(&'static str, u32)>,
    /// `timing.status_wait_seconds` (unset: the spec's default).
    pub status_wait_seconds: Option<u32>,
    /// `replication.verify_rows_per_second` (unset: unbounded).
    pub verify_rows_per_second: Option<u32>,
    /// The AWS side is deployed as a team makes it: `ferry plan`'s destination.yaml into the
    /// emulator's CloudFormation, `ferry destination` filling the spec from its outputs (the
    /// RDS instance, its master secret, the load balancer, the health alarms); see
    /// [`crate::destination`] for what stands in for what.
    pub destination_stack: bool,
    /// Proxy mode: half the endpoint's tasks are steered by the control channel alone (they
    /// read the state table once a minute), the others by the table alone (no channel), so
    /// one cutover must use both; otherwise every task listens and polls, as deployed.
    pub endpoint_control_mixed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rows: 20_000,
            steps: vec![10, 50, 100],
            canary_interval_seconds: 2,
            rollback_window_seconds: 3,
            writes_per_second: 40,
            reads_per_second: 80,
            endpoint: ferry_core::spec::EndpointMode::Proxy,
            redeploy_seconds: 60,
            dns_ttl_seconds: 2,
            parallelism: 2,
            capture: ferry_core::spec::CaptureMode::Trigger,
            redis_db: None,
            history_limit: None,
            task_start_seconds: 0,
            target_app_role: false,
            lambda_timeouts: Vec::new(),
            status_wait_seconds: None,
            verify_rows_per_second: None,
            destination_stack: false,
            endpoint_control_mixed: false,
        }
    }
}

/// The Redis side of a rehearsal.
#[derive(Debug, Clone)]
pub struct RedisSides {
    /// Heroku Redis (what Heroku's dynos use).
    pub heroku: ferry_kv::RedisUrl,
    /// ElastiCache.
    pub target: ferry_kv::RedisUrl,
    /// The endpoint's Redis proxy: the AWS fleet's REDIS_URL.
    pub aws: ferry_kv::RedisUrl,
}

/// Empties database `db` of both bed Redis servers and stores their URLs as parameters;
/// returns the Heroku and ElastiCache URLs.
async fn redis_world(
    params: &ferry_aws::SsmParams,
    p: &str,
    db: u32,
) -> (ferry_kv::RedisUrl, ferry_kv::RedisUrl) {
    let mut out = Vec::new();
    for (name, var) in [
        ("redis-source-url", "FERRY_BED_REDIS_SOURCE_URL"),
        ("redis-target-url", "FERRY_BED_REDIS_TARGET_URL"),
    ] {
        let text = bed_var(var);
        let url = ferry_kv::RedisUrl::parse(&text)
            .expect("bed Redis URL")
            .with_db(db);
        let mut c = ferry_kv::Conn::connect(&url).await.expect("bed Redis");
        c.call(ferry_kv::cmd!["FLUSHDB"]).await.expect("FLUSHDB");
        params
            .put_secure(&format!("{p}/{name}"), &with_redis_db(&text, db))
            .await
            .expect("param");
        out.push(url);
    }
    let target = out.pop().expect("target");
    let heroku = out.pop().expect("source");
    (heroku, target)
}

/// `rediss://…@host:port?query` with `/db` after the port.
fn with_redis_db(url: &str, db: u32) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{}/{db}?{query}", base.trim_end_matches('/')),
        None => format!("{}/{db}", url.trim_end_matches('/')),
    }
}

/// One migration's world: its databases, Heroku app, AWS resources and spec.
pub struct Rehearsal {
    /// The migration id (also the execution name).
    pub id: String,
    /// The Heroku app.
    pub app: String,
    /// The source database URL the app uses (Heroku's DATABASE_URL).
    pub source_app: PgUrl,
    /// The source database as superuser.
    pub source_admin: PgUrl,
    /// The target database.
    pub target: PgUrl,
    /// The spec (the execution input).
    pub spec: serde_json::Value,
    /// The state store the functions use.
    pub store: Arc<ferry_aws::DynamoStore>,
    /// SSM.
    pub params: Arc<ferry_aws::SsmParams>,
    /// Route 53.
    pub router: Arc<ferry_aws::Route53Router>,
    /// Step Functions.
    pub sfn: aws_sdk_sfn::Client,
    /// The state machine.
    pub machine_arn: String,
    /// The AWS app's health URL (make it fail to fail the canary).
    pub health: Sink,
    /// The database name on both clusters.
    pub db_name: String,
    /// The database endpoint's tasks (proxy mode), as the ECS service runs them.
    pub endpoint: Option<tokio::sync::Mutex<EndpointFleet>>,
    /// The Redis side (with `Options::redis_db`).
    pub redis: Option<RedisSides>,
    /// The SSM prefix of this rehearsal's parameters.
    pub param_prefix: String,
    /// Redeploy mode: the AWS app's ECS service (cluster, service) the cutover redeploys, and
    /// how long its new tasks take to serve.
    pub app_service: Option<(String, String, Duration)>,
    /// How long the app's resolvers cache an answer.
    pub dns_ttl: Duration,
    /// The AWS side's stack (with [`Options::destination_stack`]).
    pub destination: Option<crate::destination::Made>,
}

impl std::fmt::Debug for Rehearsal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rehearsal").field("id", &self.id).finish()
    }
}

/// The bed's state table, worker cluster and task definition the deployed functions use,
/// created if missing (any test may be the first to need them).
pub async fn ensure_shared(aws: &aws_config::SdkConfig) {
    let ddb = aws_sdk_dynamodb::Client::new(aws);
    ferry_aws::create_table(&ddb, &bed_var("FERRY_BED_STATE_TABLE"))
        .await
        .expect("state table");
    crate::aws::worker_task(
        aws,
        &bed_var("FERRY_BED_CLUSTER"),
        &bed_var("FERRY_BED_TASK_DEFINITION"),
    )
    .await;
}

impl Rehearsal {
    /// Creates the databases (with `options.rows` rows of app data), the Heroku app, the AWS
    /// resources, the state machine and the spec.
    pub async fn new(options: &Options) -> Self {
        let aws = ferry_aws::sdk_config().await;
        ensure_shared(&aws).await;
        let id = unique("reh-");
        let db_name = id.replace('-', "_");
        let source_admin_root = PgUrl::parse(&bed_var("FERRY_BED_SOURCE_URL")).expect("url");
        let target_root = PgUrl::parse(&bed_var("FERRY_BED_TARGET_URL")).expect("url");
        source_admin_root
            .connect()
            .await
            .expect("source")
            .batch_execute(&format!(
                "CREATE DATABASE \"{db_name}\" OWNER {}",
                crate::APP_ROLE
            ))
            .await
            .expect("create source db");
        target_root
            .connect()
            .await
            .expect("target")
            .batch_execute(&format!("CREATE DATABASE \"{db_name}\""))
            .await
            .expect("create target db");
        let source_app = PgUrl::parse(&bed_var("FERRY_BED_SOURCE_APP_URL"))
            .expect("url")
            .with_dbname(&db_name);
        let rows = options.rows;
        source_app
            .connect()
            .await
            .expect("app")
            .batch_execute(&format!(
                "CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, plan text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
                 INSERT INTO customers (email, plan) SELECT 'c' || g || '@example.com', (ARRAY['free','pro','team'])[1 + g % 3] FROM generate_series(1, {c}) g;
                 CREATE TABLE events (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, kind text NOT NULL, payload jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now());
                 INSERT INTO events (customer_id, kind, payload) SELECT 1 + g % {c}, 'page_view', jsonb_build_object('path', '/p/' || g, 'ms', g % 997, 'agent', repeat('x', 60)) FROM generate_series(1, {rows}) g;
                 CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers, side text NOT NULL, note text, at timestamptz NOT NULL DEFAULT now());
                 ANALYZE;",
                c = (rows / 10).max(100),
            ))
            .await
            .expect("app data");

        let store = Arc::new(ferry_aws::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&aws),
            bed_var("FERRY_BED_STATE_TABLE"),
        ));
        let params = Arc::new(ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&aws)));
        let p = format!("/ferry/rehearsal/{id}");
        let (_, heroku_token) = heroku();
        let slack = Sink::start().await;
        let health = Sink::start().await;
        let config =
            serde_json::json!({"SECRET_KEY_BASE": unique("s3cr3t-"), "RAILS_ENV": "production"});
        let app = if options.destination_stack {
            rehearsal_app(
                source_app.expose_secret(),
                config,
                options.redis_db.is_some(),
            )
            .await
        } else {
            heroku_app(source_app.expose_secret(), config).await
        };
        for (name, value) in [
            (
                format!("{p}/source-url"),
                match options.capture {
                    ferry_core::spec::CaptureMode::Logical => crate::Side::Source
                        .admin_url()
                        .with_dbname(&db_name)
                        .expose_secret()
                        .to_string(),
                    _ => source_app.expose_secret().to_string(),
                },
            ),
            (
                format!("{p}/target-url"),
                target_root
                    .with_dbname(&db_name)
                    .expose_secret()
                    .to_string(),
            ),
            (
                format!("{p}/endpoint-target-url"),
                endpoint_target_url(&target_root.with_dbname(&db_name), options).await,
            ),
            (format!("{p}/heroku-token"), heroku_token),
            (format!("{p}/slack-webhook"), format!("{}/slack", slack.url)),
        ] {
            params.put_secure(&name, &value).await.expect("param");
        }
        let redis_urls = match options.redis_db {
            Some(db) => Some((db, redis_world(&params, &p, db).await)),
            None => None,
        };
        let (endpoint, redis) = match options.endpoint {
            ferry_core::spec::EndpointMode::Proxy => {
                let (fleet, aws_redis) = start_endpoint(
                    &params,
                    &p,
                    &app,
                    &db_name,
                    redis_urls.as_ref().map(|r| r.0),
                    options.endpoint_control_mixed,
                )
                .await;
                let redis = redis_urls
                    .as_ref()
                    .zip(aws_redis)
                    .map(|((_, (h, t)), a)| RedisSides {
                        heroku: h.clone(),
                        target: t.clone(),
                        aws: a,
                    });
                (Some(tokio::sync::Mutex::new(fleet)), redis)
            }
            ferry_core::spec::EndpointMode::Redeploy => (None, None),
        };
        let app_service = match options.endpoint {
            ferry_core::spec::EndpointMode::Redeploy => Some((
                bed_var("FERRY_BED_CLUSTER"),
                app_ecs_service(&aws, &id).await,
                Duration::from_secs(u64::from(options.redeploy_seconds)),
            )),
            ferry_core::spec::EndpointMode::Proxy => None,
        };
        let r53 = aws_sdk_route53::Client::new(&aws);
        let (zone_id, domain) = crate::aws::hosted_zone(&aws).await;
        // The app's domain points at Heroku with a simple CNAME, as before any migration: the
        // canary's first move must replace it in the batch that writes the weighted pair.
        crate::aws::app_record(
            &aws,
            &zone_id,
            &format!("app.{domain}"),
            &format!("{app}.herokudns.com"),
        )
        .await;
        let topic = crate::aws::topic(&aws).await;
        let destination = match options.destination_stack {
            true => Some(
                crate::destination::for_rehearsal(
                    &aws,
                    &app,
                    &zone_id,
                    &format!("app.{domain}"),
                    &target_root,
                    &topic,
                )
                .await,
            ),
            false => None,
        };
        let rds_id = match &destination {
            Some(d) => d.stack.output("DatabaseInstanceId").to_string(),
            None => {
                crate::aws::rds_instance(&aws, &(bed_var("FERRY_BED_TARGET_VERSION") + ".1")).await
            }
        };
        let spec = serde_json::json!({
            "migration_id": id,
            "heroku": {"app": app, "api_token_param": format!("{p}/heroku-token")},
            "source": {"database_url_param": format!("{p}/source-url")},
            "target": {"rds_instance_id": rds_id, "database_url_param": format!("{p}/target-url")},
            "replication": {"capture": options.capture, "max_lag_seconds": 5, "parallelism": options.parallelism},
            "traffic": {
                "hosted_zone_id": zone_id,
                "record_name": format!("app.{domain}"),
                "heroku_target": format!("{app}.herokudns.com"),
                "aws_target": "ferry-rehearsal-alb.us-east-1.elb.amazonaws.com",
                "ttl_seconds": 60,
                "steps": options.steps,
                "step_interval_minutes": 1,
                "health": {"url": format!("{}/healthz", health.url)}
            },
            "approvals": {
                "sns_topic_arn": topic,
                "slack_webhook_param": format!("{p}/slack-webhook"),
                "approvers": ["ops-lead@example.com", APPROVER]
            },
            "config_vars": {"ssm_prefix": format!("{p}/config/")},
            "cutover": {"scale_down": ["worker"], "drain_timeout_seconds": 30, "endpoint": options.endpoint},
            "timing": {
                "poll_seconds": 1,
                "stall_seconds": 20 + options.task_start_seconds,
                "canary_interval_seconds": options.canary_interval_seconds,
                "rollback_window_seconds": options.rollback_window_seconds,
                "dns_hold_seconds": options.dns_ttl_seconds
            }
        });
        let mut spec = spec;
        if let Some(d) = &destination {
            take_from_stack(&mut spec, &d.filled);
        }
        if let Some(w) = options.status_wait_seconds {
            spec["timing"]["status_wait_seconds"] = w.into();
            // Short turns: a catch-up bound whose turns fit an execution's history.
            spec["timing"]["catch_up_hours"] = 1.into();
        }
        if let Some(r) = options.verify_rows_per_second {
            spec["replication"]["verify_rows_per_second"] = r.into();
        }
        if let Some((cluster, service, _)) = &app_service {
            spec["cutover"]["ecs_services"] = serde_json::json!([format!("{cluster}/{service}")]);
        }
        if let Some((db, _)) = &redis_urls {
            spec["redis"] = serde_json::json!({
                "source_url_param": format!("{p}/redis-source-url"),
                "target_url_param": format!("{p}/redis-target-url"),
                "databases": [db],
                "disposable_patterns": ["cache:*"]
            });
        }
        if endpoint.is_some() {
            spec["endpoint"] = serde_json::json!({
                "url_param": format!("{p}/endpoint-url"),
                "target_url_param": format!("{p}/endpoint-target-url"),
                "min_tasks": 2
            });
        }
        let sfn = aws_sdk_sfn::Client::new(&aws);
        let mut machine = sfn
            .create_state_machine()
            .name(format!("ferry-{id}"))
            .definition(definition())
            .role_arn("arn:aws:iam::123456789012:role/ferry-state-machine");
        if let Some(limit) = options.history_limit {
            machine = machine.tags(
                aws_sdk_sfn::types::Tag::builder()
                    .key("ferry-bed:history-limit")
                    .value(limit.to_string())
                    .build(),
            );
        }
        for (binary, seconds) in &options.lambda_timeouts {
            machine = machine.tags(
                aws_sdk_sfn::types::Tag::builder()
                    .key(format!("ferry-bed:lambda-timeout:{binary}"))
                    .value(seconds.to_string())
                    .build(),
            );
        }
        let machine = machine.send().await.expect("state machine");
        Self {
            id,
            app,
            source_app,
            source_admin: source_admin_root.with_dbname(&db_name),
            target: target_root.with_dbname(&db_name),
            spec,
            store,
            params,
            router: Arc::new(ferry_aws::Route53Router::new(r53)),
            sfn,
            machine_arn: machine.state_machine_arn().to_string(),
            health,
            db_name,
            endpoint,
            redis,
            param_prefix: p,
            app_service,
            dns_ttl: Duration::from_secs(u64::from(options.dns_ttl_seconds)),
            destination,
        }
    }

    /// The SSM parameter the endpoint's tasks read the target URL from.
    pub fn endpoint_target_param(&self) -> String {
        format!("{}/endpoint-target-url", self.param_prefix)
    }

    /// The URL the AWS fleet reaches the endpoint with.
    pub async fn endpoint_url(&self) -> String {
        self.params
            .get(&format!("{}/endpoint-url", self.param_prefix))
            .await
            .expect("endpoint URL")
            .expose()
            .to_string()
    }

    /// The spec as typed.
    pub fn spec(&self) -> ferry_core::MigrationSpec {
        ferry_core::spec::from_value(&self.spec).expect("the rehearsal spec is valid")
    }

    /// The steps' dependencies as the rehearsal's functions have them (their environment,
    /// `functions.env`), with the harness's own credentials.
    pub async fn steps_deps(&self) -> ferry_steps::Deps {
        let text = std::fs::read_to_string(bed_var("FERRY_BED_FUNCTIONS_ENV"))
            .expect("the functions' environment");
        let vars: std::collections::HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = ferry_steps::Settings::from_vars(|k| vars.get(k).cloned())
            .expect("the functions' settings");
        let worker = ferry_aws::WorkerTask {
            cluster: vars["FERRY_WORKER_CLUSTER"].clone(),
            task_definition: vars["FERRY_WORKER_TASK_DEFINITION"].clone(),
            container: vars["FERRY_WORKER_CONTAINER"].clone(),
            subnets: vec![vars["FERRY_WORKER_SUBNETS"].clone()],
            security_groups: vec![vars["FERRY_WORKER_SECURITY_GROUPS"].clone()],
            public_ip: false,
        };
        ferry_lambda::deps(settings, vars["FERRY_STATE_TABLE"].clone(), worker)
            .await
            .expect("deps")
    }

    /// The floor of the cutover's paused window: the endpoint's tasks (PgBouncer and the
    /// Redis proxy) paused and resumed on the source by the same code and channel the cutover
    /// uses, with nothing between. Milliseconds from the pause asked to every task resumed,
    /// and the longest hold a task reported.
    pub async fn endpoint_floor(
        deps: &ferry_steps::Deps,
        spec: &ferry_core::MigrationSpec,
    ) -> (i64, Option<i64>) {
        use ferry_core::endpoint::Backend;
        use ferry_steps::endpoint::{self, Goal};
        let t0 = chrono::Utc::now();
        let fleet = endpoint::pause(deps, spec, Backend::Source, "rehearsal:floor")
            .await
            .expect("floor: pause");
        let done = endpoint::converge(
            deps,
            spec,
            &fleet.tasks,
            Goal::Resume(Backend::Source),
            "rehearsal:floor",
            fleet.seq,
        )
        .await
        .expect("floor: resume");
        (
            (chrono::Utc::now() - t0).num_milliseconds(),
            done.longest_hold_ms(),
        )
    }

    /// Asks the cutover of this migration to fail at `point` (a rehearsal fault).
    pub async fn inject_fault(&self, point: &str) {
        self.params
            .put_secure(
                &format!("{}{}", bed_var("FERRY_BED_FAULT_PREFIX"), self.id),
                point,
            )
            .await
            .expect("fault param");
    }

    /// Starts the execution with the AWS CLI, as an operator or CI does, from a spec file.
    pub fn start_with_cli(&self, name: &str) -> String {
        let dir = std::env::temp_dir().join(unique("ferry-spec-"));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("migration.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&self.spec).expect("json")).expect("write");
        let out = Command::new(bed_var("FERRY_BED_AWS"))
            .args(["stepfunctions", "start-execution", "--state-machine-arn"])
            .arg(&self.machine_arn)
            .args(["--name", name, "--input"])
            .arg(format!("file://{}", file.display()))
            .output()
            .expect("run the AWS CLI");
        assert!(
            out.status.success(),
            "aws stepfunctions start-execution: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("CLI JSON");
        v["executionArn"]
            .as_str()
            .expect("executionArn")
            .to_string()
    }

    /// The execution's history.
    pub async fn history(&self, execution: &str) -> Vec<HistoryEvent> {
        let mut events = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .sfn
                .get_execution_history()
                .execution_arn(execution)
                .set_next_token(token.take())
                .max_results(1000)
                .send()
                .await
                .expect("history");
            events.extend(out.events().iter().cloned());
            match out.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => return events,
            }
        }
    }

    /// Waits for the execution to end; returns its status, error and output.
    pub async fn finished(
        &self,
        execution: &str,
        limit: Duration,
    ) -> (ExecutionStatus, Option<String>, Option<String>) {
        let deadline = Instant::now() + limit;
        loop {
            let d = describe(&self.sfn, execution).await;
            if d.status() != &ExecutionStatus::Running {
                return (
                    d.status().clone(),
                    d.error().map(str::to_string),
                    d.output().map(str::to_string),
                );
            }
            assert!(
                Instant::now() < deadline,
                "execution {execution} still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last state entered, for progress display.
    pub async fn current_state(&self, execution: &str) -> Option<String> {
        self.history(execution)
            .await
            .iter()
            .rev()
            .find(|e| {
                e.r#type() == &HistoryEventType::TaskStateEntered
                    || e.r#type() == &HistoryEventType::WaitStateEntered
                    || e.r#type() == &HistoryEventType::ChoiceStateEntered
            })
            .and_then(|e| e.state_entered_event_details())
            .map(|d| d.name().to_string())
    }

    /// Weights now.
    pub async fn weights(&self) -> Option<Weights> {
        self.router
            .weights(&self.spec().traffic)
            .await
            .expect("weights")
    }

    /// Asserts that the app's name is its simple CNAME to Heroku again, the pair gone (a
    /// rollback restored what preflight found).
    pub async fn app_record_restored(&self) {
        let traffic = self.spec().traffic;
        let aws = crate::aws::config().await;
        assert_eq!(
            crate::aws::records_at(&aws, &traffic.hosted_zone_id, &traffic.record_name).await,
            vec![(None, traffic.heroku_target.clone(), 300)],
            "the simple CNAME is back and the weighted pair gone"
        );
    }
}

/// The Heroku app of a rehearsal whose AWS side is planned from it: the sample app's
/// formation, a Scheduler add-on, and a Key-Value Store add-on when Redis moves too.
async fn rehearsal_app(database_url: &str, config: serde_json::Value, redis: bool) -> String {
    let name = unique("t-");
    let mut addons =
        vec![serde_json::json!({"service": "scheduler", "plan": "scheduler:standard"})];
    if redis {
        addons.push(serde_json::json!({"service": "heroku-redis", "plan": "heroku-redis:premium-0", "cents": 1500}));
    }
    crate::create_heroku_app(serde_json::json!({
        "name": name,
        "database_url": database_url,
        "config_vars": config,
        "domains": [format!("{name}.example.com")],
        "formation": [
            {"type": "web", "quantity": 2, "size": "standard-2X", "command": "bin/web"},
            {"type": "worker", "quantity": 1, "size": "standard-1X", "command": "bin/jobs"},
        ],
        "addons": addons,
    }))
    .await;
    name
}

/// What the rehearsal's spec takes from the one `ferry destination` filled from the stack:
/// the RDS instance and its master secret, the load balancer the canary weighs, the health
/// alarms. The rest stays the rehearsal's own (the bed's databases in its SSM parameters, the
/// health URL its AWS app serves).
fn take_from_stack(spec: &mut serde_json::Value, filled: &serde_json::Value) {
    for (section, field) in [
        ("target", "rds_instance_id"),
        ("target", "password_secret"),
        ("traffic", "aws_target"),
        ("traffic", "hosted_zone_id"),
    ] {
        assert!(
            filled[section][field].is_string(),
            "ferry destination filled no {section}.{field}"
        );
        spec[section][field] = filled[section][field].clone();
    }
    spec["traffic"]["health"]["alarm_names"] = filled["traffic"]["health"]["alarm_names"].clone();
}

/// The URL the endpoint logs in to the target with: Ferry's (the master's), or a role of the
/// app's own that the master creates, as an operator does on RDS before the migration.
async fn endpoint_target_url(target: &PgUrl, options: &Options) -> String {
    if !options.target_app_role {
        return target.expose_secret().to_string();
    }
    let role = format!("{}_app", target.dbname().unwrap_or("app"));
    let password = unique("pw-");
    target
        .connect()
        .await
        .expect("target as master")
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER"
        ))
        .await
        .expect("create the app's role on the target");
    let login = PgUrl::parse(&format!("postgres://{role}:{password}@localhost/x")).expect("url");
    target
        .with_login_of(&login)
        .expect("the app's login")
        .expose_secret()
        .to_string()
}

/// The AWS app's ECS service (no tasks: the rehearsal's app stands in for them), which the
/// cutover redeploys in redeploy mode.
async fn app_ecs_service(aws: &aws_config::SdkConfig, id: &str) -> String {
    let name = format!("app-{id}");
    aws_sdk_ecs::Client::new(aws)
        .create_service()
        .cluster(bed_var("FERRY_BED_CLUSTER"))
        .service_name(&name)
        .task_definition(bed_var("FERRY_BED_TASK_DEFINITION"))
        .desired_count(0)
        .send()
        .await
        .expect("create the app's ECS service");
    name
}

/// The id of the service's newest deployment (a forced redeploy makes a new one).
async fn deployment_id(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> Option<String> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .ok()?;
    out.services()
        .first()?
        .deployments()
        .first()?
        .id()
        .map(str::to_string)
}

/// The endpoint as the template deploys it for the app, days before the migration: two tasks
/// behind one balancer reading the migration's parameters, and the URL the AWS fleet will use
/// stored in SSM (`<p>/endpoint-url`).
async fn start_endpoint(
    params: &ferry_aws::SsmParams,
    p: &str,
    app: &str,
    db_name: &str,
    redis_db: Option<u32>,
    control_mixed: bool,
) -> (EndpointFleet, Option<ferry_kv::RedisUrl>) {
    let nlb = Nlb::start().await;
    let url = format!(
        "postgres://app_user:{}@127.0.0.1:{}/{db_name}?sslmode=require",
        unique("endpoint-secret-"),
        nlb.port
    );
    params
        .put_secure(&format!("{p}/endpoint-url"), &url)
        .await
        .expect("endpoint URL param");
    // With Redis: the proxies behind their own balancer; the AWS fleet's REDIS_URL names it
    // (the endpoint's certificate is self-signed here, as Heroku's are).
    let mut redis_nlb = None;
    let mut aws_redis = None;
    if let Some(db) = redis_db {
        let n = Nlb::start().await;
        let client = format!(
            "rediss://:{}@127.0.0.1:{}/{db}?ssl_cert_reqs=none",
            unique("redis-endpoint-secret-"),
            n.port
        );
        params
            .put_secure(&format!("{p}/redis-endpoint-url"), &client)
            .await
            .expect("redis endpoint URL param");
        aws_redis = Some(ferry_kv::RedisUrl::parse(&client).expect("client URL"));
        redis_nlb = Some(n);
    }
    let fleet = EndpointFleet::start_with_redis(
        EndpointParams {
            app: app.to_string(),
            table: bed_var("FERRY_BED_STATE_TABLE"),
            as_task_role: true,
            source_param: format!("{p}/source-url"),
            target_param: format!("{p}/endpoint-target-url"),
            client_param: format!("{p}/endpoint-url"),
            redis: redis_db.map(|_| {
                (
                    format!("{p}/redis-source-url"),
                    format!("{p}/redis-target-url"),
                    format!("{p}/redis-endpoint-url"),
                )
            }),
            control: {
                let key = bed_var("FERRY_BED_ENDPOINT_CONTROL_KEY_PARAM");
                if control_mixed {
                    crate::endpoint::Control::Mixed(key)
                } else {
                    crate::endpoint::Control::On(key)
                }
            },
        },
        2,
        nlb,
        redis_nlb,
    )
    .await;
    (fleet, aws_redis)
}

/// The Slack member id the approver clicks as.
pub const APPROVER: &str = "U0REHEARS";

/// Approves or rejects gates through the approval callback, as a person would.
#[derive(Debug)]
pub struct Approver {
    store: Arc<ferry_aws::DynamoStore>,
    sfn: aws_sdk_sfn::Client,
}

impl Approver {
    /// An approver for the rehearsal's migrations.
    pub fn new(r: &Rehearsal) -> Self {
        Self {
            store: r.store.clone(),
            sfn: r.sfn.clone(),
        }
    }

    /// Waits until `gate` of `migration_id` is pending in `execution` (and the task is
    /// recorded as submitted), then clicks approve or reject with a signed Slack request.
    /// Returns the callback's HTTP answer body.
    pub async fn decide(
        &self,
        migration_id: &str,
        execution: &str,
        gate: Gate,
        approve: bool,
        limit: Duration,
    ) -> String {
        self.wait_pending(migration_id, execution, gate, limit)
            .await;
        self.click(migration_id, gate, approve).await
    }

    /// Waits until `gate` is pending and its task submitted (a decision now is delivered).
    pub async fn wait_pending(
        &self,
        migration_id: &str,
        execution: &str,
        gate: Gate,
        limit: Duration,
    ) {
        let deadline = Instant::now() + limit;
        let state = match gate {
            Gate::ShiftTraffic => "ApproveTrafficShift",
            Gate::Cutover => "ApproveCutover",
            Gate::Finish => "RollbackWindow",
        };
        loop {
            let pending = self
                .store
                .approval(migration_id, gate)
                .await
                .expect("read approval")
                .is_some_and(|a| a.status == ApprovalStatus::Pending);
            if pending && self.submitted(execution, state).await {
                break;
            }
            let d = describe(&self.sfn, execution).await;
            assert_eq!(
                d.status(),
                &ExecutionStatus::Running,
                "the execution ended while waiting for gate {gate}: {:?} {:?}",
                d.error(),
                d.cause()
            );
            assert!(
                Instant::now() < deadline,
                "gate {gate} of {migration_id} never became pending"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, migration_id: &str, gate: Gate, approve: bool) -> String {
        let value =
            serde_json::json!({"migration_id": migration_id, "gate": gate, "approve": approve})
                .to_string();
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": APPROVER},
            "actions": [{"action_id": if approve {"ferry_approve"} else {"ferry_reject"}, "value": value}],
        })
        .to_string();
        let body = format!("payload={}", urlencode(&payload));
        let ts = Utc::now().timestamp();
        let sig = ferry_core::signing::sign_slack(
            bed_var("FERRY_BED_SLACK_SECRET").as_bytes(),
            ts,
            body.as_bytes(),
        );
        let event = serde_json::json!({
            "version": "2.0",
            "rawPath": "/slack",
            "rawQueryString": "",
            "headers": {
                "content-type": "application/x-www-form-urlencoded",
                "x-slack-request-timestamp": ts.to_string(),
                "x-slack-signature": sig,
            },
            "requestContext": {
                "http": {"method": "POST", "path": "/slack", "sourceIp": "127.0.0.1"},
                "requestId": unique("req-"),
                "timeEpoch": ts * 1000,
            },
            "body": body,
            "isBase64Encoded": false
        });
        let (ok, answer) = invoke("ferry-approval-callback", &event).await;
        assert!(ok, "approval callback failed: {answer}");
        answer["body"].as_str().unwrap_or_default().to_string()
    }

    /// Whether the gate's task was submitted (its Lambda returned) in the current attempt.
    async fn submitted(&self, execution: &str, state: &str) -> bool {
        let out = self
            .sfn
            .get_execution_history()
            .execution_arn(execution)
            .reverse_order(true)
            .max_results(50)
            .send()
            .await
            .expect("history");
        for e in out.events() {
            if e.r#type() == &HistoryEventType::TaskSubmitted {
                return true;
            }
            if e.r#type() == &HistoryEventType::TaskStateEntered {
                return e
                    .state_entered_event_details()
                    .is_some_and(|d| d.name() != state);
            }
        }
        false
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Timestamped samples shared between a stand-in and its reader.
pub type Timeline<T> = Arc<Mutex<Vec<(DateTime<Utc>, T)>>>;

/// The ECS stand-in: one `ferry-worker` process per RUNNING task of the watched migrations.
#[derive(Debug, Clone)]
pub struct EcsRunner {
    procs: Arc<Mutex<HashMap<String, Child>>>,
    stop: Arc<AtomicBool>,
    /// Task ARNs started, in order.
    pub started: Arc<Mutex<Vec<String>>>,
    /// How long a task takes to start, and when each task was first seen.
    start_delay: Duration,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
}

impl EcsRunner {
    /// Starts watching the bed's cluster for tasks of `migration_id`.
    pub fn start(migration_id: &str) -> Self {
        Self::start_after(migration_id, Duration::ZERO)
    }

    /// As [`EcsRunner::start`], each task's process started `start_delay` after the task was
    /// first seen (as Fargate takes time to provision a task and pull its image).
    pub fn start_after(migration_id: &str, start_delay: Duration) -> Self {
        let runner = Self {
            procs: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
            started: Arc::new(Mutex::new(Vec::new())),
            start_delay,
            seen: Arc::new(Mutex::new(HashMap::new())),
        };
        let r = runner.clone();
        let id = migration_id.to_string();
        tokio::spawn(async move {
            let aws = ferry_aws::sdk_config().await;
            let ecs = aws_sdk_ecs::Client::new(&aws);
            let cluster = bed_var("FERRY_BED_CLUSTER");
            while !r.stop.load(Ordering::Relaxed) {
                r.tick(&ecs, &cluster, &id).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            r.kill_all();
        });
        runner
    }

    async fn tick(&self, ecs: &aws_sdk_ecs::Client, cluster: &str, id: &str) {
        let Ok(list) = ecs.list_tasks().cluster(cluster).send().await else {
            return;
        };
        let arns: Vec<String> = list.task_arns().to_vec();
        if arns.is_empty() {
            return;
        }
        let Ok(described) = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns))
            .send()
            .await
        else {
            return;
        };
        for t in described.tasks() {
            let arn = t.task_arn().unwrap_or_default().to_string();
            let env: BTreeMap<String, String> = t
                .overrides()
                .and_then(|o| o.container_overrides().first())
                .map(|c| {
                    c.environment()
                        .iter()
                        .filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            if env.get("FERRY_MIGRATION_ID").map(String::as_str) != Some(id) {
                continue;
            }
            let stopped = matches!(
                t.last_status(),
                Some("STOPPED" | "STOPPING" | "DEPROVISIONING")
            );
            let first_seen = *self
                .seen
                .lock()
                .expect("seen")
                .entry(arn.clone())
                .or_insert_with(Instant::now);
            let mut procs = self.procs.lock().expect("procs");
            match procs.get_mut(&arn) {
                None if !stopped && first_seen.elapsed() < self.start_delay => {}
                None if !stopped => {
                    // As ECS runs it: with the task role's credentials.
                    let child = Command::new(workspace_bin("ferry-worker"))
                        .envs(&env)
                        .envs(crate::role_env("ferry-worker"))
                        .env("FERRY_STATE_TABLE", bed_var("FERRY_BED_STATE_TABLE"))
                        .env("FERRY_PG_BIN", bed_var("FERRY_BED_TARGET_BIN"))
                        .env("FERRY_WORKER_ID", arn.rsplit('/').next().unwrap_or("task"))
                        .env("FERRY_HEARTBEAT_MS", "500")
                        .env("RUST_LOG", crate::worker_log_filter())
                        .stdout(std::process::Stdio::null())
                        .process_group(0)
                        .spawn()
                        .expect("start ferry-worker");
                    procs.insert(arn.clone(), child);
                    self.started.lock().expect("started").push(arn);
                }
                Some(child) if stopped => {
                    kill_group(child);
                }
                Some(child) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        // The container exited: ECS stops the task.
                        let (ecs, cluster, arn) = (ecs.clone(), cluster.to_string(), arn.clone());
                        tokio::spawn(async move {
                            let _ = ecs
                                .stop_task()
                                .cluster(cluster)
                                .task(arn)
                                .reason("Essential container in task exited")
                                .send()
                                .await;
                        });
                    }
                }
                None => {}
            }
        }
    }

    /// Kills the worker process of the running task (as a crash would); ECS then reports the
    /// task STOPPED and Ferry's status step starts a new one.
    pub fn kill_current(&self) -> bool {
        let mut procs = self.procs.lock().expect("procs");
        for child in procs.values_mut() {
            if let Ok(None) = child.try_wait() {
                let pid = child.id() as i32;
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{pid}")])
                    .status();
                let _ = child.wait();
                return true;
            }
        }
        false
    }

    /// Whether a worker process runs.
    pub fn running(&self) -> usize {
        let mut procs = self.procs.lock().expect("procs");
        procs
            .values_mut()
            .map(|c| c.try_wait())
            .filter(|w| matches!(w, Ok(None)))
            .count()
    }

    /// Stops watching and kills what it started.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.kill_all();
    }

    fn kill_all(&self) {
        for child in self.procs.lock().expect("procs").values_mut() {
            kill_group(child);
        }
    }
}

use std::os::unix::process::CommandExt;

fn kill_group(child: &mut Child) {
    signal_group(child, "TERM");
}

/// Sends `signal` to the child's process group, waits up to 5 s for it to exit, then kills
/// the group outright.
pub fn signal_group(child: &mut Child, signal: &str) {
    if let Ok(None) = child.try_wait() {
        let pid = child.id() as i32;
        // procps-ng's `kill -9 -PGID` misbehaves here; this form does not.
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &format!("-{pid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .status();
        let _ = child.wait();
    }
}

/// The EventBridge stand-in: fires the canary rule of the watched migration every
/// `interval_seconds` of its input, invoking its target function.
#[derive(Debug, Clone)]
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    /// (time, the tick's output) of every firing.
    pub fired: Timeline<serde_json::Value>,
}

impl Scheduler {
    /// Starts firing the rule `ferry-canary-<migration_id>`.
    pub fn start(migration_id: &str) -> Self {
        let s = Self {
            stop: Arc::new(AtomicBool::new(false)),
            fired: Arc::new(Mutex::new(Vec::new())),
        };
        let me = s.clone();
        let rule = ferry_core::cloud::bounded_name("ferry-canary-", migration_id, 64);
        tokio::spawn(async move {
            let aws = ferry_aws::sdk_config().await;
            let eb = aws_sdk_eventbridge::Client::new(&aws);
            let mut last: Option<Instant> = None;
            while !me.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(targets) = eb.list_targets_by_rule().rule(&rule).send().await else {
                    last = None;
                    continue;
                };
                let Some(t) = targets.targets().first() else {
                    continue;
                };
                let input: serde_json::Value =
                    serde_json::from_str(t.input().unwrap_or("{}")).unwrap_or_default();
                let every = Duration::from_secs(input["interval_seconds"].as_u64().unwrap_or(60));
                let due = last.is_none_or(|l| l.elapsed() >= every);
                if !due {
                    continue;
                }
                if last.is_none() {
                    // A new rule fires its first tick one interval after it was created.
                    last = Some(Instant::now());
                    continue;
                }
                last = Some(Instant::now());
                let name = t
                    .arn()
                    .rsplit(':')
                    .next()
                    .unwrap_or("ferry-canary-tick")
                    .to_string();
                let (_, out) = invoke(&name, &input).await;
                me.fired.lock().expect("fired").push((Utc::now(), out));
            }
        });
        s
    }

    /// Stops firing.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Which instance served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The Heroku app.
    Heroku,
    /// The app on AWS.
    Aws,
}

/// One request of the load generator.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it was answered.
    pub at: DateTime<Utc>,
    /// Which instance.
    pub side: Side,
    /// A write or a read.
    pub kind: Kind,
    /// How long it took.
    pub latency: Duration,
    /// The id of the acknowledged write (0 for a read), or the error.
    pub result: Result<i64, String>,
}

/// The sample app behind a weighted resolver, with its load generator. Each instance is a real
/// app's shape: `DATABASE_URL` read once at boot (the Heroku instance from Heroku's config at
/// start, the AWS instance from SSM when its first request arrives, as a task started during
/// the canary would), a pool of persistent connections with named prepared statements, reads
/// and writes mixed, config never reread.
#[derive(Debug, Clone)]
pub struct App {
    stop: Arc<AtomicBool>,
    /// Requests sent and not yet answered, plus one while the load generator runs.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Every request.
    pub log: Arc<Mutex<Vec<Request>>>,
    /// (time, weights) samples of the resolver.
    pub weights: Timeline<Weights>,
}

/// Connections per instance.
const POOL: usize = 5;

/// What the app reads and follows while it runs.
struct Seen {
    weights: Weights,
    maintenance: bool,
}

/// Users' resolvers, each caching the answer it got (one record of the weighted pair, drawn
/// by Route 53 by weight) for the TTL, as real ones do.
struct Resolvers {
    cached: Vec<Option<(Side, Instant)>>,
    ttl: Duration,
}

impl Resolvers {
    fn new(n: usize, ttl: Duration) -> Self {
        Self {
            cached: vec![None; n],
            ttl,
        }
    }

    /// Where a request from a random user goes.
    fn resolve(&mut self, weights: Weights) -> Side {
        let mut rng = rand::rng();
        let k = rng.random_range(0..self.cached.len());
        match self.cached[k] {
            Some((side, at)) if at.elapsed() < self.ttl => side,
            _ => {
                let side = if rng.random_range(0.0..100.0) < weights.aws_share_percent() {
                    Side::Aws
                } else {
                    Side::Heroku
                };
                self.cached[k] = Some((side, Instant::now()));
                side
            }
        }
    }
}

impl App {
    /// Starts both instances and the load generator: `writes` + `reads` requests a second.
    pub fn start(r: &Rehearsal, writes: u32, reads: u32) -> Self {
        let app = Self {
            stop: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            log: Arc::new(Mutex::new(Vec::new())),
            weights: Arc::new(Mutex::new(Vec::new())),
        };
        let me = app.clone();
        let traffic = r.spec().traffic;
        let router = r.router.clone();
        let params = r.params.clone();
        let db_param = r.spec().app_database_url_param();
        let heroku_app_name = r.app.clone();
        let mut resolvers = Resolvers::new(64, r.dns_ttl);
        let aws_pool = Arc::new(std::sync::RwLock::new(Arc::new(Pool::new(POOL))));
        if let Some((cluster, service, delay)) = r.app_service.clone() {
            redeploys(aws_pool.clone(), cluster, service, delay, app.stop.clone());
        }
        // The generator counts as one request in flight until its loop ends.
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let (base, token) = heroku();
            let h = Arc::new(ferry_heroku::HerokuClient::new(&base, token).expect("heroku"));
            let heroku_pool = Arc::new(Pool::new(POOL));
            // The Heroku dynos booted long ago, with the attachment's DATABASE_URL.
            let (h2, name) = (h.clone(), heroku_app_name.clone());
            heroku_pool
                .boot(|| async move {
                    h2.config_vars(&name)
                        .await
                        .map_err(|e| e.to_string())?
                        .get("DATABASE_URL")
                        .cloned()
                        .ok_or_else(|| "no DATABASE_URL".to_string())
                })
                .await
                .expect("the Heroku app boots");
            let mut seen = Seen {
                weights: Weights {
                    heroku: 100,
                    aws: 0,
                },
                maintenance: false,
            };
            let mut last_look = Instant::now() - Duration::from_secs(1);
            let period = Duration::from_secs_f64(1.0 / f64::from((writes + reads).max(1)));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n: u64 = 0;
            while !me.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if last_look.elapsed() >= Duration::from_millis(250) {
                    match router.weights(&traffic).await {
                        Ok(Some(w)) => seen.weights = w,
                        // No pair: the app's own CNAME to Heroku answers (before the canary,
                        // and after a rollback put it back).
                        Ok(None) => seen.weights = Weights::for_aws_percent(0),
                        Err(_) => {}
                    }
                    if let Ok(a) = h.app(&heroku_app_name).await {
                        seen.maintenance = a.maintenance;
                    }
                    me.weights
                        .lock()
                        .expect("w")
                        .push((Utc::now(), seen.weights));
                    last_look = Instant::now();
                }
                n += 1;
                let kind = kind_of(n, writes, reads);
                let to_aws = resolvers.resolve(seen.weights) == Side::Aws;
                let (side, pool) = if to_aws {
                    (Side::Aws, aws_pool.read().expect("pool").clone())
                } else {
                    (Side::Heroku, heroku_pool.clone())
                };
                let maintenance = seen.maintenance;
                let (params, db_param, log) = (params.clone(), db_param.clone(), me.log.clone());
                let in_flight = me.in_flight.clone();
                in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let result = if side == Side::Heroku && maintenance {
                        Err("503 maintenance mode".to_string())
                    } else {
                        serve(&pool, side, kind, n as i64, || async move {
                            params
                                .get(&db_param)
                                .await
                                .map(|url| url.expose().to_string())
                                .map_err(|e| e.to_string())
                        })
                        .await
                    };
                    log.lock().expect("log").push(Request {
                        at: Utc::now(),
                        side,
                        kind,
                        latency: t0.elapsed(),
                        result,
                    });
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
        app
    }

    /// Stops the load.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the load and waits until every request sent has its answer (each is bounded by
    /// its 30 s timeout), so what the app wrote is committed before a comparison starts.
    pub async fn stopped(&self) {
        self.shutdown();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "requests still unanswered after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ids of acknowledged writes.
    pub fn acked(&self) -> Vec<i64> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.kind == Kind::Write)
            .filter_map(|r| r.result.as_ref().ok().copied())
            .collect()
    }

    /// Failed requests: (time, side, error).
    pub fn failures(&self) -> Vec<(DateTime<Utc>, Side, String)> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(|e| (r.at, r.side, e.clone())))
            .collect()
    }

    /// The longest time between two acknowledged writes, and when the gap started.
    pub fn longest_gap(&self) -> (Duration, Option<DateTime<Utc>>) {
        let log = self.log.lock().expect("log");
        let mut acks: Vec<DateTime<Utc>> = log
            .iter()
            .filter(|r| r.kind == Kind::Write && r.result.is_ok())
            .map(|r| r.at)
            .collect();
        acks.sort();
        let mut best = (Duration::ZERO, None);
        for w in acks.windows(2) {
            let d = (w[1] - w[0]).to_std().unwrap_or_default();
            if d > best.0 {
                best = (d, Some(w[0]));
            }
        }
        best
    }
}

/// Redeploy mode: watches the app's ECS service; when the cutover forces a new deployment, the
/// AWS instance is replaced `delay` later by a new one, which boots by reading DATABASE_URL
/// from SSM (now the target). Until then the old tasks keep the URL they booted with.
fn redeploys(
    pool: Arc<std::sync::RwLock<Arc<Pool>>>,
    cluster: String,
    service: String,
    delay: Duration,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let aws = ferry_aws::sdk_config().await;
        let ecs = aws_sdk_ecs::Client::new(&aws);
        let first = deployment_id(&ecs, &cluster, &service).await;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = deployment_id(&ecs, &cluster, &service).await;
            if now.is_some() && now != first {
                tokio::time::sleep(delay).await;
                *pool.write().expect("pool") = Arc::new(Pool::new(POOL));
                return;
            }
        }
    });
}

/// One request on an instance: the AWS instance boots (reads its DATABASE_URL, once) on its
/// first request; the connection pool does the rest.
async fn serve<F, Fut>(
    pool: &Pool,
    side: Side,
    kind: Kind,
    n: i64,
    read_url: F,
) -> Result<i64, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    pool.boot(read_url).await?;
    let label = match side {
        Side::Heroku => "heroku",
        Side::Aws => "aws",
    };
    tokio::time::timeout(Duration::from_secs(30), pool.request(kind, n, label))
        .await
        .unwrap_or_else(|_| Err("timed out after 30 s".into()))
        .map(|(id, _)| id)
}

/// The execution as Step Functions describes it now.
async fn describe(
    sfn: &aws_sdk_sfn::Client,
    execution: &str,
) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
    sfn.describe_execution()
        .execution_arn(execution)
        .send()
        .await
        .expect("describe")
}
