//! The spec's rules that a JSON Schema does not express; each problem names its path and
//! what to do.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    ApprovalsSpec, ConfigVarsSpec, CutoverSpec, EndpointMode, EndpointSpec, HerokuSpec,
    MigrationSpec, RedisSpec, ReplicationSpec, SourceSpec, TargetSpec, TimingSpec, TrafficSpec,
};
use crate::problems::{Problem, child, index};

/// Checks every rule of a well-shaped spec.
pub(super) fn check(spec: &MigrationSpec, out: &mut Vec<Problem>) {
    migration_id(&spec.migration_id, out);
    heroku(&spec.heroku, "heroku", out);
    source(&spec.source, "source", out);
    target(&spec.target, "target", out);
    replication(&spec.replication, "replication", out);
    traffic(&spec.traffic, "traffic", out);
    approvals(&spec.approvals, "approvals", out);
    config_vars(&spec.config_vars, "config_vars", out);
    rollback_window(spec.rollback_window_hours, out);
    cutover(&spec.cutover, "cutover", out);
    if let Some(e) = &spec.endpoint {
        endpoint(e, "endpoint", out);
    }
    if let Some(r) = &spec.redis {
        redis(r, "redis", out);
        if !spec.proxied() {
            out.push(Problem::new(
                "redis",
                "needs cutover.endpoint \"proxy\": the AWS fleet's REDIS_URL reaches Heroku Redis, then ElastiCache, through the endpoint's Redis proxy; remove the redis section to move Redis yourself",
            ));
        }
    }
    timing(&spec.timing, "timing", out);
    cross(spec, out);
}

/// Checks the rules of each top-level section whose shape is right, for a document whose
/// shape is wrong elsewhere.
pub(super) fn check_sections(value: &Value, out: &mut Vec<Problem>) {
    if shape_ok("migration_id", out)
        && let Some(id) = value.get("migration_id").and_then(Value::as_str)
    {
        migration_id(id, out);
    }
    section(value, "heroku", heroku, out);
    section(value, "source", source, out);
    section(value, "target", target, out);
    section(value, "replication", replication, out);
    if !section(value, "traffic", traffic, out)
        && shape_ok("traffic.steps", out)
        && let Some(s) = value
            .get("traffic")
            .and_then(|t| t.get("steps"))
            .and_then(|s| serde_json::from_value::<Vec<u32>>(s.clone()).ok())
    {
        // The weights are the easiest thing to get wrong; check them even when the rest of
        // the traffic section is incomplete.
        steps(&s, "traffic.steps", out);
    }
    section(value, "approvals", approvals, out);
    section(value, "config_vars", config_vars, out);
    section(value, "cutover", cutover, out);
    section(value, "endpoint", endpoint, out);
    section(value, "redis", redis, out);
    section(value, "timing", timing, out);
    if shape_ok("rollback_window_hours", out)
        && let Some(h) = value.get("rollback_window_hours").and_then(Value::as_u64)
    {
        rollback_window(u32::try_from(h).unwrap_or(u32::MAX), out);
    }
}

/// Whether no shape problem lies at or below `path`.
fn shape_ok(path: &str, out: &[Problem]) -> bool {
    !out.iter().any(|p| {
        p.path == path
            || p.path.starts_with(&format!("{path}."))
            || p.path.starts_with(&format!("{path}["))
    })
}

/// Runs `rules` on section `name` if its shape is right; returns whether it ran.
fn section<T: DeserializeOwned>(
    value: &Value,
    name: &str,
    rules: fn(&T, &str, &mut Vec<Problem>),
    out: &mut Vec<Problem>,
) -> bool {
    if !shape_ok(name, out) {
        return false;
    }
    match value
        .get(name)
        .and_then(|v| serde_json::from_value::<T>(v.clone()).ok())
    {
        Some(typed) => {
            rules(&typed, name, out);
            true
        }
        None => false,
    }
}

fn migration_id(id: &str, out: &mut Vec<Problem>) {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if id.is_empty() || id.len() > 80 || !ok_chars {
        out.push(Problem::new(
            "migration_id",
            format!(
                "{:?} is not a usable id; use 1-80 letters, digits, `-` or `_` (it becomes the Step Functions execution name)",
                id
            ),
        ));
    }
}

