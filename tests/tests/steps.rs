//! The migration steps' handlers against the test bed: real PostgreSQL (source and target),
//! the AWS emulator (DynamoDB, SSM, Route 53, EventBridge, SNS, ECS, RDS, Step Functions
//! tokens) and the fake Heroku API. Each step is called twice where a retry may happen, and
//! its effects are read back from where they land.

use std::{
    io::Write,
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_sdk_sfn::types::ExecutionStatus;
use ferry_core::{
    MigrationStore, ParamStore, StepErrorName,
    clock::ManualClock,
    signing::{self, LinkClaims},
    state::{ApprovalStatus, Gate, Phase, WorkerPhase},
    traffic::Weights,
};
use ferry_pg::freeze;
use ferry_steps::{
    Deps, MigrationRef, Settings,
    approval::{self, HttpRequest},
    canary,
    canary::Action,
    config_sync, cutover, decommission, facts, preflight, replication, rollback, verify,
};
use ferry_tests::{
    APP_ROLE, TestDb, bed_var, capture_leftovers, fresh_store, gate::Gatekeeper, heroku,
    heroku_app, sink::Sink, spec, unique, workspace_bin,
};

const SLACK_SECRET: &str = "slack-signing-secret-for-tests-0001";
const LINK_SECRET: &str = "link-signing-secret-for-tests-0002";
const CONTROL_KEY: &str = "endpoint-control-key-for-tests-0003-0123456789";
const CONFIG_SECRET: &str = "config-var-secret-value-0003";
const SLACK_USER: &str = "U0FERRY01";

/// The app's tables and rows (deterministic: the same on any server it runs on).
const APP_SQL: &str = "CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL, balance numeric NOT NULL DEFAULT 0);
     INSERT INTO accounts (email, balance) SELECT 'u' || g || '@example.com', g FROM generate_series(1, 2000) g;
     CREATE TABLE events (id bigserial PRIMARY KEY, account_id bigint REFERENCES accounts, kind text);
     INSERT INTO events (account_id, kind) SELECT 1 + g % 2000, 'signup' FROM generate_series(1, 3000) g;";

/// Log lines the steps wrote, to check that no secret is in them.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Logs {
    let logs = Logs::default();
    let writer = logs.clone();
    // Each test runs in its own process (nextest), so a global subscriber is this test's.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    logs
}

struct Env {
    deps: Deps,
    store: Arc<ferry_aws::DynamoStore>,
    db: TestDb,
    spec_json: serde_json::Value,
    id: String,
    sink: Sink,
    secrets: Vec<String>,
    /// The EMF metric lines the steps wrote.
    metrics: ferry_core::metrics::Recorder,
    /// The steps' clock: canary ticks are decided by the time this test sets, not by how
    /// long the machine took between two calls.
    clock: ManualClock,
}

/// The migration ended rolled back and released the app's lock.
async fn rolled_back_and_unlocked(store: &dyn MigrationStore, id: &str, app: &str) {
    assert_eq!(
        store.migration(id).await.expect("rec").phase,
        Phase::RolledBack
    );
    assert!(store.app_lock(app).await.expect("lock").is_none());
}

/// The record sets at the app's name: (set identifier, value, TTL).
async fn app_records(spec: &ferry_core::MigrationSpec) -> Vec<(Option<String>, String, i64)> {
    let aws = ferry_aws::sdk_config().await;
    ferry_tests::aws::records_at(
        &aws,
        &spec.traffic.hosted_zone_id,
        &spec.traffic.record_name,
    )
    .await
}

/// After a rollback: the app's own CNAME to Heroku is back as preflight found it, the pair gone.
async fn app_record_restored(spec: &ferry_core::MigrationSpec) {
    assert_eq!(
        app_records(spec).await,
        vec![(None, spec.traffic.heroku_target.clone(), 300)],
        "the simple CNAME is back and the weighted pair gone"
    );
}

/// The values of metric `name` in the EMF lines recorded, in order.
fn metric_values(e: &Env, name: &str) -> Vec<f64> {
    e.metrics
        .lines()
        .iter()
        .map(|l| ferry_core::metrics::parse(l).expect("every metric line is EMF"))
        .filter(|m| m["MigrationId"] == e.id.as_str())
        .filter_map(|m| m.get(name).and_then(|v| v.as_f64()))
        .collect()
}

/// Everything a migration needs, created the way an operator would before starting one.
async fn env(prefix: &str, settings_fault: Option<&str>) -> Env {
    bed_var("AWS_ENDPOINT_URL");
    let aws = ferry_aws::sdk_config().await;
    let db = TestDb::heroku_like(prefix).await;
    let app_db = db.source_app_url().connect().await.expect("connect as app");
    app_db.batch_execute(APP_SQL).await.expect("app schema");
    let store = fresh_store().await;
    let params = ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&aws));
    let id = unique("mig-");
    let p = format!("/{id}");
    let (heroku_url, heroku_token) = heroku();
    let sink = Sink::start().await;
    let app = heroku_app(
        db.source_app_url().expose_secret(),
        serde_json::json!({
            "SECRET_KEY": CONFIG_SECRET,
            "HEROKU_APP_NAME": "ignored",
            "EMPTY_ONE": "",
            "LOG_LEVEL": "info"
        }),
    )
    .await;
    for (name, value) in [
        (
            format!("{p}/source-url"),
            db.source_app_url().expose_secret().to_string(),
        ),
        (
            format!("{p}/target-url"),
            db.target_url().expose_secret().to_string(),
        ),
        (format!("{p}/heroku-token"), heroku_token.clone()),
        (
            format!("{p}/slack-webhook"),
            format!("{}/slack-webhook", sink.url),
        ),
        (format!("{p}/slack-secret"), SLACK_SECRET.to_string()),
        (format!("{p}/link-secret"), LINK_SECRET.to_string()),
        (format!("{p}/endpoint-control-key"), CONTROL_KEY.to_string()),
    ] {
        params.put_secure(&name, &value).await.expect("param");
    }
    // Route 53 zone, SNS topic, RDS instance, as the operator creates them.
    let (zone_id, domain) = ferry_tests::aws::hosted_zone(&aws).await;
    let topic = ferry_tests::aws::topic(&aws).await;
    let rds_id =
        ferry_tests::aws::rds_instance(&aws, &(bed_var("FERRY_BED_TARGET_VERSION") + ".1")).await;

    let mut s = serde_json::to_value(spec(&id, &app)).expect("spec json");
    s["heroku"]["api_token_param"] = format!("{p}/heroku-token").into();
    s["source"]["database_url_param"] = format!("{p}/source-url").into();
    s["target"]["database_url_param"] = format!("{p}/target-url").into();
    s["target"]["rds_instance_id"] = rds_id.into();
    s["replication"] =
        serde_json::json!({"capture": "trigger", "max_lag_seconds": 5, "parallelism": 2});
    // The app's domain points at Heroku with a simple CNAME, as before any migration.
    ferry_tests::aws::app_record(
        &aws,
        &zone_id,
        &format!("app.{domain}"),
        s["traffic"]["heroku_target"]
            .as_str()
            .expect("heroku target"),
    )
    .await;
    s["traffic"]["hosted_zone_id"] = zone_id.into();
    s["traffic"]["record_name"] = format!("app.{domain}").into();
    s["traffic"]["health"] = serde_json::json!({"url": format!("{}/healthz", sink.url)});
    s["traffic"]["steps"] = serde_json::json!([10, 50, 100]);
    s["approvals"] = serde_json::json!({
        "sns_topic_arn": topic,
        "slack_webhook_param": format!("{p}/slack-webhook"),
        "approvers": ["ops-lead@acme.example", SLACK_USER],
    });
    s["config_vars"] =
        serde_json::json!({"ssm_prefix": format!("{p}/config/"), "exclude": ["LOG_*"]});
    // These tests switch the app by DATABASE_URL (redeploy mode); the endpoint's own tests
    // are in endpoint_steps below and in e2e.
    s["cutover"] = serde_json::json!({"scale_down": ["worker"], "drain_timeout_seconds": 20, "verify": "counts", "endpoint": "redeploy"});
    s.as_object_mut().expect("spec object").remove("endpoint");
    s["timing"] = serde_json::json!({"poll_seconds": 1, "stall_seconds": 30, "canary_interval_seconds": 1, "rollback_window_seconds": 5, "dns_hold_seconds": 1});

    let worker =
        ferry_tests::aws::worker_task(&aws, &unique("ferry-"), &unique("ferry-worker-")).await;
    let settings = Settings {
        heroku_api_url: heroku_url,
        approval_url: Some("https://approve.example.test".into()),
        link_secret_param: format!("{p}/link-secret"),
        slack_signing_secret_param: Some(format!("{p}/slack-secret")),
        canary_function_arn: "arn:aws:lambda:us-east-1:123456789012:function:ferry-canary-tick"
            .into(),
        rule_prefix: "ferry-canary-".into(),
        pg_bin: bed_var("FERRY_BED_TARGET_BIN").into(),
        fault: settings_fault.map(str::to_string),
        fault_prefix: None,
        endpoint_control_key_param: Some(format!("{p}/endpoint-control-key")),
        drain_poll: Duration::from_millis(20),
    };
    let mut deps = ferry_lambda::deps(settings, store.table().to_string(), worker)
        .await
        .expect("deps");
    let metrics = ferry_core::metrics::Recorder::default();
    deps.metrics = Arc::new(metrics.clone());
    let clock = ManualClock::at(chrono::Utc::now());
    deps.clock = Arc::new(clock.clone());
    let secrets = vec![
        db.source_app_url().expose_secret().to_string(),
        db.target_url().expose_secret().to_string(),
        heroku_token,
        SLACK_SECRET.into(),
        LINK_SECRET.into(),
        CONTROL_KEY.into(),
        CONFIG_SECRET.into(),
    ];
    Env {
        deps,
        store,
        db,
        spec_json: s,
        id,
        sink,
        secrets,
        metrics,
        clock,
    }
}

/// What the AWS side of the app reads as its DATABASE_URL.
async fn app_database_url(deps: &Deps, spec: &ferry_core::MigrationSpec) -> String {
    deps.params
        .get(&spec.app_database_url_param())
        .await
        .expect("read the app's DATABASE_URL parameter")
        .expose()
        .to_string()
}

/// Whether `role` is frozen in the database `client` is connected to.
async fn frozen(client: &tokio_postgres::Client, role: &str) -> bool {
    freeze::is_frozen(client, role)
        .await
        .expect("read the role's settings")
}

