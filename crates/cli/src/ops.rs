//! The operator commands that act on one migration through AWS (or the local emulator through
//! `AWS_ENDPOINT_URL`): `validate`, `start`, `approve` / `reject`, `pause` / `resume`,
//! `abort`, `report`.

use std::path::Path;

use anyhow::{Context, bail};
use clap::ValueEnum;
use ferry_core::{
    MigrationStore,
    approval::{self, Decision},
    state::{ApprovalStatus, AuditEvent, Gate, Outcome, WorkerCommand},
};
use ferry_steps::facts::{self, CutoverFact};

use crate::{
    Output,
    fail::{Blocked, Code, Usage},
    session::{aws, env, opened},
    status,
};

/// Reads and checks a spec file: unreadable is a usage error, invalid blocks.
pub fn read_spec(path: &Path) -> anyhow::Result<(String, ferry_core::spec::MigrationSpec)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("read migration spec {}: {e}", path.display())))?;
    let spec =
        ferry_core::spec::parse(&text).map_err(|p| Blocked(format!("{}: {p}", path.display())))?;
    Ok((text, spec))
}

/// `ferry validate`.
pub fn validate(path: &Path, output: Output) -> anyhow::Result<Code> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("read migration spec {}: {e}", path.display())))?;
    let parsed = ferry_core::spec::parse(&text);
    if output == Output::Json {
        let doc = match &parsed {
            Ok(spec) => serde_json::json!({
                "file": path.display().to_string(), "valid": true,
                "migration_id": spec.migration_id, "app": spec.heroku.app,
                "capture": spec.replication.capture, "steps": spec.traffic.steps,
                "problems": [],
            }),
            Err(problems) => serde_json::json!({
                "file": path.display().to_string(), "valid": false,
                "problems": problems.iter().map(|p| serde_json::json!({
                    "path": p.path, "message": p.message,
                })).collect::<Vec<_>>(),
            }),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(if parsed.is_ok() {
            Code::Done
        } else {
            Code::Blocked
        });
    }
    match parsed {
        Ok(spec) => {
            println!(
                "{}: valid (migration {}, app {}, capture {}, steps {:?})",
                path.display(),
                spec.migration_id,
                spec.heroku.app,
                serde_json::to_string(&spec.replication.capture)?,
                spec.traffic.steps
            );
            Ok(Code::Done)
        }
        Err(problems) => {
            eprint!("{}: {problems}", path.display());
            Ok(Code::Blocked)
        }
    }
}

/// `ferry start migration.json`: validates the spec, then starts the state machine with it as
/// the input and the migration id as the execution name.
pub async fn start(path: &Path) -> anyhow::Result<Code> {
    let (text, spec) = read_spec(path)?;
    let machine = env("FERRY_STATE_MACHINE_ARN", "the state machine's ARN")?;
    let aws = aws().await;
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
    println!("{}", out.execution_arn());
    Ok(Code::Done)
}

/// The gate a person decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GateArg {
    /// Before the canary moves traffic.
    #[value(name = "shift_traffic", alias = "shift-traffic")]
    ShiftTraffic,
    /// Before the database cutover.
    Cutover,
    /// Before cleanup ends the rollback window.
    Finish,
}

impl From<GateArg> for Gate {
    fn from(g: GateArg) -> Gate {
        match g {
            GateArg::ShiftTraffic => Gate::ShiftTraffic,
            GateArg::Cutover => Gate::Cutover,
            GateArg::Finish => Gate::Finish,
        }
    }
}

/// `approve` / `reject` arguments.
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// The migration id.
    id: String,
    /// Which gate.
    #[arg(long, value_enum)]
    gate: GateArg,
    /// Approve the finish gate although the exact comparison of the cutover found rows that
    /// differ (or did not finish): an explicit override, audited as such. Without it such an
    /// approve is refused; a reject (roll back, losing nothing) never needs it.
    #[arg(long)]
    accept_differences: bool,
}

/// `ferry approve|reject <id> --gate <gate>`: decides a pending gate as the caller's IAM
/// identity (which the spec's approvers must list), audited like any approval.
pub async fn decide(args: &GateArgs, approve: bool) -> anyhow::Result<Code> {
    let (id, gate) = (args.id.as_str(), Gate::from(args.gate));
    let aws = aws().await;
    let caller = caller(&aws).await?;
    let (store, rec) = opened(&aws, id).await?;
    match store.approval(id, gate).await? {
        Some(a) if a.status == ApprovalStatus::Pending => {}
        Some(a) => bail!(Blocked(format!(
            "gate {gate} of {id} was already decided ({} by {})",
            a.status.as_str(),
            a.decided_by.unwrap_or_default()
        ))),
        None => bail!(Blocked(format!(
            "gate {gate} of {id} is not waiting for a decision (yet); `ferry wait {id} --until {}` waits for it",
            match gate {
                Gate::ShiftTraffic => "awaiting_traffic_approval",
                Gate::Cutover => "awaiting_cutover_approval",
                Gate::Finish => "rollback_window",
            }
        ))),
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
            accept_differences: approve && args.accept_differences,
        },
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| match e {
        approval::ApprovalError::NotAllowed { .. } => Blocked(format!(
            "{e}; ask an approver listed in the spec's approvals.approvers"
        ))
        .into(),
        approval::ApprovalError::Differences { .. } => {
            Blocked(e.to_string().replace("<id>", id)).into()
        }
        e => anyhow::anyhow!("{e}"),
    })?;
    println!(
        "gate {gate} of {id} {} by {caller}",
        if approve { "approved" } else { "rejected" }
    );
    Ok(Code::Done)
}

