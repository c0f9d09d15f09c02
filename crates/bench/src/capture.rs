//! What capture costs the source's writers (pgbench tps: none, an empty trigger, a trigger that
//! only inserts a constant, Ferry's trigger capture), and replication lag under pgbench in
//! trigger and logical mode.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ferry_core::spec::CaptureMode;
use ferry_pg::PgUrl;
use ferry_replicator::engine::Replicator;

use ferry_rehearse::report::quantiles;

use crate::{config, drop_db, libpq, recreate, run};

/// The tables pgbench's tpcb-like script writes.
const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_tellers",
    "pgbench_branches",
    "pgbench_history",
];

/// Lag samples (seconds) summarised. No sample means no measurement: NaN, which never counts
/// as a goal met.
pub struct Lag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Lag {
    fn of(mut samples: Vec<f64>) -> Self {
        let (p50, p99) = quantiles(&mut samples);
        Self {
            p50: p50.unwrap_or(f64::NAN),
            p99: p99.unwrap_or(f64::NAN),
            max: samples.last().copied().unwrap_or(f64::NAN),
            samples: samples.len(),
        }
    }
}

pub struct LoadResult {
    pub tps: f64,
    /// What Ferry reports: the age of the oldest change received and not yet applied.
    pub reported: Lag,
    /// What the bench sees: the age on the target of the heartbeat row written on the source.
    pub end_to_end: Lag,
}

/// pgbench tps under each kind of trigger, on one database: medians of interleaved rounds.
pub struct Floor {
    pub none: f64,
    pub empty: f64,
    pub insert_only: f64,
    pub ferry: f64,
    /// Each round's tps: none, empty, insert-only, Ferry.
    pub rounds: Vec<[f64; 4]>,
}

/// A server to run pgbench on: its admin URL, the URL pgbench writes as, its binaries.
pub struct Server {
    pub admin: PgUrl,
    /// The role writes run as (`None`: the admin).
    pub app: Option<PgUrl>,
    pub bin: PathBuf,
    pub version: String,
}

/// A replicator applying the pgbench database's changes, and the target database it writes.
pub struct Worker<'a> {
    pub rep: &'a mut Replicator,
    pub target: &'a PgUrl,
}

/// How often the heartbeat row is stamped on the source, and its age read on the target.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(50);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How often Ferry's own lag figure is read. Reading it takes three queries between two
/// batches, as the worker's heartbeat does (every 5 s there): read every 200 ms, it slowed
/// the apply it measures.
const REPORTED_EVERY: Duration = Duration::from_secs(1);

