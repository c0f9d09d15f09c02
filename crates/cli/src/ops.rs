//! The operator commands that talk to AWS (or to the local emulator through
//! `AWS_ENDPOINT_URL`): `start`, `status`, `approve` / `reject`.

use std::path::Path;

use anyhow::{Context, bail};
use ferry_core::{
    MigrationStore,
    approval::{self, Decision},
    state::{ApprovalStatus, DrainCheck, Gate},
    traffic::TrafficRouter,
};
use ferry_steps::facts::{self, CutoverFact};

fn env(name: &str, what: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .with_context(|| {
            format!("{name} is not set; set it to {what} (the stack's outputs name it)")
        })
}

fn store(aws: &aws_config::SdkConfig) -> anyhow::Result<ferry_aws::DynamoStore> {
    Ok(ferry_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(aws),
        env("FERRY_STATE_TABLE", "the state table's name")?,
    ))
}

/// The state store and the migration's record.
async fn opened(
    aws: &aws_config::SdkConfig,
    id: &str,
) -> anyhow::Result<(ferry_aws::DynamoStore, ferry_core::state::MigrationRecord)> {
    let store = store(aws)?;
    let rec = store
        .migration(id)
        .await
        .with_context(|| format!("read migration {id}"))?;
    Ok((store, rec))
}

/// `ferry start migration.json`: validates the spec, then starts the state machine with it as
/// the input and the migration id as the execution name.
pub async fn start(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read migration spec {}", path.display()))?;
    let spec =
        ferry_core::spec::parse(&text).map_err(|p| anyhow::anyhow!("{}: {p}", path.display()))?;
    let machine = env("FERRY_STATE_MACHINE_ARN", "the state machine's ARN")?;
    let aws = ferry_aws::sdk_config().await;
    let out = aws_sdk_sfn::Client::new(&aws)
        .start_execution()
        .state_machine_arn(machine)
        .name(&spec.migration_id)
        .input(text)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "start the execution: {}",
                aws_sdk_sfn::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(out.execution_arn().to_string())
}

fn bar(done: u64, total: u64) -> String {
    let width = 30;
    let filled = if total == 0 {
        0
    } else {
        ((done as f64 / total as f64) * width as f64).round() as usize
    }
    .min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The cutover's windows for a status line: write freeze and endpoint pause, when known.
fn windows(c: &CutoverFact, lead: &str) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = c.freeze_ms() {
        parts.push(format!("write freeze {ms} ms"));
    }
    if let Some(ms) = c.paused_ms() {
        parts.push(format!("endpoint paused {ms} ms"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{lead}{}", parts.join(", "))
    }
}

/// Verify's figures and the exact comparison of the last drained freeze, one line each.
async fn checks(store: &ferry_aws::DynamoStore, id: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(v) = facts::get::<ferry_steps::verify::Output>(store, id, facts::VERIFY).await? {
        out.push(format!(
            "verify: {} tables, {} rows compared; {} key(s) rechecked, {} tolerated in flight{}; {:.1} s",
            v.tables,
            v.source_rows,
            v.keys_rechecked,
            v.keys_tolerated,
            if v.in_flight.is_empty() {
                String::new()
            } else {
                format!(" ({})", v.in_flight.join(", "))
            },
            v.duration_ms as f64 / 1000.0
        ));
        for r in &v.redis {
            out.push(format!(
                "verify redis db {}: {} key(s) compared, {} converged on a recheck",
                r.db, r.compared, r.rechecked
            ));
        }
    }
    if let Some(r) =
        facts::get::<ferry_core::state::RedisSync>(store, id, ferry_core::state::REDIS_FACT).await?
    {
        let age = (chrono::Utc::now() - r.at).num_seconds();
        out.extend(
            r.databases
                .iter()
                .map(|d| format!("{} (written {age} s ago)", d.summary())),
        );
    }
    if let Some(c) = facts::get::<DrainCheck>(store, id, facts::DRAIN_CHECK).await? {
        out.push(format!(
            "exact comparison after the {} drain: {}",
            if c.direction == "forward" {
                "cutover"
            } else {
                "rollback"
            },
            c.summary(chrono::Utc::now())
        ));
    }
    Ok(out)
}

/// `ferry status <id>`: phase, copy progress, lag, weights, gates, freeze window.
pub async fn status(id: &str) -> anyhow::Result<String> {
    let aws = ferry_aws::sdk_config().await;
    let (store, rec) = opened(&aws, id).await?;
    let mut out = format!(
        "migration {id} (Heroku app {})\nphase: {}\nexecution: {}\n",
        rec.app,
        rec.phase,
        rec.execution_arn.as_deref().unwrap_or("-")
    );
    if let Some(p) = store.progress(id).await? {
        out.push_str(&format!(
            "worker: {} (heartbeat {} s ago)\ncopy: {} {}/{} tables, {} rows, {:.0} MB\nlag: {} ({} change(s) waiting)\n",
            serde_json::to_value(p.phase)?.as_str().unwrap_or("?"),
            (chrono::Utc::now() - p.heartbeat_at).num_seconds(),
            bar(u64::from(p.tables_done), u64::from(p.tables_total)),
            p.tables_done,
            p.tables_total,
            p.rows_copied,
            p.bytes_copied as f64 / 1e6,
            p.lag_seconds.map_or("-".into(), |l| format!("{l:.1} s")),
            p.lag_changes.unwrap_or(0)
        ));
    }
    let router = ferry_aws::Route53Router::new(aws_sdk_route53::Client::new(&aws));
    match router.weights(&rec.spec.traffic).await {
        Ok(Some(w)) => out.push_str(&format!(
            "traffic: {:.0}% on AWS (weights heroku {} / aws {})\n",
            w.aws_share_percent(),
            w.heroku,
            w.aws
        )),
        Ok(None) => out.push_str("traffic: all on Heroku (no weighted records yet)\n"),
        Err(e) => out.push_str(&format!("traffic: unknown ({e})\n")),
    }
    for gate in [Gate::ShiftTraffic, Gate::Cutover, Gate::Finish] {
        if let Some(a) = store.approval(id, gate).await? {
            out.push_str(&format!(
                "gate {gate}: {}{}\n",
                serde_json::to_value(a.status)?.as_str().unwrap_or("?"),
                a.decided_by.map(|b| format!(" by {b}")).unwrap_or_default()
            ));
        }
    }
    if let Some(c) = facts::get::<CutoverFact>(&store, id, facts::CUTOVER).await? {
        out.push_str(&format!("cutover: {}{}\n", c.state, windows(&c, " — ")));
    }
    for line in checks(&store, id).await? {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// `ferry approve|reject <id> --gate <gate>`: decides a pending gate as the caller's IAM
/// identity (which the spec's approvers must list), audited like any approval.
pub async fn decide(id: &str, gate: &str, approve: bool) -> anyhow::Result<String> {
    let gate = Gate::parse(gate).with_context(|| {
        format!("--gate {gate:?} is not a gate; use shift_traffic, cutover or finish")
    })?;
    let aws = ferry_aws::sdk_config().await;
    let caller = caller(&aws).await?;
    let (store, rec) = opened(&aws, id).await?;
    match store.approval(id, gate).await? {
        Some(a) if a.status == ApprovalStatus::Pending => {}
        Some(a) => bail!(
            "gate {gate} of {id} was already decided ({:?} by {})",
            a.status,
            a.decided_by.unwrap_or_default()
        ),
        None => bail!("gate {gate} of {id} is not waiting for a decision (yet)"),
    }
    let callbacks = ferry_aws::SfnCallbacks::new(aws_sdk_sfn::Client::new(&aws));
    approval::decide(
        &store,
        &callbacks,
        &rec.spec.approvals.approvers,
        &Decision {
            migration_id: id.to_string(),
            gate,
            approve,
            approver: caller.clone(),
        },
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "gate {gate} of {id} {} by {caller}",
        if approve { "approved" } else { "rejected" }
    ))
}

/// The caller's IAM identity.
async fn caller(aws: &aws_config::SdkConfig) -> anyhow::Result<String> {
    Ok(aws_sdk_sts::Client::new(aws)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "who is calling (sts:GetCallerIdentity): {}",
                aws_sdk_sts::error::DisplayErrorContext(&e)
            )
        })?
        .arn()
        .context("STS returned no caller ARN")?
        .to_string())
}

