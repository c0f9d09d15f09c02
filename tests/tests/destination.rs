//! `ferry plan` writes `destination.yaml`, the app's AWS side as a CloudFormation template:
//! from three Heroku app shapes in the fake Platform API (a Rails app with Sidekiq, a clock,
//! Scheduler and Redis; a Django app with Celery on a plan with a standby; a Node app with
//! only `web`), the expected resources, sizes, counts and wiring; every template passes
//! cfn-lint and checkov, and a broken one is refused (so the checks can fail).

use std::{path::PathBuf, process::Command};

use ferry_tests::{TestDb, unique};
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
    let path =
        ferry_tests::destination::plan(app, procfile, jobs.as_ref()).join("destination.yaml");
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
    // The cost table prices what the stack makes beside services and data: the new VPC's NAT
    // gateway and its address, the two secrets (RDS master, Redis AUTH) and the two alarms.
    let plan: Value = serde_json::from_str(
        &std::fs::read_to_string(path.with_file_name("plan.json")).expect("plan.json"),
    )
    .expect("plan.json is JSON");
    let row = |category: &str| {
        plan["mappings"]
            .as_array()
            .expect("mappings")
            .iter()
            .find(|m| m["category"] == category)
            .unwrap_or_else(|| panic!("no {category} row"))
            .clone()
    };
    let prices = ferry_plan::prices::Prices::built_in();
    let network = row("network")["aws_monthly"].as_f64().expect("priced");
    let expected =
        (prices.aws.nat_gateway_hourly + prices.aws.public_ipv4_hourly) * prices.hours_per_month;
    assert!((network - expected).abs() < 0.01, "{network} vs {expected}");
    let ops = row("operations");
    assert!(
        ops["aws"]
            .as_str()
            .is_some_and(|a| a.contains("2 secret(s)") && a.contains("2 alarm(s)")),
        "{ops}"
    );
    let expected = 2.0 * prices.aws.secret_monthly + 2.0 * prices.aws.alarm_monthly;
    assert!(
        (ops["aws_monthly"].as_f64().expect("priced") - expected).abs() < 0.001,
        "{ops}"
    );
    assert_eq!(
        doc["Resources"]["NatGateway"]["Type"], "AWS::EC2::NatGateway",
        "the row's NAT gateway is the stack's"
    );
    lint(&path);
    outputs_fill_the_spec(&path, &path.with_file_name("migration.json")).await;
}

