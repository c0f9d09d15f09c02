//! Redis at the switch (spec `redis`, proxy mode): the endpoint's Redis proxy pauses and
//! retargets with PgBouncer, and inside that pause the live sync is drained with a `final`
//! marker on the side the app leaves ([`ferry_kv::sync::drain`]): once the marker is on the
//! other side, every change made before the pause is there, and the sync has stopped, so
//! nothing of the old side is written over the new one. The sessions are opened before the
//! freeze (no SSM read inside it). After a rollback the queue jobs the AWS side enqueued on
//! ElastiCache are handed back to Heroku ([`ferry_kv::handover`]).

use std::time::{Duration, Instant};

use ferry_core::{MigrationSpec, endpoint::Backend};
use ferry_kv::{Conn, handover, sync};

use crate::{Deps, StepError, StepResult};

/// The longest a drain may hold the app's Redis commands: the live sync applies a change
/// within ~50 ms, so a drain that takes seconds means the sync is not running.
pub const MAX_DRAIN: Duration = Duration::from_secs(5);

/// One session per listed database on each side: `(db, the side left, the side joined)`.
pub struct Sides {
    dbs: Vec<(u32, Conn, Conn)>,
    queues: Vec<String>,
}

impl std::fmt::Debug for Sides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sides")
            .field("databases", &self.dbs.len())
            .finish()
    }
}

fn kv(what: &str, e: ferry_kv::KvError) -> StepError {
    StepError::Input(format!("Redis {what}: {e}"))
}

/// Opens the sessions for a switch away from `leaving`, when the spec has a `redis` section
/// and the cutover goes through the endpoint.
pub async fn open(
    deps: &Deps,
    spec: &MigrationSpec,
    leaving: Backend,
) -> StepResult<Option<Sides>> {
    let Some(r) = &spec.redis else {
        return Ok(None);
    };
    if !spec.proxied() {
        return Ok(None);
    }
    let (source, target) = crate::verify_redis::urls(deps, r).await?;
    let mut dbs = Vec::new();
    for db in &r.databases {
        let s = Conn::connect(&source.with_db(*db))
            .await
            .map_err(|e| kv("source", e))?;
        let t = Conn::connect(&target.with_db(*db))
            .await
            .map_err(|e| kv("target", e))?;
        dbs.push(match leaving {
            Backend::Source => (*db, s, t),
            Backend::Target => (*db, t, s),
        });
    }
    Ok(Some(Sides {
        dbs,
        queues: r.queue_patterns.clone(),
    }))
}

impl Sides {
    /// Writes a final marker per database on the side left and waits for each on the other
    /// (bounded by `bound` in all, at most [`MAX_DRAIN`]: the app's Redis commands are held
    /// meanwhile); how long it took. A database not drained in time fails
    /// with [`StepError::DrainTimeout`] naming it.
    pub async fn drain(&mut self, tag: &str, bound: Duration) -> StepResult<Duration> {
        let started = Instant::now();
        let bound = bound.min(MAX_DRAIN);
        for (db, from, to) in &mut self.dbs {
            let left = bound.saturating_sub(started.elapsed());
            sync::drain(from, to, &format!("{tag}:db{db}"), true, left)
                .await
                .map_err(|e| {
                    tracing::error!(db = *db, "Redis drain: {e}");
                    StepError::DrainTimeout {
                        position: format!("the Redis live sync's marker of db {db}"),
                        seconds: u32::try_from(bound.as_secs()).unwrap_or(u32::MAX),
                    }
                })?;
        }
        Ok(started.elapsed())
    }

    /// Hands the queue jobs of the side left over to the side joined (after a rollback: what
    /// the AWS side enqueued on ElastiCache goes back to Heroku); jobs moved.
    pub async fn hand_over(&mut self) -> StepResult<u64> {
        let mut jobs = 0;
        for (_, from, to) in &mut self.dbs {
            jobs += handover::hand_over(from, to, &self.queues, 100)
                .await
                .map_err(|e| kv("queue hand-over", e))?
                .jobs;
        }
        Ok(jobs)
    }
}
