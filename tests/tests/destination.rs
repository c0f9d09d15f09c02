//! `ferry plan` writes `destination.yaml`, the app's AWS side as a CloudFormation template:
//! from three Heroku app shapes in the fake Platform API (a Rails app with Sidekiq, a clock,
//! Scheduler and Redis; a Django app with Celery on a plan with a standby; a Node app with
//! only `web`), the expected resources, sizes, counts and wiring; every template passes
//! cfn-lint and checkov, and a broken one is refused (so the checks can fail).

use std::{path::PathBuf, process::Command};

use ferry_tests::{TestDb, heroku, unique, workspace_bin};
use serde_json::{Value, json};

fn cache() -> PathBuf {
    PathBuf::from(std::env::var("FERRY_CACHE").unwrap_or_else(|_| "/var/cache/ferry".into()))
}

async fn create_app(body: Value) {
    ferry_tests::create_heroku_app(body).await;
}

/// Runs `ferry plan` for `app` (with `procfile`) and returns destination.yaml's path and the
/// template read back as JSON by PyYAML (what cfn-lint reads it with).
fn plan(app: &str, procfile: &str, jobs: Option<Value>) -> (PathBuf, Value) {
    let (base, token) = heroku();
    let dir = std::env::temp_dir().join(unique("ferry-destination-"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("Procfile"), procfile).expect("Procfile");
    let mut cmd = Command::new(workspace_bin("ferry"));
    cmd.args(["plan", app, "--procfile"])
        .arg(dir.join("Procfile"))
        .arg("--out")
        .arg(dir.join("out"));
    if let Some(jobs) = jobs {
        std::fs::write(dir.join("jobs.json"), jobs.to_string()).expect("jobs");
        cmd.arg("--scheduler").arg(dir.join("jobs.json"));
    }
    let out = cmd
        .env("HEROKU_API_URL", base)
        .env("HEROKU_API_KEY", token)
        .env_remove("FERRY_PLAN_DATABASE_URL")
        .output()
        .expect("run ferry plan");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("out").join("destination.yaml");
    let read = Command::new(cache().join("venv/bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .expect("python");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let doc = serde_json::from_slice(&read.stdout).expect("the template is YAML");
    (path, doc)
}

/// cfn-lint and checkov pass on the template; cfn-lint refuses it with a launch type Fargate
/// does not have.
fn lint(path: &PathBuf) {
    let run = |tool: &str, args: &[&str], file: &PathBuf| {
        Command::new(cache().join(tool))
            .args(args)
            .arg(file)
            .output()
            .expect(tool)
    };
    let out = run("venv/bin/cfn-lint", &[], path);
    assert!(
        out.status.success(),
        "cfn-lint: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(
        "checkov-venv/bin/checkov",
        &[
            "--quiet",
            "--compact",
            "--framework",
            "cloudformation",
            "-f",
        ],
        path,
    );
    assert!(
        out.status.success(),
        "checkov: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let broken = path.with_file_name("broken.yaml");
    let text = std::fs::read_to_string(path).expect("template");
    std::fs::write(&broken, text.replace("\"FARGATE\"", "\"FARGATE_X\"")).expect("broken");
    let out = run("venv/bin/cfn-lint", &[], &broken);
    assert!(!out.status.success(), "cfn-lint accepted a broken template");
}

fn resource<'a>(doc: &'a Value, id: &str) -> &'a Value {
    let r = &doc["Resources"][id];
    assert!(
        r.is_object(),
        "no resource {id}: {:?}",
        doc["Resources"]
            .as_object()
            .map(|m| m.keys().collect::<Vec<_>>())
    );
    &r["Properties"]
}

fn count_if_image(service: &Value) -> &Value {
    &service["DesiredCount"]["Fn::If"][1]
}

#[tokio::test]
async fn a_rails_app_with_sidekiq_clock_and_redis_becomes_a_stack() {
    let db = TestDb::heroku_like("dest_").await;
    let app = unique("r-");
    create_app(json!({
        "name": app,
        "database_url": db.source_app_url().expose_secret(),
        "postgres_plan": "heroku-postgresql:standard-2",
        "config_vars": {"SECRET_KEY_BASE": "x", "RAILS_ENV": "production", "HEROKU_SLUG_COMMIT": "abc"},
        "domains": [format!("{app}.example.com")],
        "formation": [
            {"type": "web", "quantity": 3, "size": "standard-2X", "command": "bundle exec puma"},
            {"type": "worker", "quantity": 2, "size": "performance-m", "command": "bundle exec sidekiq"},
            {"type": "clock", "quantity": 1, "size": "standard-1X", "command": "bundle exec clockwork"},
        ],
        "addons": [
            {"service": "heroku-redis", "plan": "heroku-redis:premium-0", "as": "REDIS", "cents": 1500},
            {"service": "scheduler", "plan": "scheduler:standard", "cents": 0},
        ],
    }))
    .await;
    let (path, doc) = plan(
        &app,
        "web: bundle exec puma\nworker: bundle exec sidekiq\nclock: bundle exec clockwork\nrelease: bundle exec rails db:migrate\n",
        Some(json!({"jobs": [
            {"command": "bundle exec rake sessions:trim", "every": "10m"},
            {"command": "bundle exec rake reports:daily", "every": "1d", "at": "02:30", "size": "performance-m"},
        ]})),
    );
    // Scheduler's jobs: disabled until the cutover (Heroku still runs them), UTC.
    let daily = resource(&doc, "Job1Schedule");
    assert_eq!(daily["ScheduleExpression"], "cron(30 2 * * ? *)");
    assert_eq!(daily["ScheduleExpressionTimezone"], "UTC");
    assert_eq!(daily["State"]["Fn::If"][2], "DISABLED");
    assert_eq!(doc["Parameters"]["SchedulesEnabled"]["Default"], "false");
    assert_eq!(
        resource(&doc, "Job0Schedule")["ScheduleExpression"],
        "rate(10 minutes)"
    );
    let job = resource(&doc, "Job1Task");
    assert_eq!(job["Memory"], "3072");
    assert_eq!(
        job["ContainerDefinitions"][0]["Command"],
        json!(["bundle exec rake reports:daily"])
    );
    // One service per process type, counts from the formation (none until an image exists).
    for (id, count) in [("WebService", 3), ("WorkerService", 2), ("ClockService", 1)] {
        assert_eq!(count_if_image(resource(&doc, id)), &json!(count), "{id}");
    }
    assert!(
        doc["Resources"]["ReleaseService"].is_null(),
        "release runs as a task, not a service"
    );
    assert_eq!(
        resource(&doc, "ReleaseTask")["ContainerDefinitions"][0]["EntryPoint"],
        json!(["/cnb/process/release"])
    );
    // Task sizes from the dyno sizes (standard-2X: 0.5 vCPU / 1 GB; performance-m: 1 / 3).
    let web = resource(&doc, "WebTask");
    assert_eq!(
        (web["Cpu"].as_str(), web["Memory"].as_str()),
        (Some("512"), Some("1024"))
    );
    let worker = resource(&doc, "WorkerTask");
    assert_eq!(
        (worker["Cpu"].as_str(), worker["Memory"].as_str()),
        (Some("1024"), Some("3072"))
    );
    // Preboot-like deploys; web behind the HTTPS listener.
    let svc = resource(&doc, "WebService");
    assert_eq!(svc["DeploymentConfiguration"]["MinimumHealthyPercent"], 100);
    assert_eq!(
        svc["DeploymentConfiguration"]["DeploymentCircuitBreaker"]["Rollback"],
        true
    );
    assert_eq!(
        svc["LoadBalancers"][0]["TargetGroupArn"],
        json!({"Ref": "WebTargetGroup"})
    );
    assert!(resource(&doc, "WorkerService")["LoadBalancers"].is_null());
    assert_eq!(
        doc["Parameters"]["DomainName"]["Default"],
        json!(format!("{app}.example.com"))
    );
    // Config vars as secrets from config sync's prefix: the app's, not Heroku's own.
    let secrets: Vec<&str> = web["ContainerDefinitions"][0]["Secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s["Name"].as_str().expect("name"))
        .collect();
    for name in ["DATABASE_URL", "SECRET_KEY_BASE", "RAILS_ENV"] {
        assert!(secrets.contains(&name), "{name} missing: {secrets:?}");
    }
    assert!(!secrets.contains(&"HEROKU_SLUG_COMMIT"), "{secrets:?}");
    // Data: RDS as the plan prices it, with a managed password; ElastiCache for Ferry's sync.
    let rds = resource(&doc, "Database");
    assert_eq!(rds["ManageMasterUserPassword"], true);
    assert_eq!(rds["DeletionProtection"], true);
    assert_eq!(rds["MultiAZ"], false);
    assert!(
        rds["DBInstanceClass"]
            .as_str()
            .is_some_and(|c| c.starts_with("db."))
    );
    let cache = resource(&doc, "CacheParameters");
    assert_eq!(cache["Properties"]["notify-keyspace-events"], "KEA");
    assert_eq!(cache["Properties"]["maxmemory-policy"], "noeviction");
    assert_eq!(resource(&doc, "Cache")["TransitEncryptionEnabled"], true);
    for output in [
        "DatabaseInstanceId",
        "DatabaseMasterSecretArn",
        "LoadBalancerDnsName",
        "HealthUrl",
        "HealthAlarmNames",
        "CacheEndpoint",
        "ImageRepositoryUri",
    ] {
        assert!(doc["Outputs"][output].is_object(), "no output {output}");
    }
    lint(&path);
    outputs_fill_the_spec(&path.with_file_name("migration.json"), &doc).await;
}

/// A stack with the template's outputs (values as AWS would give them) deployed in the
/// emulator: `ferry destination --stack` fills migration.json from it, and only the approvals
/// are left for a person.
async fn outputs_fill_the_spec(spec_path: &std::path::Path, doc: &Value) {
    let aws = ferry_tests::aws::config().await;
    let values = json!({
        "DatabaseInstanceId": "acme-db",
        "DatabaseMasterSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-0f3c-AbCdEf",
        "LoadBalancerDnsName": "acme-1234.us-east-1.elb.amazonaws.com",
        "HealthUrl": "https://app.acme.example/",
        "HealthAlarmNames": "acme-Web5xxAlarm,acme-WebUnhealthyAlarm",
        "HostedZoneId": "Z0123456789ABCDEFGHIJ",
    });
    let mut outputs = serde_json::Map::new();
    for (name, value) in values.as_object().expect("values") {
        assert!(
            doc["Outputs"][name].is_object(),
            "destination.yaml declares no {name}"
        );
        outputs.insert(name.clone(), json!({"Value": value}));
    }
    let stack = unique("dest-");
    aws_sdk_cloudformation::Client::new(&aws)
        .create_stack()
        .stack_name(&stack)
        .template_body(
            json!({
                "Resources": {"Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": format!("/{stack}/marker"), "Type": "String", "Value": "x"}}},
                "Outputs": outputs,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("create stack");
    // Ferry's own stack gives the approval topic.
    let ferry_stack = unique("ferry-");
    aws_sdk_cloudformation::Client::new(&aws)
        .create_stack()
        .stack_name(&ferry_stack)
        .template_body(
            json!({
                "Resources": {"Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": format!("/{ferry_stack}/marker"), "Type": "String", "Value": "x"}}},
                "Outputs": {"ApprovalTopicArn": {"Value": "arn:aws:sns:us-east-1:123456789012:ferry-approvals"}},
            })
            .to_string(),
        )
        .send()
        .await
        .expect("create Ferry's stack");
    let out = Command::new(workspace_bin("ferry"))
        .args(["destination"])
        .arg(spec_path)
        .args(["--stack", &stack, "--stack", &ferry_stack])
        .output()
        .expect("run ferry destination");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    let left: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().split_once(": ").map(|(p, _)| p))
        .filter(|p| p.contains('.') && !p.contains(' '))
        .collect();
    assert!(!left.is_empty(), "{text}");
    assert_eq!(
        left,
        ["approvals.approvers[0]"],
        "more than the approvers left: {text}"
    );
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(spec_path).expect("spec")).expect("json");
    assert_eq!(spec["target"]["rds_instance_id"], "acme-db");
    assert_eq!(
        spec["traffic"]["aws_target"],
        "acme-1234.us-east-1.elb.amazonaws.com"
    );
    assert_eq!(
        spec["traffic"]["health"]["alarm_names"],
        json!(["acme-Web5xxAlarm", "acme-WebUnhealthyAlarm"])
    );
}

