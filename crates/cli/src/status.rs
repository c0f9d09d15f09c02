//! `ferry status` (once, or `--watch`) and `ferry wait`: one view of a migration gathered from
//! the state table, Step Functions and Route 53, shown as text or JSON.

use std::time::{Duration, Instant};

use ferry_core::{
    MigrationStore,
    state::{DrainCheck, Gate, Phase},
    traffic::TrafficRouter,
};
use ferry_steps::facts::{self, CutoverFact};
use serde::Serialize;

use crate::{
    Output,
    fail::{Blocked, Code, TimedOut},
};

pub const STATUS_HELP: &str = "\
Examples:
  ferry status acme-2026-12
  ferry status acme-2026-12 --watch              # redraws every 5 s until the migration ends
  ferry status acme-2026-12 --output json | jq .worker.lag_seconds
  ferry status acme-2026-12 --watch --output json   # one JSON document per line

With --watch the exit code is the migration's: 0 completed, 1 failed or rolled back.";

pub const WAIT_HELP: &str = "\
Examples (CI: start, then wait within the runner's limit; approvals come from Slack or email):
  ferry wait acme-2026-12 --until awaiting_cutover_approval --timeout 5h
  ferry wait acme-2026-12 --until ended --timeout 50m --interval 30s

--until takes a phase (created, preflight, config_sync, replicating, verifying,
awaiting_traffic_approval, shifting_traffic, awaiting_cutover_approval, cutting_over,
rollback_window, cleaning_up, completed, rolling_back, rolled_back, failed) or `ended`.
A phase counts as reached once the migration is there or past it on the way to completed.
Exit: 0 reached (for `ended`: completed), 1 failed or rolled back first, 3 the worker is
blocked (a schema change: a person must act), 4 --timeout passed.";

/// `status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The migration id.
    id: String,
    /// Redraw until the migration ends.
    #[arg(long)]
    watch: bool,
    /// Between redraws (with --watch).
    #[arg(long, default_value = "5s", value_parser = crate::duration)]
    interval: Duration,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// `wait` arguments.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The migration id.
    id: String,
    /// The phase to reach, or `ended`.
    #[arg(long, value_parser = parse_until)]
    until: Until,
    /// Give up after this long (exit 4); keep it under the CI job's own limit.
    #[arg(long, default_value = "5h", value_parser = crate::duration)]
    timeout: Duration,
    /// Between looks.
    #[arg(long, default_value = "15s", value_parser = crate::duration)]
    interval: Duration,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// A phase, or any later one on the way to completed.
    Phase(Phase),
    /// Any final phase.
    Ended,
}

fn parse_until(text: &str) -> Result<Until, String> {
    if text == "ended" {
        return Ok(Until::Ended);
    }
    Phase::parse(text).map(Until::Phase).ok_or_else(|| {
        format!(
            "{text:?} is not a phase; use one of {} or ended",
            Phase::ALL.map(Phase::as_str).join(", ")
        )
    })
}

/// The execution as Step Functions sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionView {
    /// Its ARN.
    pub arn: String,
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED.
    pub status: Option<String>,
    /// The state it entered last.
    pub current_state: Option<String>,
    /// The error it failed with.
    pub error: Option<String>,
    /// The failure's cause.
    pub cause: Option<String>,
}

/// The worker's heartbeat, with the copy's progress by bytes.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// starting, schema, copying, streaming, reverse, stopped, failed.
    pub phase: serde_json::Value,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: i64,
    /// Whether apply is held (by `pause`, or by a schema change).
    pub paused: bool,
    /// The stable name of the error that stopped or paused it.
    pub error_name: Option<String>,
    /// That error, without secrets.
    pub error: Option<String>,
    /// Tables copied / to copy.
    pub tables_done: u32,
    /// Tables to copy.
    pub tables_total: u32,
    /// Rows copied.
    pub rows_copied: u64,
    /// COPY bytes moved.
    pub bytes_copied: u64,
    /// An estimate of the bytes to move.
    pub bytes_total: Option<u64>,
    /// Percent of the copy done, by bytes.
    pub copy_percent: Option<f64>,
    /// The copy's throughput, bytes per second.
    pub copy_bytes_per_second: Option<f64>,
    /// Seconds left in the copy at that throughput.
    pub eta_seconds: Option<u64>,
    /// Age of the oldest change not yet applied.
    pub lag_seconds: Option<f64>,
    /// Changes waiting.
    pub lag_changes: Option<u64>,
}

