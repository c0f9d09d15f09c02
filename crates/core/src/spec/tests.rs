use serde_json::{Value, json};

use super::*;

pub(super) fn minimal() -> Value {
    json!({
        "migration_id": "acme-prod-1",
        "heroku": {"app": "acme-prod", "api_token_param": "/ferry/acme/heroku-token"},
        "source": {"database_url_param": "/ferry/acme/source-url"},
        "target": {"rds_instance_id": "acme-prod", "database_url_param": "/ferry/acme/target-url"},
        "endpoint": {"url_param": "/ferry/acme/endpoint-url"},
        "traffic": {
            "hosted_zone_id": "Z0123456789ABCDEFGHIJ",
            "record_name": "app.acme.example",
            "heroku_target": "acme-prod-123.herokudns.com",
            "aws_target": "acme-alb-1.us-east-1.elb.amazonaws.com",
            "health": {"url": "https://aws.acme.example/healthz"}
        },
        "approvals": {
            "sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:ferry-approvals",
            "approvers": ["ops@acme.example"]
        }
    })
}

fn messages(v: &Value) -> Vec<String> {
    match from_value(v) {
        Ok(_) => vec![],
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_spec_gets_defaults() {
    let spec = from_value(&minimal()).expect("minimal spec is valid");
    assert_eq!(spec.replication.capture, CaptureMode::Auto);
    assert_eq!(spec.replication.parallelism, 4);
    assert_eq!(spec.traffic.steps, vec![1, 5, 10, 25, 50, 100]);
    assert_eq!(spec.traffic.ttl_seconds, 60);
    assert_eq!(spec.rollback_window_hours, 24);
    assert_eq!(spec.config_ssm_prefix(), "/ferry/acme-prod/config/");
}

#[test]
fn the_endpoint_is_the_default_and_named_when_missing_or_unused() {
    let spec = from_value(&minimal()).expect("valid");
    assert_eq!(spec.cutover.endpoint, EndpointMode::Proxy);
    assert_eq!(spec.cutover.pause_timeout_ms, 2000);
    assert_eq!(spec.endpoint.as_ref().map(|e| e.min_tasks), Some(2));

    let mut v = minimal();
    v.as_object_mut().expect("object").remove("endpoint");
    let got = messages(&v);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("endpoint: is required when cutover.endpoint is \"proxy\""));
    assert!(got[0].contains("\"redeploy\""));
    v["cutover"] = json!({"endpoint": "redeploy"});
    assert_eq!(messages(&v), Vec::<String>::new());

    let mut v = minimal();
    v["cutover"] = json!({"endpoint": "redeploy"});
    assert!(messages(&v)[0].starts_with("endpoint: is set but cutover.endpoint is \"redeploy\""));

    let mut v = minimal();
    v["cutover"] = json!({"endpoint": "sideways", "pause_timeout_ms": 5});
    let got = messages(&v);
    assert!(
        got.iter().any(|m| m.starts_with("cutover.endpoint:")),
        "{got:?}"
    );

    let mut v = minimal();
    v["cutover"] = json!({"pause_timeout_ms": 50});
    v["endpoint"] = json!({"url_param": "/ferry/acme/target-url", "min_tasks": 0});
    assert_eq!(
        messages(&v),
        vec![
            "cutover.pause_timeout_ms: must be from 100 to 30000 milliseconds; got 50",
            "endpoint.min_tasks: must be from 1 to 20 tasks; got 0",
            "endpoint.url_param: is the same parameter as target.database_url_param; the endpoint's URL (what the app fleet uses) needs its own parameter",
        ]
    );
}

#[test]
fn decreasing_weights_are_named_with_their_index() {
    let mut v = minimal();
    v["traffic"]["steps"] = json!([1, 25, 10, 100]);
    assert_eq!(
        messages(&v),
        vec!["traffic.steps[2]: weights must increase; got 10 after 25"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v = minimal();
    v["migration_id"] = json!("has spaces!");
    v["heroku"]["app"] = json!("Acme_Prod");
    v["traffic"]["steps"] = json!([5, 5, 50]);
    v["traffic"]["health"] = json!({});
    v["approvals"]["approvers"] = json!([]);
    v["replication"] = json!({"parallelism": 0, "capture": "trigger"});
    let got = messages(&v);
    let paths: Vec<&str> = got
        .iter()
        .map(|m| m.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        vec![
            "approvals.approvers",
            "heroku.app",
            "migration_id",
            "replication.parallelism",
            "traffic.health",
            "traffic.steps[1]",
            "traffic.steps[2]",
        ],
        "{got:#?}"
    );
    assert!(got[5].ends_with("weights must increase; got 5 after 5"));
    assert!(got[6].contains("the last step must be 100"));
    assert!(got[3].contains("must be from 1 to 32 sessions; got 0"));
}

#[test]
fn unknown_fields_are_errors_with_a_hint() {
    let mut v = minimal();
    v["traffic"]["stpes"] = json!([1, 100]);
    v["colour"] = json!("blue");
    let got = messages(&v);
    assert_eq!(
        got,
        vec![
            "colour: unknown field `colour`; remove it (allowed here: $schema, approvals, config_vars, cutover, endpoint, heroku, migration_id, redis, replication, rollback_window_hours, source, target, timing, traffic)".to_string(),
            "traffic.stpes: unknown field `stpes`; did you mean `steps`?".to_string(),
        ]
    );
}

#[test]
fn shape_and_rule_problems_are_reported_together() {
    let mut v = minimal();
    v["replication"] = json!({"capture": "wal2json", "max_lag_seconds": "5"});
    v["traffic"]["steps"] = json!([50, 10, 100]);
    v.as_object_mut().map(|o| o.remove("source"));
    let got = messages(&v);
    assert_eq!(
        got,
        vec![
            "replication.capture: must be one of trigger, logical, auto; got \"wal2json\"",
            "replication.max_lag_seconds: expected a whole number; got the string \"5\"",
            "source: missing required field; add it (The Heroku Postgres database being moved)",
            "traffic.steps[1]: weights must increase; got 10 after 50",
        ]
    );
}

#[test]
fn names_arns_and_urls_are_checked() {
    let mut v = minimal();
    v["approvals"]["sns_topic_arn"] = json!("arn:aws:sqs:us-east-1:123456789012:q");
    v["approvals"]["approvers"] = json!(["ops@acme.example", "bob", "ops@acme.example"]);
    v["traffic"]["record_name"] = json!("https://app.acme.example");
    v["traffic"]["health"]["url"] = json!("http://aws.acme.example/healthz");
    v["source"]["database_url_param"] = json!("ferry/source");
    v["target"]["rds_instance_id"] = json!("acme--prod-");
    v["config_vars"] =
        json!({"ssm_prefix": "/acme/prod", "include": ["API_*"], "exclude": ["API_*", "bad-name"]});
    let got = messages(&v);
    let expect_starts = [
        "approvals.approvers[1]: \"bob\" is neither an email address, a Slack member id",
        "approvals.approvers[2]: \"ops@acme.example\" is listed twice",
        "approvals.sns_topic_arn: \"arn:aws:sqs:us-east-1:123456789012:q\" is not an SNS topic ARN",
        "config_vars.exclude[0]: \"API_*\" is also in include",
        "config_vars.exclude[1]: \"bad-name\" is not a config var name pattern",
        "config_vars.ssm_prefix: \"/acme/prod\" must start and end with `/`",
        "source.database_url_param: \"ferry/source\" is not an SSM parameter name",
        "target.rds_instance_id: \"acme--prod-\" is not an RDS DB instance identifier",
        "traffic.health.url: \"http://aws.acme.example/healthz\" is not an https:// URL",
        "traffic.record_name: \"https://app.acme.example\" is not a DNS name; drop the scheme",
    ];
    assert_eq!(got.len(), expect_starts.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expect_starts) {
        assert!(g.starts_with(e), "{g:?} should start with {e:?}");
    }
}

#[test]
fn same_url_parameter_for_source_and_target_is_refused() {
    let mut v = minimal();
    v["target"]["database_url_param"] = json!("/ferry/acme/source-url");
    assert_eq!(
        messages(&v),
        vec![
            "target.database_url_param: is the same parameter as source.database_url_param; the target needs its own URL"
        ]
    );
}

#[test]
fn invalid_json_names_the_line() {
    let err = parse("{\n  \"migration_id\": \"x\",\n}").expect_err("trailing comma");
    let text = err.to_string();
    assert!(text.contains("$: not valid JSON at line 3"), "{text}");
}

#[test]
fn generated_schema_uses_only_enforced_keywords() {
    assert_eq!(unsupported_keywords(&json_schema()), Vec::<String>::new());
}

#[test]
fn spec_round_trips_through_json() {
    let spec = from_value(&minimal()).expect("valid");
    let again = from_value(&serde_json::to_value(&spec).expect("serialize")).expect("valid");
    assert_eq!(spec, again);
}

#[test]
fn cutover_and_timing_rules_name_their_fields() {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../../../examples/minimal.json"))
            .expect("minimal example parses");
    v["cutover"] = serde_json::json!({
        "drain_timeout_seconds": 0,
        "scale_down": ["web", "Worker"],
        "ecs_services": ["only-a-service"]
    });
    v["timing"] = serde_json::json!({"poll_seconds": 0, "stall_seconds": 5});
    let problems = from_value(&v).expect_err("bad values refused");
    let text = problems.to_string();
    for path in [
        "cutover.drain_timeout_seconds",
        "cutover.scale_down[0]",
        "cutover.scale_down[1]",
        "cutover.ecs_services[0]",
        "timing.poll_seconds",
        "timing.stall_seconds",
    ] {
        assert!(text.contains(path), "{path} missing from:\n{text}");
    }
    v["cutover"] = serde_json::json!({"scale_down": ["worker"], "ecs_services": ["prod/web"]});
    v["timing"] = serde_json::json!({"poll_seconds": 2, "rollback_window_seconds": 30});
    let spec = from_value(&v).expect("good values accepted");
    assert!(spec.cutover.maintenance_mode);
    assert_eq!(spec.rollback_window_seconds(), 30);
    assert_eq!(
        spec.app_database_url_param(),
        format!("{}DATABASE_URL", spec.config_ssm_prefix())
    );
}

#[test]
fn parameters_config_sync_or_the_cutover_write_are_refused() {
    // Config sync writes every Heroku config var under the prefix (DATABASE_URL included) and
    // the cutover writes DATABASE_URL there: a database parameter under it is overwritten.
    let mut v = minimal();
    v["config_vars"] = json!({"ssm_prefix": "/acme/prod/"});
    v["source"]["database_url_param"] = json!("/acme/prod/DATABASE_URL");
    v["target"]["database_url_param"] = json!("/acme/prod/RDS_URL");
    v["heroku"]["api_token_param"] = json!("/acme/prod/HEROKU_API_KEY");
    let m = messages(&v);
    for path in [
        "source.database_url_param",
        "target.database_url_param",
        "heroku.api_token_param",
    ] {
        assert!(
            m.iter()
                .any(|p| p.starts_with(&format!("{path}: ")) && p.contains("/acme/prod/")),
            "{path} not refused: {m:?}"
        );
    }
    // The default prefix counts too.
    let mut v = minimal();
    v["target"]["database_url_param"] = json!("/ferry/acme-prod/config/DATABASE_URL");
    assert!(
        messages(&v)
            .iter()
            .any(|p| p.starts_with("target.database_url_param: ")),
        "{:?}",
        messages(&v)
    );
    // The Heroku token in a database URL's parameter.
    let mut v = minimal();
    v["heroku"]["api_token_param"] = json!("/ferry/acme/source-url");
    assert!(
        messages(&v)
            .iter()
            .any(|p| p.starts_with("heroku.api_token_param: ")
                && p.contains("source.database_url_param")),
        "{:?}",
        messages(&v)
    );
}

#[test]
fn echoed_input_is_escaped_and_capped() {
    // A spec cannot forge output lines (CI annotations, terminal escapes) or flood the output.
    let mut v = minimal();
    v["replication"] = json!({
        "evil\n::error file=x::forged\u{1b}[31m\u{202e}": 1,
        "parallelism": "x".repeat(1_000_000)
    });
    v["traffic"]["record_name"] = json!(format!("a\nb{}", "c".repeat(100_000)));
    v[format!("k{}", "y".repeat(100_000))] = json!(1);
    let out = match from_value(&v) {
        Ok(_) => panic!("refused"),
        Err(p) => p.to_string(),
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1 + out.lines().filter(|l| l.starts_with("  ")).count(),
        "one line per problem: {out}"
    );
    for l in &lines {
        assert!(l.chars().count() <= 1_300, "line of {} chars", l.len());
        assert!(
            !l.chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "raw control or bidi character in {l:?}"
        );
    }
    assert!(out.contains("\\n::error"), "{out}");
    assert!(!lines.iter().any(|l| l.starts_with("::error")));
}

/// A change to a valid spec.
type Mutation = Box<dyn Fn(&mut Value)>;

/// Mutations an outside probe found accepted; each must be refused at its path.
#[test]
fn probed_gaps_are_refused_at_their_path() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "approvals.approvers[1]",
            Box::new(|v| {
                v["approvals"]["approvers"] = json!([
                    "ops@acme.example",
                    "ops2@acme.example\napprove: https://evil.example/x"
                ])
            }),
        ),
        (
            "approvals.approvers[1]",
            Box::new(|v| {
                v["approvals"]["approvers"] = json!(["ops@acme.example", "o\u{0}ps@acme.example"])
            }),
        ),
        (
            "approvals.approvers[1]",
            Box::new(|v| {
                v["approvals"]["approvers"] =
                    json!(["ops@acme.example", "\u{202e}ops@acme.example"])
            }),
        ),
        (
            "traffic.health.alarm_names[0]",
            Box::new(|v| v["traffic"]["health"]["alarm_names"] = json!(["5xx\nrate"])),
        ),
        (
            "traffic.health.alarm_names[1]",
            Box::new(|v| v["traffic"]["health"]["alarm_names"] = json!(["a", "a"])),
        ),
        (
            "traffic.aws_target",
            Box::new(|v| v["traffic"]["aws_target"] = json!("10.0.0.1")),
        ),
        (
            "traffic.heroku_target",
            Box::new(|v| v["traffic"]["heroku_target"] = json!("203.0.113.9")),
        ),
        (
            "traffic.health.url",
            Box::new(|v| {
                v["traffic"]["health"]["url"] = json!("https://aws.acme.example/health z")
            }),
        ),
        (
            "traffic.health.url",
            Box::new(|v| v["traffic"]["health"]["url"] = json!("https://aws.acme.example:99999/h")),
        ),
        (
            "traffic.health.url",
            Box::new(|v| v["traffic"]["health"]["url"] = json!("https://@/")),
        ),
        (
            "traffic.health.url",
            Box::new(|v| {
                v["traffic"]["health"]["url"] = json!("https://user:pw@aws.acme.example/h")
            }),
        ),
        (
            "source.database_url_param",
            Box::new(|v| v["source"]["database_url_param"] = json!("/ferry//acme/source")),
        ),
        (
            "source.database_url_param",
            Box::new(|v| v["source"]["database_url_param"] = json!("/ferry/acme/source/")),
        ),
        (
            "source.database_url_param",
            Box::new(|v| {
                v["source"]["database_url_param"] = json!(format!("/{}", vec!["a"; 16].join("/")))
            }),
        ),
        (
            "cutover.scale_down[1]",
            Box::new(|v| v["cutover"] = json!({"scale_down": ["worker", "worker"]})),
        ),
        (
            "cutover.ecs_services[1]",
            Box::new(|v| {
                v["cutover"] = json!({"endpoint": "redeploy", "ecs_services": ["c/s", "c/s"]});
                v.as_object_mut().expect("obj").remove("endpoint");
            }),
        ),
        (
            "approvals.sns_topic_arn",
            Box::new(|v| {
                v["approvals"]["sns_topic_arn"] = json!("arn:aws:sns:mars-north-9:123456789012:t")
            }),
        ),
        (
            "approvals.sns_topic_arn",
            Box::new(|v| {
                v["approvals"]["sns_topic_arn"] = json!("arn:awsx:sns:us-east-1:123456789012:t")
            }),
        ),
        (
            "approvals.sns_topic_arn",
            Box::new(|v| {
                v["approvals"]["sns_topic_arn"] = json!("arn:aws-cn:sns:us-east-1:123456789012:t")
            }),
        ),
        (
            "replication.parallelism",
            Box::new(|v| v["replication"] = json!({"parallelism": 4294967296u64})),
        ),
        (
            "traffic.ttl_seconds",
            Box::new(|v| v["traffic"]["ttl_seconds"] = json!(9223372036854775807u64)),
        ),
    ];
    for (path, mutate) in cases {
        let mut v = minimal();
        mutate(&mut v);
        let m = messages(&v);
        assert!(
            m.iter().any(|p| p.starts_with(&format!("{path}: "))),
            "not refused at {path}: {m:?}"
        );
    }
    // An overflowing integer does not hide the other problems.
    let mut v = minimal();
    v["replication"] = json!({"parallelism": 4294967296u64});
    v["traffic"]["aws_target"] = json!("10.0.0.1");
    let m = messages(&v);
    assert!(
        m.iter().any(|p| p.starts_with("traffic.aws_target: ")),
        "{m:?}"
    );
    assert!(!m.iter().any(|p| p.starts_with("$: ")), "{m:?}");
    // Still valid: health URLs with an IPv6 host, with or without a port.
    for url in [
        "https://[2001:db8::1]/healthz",
        "https://[2001:db8::1]:8443/healthz",
    ] {
        let mut v = minimal();
        v["traffic"]["health"]["url"] = json!(url);
        assert_eq!(messages(&v), Vec::<String>::new(), "{url}");
    }
    // Still valid: regions and partitions that exist.
    for arn in [
        "arn:aws:sns:us-east-1:123456789012:t",
        "arn:aws-us-gov:sns:us-gov-west-1:123456789012:t",
        "arn:aws-cn:sns:cn-north-1:123456789012:t",
        "arn:aws:sns:ap-southeast-5:123456789012:t",
    ] {
        let mut v = minimal();
        v["approvals"]["sns_topic_arn"] = json!(arn);
        assert_eq!(messages(&v), Vec::<String>::new(), "{arn}");
    }
}

