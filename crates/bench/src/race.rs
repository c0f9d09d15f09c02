//! The copy race on one dataset: Ferry, `pg_dump -Fd -j2 | pg_restore -j2`, `pgcopydb clone`.
//! Each gets two parallel jobs.

use std::time::{Duration, Instant};

use ferry_core::spec::CaptureMode;
use ferry_pg::PgUrl;
use ferry_replicator::engine::{PrepareTimings, Replicator};

use crate::cpu::{Cpu, Meter};
use crate::{Bed, config, drop_db, libpq, recreate, run, which};

/// Rows per copy chunk (Ferry) and the matching split size handed to pgcopydb.
pub const ROWS_PER_CHUNK: i64 = 250_000;
pub const PGCOPYDB_SPLIT: &str = "64MB";

pub struct FerryRun {
    pub total: Duration,
    pub timings: PrepareTimings,
    pub rows: u64,
    pub bytes: u64,
    /// Over `total`.
    pub cpu: Cpu,
}

pub struct DumpRun {
    pub dump: Duration,
    pub restore: Duration,
    /// Over both.
    pub cpu: Cpu,
}

impl DumpRun {
    pub fn total(&self) -> Duration {
        self.dump + self.restore
    }
}

pub struct PgcopydbRun {
    pub total: Duration,
    pub cpu: Cpu,
}

/// Each contender's runs, round by round.
pub struct Race {
    pub ferry: Vec<FerryRun>,
    pub dump: Vec<DumpRun>,
    /// pgcopydb's runs, or why it did not run.
    pub pgcopydb: Result<Vec<PgcopydbRun>, String>,
    /// How long settling the disk took before each run, in the order they ran.
    pub settled: Vec<Duration>,
}

impl Race {
    /// Ferry's faster run.
    pub fn ferry_best(&self) -> &FerryRun {
        fastest(&self.ferry, |r| r.total).expect("a race runs Ferry at least once")
    }

    /// pg_dump + pg_restore's faster run.
    pub fn dump_best(&self) -> &DumpRun {
        fastest(&self.dump, DumpRun::total).expect("a race runs pg_dump at least once")
    }

    /// pgcopydb's faster run, or why there is none.
    pub fn pgcopydb_best(&self) -> Result<&PgcopydbRun, String> {
        match &self.pgcopydb {
            Ok(runs) => fastest(runs, |r| r.total).ok_or_else(|| "no run".into()),
            Err(why) => Err(why.clone()),
        }
    }
}

/// The run of `runs` with the shortest `time`.
fn fastest<T>(runs: &[T], time: impl Fn(&T) -> Duration) -> Option<&T> {
    runs.iter().min_by_key(|r| time(r))
}

/// Ferry's schema + capture + copy + post-data from `source` into a fresh `target_db`.
pub async fn ferry(
    bed: &Bed,
    meter: &Meter,
    source: &PgUrl,
    target_db: &str,
    max_copy_bytes_per_second: Option<u64>,
) -> anyhow::Result<FerryRun> {
    let target = recreate(&bed.target_admin, target_db, None).await?;
    let mut cfg = config(
        source.clone(),
        target,
        bed.target_bin.clone(),
        CaptureMode::Trigger,
    );
    cfg.max_copy_bytes_per_second = max_copy_bytes_per_second;
    let mut rep = Replicator::connect(cfg).await?;
    let cpu = meter.read()?;
    let t = Instant::now();
    let timings = rep.prepare().await?;
    let total = t.elapsed();
    let cpu = meter.read()?.since(cpu);
    let status = rep.status().await?;
    rep.cleanup().await?;
    drop(rep);
    drop_db(&bed.target_admin, target_db).await?;
    Ok(FerryRun {
        total,
        timings,
        rows: status.rows_copied,
        bytes: status.bytes_copied,
        cpu,
    })
}

/// The contenders, in the order of a round.
#[derive(Clone, Copy)]
enum Contender<'a> {
    Ferry,
    Dump,
    /// pgcopydb, at this path.
    Pgcopydb(&'a std::path::Path),
}

impl Contender<'_> {
    /// Its target database's suffix.
    fn tag(self) -> &'static str {
        match self {
            Contender::Ferry => "ferry",
            Contender::Dump => "dump",
            Contender::Pgcopydb(_) => "pgcopydb",
        }
    }
}

