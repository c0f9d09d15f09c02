//! `ferry-demo`: the local rehearsal (`make demo`). Runs a whole migration for real — the
//! state machine that ships, the function binaries, the worker — against the local test bed
//! while the sample app keeps writing, approves the gates as a person would, and writes a
//! report (markdown, CSV and a PNG plot) to `target/ferry-report/`.
//!
//! Environment: the bed's (`bed.env`), `DEMO_ROWS` (rows of the big table, default
//! 1,500,000 ≈ 300 MB), `DEMO_WRITES_PER_SECOND` (default 50), `FERRY_REPORT_DIR`.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use chrono::{DateTime, Utc};
use ferry_core::{MigrationStore, spec::EndpointMode, state::Gate};
use ferry_tests::{
    endpoint::Kind,
    rehearsal::{App, Approver, EcsRunner, Options, Rehearsal, Scheduler, Side},
};

#[derive(Debug, Clone)]
struct Sample {
    at: DateTime<Utc>,
    state: String,
    worker: String,
    rows: u64,
    bytes: u64,
    tables: (u32, u32),
    lag_seconds: Option<f64>,
    aws_percent: f64,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done as f64 / total as f64) * width as f64).round() as usize
    };
    format!(
        "[{}{}]",
        "#".repeat(filled.min(width)),
        ".".repeat(width - filled.min(width))
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = env_num("DEMO_ROWS", 1_500_000);
    let wps: u32 = env_num("DEMO_WRITES_PER_SECOND", 50);
    let rps: u32 = env_num("DEMO_READS_PER_SECOND", 200);
    let report_dir = PathBuf::from(
        std::env::var("FERRY_REPORT_DIR").unwrap_or_else(|_| "target/ferry-report".into()),
    );
    let runs: usize = env_num("BENCH_RUNS", 0);
    if runs > 0 {
        return bench(runs, wps, rps).await;
    }
    let options = Options {
        rows,
        steps: vec![1, 5, 25, 50, 100],
        canary_interval_seconds: 3,
        rollback_window_seconds: 10,
        writes_per_second: wps,
        reads_per_second: rps,
        endpoint: EndpointMode::Proxy,
        redeploy_seconds: env_num("DEMO_REDEPLOY_SECONDS", 60),
        dns_ttl_seconds: 3,
        parallelism: 2,
        capture: match std::env::var("DEMO_CAPTURE").as_deref() {
            Ok("logical") => ferry_core::spec::CaptureMode::Logical,
            Ok("trigger") | Err(_) => ferry_core::spec::CaptureMode::Trigger,
            Ok(other) => bail!("DEMO_CAPTURE={other:?}: use trigger or logical"),
        },
        // Heroku Redis moves too (the demo's bed is its own: database 0), unless DEMO_REDIS=off.
        redis_db: match std::env::var("DEMO_REDIS").as_deref() {
            Ok("off") => None,
            Ok("on") | Err(_) => Some(0),
            Ok(other) => bail!("DEMO_REDIS={other:?}: use on or off"),
        },
        // The AWS side from `ferry plan`'s destination.yaml, deployed into the emulator.
        destination_stack: true,
        ..Options::default()
    };
    let (status, report) = rehearse(&options, &report_dir, Plan::default()).await?;
    if status != ExecutionStatus::Succeeded || report.lost > 0 {
        bail!("the rehearsal did not end well: see the report");
    }
    Ok(())
}