/// The caller's IAM identity.
pub async fn caller(aws: &aws_config::SdkConfig) -> anyhow::Result<String> {
    Ok(aws_sdk_sts::Client::new(aws)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "who is calling (sts:GetCallerIdentity): {}; log in first (aws sso login, or set AWS_PROFILE)",
                aws_sdk_sts::error::DisplayErrorContext(&e)
            )
        })?
        .arn()
        .context("STS returned no caller ARN")?
        .to_string())
}

/// `ferry abort <id>`: records the abort (audited with the caller's identity) and interrupts a
/// waiting gate or canary; the state machine then rolls back.
pub async fn abort(id: &str) -> anyhow::Result<Code> {
    let aws = aws().await;
    let by = caller(&aws).await?;
    let (store, _) = opened(&aws, id).await?;
    let callbacks = ferry_aws::SfnCallbacks::new(aws_sdk_sfn::Client::new(&aws));
    let out = ferry_steps::abort::request_with(&store, &callbacks, id, &by)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "abort of {id} recorded (by {} at {}); {}; the state machine rolls back",
        out.request.by,
        out.request.at.to_rfc3339(),
        if out.interrupted.is_empty() {
            "the running step stops at its next check".to_string()
        } else {
            format!("interrupted: {}", out.interrupted.join(", "))
        }
    );
    Ok(Code::Done)
}

/// What `pause` / `resume` ask of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Stop applying (capture goes on).
    Pause,
    /// Apply again.
    Resume {
        /// Past a schema-change block a person checked.
        force: bool,
    },
}

/// `ferry pause|resume <id>`: sends the worker its command as the caller (an approver),
/// audited, and waits briefly for the worker to carry it out.
pub async fn command(id: &str, hold: Hold) -> anyhow::Result<Code> {
    let aws = aws().await;
    let by = caller(&aws).await?;
    let (store, rec) = opened(&aws, id).await?;
    if !rec
        .spec
        .approvals
        .approvers
        .iter()
        .any(|a| approval::may_approve(a, &by))
    {
        bail!(Blocked(format!(
            "{by} is not among the spec's approvals.approvers, who alone may pause or resume {id}"
        )));
    }
    if rec.phase.is_final() {
        bail!(Blocked(format!("migration {id} has ended ({})", rec.phase)));
    }
    let (command, action) = match hold {
        Hold::Pause => (WorkerCommand::Pause, "pause_apply"),
        Hold::Resume { force } => (WorkerCommand::Resume { force }, "resume_apply"),
    };
    let now = chrono::Utc::now();
    let sent = store.send_command(id, command, &by, now).await?;
    let event = AuditEvent::new(
        now,
        "operator",
        by.clone(),
        action,
        Outcome::Info,
        serde_json::json!({ "command_seq": sent.seq, "force": matches!(hold, Hold::Resume { force: true }) }),
    );
    store.append_audit(id, &event).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let p = store.progress(id).await?;
        if let Some(p) = p.as_ref().filter(|p| p.acked_command >= sent.seq) {
            println!(
                "{action} #{} of {id} carried out by the worker (apply {}{}) — sent by {by}",
                sent.seq,
                if p.paused { "paused" } else { "running" },
                p.error_name
                    .as_deref()
                    .map(|n| format!(
                        "; still {n}: apply the same DDL on the target, or resume --force"
                    ))
                    .unwrap_or_default()
            );
            return Ok(Code::Done);
        }
        if std::time::Instant::now() > deadline {
            println!(
                "{action} #{} of {id} sent by {by}; the worker has not carried it out yet (it reads commands every few seconds; `ferry status {id}` shows when)",
                sent.seq
            );
            return Ok(Code::Done);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `ferry report <id>`: the migration's audit log as a markdown timeline (or JSON).
pub async fn report(id: &str, output: Output) -> anyhow::Result<Code> {
    let aws = aws().await;
    let (store, rec) = opened(&aws, id).await?;
    let events = store.audit_log(id).await?;
    let cutover = facts::get::<CutoverFact>(&store, id, facts::CUTOVER).await?;
    let checks = status::checks(&store, id).await?;
    if output == Output::Json {
        let doc = serde_json::json!({
            "migration_id": id,
            "app": rec.app,
            "phase": rec.phase,
            "started": rec.created_at,
            "updated": rec.updated_at,
            "write_freeze_ms": cutover.as_ref().and_then(CutoverFact::freeze_ms),
            "endpoint_paused_ms": cutover.as_ref().and_then(CutoverFact::paused_ms),
            "checks": checks,
            "events": events,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Code::Done);
    }
    let mut md = format!(
        "# Ferry migration {id}\n\n- Heroku app: {}\n- phase: **{}**\n- started: {}\n- last change: {}\n",
        rec.app,
        rec.phase,
        rec.created_at.to_rfc3339(),
        rec.updated_at.to_rfc3339()
    );
    if let Some(c) = &cutover {
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
    for line in checks {
        md.push_str(&format!("- {line}\n"));
    }
    md.push_str("\n| time (UTC) | step | who | action | outcome | detail |\n| --- | --- | --- | --- | --- | --- |\n");
    for e in &events {
        md.push_str(&event_row(e)?);
    }
    println!("{md}");
    Ok(Code::Done)
}

fn event_row(e: &AuditEvent) -> anyhow::Result<String> {
    let mut detail = e.detail.to_string();
    if detail.len() > 160 {
        let mut cut = 157;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push('…');
    }
    Ok(format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
        e.step,
        e.actor,
        e.action,
        serde_json::to_value(e.outcome)?.as_str().unwrap_or("?"),
        detail.replace('|', "\\|")
    ))
}
