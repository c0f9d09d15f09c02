//! Verify's Redis part (spec `redis`): every listed database compared by type
//! ([`ferry_kv::verify`]), disposable, queue and Ferry's own keys left out. Keys that differ
//! are read again on both sides after the live sync had time to apply what was in flight, up to
//! [`ROUNDS`] times; a key still different after that fails Verify, named with its database.

use std::time::Duration;

use ferry_core::{MigrationSpec, secret::Secret, spec::RedisSpec};
use ferry_kv::{Conn, RedisUrl, verify};
use serde::{Deserialize, Serialize};

use crate::{Deps, StepError, StepResult};

/// Rounds of rechecking.
const ROUNDS: u32 = 5;
/// Differences listed by the first comparison; more are compared again in full.
const LIMIT: usize = 1_000;

/// One database, verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// The logical database.
    pub db: u32,
    /// Source keys compared.
    pub compared: u64,
    /// Keys that differed at first and converged on a recheck (changes in flight).
    pub rechecked: u64,
}

fn url(param: &str, value: &Secret) -> StepResult<RedisUrl> {
    RedisUrl::parse(value).map_err(|e| StepError::BadParam {
        param: param.to_string(),
        reason: e.to_string(),
    })
}

/// The source and target Redis URLs the `redis` section names, read from SSM now.
pub(crate) async fn urls(deps: &Deps, r: &RedisSpec) -> StepResult<(RedisUrl, RedisUrl)> {
    let source = url(
        &r.source_url_param,
        &deps.params.get(&r.source_url_param).await?,
    )?;
    let target = url(
        &r.target_url_param,
        &deps.params.get(&r.target_url_param).await?,
    )?;
    Ok((source, target))
}

fn kv_err(e: ferry_kv::KvError) -> StepError {
    StepError::Input(format!("Redis verification could not run: {e}"))
}

/// Verifies every database of the spec's `redis` section; an empty list without one.
pub async fn run(deps: &Deps, spec: &MigrationSpec, settle: Duration) -> StepResult<Vec<Checked>> {
    let Some(r) = &spec.redis else {
        return Ok(Vec::new());
    };
    let (source, target) = urls(deps, r).await?;
    let skip = &r.not_synced();
    let mut out = Vec::new();
    for db in &r.databases {
        let mut s = Conn::connect(&source.with_db(*db)).await.map_err(kv_err)?;
        let mut t = Conn::connect(&target.with_db(*db)).await.map_err(kv_err)?;
        out.push(database(&mut s, &mut t, *db, skip, settle).await?);
    }
    Ok(out)
}

async fn database(
    s: &mut Conn,
    t: &mut Conn,
    db: u32,
    skip: &[String],
    settle: Duration,
) -> StepResult<Checked> {
    let mut report = verify::compare_db(s, t, None, skip, 500, LIMIT)
        .await
        .map_err(kv_err)?;
    if report.unlisted > 0 {
        // Too many to recheck one by one: the sync is behind; once more in full.
        tokio::time::sleep(settle).await;
        report = verify::compare_db(s, t, None, skip, 500, LIMIT)
            .await
            .map_err(kv_err)?;
        if report.unlisted > 0 {
            return Err(StepError::VerifyMismatch {
                tables: format!(
                    "redis db {db} (more than {LIMIT} keys differ: the live sync is far behind or stopped; see the redis fact)"
                ),
            });
        }
    }
    let mut open: Vec<Vec<u8>> = [
        report.missing,
        report.differing,
        report.ttl_differs,
        report.extra,
    ]
    .concat();
    let first = open.len() as u64;
    for _ in 0..ROUNDS {
        if open.is_empty() {
            break;
        }
        tokio::time::sleep(settle).await;
        let ours = verify::held(s, &open).await.map_err(kv_err)?;
        let theirs = verify::held(t, &open).await.map_err(kv_err)?;
        open = open
            .into_iter()
            .zip(ours.into_iter().zip(theirs))
            .filter(|(_, (a, b))| a != b)
            .map(|(k, _)| k)
            .collect();
    }
    if !open.is_empty() {
        let keys: Vec<String> = open.iter().take(20).map(|k| ferry_kv::shown(k)).collect();
        return Err(StepError::VerifyMismatch {
            tables: format!(
                "redis db {db} ({} key(s) still differ after {ROUNDS} rechecks: {}{})",
                open.len(),
                keys.join(", "),
                if open.len() > 20 { ", …" } else { "" }
            ),
        });
    }
    Ok(Checked {
        db,
        compared: report.compared,
        rechecked: first,
    })
}
