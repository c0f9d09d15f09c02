//! The synthetic write load: inserts, updates and deletes on Ferry's own table
//! (`ferry_rehearsal.load`, created for the rehearsal and dropped after it; the user's tables
//! are never written), through a session that logs in as the app does, so the write freeze
//! holds it as it would hold the app.

use std::time::{Duration, Instant};

use ferry_pg::PgUrl;
use rand::Rng;
use tokio::{sync::watch, task::JoinHandle};
use tokio_postgres::Client;

use crate::RehearseError;

/// Ferry's schema for the rehearsal's own table.
pub const SCHEMA: &str = "ferry_rehearsal";

/// Creates `ferry_rehearsal.load` (idempotent).
pub async fn create(source: &Client) -> Result<(), RehearseError> {
    source
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ferry_rehearsal;
             CREATE TABLE IF NOT EXISTS ferry_rehearsal.load (
                 id bigserial PRIMARY KEY,
                 at timestamptz NOT NULL DEFAULT now(),
                 n integer NOT NULL DEFAULT 0,
                 payload text NOT NULL)",
        )
        .await
        .map_err(|e| RehearseError::sql("create ferry_rehearsal.load on the source", &e))
}

/// Drops Ferry's rehearsal schema (idempotent).
pub async fn drop_schema(client: &Client, side: &str) -> Result<(), RehearseError> {
    client
        .batch_execute("DROP SCHEMA IF EXISTS ferry_rehearsal CASCADE")
        .await
        .map_err(|e| RehearseError::sql(&format!("drop ferry_rehearsal on the {side}"), &e))
}

/// A burst of `rows` inserts then `rows` updates in two statements: a known number of
/// changes for measuring the apply rate.
pub async fn burst(source: &Client, rows: i64) -> Result<u64, RehearseError> {
    let inserted = source
        .execute(
            "INSERT INTO ferry_rehearsal.load (payload)
             SELECT repeat(md5(g::text), 4) FROM generate_series(1, $1::bigint) g",
            &[&rows],
        )
        .await
        .map_err(|e| RehearseError::sql("write the burst", &e))?;
    let updated = source
        .execute(
            "UPDATE ferry_rehearsal.load SET n = n + 1
              WHERE id > (SELECT max(id) FROM ferry_rehearsal.load) - $1::bigint",
            &[&rows],
        )
        .await
        .map_err(|e| RehearseError::sql("update the burst", &e))?;
    Ok(inserted + updated)
}

/// What the load did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadStats {
    /// Writes asked for per second.
    pub requested_per_second: u32,
    /// Writes acknowledged per second, on average.
    pub achieved_per_second: f64,
    /// Writes acknowledged.
    pub written: u64,
    /// Writes refused or cut off (the freeze ends the app role's sessions; they reconnect).
    pub errors: u64,
    /// The last such error.
    pub last_error: Option<String>,
}

/// When each acknowledged write ended and how long it took (µs); at most this many kept.
type Samples = std::sync::Arc<std::sync::Mutex<Vec<(Instant, u32)>>>;
const MAX_SAMPLES: usize = 2_000_000;

/// A running load; [`Load::stop`] ends it.
#[derive(Debug)]
pub struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<LoadStats>,
    samples: Samples,
}

impl Load {
    /// Starts writing `per_second` writes per second as the app's role.
    pub fn start(source: PgUrl, per_second: u32) -> Self {
        let (stop, stopped) = watch::channel(false);
        let samples = Samples::default();
        let task = tokio::spawn(write(source, per_second, stopped, samples.clone()));
        Load {
            stop,
            task,
            samples,
        }
    }

    /// The latencies (ms) of the writes acknowledged between `from` and `to`.
    pub fn latencies_ms(&self, from: Instant, to: Instant) -> Vec<f64> {
        self.samples
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(at, _)| *at >= from && *at <= to)
                    .map(|(_, us)| f64::from(*us) / 1000.0)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops and reports.
    pub async fn stop(self) -> LoadStats {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn one_write(client: &Client, rng: &mut impl Rng) -> Result<(), tokio_postgres::Error> {
    let roll = rng.random_range(0..10);
    if roll < 6 {
        client
            .execute(
                "INSERT INTO ferry_rehearsal.load (payload) VALUES (md5(random()::text))",
                &[],
            )
            .await?;
    } else {
        let sql = if roll < 9 {
            "UPDATE ferry_rehearsal.load SET n = n + 1, at = now()
              WHERE id = (SELECT max(id) FROM ferry_rehearsal.load) - $1::bigint"
        } else {
            "DELETE FROM ferry_rehearsal.load
              WHERE id = (SELECT max(id) FROM ferry_rehearsal.load) - $1::bigint"
        };
        client
            .execute(sql, &[&rng.random_range(0..1_000i64)])
            .await?;
    }
    Ok(())
}

async fn write(
    source: PgUrl,
    per_second: u32,
    mut stopped: watch::Receiver<bool>,
    samples: Samples,
) -> LoadStats {
    let mut stats = LoadStats {
        requested_per_second: per_second,
        ..LoadStats::default()
    };
    let started = Instant::now();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0f64;
    while !*stopped.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        // At most a tenth of a second owed: no burst after a freeze.
        owed = (owed + f64::from(per_second) / 100.0).min(f64::from(per_second.max(10)) / 10.0);
        while owed >= 1.0 {
            owed -= 1.0;
            let Some(c) = client.as_ref().filter(|c| !c.is_closed()) else {
                match source.connect_as_app().await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        stats.errors += 1;
                        stats.last_error = Some(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                break;
            };
            let began = Instant::now();
            match one_write(c, &mut rng).await {
                Ok(()) => {
                    stats.written += 1;
                    let took = began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    if let Ok(mut s) = samples.lock()
                        && s.len() < MAX_SAMPLES
                    {
                        s.push((Instant::now(), took));
                    }
                }
                Err(e) => {
                    // Read-only during the freeze, or the session ended by it. A session
                    // opened during the freeze stays read-only: drop it, as a pool drops a
                    // broken connection, and connect again.
                    stats.errors += 1;
                    stats.last_error = Some(ferry_pg::describe(&e));
                    client = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    break;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stats.achieved_per_second = if secs > 0.0 {
        stats.written as f64 / secs
    } else {
        0.0
    };
    stats
}
