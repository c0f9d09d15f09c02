//! `make bench`, the Redis part: on the bed's two Redis servers (TLS, AUTH; the source as
//! Heroku's), one run of
//! - the copy of a generated dataset of mixed keys (strings, hashes, lists, sorted sets; one in
//!   ten with a TTL), by Ferry's copy with 1 and 4 sessions, beside `redis-cli --rdb` streaming
//!   the source's snapshot to a file (what any dump-based move spends before it restores
//!   anything; ElastiCache takes no RDB from a client);
//! - the live sync's lag under 2,000 writes/s, measured end to end (a probe key written on the
//!   source every 100 ms, timed until it is readable on the target);
//! - the Redis freeze of a switch through the endpoint's proxy: pause → drain marker →
//!   retarget → resume, and the longest command a client held meanwhile saw.
//!
//! Writes a markdown table (`--out`, default `docs/benchmarks-redis.md`). Arguments: `--mb`
//! (dataset size in MB of `used_memory`, default 1024), `--db` (default 14), `--lag-seconds`
//! (30), `--switches` (20).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ferry_core::secret::Secret;
use ferry_kv::{Conn, RedisUrl, cmd, copy, proxy::Proxy, resp::Value, sync};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn bed(var: &str, db: u32) -> anyhow::Result<RedisUrl> {
    let text = std::env::var(var).with_context(|| format!("{var} is not set: start the bed"))?;
    Ok(RedisUrl::parse(&text)?.with_db(db))
}

async fn info_text(c: &mut Conn, section: &str, field: &str) -> anyhow::Result<String> {
    let Value::Bulk(Some(text)) = c.call(cmd!["INFO", section]).await? else {
        bail!("INFO {section}: no text");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| Some(l.strip_prefix(&format!("{field}:"))?.trim().to_string()))
        .with_context(|| format!("INFO {section} has no {field}"))
}

async fn info_field(c: &mut Conn, section: &str, field: &str) -> anyhow::Result<u64> {
    info_text(c, section, field)
        .await?
        .parse()
        .with_context(|| format!("INFO {section} {field} is not a number"))
}

async fn dbsize(c: &mut Conn) -> anyhow::Result<i64> {
    match c.call(cmd!["DBSIZE"]).await? {
        Value::Int(n) => Ok(n),
        other => bail!("DBSIZE: {}", other.shape()),
    }
}

/// Writes mixed keys until `used_memory` grew by `mb` MB; returns (keys, bytes grown, time).
async fn generate(c: &mut Conn, mb: u64) -> anyhow::Result<(i64, u64, Duration)> {
    c.call(cmd!["FLUSHDB"]).await?;
    let started = Instant::now();
    let base = info_field(c, "memory", "used_memory").await?;
    let goal = base + mb * 1_000_000;
    let filler = |i: u64, n: usize| {
        format!("{i:016x}")
            .repeat(n / 16 + 1)
            .chars()
            .take(n)
            .collect::<String>()
    };
    let mut i: u64 = 0;
    loop {
        let mut commands = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let k = format!("bench:{i}");
            commands.push(match i % 10 {
                0..=4 => cmd!["SET", &k, filler(i, 512)],
                5 | 6 => {
                    let mut c = cmd!["HSET", &k];
                    for f in 0..8 {
                        c.extend(cmd![format!("f{f}"), filler(i + f, 64)]);
                    }
                    c
                }
                7 => {
                    let mut c = cmd!["RPUSH", &k];
                    for e in 0..16 {
                        c.push(filler(i + e, 64).into_bytes());
                    }
                    c
                }
                8 => {
                    let mut c = cmd!["ZADD", &k];
                    for m in 0..16 {
                        c.extend(cmd![m.to_string(), filler(i + m, 48)]);
                    }
                    c
                }
                _ => cmd!["SET", &k, filler(i, 512), "EX", "3600"],
            });
            i += 1;
        }
        for a in c.pipeline(commands).await? {
            if let Value::Error(e) = a {
                bail!("generate: {e}");
            }
        }
        if info_field(c, "memory", "used_memory").await? >= goal {
            break;
        }
    }
    let grown = info_field(c, "memory", "used_memory").await? - base;
    Ok((dbsize(c).await?, grown, started.elapsed()))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// `redis-cli --rdb`: the source's snapshot streamed to a file.