fn heroku(s: &HerokuSpec, path: &str, out: &mut Vec<Problem>) {
    let app = &s.app;
    let ok = (3..=30).contains(&app.len())
        && app.starts_with(|c: char| c.is_ascii_lowercase())
        && app
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        out.push(Problem::new(
            child(path, "app"),
            format!(
                "{app:?} is not a Heroku app name; use the name `heroku apps` shows (3-30 lowercase letters, digits, `-`, starting with a letter)"
            ),
        ));
    }
    ssm_name(&s.api_token_param, &child(path, "api_token_param"), out);
}

fn source(s: &SourceSpec, path: &str, out: &mut Vec<Problem>) {
    ssm_name(
        &s.database_url_param,
        &child(path, "database_url_param"),
        out,
    );
}

fn target(s: &TargetSpec, path: &str, out: &mut Vec<Problem>) {
    let id = &s.rds_instance_id;
    let ok = (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--");
    if !ok {
        out.push(Problem::new(
            child(path, "rds_instance_id"),
            format!(
                "{id:?} is not an RDS DB instance identifier; use 1-63 letters, digits and single `-`, starting with a letter and not ending with `-`"
            ),
        ));
    }
    ssm_name(
        &s.database_url_param,
        &child(path, "database_url_param"),
        out,
    );
    if let Some(arn) = &s.password_secret {
        secret_arn(arn, &child(path, "password_secret"), out);
    }
}

/// A Secrets Manager secret ARN: `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
fn secret_arn(arn: &str, path: &str, out: &mut Vec<Problem>) {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let ok = arn.len() <= 2048
        && parts.len() == 7
        && parts[0] == "arn"
        && matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
        && parts[2] == "secretsmanager"
        && !parts[3].is_empty()
        && parts[3]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5] == "secret"
        && !parts[6].is_empty()
        && !arn.chars().any(char::is_control);
    if !ok {
        out.push(Problem::new(
            path,
            format!(
                "{arn:?} is not a Secrets Manager secret ARN; use arn:aws:secretsmanager:<region>:<12-digit account>:secret:<name> (RDS shows it under the instance's master credentials)"
            ),
        ));
    }
}

fn replication(s: &ReplicationSpec, path: &str, out: &mut Vec<Problem>) {
    range(
        s.max_lag_seconds,
        1,
        3600,
        &child(path, "max_lag_seconds"),
        "seconds",
        out,
    );
    range(
        s.parallelism,
        1,
        32,
        &child(path, "parallelism"),
        "sessions",
        out,
    );
    if let Some(mb) = s.max_copy_mb_per_second {
        range(
            mb,
            1,
            10_000,
            &child(path, "max_copy_mb_per_second"),
            "MB per second",
            out,
        );
    }
    if let Some(rows) = s.verify_rows_per_second {
        range(
            rows,
            1,
            100_000_000,
            &child(path, "verify_rows_per_second"),
            "rows per second",
            out,
        );
    }
}

fn traffic(s: &TrafficSpec, path: &str, out: &mut Vec<Problem>) {
    let zone = s
        .hosted_zone_id
        .strip_prefix("/hostedzone/")
        .unwrap_or(&s.hosted_zone_id);
    if zone.is_empty()
        || zone.len() > 32
        || !zone
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        out.push(Problem::new(
            child(path, "hosted_zone_id"),
            format!(
                "{:?} is not a Route 53 hosted zone id; copy the id (e.g. Z0123456789ABCDEFGHIJ) from `aws route53 list-hosted-zones`",
                s.hosted_zone_id
            ),
        ));
    }
    let record = dns_name(&s.record_name, &child(path, "record_name"), out);
    let heroku = dns_name(&s.heroku_target, &child(path, "heroku_target"), out);
    let aws = dns_name(&s.aws_target, &child(path, "aws_target"), out);
    if let (Some(h), Some(a)) = (&heroku, &aws)
        && h == a
    {
        out.push(Problem::new(
            child(path, "aws_target"),
            "is the same as heroku_target; point it at the AWS load balancer",
        ));
    }
    if let Some(r) = &record {
        for (name, t) in [("heroku_target", &heroku), ("aws_target", &aws)] {
            if t.as_ref() == Some(r) {
                out.push(Problem::new(
                    child(path, name),
                    "points at record_name itself; a CNAME cannot point at its own name",
                ));
            }
        }
    }
    range(
        s.ttl_seconds,
        1,
        86_400,
        &child(path, "ttl_seconds"),
        "seconds",
        out,
    );
    steps(&s.steps, &child(path, "steps"), out);
    range(
        s.step_interval_minutes,
        1,
        1440,
        &child(path, "step_interval_minutes"),
        "minutes",
        out,
    );
    let health = child(path, "health");
    if s.health.alarm_names.is_empty() && s.health.url.is_none() {
        out.push(Problem::new(
            &health,
            "names no check; add CloudWatch alarm names in `alarm_names` and/or an HTTPS `url`: without a health gate the canary cannot roll back by itself",
        ));
    }
    for (i, name) in s.health.alarm_names.iter().enumerate() {
        if name.trim().is_empty()
            || name.len() > 255
            || name.chars().any(crate::problems::unsafe_char)
        {
            out.push(Problem::new(
                index(&child(&health, "alarm_names"), i),
                "must be a CloudWatch alarm name of 1-255 characters, without control characters",
            ));
        }
    }
    no_duplicates(&s.health.alarm_names, &child(&health, "alarm_names"), out);
    if let Some(url) = &s.health.url
        && let Err(why) = health_url(url)
    {
        out.push(Problem::new(
            child(&health, "url"),
            format!("{url:?} {why}; give the full HTTPS URL of a health endpoint on the AWS side"),
        ));
    }
}