#[tokio::test]
async fn a_django_app_with_celery_on_a_standby_plan_gets_multi_az() {
    let db = TestDb::heroku_like("destd_").await;
    let app = unique("d-");
    create_app(json!({
        "name": app,
        "database_url": db.source_app_url().expose_secret(),
        "postgres_plan": "heroku-postgresql:premium-0",
        "config_vars": {"DJANGO_SETTINGS_MODULE": "app.settings"},
        "formation": [
            {"type": "web", "quantity": 2, "size": "standard-1X", "command": "gunicorn app.wsgi"},
            {"type": "celery", "quantity": 1, "size": "standard-2X", "command": "celery -A app worker"},
        ],
        "addons": [],
    }))
    .await;
    let (path, doc) = plan(
        &app,
        "web: gunicorn app.wsgi\ncelery: celery -A app worker\n",
        None,
    );
    assert_eq!(resource(&doc, "Database")["MultiAZ"], true);
    assert_eq!(count_if_image(resource(&doc, "CeleryService")), &json!(1));
    assert!(
        doc["Resources"]["Cache"].is_null(),
        "no Key-Value Store, no ElastiCache"
    );
    assert!(
        doc["Parameters"]["DomainName"]["Default"].is_null(),
        "no custom domain to default to"
    );
    lint(&path);
}

