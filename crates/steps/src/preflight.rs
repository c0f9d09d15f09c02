//! Step 1: validate the spec, take the app's lock, create the migration record, and check
//! everything a person would check before starting: both databases (preflight analysis), the
//! RDS instance, and the Heroku app (inventory into the audit log).

use ferry_core::{
    spec::{self, CaptureMode, MigrationSpec},
    state::{MigrationRecord, Outcome, Phase},
};
use ferry_pg::preflight::{self, PreflightReport, Severity};
use serde::{Deserialize, Serialize};

use crate::{
    Deps, StepError, StepResult,
    facts::{self, AppRoles},
    now, role_of,
};

/// Input: the execution input (the spec) and the execution's id.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// The migration spec as the user wrote it.
    pub spec: serde_json::Value,
    /// `$$.Execution.Id`.
    pub execution_arn: String,
}

/// Waits and timeouts the state machine reads from the preflight's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Between replication status checks.
    pub poll_seconds: u32,
    /// How long one status invocation waits for the worker to be ready (it checks every
    /// `poll_seconds`), so a long catch-up costs few history events.
    pub status_wait_seconds: u32,
    /// Approval gates wait this long.
    pub approval_timeout_seconds: u64,
    /// The canary task waits this long for its last tick (steps × interval, doubled).
    pub canary_timeout_seconds: u64,
    /// The rollback window.
    pub rollback_window_seconds: u64,
}

/// Output: a small summary for the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The migration.
    pub migration_id: String,
    /// The Heroku app.
    pub app: String,
    /// The capture mode in use (`auto` resolved).
    pub capture: CaptureMode,
    /// Tables to copy.
    pub tables: usize,
    /// Their total size in bytes.
    pub database_bytes: i64,
    /// Source and target major versions.
    pub versions: String,
    /// Warning codes (details in the audit log).
    pub warnings: Vec<String>,
    /// Waits and timeouts.
    pub timing: Timing,
}

/// Runs the preflight.
pub async fn run(deps: &Deps, input: Input) -> StepResult<Output> {
    let spec = spec::from_value(&input.spec).map_err(StepError::Spec)?;
    let id = spec.migration_id.clone();
    let rec = start(deps, &spec, &input.execution_arn).await?;
    let rec = if rec.phase == Phase::Created {
        deps.enter(&id, Phase::Preflight).await?
    } else {
        rec
    };
    if rec.phase != Phase::Preflight {
        // A retry after preflight passed: report again, change nothing.
        tracing::info!(phase = %rec.phase, "preflight already passed");
    }

    let (source_url, target_url) = deps.urls(&spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    let mut report = preflight::analyse(
        &source,
        &target,
        spec.replication.capture,
        spec.replication.parallelism,
    )
    .await?;
    report
        .findings
        .extend(preflight::unchecked_source_certificate(
            &source_url,
            &spec.source.database_url_param,
        ));
    let mut blockers: Vec<String> = report.blockers().map(|f| format!("- {f}")).collect();
    blockers.extend(check_rds(deps, &spec, &report, target_url.user()).await?);
    blockers.extend(check_endpoint(deps, &spec).await?);
    blockers.extend(check_email_links(deps, &spec).await?);
    blockers.extend(check_redis(deps, &spec, &mut report.findings).await?);
    let replaced_ttl = check_dns(deps, &spec, &mut blockers).await?;
    let app_role = heroku_inventory(deps, &spec, &mut blockers).await?;
    deps.audit(
        &id,
        "preflight",
        "database_report",
        if blockers.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        },
        serde_json::json!({
            "capture": report.capture,
            "source_major": report.source.major,
            "target_major": report.target.as_ref().map(|t| t.major),
            "findings": report.findings,
            "blockers": blockers,
        }),
        Some("preflight/database_report".into()),
    )
    .await?;
    if !blockers.is_empty() {
        return Err(StepError::PreflightBlocked {
            count: blockers.len(),
            list: blockers.join("\n"),
        });
    }
    let target_role = target_role(deps, &spec, &target_url).await?;
    facts::put_once(
        deps.store.as_ref(),
        &id,
        facts::APP_ROLES,
        &AppRoles {
            source: app_role,
            target: target_role,
        },
    )
    .await?;
    Ok(Output {
        migration_id: id,
        app: spec.heroku.app.clone(),
        capture: report.capture.unwrap_or(CaptureMode::Trigger),
        tables: report.tables.len(),
        database_bytes: report.total_bytes(),
        versions: format!(
            "{} -> {}",
            report.source.major,
            report.target.as_ref().map_or(0, |t| t.major)
        ),
        warnings: report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .map(|f| f.code.to_string())
            .collect(),
        timing: timing(&spec, replaced_ttl),
    })
}

