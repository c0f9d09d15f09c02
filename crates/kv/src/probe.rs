//! What preflight learns about a Redis server by asking it, never assuming: version, memory,
//! eviction policy and keys per database (INFO, which Heroku allows where it refuses CONFIG),
//! whether the commands the migration relies on are allowed (DUMP on the source; RESTORE on
//! the target; CONFIG, for the record), whether keyspace notifications arrive, and the shape
//! of Sidekiq's keys. [`blockers`] turns two probes into what must be fixed, each naming how.

use std::{collections::BTreeMap, time::Duration};

use crate::{Conn, KvResult, RedisUrl, cmd, copy::scan_step, resp::Value};

/// One server, as probed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `redis_version` from INFO.
    pub version: String,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `maxmemory_policy` from INFO (empty when the server does not say).
    pub maxmemory_policy: String,
    /// Keys per logical database (`db0` → keys).
    pub keys: BTreeMap<String, u64>,
    /// Whether CONFIG is allowed (Heroku refuses it).
    pub config_allowed: bool,
    /// Whether DUMP is allowed.
    pub dump_allowed: bool,
    /// Whether RESTORE is allowed (probed only where Ferry may write: the target).
    pub restore_allowed: Option<bool>,
    /// Whether a keyspace notification arrived for a probe key (probed on the source).
    pub notifications: Option<bool>,
    /// Sidekiq's keys in the URL's database, if any.
    pub sidekiq: Sidekiq,
    /// Keys the spec's queue patterns name (set by the caller, which knows the patterns).
    pub queue_keys: u64,
}

/// Sidekiq's key shapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sidekiq {
    /// `queue:<name>` lists.
    pub queues: u64,
    /// Whether the `schedule`, `retry` and `dead` sorted sets exist.
    pub schedule: bool,
    /// `retry` exists.
    pub retry: bool,
    /// `dead` exists.
    pub dead: bool,
}

impl Sidekiq {
    /// Whether any queue key exists (then nothing may be evicted on the target).
    pub fn present(&self) -> bool {
        self.queues > 0 || self.schedule || self.retry || self.dead
    }
}