/// One gate's state.
#[derive(Debug, Clone, Serialize)]
pub struct GateView {
    /// The gate.
    pub gate: Gate,
    /// pending, approved, rejected.
    pub status: String,
    /// Who decided.
    pub decided_by: Option<String>,
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The migration.
    pub migration_id: String,
    /// The Heroku app.
    pub app: String,
    /// Its phase.
    pub phase: Phase,
    /// The execution.
    pub execution: Option<ExecutionView>,
    /// The worker.
    pub worker: Option<WorkerView>,
    /// Percent of traffic on AWS (None: unknown or no weighted records yet).
    pub traffic_aws_percent: Option<f64>,
    /// The traffic line as text.
    pub traffic: String,
    /// Gates asked so far.
    pub gates: Vec<GateView>,
    /// The cutover's state.
    pub cutover: Option<String>,
    /// Write freeze, ms.
    pub write_freeze_ms: Option<i64>,
    /// Endpoint paused, ms.
    pub endpoint_paused_ms: Option<i64>,
    /// Verify's figures and the last exact comparison.
    pub checks: Vec<String>,
}

fn worker_view(p: &ferry_core::state::WorkerProgress) -> WorkerView {
    let total = p.bytes_total.filter(|t| *t > 0);
    let copying = p.tables_total > 0 && p.tables_done < p.tables_total;
    let percent = match (total, copying) {
        (_, false) if p.tables_total > 0 => Some(100.0),
        // COPY bytes and on-disk bytes differ: hold at 99 % until the last table is done.
        (Some(t), true) => Some((p.bytes_copied as f64 / t as f64 * 100.0).min(99.0)),
        _ => None,
    };
    let eta = match (total, p.copy_bytes_per_second, copying) {
        (Some(t), Some(rate), true) if rate > 0.0 => {
            Some((t.saturating_sub(p.bytes_copied) as f64 / rate).ceil() as u64)
        }
        _ => None,
    };
    WorkerView {
        phase: serde_json::to_value(p.phase).unwrap_or_default(),
        heartbeat_age_seconds: (chrono::Utc::now() - p.heartbeat_at).num_seconds(),
        paused: p.paused,
        error_name: p.error_name.clone(),
        error: p.error.clone(),
        tables_done: p.tables_done,
        tables_total: p.tables_total,
        rows_copied: p.rows_copied,
        bytes_copied: p.bytes_copied,
        bytes_total: p.bytes_total,
        copy_percent: percent,
        copy_bytes_per_second: p.copy_bytes_per_second,
        eta_seconds: eta,
        lag_seconds: p.lag_seconds,
        lag_changes: p.lag_changes,
    }
}

async fn execution_view(aws: &aws_config::SdkConfig, arn: &str) -> ExecutionView {
    let sfn = aws_sdk_sfn::Client::new(aws);
    let mut view = ExecutionView {
        arn: arn.to_string(),
        status: None,
        current_state: None,
        error: None,
        cause: None,
    };
    match sfn.describe_execution().execution_arn(arn).send().await {
        Ok(d) => {
            view.status = Some(d.status().as_str().to_string());
            view.error = d.error().map(str::to_string);
            view.cause = d.cause().map(str::to_string);
        }
        Err(e) => {
            view.status = Some(format!(
                "unknown ({})",
                aws_sdk_sfn::error::DisplayErrorContext(&e)
            ))
        }
    }
    if let Ok(h) = sfn
        .get_execution_history()
        .execution_arn(arn)
        .reverse_order(true)
        .max_results(50)
        .send()
        .await
    {
        view.current_state = h.events().iter().find_map(|e| {
            e.state_entered_event_details()
                .map(|d| d.name().to_string())
        });
    }
    view
}

async fn traffic_line(
    aws: &aws_config::SdkConfig,
    spec: &ferry_core::spec::TrafficSpec,
) -> (Option<f64>, String) {
    let router = ferry_aws::Route53Router::new(aws_sdk_route53::Client::new(aws));
    match router.weights(spec).await {
        Ok(Some(w)) => (
            Some(w.aws_share_percent()),
            format!(
                "{:.0}% on AWS (weights heroku {} / aws {})",
                w.aws_share_percent(),
                w.heroku,
                w.aws
            ),
        ),
        Ok(None) => (Some(0.0), "all on Heroku (no weighted records yet)".into()),
        Err(e) => (None, format!("unknown ({e})")),
    }
}