/// destination.yaml deployed in the emulator's CloudFormation (with the bed's stand-ins for
/// the types it cannot create): `ferry destination --stack` fills migration.json from its
/// outputs, only the approvers are left for a person, and what the spec names exists.
async fn outputs_fill_the_spec(template: &std::path::Path, spec_path: &std::path::Path) {
    let aws = ferry_tests::aws::config().await;
    let (zone, _) = ferry_tests::aws::hosted_zone(&aws).await;
    let stack = ferry_tests::destination::deploy(
        &aws,
        template,
        &unique("dest-"),
        &[("HostedZoneId", zone.trim_start_matches("/hostedzone/"))],
    )
    .await;
    for (kind, n) in [
        ("AWS::ECS::Service", 3),
        ("AWS::RDS::DBInstance", 1),
        ("AWS::ElastiCache::ReplicationGroup", 1),
        ("AWS::Scheduler::Schedule", 2),
        ("AWS::CloudWatch::Alarm", 2),
        ("AWS::EC2::NatGateway", 1),
    ] {
        assert_eq!(
            stack.resources.get(kind),
            Some(&n),
            "{kind}: {}",
            stack.summary()
        );
    }
    // No FerrySecurityGroupId given: the HasFerry ingress rules are not made, nor listed.
    assert_eq!(
        stack.resources.get("AWS::EC2::SecurityGroupIngress"),
        None,
        "{}",
        stack.summary()
    );
    assert!(!stack.resources.contains_key(""), "{}", stack.summary());
    // Ferry's own stack gives the approval topic.
    let ferry_stack = unique("ferry-");
    ferry_tests::destination::outputs_only_stack(
        &aws,
        &ferry_stack,
        &json!({"ApprovalTopicArn": "arn:aws:sns:us-east-1:123456789012:ferry-approvals"}),
    )
    .await;
    let (code, text) = ferry_tests::destination::fill_spec(spec_path, &[&stack.name, &ferry_stack]);
    assert_eq!(code, Some(3), "{text}");
    let left: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().split_once(": ").map(|(p, _)| p))
        .filter(|p| p.contains('.') && !p.contains(' '))
        .collect();
    assert_eq!(
        left,
        ["approvals.approvers[0]"],
        "more than the approvers left: {text}"
    );
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(spec_path).expect("spec")).expect("json");
    let db_id = stack.output("DatabaseInstanceId");
    assert_eq!(spec["target"]["rds_instance_id"], db_id);
    assert_eq!(
        spec["target"]["password_secret"],
        stack.output("DatabaseMasterSecretArn")
    );
    assert_eq!(
        spec["traffic"]["aws_target"],
        stack.output("LoadBalancerDnsName")
    );
    assert_eq!(
        spec["traffic"]["hosted_zone_id"].as_str(),
        Some(zone.trim_start_matches("/hostedzone/"))
    );
    // What the spec names exists as the template says.
    let db = aws_sdk_rds::Client::new(&aws)
        .describe_db_instances()
        .db_instance_identifier(db_id)
        .send()
        .await
        .expect("the stack's RDS instance");
    let db = &db.db_instances()[0];
    assert_eq!(db.db_instance_class(), Some("db.m7g.large"));
    assert_eq!(db.engine(), Some("postgres"));
    assert_eq!(
        db.master_user_secret().and_then(|s| s.secret_arn()),
        Some(stack.output("DatabaseMasterSecretArn"))
    );
    let alarms: Vec<String> = spec["traffic"]["health"]["alarm_names"]
        .as_array()
        .expect("alarm names")
        .iter()
        .map(|a| a.as_str().expect("name").to_string())
        .collect();
    let found = aws_sdk_cloudwatch::Client::new(&aws)
        .describe_alarms()
        .set_alarm_names(Some(alarms.clone()))
        .send()
        .await
        .expect("alarms");
    assert_eq!(found.metric_alarms().len(), 2, "{alarms:?}");
    for a in found.metric_alarms() {
        assert_eq!(a.namespace(), Some("AWS/ApplicationELB"));
        assert!(
            a.dimensions()
                .iter()
                .any(|d| d.name() == Some("LoadBalancer")
                    && d.value().is_some_and(|v| v.starts_with("app/"))),
            "{a:?}"
        );
    }
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
        // Heroku's dyno autoscaling on web (Performance dynos): 2 to 6, p95 800 ms.
        "autoscaling": {"web": {"min": 2, "max": 6, "p95_ms": 800}},
        "formation": [
            {"type": "web", "quantity": 2, "size": "performance-m", "command": "gunicorn app.wsgi"},
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
    // Heroku's autoscaling bounds on web's service, once an image runs; Celery has none.
    let scaling = resource(&doc, "WebScalableTarget");
    assert_eq!(
        (&scaling["MinCapacity"], &scaling["MaxCapacity"]),
        (&json!(2), &json!(6))
    );
    assert_eq!(
        doc["Resources"]["WebScalableTarget"]["Condition"],
        "HasImage"
    );
    assert_eq!(
        resource(&doc, "WebScalingPolicy")["ScalingTargetId"],
        json!({"Ref": "WebScalableTarget"})
    );
    assert!(doc["Resources"]["CeleryScalableTarget"].is_null());
    assert!(
        doc["Resources"]["Cache"].is_null(),
        "no Key-Value Store, no ElastiCache"
    );
    assert!(
        doc["Parameters"]["DomainName"]["Default"].is_null(),
        "no custom domain to default to"
    );
    lint(&path);
    // Deployed (a new VPC; the domain given, as there is no default): Multi-AZ as planned.
    let aws = ferry_tests::aws::config().await;
    let (zone, domain) = ferry_tests::aws::hosted_zone(&aws).await;
    let stack = ferry_tests::destination::deploy(
        &aws,
        &path,
        &unique("destd-"),
        &[
            ("HostedZoneId", zone.trim_start_matches("/hostedzone/")),
            ("DomainName", &format!("app.{domain}")),
            ("ImageTag", "abc123"),
        ],
    )
    .await;
    let targets = Command::new(ferry_tests::bed_var("FERRY_BED_AWS"))
        .args([
            "application-autoscaling",
            "describe-scalable-targets",
            "--service-namespace",
            "ecs",
        ])
        .args([
            "--query",
            &format!(
                "ScalableTargets[?contains(ResourceId, '{}')].[MinCapacity,MaxCapacity]",
                stack.output("WebServiceName")
            ),
        ])
        .args(["--output", "json"])
        .output()
        .expect("aws application-autoscaling");
    let targets: Value = serde_json::from_slice(&targets.stdout).expect("targets");
    assert_eq!(
        targets,
        json!([[2, 6]]),
        "web's scalable target as Heroku's bounds"
    );
    let db = aws_sdk_rds::Client::new(&aws)
        .describe_db_instances()
        .db_instance_identifier(stack.output("DatabaseInstanceId"))
        .send()
        .await
        .expect("the stack's RDS instance");
    assert_eq!(db.db_instances()[0].multi_az(), Some(true));
    assert_eq!(stack.resources.get("AWS::EC2::VPC"), Some(&1));
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
    assert!(
        doc["Resources"]["WebScalableTarget"].is_null(),
        "no autoscaling on Heroku, none on AWS"
    );
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
    // Deployed into the bed's VPC: nothing of the network is made, the given one is reported.
    let aws = ferry_tests::aws::config().await;
    let (zone, domain) = ferry_tests::aws::hosted_zone(&aws).await;
    let subnet = ferry_tests::bed_var("FERRY_BED_SUBNET");
    let vpc = Command::new(ferry_tests::bed_var("FERRY_BED_AWS"))
        .args(["ec2", "describe-subnets", "--subnet-ids", &subnet])
        .args(["--query", "Subnets[0].VpcId", "--output", "text"])
        .output()
        .expect("aws ec2 describe-subnets");
    let vpc = String::from_utf8_lossy(&vpc.stdout).trim().to_string();
    assert!(vpc.starts_with("vpc-"), "{vpc}");
    let stack = ferry_tests::destination::deploy(
        &aws,
        &path,
        &unique("destn-"),
        &[
            ("HostedZoneId", zone.trim_start_matches("/hostedzone/")),
            ("DomainName", &format!("app.{domain}")),
            ("VpcId", &vpc),
            ("PrivateSubnetIds", &subnet),
            ("PublicSubnetIds", &subnet),
        ],
    )
    .await;
    assert_eq!(
        stack.resources.get("AWS::EC2::VPC"),
        None,
        "{}",
        stack.summary()
    );
    assert_eq!(stack.resources.get("AWS::EC2::NatGateway"), None);
    assert_eq!(stack.output("VpcIdOut"), vpc);
    assert_eq!(stack.resources.get("AWS::RDS::DBInstance"), None);
}

