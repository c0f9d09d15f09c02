//! Live sync: after the copy, every change on the source reaches the target, from keyspace
//! notifications (`notify-keyspace-events` with `K` and `A`, which Heroku turns on with
//! `heroku redis:keyspace-notifications`). A notification only names a key; the key is then
//! read again from the source (DUMP) and written to the target (RESTORE REPLACE), or deleted
//! there when the source no longer has it. So the order and loss of individual events do not
//! matter while the subscription holds: the last read of a key wins.
//!
//! Pub/sub is fire-and-forget: a subscriber that is disconnected misses events. Every
//! (re)subscription is therefore followed by a full pass — the copy, then the target's keys
//! that the source no longer has are deleted — so a gap heals. FLUSHDB/FLUSHALL produce no
//! key events: only the next full pass sees them.
//!
//! **Drain markers.** A cutover (or a rollback) drains the sync by writing a marker key
//! `ferry:drain:<tag>` on the side being left, once its writers are held, and waiting until
//! the marker appears on the other side. The sync writes markers after every key noted before
//! them (last in a flush; after a full pass, which covers everything before it), so a marker
//! seen on the other side means every earlier change is there. A marker whose value starts
//! with `final` also ends the sync ([`Ended::Drained`]): from then on nothing more of the old
//! side is written over the new one.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    Conn, KvResult, RedisUrl, cmd,
    copy::{self, dump_keys, restore_keys},
    resp::Value,
};

use crate::glob::is_marker;

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Told to stop.
    Stopped,
    /// It wrote a `final` drain marker and stopped there.
    Drained,
}

/// A subscription silent this long is pinged.
const QUIET: Duration = Duration::from_secs(15);
/// A subscription that held this long resets the count of reconnections in a row.
const STEADY: Duration = Duration::from_secs(60);

/// How the sync runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only keys matching this glob (SCAN MATCH and the notification pattern); all if `None`.
    pub pattern: Option<String>,
    /// Disposable keys (globs): not copied, not synced, not deleted on the target.
    pub skip: Vec<String>,
    /// Keys per round trip.
    pub batch: usize,
    /// Parallel sessions of a full pass's copy.
    pub workers: usize,
    /// How often the changed keys are written to the target.
    pub flush_every: Duration,
    /// Subscriber reconnections in a row, each after a full pass, before the sync gives up.
    pub max_reconnects: u32,
    /// The subscriber's client name (CLIENT SETNAME), so an operator can tell it in CLIENT
    /// LIST.
    pub client_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pattern: None,
            skip: Vec::new(),
            batch: 500,
            workers: 4,
            flush_every: Duration::from_millis(50),
            max_reconnects: 20,
            client_name: "ferry-sync".into(),
        }
    }
}

/// Where the sync is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Full passes done (the first is the copy; each later one healed a notification gap).
    pub full_passes: u64,
    /// Keys the first pass copied.
    pub copied: u64,
    /// Keys rewritten from notifications.
    pub applied: u64,
    /// Keys deleted on the target (from notifications or full passes).
    pub deleted: u64,
    /// Changed keys not yet written to the target.
    pub pending: usize,
    /// Age of the oldest change written in the last flush, in milliseconds.
    pub lag_ms: u64,
}