/// An https:// URL with a host and a valid port, no user information, no spaces or control
/// characters (plain http only on loopback: a local rehearsal's health endpoint).
fn health_url(url: &str) -> Result<(), &'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character");
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| {
            url.strip_prefix("http://")
                .filter(|r| r.starts_with("127.0.0.1:") || r.starts_with("localhost:"))
        })
        .ok_or("is not an https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("carries user information (user@ or user:password@)");
    }
    // `host[:port]`, or `[v6 address][:port]`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, rest)) => (h, Some(rest.strip_prefix(':').unwrap_or(rest))),
            None => ("", None),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() || host.starts_with('.') {
        return Err("names no host");
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|n| n > 0)
    {
        return Err("has a port outside 1-65535");
    }
    Ok(())
}

fn steps(steps: &[u32], path: &str, out: &mut Vec<Problem>) {
    if steps.is_empty() {
        out.push(Problem::new(
            path,
            "is empty; list the percentages of traffic to send to AWS, e.g. [1, 5, 10, 25, 50, 100]",
        ));
        return;
    }
    for (i, w) in steps.iter().enumerate() {
        if *w == 0 || *w > 100 {
            out.push(Problem::new(
                index(path, i),
                format!("weights are percentages from 1 to 100; got {w}"),
            ));
        }
        if i > 0 && *w <= steps[i - 1] {
            out.push(Problem::new(
                index(path, i),
                format!("weights must increase; got {w} after {}", steps[i - 1]),
            ));
        }
    }
    if let Some(last) = steps.last()
        && *last != 100
    {
        out.push(Problem::new(
            index(path, steps.len() - 1),
            format!("the last step must be 100 so that all traffic ends on AWS; got {last}"),
        ));
    }
}

fn approvals(s: &ApprovalsSpec, path: &str, out: &mut Vec<Problem>) {
    if !is_sns_topic_arn(&s.sns_topic_arn) {
        out.push(Problem::new(
            child(path, "sns_topic_arn"),
            format!(
                "{:?} is not an SNS topic ARN; use arn:aws:sns:<region>:<12-digit account>:<topic>",
                s.sns_topic_arn
            ),
        ));
    }
    if let Some(p) = &s.slack_webhook_param {
        ssm_name(p, &child(path, "slack_webhook_param"), out);
    }
    let list = child(path, "approvers");
    if s.approvers.is_empty() {
        out.push(Problem::new(
            &list,
            "is empty; name at least one person who may approve (email address, Slack member id, or IAM ARN for `ferry approve`)",
        ));
    }
    for (i, who) in s.approvers.iter().enumerate() {
        let slack_id = who.len() >= 9
            && who.starts_with(['U', 'W'])
            && who
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        // A domain of two or more non-empty labels (`x@.` and `x@a.` are not addresses).
        let email = who.split_once('@').is_some_and(|(u, d)| {
            !u.is_empty()
                && !d.contains('@')
                && d.split('.').count() >= 2
                && d.split('.').all(|l| !l.is_empty())
        });
        // IAM users and roles approve from the command line (`ferry approve`).
        let iam = who.starts_with("arn:aws:iam::")
            && who
                .split(':')
                .nth(4)
                .is_some_and(|a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()))
            && who.split(':').nth(5).is_some_and(|r| {
                // A name after the type (and any path): `role/` alone names nothing.
                (r.starts_with("user/") || r.starts_with("role/"))
                    && r.rsplit('/').next().is_some_and(|name| {
                        !name.is_empty()
                            && name
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
                    })
            });
        if who
            .chars()
            .any(|c| crate::problems::unsafe_char(c) || c.is_whitespace())
        {
            out.push(Problem::new(
                index(&list, i),
                "contains a space, line break, control, bidi or zero-width character; write the address or id alone",
            ));
            continue;
        }
        if !slack_id && !email && !iam {
            out.push(Problem::new(
                index(&list, i),
                format!("{who:?} is neither an email address, a Slack member id (U…/W…) nor an IAM user or role ARN (arn:aws:iam::<account>:user/… or role/…)"),
            ));
        }
        // Email addresses, Slack ids and IAM names are matched without regard to case, so
        // two spellings are one approver (who would then count twice).
        if let Some(first) = s.approvers[..i]
            .iter()
            .find(|other| other.eq_ignore_ascii_case(who))
        {
            out.push(Problem::new(
                index(&list, i),
                if first == who {
                    format!("{who:?} is listed twice; remove one")
                } else {
                    format!("{who:?} is {first:?} again (case does not matter); remove one")
                },
            ));
        }
    }
}

