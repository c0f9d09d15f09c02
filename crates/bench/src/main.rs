//! `ferry-bench`: measures, on the local test bed, what `make bench` reports in
//! docs/benchmarks.md. Runs against the bed described by the FERRY_BED_* variables.
//!
//! 1. Generates a dataset of `--gb` GB on the source (several tables, one large; text, numeric,
//!    jsonb; integer, uuid and composite keys).
//! 2. Snapshot copy to fresh target databases: Ferry (schema + capture + parallel chunked COPY +
//!    post-data), `pg_dump -Fd -j2 | pg_restore -j2`, and `pgcopydb clone` (if installed).
//! 3. pgbench write throughput on the source without and with capture (trigger mode, worker
//!    applying meanwhile), and replication lag under that load in trigger and logical mode.
//! 4. The process's peak RSS (VmHWM) after the copy.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ferry_core::spec::{CaptureMode, LogicalTransport};
use ferry_pg::PgUrl;
use ferry_replicator::{
    engine::{Config, Replicator},
    schema::Tools,
};

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

async fn generate(url: &PgUrl, gb: f64) -> anyhow::Result<(Duration, i64)> {
    let t = Instant::now();
    let c = url.connect().await?;
    c.batch_execute(
        "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, profile jsonb);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id),
             status text NOT NULL, amount numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL,
             payload jsonb NOT NULL, note text);
         CREATE INDEX orders_customer ON orders (customer_id);
         CREATE TABLE events (id uuid PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL, body text NOT NULL);
         CREATE TABLE line_items (order_id bigint NOT NULL, line_no int NOT NULL, sku text NOT NULL,
             qty int NOT NULL, price numeric(10, 2) NOT NULL, PRIMARY KEY (order_id, line_no));",
    )
    .await?;
    let n = |base: f64| (base * gb).round() as i64;
    let (customers, orders, events, items) =
        (n(500_000.0), n(3_600_000.0), n(900_000.0), n(2_500_000.0));
    let statements = [
        format!("INSERT INTO customers SELECT g, 'user' || g || '@example.com', 'Customer ' || md5(g::text),
                 jsonb_build_object('tier', g % 5, 'tags', jsonb_build_array(md5((g * 7)::text)))
                 FROM generate_series(1, {customers}) g"),
        format!("INSERT INTO orders SELECT g, 1 + g % {customers}, (ARRAY['new','paid','shipped','done'])[1 + g % 4],
                 (g % 100000) / 100.0, now() - (g % 1000) * interval '1 hour',
                 jsonb_build_object('sku', md5(g::text), 'qty', g % 9, 'gift', g % 7 = 0, 'addr', md5((g + 1)::text)),
                 md5((g * 3)::text) || ' ' || md5((g * 5)::text) || ' ' || md5((g * 11)::text) || ' ' || md5((g * 13)::text)
                 FROM generate_series(1, {orders}) g"),
        format!("INSERT INTO events SELECT md5('e' || g)::uuid, 'k' || g % 12, now() - g * interval '1 second',
                 repeat(md5(g::text), 5) FROM generate_series(1, {events}) g"),
        format!("INSERT INTO line_items SELECT g / 3, g % 3, 'SKU-' || (g % 5000), 1 + g % 4, (g % 1000) + 0.99
                 FROM generate_series(1, {items}) g"),
    ];
    // Customers first (orders reference them), then the rest two at a time.
    c.batch_execute(&statements[0]).await?;
    let c2 = url.connect().await?;
    let (a, b) = tokio::join!(
        c.batch_execute(&statements[1]),
        c2.batch_execute(&statements[2])
    );
    a?;
    b?;
    c.batch_execute(&statements[3]).await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    let bytes: i64 = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    Ok((t.elapsed(), bytes))
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
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .context("no VmHWM in /proc/self/status")
}

fn config(source: PgUrl, target: PgUrl, bin: PathBuf, capture: CaptureMode) -> Config {
    Config {
        source,
        target,
        tools: Tools { bin_dir: bin },
        parallelism: 2,
        rows_per_chunk: 250_000,
        batch_size: 5_000,
        capture,
        max_copy_bytes_per_second: None,
        logical_transport: LogicalTransport::default(),
    }
}

struct LoadResult {
    tps: f64,
    lag_p50: f64,
    lag_p99: f64,
    lag_max: f64,
    samples: usize,
}

/// pgbench for `seconds` against `url`; meanwhile, if given, a replicator applies changes and
/// its lag is sampled every 200 ms.
async fn pgbench(
    bin: &std::path::Path,
    url: &PgUrl,
    seconds: u64,
    mut rep: Option<&mut Replicator>,
) -> anyhow::Result<LoadResult> {
    settle(url).await?;
    let mut cmd = tokio::process::Command::new(bin.join("pgbench"));
    let u = libpq(&mut cmd, url);
    cmd.args([
        "-n",
        "-c",
        "4",
        "-j",
        "2",
        "-M",
        "prepared",
        "-T",
        &seconds.to_string(),
        &u,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().context("start pgbench")?;
    let mut lags = Vec::new();
    let out = if let Some(rep) = rep.as_deref_mut() {
        let wait = child.wait_with_output();
        tokio::pin!(wait);
        let mut last_sample = Instant::now();
        loop {
            tokio::select! {
                out = &mut wait => break out?,
                r = rep.apply_once() => {
                    let applied = r?;
                    if last_sample.elapsed() >= Duration::from_millis(200) {
                        last_sample = Instant::now();
                        lags.push(rep.status().await?.lag_seconds.unwrap_or(0.0));
                    }
                    if applied.changes == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    } else {
        child.wait_with_output().await?
    };
    if !out.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
        .context("no tps line in pgbench output")?;
    if let Some(rep) = rep {
        rep.drain(None).await?;
    }
    lags.sort_by(f64::total_cmp);
    // No sample means no measurement: NaN, which never counts as a goal met.
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(LoadResult {
        tps,
        lag_p50: pct(0.5),
        lag_p99: pct(0.99),
        lag_max: lags.last().copied().unwrap_or(f64::NAN),
        samples: lags.len(),
    })
}

/// Lets earlier work (index builds, dirty buffers) settle so each run starts alike.
async fn settle(url: &PgUrl) -> anyhow::Result<()> {
    let c = url.connect().await?;
    c.batch_execute("VACUUM ANALYZE pgbench_accounts, pgbench_tellers, pgbench_branches")
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn pgbench_db(bed: &Bed, name: &str, owner_app: bool) -> anyhow::Result<PgUrl> {
    let admin_db = recreate(&bed.source_admin, name, owner_app.then_some("heroku_app")).await?;
    let url = if owner_app {
        bed.source_app.with_dbname(name)
    } else {
        admin_db
    };
    let mut cmd = tokio::process::Command::new(bed.source_bin.join("pgbench"));
    let u = libpq(&mut cmd, &url);
    run(cmd.args(["-i", "-q", "-s", "20", &u]), "pgbench -i").await?;
    // pgbench_history has no key; replication needs one (preflight would block without it).
    url.connect()
        .await?
        .batch_execute("ALTER TABLE pgbench_history ADD COLUMN hid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
        .await?;
    url.connect().await?.batch_execute("VACUUM ANALYZE").await?;
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let gb: f64 = arg("--gb", "2").parse().context("--gb takes a number")?;
    let seconds: u64 = arg("--pgbench-seconds", "30")
        .parse()
        .context("--pgbench-seconds takes a number")?;
    let out_path = PathBuf::from(arg("--out", "docs/benchmarks.md"));
    let bed = Bed::from_env()?;
    let mut lines: Vec<String> = Vec::new();
    let mut say = |s: String| {
        println!("{s}");
        lines.push(s);
    };

    say(format!("generating ~{gb} GB on the source…"));
    recreate(&bed.source_admin, "bench_src", Some("heroku_app")).await?;
    let app_source = bed.source_app.with_dbname("bench_src");
    let (gen_time, db_bytes) = generate(&app_source, gb).await?;
    let gib = db_bytes as f64 / (1u64 << 30) as f64;
    say(format!(
        "dataset: {gib:.2} GiB (pg_database_size) generated in {:.0} s",
        gen_time.as_secs_f64()
    ));

    // Ferry.
    let ferry_target = recreate(&bed.target_admin, "bench_ferry", None).await?;
    let mut rep = Replicator::connect(config(
        app_source.clone(),
        ferry_target.clone(),
        bed.target_bin.clone(),
        CaptureMode::Trigger,
    ))
    .await?;
    let t = Instant::now();
    let timings = rep.prepare().await?;
    let ferry_total = t.elapsed();
    let rss = peak_rss_mib()?;
    let status = rep.status().await?;
    rep.cleanup().await?;
    drop(rep);
    say(format!(
        "ferry: {:.1} s (schema {:.1}, capture {:.1}, copy {:.1}, post-data {:.1}); {} rows, {:.0} MiB of COPY data; peak RSS {rss:.0} MiB",
        ferry_total.as_secs_f64(),
        timings.schema.as_secs_f64(),
        timings.capture.as_secs_f64(),
        timings.copy.as_secs_f64(),
        timings.post_data.as_secs_f64(),
        status.rows_copied,
        status.bytes_copied as f64 / 1048576.0
    ));

    // pg_dump -Fd -j2 | pg_restore -j2 (the target's tools: at least as new as the source).
    let dump_dir = std::env::temp_dir().join("ferry-bench-dump");
    let _ = std::fs::remove_dir_all(&dump_dir);
    let dump_target = recreate(&bed.target_admin, "bench_dump", None).await?;
    let mut cmd = tokio::process::Command::new(bed.target_bin.join("pg_dump"));
    let u = libpq(&mut cmd, &app_source);
    let dump_time = run(
        cmd.args(["-Fd", "-j", "2", "--no-owner", "--no-privileges", "-f"])
            .arg(&dump_dir)
            .arg(&u),
        "pg_dump",
    )
    .await?;
    let mut cmd = tokio::process::Command::new(bed.target_bin.join("pg_restore"));
    let u = libpq(&mut cmd, &dump_target);
    let restore_time = run(
        cmd.args(["-j", "2", "--no-owner", "--no-privileges", "-d", &u])
            .arg(&dump_dir),
        "pg_restore",
    )
    .await?;
    let _ = std::fs::remove_dir_all(&dump_dir);
    let dump_total = dump_time + restore_time;
    say(format!(
        "pg_dump -Fd -j2 + pg_restore -j2: {:.1} s (dump {:.1}, restore {:.1})",
        dump_total.as_secs_f64(),
        dump_time.as_secs_f64(),
        restore_time.as_secs_f64()
    ));

    // pgcopydb clone.
    let pgcopydb = match which("pgcopydb") {
        Some(bin) => {
            let target = recreate(&bed.target_admin, "bench_pgcopydb", None).await?;
            let dir = std::env::temp_dir().join("ferry-bench-pgcopydb");
            let _ = std::fs::remove_dir_all(&dir);
            let mut cmd = tokio::process::Command::new(bin);
            // pgcopydb takes one password through the environment: the app role's for the source,
            // the target's in its URL.
            // Both URLs through pgcopydb's environment variables, never on its command line
            // (which any process listing shows).
            let path = format!(
                "{}:{}",
                bed.target_bin.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            cmd.env("PATH", path)
                .env("PGCOPYDB_SOURCE_PGURI", app_source.expose_secret())
                .env("PGCOPYDB_TARGET_PGURI", target.expose_secret())
                .arg("clone")
                .args([
                    "--table-jobs",
                    "2",
                    "--index-jobs",
                    "2",
                    "--no-owner",
                    "--no-acl",
                    "--dir",
                ])
                .arg(&dir);
            let r = run(&mut cmd, "pgcopydb clone").await;
            let _ = std::fs::remove_dir_all(&dir);
            match r {
                Ok(d) => {
                    say(format!(
                        "pgcopydb clone --table-jobs 2 --index-jobs 2: {:.1} s",
                        d.as_secs_f64()
                    ));
                    Some(d)
                }
                Err(e) => {
                    say(format!("pgcopydb clone failed: {e:#}"));
                    None
                }
            }
        }
        None => {
            say("pgcopydb: not installed (apt-get install pgcopydb)".into());
            None
        }
    };

    // Capture overhead and lag under pgbench. The worker and the target share this machine's
    // two cores with the source here (on AWS they would not), so the trigger overhead is
    // measured with triggers installed and no worker running, and lag in a second run with the
    // worker applying.
    let trig_src = pgbench_db(&bed, "bench_pgb", true).await?;
    let base = pgbench(&bed.source_bin, &trig_src, seconds, None).await?;
    let trig_tgt = recreate(&bed.target_admin, "bench_pgb_t", None).await?;
    let mut rep = Replicator::connect(config(
        trig_src.clone(),
        trig_tgt,
        bed.target_bin.clone(),
        CaptureMode::Trigger,
    ))
    .await?;
    rep.prepare().await?;
    let trig_only = pgbench(&bed.source_bin, &trig_src, seconds, None).await?;
    rep.drain(None).await?;
    let trig = pgbench(&bed.source_bin, &trig_src, seconds, Some(&mut rep)).await?;
    rep.cleanup().await?;
    drop(rep);
    // The baseline again, after capture is gone: the comparison uses the mean of both.
    let base_after = pgbench(&bed.source_bin, &trig_src, seconds, None).await?;
    let base = LoadResult {
        tps: (base.tps + base_after.tps) / 2.0,
        ..base
    };
    let logi_src = pgbench_db(&bed, "bench_pgb_l", false).await?;
    let logi_base = pgbench(&bed.source_bin, &logi_src, seconds, None).await?;
    let logi_tgt = recreate(&bed.target_admin, "bench_pgb_lt", None).await?;
    let mut rep = Replicator::connect(config(
        logi_src.clone(),
        logi_tgt,
        bed.target_bin.clone(),
        CaptureMode::Logical,
    ))
    .await?;
    rep.prepare().await?;
    let logi = pgbench(&bed.source_bin, &logi_src, seconds, Some(&mut rep)).await?;
    rep.cleanup().await?;
    say(format!(
        "pgbench ({seconds} s, 4 clients, scale 20): no capture {:.0} tps (mean of a run before and one after); trigger capture installed {:.0} tps ({:.0}%); trigger capture + worker applying on this machine {:.0} tps ({:.0}%)",
        base.tps,
        trig_only.tps,
        100.0 * trig_only.tps / base.tps,
        trig.tps,
        100.0 * trig.tps / base.tps
    ));
    say(format!(
        "pgbench logical: no capture {:.0} tps; slot + worker applying on this machine {:.0} tps ({:.0}%)",
        logi_base.tps,
        logi.tps,
        100.0 * logi.tps / logi_base.tps
    ));
    say(format!(
        "lag under load: trigger p50 {:.2} s, p99 {:.2} s, max {:.2} s ({} samples); logical p50 {:.2} s, p99 {:.2} s, max {:.2} s ({} samples)",
        trig.lag_p50,
        trig.lag_p99,
        trig.lag_max,
        trig.samples,
        logi.lag_p50,
        logi.lag_p99,
        logi.lag_max,
        logi.samples
    ));

    // The report.
    let speedup = |other: Duration| other.as_secs_f64() / ferry_total.as_secs_f64();
    let mut md = String::new();
    md.push_str("# Benchmarks\n\nProduced by `make bench` (`ferry-bench --gb ");
    md.push_str(&format!("{gb} --pgbench-seconds {seconds}`) on the local test bed: source PostgreSQL {} → target PostgreSQL {}, both on this 2-core machine, TLS on, `fsync=off`. Every tool gets 2 parallel jobs. Figures are from one run; rerun to see the spread.\n\n", var("FERRY_BED_SOURCE_VERSION")?, var("FERRY_BED_TARGET_VERSION")?));
    md.push_str(&format!("Dataset: {gib:.2} GiB (`pg_database_size`): customers, orders (the large one: integer key, text, numeric, jsonb), events (uuid key), line_items (composite key).\n\n"));
    md.push_str("| measure | result | goal | met |\n|---|---|---|---|\n");
    md.push_str(&format!("| Ferry snapshot copy, schema to indexes | {:.1} s (schema {:.1}, capture {:.1}, copy {:.1}, post-data {:.1}) | — | — |\n", ferry_total.as_secs_f64(), timings.schema.as_secs_f64(), timings.capture.as_secs_f64(), timings.copy.as_secs_f64(), timings.post_data.as_secs_f64()));
    md.push_str(&format!(
        "| pg_dump -Fd -j2 + pg_restore -j2 | {:.1} s → Ferry is {:.2}× faster | ≥ 2× | {} |\n",
        dump_total.as_secs_f64(),
        speedup(dump_total),
        yes(speedup(dump_total) >= 2.0)
    ));
    match pgcopydb {
        Some(d) => md.push_str(&format!("| pgcopydb clone (2 table jobs, 2 index jobs) | {:.1} s → Ferry is {:.2}× | ≥ 1.0× | {} |\n", d.as_secs_f64(), speedup(d), yes(speedup(d) >= 1.0))),
        None => md.push_str("| pgcopydb clone | not run | ≥ 1.0× | — |\n"),
    }
    md.push_str(&format!(
        "| pgbench tps with capture triggers installed | {:.0}% of {:.0} tps | ≥ 70% | {} |\n",
        100.0 * trig_only.tps / base.tps,
        base.tps,
        yes(trig_only.tps / base.tps >= 0.7)
    ));
    md.push_str(&format!(
        "| … with triggers and the worker applying on the same 2 cores | {:.0}% | — | — |\n",
        100.0 * trig.tps / base.tps
    ));
    md.push_str(&format!("| pgbench tps with a logical slot and the worker applying on the same 2 cores | {:.0}% of {:.0} tps | — | — |\n", 100.0 * logi.tps / logi_base.tps, logi_base.tps));
    md.push_str(&format!("| lag under pgbench, trigger mode | p50 {:.2} s, p99 {:.2} s, max {:.2} s | p99 ≤ 1 s | {} |\n", trig.lag_p50, trig.lag_p99, trig.lag_max, yes(trig.lag_p99 <= 1.0)));
    md.push_str(&format!("| lag under pgbench, logical mode | p50 {:.2} s, p99 {:.2} s, max {:.2} s | p99 ≤ 1 s | {} |\n", logi.lag_p50, logi.lag_p99, logi.lag_max, yes(logi.lag_p99 <= 1.0)));
    md.push_str(&format!(
        "| peak RSS of the copying process | {rss:.0} MiB | ≤ 256 MiB | {} |\n",
        yes(rss <= 256.0)
    ));
    md.push_str("\nLag is the age of the oldest captured change not yet applied, sampled every 200 ms while pgbench runs (`-c 4 -j 2 -M prepared`, tpcb-like, scale 20, with a key added to `pgbench_history`).\n\nRaw output:\n\n```\n");
    md.push_str(&lines.join("\n"));
    md.push_str("\n```\n");
    std::fs::create_dir_all(out_path.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&out_path, md)?;
    println!("wrote {}", out_path.display());
    Ok(())
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
