//! `ferry plan` against the fake Heroku Platform API and a real source database: the
//! inventory, the mapping (add-ons without an AWS equivalent reported, not dropped), the
//! prices, the preflight blockers, and a migration.json that validates once filled in.

use std::collections::BTreeSet;

use ferry_plan::Prices;
use ferry_tests::{TestDb, destination::ferry_plan, unique};
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-config-value-7781";
const UNREACHABLE_PASSWORD: &str = "unreachable-pw-5521";

async fn create_app(body: Value) {
    ferry_tests::create_heroku_app(body).await;
}

/// `ferry plan <app>` into a fresh directory (it must succeed): its plan.json.
fn planned(app: &str) -> Value {
    let out_dir = std::env::temp_dir().join(unique("ferry-plan-"));
    let (ok, out) = ferry_plan(&[app, "--out", &out_dir.to_string_lossy()], &[]);
    assert!(ok, "{out}");
    serde_json::from_str(&std::fs::read_to_string(out_dir.join("plan.json")).expect("plan.json"))
        .expect("plan.json is JSON")
}

fn mapping<'a>(plan: &'a Value, needle: &str) -> &'a Value {
    plan["mappings"]
        .as_array()
        .expect("mappings")
        .iter()
        .find(|m| m["heroku"].as_str().is_some_and(|h| h.contains(needle)))
        .unwrap_or_else(|| panic!("no mapping for {needle}: {plan:#}"))
}

fn codes(plan: &Value, list: &str) -> BTreeSet<String> {
    plan[list]
        .as_array()
        .expect(list)
        .iter()
        .map(|i| i["code"].as_str().expect("code").to_string())
        .collect()
}

