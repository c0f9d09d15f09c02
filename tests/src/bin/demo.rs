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
use ferry_tests::rehearsal::{App, Approver, EcsRunner, Options, Rehearsal, Scheduler, Side};

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
        parallelism: 2,
    };
    let (status, report) = rehearse(&options, &report_dir).await?;
    if status != ExecutionStatus::Succeeded || report.lost > 0 {
        bail!("the rehearsal did not end well: see the report");
    }
    Ok(())
}

/// `make bench-cutover`: the happy path `runs` times under load; the write freeze and the
/// app-side write gap of each, with p50 and max, into BENCH_OUT (markdown).
async fn bench(runs: usize, wps: u32, rps: u32) -> anyhow::Result<()> {
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "docs/benchmarks-cutover.md".into());
    let options = Options {
        rows: env_num("DEMO_ROWS", 100_000),
        steps: vec![50, 100],
        canary_interval_seconds: 1,
        rollback_window_seconds: 1,
        writes_per_second: wps,
        reads_per_second: rps,
        endpoint: EndpointMode::Proxy,
        parallelism: 2,
    };
    let mut rows = Vec::new();
    for i in 1..=runs {
        let dir = std::env::temp_dir().join(format!("ferry-bench-cutover-{i}"));
        let (status, report) = rehearse(&options, &dir).await?;
        println!(
            "run {i}/{runs}: {status:?}, freeze {} ms, app gap {:.0} ms, lost {}",
            report.freeze_ms.unwrap_or(-1),
            report.gap_ms,
            report.lost
        );
        if status != ExecutionStatus::Succeeded || report.lost > 0 || report.freeze_ms.is_none() {
            bail!("run {i} did not end well: {}", dir.display());
        }
        rows.push((report.freeze_ms.unwrap_or(0) as f64, report.gap_ms));
    }
    let pct = |mut v: Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    };
    let freeze: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let gap: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let (f50, fmax) = (pct(freeze.clone(), 0.5), pct(freeze.clone(), 1.0));
    let (g50, gmax) = (pct(gap.clone(), 0.5), pct(gap.clone(), 1.0));
    let mut md = String::new();
    writeln!(md, "# Cutover benchmark (`make bench-cutover`)\n")?;
    writeln!(
        md,
        "{runs} happy-path migrations on the local bed (PostgreSQL {} → {}, {} event rows, trigger capture), the sample app writing {wps}/s through the weighted resolver during each. Measured {}.\n",
        ferry_tests::bed_var("FERRY_BED_SOURCE_VERSION"),
        ferry_tests::bed_var("FERRY_BED_TARGET_VERSION"),
        options.rows,
        Utc::now().format("%Y-%m-%d")
    )?;
    writeln!(
        md,
        "| measure | p50 | max | goal |\n| --- | ---: | ---: | --- |"
    )?;
    writeln!(
        md,
        "| write freeze (source frozen → target writable) | {f50:.0} ms | {fmax:.0} ms | p50 ≤ 1000 ms, max ≤ 3000 ms: {} |",
        if f50 <= 1000.0 && fmax <= 3000.0 {
            "met"
        } else {
            "NOT met"
        }
    )?;
    writeln!(
        md,
        "| app-side write gap (longest pause between acknowledged writes) | {g50:.0} ms | {gmax:.0} ms | — |\n"
    )?;
    writeln!(md, "Runs (freeze ms, gap ms): {rows:?}\n")?;
    writeln!(
        md,
        "The gap includes the freeze, the app noticing its session was ended and rereading DATABASE_URL from SSM, and a new TLS connection; a real app on ECS rereads it only when redeployed (minutes) unless it rereads on connection errors as the sample app does."
    )?;
    std::fs::write(&out, &md)?;
    print!("{md}");
    println!("written to {out}");
    Ok(())
}

async fn rehearse(
    options: &Options,
    report_dir: &std::path::Path,
) -> anyhow::Result<(ExecutionStatus, Report)> {
    let (rows, wps) = (options.rows, options.writes_per_second);
    let t0 = Instant::now();
    println!("Ferry rehearsal: a whole migration on this machine, for real.");
    println!("  generating the Heroku side: {rows} event rows, an app role, a Heroku app …");
    let r = Rehearsal::new(options).await;
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

    // Approvals, as a person would click them (the rollback window is left to time out).
    let gates = {
        let (approver, id, exec) = (approver.clone(), r.id.clone(), exec.clone());
        tokio::spawn(async move {
            for gate in [Gate::ShiftTraffic, Gate::Cutover] {
                let answer = approver
                    .decide(&id, &exec, gate, true, Duration::from_secs(1800))
                    .await;
                println!("\n  approved {gate} (Slack, signed): {answer}");
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
    app.shutdown();
    scheduler.shutdown();
    runner.shutdown();
    println!(
        "\n\nexecution {status:?} {}",
        error.clone().unwrap_or_default()
    );

    let report = build_report(
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
    gap_ms: f64,
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
    let (gap, gap_at) = app.longest_gap();
    let acked = app.acked();
    let client = r.target.connect().await?;
    let present: Vec<i64> = client
        .query("SELECT id FROM orders WHERE id = ANY($1)", &[&acked])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost = acked.iter().filter(|id| !present.contains(id)).count();
    let log = app.log.lock().expect("log").clone();
    let errors = |side: Side| {
        log.iter()
            .filter(|q| q.side == side && q.result.is_err())
            .count()
    };
    let acks = |side: Side| {
        log.iter()
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
         write freeze {} ms; app-side write gap {:.0} ms\n\
         writes acknowledged {}, lost {lost}\n",
        copied_bytes as f64 / 1e6,
        copy_secs
            .map(|s| format!(
                " in {s:.1} s ({:.1} MB/s)",
                copied_bytes as f64 / 1e6 / s.max(0.001)
            ))
            .unwrap_or_default(),
        freeze_ms.map_or("-".into(), |f| f.to_string()),
        gap.as_secs_f64() * 1000.0,
        acked.len(),
    );
    Ok(Report {
        markdown: md,
        csv,
        summary,
        lost,
        freeze_ms,
        gap_ms: gap.as_secs_f64() * 1000.0,
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