/// What AWS refuses in a template, the bed's stand-ins refuse too (so a generated template that
/// deploys here is not one AWS would turn down for these reasons); the same resources written
/// as AWS accepts them deploy.
#[tokio::test]
async fn the_bed_refuses_the_stacks_aws_refuses() {
    let aws = ferry_tests::aws::config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&aws);
    let create = |resources: Value| {
        let cfn = cfn.clone();
        async move {
            cfn.create_stack()
                .stack_name(unique("strict-"))
                .template_body(json!({ "Resources": resources }).to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "{:?}",
                        aws_sdk_cloudformation::error::DisplayErrorContext(e)
                    )
                })
        }
    };
    let secret =
        |props: Value| json!({"S": {"Type": "AWS::SecretsManager::Secret", "Properties": props}});
    let generated =
        json!({"GenerateSecretString": {"PasswordLength": 32, "ExcludePunctuation": true}});
    create(secret(generated.clone()))
        .await
        .expect("a generated secret deploys");
    let mut both = generated.clone();
    both["SecretString"] = json!("x");
    let e = create(secret(both)).await.expect_err("both values");
    assert!(e.contains("mutually exclusive"), "{e}");

    let db = |extra: Value| {
        let mut props = json!({"Engine": "postgres", "EngineVersion": "17", "DBInstanceClass": "db.t4g.micro",
            "AllocatedStorage": "20", "MasterUsername": "ferry", "ManageMasterUserPassword": true});
        for (k, v) in extra.as_object().expect("extra") {
            props[k] = v.clone();
        }
        json!({"D": {"Type": "AWS::RDS::DBInstance", "Properties": props}})
    };
    create(db(json!({})))
        .await
        .expect("a managed master password deploys");
    let e = create(db(json!({"MasterUserPassword": "copied-by-hand-1"})))
        .await
        .expect_err("a password beside a managed one");
    assert!(e.contains("ManageMasterUserPassword"), "{e}");

    let cache = |token: &str| {
        json!({"C": {"Type": "AWS::ElastiCache::ReplicationGroup", "Properties": {
            "ReplicationGroupDescription": "strict", "CacheNodeType": "cache.t4g.micro", "Engine": "redis",
            "NumCacheClusters": 1, "TransitEncryptionEnabled": true, "AuthToken": token}}})
    };
    create(cache("abcdefghijklmnop0123"))
        .await
        .expect("a good token deploys");
    for bad in ["short", "abcdefgh@ijklmnop0123", "abcdefgh/ijklmnop0123"] {
        let e = create(cache(bad)).await.expect_err(bad);
        assert!(e.contains("AuthToken"), "{bad}: {e}");
        assert!(!e.contains(bad), "the refusal never shows the token: {e}");
    }
}