/// Gathers the view of `id`.
pub async fn gather(aws: &aws_config::SdkConfig, id: &str) -> anyhow::Result<StatusView> {
    let (store, rec) = crate::session::opened(aws, id).await?;
    let execution = match &rec.execution_arn {
        Some(arn) => Some(execution_view(aws, arn).await),
        None => None,
    };
    let worker = store.progress(id).await?.as_ref().map(worker_view);
    let (traffic_aws_percent, traffic) = traffic_line(aws, &rec.spec.traffic).await;
    let mut gates = Vec::new();
    for gate in [Gate::ShiftTraffic, Gate::Cutover, Gate::Finish] {
        if let Some(a) = store.approval(id, gate).await? {
            gates.push(GateView {
                gate,
                status: a.status.as_str().to_string(),
                decided_by: a.decided_by,
            });
        }
    }
    let cutover = facts::get::<CutoverFact>(&store, id, facts::CUTOVER).await?;
    Ok(StatusView {
        migration_id: id.to_string(),
        app: rec.app.clone(),
        phase: rec.phase,
        execution,
        worker,
        traffic_aws_percent,
        traffic,
        gates,
        cutover: cutover.as_ref().map(|c| c.state.to_string()),
        write_freeze_ms: cutover.as_ref().and_then(CutoverFact::freeze_ms),
        endpoint_paused_ms: cutover.as_ref().and_then(CutoverFact::paused_ms),
        checks: checks(&store, id).await?,
    })
}