fn config_vars(s: &ConfigVarsSpec, path: &str, out: &mut Vec<Problem>) {
    if let Some(prefix) = &s.ssm_prefix {
        let p = child(path, "ssm_prefix");
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 3 {
            out.push(Problem::new(
                &p,
                format!("{prefix:?} must start and end with `/`, e.g. /myapp/prod/"),
            ));
        } else {
            ssm_name(prefix.trim_end_matches('/'), &p, out);
        }
    }
    for (field, names) in [("include", &s.include), ("exclude", &s.exclude)] {
        for (i, pattern) in names.iter().enumerate() {
            let ok = !pattern.is_empty()
                && pattern
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*');
            if !ok {
                out.push(Problem::new(
                    index(&child(path, field), i),
                    format!("{pattern:?} is not a config var name pattern; use letters, digits, `_`, and `*` as a wildcard"),
                ));
            }
        }
    }
    for (i, pattern) in s.exclude.iter().enumerate() {
        if s.include.contains(pattern) {
            out.push(Problem::new(
                index(&child(path, "exclude"), i),
                format!("{pattern:?} is also in include; keep it in one list"),
            ));
        }
    }
}

fn rollback_window(hours: u32, out: &mut Vec<Problem>) {
    range(hours, 1, 720, "rollback_window_hours", "hours", out);
}

fn cutover(s: &CutoverSpec, path: &str, out: &mut Vec<Problem>) {
    range(
        s.exact_check_seconds,
        0,
        86_400,
        &child(path, "exact_check_seconds"),
        "seconds",
        out,
    );
    range(
        s.pause_timeout_ms,
        100,
        30_000,
        &child(path, "pause_timeout_ms"),
        "milliseconds",
        out,
    );
    range(
        s.drain_timeout_seconds,
        1,
        300,
        &child(path, "drain_timeout_seconds"),
        "seconds",
        out,
    );
    for (i, p) in s.scale_down.iter().enumerate() {
        if !super::is_process_type(p) {
            out.push(Problem::new(
                index(&child(path, "scale_down"), i),
                format!("{p:?} is not a Heroku process type; use the names in the Procfile, e.g. \"worker\""),
            ));
        } else if p == "web" {
            out.push(Problem::new(
                index(&child(path, "scale_down"), i),
                "web is taken out by maintenance mode, not scaled down; remove it (scaling web to 0 loses the router's 503 page)",
            ));
        }
    }
    no_duplicates(&s.scale_down, &child(path, "scale_down"), out);
    no_duplicates(&s.ecs_services, &child(path, "ecs_services"), out);
    for (i, svc) in s.ecs_services.iter().enumerate() {
        let parts: Vec<&str> = svc.split('/').collect();
        let ok = parts.len() == 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.len() <= 255
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !ok {
            out.push(Problem::new(
                index(&child(path, "ecs_services"), i),
                format!("{svc:?} is not cluster/service; write it as \"my-cluster/my-service\""),
            ));
        }
    }
}