/// `make bench-cutover`: the happy path `runs` times through the endpoint (proxy mode, the
/// floor measured at each run's cutover gate), `BENCH_ROLLBACK_RUNS` times (default 3) with
/// the finish gate rejected (the rollback's own window), and `BENCH_REDEPLOY_RUNS` times
/// (default 0) in redeploy mode, under the same load (DEMO_ROWS rows, default 1.5 M; Redis on
/// unless BENCH_REDIS=off); per run and p50/max: failed requests, request latency p99/max over
/// the cutover minute, the endpoint's paused window, the write freeze, the floor, requests
/// still reaching Heroku after the cutover. Written to BENCH_OUT (markdown).
async fn bench(runs: usize, wps: u32, rps: u32) -> anyhow::Result<()> {
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "docs/benchmarks-cutover.md".into());
    let redeploy_seconds: u32 = env_num("DEMO_REDEPLOY_SECONDS", 60);
    let base = Options {
        rows: env_num("DEMO_ROWS", 1_500_000),
        steps: vec![50, 100],
        canary_interval_seconds: 1,
        rollback_window_seconds: 1,
        writes_per_second: wps,
        reads_per_second: rps,
        endpoint: EndpointMode::Proxy,
        redeploy_seconds,
        dns_ttl_seconds: 1,
        parallelism: 2,
        capture: ferry_core::spec::CaptureMode::Trigger,
        redis_db: match std::env::var("BENCH_REDIS").as_deref() {
            Ok("off") => None,
            Ok("on") | Err(_) => Some(0),
            Ok(other) => bail!("BENCH_REDIS={other:?}: use on or off"),
        },
        ..Options::default()
    };
    let kinds = [
        (RunKind::Proxy, runs, Plan::FLOOR),
        (
            RunKind::Rollback,
            env_num("BENCH_ROLLBACK_RUNS", 3),
            Plan::ROLL_BACK,
        ),
        (
            RunKind::Redeploy,
            env_num("BENCH_REDEPLOY_RUNS", 0),
            Plan::default(),
        ),
    ];
    let mut results: Vec<(RunKind, Vec<Report>)> = Vec::new();
    for (kind, n, plan) in kinds {
        if n == 0 {
            continue;
        }
        let options = Options {
            endpoint: match kind {
                RunKind::Redeploy => EndpointMode::Redeploy,
                _ => EndpointMode::Proxy,
            },
            rollback_window_seconds: match kind {
                RunKind::Proxy => 1,
                // Long enough for the finish gate to be rejected while it waits.
                RunKind::Rollback => 300,
                // The app must still run when the redeployed tasks come up.
                RunKind::Redeploy => redeploy_seconds + 10,
            },
            ..base.clone()
        };
        let mut reports = Vec::new();
        for i in 1..=n {
            // Each rehearsal gets the Platform API's hourly budget (4,500 requests) of its
            // own, as rehearsals an hour apart would: the sample app polls its Heroku app.
            reqwest::Client::new()
                .post(format!(
                    "{}/__bed/rate-limit",
                    ferry_tests::bed_var("FERRY_BED_HEROKU_URL")
                ))
                .json(&serde_json::json!({"remaining": 4500}))
                .send()
                .await?;
            let dir = std::env::temp_dir().join(format!("ferry-bench-cutover-{kind:?}-{i}"));
            let (status, report) = rehearse(&options, &dir, plan).await?;
            println!("{kind:?} run {i}/{n}: {status:?}, {}", report.one_line());
            let ended_well = match kind {
                RunKind::Rollback => {
                    status == ExecutionStatus::Failed && report.rollback_paused_ms.is_some()
                }
                _ => status == ExecutionStatus::Succeeded && report.freeze_ms.is_some(),
            };
            if !ended_well || report.lost > 0 {
                bail!("{kind:?} run {i} did not end well: {}", dir.display());
            }
            reports.push(report);
        }
        results.push((kind, reports));
    }
    let md = bench_markdown(&base, &results, redeploy_seconds)?;
    std::fs::write(&out, &md)?;
    print!("{md}");
    println!("written to {out}");
    Ok(())
}