async fn rdb_dump(source: &RedisUrl) -> anyhow::Result<Option<Duration>> {
    let (Some(password), Ok(file)) = (
        source.password(),
        std::env::var("FERRY_BED_DIR").map(|d| PathBuf::from(d).join("bench.rdb")),
    ) else {
        return Ok(None);
    };
    let started = Instant::now();
    let out = tokio::process::Command::new("redis-cli")
        .args(["--tls", "--insecure", "-h", &source.host])
        .args(["-p", &source.port.to_string(), "--no-auth-warning"])
        .env("REDISCLI_AUTH", password.expose())
        .arg("--rdb")
        .arg(&file)
        .output()
        .await
        .context("run redis-cli")?;
    let took = started.elapsed();
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        println!(
            "redis-cli --rdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(None);
    }
    Ok(Some(took))
}

/// The live sync's lag under `rate` writes/s for `seconds`: end-to-end probe delays in ms.
async fn lag(
    source: &RedisUrl,
    target: &RedisUrl,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Vec<f64>> {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let passes = Arc::new(AtomicU64::new(0));
    let seen = passes.clone();
    let (s, t) = (source.clone(), target.clone());
    let sync_task = tokio::spawn(async move {
        let options = sync::Options {
            client_name: "ferry-bench-sync".into(),
            ..sync::Options::default()
        };
        sync::run(&s, &t, &options, rx, move |p| {
            seen.store(p.full_passes, SeqCst);
        })
        .await
    });
    while passes.load(SeqCst) == 0 {
        if sync_task.is_finished() {
            bail!("the sync ended before its first pass");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (source, done) = (source.clone(), done.clone());
        tokio::spawn(async move {
            let mut c = Conn::connect(&source).await?;
            let per_tick = (rate / 100).max(1);
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !done.load(SeqCst) {
                tick.tick().await;
                let commands = (0..per_tick)
                    .map(|_| {
                        n += 1;
                        cmd!["SET", format!("w:{}", n % 50_000), n.to_string()]
                    })
                    .collect();
                c.pipeline(commands).await?;
            }
            Ok::<u64, ferry_kv::KvError>(n)
        })
    };
    let mut probe = Conn::connect(source).await?;
    let mut waits = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        n += 1;
        let key = format!("lagprobe:{n}");
        let sent = Instant::now();
        probe.call(cmd!["SET", &key, "x"]).await?;
        let target = target.clone();
        waits.push(tokio::spawn(async move {
            let mut c = Conn::connect(&target).await?;
            loop {
                if c.call(cmd!["EXISTS", &key]).await? == Value::Int(1) {
                    return Ok::<f64, ferry_kv::KvError>(sent.elapsed().as_secs_f64() * 1000.0);
                }
                if sent.elapsed() > Duration::from_secs(30) {
                    return Ok(f64::INFINITY);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, SeqCst);
    let written = writer.await??;
    let mut out = Vec::new();
    for w in waits {
        out.push(w.await??);
    }
    let _ = stop.send(true);
    sync_task.await??;
    println!(
        "lag: {written} writes in {:.0} s ({:.0}/s), {} probes",
        started.elapsed().as_secs_f64(),
        written as f64 / started.elapsed().as_secs_f64(),
        out.len()
    );
    Ok(out)
}

/// Switches through the proxy `n` times (source → target, timed; back untimed): the window
/// pause → resume, the drain inside it, and the longest command a client saw, in ms.
async fn switches(
    source: &RedisUrl,
    target: &RedisUrl,
    n: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let certs =
        PathBuf::from(std::env::var("FERRY_BED_DIR").context("FERRY_BED_DIR")?).join("certs");
    let tls = ferry_kv::proxy::tls_acceptor(&certs.join("server.crt"), &certs.join("server.key"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let proxy = Proxy::new(source.clone(), None, Secret::new("bench-secret"), 100);
    let _server = proxy.serve(listener, Some(tls));
    let client_url = RedisUrl::parse(&format!(
        "rediss://:bench-secret@127.0.0.1:{port}/{}?ssl_cert_reqs=none",
        source.db
    ))?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (s, t) = (source.clone(), target.clone());
    let sync_task = tokio::spawn(async move {
        let options = sync::Options {
            client_name: "ferry-bench-switch".into(),
            ..sync::Options::default()
        };
        sync::run(&s, &t, &options, rx, |_| {}).await
    });
    let slowest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (slowest, done, url) = (slowest.clone(), done.clone(), client_url.clone());
        tokio::spawn(async move {
            let mut c = Conn::connect(&url).await?;
            let mut i = 0u64;
            while !done.load(SeqCst) {
                let t0 = Instant::now();
                c.call(cmd!["SET", format!("client:{}", i % 1000), i.to_string()])
                    .await?;
                slowest.fetch_max(t0.elapsed().as_micros() as u64, SeqCst);
                i += 1;
            }
            Ok::<u64, ferry_kv::KvError>(i)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut windows, mut drains, mut held) = (Vec::new(), Vec::new(), Vec::new());
    let (mut from, mut to) = (Conn::connect(source).await?, Conn::connect(target).await?);
    for k in 0..n {
        tokio::time::sleep(Duration::from_millis(300)).await;
        slowest.store(0, SeqCst);
        let t0 = Instant::now();
        proxy.pause(Duration::from_secs(2)).await?;
        let drained = sync::drain(
            &mut from,
            &mut to,
            &format!("bench:{k}"),
            false,
            Duration::from_secs(5),
        )
        .await?;
        proxy.retarget(target.clone()).await?;
        proxy.resume();
        windows.push(t0.elapsed().as_secs_f64() * 1000.0);
        drains.push(drained.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.push(slowest.load(SeqCst) as f64 / 1000.0);
        proxy.pause(Duration::from_secs(2)).await?;
        proxy.retarget(source.clone()).await?;
        proxy.resume();
    }
    done.store(true, SeqCst);
    let commands = client.await??;
    let _ = stop.send(true);
    sync_task.await??;
    println!("switches: the client sent {commands} commands, none failed");
    Ok((windows, drains, held))
}

/// Ferry's copy of the source's keys into an emptied target with one session and with four:
/// (what, seconds) per round, each checked to have copied every key.
async fn copy_rounds(
    source: &RedisUrl,
    target: &RedisUrl,
    t: &mut Conn,
    keys: i64,
    mb_real: f64,
) -> anyhow::Result<Vec<(String, f64)>> {
    let mut rows: Vec<(String, f64)> = Vec::new();
    for workers in [1usize, 4] {
        t.call(cmd!["FLUSHDB"]).await?;
        let started = Instant::now();
        let stats = copy::copy_db_parallel(source, target, None, &[], 500, workers, None).await?;
        let took = started.elapsed().as_secs_f64();
        let on_target = dbsize(t).await?;
        if on_target != keys {
            bail!(
                "copy with {workers} session(s): {on_target} keys on the target, {keys} on the source"
            );
        }
        println!(
            "Ferry copy, {workers} session(s): {took:.1} s ({:.0} MB/s of used_memory, {} keys with TTL)",
            mb_real / took,
            stats.with_ttl
        );
        rows.push((
            format!("Ferry copy (SCAN + DUMP/RESTORE), {workers} session(s)"),
            took,
        ));
    }
    Ok(rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mb: u64 = arg(&args, "--mb", "1024").parse().context("--mb")?;
    let db: u32 = arg(&args, "--db", "14").parse().context("--db")?;
    let lag_seconds: u64 = arg(&args, "--lag-seconds", "30")
        .parse()
        .context("--lag-seconds")?;
    let n: usize = arg(&args, "--switches", "20")
        .parse()
        .context("--switches")?;
    let out = PathBuf::from(arg(&args, "--out", "docs/benchmarks-redis.md"));
    let source = bed("FERRY_BED_REDIS_SOURCE_URL", db)?;
    let target = bed("FERRY_BED_REDIS_TARGET_URL", db)?;
    let (mut s, mut t) = (Conn::connect(&source).await?, Conn::connect(&target).await?);

    println!("generating ~{mb} MB of mixed keys on the source (db {db}) …");
    let (keys, grown, gen_time) = generate(&mut s, mb).await?;
    let mb_real = grown as f64 / 1e6;
    println!(
        "{keys} keys, {mb_real:.0} MB used_memory, in {:.0} s",
        gen_time.as_secs_f64()
    );

    let rows = copy_rounds(&source, &target, &mut t, keys, mb_real).await?;
    let rdb = rdb_dump(&source).await?;
    if let Some(d) = rdb {
        println!("redis-cli --rdb: {:.1} s", d.as_secs_f64());
    }
    t.call(cmd!["FLUSHDB"]).await?;
    s.call(cmd!["FLUSHDB"]).await?;

    println!("lag under 2,000 writes/s for {lag_seconds} s …");
    let mut lags = lag(&source, &target, 2000, lag_seconds).await?;
    println!("{n} switches through the proxy …");
    let (mut windows, mut drains, mut held) = switches(&source, &target, n).await?;
    s.call(cmd!["FLUSHDB"]).await?;
    t.call(cmd!["FLUSHDB"]).await?;

    let stat = |v: &mut Vec<f64>| {
        format!(
            "{:.0} | {:.0} | {:.0}",
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0)
        )
    };
    let mut md = String::new();
    md.push_str("# Redis benchmark (`make bench`)\n\n");
    md.push_str(&format!(
        "One run on this machine (2 cores), Redis {version} source and target on loopback with TLS and AUTH, database {db}, release build. Command: `ferry-bench-redis --mb {mb} --lag-seconds {lag_seconds} --switches {n}` (what `make bench` runs after its PostgreSQL part), {date}.\n\n",
        version = info_text(&mut s, "server", "redis_version")
            .await
            .unwrap_or_else(|_| "?".into()),
        date = std::process::Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    ));
    md.push_str(&format!(
        "Dataset: {keys} keys, {mb_real:.0} MB of `used_memory` (half 512-byte strings, hashes of 8 fields, lists of 16, sorted sets of 16; one key in ten with a TTL), generated in {:.0} s.\n\n",
        gen_time.as_secs_f64()
    ));
    md.push_str("| copy | seconds | MB/s |\n|---|---:|---:|\n");
    for (what, secs) in &rows {
        md.push_str(&format!("| {what} | {secs:.1} | {:.0} |\n", mb_real / secs));
    }
    match rdb {
        Some(d) => md.push_str(&format!(
            "| peer: `redis-cli --rdb` (the source's snapshot streamed to a file; nothing restored) | {:.1} | {:.0} |\n",
            d.as_secs_f64(),
            mb_real / d.as_secs_f64()
        )),
        None => md.push_str("| peer: `redis-cli --rdb` | failed (see the run's output) | |\n"),
    }
    md.push_str("\n| measure (ms) | p50 | p99 | max |\n|---|---:|---:|---:|\n");
    md.push_str(&format!(
        "| live-sync lag under 2,000 writes/s (probe written on the source → readable on the target; {} probes; goal p99 ≤ 1,000) | {} |\n",
        lags.len(),
        stat(&mut lags)
    ));
    md.push_str(&format!(
        "| Redis freeze: proxy pause → drain → retarget → resume ({n} switches; goal ≤ 1,000) | {} |\n",
        stat(&mut windows)
    ));
    md.push_str(&format!(
        "| of which the drain of the live sync | {} |\n",
        stat(&mut drains)
    ));
    md.push_str(&format!(
        "| longest command a client held through a switch saw | {} |\n",
        stat(&mut held)
    ));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &md)?;
    println!("{md}\nwritten to {}", out.display());
    Ok(())
}