/// `ferry abort <id>`: records the abort (audited with the caller's identity) and interrupts a
/// waiting gate or canary; the state machine then rolls back.
pub async fn abort(id: &str) -> anyhow::Result<String> {
    let aws = ferry_aws::sdk_config().await;
    let by = caller(&aws).await?;
    let (store, _) = opened(&aws, id).await?;
    let callbacks = ferry_aws::SfnCallbacks::new(aws_sdk_sfn::Client::new(&aws));
    let out = ferry_steps::abort::request_with(&store, &callbacks, id, &by)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "abort of {id} recorded (by {} at {}); {}; the state machine rolls back",
        out.request.by,
        out.request.at.to_rfc3339(),
        if out.interrupted.is_empty() {
            "the running step stops at its next check".to_string()
        } else {
            format!("interrupted: {}", out.interrupted.join(", "))
        }
    ))
}

/// `ferry report <id>`: the migration's audit log as a markdown timeline, with its outcome.
pub async fn report(id: &str) -> anyhow::Result<String> {
    let aws = ferry_aws::sdk_config().await;
    let (store, rec) = opened(&aws, id).await?;
    let events = store.audit_log(id).await?;
    let mut md = format!(
        "# Ferry migration {id}\n\n- Heroku app: {}\n- phase: **{}**\n- started: {}\n- last change: {}\n",
        rec.app,
        rec.phase,
        rec.created_at.to_rfc3339(),
        rec.updated_at.to_rfc3339()
    );
    if let Some(c) = facts::get::<CutoverFact>(&store, id, facts::CUTOVER).await? {
        if let Some(ms) = c.freeze_ms() {
            md.push_str(&format!("- write freeze: {ms} ms\n"));
        }
        if let Some(ms) = c.paused_ms() {
            md.push_str(&format!(
                "- endpoint paused (the app's queries held, none failed): {ms} ms\n"
            ));
            if c.state.on_target() {
                md.push_str(
                    "- the database endpoint stays in front of RDS as the app's pooler; to drop it, set the fleet's DATABASE_URL to an RDS URL and redeploy at leisure (both work), then deploy the stack with EndpointApp empty\n",
                );
            }
        }
    }
    for line in checks(&store, id).await? {
        md.push_str(&format!("- {line}\n"));
    }
    md.push_str("\n| time (UTC) | step | who | action | outcome | detail |\n| --- | --- | --- | --- | --- | --- |\n");
    for e in &events {
        let mut detail = e.detail.to_string();
        if detail.len() > 160 {
            let mut cut = 157;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.step,
            e.actor,
            e.action,
            serde_json::to_value(e.outcome)?.as_str().unwrap_or("?"),
            detail.replace('|', "\\|")
        ));
    }
    Ok(md)
}