/// The runs of the cutover benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunKind {
    /// Happy path through the endpoint.
    Proxy,
    /// Through the endpoint, then rolled back in the window: its figures are the rollback's.
    Rollback,
    /// DATABASE_URL rewritten and the app's service redeployed.
    Redeploy,
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The benchmark's table: one row per measure, p50 and max per kind of run.
fn bench_markdown(
    base: &Options,
    results: &[(RunKind, Vec<Report>)],
    redeploy_seconds: u32,
) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(md, "# Cutover benchmark (`make bench-cutover`)\n")?;
    writeln!(
        md,
        "Happy-path migrations on the local bed (PostgreSQL {} → {}, {} event rows, trigger capture{}). The app runs as real ones do: DATABASE_URL (and REDIS_URL) read once at boot, {} pooled connections per instance with named prepared statements, {} writes/s + {} reads/s, each request on its own task (a held query does not hold the next one back). Proxy: the AWS instance reaches the database through two PgBouncer 1.24 endpoint tasks (each with its Redis proxy) behind a TCP balancer; the cutover tells them each step over their control channel. Rollback: the same, then the finish gate rejected, so the rollback's own window is measured (its row values are the rollback's: paused window, write freeze). Floor: at the cutover gate, just before the approval, the same code pauses every task and resumes it with nothing between. Redeploy: the cutover rewrites DATABASE_URL and forces an ECS deployment of the app's service; the rehearsal replaces the AWS instance {redeploy_seconds} s after the deployment is created. Measured {}.\n",
        ferry_tests::bed_var("FERRY_BED_SOURCE_VERSION"),
        ferry_tests::bed_var("FERRY_BED_TARGET_VERSION"),
        base.rows,
        if base.redis_db.is_some() {
            ", Redis on"
        } else {
            ""
        },
        5,
        base.writes_per_second,
        base.reads_per_second,
        Utc::now().format("%Y-%m-%d")
    )?;
    write!(md, "| measure |")?;
    for (kind, reports) in results {
        write!(
            md,
            " {kind:?} p50 | {kind:?} max ({} runs) |",
            reports.len()
        )?;
    }
    writeln!(md, " goal |")?;
    writeln!(
        md,
        "| --- |{} --- |",
        " ---: | ---: |".repeat(results.len())
    )?;
    type Measure = (
        &'static str,
        fn(RunKind, &Report) -> Option<f64>,
        &'static str,
    );
    let measures: [Measure; 10] = [
        (
            "failed requests",
            |_, r| Some(r.app.failed as f64),
            "0 in every run (proxy)",
        ),
        (
            "request latency p99, cutover minute (ms)",
            |_, r| r.app.p99_ms,
            "—",
        ),
        (
            "request latency max, cutover minute (ms)",
            |_, r| r.app.max_ms,
            "—",
        ),
        (
            "endpoint paused window: first pause asked → last resume confirmed (ms)",
            |k, r| match k {
                RunKind::Rollback => r.rollback_paused_ms.map(|v| v as f64),
                _ => r.paused_ms.map(|v| v as f64),
            },
            "p50 ≤ 400, max ≤ 1000",
        ),
        (
            "app's queries held: longest task, PAUSE sent → RESUME done (ms)",
            |k, r| match k {
                RunKind::Rollback => r.rollback_held_ms.map(|v| v as f64),
                _ => r.held_ms.map(|v| v as f64),
            },
            "—",
        ),
        (
            "floor: endpoint paused and resumed alone, control plane's window (ms)",
            |_, r| r.floor_ms.map(|v| v as f64),
            "—",
        ),
        (
            "floor: queries held (ms)",
            |_, r| r.floor_held_ms.map(|v| v as f64),
            "—",
        ),
        (
            "write freeze (ms)",
            |k, r| match k {
                RunKind::Rollback => r.rollback_freeze_ms.map(|v| v as f64),
                _ => r.freeze_ms.map(|v| v as f64),
            },
            "p50 ≤ 300",
        ),
        (
            "requests reaching Heroku after the cutover",
            |_, r| Some(r.app.heroku_after as f64),
            "0",
        ),
        (
            "emulator state-table round trip, p50 within 30 s of the freeze (ms)",
            |_, r| r.store_rtt_ms.map(|(p50, _)| p50),
            "DynamoDB: a few ms",
        ),
    ];
    for (name, get, goal) in measures {
        write!(md, "| {name} |")?;
        for (kind, reports) in results {
            let v: Vec<f64> = reports.iter().filter_map(|r| get(*kind, r)).collect();
            let cell = |x: f64| {
                if x.is_nan() {
                    "—".to_string()
                } else {
                    format!("{x:.0}")
                }
            };
            write!(
                md,
                " {} | {} |",
                cell(pct(v.clone(), 0.5)),
                cell(pct(v, 1.0))
            )?;
        }
        writeln!(md, " {goal} |")?;
    }
    writeln!(md, "\nPer run:\n")?;
    for (kind, reports) in results {
        for (i, r) in reports.iter().enumerate() {
            writeln!(md, "- {kind:?} {}: {}", i + 1, r.one_line())?;
        }
    }
    Ok(md)
}

/// What a run does beside the migration.
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    /// Measure the endpoint's floor at the cutover gate.
    floor: bool,
    /// Reject the finish gate: roll back in the window.
    roll_back: bool,
}

impl Plan {
    /// The floor measured at the cutover gate.
    const FLOOR: Plan = Plan {
        floor: true,
        roll_back: false,
    };
    /// Rolled back in the window.
    const ROLL_BACK: Plan = Plan {
        floor: false,
        roll_back: true,
    };
}