fn endpoint(s: &EndpointSpec, path: &str, out: &mut Vec<Problem>) {
    ssm_name(&s.url_param, &child(path, "url_param"), out);
    range(s.min_tasks, 1, 20, &child(path, "min_tasks"), "tasks", out);
    if let Some(t) = &s.target_url_param {
        ssm_name(t, &child(path, "target_url_param"), out);
        if t == &s.url_param {
            out.push(Problem::new(
                child(path, "target_url_param"),
                "is the same parameter as endpoint.url_param; one is what the app fleet uses to reach the endpoint, the other what the endpoint uses to reach RDS",
            ));
        }
    }
}

/// A list of at most 32 Redis globs, none `*` (which would make every key `what`).
fn globs(list: &[String], pats: &str, what: &str, out: &mut Vec<Problem>) {
    if list.len() > 32 {
        out.push(Problem::new(
            pats,
            format!("has {} patterns; at most 32 (use wider globs)", list.len()),
        ));
    }
    for (i, p) in list.iter().enumerate() {
        if p.is_empty() || p.len() > 256 || p.chars().any(char::is_control) {
            out.push(Problem::new(
                format!("{pats}[{i}]"),
                "must be a Redis glob of 1-256 printable characters, e.g. cache:*",
            ));
        } else if p == "*" {
            out.push(Problem::new(
                format!("{pats}[{i}]"),
                format!("\"*\" would make every key {what}, so nothing would move as data; name those keys, e.g. cache:* or queue:*"),
            ));
        }
    }
}

fn redis(s: &RedisSpec, path: &str, out: &mut Vec<Problem>) {
    ssm_name(&s.source_url_param, &child(path, "source_url_param"), out);
    ssm_name(&s.target_url_param, &child(path, "target_url_param"), out);
    if s.source_url_param == s.target_url_param {
        out.push(Problem::new(
            child(path, "target_url_param"),
            "is the same parameter as redis.source_url_param; ElastiCache needs its own URL",
        ));
    }
    let dbs = child(path, "databases");
    if s.databases.is_empty() {
        out.push(Problem::new(
            &dbs,
            "is empty; list the logical databases to move, e.g. [0]",
        ));
    }
    for (i, db) in s.databases.iter().enumerate() {
        if *db > 15 {
            out.push(Problem::new(
                format!("{dbs}[{i}]"),
                format!("must be from 0 to 15 (Redis's databases); got {db}"),
            ));
        }
        if s.databases[..i].contains(db) {
            out.push(Problem::new(
                format!("{dbs}[{i}]"),
                format!("database {db} is listed twice; list each once"),
            ));
        }
    }
    globs(
        &s.disposable_patterns,
        &child(path, "disposable_patterns"),
        "disposable",
        out,
    );
    globs(
        &s.queue_patterns,
        &child(path, "queue_patterns"),
        "a queue",
        out,
    );
    for (i, p) in s.queue_patterns.iter().enumerate() {
        if s.disposable_patterns.contains(p) {
            out.push(Problem::new(
                format!("{}[{i}]", child(path, "queue_patterns")),
                format!("{p:?} is also in redis.disposable_patterns; a key is either a queue or cache, list it once"),
            ));
        }
    }
}

fn timing(s: &TimingSpec, path: &str, out: &mut Vec<Problem>) {
    if let Some(w) = s.status_wait_seconds {
        range(
            w,
            1,
            super::limits::STATUS_WAIT_MAX_SECONDS,
            &child(path, "status_wait_seconds"),
            "seconds",
            out,
        );
    }
    range(
        s.poll_seconds,
        1,
        3600,
        &child(path, "poll_seconds"),
        "seconds",
        out,
    );
    range(
        s.catch_up_hours,
        1,
        720,
        &child(path, "catch_up_hours"),
        "hours",
        out,
    );
    range(
        s.stall_seconds,
        10,
        3600,
        &child(path, "stall_seconds"),
        "seconds",
        out,
    );
    range(
        s.approval_timeout_hours,
        1,
        720,
        &child(path, "approval_timeout_hours"),
        "hours",
        out,
    );
    if let Some(w) = s.rollback_window_seconds {
        range(
            w,
            1,
            720 * 3600,
            &child(path, "rollback_window_seconds"),
            "seconds",
            out,
        );
    }
    if let Some(h) = s.dns_hold_seconds {
        range(
            h,
            0,
            86_400,
            &child(path, "dns_hold_seconds"),
            "seconds",
            out,
        );
    }
    if let Some(c) = s.canary_interval_seconds {
        range(
            c,
            1,
            86_400,
            &child(path, "canary_interval_seconds"),
            "seconds",
            out,
        );
    }
}