/// The role the app will write as on the target: the endpoint's, when it has its own.
async fn target_role(
    deps: &Deps,
    spec: &MigrationSpec,
    target_url: &ferry_pg::PgUrl,
) -> StepResult<String> {
    match spec
        .endpoint
        .as_ref()
        .and_then(|e| e.target_url_param.as_ref())
    {
        Some(param) if spec.proxied() => {
            let url = deps.params.get(param).await?;
            let url = ferry_pg::PgUrl::parse(&url).map_err(|e| StepError::BadParam {
                param: param.clone(),
                reason: e.to_string(),
            })?;
            role_of(&url, param)
        }
        _ => role_of(target_url, &spec.target.database_url_param),
    }
}

/// What is at the record's name: a blocker for each thing Route 53 would refuse; the record
/// the pair replaces kept for the rollback (the `dns` fact); its TTL.
async fn check_dns(
    deps: &Deps,
    spec: &MigrationSpec,
    blockers: &mut Vec<String>,
) -> StepResult<Option<u32>> {
    let replaced = match deps
        .router
        .inspect(&spec.traffic)
        .await?
        .plan(&spec.traffic)
    {
        Ok(replaced) => replaced,
        Err(problems) => {
            blockers.extend(problems.into_iter().map(|p| format!("- {p}")));
            None
        }
    };
    let replaced_ttl = replaced.as_ref().map(|r| r.ttl);
    facts::put_once(
        deps.store.as_ref(),
        &spec.migration_id,
        facts::DNS,
        &facts::DnsFact {
            replaced_ttl_seconds: replaced_ttl,
            replaced,
        },
    )
    .await?;
    Ok(replaced_ttl)
}

/// The Heroku app's inventory into the audit log; the role its DATABASE_URL logs in as (a
/// blocker when it has none).
async fn heroku_inventory(
    deps: &Deps,
    spec: &MigrationSpec,
    blockers: &mut Vec<String>,
) -> StepResult<String> {
    let name = &spec.heroku.app;
    let heroku = deps.heroku(spec).await?;
    let app = heroku.app(name).await?;
    let formation = heroku.formation(name).await?;
    let addons = heroku.addons(name).await?;
    let vars = heroku.config_vars(name).await?;
    let domains = heroku.domains(name).await?;
    let app_role = vars
        .get("DATABASE_URL")
        .and_then(|url| ferry_pg::PgUrl::parse(url).ok())
        .and_then(|u| u.user().map(str::to_string));
    let app_role = app_role.unwrap_or_else(|| {
        blockers.push(
            "- heroku_database_url: the Heroku app has no usable DATABASE_URL config var. Fix: attach the Heroku Postgres database as DATABASE".into(),
        );
        String::new()
    });
    deps.audit(
        &spec.migration_id,
        "preflight",
        "heroku_inventory",
        Outcome::Info,
        serde_json::json!({
            "app": app.name,
            "maintenance": app.maintenance,
            "region": app.region.map(|r| r.name),
            "formation": formation.iter().map(|f| serde_json::json!({
                "type": f.process_type, "quantity": f.quantity, "size": f.size,
            })).collect::<Vec<_>>(),
            "addons": addons.iter().map(|a| serde_json::json!({
                "service": a.addon_service.name, "plan": a.plan.name,
            })).collect::<Vec<_>>(),
            "config_var_names": vars.keys().collect::<Vec<_>>(),
            "domains": domains.iter().map(|d| &d.hostname).collect::<Vec<_>>(),
        }),
        Some("preflight/heroku_inventory".into()),
    )
    .await?;
    Ok(app_role)
}

