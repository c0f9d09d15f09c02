//! Redis (spec `redis`), run beside the database replication for the worker's lifetime, per
//! listed database, in the direction the cutover fact calls for: before the switch the live
//! sync Heroku → ElastiCache (disposable and queue keys left out) until a cutover's final
//! drain marker ends it; after the switch the live sync ElastiCache → Heroku (for a
//! rollback) and the hand-over of Heroku's remaining queue jobs to ElastiCache; after a
//! rollback the hand-over of ElastiCache's queue jobs back to Heroku. Progress goes to the
//! `redis` fact every few seconds and when it stops. A Redis failure is recorded there,
//! logged and retried; it never stops the database replication.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use ferry_core::{
    MigrationStore, ParamStore,
    state::{CutoverState, REDIS_FACT, RedisDirection, RedisSync, RedisSyncDb},
};
use ferry_kv::{Conn, RedisUrl, handover, sync};
use tokio::{sync::watch, task::JoinHandle};

/// How often the progress is written.
const WRITE_EVERY: Duration = Duration::from_secs(2);

/// The running sync.
pub struct Running {
    stop: watch::Sender<bool>,
    syncs: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
}

fn url(param: &str, value: &str) -> anyhow::Result<RedisUrl> {
    RedisUrl::parse(value).with_context(|| format!("{param} holds an unusable Redis URL"))
}

/// Where the app's Redis is, from the cutover fact (as the cutover step stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Heroku: before the cutover, or after one was undone.
    Heroku,
    /// ElastiCache, after the switch.
    Aws,
    /// Heroku again, after a rollback.
    Back,
}

async fn side(store: &dyn MigrationStore, id: &str) -> Option<Side> {
    let fact = store.fact(id, "cutover").await.ok()?;
    let Some(v) = fact else {
        return Some(Side::Heroku);
    };
    let state: CutoverState = serde_json::from_value(v.get("state")?.clone()).ok()?;
    Some(match state {
        CutoverState::NotStarted | CutoverState::Frozen | CutoverState::Undone => Side::Heroku,
        CutoverState::Switched | CutoverState::Done => Side::Aws,
        CutoverState::RolledBack => Side::Back,
    })
}

/// How long a drained sync waits for the switch before it takes the drain for abandoned and
/// syncs again in the same direction (a full pass heals the gap).
const DRAINED_WAIT: Duration = Duration::from_secs(120);
/// How often the side is read.
const SIDE_POLL: Duration = Duration::from_millis(250);

/// One database's state, shared with the writer.
type Shared = Arc<Mutex<Vec<RedisSyncDb>>>;

fn update(state: &Shared, i: usize, f: impl FnOnce(&mut RedisSyncDb)) {
    if let Some(d) = state.lock().ok().as_mut().and_then(|s| s.get_mut(i)) {
        f(d);
    }
}

/// What one database's loop needs.
#[derive(Clone)]
struct Db {
    i: usize,
    source: RedisUrl,
    target: RedisUrl,
    skip: Vec<String>,
    queues: Vec<String>,
    name: String,
    state: Shared,
}

/// Starts the sync when the spec has a `redis` section.
pub async fn start(
    store: Arc<dyn MigrationStore>,
    params: &dyn ParamStore,
    migration_id: &str,
) -> anyhow::Result<Option<Running>> {
    let spec = store
        .migration(migration_id)
        .await
        .with_context(|| format!("read migration {migration_id}"))?
        .spec;
    let Some(r) = spec.redis else {
        return Ok(None);
    };
    let source = url(&r.source_url_param, &params.get(&r.source_url_param).await?)?;
    let target = url(&r.target_url_param, &params.get(&r.target_url_param).await?)?;
    let (stop, stopped) = watch::channel(false);
    let state: Shared = Arc::new(Mutex::new(
        r.databases
            .iter()
            .map(|db| RedisSyncDb {
                db: *db,
                ..RedisSyncDb::default()
            })
            .collect::<Vec<_>>(),
    ));
    // The side the app is on, read from the cutover fact.
    let first = side(store.as_ref(), migration_id)
        .await
        .unwrap_or(Side::Heroku);
    let (side_tx, side_rx) = watch::channel(first);
    let mut syncs = Vec::new();
    {
        let (store, id, mut stopped) = (store.clone(), migration_id.to_string(), stopped.clone());
        syncs.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SIDE_POLL) => {}
                    _ = stopped.changed() => return,
                }
                if let Some(s) = side(store.as_ref(), &id).await {
                    side_tx.send_if_modified(|now| std::mem::replace(now, s) != s);
                }
            }
        }));
    }
    for (i, db) in r.databases.iter().enumerate() {
        let d = Db {
            i,
            source: source.with_db(*db),
            target: target.with_db(*db),
            skip: r.not_synced(),
            queues: r.queue_patterns.clone(),
            name: format!("ferry-{migration_id}-db{db}"),
            state: state.clone(),
        };
        syncs.push(tokio::spawn(database(d, side_rx.clone(), stopped.clone())));
    }
    let id = migration_id.to_string();
    let mut stopped_w = stopped;
    let writer = tokio::spawn(async move {
        let mut written = None;
        loop {
            let done = tokio::select! {
                _ = tokio::time::sleep(WRITE_EVERY) => false,
                _ = stopped_w.changed() => true,
            };
            let snapshot = state.lock().map(|s| s.clone()).unwrap_or_default();
            written = write(store.as_ref(), &id, snapshot, written).await;
            if done {
                return;
            }
        }
    });
    Ok(Some(Running {
        stop,
        syncs,
        writer,
    }))
}