async fn rehearse(
    options: &Options,
    report_dir: &std::path::Path,
    plan: Plan,
) -> anyhow::Result<(ExecutionStatus, Report)> {
    let (rows, wps) = (options.rows, options.writes_per_second);
    let t0 = Instant::now();
    println!("Ferry rehearsal: a whole migration on this machine, for real.");
    println!("  generating the Heroku side: {rows} event rows, an app role, a Heroku app …");
    let r = Rehearsal::new(options).await;
    if let Some(d) = &r.destination {
        println!(
            "  the AWS side: `ferry plan {}` wrote destination.yaml; the emulator's CloudFormation deployed it:",
            r.app
        );
        println!("    {}", d.stack.summary());
        println!(
            "  $ ferry destination migration.json --stack {} --stack <Ferry's stack>",
            d.stack.name
        );
        for line in d.printed.lines().filter(|l| !l.trim().is_empty()) {
            println!("    {line}");
        }
    }
    let size: i64 = r
        .source_admin
        .connect()
        .await?
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    println!(
        "  source database: {:.0} MB (PostgreSQL {} → {}), ready in {:.0} s",
        size as f64 / 1e6,
        ferry_tests::bed_var("FERRY_BED_SOURCE_VERSION"),
        ferry_tests::bed_var("FERRY_BED_TARGET_VERSION"),
        t0.elapsed().as_secs_f64()
    );
    let runner = EcsRunner::start(&r.id);
    let scheduler = Scheduler::start(&r.id);
    let app = App::start(&r, wps, options.reads_per_second);
    let redis = ferry_tests::jobs::RedisRun::start(&r, 40).await;
    if redis.is_some() {
        println!(
            "  Redis: Sidekiq-like producers, workers and a scheduler on both fleets (AWS through the endpoint's Redis proxy), 40 jobs/s each"
        );
    }
    let approver = Arc::new(Approver::new(&r));
    println!(
        "  sample app: Heroku and AWS instances behind a resolver following Route 53, {wps} writes/s"
    );
    println!(
        "  $ aws stepfunctions start-execution --state-machine-arn {} --name {} --input file://migration.json",
        r.machine_arn, r.id
    );
    let exec = r.start_with_cli(&r.id);
    let started_at = Utc::now();

    // Approvals, as a person would click them (the rollback window is left to time out, or
    // rejected for a rollback run). The floor is measured at the cutover gate, just before
    // the approval, under the same load.
    let floor = Arc::new(std::sync::Mutex::new(None::<(i64, Option<i64>)>));
    let gates = {
        let (approver, id, exec) = (approver.clone(), r.id.clone(), exec.clone());
        let steer = match plan.floor {
            true => Some((r.steps_deps().await, r.spec())),
            false => None,
        };
        let (floor, roll_back) = (floor.clone(), plan.roll_back);
        tokio::spawn(async move {
            let limit = Duration::from_secs(1800);
            for gate in [Gate::ShiftTraffic, Gate::Cutover] {
                approver.wait_pending(&id, &exec, gate, limit).await;
                if let (Gate::Cutover, Some((deps, spec))) = (gate, &steer) {
                    let (ms, held) = Rehearsal::endpoint_floor(deps, spec).await;
                    println!(
                        "\n  floor: the endpoint paused and resumed alone in {ms} ms (queries held {} ms)",
                        held.map_or("-".into(), |h| h.to_string())
                    );
                    *floor.lock().expect("floor") = Some((ms, held));
                }
                let answer = approver.decide(&id, &exec, gate, true, limit).await;
                println!("\n  approved {gate} (Slack, signed): {answer}");
            }
            if roll_back {
                let answer = approver
                    .decide(&id, &exec, Gate::Finish, false, limit)
                    .await;
                println!("\n  rejected {} (Slack, signed): {answer}", Gate::Finish);
            }
        })
    };

    // The emulator's state-table round trip, sampled every 200 ms while it runs: what each
    // of the cutover's store calls costs here, beside DynamoDB's few milliseconds.
    let rtt_samples = Arc::new(std::sync::Mutex::new(Vec::<(DateTime<Utc>, f64)>::new()));
    let sampler = {
        let (store, id, out) = (r.store.clone(), r.id.clone(), rtt_samples.clone());
        tokio::spawn(async move {
            use ferry_core::MigrationStore;
            loop {
                let t = Instant::now();
                if store.progress(&id).await.is_ok() {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    out.lock().expect("rtt").push((Utc::now(), ms));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Progress while it runs.
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_state = String::new();
    let mut last_line = String::new();
    let (status, error, output) = loop {
        let d = r
            .sfn
            .describe_execution()
            .execution_arn(&exec)
            .send()
            .await?;
        let state = r.current_state(&exec).await.unwrap_or_default();
        let p = r.store.progress(&r.id).await?;
        let w = r.weights().await;
        let s = Sample {
            at: Utc::now(),
            state: state.clone(),
            worker: p
                .as_ref()
                .and_then(|p| serde_json::to_value(p.phase).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "-".into()),
            rows: p.as_ref().map_or(0, |p| p.rows_copied),
            bytes: p.as_ref().map_or(0, |p| p.bytes_copied),
            tables: p
                .as_ref()
                .map_or((0, 0), |p| (p.tables_done, p.tables_total)),
            lag_seconds: p.as_ref().and_then(|p| p.lag_seconds),
            aws_percent: w.map_or(0.0, |w| w.aws_share_percent()),
        };
        if state != last_state {
            println!(
                "\n[{:>6.1}s] {state}",
                (s.at - started_at).num_milliseconds() as f64 / 1000.0
            );
            last_state = state.clone();
        }
        let line = if s.worker == "copying"
            || (state == "ReplicationStatus" || state == "WaitForReplication")
        {
            format!(
                "\r  copy {} {}/{} tables, {} rows, {:.0} MB, worker {}, lag {}   ",
                bar(s.bytes, size.max(1) as u64, 30),
                s.tables.0,
                s.tables.1,
                s.rows,
                s.bytes as f64 / 1e6,
                s.worker,
                s.lag_seconds
                    .map_or("-".to_string(), |l| format!("{l:.1} s"))
            )
        } else if state == "Canary" {
            format!("\r  traffic on AWS: {:>5.1}%   ", s.aws_percent)
        } else {
            String::new()
        };
        if line != last_line {
            print!("{line}");
            std::io::stdout().flush().ok();
            last_line = line;
        }
        samples.push(s);
        if d.status() != &ExecutionStatus::Running {
            break (
                d.status().clone(),
                d.error().map(str::to_string),
                d.output().map(str::to_string),
            );
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("the rehearsal did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    gates.abort();
    sampler.abort();
    app.shutdown();
    scheduler.shutdown();
    runner.shutdown();
    println!(
        "\n\nexecution {status:?} {}",
        error.clone().unwrap_or_default()
    );

    let mut report = build_report(
        &r,
        &exec,
        &app,
        &samples,
        options,
        size,
        status.clone(),
        error,
        output,
    )
    .await
    .context("write the report")?;
    if let Some((window, held)) = *floor.lock().expect("floor") {
        report.floor_ms = Some(window);
        report.floor_held_ms = held;
    }
    if plan.roll_back
        && let Some(fact) = ferry_steps::facts::get::<ferry_steps::facts::CutoverFact>(
            r.store.as_ref(),
            &r.id,
            ferry_steps::facts::CUTOVER,
        )
        .await?
    {
        report.rollback_paused_ms = fact.rollback_paused_ms();
        report.rollback_held_ms = fact.rollback_held_ms;
        report.rollback_freeze_ms = fact.rollback_freeze_ms();
        report.window_at = fact.at("target_frozen");
    }
    report.store_rtt_ms = store_rtt(&rtt_samples.lock().expect("rtt"), report.window_at);
    if let (Some(run), Some(sides)) = (redis, r.redis.clone()) {
        // Where the app ended: ElastiCache after a completed migration, Heroku otherwise.
        let ended_on = if status == ExecutionStatus::Succeeded {
            &sides.target
        } else {
            &sides.heroku
        };
        let out = run.finish(&r, ended_on).await;
        report.lost += out.jobs.lost.len() + out.jobs.twice.len() + out.missing_sessions.len();
        report
            .summary
            .push_str("\nRedis (Heroku Key-Value Store → ElastiCache):\n");
        report
            .markdown
            .push_str("\n## Redis (Heroku Key-Value Store → ElastiCache)\n\n");
        for line in &out.lines {
            report.summary.push_str(&format!("  {line}\n"));
            report.markdown.push_str(&format!("- {line}\n"));
        }
        for e in out.errors.iter().take(5) {
            report.summary.push_str(&format!("  client error: {e}\n"));
        }
    }
    if let Some(d) = &r.destination {
        report.markdown.push_str(&format!(
            "\n## The AWS side (destination.yaml)\n\n`ferry plan {}` wrote it; the emulator's CloudFormation deployed it: {}. `ferry destination --stack` filled the spec from its outputs (RDS instance {}, load balancer {}). Stand-ins: the bed's PostgreSQL {} plays the stack's RDS instance (its master secret holds the bed's login), the bed's TLS Redis its ElastiCache group, the rehearsal's app processes its ECS services; the certificate is issued at once and the schedules never fire (tests/bed/cfn_standins.py).\n",
            r.app,
            d.stack.summary(),
            d.stack.output("DatabaseInstanceId"),
            d.stack.output("LoadBalancerDnsName"),
            ferry_tests::bed_var("FERRY_BED_TARGET_VERSION"),
        ));
    }
    std::fs::create_dir_all(report_dir)?;
    std::fs::write(report_dir.join("report.md"), &report.markdown)?;
    std::fs::write(report_dir.join("samples.csv"), &report.csv)?;
    let plot = plot(report_dir);
    println!("{}", report.summary);
    match plot {
        Ok(png) => println!("plot: {}", png.display()),
        Err(e) => println!("plot not drawn: {e:#}"),
    }
    println!("report: {}", report_dir.join("report.md").display());
    Ok((status, report))
}

struct Report {
    markdown: String,
    csv: String,
    summary: String,
    lost: usize,
    freeze_ms: Option<i64>,
    paused_ms: Option<i64>,
    gap_ms: f64,
    app: AppFigures,
    /// The longest hold of the app's queries by one task (PAUSE sent → RESUME done).
    held_ms: Option<i64>,
    /// The endpoint paused and resumed alone, at the cutover gate: the control plane's
    /// window and the longest hold.
    floor_ms: Option<i64>,
    floor_held_ms: Option<i64>,
    /// A rollback run's longest hold.
    rollback_held_ms: Option<i64>,
    /// A rollback run's paused window and write freeze.
    rollback_paused_ms: Option<i64>,
    rollback_freeze_ms: Option<i64>,
    /// When the source froze (the cutover minute is around it).
    window_at: Option<DateTime<Utc>>,
    /// The emulator's state-table round trip (GetItem) within 30 s of the freeze: p50, max.
    store_rtt_ms: Option<(f64, f64)>,
}

/// p50 and max of the round trips sampled within 30 s of `at`.
fn store_rtt(samples: &[(DateTime<Utc>, f64)], at: Option<DateTime<Utc>>) -> Option<(f64, f64)> {
    let at = at?;
    let near: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| (*t - at).num_seconds().abs() <= 30)
        .map(|(_, ms)| *ms)
        .collect();
    (!near.is_empty()).then(|| (pct(near.clone(), 0.5), pct(near, 1.0)))
}

impl Report {
    fn one_line(&self) -> String {
        let ms = |v: Option<i64>| v.map_or("-".into(), |v| v.to_string());
        let mut extra = String::new();
        if self.floor_ms.is_some() {
            extra.push_str(&format!(
                ", floor {} ms (held {} ms)",
                ms(self.floor_ms),
                ms(self.floor_held_ms)
            ));
        }
        if let Some((p50, max)) = self.store_rtt_ms {
            extra.push_str(&format!(
                ", emulator state-table round trip p50 {p50:.0} ms max {max:.0} ms"
            ));
        }
        if self.rollback_paused_ms.is_some() || self.rollback_freeze_ms.is_some() {
            extra.push_str(&format!(
                ", rollback paused {} ms (held {} ms), rollback freeze {} ms",
                ms(self.rollback_paused_ms),
                ms(self.rollback_held_ms),
                ms(self.rollback_freeze_ms)
            ));
        }
        format!(
            "failed {} of {} requests, p99 {} ms, max {} ms in the cutover minute, paused {} ms (held {} ms), freeze {} ms, write gap {:.0} ms, {} to Heroku after the cutover, lost {}{extra}",
            self.app.failed,
            self.app.requests,
            self.app.p99_ms.map_or("-".into(), |v| format!("{v:.0}")),
            self.app.max_ms.map_or("-".into(), |v| format!("{v:.0}")),
            self.paused_ms.map_or("-".into(), |v| v.to_string()),
            ms(self.held_ms),
            self.freeze_ms.map_or("-".into(), |v| v.to_string()),
            self.gap_ms,
            self.app.heroku_after,
            self.lost
        )
    }
}

/// What the app's users saw.
#[derive(Debug, Clone, Default)]
struct AppFigures {
    requests: usize,
    failed: usize,
    /// Latency p99 and max of the requests answered within 30 s of the freeze.
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Requests served by the Heroku instance after the source froze.
    heroku_after: usize,
}

fn app_figures(app: &App, frozen_at: Option<DateTime<Utc>>) -> AppFigures {
    let log = app.log.lock().expect("log");
    let mut minute: Vec<f64> = log
        .iter()
        .filter(|q| frozen_at.is_some_and(|f| (q.at - f).num_seconds().abs() <= 30))
        .map(|q| q.latency.as_secs_f64() * 1000.0)
        .collect();
    minute.sort_by(f64::total_cmp);
    let at = |p: f64| {
        (!minute.is_empty()).then(|| minute[((minute.len() as f64 - 1.0) * p).round() as usize])
    };
    AppFigures {
        requests: log.len(),
        failed: log.iter().filter(|q| q.result.is_err()).count(),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        heroku_after: log
            .iter()
            .filter(|q| q.side == Side::Heroku && frozen_at.is_some_and(|f| q.at > f))
            .count(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn build_report(
    r: &Rehearsal,
    exec: &str,
    app: &App,
    samples: &[Sample],
    options: &Options,
    size: i64,
    status: ExecutionStatus,
    error: Option<String>,
    output: Option<String>,
) -> anyhow::Result<Report> {
    let output: serde_json::Value = output
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    // State timeline from the history: consecutive entries of the wait loop are merged.
    let history = r.history(exec).await;
    let mut spans: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut open: Option<(String, DateTime<Utc>)> = None;
    let to_utc = |t: &aws_sdk_sfn::primitives::DateTime| {
        DateTime::<Utc>::from_timestamp_millis(t.to_millis().unwrap_or(0)).unwrap_or_default()
    };
    for e in &history {
        let at = to_utc(e.timestamp());
        if let Some(d) = e.state_entered_event_details() {
            let name = match d.name() {
                "ReplicationStatus" | "CaughtUp" | "WaitForReplication" => {
                    "Replication (copy, catch-up)"
                }
                n => n,
            }
            .to_string();
            if let Some((n, start)) = open.take() {
                if n == name {
                    open = Some((n, start));
                    continue;
                }
                push_span(&mut spans, n, start, at);
            }
            open = Some((name, at));
        }
        if matches!(
            e.r#type(),
            HistoryEventType::ExecutionSucceeded | HistoryEventType::ExecutionFailed
        ) && let Some((n, start)) = open.take()
        {
            push_span(&mut spans, n, start, at);
        }
    }
    let total = spans
        .first()
        .zip(spans.last())
        .map(|(a, b)| (b.2 - a.1).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);

    let cutover = &output["cutover"];
    let freeze_ms = cutover["freeze_ms"].as_i64();
    let paused_ms = cutover["paused_ms"].as_i64();
    let held_ms = cutover["held_ms"].as_i64();
    let frozen_at = cutover["timeline"].as_array().and_then(|t| {
        t.iter()
            .find(|s| s[0] == "source_frozen")
            .and_then(|s| s[1].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    });
    let figures = app_figures(app, frozen_at);
    let (gap, gap_at) = app.longest_gap();
    let acked = app.acked();
    // The final database: RDS after a completed migration, Heroku after a rollback.
    let client = match status {
        ExecutionStatus::Succeeded => r.target.connect().await?,
        _ => r.source_admin.connect().await?,
    };
    let present: Vec<i64> = client
        .query("SELECT id FROM orders WHERE id = ANY($1)", &[&acked])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost = acked.iter().filter(|id| !present.contains(id)).count();
    let log = app.log.lock().expect("log").clone();
    let is_write = |q: &&ferry_tests::rehearsal::Request| q.kind == Kind::Write;
    let errors = |side: Side| {
        log.iter()
            .filter(is_write)
            .filter(|q| q.side == side && q.result.is_err())
            .count()
    };
    let acks = |side: Side| {
        log.iter()
            .filter(is_write)
            .filter(|q| q.side == side && q.result.is_ok())
            .count()
    };

    let copied_rows = samples.iter().map(|s| s.rows).max().unwrap_or(0);
    let copied_bytes = samples.iter().map(|s| s.bytes).max().unwrap_or(0);
    let copy_start = samples.iter().find(|s| s.worker == "copying").map(|s| s.at);
    let copy_end = samples
        .iter()
        .find(|s| s.worker == "streaming")
        .map(|s| s.at);
    let copy_secs = copy_start
        .zip(copy_end)
        .map(|(a, b)| (b - a).num_milliseconds() as f64 / 1000.0);
    let max_lag = samples
        .iter()
        .filter(|s| s.worker == "streaming" || s.worker == "reverse")
        .filter_map(|s| s.lag_seconds)
        .fold(0.0f64, f64::max);
    let compress = 60.0 / f64::from(options.canary_interval_seconds);

    let mut md = String::new();
    writeln!(md, "# Ferry rehearsal report\n")?;
    writeln!(md, "- migration `{}` of Heroku app `{}`", r.id, r.app)?;
    writeln!(
        md,
        "- result: **{status:?}**{}",
        error.map(|e| format!(" ({e})")).unwrap_or_default()
    )?;
    writeln!(
        md,
        "- source database {:.0} MB, PostgreSQL {} → {}",
        size as f64 / 1e6,
        ferry_tests::bed_var("FERRY_BED_SOURCE_VERSION"),
        ferry_tests::bed_var("FERRY_BED_TARGET_VERSION")
    )?;
    writeln!(
        md,
        "- time compressed: canary step every {} s instead of 1 min (×{compress:.0}); rollback window {} s instead of 24 h",
        options.canary_interval_seconds, options.rollback_window_seconds
    )?;
    writeln!(md, "- total: {total:.1} s\n")?;
    writeln!(
        md,
        "## Timeline\n\n| state | start (s) | duration (s) |\n| --- | ---: | ---: |"
    )?;
    let t_start = spans.first().map(|s| s.1).unwrap_or_default();
    for (name, a, b) in &spans {
        writeln!(
            md,
            "| {name} | {:.1} | {:.1} |",
            (*a - t_start).num_milliseconds() as f64 / 1000.0,
            (*b - *a).num_milliseconds() as f64 / 1000.0
        )?;
    }
    writeln!(md, "\n## Copy and replication\n")?;
    writeln!(
        md,
        "- rows copied: {copied_rows}; bytes copied: {:.0} MB",
        copied_bytes as f64 / 1e6
    )?;
    if let Some(s) = copy_secs {
        writeln!(
            md,
            "- snapshot copy (schema, copy, keys and indexes): {s:.1} s, {:.1} MB/s",
            copied_bytes as f64 / 1e6 / s.max(0.001)
        )?;
    }
    writeln!(
        md,
        "- highest replication lag while streaming: {max_lag:.2} s"
    )?;
    writeln!(md, "- verification: {}", output["verify"])?;
    writeln!(
        md,
        "- exact comparison of the cutover (snapshots taken inside the freeze): {}",
        output["exact_check"]["exact_check"]
    )?;
    writeln!(md, "\n## Traffic (canary)\n")?;
    let mut last = -1.0;
    for s in samples {
        if (s.aws_percent - last).abs() > 0.01 {
            writeln!(
                md,
                "- {}: {:.0}% on AWS",
                s.at.format("%H:%M:%S%.3f"),
                s.aws_percent
            )?;
            last = s.aws_percent;
        }
    }
    writeln!(md, "\n## Cutover\n")?;
    writeln!(
        md,
        "- **write freeze** (source frozen → target writable): {} ms",
        freeze_ms.map_or("-".into(), |f| f.to_string())
    )?;
    writeln!(
        md,
        "- **endpoint paused** (the control plane's window: first pause asked → last resume confirmed): {} ms",
        paused_ms.map_or("- (redeploy mode)".into(), |f| f.to_string())
    )?;
    writeln!(
        md,
        "- **app's queries held** (the longest any endpoint task held them: PgBouncer PAUSE sent → RESUME done): {} ms",
        held_ms.map_or("- (redeploy mode)".into(), |f| f.to_string())
    )?;
    writeln!(
        md,
        "- **failed requests**: {} of {}; latency in the cutover minute p99 {} ms, max {} ms; requests reaching Heroku after the cutover: {}",
        figures.failed,
        figures.requests,
        figures.p99_ms.map_or("-".into(), |v| format!("{v:.0}")),
        figures.max_ms.map_or("-".into(), |v| format!("{v:.0}")),
        figures.heroku_after
    )?;
    writeln!(
        md,
        "- **app-side write gap** (longest time between two acknowledged writes): {:.0} ms{}",
        gap.as_secs_f64() * 1000.0,
        gap_at
            .map(|t| format!(", from {}", t.format("%H:%M:%S%.3f")))
            .unwrap_or_default()
    )?;
    if let Some(timeline) = cutover["timeline"].as_array() {
        let first = timeline
            .first()
            .and_then(|t| t[1].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        for step in timeline {
            if let (Some(name), Some(at)) = (
                step[0].as_str(),
                step[1]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
            ) {
                let off = first.map_or(0, |f| (at - f).num_milliseconds());
                writeln!(md, "  - +{off} ms {name}")?;
            }
        }
    }
    writeln!(md, "\n## The app's writes\n")?;
    writeln!(
        md,
        "- acknowledged: {} (Heroku {}, AWS {}); errors: Heroku {}, AWS {}",
        acked.len(),
        acks(Side::Heroku),
        acks(Side::Aws),
        errors(Side::Heroku),
        errors(Side::Aws)
    )?;
    writeln!(
        md,
        "- **lost acknowledged writes** (acknowledged but not in the final database): {lost}"
    )?;
    writeln!(md, "\n![lag and traffic](plot.png)")?;

    let mut csv = String::from("seconds,state,worker,rows,bytes,lag_seconds,aws_percent\n");
    for s in samples {
        writeln!(
            csv,
            "{:.3},{},{},{},{},{},{}",
            (s.at - t_start).num_milliseconds() as f64 / 1000.0,
            s.state,
            s.worker,
            s.rows,
            s.bytes,
            s.lag_seconds.map_or(String::new(), |l| format!("{l:.3}")),
            s.aws_percent
        )?;
    }
    let summary = format!(
        "\n== Ferry rehearsal: {status:?} in {total:.0} s ==\n\
         copied {copied_rows} rows / {:.0} MB{}; max lag {max_lag:.2} s\n\
         write freeze {} ms; endpoint paused {} ms; app-side write gap {:.0} ms\n\
         requests {}, failed {}; writes acknowledged {}, lost {lost}\n",
        copied_bytes as f64 / 1e6,
        copy_secs
            .map(|s| format!(
                " in {s:.1} s ({:.1} MB/s)",
                copied_bytes as f64 / 1e6 / s.max(0.001)
            ))
            .unwrap_or_default(),
        freeze_ms.map_or("-".into(), |f| f.to_string()),
        paused_ms.map_or("-".into(), |f| f.to_string()),
        gap.as_secs_f64() * 1000.0,
        figures.requests,
        figures.failed,
        acked.len(),
    );
    Ok(Report {
        markdown: md,
        csv,
        summary,
        lost,
        freeze_ms,
        paused_ms,
        gap_ms: gap.as_secs_f64() * 1000.0,
        app: figures,
        held_ms,
        floor_ms: None,
        floor_held_ms: None,
        rollback_held_ms: None,
        rollback_paused_ms: None,
        rollback_freeze_ms: None,
        window_at: frozen_at,
        store_rtt_ms: None,
    })
}

fn push_span(
    spans: &mut Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) {
    spans.push((name, start, end));
}

fn plot(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let python = std::env::var("FERRY_BED_PYTHON").context("FERRY_BED_PYTHON not set")?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bed/plot.py");
    let png = dir.join("plot.png");
    let status = std::process::Command::new(python)
        .arg(script)
        .arg(dir.join("samples.csv"))
        .arg(&png)
        .status()?;
    if !status.success() {
        bail!("plot.py exited with {status}");
    }
    Ok(png)
}