/// The waits the state machine uses, from the spec and the TTL of the record the weighted pair
/// replaces (the canary holds 100% that long before it completes).
pub fn timing(spec: &MigrationSpec, replaced_ttl: Option<u32>) -> Timing {
    let interval = spec
        .timing
        .canary_interval_seconds
        .map(u64::from)
        .unwrap_or(u64::from(spec.traffic.step_interval_minutes) * 60);
    Timing {
        poll_seconds: spec.timing.poll_seconds,
        status_wait_seconds: spec.timing.status_wait_seconds(),
        approval_timeout_seconds: u64::from(spec.timing.approval_timeout_hours) * 3600,
        canary_timeout_seconds: (spec.traffic.steps.len() as u64 + 1) * interval * 2
            + 300
            + u64::from(crate::canary::hold_seconds(spec, replaced_ttl)),
        rollback_window_seconds: spec.rollback_window_seconds(),
    }
}

/// Lock, record, execution: a second migration of the app or a second execution of this
/// migration is refused here, before anything is touched.
async fn start(
    deps: &Deps,
    spec: &MigrationSpec,
    execution_arn: &str,
) -> StepResult<MigrationRecord> {
    let id = &spec.migration_id;
    if let Ok(existing) = deps.store.migration(id).await
        && existing.phase.is_final()
    {
        return Err(StepError::Ended {
            migration_id: id.clone(),
            phase: existing.phase.to_string(),
        });
    }
    deps.store
        .acquire_app_lock(&spec.heroku.app, id, now())
        .await?;
    let rec = deps
        .store
        .create_migration(&MigrationRecord::new(spec.clone(), now()))
        .await?;
    match rec.execution_arn.as_deref() {
        Some(arn) if arn == execution_arn => Ok(rec),
        Some(other) => Err(StepError::AlreadyRunning {
            migration_id: id.clone(),
            execution: other.to_string(),
        }),
        None => {
            let rec = deps
                .store
                .set_execution_arn(id, rec.version, execution_arn, now())
                .await?;
            deps.audit(
                id,
                "preflight",
                "start",
                Outcome::Started,
                serde_json::json!({ "execution": execution_arn, "app": spec.heroku.app }),
                Some("preflight/start".into()),
            )
            .await?;
            Ok(rec)
        }
    }
}

/// Major version of an RDS engine version string (`17.2` → 17).
fn major(version: &str) -> Option<i32> {
    version.split('.').next()?.parse().ok()
}

async fn check_rds(
    deps: &Deps,
    spec: &MigrationSpec,
    report: &PreflightReport,
    target_user: Option<&str>,
) -> StepResult<Vec<String>> {
    let id = &spec.target.rds_instance_id;
    let Some(db) = deps.databases.instance(id).await? else {
        return Ok(vec![format!(
            "- rds_instance: RDS instance {id} does not exist. Fix: create it, or correct target.rds_instance_id"
        )]);
    };
    let mut out = Vec::new();
    if db.status != "available" {
        out.push(format!(
            "- rds_status: RDS instance {id} is {}. Fix: wait until it is available",
            db.status
        ));
    }
    if db.engine != "postgres" && db.engine != "aurora-postgresql" {
        out.push(format!(
            "- rds_engine: RDS instance {id} runs {}. Fix: use a PostgreSQL instance",
            db.engine
        ));
    }
    match major(&db.engine_version) {
        Some(m) if m >= report.source.major => {}
        _ => out.push(format!(
            "- rds_version: RDS instance {id} runs PostgreSQL {} but the source runs {}. Fix: upgrade the instance to {} or newer",
            db.engine_version, report.source.major, report.source.major
        )),
    }
    if let Some(group) = &db.parameter_group
        && let Some(v) = deps
            .databases
            .parameter(group, "default_transaction_read_only")
            .await?
        && (v == "1" || v.eq_ignore_ascii_case("on"))
    {
        out.push(format!(
            "- rds_parameters: parameter group {group} sets default_transaction_read_only; the app could never write after cutover. Fix: reset it in the group"
        ));
    }
    out.extend(managed_password(spec, &db, target_user));
    Ok(out)
}

/// RDS manages the master password in Secrets Manager and rotates it: a URL that logs in as
/// the master user with a copied password stops working at the next rotation unless Ferry
/// follows the secret.
fn managed_password(
    spec: &MigrationSpec,
    db: &ferry_core::cloud::DbInstance,
    target_user: Option<&str>,
) -> Option<String> {
    let secret = db.master_secret_arn.as_deref()?;
    let master = db.master_username.as_deref()?;
    (target_user == Some(master) && spec.target.password_secret.as_deref() != Some(secret)).then(|| {
        format!(
            "- rds_managed_password: RDS manages the password of {master:?} on {} in Secrets Manager and rotates it (every 7 days by default); the password copied into {} stops logging in at the next rotation. Fix: set target.password_secret to {secret} and deploy the template with TargetMasterSecretArn set to it",
            spec.target.rds_instance_id, spec.target.database_url_param
        )
    })
}