/// A stop signal for one phase: set when the worker stops or the side changes.
fn phase_stop(
    mut side: watch::Receiver<Side>,
    mut stopped: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = side.changed() => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
        let _ = tx.send(true);
    });
    (rx, task)
}

/// One database for the worker's lifetime: the sync in the direction the side calls for, the
/// queue hand-over once the app has left a side.
async fn database(d: Db, mut side: watch::Receiver<Side>, stopped: watch::Receiver<bool>) {
    loop {
        if *stopped.borrow() {
            return;
        }
        let now = *side.borrow_and_update();
        let (stop, guard) = phase_stop(side.clone(), stopped.clone());
        let result = match now {
            Side::Heroku => {
                let (from, to) = (d.source.clone(), d.target.clone());
                update(&d.state, d.i, |s| s.direction = RedisDirection::Forward);
                live(&d, &from, &to, stop.clone()).await
            }
            Side::Aws => {
                update(&d.state, d.i, |s| {
                    s.direction = RedisDirection::Reverse;
                    s.full_passes = 0;
                    s.copied = 0;
                    s.applied = 0;
                    s.deleted = 0;
                });
                // The hand-over runs for the whole phase; the reverse sync again after an
                // abandoned drain.
                let handing = {
                    let (d, stop) = (d.clone(), stop.clone());
                    tokio::spawn(async move { hand_over(&d, &d.source, &d.target, stop).await })
                };
                let mut reverse = Ok(());
                while !*stop.borrow() && reverse.is_ok() {
                    reverse = live(&d, &d.target, &d.source, stop.clone()).await;
                }
                if reverse.is_err() {
                    handing.abort();
                }
                let handed = handing.await.unwrap_or(Ok(()));
                reverse.and(handed)
            }
            Side::Back => {
                update(&d.state, d.i, |s| {
                    s.direction = RedisDirection::Back;
                    s.jobs_handed_over = 0;
                });
                hand_over(&d, &d.target, &d.source, stop.clone()).await
            }
        };
        guard.abort();
        if let Err(e) = result {
            tracing::error!(db = d.source.db, "Redis: {e}; again in 5 s");
            update(&d.state, d.i, |s| s.error = Some(e.to_string()));
            let mut stopped = stopped.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        } else {
            update(&d.state, d.i, |s| s.error = None);
        }
    }
}

/// The live sync `from` → `to` until `stop`; after a final drain marker, waits for the side to
/// change (or, past [`DRAINED_WAIT`], takes the drain for abandoned).
async fn live(
    d: &Db,
    from: &RedisUrl,
    to: &RedisUrl,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ferry_kv::KvError> {
    let options = sync::Options {
        skip: d.skip.clone(),
        client_name: d.name.clone(),
        ..sync::Options::default()
    };
    let (state, i) = (d.state.clone(), d.i);
    let (_, ended) = sync::run(from, to, &options, stop.clone(), move |p| {
        update(&state, i, |d| {
            d.full_passes = p.full_passes;
            d.copied = p.copied;
            d.applied = p.applied;
            d.deleted = p.deleted;
            d.pending = p.pending as u64;
            d.lag_ms = p.lag_ms;
            d.error = None;
        })
    })
    .await?;
    if ended == sync::Ended::Drained {
        let before = d.state.lock().map(|s| s[i].direction).unwrap_or_default();
        update(&d.state, i, |s| s.direction = RedisDirection::Drained);
        tracing::info!(db = from.db, "Redis sync drained; waiting for the switch");
        let _ = tokio::time::timeout(DRAINED_WAIT, stop.wait_for(|s| *s)).await;
        update(&d.state, i, |s| {
            if s.direction == RedisDirection::Drained {
                s.direction = before;
            }
        });
    }
    Ok(())
}

/// Hands the queues' jobs over `from` → `to` every second until `stop`.
async fn hand_over(
    d: &Db,
    from: &RedisUrl,
    to: &RedisUrl,
    stop: watch::Receiver<bool>,
) -> Result<(), ferry_kv::KvError> {
    if d.queues.is_empty() {
        return Ok(());
    }
    let (mut f, mut t) = (Conn::connect(from).await?, Conn::connect(to).await?);
    let (state, i) = (d.state.clone(), d.i);
    let moved = handover::keep_handing_over(
        &mut f,
        &mut t,
        &d.queues,
        100,
        Duration::from_secs(1),
        stop,
        move |moved, waiting| {
            update(&state, i, |s| {
                s.jobs_handed_over = moved.jobs;
                s.jobs_waiting = waiting;
            })
        },
    )
    .await?;
    tracing::info!(
        db = from.db,
        jobs = moved.jobs,
        "Redis queue hand-over stopped"
    );
    Ok(())
}

/// Writes the progress over what this worker last wrote (`written`; read from the store only
/// when that is unknown: at start, or after another writer got in between); returns what is
/// now stored, if known.
async fn write(
    store: &dyn MigrationStore,
    id: &str,
    databases: Vec<RedisSyncDb>,
    mut written: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let value = serde_json::to_value(RedisSync {
        databases,
        at: chrono::Utc::now(),
    })
    .unwrap_or_default();
    for _ in 0..3 {
        let current = match written.take() {
            Some(v) => Some(v),
            None => store.fact(id, REDIS_FACT).await.ok().flatten(),
        };
        if let Ok(true) = store
            .swap_fact(id, REDIS_FACT, current.as_ref(), &value)
            .await
        {
            return Some(value);
        }
    }
    tracing::warn!("the redis fact could not be written");
    None
}

impl Running {
    /// Stops every sync (each applies what it has pending first), then writes the progress
    /// a last time.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for s in self.syncs {
            let _ = s.await;
        }
        let _ = self.writer.await;
    }
}