/// The plan's warning with `code`.
fn warning<'a>(plan: &'a Value, code: &str) -> &'a Value {
    plan["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["code"] == code)
        .unwrap_or_else(|| panic!("no {code} warning in {plan:#}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.01
}

#[tokio::test]
async fn a_plan_maps_every_part_prices_both_sides_and_starts_a_valid_spec() {
    let db = TestDb::heroku_like("plan_").await;
    let url = db.source_app_url();
    let client = url.connect().await.expect("connect as the app");
    client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pgcrypto;
             CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL);
             CREATE TABLE audit_events (at timestamptz, what text);
             INSERT INTO accounts (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 500) g;
             SELECT lo_create(0);",
        )
        .await
        .map_err(|e| ferry_pg::describe(&e))
        .expect("load the app's schema");

    let app = unique("p-");
    create_app(json!({
        "name": app,
        "database_url": url.expose_secret(),
        "postgres_plan": "heroku-postgresql:standard-2",
        "postgres_cents": 20000,
        "config_vars": {"SECRET_KEY_BASE": SECRET, "RAILS_ENV": "production", "HEROKU_SLUG_COMMIT": "abc"},
        "domains": [format!("{app}.example.com")],
        "formation": [
            {"type": "web", "quantity": 2, "size": "standard-2X", "command": "bundle exec puma"},
            {"type": "worker", "quantity": 1, "size": "performance-m", "command": "bundle exec sidekiq"},
            {"type": "clock", "quantity": 1, "size": "standard-1X", "command": "bundle exec clockwork"},
        ],
        "addons": [
            {"service": "heroku-redis", "plan": "heroku-redis:premium-0", "as": "REDIS", "cents": 1500},
            {"service": "papertrail", "plan": "papertrail:choklad", "as": "PAPERTRAIL", "cents": 700},
            {"service": "newrelic", "plan": "newrelic:wayne", "as": "NEW_RELIC", "cents": 0},
            {"service": "heroku-connect", "plan": "heroku-connect:enterprise", "as": "HEROKUCONNECT", "cents": 250000},
            {"service": "scheduler", "plan": "scheduler:standard", "cents": 0},
        ],
    }))
    .await;

    let dir = std::env::temp_dir().join(unique("ferry-plan-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let procfile = dir.join("Procfile");
    std::fs::write(
        &procfile,
        "web: bundle exec puma\nworker: bundle exec sidekiq\nrelease: bundle exec rails db:migrate\nreports: bundle exec rake reports\n",
    )
    .expect("write Procfile");
    let out_dir = dir.join("out");
    let (ok, out) = ferry_plan(
        &[
            &app,
            "--procfile",
            &procfile.to_string_lossy(),
            "--out",
            &out_dir.to_string_lossy(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    let plan: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("plan.json")).expect("plan.json written"),
    )
    .expect("plan.json is JSON");
    let markdown = std::fs::read_to_string(out_dir.join("plan.md")).expect("plan.md written");

    // Nothing is dropped: every add-on has a mapping row.
    let addons = plan["inventory"]["addons"].as_array().expect("add-ons");
    assert_eq!(addons.len(), 6, "{plan:#}");
    for a in addons {
        let name = a["name"].as_str().expect("name");
        mapping(&plan, name);
        assert!(markdown.contains(name), "plan.md names {name}");
    }
    // The add-on with no AWS equivalent is reported as such, with its Heroku price counted.
    let connect = mapping(&plan, "heroku-connect:enterprise");
    assert_eq!(connect["equivalence"], "none");
    assert_eq!(connect["heroku_monthly"], json!(2500.0));
    assert!(connect["aws_monthly"].is_null());
    assert!(
        markdown.contains("Add-ons without a direct AWS equivalent")
            && markdown.contains("heroku-connect"),
        "{markdown}"
    );
    assert_eq!(
        mapping(&plan, "newrelic:wayne")["equivalence"],
        "keep_vendor"
    );
    assert!(
        mapping(&plan, "papertrail:choklad")["aws"]
            .as_str()
            .expect("aws")
            .contains("CloudWatch Logs")
    );
    assert!(
        mapping(&plan, "scheduler:standard")["aws"]
            .as_str()
            .expect("aws")
            .contains("EventBridge Scheduler")
    );

    // Prices, recomputed here from the built-in table.
    let prices = Prices::built_in();
    let rate = &prices.aws.fargate["x86_64"];
    let task = |size: &str| {
        let t = prices.aws.dyno_to_fargate[size];
        (t.vcpu * rate.vcpu_hour + t.memory_gb * rate.gb_hour) * prices.hours_per_month
    };
    let web = mapping(&plan, "web: 2 × standard-2X");
    assert!(
        close(
            web["aws_monthly"].as_f64().expect("priced"),
            2.0 * task("standard-2X")
        ),
        "{web}"
    );
    assert!(
        close(web["heroku_monthly"].as_f64().expect("priced"), 100.0),
        "{web}"
    );
    let worker = mapping(&plan, "worker: 1 × performance-m");
    assert!(close(
        worker["aws_monthly"].as_f64().expect("priced"),
        task("performance-m")
    ));
    let redis = mapping(&plan, "heroku-redis:premium-0");
    assert!(
        redis["aws"]
            .as_str()
            .expect("aws")
            .contains("cache.t4g.micro"),
        "{redis}"
    );
    assert_eq!(redis["heroku_monthly"], json!(15.0), "billed price wins");
    // Heroku Postgres standard-2 has 8 GB: the cheapest non-burstable class with 8 GB.
    let database = mapping(&plan, "Heroku Postgres standard-2");
    assert!(
        database["aws"]
            .as_str()
            .expect("aws")
            .contains("db.m7g.large"),
        "{database}"
    );
    let expected_db = prices.month(prices.aws.rds_postgres["db.m7g.large"].hourly)
        + 20.0 * prices.aws.rds_storage_gp3_gb_month;
    assert!(
        close(
            database["aws_monthly"].as_f64().expect("priced"),
            expected_db
        ),
        "{database}"
    );
    // Totals add up the rows; the unpriced rows are listed instead.
    let rows = plan["mappings"].as_array().expect("rows");
    let sum = |side: &str| rows.iter().filter_map(|m| m[side].as_f64()).sum::<f64>();
    assert!(close(
        plan["totals"]["aws_monthly"].as_f64().expect("total"),
        sum("aws_monthly")
    ));
    assert!(close(
        plan["totals"]["heroku_monthly"].as_f64().expect("total"),
        sum("heroku_monthly")
    ));
    assert!(
        plan["totals"]["aws_not_priced"]
            .to_string()
            .contains("heroku-connect"),
        "{}",
        plan["totals"]
    );
    assert!(
        plan["prices"]["as_of"]
            .as_str()
            .is_some_and(|d| d.len() == 10)
    );

    // Process types from the formation and the Procfile.
    let procs = plan["inventory"]["processes"]
        .as_array()
        .expect("processes");
    let reports = procs
        .iter()
        .find(|p| p["process_type"] == "reports")
        .expect("Procfile-only type kept");
    assert_eq!(reports["quantity"], 0);
    assert!(procs.iter().any(|p| p["process_type"] == "release"));

    // Blockers and warnings from the real database and the app.
    let blockers = codes(&plan, "blockers");
    assert!(
        blockers.contains("no_primary_key") && blockers.contains("large_objects"),
        "{blockers:?}"
    );
    assert!(plan["blockers"].to_string().contains("audit_events"));
    let warnings = codes(&plan, "warnings");
    assert!(
        warnings.contains("not_in_procfile"),
        "clock is not in the Procfile: {warnings:?}"
    );
    let db_info = &plan["inventory"]["database"];
    assert!(
        db_info["preflight"]["extensions"]
            .to_string()
            .contains("pgcrypto"),
        "{db_info}"
    );
    assert!(
        db_info["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&ferry_tests::Side::Source.major().to_string()))
    );

    // Config vars: names only; no value of a var or of the database password anywhere.
    let names = plan["inventory"]["config_vars"].to_string();
    assert!(names.contains("SECRET_KEY_BASE") && names.contains("DATABASE_URL"));
    let password = url
        .expose_secret()
        .split(':')
        .nth(2)
        .and_then(|s| s.split('@').next())
        .expect("password in URL");
    for (file, text) in [
        ("plan.json", plan.to_string()),
        ("plan.md", markdown.clone()),
        ("stdout", out.clone()),
    ] {
        assert!(!text.contains(SECRET), "{file} holds a config value");
        assert!(
            !text.contains(password),
            "{file} holds the database password"
        );
    }

    // migration.json: refused exactly at the fields to fill in, valid once they are.
    let spec_text =
        std::fs::read_to_string(out_dir.join("migration.json")).expect("migration.json");
    let mut spec: Value = serde_json::from_str(&spec_text).expect("JSON");
    let problems = ferry_core::spec::parse(&spec_text).expect_err("placeholders refused");
    let refused: BTreeSet<String> = problems.iter().map(|p| p.path.clone()).collect();
    let fill: BTreeSet<String> = plan["fill_in"]
        .as_array()
        .expect("fill_in")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect();
    assert_eq!(refused, fill, "{problems}");
    assert_eq!(
        spec["replication"]["capture"], "trigger",
        "stock Heroku role: no REPLICATION"
    );
    assert_eq!(spec["cutover"]["scale_down"], json!(["clock", "worker"]));
    // The fleet goes through the endpoint; the plan says what transaction pooling needs.
    assert_eq!(spec["cutover"]["endpoint"], "proxy");
    // The Redis add-on moves with the database: its section is written, with Sidekiq's queues.
    assert_eq!(
        spec["redis"]["source_url_param"],
        json!(format!("/ferry/{app}/redis-source-url"))
    );
    assert_eq!(
        spec["redis"]["queue_patterns"],
        json!(["queue:*", "schedule", "retry", "dead"])
    );
    assert!(
        warning(&plan, "redis_moves")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("notify-keyspace-events KEA")),
        "{plan}"
    );
    assert_eq!(
        spec["endpoint"]["url_param"],
        json!(format!("/ferry/{app}/endpoint-url"))
    );
    let pooling = warning(&plan, "transaction_pooling");
    assert!(
        pooling["fix"]
            .as_str()
            .is_some_and(|f| f.contains("advisory_locks: false")
                && f.contains("DISABLE_SERVER_SIDE_CURSORS")),
        "{pooling}"
    );
    assert_eq!(
        spec["traffic"]["record_name"],
        json!(format!("{app}.example.com"))
    );
    spec["traffic"]["hosted_zone_id"] = json!("Z0123456789ABCDEFGHIJ");
    spec["traffic"]["aws_target"] = json!("acme-alb-1.us-east-1.elb.amazonaws.com");
    spec["traffic"]["health"]["url"] = json!("https://aws.acme.example/healthz");
    spec["approvals"]["sns_topic_arn"] =
        json!("arn:aws:sns:us-east-1:123456789012:ferry-approvals");
    spec["approvals"]["approvers"] = json!(["ops@acme.example"]);
    let filled = ferry_core::spec::parse(&spec.to_string());
    assert!(filled.is_ok(), "{:?}", filled.err().map(|p| p.to_string()));
}

#[tokio::test]
async fn a_plan_without_a_readable_database_still_reports_the_rest() {
    let app = unique("p-");
    create_app(json!({
        "name": app,
        // Nothing listens there.
        "database_url": format!("postgres://app:{UNREACHABLE_PASSWORD}@127.0.0.1:9/app?sslmode=require"),
        "postgres_plan": "heroku-postgresql:premium-0",
        "formation": [{"type": "web", "quantity": 1, "size": "private-m", "command": "node server.js"}],
        // Heroku's connection pooling attached (PgBouncer in transaction mode).
        "config_vars": {"DATABASE_CONNECTION_POOL_URL": format!("postgres://app:{UNREACHABLE_PASSWORD}@127.0.0.1:9/pool?sslmode=require")},
    }))
    .await;
    let out_dir = std::env::temp_dir().join(unique("ferry-plan-"));
    let (ok, out) = ferry_plan(&[&app, "--out", &out_dir.to_string_lossy()], &[]);
    assert!(ok, "{out}");
    let plan: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("plan.json")).expect("plan.json"),
    )
    .expect("JSON");
    assert!(
        codes(&plan, "warnings").contains("database_unreadable"),
        "{plan:#}"
    );
    // An app on Heroku's connection pooling is known to work through the endpoint.
    let pooling = warning(&plan, "transaction_pooling");
    assert!(
        pooling["message"]
            .as_str()
            .is_some_and(|m| m.contains("already uses Heroku's connection pooling")),
        "{pooling}"
    );
    // The connection error is in the plan, its password is not.
    assert!(
        plan["inventory"]["database_unavailable"]
            .as_str()
            .is_some_and(|r| r.contains("127.0.0.1")),
        "{plan:#}"
    );
    for text in [plan.to_string(), out.clone()] {
        assert!(
            !text.contains(UNREACHABLE_PASSWORD),
            "the password leaked: {text}"
        );
    }
    assert!(codes(&plan, "warnings").contains("dyno_size_unpriced"));
    assert!(codes(&plan, "blockers").contains("no_custom_domain"));
    // premium has a standby: Multi-AZ, sized to the plan's storage limit.
    let database = mapping(&plan, "Heroku Postgres premium-0");
    assert!(
        database["aws"].as_str().expect("aws").contains("Multi-AZ"),
        "{database}"
    );
    assert_eq!(plan["migration"]["replication"]["capture"], "auto");
    assert!(
        plan["totals"]["aws_not_priced"]
            .to_string()
            .contains("private-m")
    );

    // A token Heroku refuses ends the command with the reason.
    let (ok, out) = ferry_plan(&[&app], &[("HEROKU_API_KEY", "wrong")]);
    assert!(!ok);
    assert!(out.contains("Heroku refused the API token"), "{out}");
    // A price table that does not parse names itself and the field.
    let bad = out_dir.join("prices.json");
    std::fs::write(&bad, r#"{"aws": {"alb_monthly": "free"}}"#).expect("write");
    let (ok, out) = ferry_plan(&[&app, "--prices", &bad.to_string_lossy()], &[]);
    assert!(!ok);
    assert!(
        out.contains("prices.json") && out.contains("aws.alb_monthly"),
        "{out}"
    );
}

/// Heroku's autoscaling is read only where Heroku offers it (web on Performance and Private
/// dynos): a token the Metrics API refuses costs a warning for a Performance web, and nothing
/// for a Standard one, which cannot autoscale.
#[tokio::test]
async fn autoscaling_is_asked_only_of_dynos_that_can_autoscale() {
    let plan_of = |size: &'static str| async move {
        let app = unique("pa-");
        create_app(json!({
            "name": app,
            "formation": [{"type": "web", "quantity": 2, "size": size, "command": "node server.js"}],
            "metrics_forbidden": true,
        }))
        .await;
        planned(&app)
    };
    let performance = plan_of("performance-m").await;
    let w = warning(&performance, "autoscaling_unreadable");
    assert!(
        w["message"]
            .as_str()
            .is_some_and(|m| m.contains("403") || m.contains("metrics")),
        "{w}"
    );
    let standard = plan_of("standard-2X").await;
    assert!(
        !codes(&standard, "warnings").contains("autoscaling_unreadable"),
        "a Standard web is not asked about autoscaling: {standard:#}"
    );
}