/// Rules that span sections.
fn cross(spec: &MigrationSpec, out: &mut Vec<Problem>) {
    match (spec.cutover.endpoint, &spec.endpoint) {
        (EndpointMode::Proxy, None) => out.push(Problem::new(
            "endpoint",
            "is required when cutover.endpoint is \"proxy\" (the default): add {\"url_param\": \"/<app>/endpoint-url\"} naming the SSM parameter with the URL your AWS fleet uses to reach Ferry's endpoint, or set cutover.endpoint to \"redeploy\"",
        )),
        (EndpointMode::Redeploy, Some(_)) => out.push(Problem::new(
            "endpoint",
            "is set but cutover.endpoint is \"redeploy\", which does not use it; remove the section or set cutover.endpoint to \"proxy\"",
        )),
        (EndpointMode::Proxy, Some(e)) => {
            if e.target_url_param.as_ref() == Some(&spec.source.database_url_param) {
                out.push(Problem::new(
                    "endpoint.target_url_param",
                    "is the same parameter as source.database_url_param; it must hold a URL of the RDS target",
                ));
            }
            for (path, other) in [
                ("source.database_url_param", &spec.source.database_url_param),
                ("target.database_url_param", &spec.target.database_url_param),
            ] {
                if &e.url_param == other {
                    out.push(Problem::new(
                        "endpoint.url_param",
                        format!("is the same parameter as {path}; the endpoint's URL (what the app fleet uses) needs its own parameter"),
                    ));
                }
            }
        }
        (EndpointMode::Redeploy, None) => {}
    }
    params_apart(spec, out);
    for (path, message) in super::limits::problems(spec) {
        out.push(Problem::new(path, message));
    }
    if spec.source.database_url_param == spec.target.database_url_param {
        out.push(Problem::new(
            "target.database_url_param",
            "is the same parameter as source.database_url_param; the target needs its own URL",
        ));
    }
}

/// Parameters Ferry reads must not be ones it writes: config sync copies every Heroku config
/// var under the config prefix (DATABASE_URL included) and the cutover and rollback rewrite
/// `<prefix>DATABASE_URL`, so a database URL or token kept there is overwritten mid-migration.
/// And the Heroku token cannot share a parameter with a database URL.
fn params_apart(spec: &MigrationSpec, out: &mut Vec<Problem>) {
    let prefix = spec.config_ssm_prefix();
    let mut read: Vec<(&str, &str)> = vec![
        ("heroku.api_token_param", &spec.heroku.api_token_param),
        ("source.database_url_param", &spec.source.database_url_param),
        ("target.database_url_param", &spec.target.database_url_param),
    ];
    if let Some(e) = &spec.endpoint {
        read.push(("endpoint.url_param", &e.url_param));
        if let Some(t) = &e.target_url_param {
            read.push(("endpoint.target_url_param", t));
        }
    }
    if let Some(w) = &spec.approvals.slack_webhook_param {
        read.push(("approvals.slack_webhook_param", w));
    }
    if let Some(r) = &spec.redis {
        read.push(("redis.source_url_param", &r.source_url_param));
        read.push(("redis.target_url_param", &r.target_url_param));
    }
    for (path, name) in &read {
        if name.starts_with(&prefix) {
            out.push(Problem::new(
                *path,
                format!(
                    "{name:?} is under the config prefix {prefix:?}, where config sync writes the Heroku config vars and the cutover writes DATABASE_URL: it would be overwritten during the migration; keep it outside that prefix (or set config_vars.ssm_prefix elsewhere)"
                ),
            ));
        }
    }
    for (path, other) in [
        ("source.database_url_param", &spec.source.database_url_param),
        ("target.database_url_param", &spec.target.database_url_param),
    ] {
        if let Some(r) = &spec.redis {
            for (rpath, rname) in [
                ("redis.source_url_param", &r.source_url_param),
                ("redis.target_url_param", &r.target_url_param),
            ] {
                if rname == other {
                    out.push(Problem::new(
                        rpath,
                        format!(
                            "is the same parameter as {path}; a Redis URL needs its own parameter"
                        ),
                    ));
                }
            }
        }
        if &spec.heroku.api_token_param == other {
            out.push(Problem::new(
                "heroku.api_token_param",
                format!(
                    "is the same parameter as {path}; the Heroku API token needs its own parameter"
                ),
            ));
        }
    }
}