/// Proxy mode: the endpoint must be deployed and serving before the migration starts (the
/// AWS fleet uses it from the first canary step), with the PgBouncer the cutover relies on.
/// Email approval links decide as their approver: with email approvers and links on, every
/// email subscription to the topic must be filtered to its own address (see
/// [`ferry_core::cloud::Subscription::leaks_links`]).
async fn check_email_links(deps: &Deps, spec: &MigrationSpec) -> StepResult<Vec<String>> {
    if deps.settings.approval_url.is_none()
        || !spec.approvals.approvers.iter().any(|a| a.contains('@'))
    {
        return Ok(Vec::new());
    }
    let subs = deps
        .notifier
        .subscriptions(&spec.approvals.sns_topic_arn)
        .await?;
    Ok(subs
        .iter()
        .filter_map(|s| {
            s.leaks_links().map(|why| {
                format!(
                    "- approvals.sns_topic_arn: the {} subscription of {} {why}. Fix: set its filter policy to {{\"ferry_approver\": [\"all\", \"{}\"]}} (aws sns set-subscription-attributes --attribute-name FilterPolicy)",
                    s.protocol, s.endpoint, s.endpoint
                )
            })
        })
        .collect())
}

async fn check_endpoint(deps: &Deps, spec: &MigrationSpec) -> StepResult<Vec<String>> {
    if !spec.proxied() {
        return Ok(Vec::new());
    }
    match crate::endpoint::ready(deps, spec, ferry_core::endpoint::Backend::Source).await {
        Ok(fleet) => {
            let mut out: Vec<String> = fleet
                .tasks
                .iter()
                .filter(|t| {
                    !ferry_core::endpoint::supports_prepared_statements(&t.pgbouncer_version)
                })
                .map(|t| {
                    format!(
                        "- endpoint ({}): {} runs {}, which cannot keep prepared statements in transaction pooling. Fix: deploy the endpoint from the repo's Dockerfile (PgBouncer 1.24)",
                        t.task_id, t.task_id, t.pgbouncer_version
                    )
                })
                .collect();
            out.extend(endpoint_answers(deps, spec).await?);
            Ok(out)
        }
        Err(StepError::EndpointUnavailable { reason, .. }) => Ok(vec![format!(
            "- endpoint: {reason}. Fix: deploy the stack with EndpointApp={} and the migration's parameters, or set cutover.endpoint to \"redeploy\"",
            spec.heroku.app
        )]),
        Err(e) => Err(e),
    }
}

/// The endpoint answers a query through the URL the AWS fleet will use (its balancer, from the
/// functions' subnets, with the client login the tasks accept), as the app will at boot.
async fn endpoint_answers(deps: &Deps, spec: &MigrationSpec) -> StepResult<Vec<String>> {
    let Some(ep) = &spec.endpoint else {
        return Ok(Vec::new());
    };
    let raw = deps.params.get(&ep.url_param).await?;
    let url = ferry_pg::PgUrl::parse(&raw).map_err(|e| StepError::BadParam {
        param: ep.url_param.clone(),
        reason: e.to_string(),
    })?;
    Ok(endpoint_blocker(&url, &ep.url_param)
        .await
        .into_iter()
        .collect())
}

/// The blocker when the endpoint at `url` (read from `param`) does not answer `SELECT 1`
/// within 15 s as the app would ask it.
pub async fn endpoint_blocker(url: &ferry_pg::PgUrl, param: &str) -> Option<String> {
    let asked = async {
        let client = url.connect_as_app().await.map_err(|e| e.to_string())?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(|e| ferry_pg::describe(&e))
    };
    let failed = match tokio::time::timeout(std::time::Duration::from_secs(15), asked).await {
        Ok(Ok(())) => return None,
        Ok(Err(e)) => e,
        Err(_) => "no answer in 15 s".to_string(),
    };
    Some(format!(
        "- endpoint.url_param: {} does not answer a query from the functions' subnets: {failed}. Fix: let the functions' security group reach the endpoint's balancer (EndpointClientSecurityGroup) and check the client login in {param}",
        url.redacted(),
    ))
}

