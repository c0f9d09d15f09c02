//! The Redis live sync (spec `redis`), run beside the database replication for the worker's
//! lifetime: one [`ferry_kv::sync`] per listed database, disposable patterns left out, its
//! progress written to the `redis` fact every few seconds and when it stops. A Redis failure
//! is recorded in the fact and logged; it never stops the database replication.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use ferry_core::{
    MigrationStore, ParamStore,
    state::{REDIS_FACT, RedisSync, RedisSyncDb},
};
use ferry_kv::{RedisUrl, sync};
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
    let state = Arc::new(Mutex::new(
        r.databases
            .iter()
            .map(|db| RedisSyncDb {
                db: *db,
                ..RedisSyncDb::default()
            })
            .collect::<Vec<_>>(),
    ));
    let mut syncs = Vec::new();
    for (i, db) in r.databases.iter().enumerate() {
        let (source, target) = (source.with_db(*db), target.with_db(*db));
        let options = sync::Options {
            skip: r.not_synced(),
            client_name: format!("ferry-{migration_id}-db{db}"),
            ..sync::Options::default()
        };
        let (state, stopped) = (state.clone(), stopped.clone());
        syncs.push(tokio::spawn(async move {
            let seen = state.clone();
            let result = sync::run(&source, &target, &options, stopped, move |p| {
                if let Some(d) = seen.lock().ok().as_mut().and_then(|s| s.get_mut(i)) {
                    d.full_passes = p.full_passes;
                    d.copied = p.copied;
                    d.applied = p.applied;
                    d.deleted = p.deleted;
                    d.pending = p.pending as u64;
                    d.lag_ms = p.lag_ms;
                }
            })
            .await;
            if let Err(e) = result {
                tracing::error!(db = source.db, "Redis live sync stopped: {e}");
                if let Some(d) = state.lock().ok().as_mut().and_then(|s| s.get_mut(i)) {
                    d.error = Some(e.to_string());
                }
            }
        }));
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