fn range(v: u32, min: u32, max: u32, path: &str, unit: &str, out: &mut Vec<Problem>) {
    if v < min || v > max {
        out.push(Problem::new(
            path,
            format!("must be from {min} to {max} {unit}; got {v}"),
        ));
    }
}

/// An SSM parameter name: fully qualified (`/a/b`), allowed characters, not in the reserved
/// `aws`/`ssm` namespaces.
fn ssm_name(name: &str, path: &str, out: &mut Vec<Problem>) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
    let first = name.trim_start_matches('/').to_ascii_lowercase();
    let reserved = first.starts_with("aws") || first.starts_with("ssm");
    // SSM: no empty level, no trailing slash, at most 15 levels.
    let levels_ok = !name.contains("//")
        && !name.ends_with('/')
        && name.trim_start_matches('/').split('/').count() <= 15;
    if !name.starts_with('/')
        || name.len() < 2
        || name.len() > 1011
        || !ok_chars
        || reserved
        || !levels_ok
    {
        out.push(Problem::new(
            path,
            format!(
                "{name:?} is not an SSM parameter name Ferry can use; give the full path, e.g. /myapp/prod/database-url (letters, digits, `_ . - /`, at most 15 levels, no empty level or trailing /, not starting with aws or ssm)"
            ),
        ));
    }
}

/// Checks a DNS name and returns it lower-cased without the trailing dot.
fn dns_name(name: &str, path: &str, out: &mut Vec<Problem>) -> Option<String> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = n.split('.').count() >= 2
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    // A top-level label is never all digits (RFC 3696 §2): `1.2` is an address fragment.
    let numeric_tld = n
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()));
    if numeric_tld && n.parse::<std::net::IpAddr>().is_err() {
        out.push(Problem::new(
            path,
            format!("{name:?} ends in an all-digit label, which no host name has; give a fully qualified host name such as app.example.com"),
        ));
        return None;
    }
    if n.parse::<std::net::IpAddr>().is_ok() {
        out.push(Problem::new(
            path,
            format!("{name:?} is an IP address; Route 53 CNAME records need a host name (the load balancer's or Heroku's DNS target)"),
        ));
        return None;
    }
    if n.len() > 253 || !labels_ok {
        let hint = if name.contains("://") {
            "drop the scheme; give a host name such as app.example.com"
        } else {
            "give a fully qualified host name such as app.example.com"
        };
        out.push(Problem::new(
            path,
            format!("{name:?} is not a DNS name; {hint}"),
        ));
        return None;
    }
    Some(n)
}

fn is_sns_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.as_slice(),
        [arn_, partition, "sns", region, account, topic]
            if *arn_ == "arn"
                && region_in_partition(region, partition)
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && !topic.is_empty()
                && topic.len() <= 256
                && topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
}

/// Whether `region` is shaped like an AWS region (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-5`) of `partition`.
fn region_in_partition(region: &str, partition: &str) -> bool {
    let mut words: Vec<&str> = region.split('-').collect();
    let Some(number) = words.pop() else {
        return false;
    };
    let shaped = words.len() >= 2
        && words[0].len() == 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && number.chars().all(|c| c.is_ascii_digit());
    const AREAS: &[&str] = &["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx", "cn"];
    shaped
        && AREAS.contains(&words[0])
        && match partition {
            "aws" => {
                words[0] != "cn" && words.get(1) != Some(&"gov") && words.get(1) != Some(&"iso")
            }
            "aws-cn" => words[0] == "cn",
            "aws-us-gov" => words[0] == "us" && words.get(1) == Some(&"gov"),
            "aws-iso" | "aws-iso-b" | "aws-iso-e" | "aws-iso-f" => {
                words.get(1).is_some_and(|w| w.starts_with("iso"))
            }
            "aws-eusc" => words[0] == "eu",
            _ => false,
        }
}

/// Refuses a list entry that repeats an earlier one.
fn no_duplicates(list: &[String], path: &str, out: &mut Vec<Problem>) {
    for (i, item) in list.iter().enumerate() {
        if list[..i].contains(item) {
            out.push(Problem::new(
                index(path, i),
                format!("{item:?} is listed twice; remove one"),
            ));
        }
    }
}