fn bar(percent: f64) -> String {
    let width = 30;
    let filled = ((percent / 100.0) * width as f64)
        .round()
        .clamp(0.0, width as f64) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn eta(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn worker_text(w: &WorkerView) -> String {
    let mut out = format!(
        "worker: {}{} (heartbeat {} s ago)\n",
        w.phase.as_str().unwrap_or("?"),
        if w.paused { ", apply PAUSED" } else { "" },
        w.heartbeat_age_seconds
    );
    if let Some(name) = &w.error_name {
        out.push_str(&format!(
            "worker error: {name}: {}\n",
            w.error.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "copy: {} {} — {:.0} of {} MB, {}/{} tables, {} rows{}{}\n",
        bar(w.copy_percent.unwrap_or(0.0)),
        w.copy_percent.map_or("-".into(), |p| format!("{p:.0}%")),
        w.bytes_copied as f64 / 1e6,
        w.bytes_total
            .map_or("?".into(), |t| format!("~{:.0}", t as f64 / 1e6)),
        w.tables_done,
        w.tables_total,
        w.rows_copied,
        w.copy_bytes_per_second
            .map(|r| format!(", {:.1} MB/s", r / 1e6))
            .unwrap_or_default(),
        w.eta_seconds
            .map(|s| format!(", ETA {}", eta(s)))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "lag: {} ({} change(s) waiting)\n",
        w.lag_seconds.map_or("-".into(), |l| format!("{l:.1} s")),
        w.lag_changes.unwrap_or(0)
    ));
    out
}

impl StatusView {
    /// The text form.
    pub fn text(&self) -> String {
        let mut out = format!(
            "migration {} (Heroku app {})\nphase: {}\n",
            self.migration_id, self.app, self.phase
        );
        match &self.execution {
            Some(e) => {
                out.push_str(&format!(
                    "execution: {} — {}{}\n",
                    e.arn,
                    e.status.as_deref().unwrap_or("?"),
                    e.current_state
                        .as_deref()
                        .map(|s| format!(", in state {s}"))
                        .unwrap_or_default()
                ));
                if let Some(err) = &e.error {
                    out.push_str(&format!(
                        "failure: {err}: {}\n",
                        e.cause.as_deref().unwrap_or("")
                    ));
                }
            }
            None => out.push_str("execution: -\n"),
        }
        if let Some(w) = &self.worker {
            out.push_str(&worker_text(w));
        }
        out.push_str(&format!("traffic: {}\n", self.traffic));
        for g in &self.gates {
            out.push_str(&format!(
                "gate {}: {}{}\n",
                g.gate,
                g.status,
                g.decided_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(c) = &self.cutover {
            let mut windows = Vec::new();
            if let Some(ms) = self.write_freeze_ms {
                windows.push(format!("write freeze {ms} ms"));
            }
            if let Some(ms) = self.endpoint_paused_ms {
                windows.push(format!("endpoint paused {ms} ms"));
            }
            out.push_str(&format!(
                "cutover: {c}{}\n",
                if windows.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", windows.join(", "))
                }
            ));
        }
        for line in &self.checks {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Whether the worker is held by something a person must fix.
    fn blocked(&self) -> Option<String> {
        let w = self.worker.as_ref()?;
        let name = w.error_name.as_deref()?;
        name.starts_with("Ferry.Blocked.").then(|| {
            format!(
                "the worker is blocked: {name}: {} — fix it, then `ferry resume {}`",
                w.error.as_deref().unwrap_or(""),
                self.migration_id
            )
        })
    }

    /// Whether the execution stopped without the phase saying so.
    fn execution_ended_badly(&self) -> Option<String> {
        let e = self.execution.as_ref()?;
        matches!(
            e.status.as_deref(),
            Some("FAILED" | "TIMED_OUT" | "ABORTED")
        )
        .then(|| {
            format!(
                "the execution {}: {} {}",
                e.status.as_deref().unwrap_or("?").to_lowercase(),
                e.error.as_deref().unwrap_or(""),
                e.cause.as_deref().unwrap_or("")
            )
        })
    }
}

fn print(view: &StatusView, output: Output, watch: bool) -> anyhow::Result<()> {
    match (output, watch) {
        (Output::Json, false) => println!("{}", serde_json::to_string_pretty(view)?),
        (Output::Json, true) => println!("{}", serde_json::to_string(view)?),
        (Output::Text, true) => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "{}(as of {}; Ctrl-C stops watching, not the migration)\n",
                view.text(),
                chrono::Utc::now().format("%H:%M:%S UTC")
            );
        }
        (Output::Text, false) => print!("{}", view.text()),
    }
    Ok(())
}

/// `ferry status <id> [--watch]`.
pub async fn status(args: StatusArgs) -> anyhow::Result<Code> {
    let aws = crate::session::aws().await;
    loop {
        let view = gather(&aws, &args.id).await?;
        print(&view, args.output, args.watch)?;
        if !args.watch {
            return Ok(Code::Done);
        }
        if view.phase.is_final() {
            return Ok(if view.phase == Phase::Completed {
                Code::Done
            } else {
                Code::Failed
            });
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// Where `phase` stands with respect to `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Not yet.
    No,
    /// Reached.
    Yes,
    /// It ended or turned back without reaching it.
    Never,
}

/// The happy path, in order: the phases a completed migration goes through.
fn happy_index(p: Phase) -> Option<usize> {
    Phase::ALL[..=11].iter().position(|x| *x == p)
}

/// Whether `phase` counts as having reached `until`.
pub fn reached(phase: Phase, until: Until) -> Reached {
    match until {
        Until::Ended if phase == Phase::Completed => Reached::Yes,
        Until::Ended if phase.is_final() => Reached::Never,
        Until::Ended => Reached::No,
        Until::Phase(want) if want == phase => Reached::Yes,
        Until::Phase(want) => match (happy_index(want), happy_index(phase)) {
            (Some(w), Some(p)) if p > w => Reached::Yes,
            (Some(_), Some(_)) => Reached::No,
            // Waiting for a happy phase, and the migration turned back.
            (Some(_), None) => Reached::Never,
            (None, Some(_)) if phase.is_final() => Reached::Never,
            (None, Some(_)) => Reached::No,
            (None, None) if want == Phase::RollingBack && phase == Phase::RolledBack => {
                Reached::Yes
            }
            (None, None) if phase.is_final() => Reached::Never,
            (None, None) => Reached::No,
        },
    }
}

/// `ferry wait <id> --until <phase|ended>`.
pub async fn wait(args: WaitArgs) -> anyhow::Result<Code> {
    let aws = crate::session::aws().await;
    let started = Instant::now();
    let mut last_phase = None;
    loop {
        let view = match gather(&aws, &args.id).await {
            Ok(v) => v,
            // Started a moment ago: the preflight step has not created the record yet.
            Err(e) if not_found(&e) && started.elapsed() + args.interval <= args.timeout => {
                if last_phase.is_none() {
                    eprintln!("{}: no record yet (the execution is starting)", args.id);
                }
                tokio::time::sleep(args.interval).await;
                continue;
            }
            Err(e) if not_found(&e) => anyhow::bail!(TimedOut(format!(
                "{} has no record after {:?}: was it started (ferry start)?",
                args.id, args.timeout
            ))),
            Err(e) => return Err(e.context(format!("wait for {}", args.id))),
        };
        if last_phase != Some(view.phase) {
            eprintln!(
                "{} {}: {}",
                chrono::Utc::now().format("%H:%M:%S"),
                args.id,
                view.phase
            );
            last_phase = Some(view.phase);
        }
        match reached(view.phase, args.until) {
            Reached::Yes => {
                println!("{}", view.phase);
                return Ok(Code::Done);
            }
            Reached::Never => anyhow::bail!(
                "{} is {} and will not reach {}{}",
                args.id,
                view.phase,
                until_name(args.until),
                view.execution
                    .as_ref()
                    .and_then(|e| e
                        .error
                        .as_ref()
                        .map(|err| format!(" ({err}: {})", e.cause.as_deref().unwrap_or(""))))
                    .unwrap_or_default()
            ),
            Reached::No => {}
        }
        if let Some(why) = view.execution_ended_badly() {
            anyhow::bail!("{}: {why}", args.id);
        }
        if let Some(why) = view.blocked() {
            anyhow::bail!(Blocked(format!("{}: {why}", args.id)));
        }
        if started.elapsed() + args.interval > args.timeout {
            anyhow::bail!(TimedOut(format!(
                "{} did not reach {} within {:?} (it is {}); run `ferry wait` again in a later job",
                args.id,
                until_name(args.until),
                args.timeout,
                view.phase
            )));
        }
        tokio::time::sleep(args.interval).await;
    }
}

fn not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ferry_core::store::StoreError>(),
            Some(ferry_core::store::StoreError::NotFound { .. })
        )
    })
}

fn until_name(u: Until) -> String {
    match u {
        Until::Phase(p) => p.to_string(),
        Until::Ended => "ended".into(),
    }
}

/// Verify's figures and the exact comparison of the last drained freeze, one line each.
pub async fn checks(store: &ferry_aws::DynamoStore, id: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some((_, job)) = ferry_replicator::verify_job::read(store, id).await?
        && let Some(line) = job.progress_line(chrono::Utc::now())
    {
        out.push(line);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_reached_there_or_past_it_and_never_after_turning_back() {
        use Phase::*;
        let until = |p| Until::Phase(p);
        assert_eq!(reached(Replicating, until(Replicating)), Reached::Yes);
        assert_eq!(reached(Verifying, until(Replicating)), Reached::Yes);
        assert_eq!(reached(Preflight, until(Replicating)), Reached::No);
        assert_eq!(
            reached(Completed, until(AwaitingCutoverApproval)),
            Reached::Yes
        );
        assert_eq!(
            reached(RollingBack, until(AwaitingCutoverApproval)),
            Reached::Never
        );
        assert_eq!(reached(RolledBack, until(Completed)), Reached::Never);
        assert_eq!(reached(Failed, until(Replicating)), Reached::Never);
        assert_eq!(reached(Replicating, until(RolledBack)), Reached::No);
        assert_eq!(reached(RollingBack, until(RolledBack)), Reached::No);
        assert_eq!(reached(RolledBack, until(RolledBack)), Reached::Yes);
        assert_eq!(reached(RolledBack, until(RollingBack)), Reached::Yes);
        assert_eq!(reached(Completed, Until::Ended), Reached::Yes);
        assert_eq!(reached(RolledBack, Until::Ended), Reached::Never);
        assert_eq!(reached(CuttingOver, Until::Ended), Reached::No);
        assert_eq!(reached(Completed, until(Failed)), Reached::Never);
        assert_eq!(reached(RolledBack, until(Failed)), Reached::Never);
        assert_eq!(parse_until("ended"), Ok(Until::Ended));
        assert!(
            parse_until("lunch")
                .expect_err("refused")
                .contains("awaiting_cutover_approval")
        );
    }
}