#[test]
fn duplicate_keys_and_oversized_specs_are_refused() {
    let text = minimal().to_string();
    let dup = text.replacen(
        "\"migration_id\":\"acme-prod-1\"",
        "\"migration_id\":\"acme-prod-1\",\"migration_id\":\"other\"",
        1,
    );
    assert_ne!(dup, text);
    let err = parse(&dup).expect_err("duplicate key").to_string();
    assert!(err.contains("migration_id: appears twice"), "{err}");
    let mut big = minimal();
    big["approvals"]["approvers"] = json!(
        (0..9000)
            .map(|i| format!("person{i:05}@acme-example.example"))
            .collect::<Vec<_>>()
    );
    let text = big.to_string();
    assert!(text.len() > 256 * 1024);
    let err = parse(&text).expect_err("too big").to_string();
    assert!(err.contains("256 KiB"), "{}", &err[..err.len().min(300)]);
}

#[test]
fn the_redis_section_defaults_to_db_0_and_refuses_what_cannot_work() {
    let mut v = minimal();
    v["redis"] = json!({
        "source_url_param": "/ferry/acme/redis-source-url",
        "target_url_param": "/ferry/acme/redis-target-url",
        "disposable_patterns": ["cache:*", "rack::attack:*"]
    });
    let spec = from_value(&v).expect("a redis section is valid");
    let r = spec.redis.expect("redis");
    assert_eq!(r.databases, vec![0]);
    assert_eq!(r.disposable_patterns.len(), 2);
    assert_eq!(r.queue_patterns, ["queue:*", "schedule", "retry", "dead"]);
    assert_eq!(r.not_synced().len(), 6);

    v["redis"] = json!({
        "source_url_param": "/ferry/acme/source-url",
        "target_url_param": "/ferry/acme-prod/config/REDIS_URL",
        "databases": [0, 16, 0],
        "disposable_patterns": ["*", "", "ok:*"],
        "queue_patterns": ["ok:*", "*"]
    });
    let got = messages(&v).join("\n");
    for says in [
        "redis.databases[1]: must be from 0 to 15",
        "redis.databases[2]: database 0 is listed twice",
        "redis.disposable_patterns[0]: \"*\" would make every key disposable",
        "redis.disposable_patterns[1]: must be a Redis glob",
        "redis.queue_patterns[0]: \"ok:*\" is also in redis.disposable_patterns",
        "redis.queue_patterns[1]: \"*\" would make every key a queue",
        "redis.source_url_param: is the same parameter as source.database_url_param",
        "redis.target_url_param: \"/ferry/acme-prod/config/REDIS_URL\" is under the config prefix",
    ] {
        assert!(got.contains(says), "{says}\n---\n{got}");
    }
    v["redis"] = json!({
        "source_url_param": "/ferry/acme/r",
        "target_url_param": "/ferry/acme/r",
        "databases": [],
        "extra": 1
    });
    let got = messages(&v).join("\n");
    assert!(got.contains("redis.extra"), "{got}");
    v["redis"] = json!({
        "source_url_param": "/ferry/acme/redis-source-url",
        "target_url_param": "/ferry/acme/redis-target-url"
    });
    v["cutover"] = json!({"endpoint": "redeploy", "ecs_services": ["c/s"]});
    let got = messages(&v).join("\n");
    assert!(
        got.contains("redis: needs cutover.endpoint \"proxy\""),
        "{got}"
    );
}