fn mref(id: &str) -> MigrationRef {
    MigrationRef {
        migration_id: id.to_string(),
    }
}

fn password(url: &str) -> String {
    let after = url.split("://").nth(1).unwrap_or("");
    let userinfo = after.split('@').next().unwrap_or("");
    userinfo.split(':').nth(1).unwrap_or("").to_string()
}

fn spawn_worker(id: &str, table: &str) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(workspace_bin("ferry-worker"))
        .env("FERRY_MIGRATION_ID", id)
        .env("FERRY_STATE_TABLE", table)
        .env("FERRY_WORKER_ID", "steps-test")
        .env("FERRY_PG_BIN", bed_var("FERRY_BED_TARGET_BIN"))
        .env("FERRY_HEARTBEAT_MS", "100")
        .env("FERRY_BATCH_SIZE", "500")
        .env("FERRY_SCHEMA_CHECK_MS", "1000")
        .env("FERRY_HEROKU_API_URL", heroku().0)
        .env("RUST_LOG", "warn")
        .process_group(0)
        .spawn()
        .expect("start ferry-worker")
}

fn slack_request(body: &str, ts: i64, signature: Option<String>) -> HttpRequest {
    let sig = signature
        .unwrap_or_else(|| signing::sign_slack(SLACK_SECRET.as_bytes(), ts, body.as_bytes()));
    HttpRequest {
        method: "POST".into(),
        path: "/slack".into(),
        query: Default::default(),
        headers: [
            ("x-slack-request-timestamp".to_string(), ts.to_string()),
            ("x-slack-signature".to_string(), sig),
        ]
        .into_iter()
        .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn slack_body(id: &str, gate: Gate, approve: bool, user: &str) -> String {
    let value =
        serde_json::json!({"migration_id": id, "gate": gate, "approve": approve}).to_string();
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": user},
        "actions": [{"action_id": "ferry_approve", "value": value}],
    })
    .to_string();
    let enc: String = form_urlencoded::byte_serialize(payload.as_bytes()).collect();
    format!("payload={enc}")
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Through every step of a migration, each handler called as its Lambda calls it (retried
/// ones twice), with the worker running as a process; effects read back where they land.
#[tokio::test]
async fn every_step_against_the_bed_from_preflight_to_decommission() {
    let logs = capture_logs();
    let e = env("steps_", None).await;
    let (deps, id, store) = (&e.deps, e.id.clone(), e.store.as_ref());
    let exec = format!("arn:aws:states:us-east-1:123456789012:execution:ferry:{id}");
    let mut outputs = Vec::new();
    let mut tokens = Vec::new();

    // 1. Preflight, twice: same answer; lock held; inventory audited; app role found.
    let input = || preflight::Input {
        spec: e.spec_json.clone(),
        execution_arn: exec.clone(),
    };
    let pre = preflight::run(deps, input()).await.expect("preflight");
    let again = preflight::run(deps, input())
        .await
        .expect("preflight again");
    // The same answer, but for the size: autovacuum may analyze the new tables in between.
    let sized = |o: &preflight::Output| preflight::Output {
        database_bytes: 0,
        ..o.clone()
    };
    assert_eq!(sized(&pre), sized(&again));
    assert_eq!(pre.tables, 2);
    assert_eq!(pre.timing.poll_seconds, 1);
    assert_eq!(pre.timing.rollback_window_seconds, 5);
    outputs.push(serde_json::to_value(&pre).expect("json"));
    let spec = store.migration(&id).await.expect("record").spec;
    let lock = store
        .app_lock(&spec.heroku.app)
        .await
        .expect("lock")
        .expect("held");
    assert_eq!(lock.migration_id, id);
    let roles: facts::AppRoles = facts::get(store, &id, facts::APP_ROLES)
        .await
        .expect("fact")
        .expect("roles");
    assert_eq!(roles.source, APP_ROLE);
    let audit = store.audit_log(&id).await.expect("audit");
    assert!(audit.iter().any(|a| {
        a.action == "heroku_inventory"
            && a.detail["config_var_names"]
                .as_array()
                .is_some_and(|v| v.contains(&"SECRET_KEY".into()))
    }));
    // Another migration of the same app: refused by the lock, before it touches anything.
    let mut other = e.spec_json.clone();
    other["migration_id"] = unique("mig-").into();
    let err = preflight::run(
        deps,
        preflight::Input {
            spec: other,
            execution_arn: format!("{exec}-2"),
        },
    )
    .await
    .expect_err("second migration of the app");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.LockHeld");
    // The same migration from another execution: refused too.
    let err = preflight::run(
        deps,
        preflight::Input {
            spec: e.spec_json.clone(),
            execution_arn: format!("{exec}-other"),
        },
    )
    .await
    .expect_err("second execution");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.AlreadyRunning");

    // 2. Config sync, twice: values land in SSM; rules applied; the retry changes nothing.
    let cfg = config_sync::run(deps, mref(&id))
        .await
        .expect("config sync");
    assert!(cfg.added.contains(&"SECRET_KEY".to_string()), "{cfg:?}");
    assert!(cfg.added.contains(&"DATABASE_URL".to_string()));
    let skipped: Vec<&str> = cfg.skipped.iter().map(|s| s.name.as_str()).collect();
    for name in ["HEROKU_APP_NAME", "EMPTY_ONE", "LOG_LEVEL"] {
        assert!(skipped.contains(&name), "{name} not skipped: {cfg:?}");
    }
    let cfg2 = config_sync::run(deps, mref(&id))
        .await
        .expect("config sync again");
    assert!(cfg2.added.is_empty() && cfg2.changed.is_empty(), "{cfg2:?}");
    assert_eq!(
        deps.params
            .get(&format!("{}SECRET_KEY", spec.config_ssm_prefix()))
            .await
            .expect("get")
            .expose(),
        CONFIG_SECRET
    );
    assert_eq!(
        app_database_url(deps, &spec).await,
        e.db.source_app_url().expose_secret()
    );
    outputs.push(serde_json::to_value(&cfg).expect("json"));

    // 3. Start replication, twice: one task; target role frozen until cutover.
    let started = replication::start(deps, mref(&id)).await.expect("start");
    let again = replication::start(deps, mref(&id))
        .await
        .expect("start again");
    assert!(!started.reused && again.reused);
    assert_eq!(started.task_arn, again.task_arn);
    let target_admin = e.db.target_url().connect().await.expect("target");
    assert!(frozen(&target_admin, &roles.target).await);
    let mut worker = spawn_worker(&id, &store_table(&e));
    // One invocation long-polls (every poll_seconds) until the worker is ready: the worker
    // was just spawned, so a single check would answer "not ready".
    let status = replication::status(
        deps,
        replication::StatusInput {
            wait_seconds: Some(120),
            ..mref(&id).into()
        },
    )
    .await
    .expect("status");
    assert!(
        status.ready,
        "replication did not catch up in one long poll: {status:?}"
    );
    assert_eq!(status.tables_done, status.tables_total);
    assert_eq!(status.rows_copied, 5000);

    // 4. Verify.
    let app_db = e.db.source_app_url().connect().await.expect("app");
    app_db
        .batch_execute("UPDATE accounts SET balance = balance + 1 WHERE id <= 10")
        .await
        .expect("write");
    let v = verify::run(deps, mref(&id), Some(Duration::from_secs(1)))
        .await
        .expect("verify");
    assert_eq!(v.tables, 2);
    let v2 = verify::run(deps, mref(&id), Some(Duration::from_secs(1)))
        .await
        .expect("verify again");
    assert_eq!(v2.source_rows, v.source_rows);
    assert_eq!(v.source_rows, 5000);

    // 5. Gate "shift traffic": prompt to SNS and Slack; a signed Slack click approves it and
    //    resumes the real waiting execution.
    let gk = Gatekeeper::new().await;
    let (gate_exec, token) = gk.waiting_execution().await;
    tokens.push(token.clone());
    let request = || {
        approval::request(
            deps,
            approval::RequestInput {
                migration_id: id.clone(),
                gate: Gate::ShiftTraffic,
                task_token: token.clone().into(),
            },
        )
    };
    let req = request().await.expect("request");
    let req_again = request().await.expect("request again");
    assert_eq!(req.gate, req_again.gate);
    assert_eq!(
        store
            .approval(&id, Gate::ShiftTraffic)
            .await
            .expect("read")
            .expect("req")
            .status,
        ApprovalStatus::Pending,
        "a retried prompt keeps the gate pending"
    );
    assert_eq!(req.notified, vec!["sns", "slack"]);
    let posted = e.sink.requests();
    assert!(
        posted
            .iter()
            .any(|(p, b)| p == "/slack-webhook" && b.contains("ferry_approve"))
    );
    let now = chrono::Utc::now().timestamp();
    let resp = approval::callback(
        deps,
        slack_request(
            &slack_body(&id, Gate::ShiftTraffic, true, SLACK_USER),
            now,
            None,
        ),
    )
    .await;
    assert_eq!(resp.status_code, 200, "{}", resp.body);
    assert!(resp.body.contains("approved"), "{}", resp.body);
    assert_eq!(
        gk.finished(&gate_exec).await.status(),
        &ExecutionStatus::Succeeded
    );
    let approved = store
        .approval(&id, Gate::ShiftTraffic)
        .await
        .expect("read")
        .expect("approval");
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some(SLACK_USER));

    // 6. Canary: first weight, rule present; a duplicate tick skips nothing; the last tick
    //    deletes the rule and resumes the waiting execution.
    let (canary_exec, token) = gk.waiting_execution().await;
    tokens.push(token.clone());
    let canary_start = || {
        canary::start(
            deps,
            canary::StartInput {
                migration_id: id.clone(),
                task_token: token.clone().into(),
            },
        )
    };
    let start = canary_start().await.expect("canary start");
    let start_again = canary_start().await.expect("canary start again");
    assert_eq!(
        start_again.aws_percent, start.aws_percent,
        "a retried start does not reset or skip"
    );
    assert_eq!(start.aws_percent, 10);
    assert!(deps.schedule.rule_exists(&start.rule).await.expect("rule?"));
    assert_eq!(
        deps.router.weights(&spec.traffic).await.expect("weights"),
        Some(Weights {
            heroku: 90,
            aws: 10
        })
    );
    let tick = || {
        canary::tick(
            deps,
            canary::TickInput {
                migration_id: id.clone(),
                interval_seconds: 1,
            },
        )
    };
    assert_eq!(
        tick().await.expect("tick").action,
        Action::Duplicate,
        "a tick right after a move is a duplicate"
    );
    // Half an interval on the steps' clock per tick: each move is then followed by a tick
    // that is not a duplicate, and the last step holds once (0.5 s < dns_hold_seconds 1 s).
    let mut seen = vec![10];
    let mut held = 0;
    let mut completed = false;
    for _ in 0..10 {
        e.clock.advance(chrono::Duration::milliseconds(500));
        let t = tick().await.expect("tick");
        match t.action {
            Action::Moved => {
                seen.push(t.aws_percent);
                assert_eq!(tick().await.expect("dup").action, Action::Duplicate);
            }
            // 100% holds for timing.dns_hold_seconds (1 s here) before the canary completes.
            Action::Holding => {
                assert_eq!(t.aws_percent, 100);
                held += 1;
            }
            Action::Completed => {
                completed = true;
                break;
            }
            other => panic!("unexpected tick {other:?}"),
        }
    }
    assert!(
        completed,
        "the canary completed within ten half-interval ticks"
    );
    assert_eq!(seen, vec![10, 50, 100]);
    assert_eq!(
        held, 1,
        "the last step held for the DNS TTL, and only that long"
    );
    assert_eq!(
        metric_values(&e, "AwsTrafficPercent"),
        vec![10.0, 50.0, 100.0],
        "a metric per weight change, duplicates and retries left out"
    );
    assert!(!deps.schedule.rule_exists(&start.rule).await.expect("rule?"));
    assert_eq!(
        gk.finished(&canary_exec).await.status(),
        &ExecutionStatus::Succeeded
    );
    assert_eq!(tick().await.expect("stale tick").action, Action::Idle);

    // 7. Gate "cut over": approved by an email link (GET shows a page, POST decides).
    let (cut_exec, token) = gk.waiting_execution().await;
    tokens.push(token.clone());
    approval::request(
        deps,
        approval::RequestInput {
            migration_id: id.clone(),
            gate: Gate::Cutover,
            task_token: token.into(),
        },
    )
    .await
    .expect("request cutover");
    let link = signing::sign_link(
        LINK_SECRET.as_bytes(),
        &LinkClaims {
            migration_id: id.clone(),
            gate: Gate::Cutover,
            approve: true,
            approver: "ops-lead@acme.example".into(),
            expires_at: now + 3600,
        },
    );
    let get = approval::callback(
        deps,
        HttpRequest {
            method: "GET".into(),
            path: "/approve".into(),
            query: [("t".to_string(), link.clone())].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(get.status_code, 200);
    assert_eq!(
        store
            .approval(&id, Gate::Cutover)
            .await
            .expect("read")
            .expect("req")
            .status,
        ApprovalStatus::Pending,
        "opening a link decides nothing"
    );
    let post = HttpRequest {
        method: "POST".into(),
        path: "/decide".into(),
        body: format!("t={link}").into_bytes(),
        ..Default::default()
    };
    assert_eq!(
        approval::callback(deps, post.clone()).await.status_code,
        200
    );
    assert_eq!(
        gk.finished(&cut_exec).await.status(),
        &ExecutionStatus::Succeeded
    );
    assert_eq!(
        approval::callback(deps, post).await.status_code,
        409,
        "replayed link"
    );
    // The same link with its signature in upper-case hex verifies, and is the same link.
    let (payload, sig) = link.rsplit_once('.').expect("signed link");
    let recased = HttpRequest {
        method: "POST".into(),
        path: "/decide".into(),
        body: format!("t={payload}.{}", sig.to_ascii_uppercase()).into_bytes(),
        ..Default::default()
    };
    let again = approval::callback(deps, recased).await;
    assert_eq!(again.status_code, 409, "{}", again.body);
    assert!(
        again.body.contains("already used"),
        "a replayed link with its signature re-cased is a replay: {}",
        again.body
    );

    // 8. Cutover: a fault inside the freeze is undone; then the real one.
    let mut faulty = deps.clone();
    faulty.settings.fault = Some("cutover:after_freeze".into());
    let err = cutover::run(&faulty, mref(&id))
        .await
        .expect_err("injected");
    assert_eq!(err.step_error_name(), "Ferry.Failed.CutoverUndone");
    let source_admin =
        e.db.url(ferry_tests::Side::Source)
            .connect()
            .await
            .expect("source");
    assert!(
        !frozen(&source_admin, APP_ROLE).await,
        "source unfrozen after undo"
    );
    assert_eq!(
        app_database_url(deps, &spec).await,
        e.db.source_app_url().expose_secret(),
        "DATABASE_URL unchanged after undo"
    );
    let h =
        ferry_heroku::HerokuClient::new(&deps.settings.heroku_api_url, heroku().1).expect("heroku");
    assert!(
        !h.app(&spec.heroku.app).await.expect("app").maintenance,
        "maintenance off after undo"
    );
    // The phase moved back? It stays cutting_over; the retry goes on from there.
    let cut = cutover::run(deps, mref(&id)).await.expect("cutover");
    assert!(cut.freeze_ms >= 0, "{cut:?}");
    assert!(cut.counts_checked == 2, "{cut:?}");
    let cut_again = cutover::run(deps, mref(&id)).await.expect("cutover again");
    assert_eq!(
        cut.timeline, cut_again.timeline,
        "a retry after success changes nothing"
    );
    assert_eq!(
        metric_values(&e, "WriteFreezeMilliseconds"),
        vec![cut.freeze_ms as f64],
        "one freeze metric, from the cutover that finished"
    );
    assert_eq!(
        cut, cut_again,
        "a retry after success reports the same cutover"
    );
    outputs.push(serde_json::to_value(&cut).expect("json"));
    assert!(
        frozen(&source_admin, APP_ROLE).await,
        "source frozen after cutover"
    );
    // The app, connecting as itself, can no longer write on the source.
    let refused =
        e.db.source_app_url()
            .connect_as_app()
            .await
            .expect("app connects")
            .batch_execute("INSERT INTO accounts (email) VALUES ('too-late@example.com')")
            .await
            .expect_err("a write on the frozen source");
    assert!(
        ferry_pg::describe(&refused).contains("read-only"),
        "{}",
        ferry_pg::describe(&refused)
    );
    let target_admin = e.db.target_url().connect().await.expect("target");
    assert!(
        !frozen(&target_admin, &roles.target).await,
        "target writable"
    );
    assert_eq!(
        app_database_url(deps, &spec).await,
        e.db.target_url().expose_secret(),
        "DATABASE_URL points at the target"
    );
    let formation = h.formation(&spec.heroku.app).await.expect("formation");
    assert!(
        formation
            .iter()
            .any(|f| f.process_type == "worker" && f.quantity == 0)
    );
    // A write by the app on AWS reaches the source through the reverse stream.
    wait_for("reverse mode", 30, || async {
        store
            .progress(&id)
            .await
            .expect("progress")
            .is_some_and(|p| p.phase == WorkerPhase::Reverse)
    })
    .await;
    target_admin
        .batch_execute("INSERT INTO accounts (email) VALUES ('after-cutover@example.com')")
        .await
        .expect("write on the target");
    wait_for("the reverse stream", 30, || async {
        source_admin
            .query_one(
                "SELECT count(*) FROM accounts WHERE email = 'after-cutover@example.com'",
                &[],
            )
            .await
            .expect("count")
            .get::<_, i64>(0)
            == 1
    })
    .await;

    // 10. Decommission: worker stopped, capture gone from both sides, Heroku record retired,
    //     dynos at 0, lock released, completed.
    let dec = decommission::run(deps, mref(&id))
        .await
        .expect("decommission");
    let dec_again = decommission::run(deps, mref(&id))
        .await
        .expect("decommission again");
    assert_eq!(dec.report, dec_again.report, "a retry reports the same");
    assert!(dec.worker_stopped && dec.heroku_record_removed, "{dec:?}");
    assert_eq!(
        app_records(&spec).await,
        vec![(
            Some("ferry-aws".into()),
            spec.traffic.aws_target.clone(),
            60
        )],
        "the AWS record answers alone; the app's old CNAME went with the first move"
    );
    let exited = wait_child(&mut worker, Duration::from_secs(30));
    assert!(exited, "worker process ended on the stop command");
    for c in [&source_admin, &target_admin] {
        assert_eq!(capture_leftovers(c).await, 0, "capture objects left behind");
    }
    assert_eq!(
        deps.router.weights(&spec.traffic).await.expect("weights"),
        Some(Weights {
            heroku: 0,
            aws: 100
        })
    );
    assert!(
        h.formation(&spec.heroku.app)
            .await
            .expect("f")
            .iter()
            .all(|f| f.quantity == 0)
    );
    assert!(
        store
            .app_lock(&spec.heroku.app)
            .await
            .expect("lock")
            .is_none()
    );
    assert_eq!(
        store.migration(&id).await.expect("rec").phase,
        Phase::Completed
    );
    outputs.push(serde_json::to_value(&dec).expect("json"));

    // No secret in outputs, audit entries, errors or logs.
    let audit = serde_json::to_string(&store.audit_log(&id).await.expect("audit")).expect("json");
    let out = serde_json::to_string(&outputs).expect("json");
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    let mut secrets = e.secrets.clone();
    secrets.extend(
        e.secrets
            .iter()
            .filter(|s| s.contains("://"))
            .map(|u| password(u)),
    );
    secrets.extend(tokens);
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        for (what, text) in [
            ("audit log", &audit),
            ("step outputs", &out),
            ("logs", &logged),
            ("error", &err.to_string()),
        ] {
            assert!(!text.contains(s.as_str()), "a secret appears in the {what}");
        }
    }
}

/// Runs the preflight for the env's migration; returns the execution ARN and the spec.
async fn preflight_passed(e: &Env) -> (String, ferry_core::MigrationSpec) {
    let exec = format!(
        "arn:aws:states:us-east-1:123456789012:execution:ferry:{}",
        e.id
    );
    preflight::run(
        &e.deps,
        preflight::Input {
            spec: e.spec_json.clone(),
            execution_arn: exec.clone(),
        },
    )
    .await
    .expect("preflight");
    let spec = e.store.migration(&e.id).await.expect("record").spec;
    (exec, spec)
}

/// Moves the record through `phases` as the steps this test skips would.
async fn walk(store: &dyn MigrationStore, id: &str, phases: &[Phase]) {
    for phase in phases {
        let rec = store.migration(id).await.expect("rec");
        store
            .advance_phase(id, rec.version, *phase, chrono::Utc::now())
            .await
            .expect("phase");
    }
}

fn store_table(e: &Env) -> String {
    e.store.table().to_string()
}

fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The approval callback refuses a bad signature, a stale timestamp, an approver not on the
/// list and a replayed request, each with no state change; then a canary whose health URL
/// fails sends all traffic back to Heroku and fails its task with `Ferry.CanaryUnhealthy`,
/// and the rollback releases the lock.
#[tokio::test]
async fn approvals_refuse_bad_requests_and_an_unhealthy_canary_rolls_back() {
    let e = env("gates_", None).await;
    let (deps, id, store) = (&e.deps, e.id.clone(), e.store.as_ref());
    let (exec, spec) = preflight_passed(&e).await;
    // Walk the phases the earlier steps would (this test is about the gates).
    walk(
        store,
        &id,
        &[Phase::ConfigSync, Phase::Replicating, Phase::Verifying],
    )
    .await;
    let gk = Gatekeeper::new().await;
    let (gate_exec, token) = gk.waiting_execution().await;
    approval::request(
        deps,
        approval::RequestInput {
            migration_id: id.clone(),
            gate: Gate::ShiftTraffic,
            task_token: token.into(),
        },
    )
    .await
    .expect("request");
    let now = chrono::Utc::now().timestamp();
    let good = slack_body(&id, Gate::ShiftTraffic, true, SLACK_USER);
    let pending = || async {
        store
            .approval(&id, Gate::ShiftTraffic)
            .await
            .expect("read")
            .expect("req")
            .status
            == ApprovalStatus::Pending
    };
    let refused = [
        (
            "bad signature",
            slack_request(&good, now, Some(format!("v0={}", "0".repeat(64)))),
            401,
        ),
        (
            "stale timestamp",
            slack_request(&good, now - 600, None),
            401,
        ),
        (
            "approver not listed",
            slack_request(
                &slack_body(&id, Gate::ShiftTraffic, true, "U0MALLORY"),
                now,
                None,
            ),
            403,
        ),
    ];
    for (what, req, _code) in refused {
        let r = approval::callback(deps, req).await;
        assert!(r.body.contains("refused"), "{what}: {}", r.body);
        assert!(pending().await, "{what} changed the approval");
    }
    // Link refusals carry their HTTP status.
    let forged = HttpRequest {
        method: "POST".into(),
        path: "/decide".into(),
        body: b"t=eyJub3QiOiJzaWduZWQifQ.deadbeef".to_vec(),
        ..Default::default()
    };
    assert_eq!(approval::callback(deps, forged).await.status_code, 401);
    assert!(pending().await);
    // The real click, then its replay.
    let click = slack_request(&good, now, None);
    assert!(
        approval::callback(deps, click.clone())
            .await
            .body
            .contains("approved")
    );
    assert_eq!(
        gk.finished(&gate_exec).await.status(),
        &ExecutionStatus::Succeeded
    );
    let replay = approval::callback(deps, click).await;
    assert!(replay.body.contains("already used"), "{}", replay.body);
    let audit = store.audit_log(&id).await.expect("audit");
    assert_eq!(audit.iter().filter(|a| a.action == "approve").count(), 1);

    // Canary: healthy first tick moves; then the health URL fails.
    let (canary_exec, token) = gk.waiting_execution().await;
    let start = canary::start(
        deps,
        canary::StartInput {
            migration_id: id.clone(),
            task_token: token.into(),
        },
    )
    .await
    .expect("canary start");
    e.clock.advance(chrono::Duration::milliseconds(500));
    let tick = || {
        canary::tick(
            deps,
            canary::TickInput {
                migration_id: id.clone(),
                interval_seconds: 1,
            },
        )
    };
    assert_eq!(tick().await.expect("tick").aws_percent, 50);
    e.sink.answer(503);
    e.clock.advance(chrono::Duration::milliseconds(500));
    let t = tick().await.expect("unhealthy tick");
    assert_eq!(t.action, Action::Unhealthy);
    assert_eq!(
        deps.router.weights(&spec.traffic).await.expect("weights"),
        Some(Weights {
            heroku: 100,
            aws: 0
        })
    );
    assert!(!deps.schedule.rule_exists(&start.rule).await.expect("rule?"));
    let done = gk.finished(&canary_exec).await;
    assert_eq!(done.status(), &ExecutionStatus::Failed);
    assert_eq!(done.error(), Some("Ferry.CanaryUnhealthy"));

    // The Catch → rollback: nothing but traffic was changed; lock released; twice is fine.
    let input = || rollback::Input {
        migration_id: id.clone(),
        execution_arn: exec.clone(),
        error: Some(rollback::CaughtError {
            error: "Ferry.CanaryUnhealthy".into(),
            cause: "health URL answered 503".into(),
        }),
    };
    let rb = rollback::run(deps, input()).await.expect("rollback");
    assert_eq!(rb.from_phase.as_deref(), Some("shifting_traffic"));
    rollback::run(deps, input()).await.expect("rollback again");
    rolled_back_and_unlocked(store, &id, &spec.heroku.app).await;
    app_record_restored(&spec).await;
    // A rollback from another execution of the same id touches nothing.
    let foreign = rollback::run(
        deps,
        rollback::Input {
            migration_id: id.clone(),
            execution_arn: "arn:aws:states:us-east-1:123456789012:execution:ferry:other".into(),
            error: None,
        },
    )
    .await
    .expect("foreign rollback");
    assert!(foreign.undone.is_empty());
}

/// After the cutover, a rejected "finish" gate rolls back: the write made on AWS reaches the
/// source through the reverse stream before DATABASE_URL moves back, the source is writable,
/// traffic and Heroku are as they were, the worker and capture are gone, the lock is free.
#[tokio::test]
async fn rollback_after_cutover_loses_no_write_made_on_aws() {
    let e = env("rb_", None).await;
    let (deps, id, store) = (&e.deps, e.id.clone(), e.store.as_ref());
    let (exec, mut worker) = cut_over(&e).await;
    let spec = store.migration(&id).await.expect("record").spec;
    // The comparison through the snapshots taken inside the freeze: equal, every table.
    let check = exact_check_done(deps, &id).await;
    assert_eq!(
        check.state,
        ferry_core::state::DrainCheckState::Equal,
        "{check:?}"
    );
    assert_eq!((check.tables_compared, check.rows_compared), (2, 5000));
    wait_for("reverse mode", 30, || async {
        store
            .progress(&id)
            .await
            .expect("progress")
            .is_some_and(|p| p.phase == WorkerPhase::Reverse)
    })
    .await;
    // The app, now on RDS, writes.
    let target_admin = e.db.target_url().connect().await.expect("target");
    target_admin
        .batch_execute(
            "INSERT INTO accounts (email) VALUES ('made-on-aws@example.com');
             UPDATE accounts SET balance = 424242 WHERE id = 7;",
        )
        .await
        .expect("write on the target");

    let input = || rollback::Input {
        migration_id: id.clone(),
        execution_arn: exec.clone(),
        error: Some(rollback::CaughtError {
            error: "Ferry.Rejected".into(),
            cause: "ops-lead rejected gate finish".into(),
        }),
    };
    // As the state machine's Retry does while the reverse stream catches up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        match rollback::run(deps, input()).await {
            Ok(out) => break out,
            Err(err) if err.step_error_name().starts_with("Ferry.Retryable.") => {
                assert!(Instant::now() < deadline, "rollback kept retrying: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("rollback failed: {err}"),
        }
    };
    assert_eq!(out.from_phase.as_deref(), Some("rollback_window"));
    assert!(
        out.undone.iter().any(|u| u.contains("database back")),
        "{out:?}"
    );
    let source_admin =
        e.db.url(ferry_tests::Side::Source)
            .connect()
            .await
            .expect("source");
    let row = source_admin
        .query_one(
            "SELECT (SELECT count(*) FROM accounts WHERE email = 'made-on-aws@example.com'),
                    (SELECT balance::text FROM accounts WHERE id = 7)",
            &[],
        )
        .await
        .expect("read source");
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "the insert made on AWS is on the source"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "424242",
        "the update made on AWS too"
    );
    assert!(!frozen(&source_admin, APP_ROLE).await);
    // The app role can write on the source again.
    // As the app connects (no Ferry session options): a frozen role would refuse this.
    e.db.source_app_url()
        .connect_as_app()
        .await
        .expect("app")
        .batch_execute("INSERT INTO accounts (email) VALUES ('back-on-heroku@example.com')")
        .await
        .expect("the app writes on the source again");
    assert_eq!(
        app_database_url(deps, &spec).await,
        e.db.source_app_url().expose_secret(),
        "DATABASE_URL back on the source"
    );
    app_record_restored(&spec).await;
    let h =
        ferry_heroku::HerokuClient::new(&deps.settings.heroku_api_url, heroku().1).expect("heroku");
    let app = h.app(&spec.heroku.app).await.expect("app");
    assert!(!app.maintenance, "maintenance mode off again");
    let formation = h.formation(&spec.heroku.app).await.expect("formation");
    assert!(
        formation
            .iter()
            .any(|f| f.process_type == "worker" && f.quantity > 0),
        "worker dynos restored: {formation:?}"
    );
    assert!(
        wait_child(&mut worker, Duration::from_secs(30)),
        "worker stopped"
    );
    let target_admin = e.db.target_url().connect().await.expect("target");
    for c in [&source_admin, &target_admin] {
        assert_eq!(capture_leftovers(c).await, 0, "capture objects left behind");
    }
    let roles: facts::AppRoles = facts::get(store, &id, facts::APP_ROLES)
        .await
        .expect("fact")
        .expect("roles");
    assert!(!frozen(&target_admin, &roles.target).await);
    rolled_back_and_unlocked(store, &id, &spec.heroku.app).await;
}

/// Verification tolerates a difference only while a change for those rows waits in the
/// capture log: the same differing row fails the step (naming the table) without one, and
/// passes as "in flight" with one.
#[tokio::test]
async fn verify_fails_on_a_real_difference_and_tolerates_only_rows_in_flight() {
    let e = env("vfy_", None).await;
    let (deps, id, store) = (&e.deps, e.id.clone(), e.store.as_ref());
    preflight_passed(&e).await;
    walk(store, &id, &[Phase::ConfigSync, Phase::Replicating]).await;
    // The target holds the same rows, but one account differs.
    let target = e.db.target_url().connect().await.expect("target");
    target.batch_execute(APP_SQL).await.expect("target rows");
    target
        .batch_execute("UPDATE accounts SET balance = 999999 WHERE id = 17")
        .await
        .expect("tamper");
    let err = ferry_tests::verifier::verify_here(deps, &id, Some(Duration::from_millis(200)))
        .await
        .expect_err("a real difference");
    assert_eq!(err.step_error_name(), "Ferry.Failed.VerifyMismatch");
    let text = err.to_string();
    assert!(text.contains("public.accounts"), "{text}");
    assert!(!text.contains("public.events"), "{text}");

    // The same difference with the source's change to that row still waiting to be applied
    // (capture installed by the role the worker uses, as in a migration).
    let source = e.db.source_app_url().connect().await.expect("source");
    let tables = ferry_pg::catalog::tables(&source).await.expect("catalog");
    ferry_replicator::capture::trigger::install(&source, &tables)
        .await
        .expect("capture");
    source
        .batch_execute("UPDATE accounts SET email = email WHERE id = 17")
        .await
        .expect("a captured change");
    let out = ferry_tests::verifier::verify_here(deps, &id, Some(Duration::from_millis(200)))
        .await
        .expect("in flight is tolerated");
    assert_eq!(out.in_flight, vec!["public.accounts".to_string()]);
}

/// An unsigned request to the approval URL learns no internal name when Ferry's side fails
/// (here: the Slack signing secret's parameter does not exist).
#[tokio::test]
async fn a_failure_on_ferrys_side_names_no_parameter_to_the_caller() {
    let e = env("leak_", None).await;
    let mut deps = e.deps.clone();
    deps.settings.slack_signing_secret_param = Some("/ferry/internal-name-xyz/slack".into());
    let body = slack_body(&e.id, Gate::Cutover, true, SLACK_USER);
    // Well formed and fresh, so it passes the checks made before any secret is read.
    let resp = approval::callback(
        &deps,
        slack_request(
            &body,
            chrono::Utc::now().timestamp(),
            Some(format!("v0={}", "0".repeat(64))),
        ),
    )
    .await;
    assert!(
        resp.body.contains("Ferry could not handle this request"),
        "{}",
        resp.body
    );
    assert!(!resp.body.contains("internal-name-xyz"), "{}", resp.body);
    deps.settings.slack_signing_secret_param = None;
    let resp = approval::callback(
        &deps,
        slack_request(
            &body,
            chrono::Utc::now().timestamp(),
            Some(format!("v0={}", "0".repeat(64))),
        ),
    )
    .await;
    assert!(!resp.body.contains("FERRY_"), "{}", resp.body);
}

/// Tables whose keys are not one integer: uuid, composite, and a partitioned table (keys
/// (day, n)) whose rows the writer moves between partitions.
const NASTY_SQL: &str = "CREATE TABLE docs (id uuid PRIMARY KEY, body text NOT NULL);
     INSERT INTO docs SELECT md5('d' || g)::uuid, 'doc ' || g FROM generate_series(1, 1500) g;
     CREATE TABLE memberships (org int, member text, role text NOT NULL, PRIMARY KEY (org, member));
     INSERT INTO memberships SELECT g % 7, 'm' || g, 'r' FROM generate_series(1, 1500) g;
     CREATE TABLE hits (day date, n int, hits int NOT NULL, PRIMARY KEY (day, n)) PARTITION BY RANGE (day);
     CREATE TABLE hits_a PARTITION OF hits FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
     CREATE TABLE hits_b PARTITION OF hits FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
     INSERT INTO hits SELECT date '2026-01-01' + (g % 360), g, 0 FROM generate_series(1, 2000) g;";

/// A continuous writer as the app role: a hot row per table, updates and deletes spread over
/// other keys, inserts, rows moved between partitions. Never touches accounts above 1000, the
/// seeded docs, or memberships outside orgs 1 and 100 (the keys the test damages).
fn start_writer(
    url: ferry_pg::PgUrl,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<u64>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let db = url.connect_as_app().await.expect("writer connects");
        let stmts = [
            "UPDATE accounts SET balance = balance + 1 WHERE id = 1",
            "UPDATE accounts SET balance = balance + 1 WHERE id = $1::int8",
            "INSERT INTO docs VALUES (gen_random_uuid(), 'new')",
            "DELETE FROM docs WHERE id = (SELECT id FROM docs WHERE body = 'new' LIMIT 1)",
            "UPDATE memberships SET role = 'r' || $1::int8 WHERE org = 1 AND member = 'm1'",
            "INSERT INTO memberships VALUES (100, 'x' || $1::int8, 'r') ON CONFLICT DO NOTHING",
            "UPDATE hits SET hits = hits + 1 WHERE day = date '2026-01-02' AND n = 1",
            "UPDATE hits SET day = CASE WHEN day < date '2026-07-01' THEN day + 181 ELSE day - 181 END WHERE n = $1::int4",
            "DELETE FROM events WHERE id = $1::int8",
            "INSERT INTO events (account_id, kind) VALUES ($1::int8, 'w')",
        ];
        let mut prepared = Vec::new();
        for s in stmts {
            prepared.push(db.prepare(s).await.expect("prepare"));
        }
        let mut n: u64 = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let k = (2 + (n * 7919) % 999) as i64;
            let st = &prepared[(n % prepared.len() as u64) as usize];
            let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
                match st.params().len() {
                    0 => vec![],
                    _ if st.params()[0] == tokio_postgres::types::Type::INT4 => {
                        vec![Box::new((2 + (n * 131) % 1999) as i32)]
                    }
                    _ => vec![Box::new(k)],
                };
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as _).collect();
            db.execute(st, &refs).await.expect("the writer's statement");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        n
    });
    (stop, task)
}

