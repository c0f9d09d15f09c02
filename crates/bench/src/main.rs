//! `ferry-bench`: measures, on the local test bed, what `make bench` reports in
//! docs/benchmarks.md. Runs against the bed described by the FERRY_BED_* variables.
//!
//! 1. Two datasets of `--gb` GB on the source, the same four tables (text, numeric, jsonb;
//!    integer, uuid and composite keys) in two shapes: the largest table keyed by a bigint, or
//!    by a uuid (≥ 60 % of the bytes). On each, the snapshot copy into fresh target databases:
//!    Ferry (schema + capture + parallel chunked COPY + post-data), `pg_dump -Fd -j2 |
//!    pg_restore -j2`, and `pgcopydb clone --split-tables-larger-than` (if installed).
//! 2. The app's write latency on the source during Ferry's copy, at full speed and held to
//!    `--throttle-mb` MB/s.
//! 3. pgbench tps on the source with no trigger, an empty trigger, an insert-only trigger and
//!    Ferry's trigger capture; lag under pgbench in trigger and logical (streamed) mode, from
//!    the bed's source server and, when `--newer-source` is given, from its target server.
//! 4. The process's peak RSS (VmHWM) after the copies.

mod capture;
mod cpu;
mod dataset;
mod race;
mod report;
mod scale;
mod spare;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ferry_core::spec::{CaptureMode, LogicalTransport};
use ferry_pg::PgUrl;
use ferry_replicator::{engine::Config, schema::Tools};

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run through `make bench`"))
}

struct Bed {
    source_admin: PgUrl,
    target_admin: PgUrl,
    source_app: PgUrl,
    source_bin: PathBuf,
    target_bin: PathBuf,
}

impl Bed {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            source_admin: PgUrl::parse(&var("FERRY_BED_SOURCE_URL")?)?,
            target_admin: PgUrl::parse(&var("FERRY_BED_TARGET_URL")?)?,
            source_app: PgUrl::parse(&var("FERRY_BED_SOURCE_APP_URL")?)?,
            source_bin: PathBuf::from(var("FERRY_BED_SOURCE_BIN")?),
            target_bin: PathBuf::from(var("FERRY_BED_TARGET_BIN")?),
        })
    }
}

async fn recreate(admin: &PgUrl, db: &str, owner: Option<&str>) -> anyhow::Result<PgUrl> {
    let c = admin.connect().await?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await?;
    let owner = owner.map(|o| format!(" OWNER {o}")).unwrap_or_default();
    c.batch_execute(&format!("CREATE DATABASE \"{db}\"{owner}"))
        .await?;
    Ok(admin.with_dbname(db))
}

/// Drops a database the bench made (the machine's disk holds a few GB at a time, not all).
async fn drop_db(admin: &PgUrl, db: &str) -> anyhow::Result<()> {
    admin
        .connect()
        .await?
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await?;
    Ok(())
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(t.elapsed())
}

fn libpq(cmd: &mut tokio::process::Command, url: &PgUrl) -> String {
    let (u, pw) = url.for_libpq();
    if let Some(p) = pw {
        cmd.env("PGPASSWORD", p);
    }
    u
}

/// The process's peak resident set (VmHWM), in MiB.
fn peak_rss_mib() -> anyhow::Result<f64> {
    proc_kib("/proc/self/status", "VmHWM:").map(|kib| kib / 1024.0)
}

/// A `<key> <n> kB` line's figure from a /proc file (`/proc/self/status`, `/proc/meminfo`).
fn proc_kib(path: &str, key: &str) -> anyhow::Result<f64> {
    std::fs::read_to_string(path)
        .with_context(|| format!("read {path}"))?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .with_context(|| format!("no {key} in {path}"))
}