/// The keys the queue patterns name on the source: how many, and a blocker for each that is
/// not a list or a sorted set (the hand-over moves only those).
async fn check_queues(source: &ferry_kv::RedisUrl, patterns: &[String]) -> (u64, Vec<String>) {
    let db = source.db;
    let checked = async {
        let mut conn = ferry_kv::Conn::connect(source).await?;
        ferry_kv::handover::check_queues(&mut conn, patterns).await
    };
    match checked.await {
        Ok((n, wrong)) => (
            n,
            wrong
                .into_iter()
                .map(|w| format!("- redis (db {db}): {w} but matches redis.queue_patterns; the hand-over moves only lists and sorted sets: narrow the patterns to the job queues"))
                .collect(),
        ),
        Err(e) => (
            0,
            vec![format!(
                "- redis (db {db}): the queue keys could not be listed: {e}"
            )],
        ),
    }
}

/// The Redis section: both servers probed (every listed database), each blocker with its fix.
/// A server that cannot be reached is a blocker, not a failed step: the fix is the operator's.
async fn check_redis(
    deps: &Deps,
    spec: &MigrationSpec,
    findings: &mut Vec<preflight::Finding>,
) -> StepResult<Vec<String>> {
    let Some(r) = &spec.redis else {
        return Ok(Vec::new());
    };
    let (source, target) = crate::verify_redis::urls(deps, r).await?;
    findings.extend(unchecked_redis_certificate(&source, &r.source_url_param));
    let mut out = Vec::new();
    for db in &r.databases {
        let (s_url, t_url) = (source.with_db(*db), target.with_db(*db));
        let probed = tokio::try_join!(
            ferry_kv::probe::probe(&s_url, false, true),
            ferry_kv::probe::probe(&t_url, true, true),
        );
        match probed {
            Ok((mut s, t)) => {
                let (queue_keys, not_queues) = check_queues(&s_url, &r.queue_patterns).await;
                s.queue_keys = queue_keys;
                tracing::info!(db, source_version = %s.version, target_version = %t.version, source_keys = ?s.keys, sidekiq_queues = s.sidekiq.queues, queue_keys, "redis probed");
                out.extend(
                    ferry_kv::probe::blockers(&s, &t)
                        .into_iter()
                        .map(|b| format!("- redis (db {db}): {b}")),
                );
                out.extend(not_queues);
            }
            Err(e) => out.push(format!(
                "- redis (db {db}): {e}. Fix: check the URL parameters, the security groups between the functions and ElastiCache, and AUTH"
            )),
        }
    }
    Ok(out)
}

/// The same warning for the source Redis (`ssl_cert_reqs=none`, as Heroku tells clients).
fn unchecked_redis_certificate(
    url: &ferry_kv::RedisUrl,
    param: &str,
) -> Option<preflight::Finding> {
    preflight::unchecked_redis_certificate(url.tls, param)
}

#[cfg(test)]
mod certificate_tests {
    use super::*;

    #[test]
    fn an_unchecked_heroku_certificate_is_a_warning_naming_the_parameter() {
        let url = ferry_pg::PgUrl::parse("postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com/d")
            .expect("url");
        let f = preflight::unchecked_source_certificate(&url, "/ferry/app/source").expect("warned");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.object.as_deref(), Some("/ferry/app/source"));
        assert!(f.message.contains("password"), "{f}");
        let checked = ferry_pg::PgUrl::parse(
            "postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com/d?sslmode=verify-full",
        )
        .expect("url");
        assert!(preflight::unchecked_source_certificate(&checked, "/p").is_none());

        let redis = ferry_kv::RedisUrl::parse(
            "rediss://:pw@ec2-1-2-3-4.compute-1.amazonaws.com:6380?ssl_cert_reqs=none",
        )
        .expect("url");
        let f = unchecked_redis_certificate(&redis, "/ferry/app/redis").expect("warned");
        assert_eq!(f.code, preflight::Code::RedisCertificateUnchecked);
        let checked =
            ferry_kv::RedisUrl::parse("rediss://:pw@cache.example.com:6380").expect("url");
        assert!(unchecked_redis_certificate(&checked, "/p").is_none());
    }
}