#[test]
fn the_copy_rate_limit_is_optional_and_bounded() {
    let mut v = minimal();
    assert_eq!(
        crate::spec::from_value(&v)
            .expect("valid")
            .replication
            .max_copy_mb_per_second,
        None
    );
    v["replication"] = json!({"max_copy_mb_per_second": 40});
    assert_eq!(
        crate::spec::from_value(&v)
            .expect("valid")
            .replication
            .max_copy_mb_per_second,
        Some(40)
    );
    for bad in [0, 10_001] {
        v["replication"] = json!({ "max_copy_mb_per_second": bad });
        let got = messages(&v);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "replication.max_copy_mb_per_second: must be from 1 to 10000 MB per second"
            ),
            "{got:?}"
        );
    }
}

#[test]
fn the_verify_rate_limit_is_optional_and_bounded() {
    let mut v = minimal();
    v["replication"] = json!({"verify_rows_per_second": 5000});
    assert_eq!(
        crate::spec::from_value(&v)
            .expect("valid")
            .replication
            .verify_rows_per_second,
        Some(5000)
    );
    v["replication"] = json!({ "verify_rows_per_second": 0 });
    let got = messages(&v);
    assert!(
        got.len() == 1
            && got[0].starts_with(
                "replication.verify_rows_per_second: must be from 1 to 100000000 rows per second"
            ),
        "{got:?}"
    );
}