/// Deletes the target's keys (matching `pattern`) that the source no longer has.
pub async fn delete_extras(
    source: &mut Conn,
    target: &mut Conn,
    pattern: Option<&[u8]>,
    skip: &[String],
    batch: usize,
) -> KvResult<u64> {
    let mut deleted = 0;
    let mut cursor = b"0".to_vec();
    loop {
        let (next, mut keys) = copy::scan_step(target, &cursor, pattern, batch).await?;
        // Disposable keys on the target are the AWS side's own cache: left alone.
        keys.retain(|k| !crate::glob::left_out(skip, k));
        if !keys.is_empty() {
            let exists = source
                .pipeline(keys.iter().map(|k| cmd!["EXISTS", k]).collect())
                .await?;
            let gone: Vec<Vec<Vec<u8>>> = keys
                .into_iter()
                .zip(exists)
                .filter(|(_, e)| *e == Value::Int(0))
                .map(|(k, _)| cmd!["DEL", k])
                .collect();
            deleted += gone.len() as u64;
            if !gone.is_empty() {
                target.pipeline(gone).await?;
            }
        }
        if next == b"0" {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// The key a keyspace notification names: `pmessage <pattern> __keyspace@<db>__:<key> <event>`.
fn notified_key(v: Value) -> Option<Vec<u8>> {
    let Value::Array(Some(parts)) = v else {
        return None;
    };
    match parts.as_slice() {
        [Value::Bulk(Some(kind)), _, Value::Bulk(Some(channel)), _] if kind == b"pmessage" => {
            let at = channel.windows(3).position(|w| w == b"__:")?;
            Some(channel[at + 3..].to_vec())
        }
        _ => None,
    }
}

/// Subscribes to the keyspace notifications of `url`'s database for `pattern`.
async fn subscribe(url: &RedisUrl, pattern: &str, name: &str) -> KvResult<Conn> {
    let mut sub = Conn::connect(url).await?;
    sub.call(cmd!["CLIENT", "SETNAME", name]).await?;
    let channel = format!("__keyspace@{}__:{pattern}", url.db);
    let answer = sub.call(cmd!["PSUBSCRIBE", channel]).await?;
    match answer {
        Value::Array(Some(ref parts))
            if parts.first() == Some(&Value::Bulk(Some(b"psubscribe".to_vec()))) =>
        {
            Ok(sub)
        }
        other => Err(sub.protocol("PSUBSCRIBE", &other.shape())),
    }
}

/// One full pass: every matching key copied, keys the source no longer has deleted from the
/// target; returns the drain markers its scan met.
async fn full_pass(
    source: &RedisUrl,
    target: &RedisUrl,
    options: &Options,
    (src, tgt): (&mut Conn, &mut Conn),
    progress: &mut Progress,
) -> KvResult<Vec<Vec<u8>>> {
    let matching = options.pattern.as_deref().map(str::as_bytes);
    let mut markers_found = Vec::new();
    let copied = copy::copy_db_parallel(
        source,
        target,
        matching,
        &options.skip,
        options.batch,
        options.workers,
        Some(&mut markers_found),
    )
    .await?;
    progress.deleted += delete_extras(src, tgt, matching, &options.skip, options.batch).await?;
    if progress.full_passes == 0 {
        progress.copied = copied.keys;
    }
    progress.full_passes += 1;
    Ok(markers_found)
}

/// Runs until `stop` turns true: subscribes, makes a full pass, then applies notified keys
/// every `flush_every`; after a lost subscription, subscribes again and makes another full
/// pass. `report` is called after each flush. Returns the last progress and why it ended.
pub async fn run(
    source: &RedisUrl,
    target: &RedisUrl,
    options: &Options,
    mut stop: watch::Receiver<bool>,
    mut report: impl FnMut(&Progress),
) -> KvResult<(Progress, Ended)> {
    let pattern = options.pattern.clone().unwrap_or_else(|| "*".into());
    let mut progress = Progress::default();
    let mut reconnects = 0;
    let (mut src, mut tgt) = (Conn::connect(source).await?, Conn::connect(target).await?);
    loop {
        let mut sub = subscribe(source, &pattern, &options.client_name).await?;
        // Changes from here on are notified; the full pass covers everything before.
        let markers_found =
            full_pass(source, target, options, (&mut src, &mut tgt), &mut progress).await?;
        report(&progress);
        // Markers written before this pass (its scan met them): everything before them is on
        // the target now.
        if write_markers(&mut src, &mut tgt, markers_found).await? {
            return Ok((progress, Ended::Drained));
        }
        let subscribed_at = Instant::now();
        let mut dirty: HashMap<Vec<u8>, Instant> = HashMap::new();
        let mut markers: Vec<Vec<u8>> = Vec::new();
        let mut tick = tokio::time::interval(options.flush_every);
        let mut awaiting_pong = false;
        let gap = loop {
            tokio::select! {
                message = sub.receive(QUIET) => match message {
                    Ok(Some(v)) => {
                        awaiting_pong = false;
                        match notified_key(v) {
                            Some(k) if is_marker(&k) && !markers.contains(&k) => {
                                markers.push(k);
                                // A drain waits on it (with the app's commands held): flush
                                // now, not at the next tick.
                                tick.reset_immediately();
                            }
                            Some(k) if is_marker(&k) => {}
                            Some(k) if !crate::glob::left_out(&options.skip, &k) => {
                                dirty.entry(k).or_insert_with(Instant::now);
                            }
                            _ => {}
                        }
                    }
                    // A quiet subscription is asked for a pong, so a dead connection (no FIN
                    // after a network failure) is found within two quiet periods.
                    Ok(None) if awaiting_pong => {
                        break sub.protocol("PING", "no pong on the subscription");
                    }
                    Ok(None) => {
                        if let Err(e) = sub.send(cmd!["PING"]).await {
                            break e;
                        }
                        awaiting_pong = true;
                    }
                    Err(e) => break e,
                },
                _ = tick.tick() => {
                    flush(&mut src, &mut tgt, &mut dirty, options.batch, &mut progress).await?;
                    report(&progress);
                    // Markers last: every key noted before them is written.
                    if write_markers(&mut src, &mut tgt, std::mem::take(&mut markers)).await? {
                        return Ok((progress, Ended::Drained));
                    }
                }
                _ = stop.changed() => {
                    if *stop.borrow() {
                        flush(&mut src, &mut tgt, &mut dirty, options.batch, &mut progress).await?;
                        report(&progress);
                        return Ok((progress, Ended::Stopped));
                    }
                }
            }
        };
        if subscribed_at.elapsed() > STEADY {
            reconnects = 0;
        }
        reconnects += 1;
        if reconnects > options.max_reconnects {
            return Err(gap);
        }
        tracing::warn!(error = %gap, "keyspace notifications lost; subscribing again, then a full pass");
        // The changed keys are applied by the full pass that follows.
        dirty.clear();
    }
}

/// Copies drain markers to the target (after everything noted before them); whether one was
/// `final`. A marker the target already holds with the same value was delivered before (or
/// is the other direction's: a rollback's reverse sync finds the cutover's marker on both
/// sides) and counts for nothing.
async fn write_markers(src: &mut Conn, tgt: &mut Conn, markers: Vec<Vec<u8>>) -> KvResult<bool> {
    if markers.is_empty() {
        return Ok(false);
    }
    let get = |ks: &[Vec<u8>]| ks.iter().map(|k| cmd!["GET", k]).collect::<Vec<_>>();
    let values = src.pipeline(get(&markers)).await?;
    let there = tgt.pipeline(get(&markers)).await?;
    let mut last = false;
    let mut writes = Vec::new();
    for ((k, value), delivered) in markers.iter().zip(values).zip(there) {
        if let Value::Bulk(Some(v)) = value
            && delivered != Value::Bulk(Some(v.clone()))
        {
            last |= v.starts_with(b"final");
            writes.push(cmd!["SET", k, v, "EX", "600"]);
        }
    }
    if !writes.is_empty() {
        tgt.pipeline(writes).await?;
    }
    Ok(last)
}

/// Writes a drain marker `ferry:drain:<tag>` on `from` and waits until it is on `to` (every
/// change the sync noted before it is then there too); how long that took. `final` markers
/// end the sync.
pub async fn drain(
    from: &mut Conn,
    to: &mut Conn,
    tag: &str,
    last: bool,
    bound: Duration,
) -> KvResult<Duration> {
    let started = Instant::now();
    let key = format!("{}{tag}", crate::glob::DRAIN_PREFIX);
    let value = format!("{}:{}", if last { "final" } else { "mark" }, tag);
    from.call(cmd!["SET", &key, &value, "EX", "600"]).await?;
    loop {
        if to.call(cmd!["GET", &key]).await? == Value::Bulk(Some(value.clone().into_bytes())) {
            let took = started.elapsed();
            // Delivered: gone from both sides, so no later sync takes it for its own.
            to.call(cmd!["DEL", &key]).await?;
            from.call(cmd!["DEL", &key]).await?;
            return Ok(took);
        }
        if started.elapsed() > bound {
            return Err(crate::KvError::Io {
                server: to.server().to_string(),
                reason: format!(
                    "the Redis live sync did not drain within {} ms (is the worker running? see its redis progress)",
                    bound.as_millis()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn flush(
    src: &mut Conn,
    tgt: &mut Conn,
    dirty: &mut HashMap<Vec<u8>, Instant>,
    batch: usize,
    progress: &mut Progress,
) -> KvResult<()> {
    let mut oldest = None::<Instant>;
    while !dirty.is_empty() {
        let keys: Vec<Vec<u8>> = dirty.keys().take(batch).cloned().collect();
        for k in &keys {
            if let Some(t) = dirty.remove(k) {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        let written = restore_keys(tgt, dump_keys(src, keys).await?).await?;
        progress.applied += written.keys;
        progress.deleted += written.vanished;
    }
    progress.pending = dirty.len();
    progress.lag_ms = oldest.map_or(0, |t| {
        u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
    });
    Ok(())
}