/// Writes a results page (docs/benchmarks*.md), making its folder if need be.
fn write_page(out: &std::path::Path, md: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(out, md)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn config(source: PgUrl, target: PgUrl, bin: PathBuf, capture: CaptureMode) -> Config {
    Config {
        source,
        target,
        tools: Tools { bin_dir: bin },
        parallelism: 2,
        rows_per_chunk: race::ROWS_PER_CHUNK,
        batch_size: 5_000,
        capture,
        max_copy_bytes_per_second: None,
        logical_transport: LogicalTransport::default(),
    }
}

/// The command line: `--gb`, `--pgbench-seconds`, `--throttle-mb`, `--out`, `--newer-source`;
/// `--scale` (with `--shape int|uuid`) runs Ferry's copy alone on one dataset (see [`scale`]).
struct Args {
    gb: f64,
    seconds: u64,
    throttle_mb: u32,
    out: PathBuf,
    newer_source: bool,
    scale: bool,
    shape: dataset::Shape,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        let arg = |name: &str, default: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1).cloned())
                .unwrap_or_else(|| default.to_string())
        };
        let gb: f64 = arg("--gb", "2").parse().context("--gb takes a number")?;
        if !(0.01..=100.0).contains(&gb) {
            bail!("--gb must be from 0.01 to 100");
        }
        Ok(Self {
            gb,
            seconds: arg("--pgbench-seconds", "30")
                .parse()
                .context("--pgbench-seconds takes a number")?,
            throttle_mb: arg("--throttle-mb", "40")
                .parse()
                .context("--throttle-mb takes a number of MB per second")?,
            out: PathBuf::from(arg("--out", "docs/benchmarks.md")),
            newer_source: args.iter().any(|a| a == "--newer-source"),
            scale: args.iter().any(|a| a == "--scale"),
            shape: match arg("--shape", "uuid").as_str() {
                "int" => dataset::Shape::IntegerKey,
                "uuid" => dataset::Shape::UuidKey,
                other => bail!("--shape takes int or uuid, not {other:?}"),
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let bed = Bed::from_env()?;
    let meter = cpu::Meter::new(&bed.source_admin, &bed.target_admin).await?;
    if args.scale {
        return scale::run(&args, &bed, &meter).await;
    }
    let mut r = report::Report::new(&args);
    r.shared_buffers = bed
        .target_admin
        .connect()
        .await?
        .query_one("SHOW shared_buffers", &[])
        .await?
        .get(0);

    let mut sources = Vec::new();
    for shape in [dataset::Shape::IntegerKey, dataset::Shape::UuidKey] {
        let tag = shape.tag();
        r.say(format!(
            "generating ~{} GB ({}) on the source…",
            args.gb,
            shape.label()
        ));
        let db = format!("bench_src_{tag}");
        recreate(&bed.source_admin, &db, Some("heroku_app")).await?;
        let source = bed.source_app.with_dbname(&db);
        let data = dataset::generate(&source, args.gb, shape).await?;
        r.dataset(shape, &data);
        let race = race::race(&bed, &meter, &source, tag).await?;
        r.race(shape, &race);
        if shape == dataset::Shape::IntegerKey {
            sources.push(source);
        } else {
            drop_db(&bed.source_admin, &db).await?;
        }
    }
    let rss = peak_rss_mib()?;
    r.say(format!("peak RSS after the copies: {rss:.0} MiB"));
    r.rss = rss;

    for mb in [None, Some(args.throttle_mb)] {
        let spared = spare::copy_under_load(&bed, &meter, &sources[0], mb).await?;
        r.spared(spared);
    }
    drop_db(&bed.source_admin, "bench_src_int").await?;

    let source_server = capture::Server {
        admin: bed.source_admin.clone(),
        app: Some(bed.source_app.clone()),
        bin: bed.source_bin.clone(),
        version: var("FERRY_BED_SOURCE_VERSION")?,
    };
    let (floor, applying) = capture::floor(
        &source_server,
        &bed.target_admin,
        &bed.target_bin,
        args.seconds,
    )
    .await?;
    r.floor(&source_server.version, floor, applying);
    let mut servers = vec![source_server];
    if args.newer_source {
        servers.push(capture::Server {
            admin: bed.target_admin.clone(),
            app: None,
            bin: bed.target_bin.clone(),
            version: var("FERRY_BED_TARGET_VERSION")?,
        });
    }
    for (i, server) in servers.iter().enumerate() {
        for capture in [CaptureMode::Trigger, CaptureMode::Logical] {
            let tag = format!(
                "{i}_{}",
                if capture == CaptureMode::Logical {
                    "l"
                } else {
                    "t"
                }
            );
            let (base, with) = capture::lag(
                server,
                &bed.target_admin,
                &bed.target_bin,
                capture,
                &tag,
                args.seconds,
            )
            .await?;
            r.lag(&server.version, capture, base, with);
        }
    }
    r.write(
        &args.out,
        &var("FERRY_BED_SOURCE_VERSION")?,
        &var("FERRY_BED_TARGET_VERSION")?,
    )
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}