#[test]
fn a_status_wait_must_end_inside_the_functions_timeout() {
    let mut v = minimal();
    let spec = crate::spec::from_value(&v).expect("valid");
    assert_eq!(spec.timing.status_wait_seconds(), 600);
    v["timing"] = json!({"status_wait_seconds": 300});
    assert_eq!(
        crate::spec::from_value(&v)
            .expect("valid")
            .timing
            .status_wait_seconds(),
        300
    );
    // A short wait makes each loop turn short: the catch-up's turns must still fit the history.
    v["timing"] = json!({"status_wait_seconds": 3});
    let got = messages(&v);
    assert!(
        got.len() == 1 && got[0].contains("raise timing.status_wait_seconds"),
        "{got:?}"
    );
    v["timing"] = json!({"status_wait_seconds": 900});
    let got = messages(&v);
    assert!(
        got.len() == 1
            && got[0].starts_with("timing.status_wait_seconds: must be from 1 to 840 seconds"),
        "{got:?}"
    );
}

/// Four specs the review found accepted: each is refused at its own path.
#[test]
fn an_empty_domain_a_case_twin_a_nameless_role_and_a_numeric_name_are_refused() {
    let refused = |edit: &dyn Fn(&mut Value), path: &str, needle: &str| {
        let mut v = minimal();
        edit(&mut v);
        let got = messages(&v);
        assert!(
            got.iter()
                .any(|m| m.starts_with(&format!("{path}: ")) && m.contains(needle)),
            "{path}: {got:?}"
        );
    };
    refused(
        &|v| v["approvals"]["approvers"] = json!(["x@."]),
        "approvals.approvers[0]",
        "neither an email address",
    );
    refused(
        &|v| v["approvals"]["approvers"] = json!(["x@a."]),
        "approvals.approvers[0]",
        "neither an email address",
    );
    refused(
        &|v| v["approvals"]["approvers"] = json!(["Ops@Acme.example", "ops@acme.example"]),
        "approvals.approvers[1]",
        "case does not matter",
    );
    refused(
        &|v| v["approvals"]["approvers"] = json!(["arn:aws:iam::123456789012:role/"]),
        "approvals.approvers[0]",
        "neither an email address",
    );
    refused(
        &|v| v["traffic"]["record_name"] = json!("1.2"),
        "traffic.record_name",
        "all-digit label",
    );
    // Still accepted: a role with a path, and an email under a subdomain.
    let mut v = minimal();
    v["approvals"]["approvers"] = json!([
        "arn:aws:iam::123456789012:role/ops/ferry-approver",
        "ops@mail.acme.example"
    ]);
    assert_eq!(messages(&v), Vec::<String>::new());
}

#[test]
fn the_target_password_secret_must_be_a_secrets_manager_arn() {
    let mut v = minimal();
    v["target"]["password_secret"] = json!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-0f3c2a1e-aaaa-bbbb-cccc-0123456789ab-AbCdEf"
    );
    assert_eq!(messages(&v), Vec::<String>::new());
    for bad in [
        "rds!db-0f3c2a1e",
        "arn:aws:ssm:us-east-1:123456789012:parameter/x",
        "arn:aws:secretsmanager:us-east-1:1234:secret:x",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
    ] {
        v["target"]["password_secret"] = json!(bad);
        let got = messages(&v);
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert!(
            got[0].starts_with("target.password_secret:")
                && got[0].contains("not a Secrets Manager secret ARN"),
            "{got:?}"
        );
    }
}