fn info_fields(v: &Value) -> BTreeMap<String, String> {
    let Value::Bulk(Some(text)) = v else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn allowed(answer: &Value) -> bool {
    !matches!(answer, Value::Error(m) if m.contains("unknown command") || m.starts_with("NOPERM"))
}

/// Probes `url`'s server. `write_probes` allows RESTORE to be tried with a short-lived key
/// (the target); `notify_probe` sets a key with a 2-second TTL to see a notification arrive
/// (the source: the only write preflight makes there, and it expires on its own).
pub async fn probe(url: &RedisUrl, write_probes: bool, notify_probe: bool) -> KvResult<Probe> {
    let mut c = Conn::connect(url).await?;
    let answers = c
        .pipeline(vec![
            cmd!["INFO", "server"],
            cmd!["INFO", "memory"],
            cmd!["INFO", "keyspace"],
            cmd!["CONFIG", "GET", "maxmemory-policy"],
            cmd!["DUMP", "ferry:probe:absent"],
            cmd!["EXISTS", "queues", "schedule", "retry", "dead"],
        ])
        .await?;
    let server = info_fields(&answers[0]);
    let memory = info_fields(&answers[1]);
    let keyspace = info_fields(&answers[2]);
    let mut p = Probe {
        version: server.get("redis_version").cloned().unwrap_or_default(),
        used_memory: memory
            .get("used_memory")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
        maxmemory_policy: memory.get("maxmemory_policy").cloned().unwrap_or_default(),
        keys: keyspace
            .iter()
            .filter_map(|(db, v)| {
                let keys = v.split(',').find_map(|f| f.strip_prefix("keys="))?;
                Some((db.clone(), keys.parse().ok()?))
            })
            .collect(),
        config_allowed: allowed(&answers[3]),
        dump_allowed: allowed(&answers[4]),
        ..Probe::default()
    };
    p.sidekiq = sidekiq(&mut c).await?;
    if write_probes {
        p.restore_allowed = Some(restore_allowed(&mut c).await?);
    }
    if notify_probe {
        p.notifications = Some(notifications_arrive(url, &mut c).await?);
    }
    Ok(p)
}

async fn sidekiq(c: &mut Conn) -> KvResult<Sidekiq> {
    let types = c
        .pipeline(vec![
            cmd!["TYPE", "schedule"],
            cmd!["TYPE", "retry"],
            cmd!["TYPE", "dead"],
        ])
        .await?;
    let zset = |v: &Value| *v == Value::Simple("zset".into());
    let mut s = Sidekiq {
        schedule: zset(&types[0]),
        retry: zset(&types[1]),
        dead: zset(&types[2]),
        ..Sidekiq::default()
    };
    let mut cursor = b"0".to_vec();
    // Bounded: a million keys scanned at most, enough to see the queues of any app.
    for _ in 0..1000 {
        let (next, keys) = scan_step(c, &cursor, Some(b"queue:*"), 1000).await?;
        s.queues += keys.len() as u64;
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    Ok(s)
}

async fn restore_allowed(c: &mut Conn) -> KvResult<bool> {
    let key = format!("ferry:probe:{}", std::process::id());
    let answers = c
        .pipeline(vec![
            cmd!["SET", key, "probe", "PX", "60000"],
            cmd!["DUMP", key],
        ])
        .await?;
    let Value::Bulk(Some(payload)) = &answers[1] else {
        return Ok(false);
    };
    let restored = c
        .pipeline(vec![
            cmd!["RESTORE", format!("{key}:r"), "60000", payload, "REPLACE"],
            cmd!["DEL", key, format!("{key}:r")],
        ])
        .await?;
    Ok(!matches!(restored[0], Value::Error(_)))
}

async fn notifications_arrive(url: &RedisUrl, c: &mut Conn) -> KvResult<bool> {
    let key = format!("ferry:probe:notify:{}", std::process::id());
    let mut sub = Conn::connect(url).await?;
    let answer = sub
        .call(cmd!["SUBSCRIBE", format!("__keyspace@{}__:{key}", url.db)])
        .await;
    if answer.is_err() {
        return Ok(false);
    }
    c.call(cmd!["SET", key, "probe", "PX", "2000"]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        if let Some(Value::Array(Some(parts))) = sub.receive(Duration::from_millis(200)).await?
            && parts.first() == Some(&Value::Bulk(Some(b"message".to_vec())))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn major_minor(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// What stops the move, each with its fix.
pub fn blockers(source: &Probe, target: &Probe) -> Vec<String> {
    let mut out = Vec::new();
    if !source.dump_allowed {
        out.push("the source refuses DUMP: Ferry copies keys with DUMP/RESTORE; ask Heroku support, or move the keys by type with another tool".into());
    }
    if target.restore_allowed == Some(false) {
        out.push("the target refuses RESTORE: use an ElastiCache user whose ACL allows RESTORE, DEL and the read commands".into());
    }
    if major_minor(&target.version) < major_minor(&source.version) {
        out.push(format!(
            "the target runs Redis {} and the source {}: RESTORE needs the source's version or newer; create ElastiCache with engine version {} or later",
            target.version, source.version, source.version
        ));
    }
    if source.notifications == Some(false) {
        out.push("no keyspace notification arrived from the source: run `heroku redis:keyspace-notifications REDIS_URL -c KEA` before the migration (Ferry does not change Heroku settings itself; set it back with `-c ''` once the migration is over)".into());
    }
    if target.notifications == Some(false) {
        out.push("no keyspace notification arrived from the target: set notify-keyspace-events to KEA in the ElastiCache parameter group (the reverse sync that keeps Heroku Redis level for a rollback needs them)".into());
    }
    if (source.sidekiq.present() || source.queue_keys > 0)
        && target.maxmemory_policy != "noeviction"
    {
        out.push(format!(
            "the source holds job queues and the target's maxmemory-policy is {:?}: set the ElastiCache parameter group's maxmemory-policy to noeviction, or jobs can be evicted",
            target.maxmemory_policy
        ));
    }
    out
}