/// Runs all three on `source` in [`ROUNDS`] rounds, the second in the reverse order (the first
/// run on servers just started, and on a dataset just generated, is slower: Ferry took 19.5 s
/// running first, 15.5 s running third, on the same 2 GiB); the report takes each one's
/// faster run. Target databases are named after `tag`. Each run starts from a settled disk
/// (see [`settle`]); `meter` reads the CPU each side spends in it.
pub async fn race(bed: &Bed, meter: &Meter, source: &PgUrl, tag: &str) -> anyhow::Result<Race> {
    use Contender::*;
    let mut race = Race {
        ferry: Vec::new(),
        dump: Vec::new(),
        pgcopydb: Ok(Vec::new()),
        settled: Vec::new(),
    };
    let pgcopydb_bin = which("pgcopydb");
    let mut order = vec![Ferry, Dump];
    match &pgcopydb_bin {
        Some(bin) => order.push(Pgcopydb(bin)),
        None => race.pgcopydb = Err("not installed (apt-get install pgcopydb)".into()),
    }
    for round in 0..ROUNDS {
        // Each round after the first runs in the reverse of the one before.
        if round > 0 {
            order.reverse();
        }
        for &contender in &order {
            if let (Pgcopydb(_), Err(_)) = (contender, &race.pgcopydb) {
                continue; // it failed in an earlier round: the report says how
            }
            race.settled.push(settle(bed).await?);
            let db = format!("bench_{tag}_{}", contender.tag());
            match contender {
                Ferry => race.ferry.push(ferry(bed, meter, source, &db, None).await?),
                Dump => race.dump.push(dump_restore(bed, meter, source, &db).await?),
                Pgcopydb(bin) => match pgcopydb(bed, meter, bin, source, &db).await {
                    Ok(run) => {
                        if let Ok(runs) = &mut race.pgcopydb {
                            runs.push(run);
                        }
                    }
                    Err(e) => race.pgcopydb = Err(format!("failed: {e:#}")),
                },
            }
        }
    }
    Ok(race)
}

/// How many times each contender runs on a dataset.
pub const ROUNDS: usize = 2;

/// A checkpoint on both servers, then the kernel's dirty pages written out (`sync`), so that no
/// contender inherits the writeback of the dataset just generated or of the one before it (the
/// bed runs with `fsync=off`). Returns how long it took, which the report prints: 1.1-1.3 s
/// before a dataset's first run, 0.1-0.3 s before the others at 2 GiB.
async fn settle(bed: &Bed) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for admin in [&bed.source_admin, &bed.target_admin] {
        admin.connect().await?.batch_execute("CHECKPOINT").await?;
    }
    run(&mut tokio::process::Command::new("sync"), "sync").await?;
    Ok(t.elapsed())
}

/// `pg_dump -Fd -j2` then `pg_restore -j2` (the target's tools: at least as new as the source).
async fn dump_restore(
    bed: &Bed,
    meter: &Meter,
    source: &PgUrl,
    target_db: &str,
) -> anyhow::Result<DumpRun> {
    let dir = std::env::temp_dir().join("ferry-bench-dump");
    let _ = std::fs::remove_dir_all(&dir);
    let target = recreate(&bed.target_admin, target_db, None).await?;
    let mut cmd = tokio::process::Command::new(bed.target_bin.join("pg_dump"));
    let u = libpq(&mut cmd, source);
    let cpu = meter.read()?;
    let dump = run(
        cmd.args(["-Fd", "-j", "2", "--no-owner", "--no-privileges", "-f"])
            .arg(&dir)
            .arg(&u),
        "pg_dump",
    )
    .await?;
    let mut cmd = tokio::process::Command::new(bed.target_bin.join("pg_restore"));
    let u = libpq(&mut cmd, &target);
    let restore = run(
        cmd.args(["-j", "2", "--no-owner", "--no-privileges", "-d", &u])
            .arg(&dir),
        "pg_restore",
    )
    .await;
    let cpu = meter.read()?.since(cpu);
    let _ = std::fs::remove_dir_all(&dir);
    drop_db(&bed.target_admin, target_db).await?;
    Ok(DumpRun {
        dump,
        restore: restore?,
        cpu,
    })
}

/// `pgcopydb clone` with two table jobs, two index jobs, and same-table concurrency for
/// tables above [`PGCOPYDB_SPLIT`].
async fn pgcopydb(
    bed: &Bed,
    meter: &Meter,
    bin: &std::path::Path,
    source: &PgUrl,
    target_db: &str,
) -> anyhow::Result<PgcopydbRun> {
    let target = recreate(&bed.target_admin, target_db, None).await?;
    let dir = std::env::temp_dir().join("ferry-bench-pgcopydb");
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = tokio::process::Command::new(bin);
    let path = format!(
        "{}:{}",
        bed.target_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Both URLs through pgcopydb's environment variables, never on its command line (which
    // any process listing shows).
    cmd.env("PATH", path)
        .env("PGCOPYDB_SOURCE_PGURI", source.expose_secret())
        .env("PGCOPYDB_TARGET_PGURI", target.expose_secret())
        .arg("clone")
        .args([
            "--table-jobs",
            "2",
            "--index-jobs",
            "2",
            "--split-tables-larger-than",
            PGCOPYDB_SPLIT,
            "--no-owner",
            "--no-acl",
            "--dir",
        ])
        .arg(&dir);
    let cpu = meter.read()?;
    let r = run(&mut cmd, "pgcopydb clone").await;
    let cpu = meter.read()?.since(cpu);
    let _ = std::fs::remove_dir_all(&dir);
    drop_db(&bed.target_admin, target_db).await?;
    Ok(PgcopydbRun { total: r?, cpu })
}