/// pgbench for `seconds` against `url`; meanwhile, if given, a worker applies changes. Its lag
/// is sampled end to end every 200 ms (see [`heartbeat`]), and as Ferry reports it every second.
pub async fn pgbench(
    server: &Server,
    url: &PgUrl,
    seconds: u64,
    mut worker: Option<Worker<'_>>,
) -> anyhow::Result<LoadResult> {
    settle(server, url, worker.as_mut().map(|w| &mut *w.rep)).await?;
    let bin = &server.bin;
    let mut cmd = tokio::process::Command::new(bin.join("pgbench"));
    let u = libpq(&mut cmd, url);
    cmd.args(["-n", "-c", "4", "-j", "2", "-M", "prepared", "-T"])
        .arg(seconds.to_string())
        .arg(&u)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().context("start pgbench")?;
    let mut reported = Vec::new();
    let mut end_to_end = Vec::new();
    let out = if let Some(w) = worker.as_mut() {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let beat = tokio::spawn(heartbeat(url.clone(), w.target.clone(), stopped));
        // The load ends between two batches, never in one: a batch cut short would have
        // left the stream to hand out again what it took.
        let wait = tokio::spawn(child.wait_with_output());
        let mut last_sample = Instant::now();
        while !wait.is_finished() {
            let applied = w.rep.apply_once().await?;
            if last_sample.elapsed() >= REPORTED_EVERY {
                last_sample = Instant::now();
                reported.push(w.rep.status().await?.lag_seconds.unwrap_or(0.0));
            }
            // As the worker's loop does: no sleep after a read that waited already.
            if applied.changes == 0 && !w.rep.waits_for_changes() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let out = wait.await.context("pgbench task")?;
        let _ = stop.send(());
        end_to_end = beat.await.context("heartbeat task")??;
        out?
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
    if let Some(w) = worker {
        w.rep.drain(None).await?;
    }
    Ok(LoadResult {
        tps,
        reported: Lag::of(reported),
        end_to_end: Lag::of(end_to_end),
    })
}

/// Lag measured from outside Ferry: stamps the source's heartbeat row with the clock every
/// [`HEARTBEAT_EVERY`] and reads its age on the target every [`SAMPLE_EVERY`] until `stop`
/// (both servers share this machine's clock). A sample is the true lag of the newest applied
/// stamp plus the time since that stamp was written, so it overstates the lag by up to one
/// stamping interval, and it sees changes still on their way to the worker, which Ferry's own
/// figure cannot.
async fn heartbeat(
    source: PgUrl,
    target: PgUrl,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<Vec<f64>> {
    let (s, t) = (source.connect().await?, target.connect().await?);
    let stamp = s
        .prepare("UPDATE bench_heartbeat SET at = clock_timestamp() RETURNING extract(epoch FROM at)::float8")
        .await?;
    let age = t
        .prepare(
            "SELECT extract(epoch FROM at)::float8, extract(epoch FROM clock_timestamp() - at)::float8
               FROM bench_heartbeat",
        )
        .await?;
    let mut stamps = tokio::time::interval(HEARTBEAT_EVERY);
    let mut reads = tokio::time::interval(SAMPLE_EVERY);
    // The row's value from before the load is no measure: sample once the first stamp arrived.
    let first: f64 = s.query_one(&stamp, &[]).await?.get(0);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(samples),
            _ = stamps.tick() => {
                s.execute(&stamp, &[]).await?;
            }
            _ = reads.tick() => {
                let row = t.query_one(&age, &[]).await?;
                if row.get::<_, f64>(0) >= first {
                    samples.push(row.get(1));
                }
            }
        }
    }
}

/// Lets earlier work (dead rows, index builds, dirty buffers) settle so each run starts alike:
/// a vacuum of pgbench's tables, then a checkpoint (the server's admin), so that no run pays for
/// writing out the buffers the run before it dirtied. A worker, if given, then catches up with
/// the settling's own WAL before the load starts, as a worker running all along would have:
/// what is measured is the lag under load, not a catch-up.
async fn settle(server: &Server, url: &PgUrl, rep: Option<&mut Replicator>) -> anyhow::Result<()> {
    let c = url.connect().await?;
    c.batch_execute("VACUUM ANALYZE pgbench_accounts, pgbench_tellers, pgbench_branches")
        .await?;
    server
        .admin
        .connect()
        .await?
        .batch_execute("CHECKPOINT")
        .await?;
    if let Some(rep) = rep {
        rep.drain(None).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// A fresh pgbench database (scale 20) on `server`, owned by the app role when there is one;
/// returns the URL writes run as.
pub async fn pgbench_db(server: &Server, name: &str) -> anyhow::Result<PgUrl> {
    let owner = server
        .app
        .as_ref()
        .and_then(|a| a.user().map(str::to_string));
    let admin_db = recreate(&server.admin, name, owner.as_deref()).await?;
    let url = match &server.app {
        Some(app) => app.with_dbname(name),
        None => admin_db,
    };
    let mut cmd = tokio::process::Command::new(server.bin.join("pgbench"));
    let u = libpq(&mut cmd, &url);
    run(cmd.args(["-i", "-q", "-s", "20", &u]), "pgbench -i").await?;
    // pgbench_history has no key; replication needs one (preflight would block without it).
    let c = url.connect().await?;
    c.batch_execute("ALTER TABLE pgbench_history ADD COLUMN hid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
        .await?;
    c.batch_execute(
        "CREATE TABLE bench_heartbeat (id int PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO bench_heartbeat VALUES (1, clock_timestamp())",
    )
    .await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    Ok(url)
}

/// Puts a row trigger running `body` (plpgsql) on every table pgbench writes, or takes them
/// off (`None`).
async fn bench_triggers(url: &PgUrl, body: Option<&str>) -> anyhow::Result<()> {
    let c = url.connect().await?;
    let mut sql = String::from(
        "DROP FUNCTION IF EXISTS bench_trigger() CASCADE; DROP TABLE IF EXISTS bench_log;",
    );
    if let Some(body) = body {
        sql.push_str(&format!(
            "CREATE TABLE bench_log (n int);
             CREATE FUNCTION bench_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN {body} RETURN NULL; END $f$;"
        ));
        for t in TABLES {
            sql.push_str(&format!(
                "CREATE TRIGGER bench_trigger AFTER INSERT OR UPDATE OR DELETE ON {t}
                   FOR EACH ROW EXECUTE FUNCTION bench_trigger();"
            ));
        }
    }
    c.batch_execute(&sql).await?;
    Ok(())
}

/// How many times each of the floor's variants runs, interleaved (the figure is the median):
/// on this host one pgbench run moves by up to a third from the next. As many rounds as
/// variants, each round's order turned by one, puts every variant once in every place.
const FLOOR_ROUNDS: usize = Variant::ALL.len();

/// What the floor runs pgbench under.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    None,
    Empty,
    InsertOnly,
    Ferry,
}

impl Variant {
    /// In [`Floor::rounds`]' order, which is also their discriminants' (`as usize`).
    const ALL: [Variant; 4] = [
        Variant::None,
        Variant::Empty,
        Variant::InsertOnly,
        Variant::Ferry,
    ];

    /// Round `round`'s order: [`Variant::ALL`] turned left by `round`.
    fn order(round: usize) -> [Variant; 4] {
        let mut order = Self::ALL;
        order.rotate_left(round % Self::ALL.len());
        order
    }

    /// Puts this variant's triggers in place (and only them) on `url`'s pgbench tables.
    async fn install(self, url: &PgUrl) -> anyhow::Result<()> {
        ferry_triggers(url, self == Variant::Ferry).await?;
        let body = match self {
            Variant::None | Variant::Ferry => None,
            Variant::Empty => Some(""),
            Variant::InsertOnly => Some("INSERT INTO bench_log VALUES (1);"),
        };
        bench_triggers(url, body).await
    }
}

/// pgbench tps with no trigger, an empty one, one that inserts a constant row, and Ferry's
/// trigger capture (installed, no worker running: on this machine the worker and the target
/// would share the source's two cores), [`FLOOR_ROUNDS`] interleaved rounds (see
/// [`Variant::order`]), medians; then the
/// same capture with the worker applying. Ferry's triggers stay installed and are disabled
/// while the other variants run; the log is emptied after each of its runs (this measures the
/// writers' cost, not the copy, so the target is not compared).
pub async fn floor(
    server: &Server,
    target_admin: &PgUrl,
    target_bin: &Path,
    seconds: u64,
) -> anyhow::Result<(Floor, LoadResult)> {
    let url = pgbench_db(server, "bench_pgb").await?;
    let target = recreate(target_admin, "bench_pgb_t", None).await?;
    let mut rep = Replicator::connect(config(
        url.clone(),
        target.clone(),
        target_bin.to_path_buf(),
        CaptureMode::Trigger,
    ))
    .await?;
    rep.prepare().await?;
    let mut rounds = Vec::new();
    for round in 0..FLOOR_ROUNDS {
        let mut tps = [f64::NAN; 4];
        for variant in Variant::order(round) {
            variant.install(&url).await?;
            tps[variant as usize] = pgbench(server, &url, seconds, None).await?.tps;
            if variant == Variant::Ferry {
                url.connect()
                    .await?
                    .batch_execute("TRUNCATE ferry.changes")
                    .await?;
            }
        }
        rounds.push(tps);
    }
    // The worker's run below: Ferry's capture alone.
    Variant::Ferry.install(&url).await?;
    let worker = Worker {
        rep: &mut rep,
        target: &target,
    };
    let applying = pgbench(server, &url, seconds, Some(worker)).await?;
    rep.cleanup().await?;
    drop(rep);
    drop_db(&server.admin, "bench_pgb").await?;
    drop_db(target_admin, "bench_pgb_t").await?;
    let median = |i: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        quantiles(&mut v).0.unwrap_or(f64::NAN)
    };
    Ok((
        Floor {
            none: median(0),
            empty: median(1),
            insert_only: median(2),
            ferry: median(3),
            rounds,
        },
        applying,
    ))
}

/// Enables or disables the user triggers of pgbench's tables (Ferry's capture, between the
/// floor's runs; foreign-key triggers are not user triggers and stay).
async fn ferry_triggers(url: &PgUrl, on: bool) -> anyhow::Result<()> {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    let sql: String = TABLES
        .iter()
        .map(|t| format!("ALTER TABLE {t} {verb} TRIGGER USER;"))
        .collect();
    url.connect().await?.batch_execute(&sql).await?;
    Ok(())
}

/// pgbench tps without capture, then with `capture` on and the worker applying (its lag
/// sampled), on a fresh database of `server` replicated into `target_admin`.
pub async fn lag(
    server: &Server,
    target_admin: &PgUrl,
    target_bin: &Path,
    capture: CaptureMode,
    tag: &str,
    seconds: u64,
) -> anyhow::Result<(f64, LoadResult)> {
    let url = pgbench_db(server, &format!("bench_lag_{tag}")).await?;
    let base = pgbench(server, &url, seconds, None).await?.tps;
    // Logical capture needs REPLICATION: the worker connects as the admin.
    let worker_source = match capture {
        CaptureMode::Logical => server.admin.with_dbname(&format!("bench_lag_{tag}")),
        _ => url.clone(),
    };
    let target = recreate(target_admin, &format!("bench_lag_{tag}_t"), None).await?;
    let mut rep = Replicator::connect(config(
        worker_source,
        target.clone(),
        target_bin.to_path_buf(),
        capture,
    ))
    .await?;
    rep.prepare().await?;
    let worker = Worker {
        rep: &mut rep,
        target: &target,
    };
    let with = pgbench(server, &url, seconds, Some(worker)).await?;
    rep.cleanup().await?;
    drop(rep);
    drop_db(&server.admin, &format!("bench_lag_{tag}")).await?;
    drop_db(target_admin, &format!("bench_lag_{tag}_t")).await?;
    Ok((base, with))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_runs_once_in_every_place() {
        let rounds: Vec<[Variant; 4]> = (0..FLOOR_ROUNDS).map(Variant::order).collect();
        assert_eq!(rounds[0], Variant::ALL);
        for (i, v) in Variant::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i, "{v:?} indexes its own column of a round");
        }
        for place in 0..4 {
            for v in Variant::ALL {
                let times = rounds.iter().filter(|r| r[place] == v).count();
                assert_eq!(times, 1, "{v:?} in place {place}");
            }
        }
    }
}