/// Verify under a continuous writer in `capture` mode: passes while the worker keeps up, then
/// names exactly the keys damaged on the target (a changed row, a missing row, an extra row),
/// never the keys the writer keeps changing.
async fn verify_under_writes(prefix: &str, capture: &str) {
    let mut e = env(prefix, None).await;
    if capture == "logical" {
        // Logical capture needs REPLICATION: the migration connects as the bed's superuser
        // (as on RDS or self-hosted); the app keeps writing as its own role.
        e.deps
            .params
            .put_secure(
                &format!("/{}/source-url", e.id),
                e.db.url(ferry_tests::Side::Source).expose_secret(),
            )
            .await
            .expect("param");
    }
    e.spec_json["replication"]["capture"] = capture.into();
    let (deps, id) = (&e.deps, e.id.clone());
    let app_db = e.db.source_app_url().connect().await.expect("app");
    app_db.batch_execute(NASTY_SQL).await.expect("nasty schema");
    let (_, _, mut worker) = streaming(&e).await;
    let (stop, writer) = start_writer(e.db.source_app_url());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let out = verify::run(deps, mref(&id), Some(Duration::from_secs(3)))
        .await
        .expect("Verify passes while the app writes");
    eprintln!("{capture}: verify under writes: {out:?}");
    assert_eq!(out.tables, 5);
    assert_eq!(
        out.capture,
        Some(if capture == "logical" {
            ferry_core::spec::CaptureMode::Logical
        } else {
            ferry_core::spec::CaptureMode::Trigger
        })
    );
    let stored: verify::Output = facts::get(e.store.as_ref(), &id, facts::VERIFY)
        .await
        .expect("fact")
        .expect("the figures are kept for status and report");
    assert_eq!(stored.keys_rechecked, out.keys_rechecked);

    // Damage on the target only, while the writer goes on: a changed row, a missing row, an
    // extra row, in tables the writer is writing (other keys).
    let target = e.db.target_url().connect().await.expect("target");
    target
        .batch_execute(
            "UPDATE accounts SET email = 'tampered' WHERE id = 1500;
             DELETE FROM docs WHERE id = md5('d7')::uuid;
             INSERT INTO memberships VALUES (999, 'ghost', 'r');",
        )
        .await
        .expect("damage the target");
    let err = verify::run(deps, mref(&id), Some(Duration::from_secs(3)))
        .await
        .expect_err("damage is found");
    let text = err.to_string();
    eprintln!("{capture}: {text}");
    assert_eq!(err.step_error_name(), "Ferry.Failed.VerifyMismatch");
    let uuid: String = app_db
        .query_one("SELECT md5('d7')::uuid::text", &[])
        .await
        .expect("uuid")
        .get(0);
    for named in [
        "public.accounts: 1 key(s)",
        "[\"1500\"]",
        "public.docs: 1 key(s)",
        &format!("[\"{uuid}\"]"),
        "public.memberships: 1 key(s)",
        "[\"999\", \"ghost\"]",
    ] {
        assert!(text.contains(named), "{named} not in: {text}");
    }
    for hot in ["public.hits", "public.events"] {
        assert!(!text.contains(hot), "{hot} named: {text}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    eprintln!("{capture}: the writer ran {writes} statements");
    assert!(writes > 200, "the writer barely ran: {writes}");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Trigger capture: Verify passes under writes and names the damaged keys of every key shape.
#[tokio::test]
async fn verify_under_writes_with_trigger_capture_names_only_the_damaged_keys() {
    verify_under_writes("vtw_", "trigger").await;
}

/// Logical capture: the same, with what waits read from a copy of the slot.
#[tokio::test]
async fn serial_verify_under_writes_with_logical_capture_names_only_the_damaged_keys() {
    verify_under_writes("vlw_", "logical").await;
}

/// Polls the status step in its after-cutover mode until the exact comparison has ended.
async fn exact_check_done(deps: &Deps, id: &str) -> ferry_core::state::DrainCheck {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = replication::status(
            deps,
            replication::StatusInput {
                migration_id: id.to_string(),
                since: None,
                exact_check: true,
                wait_seconds: None,
            },
        )
        .await
        .expect("status");
        if s.ready {
            return s.exact_check.expect("a comparison ran for the cutover");
        }
        assert!(
            Instant::now() < deadline,
            "the comparison did not end: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cuts over the env's migration (worker running, phases walked, traffic on AWS); returns the
/// execution ARN and the worker.
/// Preflight, config sync, the worker started and caught up: returns the execution ARN, the
/// spec and the worker.
async fn streaming(e: &Env) -> (String, ferry_core::MigrationSpec, Child) {
    let (deps, id) = (&e.deps, e.id.clone());
    let (exec, spec) = preflight_passed(e).await;
    config_sync::run(deps, mref(&id)).await.expect("config");
    replication::start(deps, mref(&id)).await.expect("start");
    let worker = spawn_worker(&id, e.store.table());
    wait_for("the worker to catch up", 120, || async {
        replication::status(deps, mref(&id))
            .await
            .expect("status")
            .ready
    })
    .await;
    (exec, spec, worker)
}

async fn cut_over(e: &Env) -> (String, Child) {
    let (deps, id, store) = (&e.deps, e.id.clone(), e.store.as_ref());
    let (exec, spec, worker) = streaming(e).await;
    walk(
        store,
        &id,
        &[
            Phase::Verifying,
            Phase::AwaitingTrafficApproval,
            Phase::ShiftingTraffic,
            Phase::AwaitingCutoverApproval,
        ],
    )
    .await;
    deps.router
        .set_weights(&spec.traffic, Weights::for_aws_percent(100))
        .await
        .expect("weights");
    cutover::run(deps, mref(&id)).await.expect("cutover");
    (exec, worker)
}

/// The comparison through the two snapshots taken inside the freeze finds a row deleted on the
/// target while the worker drained (the rehearsal's damage fault), names its table and key,
/// audits it, and the rollback-window gate's prompt leads with the alarm. Without the fault
/// the same comparison finds both sides equal.
#[tokio::test]
async fn the_exact_comparison_after_the_cutover_catches_a_row_damaged_during_the_drain() {
    let mut e = env("xck_", Some("cutover:damage_target")).await;
    // No count check inside the freeze (it would catch a missing row and undo the cutover).
    e.spec_json["cutover"]["verify"] = "none".into();
    let (deps, id, store) = (&e.deps, e.id.clone(), e.store.as_ref());
    let (_, mut worker) = cut_over(&e).await;
    let check = exact_check_done(deps, &id).await;
    eprintln!("{check:?}");
    assert_eq!(check.state, ferry_core::state::DrainCheckState::Different);
    assert_eq!(check.tables_compared, 2);
    assert_eq!(check.differences.len(), 1, "{check:?}");
    let d = &check.differences[0];
    assert_eq!(d.table, "public.events");
    assert_eq!((d.source_rows, d.target_rows), (3000, 2999));
    assert_eq!(d.keys.len(), 1);
    let audit = store.audit_log(&id).await.expect("audit");
    assert!(audit.iter().any(|a| a.action == "drain_check"
        && a.outcome == ferry_core::state::Outcome::Failed
        && a.detail["differences"][0]["keys"][0] == d.keys[0].as_str()));

    let gk = Gatekeeper::new().await;
    let (_, token) = gk.waiting_execution().await;
    approval::request(
        deps,
        approval::RequestInput {
            migration_id: id.clone(),
            gate: Gate::Finish,
            task_token: token.into(),
        },
    )
    .await
    .expect("the rollback-window gate");
    let posted = e.sink.requests();
    let prompt = posted
        .iter()
        .rev()
        .find(|(p, _)| p == "/slack-webhook")
        .map(|(_, b)| b.clone())
        .expect("the gate's Slack prompt");
    for part in [
        "ALARM",
        "public.events",
        "DIFFERENT",
        "Finish despite differences",
        "\\\"accept_differences\\\":true",
    ] {
        assert!(prompt.contains(part), "{part} not in the prompt: {prompt}");
    }

    // A plain approve of the finish gate is refused, naming the table; the explicit override
    // finishes and is audited as such.
    let approver = e.spec_json["approvals"]["approvers"][0]
        .as_str()
        .expect("approver")
        .to_string();
    let approvers = vec![approver.clone()];
    let decision = |accept_differences| ferry_core::approval::Decision {
        migration_id: id.clone(),
        gate: Gate::Finish,
        approve: true,
        approver: approver.clone(),
        accept_differences,
    };
    let decide = |accept| {
        let d = decision(accept);
        let approvers = approvers.clone();
        async move {
            ferry_core::approval::decide(
                store,
                deps.callbacks.as_ref(),
                &approvers,
                &d,
                chrono::Utc::now(),
            )
            .await
        }
    };
    let refused = decide(false)
        .await
        .expect_err("a plain approve over a found difference");
    assert_eq!(refused.step_error_name(), "Ferry.Blocked.Differences");
    assert!(refused.to_string().contains("public.events"), "{refused}");
    assert_eq!(
        store
            .approval(&id, Gate::Finish)
            .await
            .expect("read")
            .expect("request")
            .status,
        ApprovalStatus::Pending,
        "nothing decided"
    );
    decide(true).await.expect("the override finishes");
    let audit = store.audit_log(&id).await.expect("audit");
    let overridden = audit
        .iter()
        .find(|a| a.action == "approve_accepting_differences")
        .expect("the override is audited");
    assert!(
        overridden.detail["differences"]
            .as_str()
            .is_some_and(|d| d.contains("public.events")),
        "{:?}",
        overridden.detail
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Email approval links decide as their approver, so each approver's links travel in a message
/// of their own that only a subscription filtered to that address receives; the prompt every
/// subscriber gets carries no link.
#[tokio::test]
async fn each_email_approver_alone_receives_their_links() {
    let mut e = env("mail_", None).await;
    let (a, b) = ("ops-a@acme.example", "ops-b@acme.example");
    e.spec_json["approvals"]["approvers"] = serde_json::json!([a, b, SLACK_USER]);
    let (deps, id) = (&e.deps, e.id.clone());
    let aws = ferry_aws::sdk_config().await;
    // An email subscription without a filter policy would receive both approvers' links:
    // preflight refuses it, naming the fix; filtered to its address, it passes.
    let sns = aws_sdk_sns::Client::new(&aws);
    let topic_arn = e.spec_json["approvals"]["sns_topic_arn"]
        .as_str()
        .expect("topic")
        .to_string();
    let sub = sns
        .subscribe()
        .topic_arn(&topic_arn)
        .protocol("email")
        .endpoint(a)
        .return_subscription_arn(true)
        .send()
        .await
        .expect("subscribe")
        .subscription_arn()
        .expect("arn")
        .to_string();
    let exec = format!("arn:aws:states:us-east-1:123456789012:execution:ferry:{id}");
    let err = preflight::run(
        deps,
        preflight::Input {
            spec: e.spec_json.clone(),
            execution_arn: exec.clone(),
        },
    )
    .await
    .expect_err("an unfiltered email subscription");
    let text = err.to_string();
    assert!(
        text.contains(&format!("email subscription of {a} has no filter policy")),
        "{text}"
    );
    sns.set_subscription_attributes()
        .subscription_arn(&sub)
        .attribute_name("FilterPolicy")
        .attribute_value(serde_json::json!({"ferry_approver": ["all", a]}).to_string())
        .send()
        .await
        .expect("filter");
    let (_, spec) = preflight_passed(&e).await;
    let topic = &spec.approvals.sns_topic_arn;
    let policy = |who: &str| serde_json::json!({"ferry_approver": ["all", who]}).to_string();
    let qa = ferry_tests::aws::queue_on(&aws, topic, Some(&policy(a))).await;
    let qb = ferry_tests::aws::queue_on(&aws, topic, Some(&policy(b))).await;
    let watcher = ferry_tests::aws::queue_on(
        &aws,
        topic,
        Some(&serde_json::json!({"ferry_approver": ["all"]}).to_string()),
    )
    .await;
    let gk = Gatekeeper::new().await;
    let (_, token) = gk.waiting_execution().await;
    walk(
        e.store.as_ref(),
        &id,
        &[Phase::ConfigSync, Phase::Replicating, Phase::Verifying],
    )
    .await;
    approval::request(
        deps,
        approval::RequestInput {
            migration_id: id.clone(),
            gate: Gate::ShiftTraffic,
            task_token: token.into(),
        },
    )
    .await
    .expect("the prompt");
    let now = chrono::Utc::now().timestamp();
    for (queue, me, other) in [(&qa, a, b), (&qb, b, a)] {
        let got = ferry_tests::aws::drain_queue(&aws, queue).await;
        assert_eq!(got.len(), 2, "the prompt and {me}'s own links: {got:?}");
        let all = got.join("\n");
        assert!(
            !all.contains(other),
            "{me} received {other}'s message: {all}"
        );
        let tokens: Vec<&str> = all
            .split("approve?t=")
            .skip(1)
            .map(|t| t.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(tokens.len(), 2, "approve and reject links: {all}");
        for t in tokens {
            let claims =
                signing::verify_link(LINK_SECRET.as_bytes(), t, now).expect("a valid link");
            assert_eq!(claims.approver, me);
        }
    }
    let seen = ferry_tests::aws::drain_queue(&aws, &watcher).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        !seen[0].contains("approve?t="),
        "the shared prompt carries a link: {}",
        seen[0]
    );
}

/// Heroku rotates the source's credentials mid-stream (the old password refused, the worker's
/// sessions ended, the attachment's URL changed): the worker takes the app's current URL from
/// the Platform API, stores it in the source parameter (keeping the stored URL's TLS
/// settings), audits it, and goes on replicating.
#[tokio::test]
async fn serial_the_worker_follows_a_rotated_source_password() {
    let e = env("rot_", None).await;
    let (deps, id) = (&e.deps, e.id.clone());
    let role = unique("rot_");
    let admin =
        e.db.url(ferry_tests::Side::Source)
            .connect()
            .await
            .expect("admin");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'first-Zk7' IN ROLE {APP_ROLE}"
        ))
        .await
        .expect("a login of the app's");
    let login = |pw: &str| {
        let creds = ferry_pg::PgUrl::parse(&format!("postgres://{role}:{pw}@x/y")).expect("url");
        e.db.source_app_url().with_login_of(&creds).expect("login")
    };
    let app = e.spec_json["heroku"]["app"]
        .as_str()
        .expect("app")
        .to_string();
    let set_heroku_url = |url: String| {
        let app = app.clone();
        async move {
            let (base, _) = heroku();
            let r = reqwest::Client::new()
                .post(format!("{base}/__bed/apps/{app}/database-url"))
                .json(&serde_json::json!({ "url": url }))
                .send()
                .await
                .expect("fake Heroku");
            assert!(r.status().is_success());
        }
    };
    let param = format!("/{id}/source-url");
    deps.params
        .put_secure(&param, login("first-Zk7").expose_secret())
        .await
        .expect("param");
    set_heroku_url(login("first-Zk7").expose_secret().to_string()).await;
    let (_, _, mut worker) = streaming(&e).await;

    // Rotation, as `pg:credentials:rotate --force` does it.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} PASSWORD 'second-Zk7';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';"
        ))
        .await
        .expect("rotate");
    set_heroku_url(login("second-Zk7").expose_secret().to_string()).await;
    let app_db = e.db.source_app_url().connect().await.expect("app");
    app_db
        .batch_execute("INSERT INTO accounts (email) VALUES ('after-rotation@example.com')")
        .await
        .expect("the app writes");
    let target = e.db.target_url().connect().await.expect("target");
    wait_for("the write after the rotation on the target", 90, || async {
        target
            .query_one(
                "SELECT count(*) FROM accounts WHERE email = 'after-rotation@example.com'",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    let stored = deps.params.get(&param).await.expect("param");
    assert!(
        stored.contains("second-Zk7"),
        "the parameter was not refreshed"
    );
    assert!(stored.contains("sslmode=verify-full"), "TLS settings kept");
    let audit = e.store.audit_log(&id).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "source_credentials_refreshed"
                && a.detail["from_config_var"] == "DATABASE_URL"),
        "not audited"
    );
    assert!(
        !audit.iter().any(|a| a.detail.to_string().contains("Zk7")),
        "a password in the audit log"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

/// RDS manages the master password in Secrets Manager and the target URL logs in as the
/// master user with a copied password: preflight refuses, naming the secret to follow, since
/// the next rotation (every 7 days by default) would end every new login.
#[tokio::test]
async fn preflight_refuses_a_copied_master_password_that_rds_rotates() {
    let mut e = env("rdsm_", None).await;
    let aws = ferry_tests::aws::config().await;
    let master = e.db.target_url().user().expect("user").to_string();
    let (rds_id, arn) = ferry_tests::aws::rds_instance_managed(
        &aws,
        &(bed_var("FERRY_BED_TARGET_VERSION") + ".1"),
        &master,
    )
    .await;
    e.spec_json["target"]["rds_instance_id"] = rds_id.into();
    let err = preflight::run(
        &e.deps,
        preflight::Input {
            spec: e.spec_json.clone(),
            execution_arn: format!(
                "arn:aws:states:us-east-1:123456789012:execution:ferry:{}",
                e.id
            ),
        },
    )
    .await
    .expect_err("a rotating password copied into the URL");
    let text = err.to_string();
    assert!(text.contains("rds_managed_password"), "{text}");
    assert!(text.contains(&arn), "{text}");
    assert!(text.contains("target.password_secret"), "{text}");
}

/// RDS rotates the target login's password mid-stream (the old one refused, the worker's
/// sessions ended, the secret's current value changed): the worker takes the secret's
/// password, stores it in the target parameter, audits it, and goes on replicating.
#[tokio::test]
async fn serial_the_worker_follows_a_target_password_rds_rotates() {
    let mut e = env("rtp_", None).await;
    let aws = ferry_tests::aws::config().await;
    let role = unique("rtp_");
    // A login like RDS's master user (in rds_superuser), made by the operator.
    let admin = ferry_pg::PgUrl::parse(&bed_var("FERRY_BED_TARGET_SUPERUSER_URL"))
        .expect("superuser url")
        .with_dbname(e.db.name())
        .connect()
        .await
        .expect("target superuser");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'first-Qx9' IN ROLE rds_superuser;
             GRANT ALL ON DATABASE \"{}\" TO {role};
             GRANT ALL ON SCHEMA public TO {role};",
            e.db.name()
        ))
        .await
        .expect("a login on the target");
    let json = |pw: &str| format!(r#"{{"username":"{role}","password":"{pw}"}}"#);
    let arn = ferry_tests::aws::rds_like_secret(&aws, &json("first-Qx9")).await;
    e.spec_json["target"]["password_secret"] = arn.clone().into();
    let param = format!("/{}/target-url", e.id);
    let creds = ferry_pg::PgUrl::parse(&format!("postgres://{role}:first-Qx9@x/y")).expect("url");
    let login = e.db.target_url().with_login_of(&creds).expect("login");
    e.deps
        .params
        .put_secure(&param, login.expose_secret())
        .await
        .expect("param");
    let (_, _, mut worker) = streaming(&e).await;

    // The rotation, as Secrets Manager does it for RDS: the password changes on the server,
    // then the secret's current value.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} PASSWORD 'second-Qx9';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';"
        ))
        .await
        .expect("rotate");
    ferry_tests::aws::rotate_secret(&aws, &arn, &json("second-Qx9")).await;
    let app_db = e.db.source_app_url().connect().await.expect("app");
    app_db
        .batch_execute("INSERT INTO accounts (email) VALUES ('after-rds-rotation@example.com')")
        .await
        .expect("the app writes");
    wait_for(
        "the write after the rotation on the target",
        120,
        || async {
            admin
                .query_one(
                    "SELECT count(*) FROM accounts WHERE email = 'after-rds-rotation@example.com'",
                    &[],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        },
    )
    .await;
    let stored = e.deps.params.get(&param).await.expect("param");
    assert!(
        stored.contains("second-Qx9"),
        "the parameter was not updated"
    );
    assert!(stored.contains("sslmode=verify-full"), "TLS settings kept");
    let audit = e.store.audit_log(&e.id).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "target_password_followed" && a.detail["secret"] == arn.as_str()),
        "not audited"
    );
    assert!(
        !audit.iter().any(|a| a.detail.to_string().contains("Qx9")),
        "a password in the audit log"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Proxy mode with the Redis section: the endpoint's tasks run (two, with their Redis
/// proxies, reading this migration's parameters), as preflight requires before it passes.
async fn redis_endpoint(e: &mut Env) -> ferry_tests::endpoint::EndpointFleet {
    let p = format!("/{}", e.id);
    e.spec_json["cutover"]["endpoint"] = "proxy".into();
    e.spec_json["endpoint"] = serde_json::json!({"url_param": format!("{p}/endpoint-url")});
    let nlb = ferry_tests::endpoint::Nlb::start().await;
    let redis_nlb = ferry_tests::endpoint::Nlb::start().await;
    let client = format!(
        "postgres://app_user:{}@127.0.0.1:{}/{}?sslmode=require",
        ferry_tests::unique("endpoint-secret-"),
        nlb.port,
        e.db.name()
    );
    let redis_client = format!(
        "rediss://:{}@127.0.0.1:{}/0?ssl_cert_reqs=none",
        ferry_tests::unique("redis-endpoint-secret-"),
        redis_nlb.port
    );
    for (name, value) in [
        ("endpoint-url", client),
        ("redis-endpoint-url", redis_client),
    ] {
        e.deps
            .params
            .put_secure(&format!("{p}/{name}"), &value)
            .await
            .expect("param");
    }
    let s = &e.spec_json;
    let param = |v: &serde_json::Value| v.as_str().expect("param name").to_string();
    ferry_tests::endpoint::EndpointFleet::start_with_redis(
        ferry_tests::endpoint::EndpointParams {
            app: param(&s["heroku"]["app"]),
            table: e.store.table().to_string(),
            as_task_role: false,
            source_param: param(&s["source"]["database_url_param"]),
            target_param: param(&s["target"]["database_url_param"]),
            client_param: format!("{p}/endpoint-url"),
            redis: Some((
                param(&s["redis"]["source_url_param"]),
                param(&s["redis"]["target_url_param"]),
                format!("{p}/redis-endpoint-url"),
            )),
            // One task steered by the channel alone, one by the table alone.
            control: ferry_tests::endpoint::Control::Mixed(format!("{p}/endpoint-control-key")),
        },
        2,
        nlb,
        Some(redis_nlb),
    )
    .await
}

/// With a `redis` section, preflight probes both Redis servers (a refused login is a blocker
/// naming its fix, the password never shown), and config sync leaves Heroku's REDIS_URL out of
/// the AWS fleet's config.
#[tokio::test]
async fn a_redis_section_is_probed_by_preflight_and_keeps_redis_url_out_of_config() {
    let mut e = env("redis_", None).await;
    let p = format!("/{}", e.id);
    let source = bed_var("FERRY_BED_REDIS_SOURCE_URL");
    let wrong =
        bed_var("FERRY_BED_REDIS_TARGET_URL").replace(":ferry-bed-redis-target@", ":not-it@");
    e.deps
        .params
        .put_secure(&format!("{p}/redis-source-url"), &source)
        .await
        .expect("param");
    e.deps
        .params
        .put_secure(&format!("{p}/redis-target-url"), &wrong)
        .await
        .expect("param");
    e.spec_json["redis"] = serde_json::json!({
        "source_url_param": format!("{p}/redis-source-url"),
        "target_url_param": format!("{p}/redis-target-url"),
        "queue_patterns": [format!("{}:queue:*", e.id)],
    });
    // Redis moves through the endpoint's proxy: proxy mode, the endpoint running.
    let _endpoint = redis_endpoint(&mut e).await;
    let exec = format!(
        "arn:aws:states:us-east-1:123456789012:execution:ferry:{}",
        e.id
    );
    let input = || preflight::Input {
        spec: e.spec_json.clone(),
        execution_arn: exec.clone(),
    };
    let err = preflight::run(&e.deps, input())
        .await
        .expect_err("ElastiCache refuses the login")
        .to_string();
    assert!(err.contains("redis (db 0): Redis rediss://"), "{err}");
    assert!(err.contains("refused AUTH"), "{err}");
    assert!(!err.contains("not-it"), "{err}");

    e.deps
        .params
        .put_secure(
            &format!("{p}/redis-target-url"),
            &bed_var("FERRY_BED_REDIS_TARGET_URL"),
        )
        .await
        .expect("param");
    // A key the queue patterns name that is not a queue blocks, named; this test's own
    // patterns keep it apart from the others sharing database 0.
    let queue_key = format!("{}:queue:oops", e.id);
    let mut src = ferry_kv::Conn::connect(&ferry_kv::RedisUrl::parse(&source).expect("url"))
        .await
        .expect("source");
    src.call(ferry_kv::cmd!["SET", &queue_key, "x"])
        .await
        .expect("set");
    let err = preflight::run(&e.deps, input())
        .await
        .expect_err("a string named as a queue blocks")
        .to_string();
    assert!(
        err.contains(&format!(
            "`{queue_key}` is a string but matches redis.queue_patterns"
        )),
        "{err}"
    );
    src.call(ferry_kv::cmd!["DEL", &queue_key])
        .await
        .expect("del");
    preflight::run(&e.deps, input())
        .await
        .expect("both servers answer and nothing blocks");

    let heroku = ferry_heroku::HerokuClient::new(&e.deps.settings.heroku_api_url, heroku().1)
        .expect("heroku");
    let app = e.spec_json["heroku"]["app"]
        .as_str()
        .expect("app")
        .to_string();
    heroku
        .update_config_vars(
            &app,
            &[("REDIS_URL".to_string(), Some(source.clone()))].into(),
        )
        .await
        .expect("REDIS_URL on Heroku");
    let cfg = config_sync::run(&e.deps, mref(&e.id))
        .await
        .expect("config");
    let skipped = cfg
        .skipped
        .iter()
        .find(|s| s.name == "REDIS_URL")
        .unwrap_or_else(|| panic!("REDIS_URL not skipped: {cfg:?}"));
    assert!(skipped.reason.contains("redis section"), "{skipped:?}");
    assert!(
        e.deps
            .params
            .get(&format!("{p}/config/REDIS_URL"))
            .await
            .is_err(),
        "REDIS_URL was copied"
    );
}

/// With a `redis` section the worker syncs Redis beside the database: the copy, then live
/// changes, disposable keys left behind, progress in the `redis` fact.
#[tokio::test]
async fn the_worker_syncs_redis_beside_the_database_and_records_its_progress() {
    use ferry_kv::{Conn, RedisUrl, cmd, resp::Value, verify};
    let mut e = env("wredis_", None).await;
    let p = format!("/{}", e.id);
    for (name, var) in [
        ("redis-source-url", "FERRY_BED_REDIS_SOURCE_URL"),
        ("redis-target-url", "FERRY_BED_REDIS_TARGET_URL"),
    ] {
        e.deps
            .params
            .put_secure(&format!("{p}/{name}"), &bed_var(var))
            .await
            .expect("param");
    }
    // Database 7 of the bed's Redis servers is this test's.
    e.spec_json["redis"] = serde_json::json!({
        "source_url_param": format!("{p}/redis-source-url"),
        "target_url_param": format!("{p}/redis-target-url"),
        "databases": [7],
        "disposable_patterns": ["cache:*"],
    });
    // Redis moves through the endpoint's proxy: proxy mode, the endpoint running.
    let _endpoint = redis_endpoint(&mut e).await;
    let url = |var: &str| RedisUrl::parse(&bed_var(var)).expect("url").with_db(7);
    let (src_url, tgt_url) = (
        url("FERRY_BED_REDIS_SOURCE_URL"),
        url("FERRY_BED_REDIS_TARGET_URL"),
    );
    let mut source = Conn::connect(&src_url).await.expect("source");
    let mut target = Conn::connect(&tgt_url).await.expect("target");
    target.call(cmd!["FLUSHDB"]).await.expect("flush");
    source
        .pipeline(vec![
            cmd!["FLUSHDB"],
            cmd!["SET", "session:1", "user=1", "EX", "600"],
            cmd!["RPUSH", "queue:default", "job-1"],
            cmd!["SET", "cache:home", "<html>"],
        ])
        .await
        .expect("source data");

    let (_, _, mut worker) = streaming(&e).await;
    let fact = |store: Arc<ferry_aws::DynamoStore>, id: String| async move {
        store
            .fact(&id, ferry_core::state::REDIS_FACT)
            .await
            .expect("fact")
            .map(|v| serde_json::from_value::<ferry_core::state::RedisSync>(v).expect("redis fact"))
    };
    wait_for("the Redis copy", 60, || {
        let (store, id) = (e.store.clone(), e.id.clone());
        async move {
            fact(store, id)
                .await
                .is_some_and(|f| f.databases[0].full_passes >= 1)
        }
    })
    .await;
    source
        .pipeline(vec![
            cmd!["SET", "session:2", "user=2", "EX", "600"],
            cmd!["LPUSH", "queue:default", "job-2"],
            cmd!["DEL", "session:1"],
            cmd!["SET", "cache:about", "<html>"],
        ])
        .await
        .expect("live writes");
    wait_for("the live writes", 60, || {
        let (store, id) = (e.store.clone(), e.id.clone());
        async move {
            fact(store, id)
                .await
                .is_some_and(|f| f.databases[0].applied >= 1 && f.databases[0].deleted >= 1)
        }
    })
    .await;
    let report = verify::compare_db(
        &mut source,
        &mut target,
        None,
        &["cache:*".to_string(), "queue:*".to_string()],
        100,
        10,
    )
    .await
    .expect("compare");
    assert!(report.equal(), "{report:?}");
    // The cache stays behind, and so does the queue: its jobs move by hand-over at the
    // switch, never as a copied key.
    assert_eq!(
        target
            .call(cmd![
                "EXISTS",
                "cache:home",
                "cache:about",
                "session:1",
                "queue:default"
            ])
            .await
            .expect("exists"),
        Value::Int(0)
    );
    let f = fact(e.store.clone(), e.id.clone()).await.expect("fact");
    assert_eq!((f.databases[0].db, f.databases[0].copied), (7, 1), "{f:?}");
    assert!(f.databases[0].error.is_none(), "{f:?}");

    // Verify compares Redis too: equal now; a key the sync never hears of (written on the
    // target behind its back) fails it, named with its database.
    let settle = Some(Duration::from_millis(300));
    let out = ferry_steps::verify::run(&e.deps, mref(&e.id), settle)
        .await
        .expect("verify");
    assert_eq!(out.redis.len(), 1, "{out:?}");
    assert_eq!((out.redis[0].db, out.redis[0].compared), (7, 1), "{out:?}");
    target
        .call(cmd!["SET", "session:2", "tampered"])
        .await
        .expect("tamper");
    let err = ferry_steps::verify::run(&e.deps, mref(&e.id), settle)
        .await
        .expect_err("a tampered key fails Verify")
        .to_string();
    assert!(
        err.contains("redis db 7 (1 key(s) still differ after 5 rechecks: session:2)"),
        "{err}"
    );

    // The worker killed during the live sync, Redis written while none runs, the next worker
    // killed during its copy: the one after converges (its full pass copies what changed and
    // deletes what the source no longer has, the tampered key included).
    let _ = worker.kill();
    let _ = worker.wait();
    let mut bulk: Vec<Vec<Vec<u8>>> = (0..20_000)
        .map(|i| cmd!["SET", format!("bulk:{i}"), format!("value-{i}")])
        .collect();
    bulk.push(cmd!["DEL", "session:2"]);
    bulk.push(cmd!["HSET", "user:1", "name", "ada"]);
    source
        .pipeline(bulk)
        .await
        .expect("writes while no worker runs");
    let mut second = spawn_worker(&e.id, e.store.table());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = second.kill();
    let _ = second.wait();
    let mut third = spawn_worker(&e.id, e.store.table());
    let skip = ["cache:*".to_string(), "queue:*".to_string()];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let report = verify::compare_db(&mut source, &mut target, None, &skip, 500, 10)
            .await
            .expect("compare");
        if report.equal() {
            break;
        }
        assert!(Instant::now() < deadline, "never converged: {report:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = third.kill();
    let _ = third.wait();
}

/// The bed stops a function at its timeout as Lambda does (`Sandbox.Timedout`, whatever the
/// function was doing), here the Verify step waiting for a job no worker takes: with the
/// state machine's lowered timeout (3 s) the task fails at it; with the template's (900 s)
/// the same invocation ends on its own, 10 s in, naming the missing worker.
#[tokio::test]
async fn the_bed_stops_a_function_at_its_timeout_as_lambda_does() {
    let e = env("lto_", None).await;
    let aws = ferry_aws::sdk_config().await;
    // The functions run as the template's roles: they read parameters under its prefix.
    let mut spec_json = e.spec_json.clone();
    for side in ["source", "target"] {
        let old = spec_json[side]["database_url_param"]
            .as_str()
            .expect("param")
            .to_string();
        let new = format!("/ferry/rehearsal/{}/{side}-url", e.id);
        let value = e.deps.params.get(&old).await.expect("read param");
        e.deps.params.put_secure(&new, &value).await.expect("param");
        spec_json[side]["database_url_param"] = new.into();
    }
    let spec: ferry_core::MigrationSpec = serde_json::from_value(spec_json).expect("spec");
    // The functions read the bed's state table (made here if no test made it before).
    ferry_tests::rehearsal::ensure_shared(&aws).await;
    let store = ferry_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        bed_var("FERRY_BED_STATE_TABLE"),
    );
    store
        .create_migration(&ferry_core::state::MigrationRecord::new(
            spec,
            chrono::Utc::now(),
        ))
        .await
        .expect("record");
    walk(
        &store,
        &e.id,
        &[Phase::Preflight, Phase::ConfigSync, Phase::Replicating],
    )
    .await;
    let sfn = aws_sdk_sfn::Client::new(&aws);
    let definition = serde_json::json!({
        "StartAt": "Verify",
        "States": {"Verify": {
            "Type": "Task",
            "Resource": ferry_tests::rehearsal::function_arn("ferry-verify"),
            "Parameters": {"migration_id": e.id, "wait_seconds": 60},
            "End": true
        }}
    })
    .to_string();
    let run = |lowered: Option<u32>| {
        let (sfn, definition) = (sfn.clone(), definition.clone());
        async move {
            let mut create = sfn
                .create_state_machine()
                .name(unique("ferry-lto-"))
                .definition(definition)
                .role_arn("arn:aws:iam::123456789012:role/ferry-test");
            if let Some(s) = lowered {
                create = create.tags(
                    aws_sdk_sfn::types::Tag::builder()
                        .key("ferry-bed:lambda-timeout:ferry-verify")
                        .value(s.to_string())
                        .build(),
                );
            }
            let arn = create
                .send()
                .await
                .expect("machine")
                .state_machine_arn()
                .to_string();
            let exec = sfn
                .start_execution()
                .state_machine_arn(&arn)
                .input("{}")
                .send()
                .await
                .expect("start");
            wait_for("the execution to end", 120, || async {
                sfn.describe_execution()
                    .execution_arn(exec.execution_arn())
                    .send()
                    .await
                    .expect("describe")
                    .status()
                    != &ExecutionStatus::Running
            })
            .await;
            sfn.describe_execution()
                .execution_arn(exec.execution_arn())
                .send()
                .await
                .expect("describe")
        }
    };
    let timed_out = run(Some(3)).await;
    assert_eq!(timed_out.status(), &ExecutionStatus::Failed);
    assert_eq!(timed_out.error(), Some("Sandbox.Timedout"), "{timed_out:?}");
    assert!(
        timed_out
            .cause()
            .unwrap_or_default()
            .contains("Task timed out after 3.00 seconds"),
        "{timed_out:?}"
    );
    let own = run(None).await;
    assert_eq!(own.status(), &ExecutionStatus::Failed);
    assert_eq!(own.error(), Some("Ferry.Failed.Input"), "{own:?}");
    assert!(
        own.cause()
            .unwrap_or_default()
            .contains("no replication worker runs"),
        "{own:?}"
    );
}