#[tokio::test]
async fn a_node_app_with_only_web_and_no_database_gets_no_data_tier() {
    let app = unique("n-");
    create_app(json!({
        "name": app,
        "config_vars": {"NODE_ENV": "production"},
        "formation": [{"type": "web", "quantity": 1, "size": "basic", "command": "node server.js"}],
        "addons": [],
    }))
    .await;
    let (path, doc) = plan(&app, "web: node server.js\n", None);
    assert_eq!(count_if_image(resource(&doc, "WebService")), &json!(1));
    assert!(doc["Resources"]["Database"].is_null());
    assert!(doc["Resources"]["DatabaseSecurityGroup"].is_null());
    // No VPC given: a new one across two zones, its NAT address an output (for a Private
    // Space's trusted IPs); a VPC given instead is used as it is.
    assert_eq!(doc["Resources"]["Vpc"]["Condition"], "NewVpc");
    assert_eq!(
        doc["Conditions"]["NewVpc"],
        json!({"Fn::Equals": [{"Ref": "VpcId"}, ""]})
    );
    assert_eq!(
        resource(&doc, "LoadBalancer")["Subnets"]["Fn::If"],
        json!(["NewVpc", [{"Ref": "PublicSubnetA"}, {"Ref": "PublicSubnetB"}], {"Ref": "PublicSubnetIds"}])
    );
    assert!(doc["Outputs"]["NatPublicIp"].is_object());
    lint(&path);
}
