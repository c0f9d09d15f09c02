//! The queue hand-over: jobs left in one server's queues move to the other's, each exactly
//! once, while workers may still pop them on either side and while the mover itself may be
//! killed and started again (or run twice).
//!
//! Replacing keys (the copy and the live sync) is right for sessions and caches and wrong for
//! queues: a `RESTORE … REPLACE` of a list drops what the other side's enqueuers pushed, and a
//! job copied while a worker pops it runs twice. So the keys matching the spec's queue
//! patterns are left out of the sync, and after the switch the jobs still on the side the app
//! left are *moved*, in batches, with a protocol that needs nothing but MULTI/WATCH on each
//! server (no script, no clock):
//!
//! 1. **Fill** (giving side): when the key's moving area `ferry:handover:moving:<key>` is
//!    empty, up to `batch` jobs are taken into it atomically (`WATCH` the area, then one
//!    `MULTI` of `RPOPLPUSH` for a list, or `ZADD` + `ZREM` of the lowest-scored members for a
//!    sorted set under a `WATCH` of the key). A batch is fixed from then until it is cleared:
//!    a worker can no longer pop those jobs, nothing else is added to it.
//! 2. **Put** (receiving side): under `WATCH ferry:handover:taken:<key>:<n>`, where `n` is the
//!    giving side's batch counter + 1, and only if that marker is absent: one `MULTI` of
//!    `RPUSH` (oldest job last, so it is popped first) or `ZADD`, plus the marker (kept 30
//!    days).
//! 3. **Clear** (giving side): under `WATCH` of the counter, and only if it is still `n - 1`:
//!    one `MULTI` deleting the moving area and setting the counter to `n` (kept 30 days, so
//!    it outlives every marker it numbered).
//!
//! A kill between any two steps leaves the batch in the moving area, and the next run finds
//! the marker (put already done: only clear) or not (put, then clear). Two movers at once
//! race on the same WATCHed keys and one of each step wins; the loser starts over from the
//! counter. The order of jobs within a batch is kept; Sidekiq, Resque and Celery promise no
//! order across queues anyway.

use std::time::Duration;

use crate::{Conn, KvError, KvResult, cmd, copy::keys_matching, glob, resp::Value, shown};

/// How long the counters and markers are kept.
const KEEP_SECONDS: &str = "2592000";
/// Attempts of one step that lose a WATCH race before the hand-over gives up.
const MAX_RACES: u32 = 1000;

/// What a hand-over moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Queue keys visited.
    pub keys: u64,
    /// Jobs (list elements or sorted-set members) put on the receiving side.
    pub jobs: u64,
    /// Batches put.
    pub batches: u64,
    /// Batches found already put (a run killed between put and clear, or another mover).
    pub resumed: u64,
}

impl Moved {
    fn add(&mut self, o: Moved) {
        self.keys += o.keys;
        self.jobs += o.jobs;
        self.batches += o.batches;
        self.resumed += o.resumed;
    }
}

/// The kind of queue a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A list workers pop from (Sidekiq's `queue:<name>`, Resque's, Celery's).
    List,
    /// A sorted set of jobs by time (Sidekiq's `schedule`, `retry`, `dead`).
    Zset,
}

fn named(prefix: &str, key: &[u8]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

/// Prefix of the moving areas.
const MOVING: &str = "ferry:handover:moving:";

fn moving(key: &[u8]) -> Vec<u8> {
    named(MOVING, key)
}
fn given(key: &[u8]) -> Vec<u8> {
    named("ferry:handover:given:", key)
}
fn taken(key: &[u8], n: u64) -> Vec<u8> {
    let mut k = named("ferry:handover:taken:", key);
    k.extend_from_slice(format!(":{n}").as_bytes());
    k
}

/// Every key of `from`'s database matching `patterns`, and every key whose moving area a
/// killed run left behind (its queue may be empty now). A pattern without glob characters
/// (Sidekiq's `schedule`, `retry`, `dead`) is looked up, not scanned; each glob is scanned
/// once, with its moving areas. Ferry's own keys are never queues.
pub async fn queue_keys(from: &mut Conn, patterns: &[String]) -> KvResult<Vec<Vec<u8>>> {
    let mut keys = std::collections::BTreeSet::new();
    let (literal, globs): (Vec<&String>, Vec<&String>) = patterns
        .iter()
        .partition(|p| glob::is_literal(p.as_bytes()));
    if !literal.is_empty() {
        let exists = from
            .pipeline(
                literal
                    .iter()
                    .map(|p| cmd!["EXISTS", p.as_bytes(), moving(p.as_bytes())])
                    .collect(),
            )
            .await?;
        for (p, n) in literal.iter().zip(exists) {
            if matches!(n, Value::Int(n) if n > 0) {
                keys.insert(p.as_bytes().to_vec());
            }
        }
    }
    for p in globs {
        keys.extend(
            keys_matching(from, p.as_bytes(), 500)
                .await?
                .into_iter()
                .filter(|k| !glob::left_out(&[], k)),
        );
        let areas = keys_matching(from, &moving(p.as_bytes()), 500).await?;
        keys.extend(areas.into_iter().map(|m| m[MOVING.len()..].to_vec()));
    }
    Ok(keys.into_iter().collect())
}

/// Moves every job of the keys matching `patterns` from `from` to `to`, `batch` jobs per
/// step, until those keys are empty on `from`. A key of another type than list or sorted set
/// is refused before anything of it moves.
pub async fn hand_over(
    from: &mut Conn,
    to: &mut Conn,
    patterns: &[String],
    batch: usize,
) -> KvResult<Moved> {
    let keys = queue_keys(from, patterns).await?;
    hand_over_keys(from, to, &keys, batch).await
}

async fn hand_over_keys(
    from: &mut Conn,
    to: &mut Conn,
    keys: &[Vec<u8>],
    batch: usize,
) -> KvResult<Moved> {
    let mut total = Moved::default();
    for key in keys {
        total.add(hand_over_key(from, to, key, batch.max(1)).await?);
    }
    Ok(total)
}

/// The queue keys of `from` as preflight sees them: how many, and (up to 10) those that are
/// neither a list nor a sorted set, each as "`key` is a <type>".
pub async fn check_queues(from: &mut Conn, patterns: &[String]) -> KvResult<(u64, Vec<String>)> {
    let keys = queue_keys(from, patterns).await?;
    let mut wrong = Vec::new();
    for key in &keys {
        if wrong.len() >= 10 {
            break;
        }
        match from.call(cmd!["TYPE", key]).await? {
            Value::Simple(t) if matches!(t.as_str(), "list" | "zset" | "none") => {}
            Value::Simple(t) => wrong.push(format!("`{}` is a {t}", shown(key))),
            other => return Err(from.protocol("TYPE", &other.shape())),
        }
    }
    Ok((keys.len() as u64, wrong))
}

/// Jobs still on `from` (queue keys and moving areas): what a hand-over has left to move.
pub async fn waiting(from: &mut Conn, patterns: &[String]) -> KvResult<u64> {
    let keys = queue_keys(from, patterns).await?;
    waiting_in(from, &keys).await
}

async fn waiting_in(from: &mut Conn, keys: &[Vec<u8>]) -> KvResult<u64> {
    let mut n = 0;
    for key in keys {
        for k in [key.clone(), moving(key)] {
            n += match kind_of(from, &k).await? {
                None => 0,
                Some(Kind::List) => int(from, cmd!["LLEN", k]).await?,
                Some(Kind::Zset) => int(from, cmd!["ZCARD", k]).await?,
            };
        }
    }
    Ok(n)
}

async fn int(conn: &mut Conn, args: Vec<Vec<u8>>) -> KvResult<u64> {
    match conn.call(args).await? {
        Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
        Value::Bulk(None) => Ok(0),
        Value::Bulk(Some(b)) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| conn.protocol("GET", "not a number")),
        other => Err(conn.protocol("LLEN/ZCARD/GET", &other.shape())),
    }
}

async fn kind_of(conn: &mut Conn, key: &[u8]) -> KvResult<Option<Kind>> {
    match conn.call(cmd!["TYPE", key]).await? {
        Value::Simple(t) if t == "none" => Ok(None),
        Value::Simple(t) if t == "list" => Ok(Some(Kind::List)),
        Value::Simple(t) if t == "zset" => Ok(Some(Kind::Zset)),
        Value::Simple(t) => Err(KvError::Refused {
            server: conn.server().to_string(),
            command: "queue hand-over".into(),
            message: format!(
                "key {} matches redis.queue_patterns but is a {t}, not a list or sorted set; narrow the patterns to the queues",
                shown(key)
            ),
        }),
        other => Err(conn.protocol("TYPE", &other.shape())),
    }
}

/// Moves one key's jobs, batch by batch.
pub async fn hand_over_key(
    from: &mut Conn,
    to: &mut Conn,
    key: &[u8],
    batch: usize,
) -> KvResult<Moved> {
    let mut moved = Moved {
        keys: 1,
        ..Moved::default()
    };
    let kind = match kind_of(from, key).await? {
        Some(k) => k,
        None => match kind_of(from, &moving(key)).await? {
            Some(k) => k,
            None => return Ok(moved),
        },
    };
    let mut races = 0;
    loop {
        if races > MAX_RACES {
            return Err(KvError::Refused {
                server: from.server().to_string(),
                command: "queue hand-over".into(),
                message: format!(
                    "lost {MAX_RACES} WATCH races in a row on {}; is another mover running?",
                    shown(key)
                ),
            });
        }
        let n = int(from, cmd!["GET", given(key)]).await? + 1;
        let jobs = read_moving(from, key, kind).await?;
        if jobs.is_empty() {
            match fill(from, key, kind, batch).await? {
                Step::Done => {
                    // A crash between the fill and the put: the batch waits in the moving area.
                    fail::fail_point!("handover::filled", |_| Err(stopped("handover::filled")));
                }
                Step::Raced => races += 1,
                Step::Empty => return Ok(moved),
            }
            continue;
        }
        match put(to, key, kind, n, &jobs).await? {
            Step::Done => {
                moved.batches += 1;
                moved.jobs += jobs.len() as u64;
            }
            Step::Empty => moved.resumed += 1,
            Step::Raced => {
                races += 1;
                continue;
            }
        }
        // A crash between the put and the clear: the next run finds the marker and only clears.
        fail::fail_point!("handover::put", |_| Err(stopped("handover::put")));
        if clear(from, key, n).await? == Step::Raced {
            races += 1;
        } else {
            races = 0;
        }
    }
}

/// The error a named crash point returns (tests only: `failpoints` feature): the mover stops
/// there, as a killed one would, leaving whatever it did on the servers.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn stopped(point: &str) -> KvError {
    KvError::Io {
        server: "failpoint".into(),
        reason: format!("stopped at the crash point {point}"),
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It did its work.
    Done,
    /// Nothing to do (fill: the queue is empty; put: the batch was already put).
    Empty,
    /// A WATCHed key changed: another mover or a worker got in; start over.
    Raced,
}

/// The batch in the moving area: list elements in order (newest first), or sorted-set
/// members with their scores as `member, score` pairs.
async fn read_moving(from: &mut Conn, key: &[u8], kind: Kind) -> KvResult<Vec<Vec<u8>>> {
    let args = match kind {
        Kind::List => cmd!["LRANGE", moving(key), "0", "-1"],
        Kind::Zset => cmd!["ZRANGE", moving(key), "0", "-1", "WITHSCORES"],
    };
    match from.call(args).await? {
        Value::Array(Some(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::Bulk(Some(b)) => Ok(b),
                other => Err(from.protocol("LRANGE/ZRANGE", &other.shape())),
            })
            .collect(),
        Value::Array(None) => Ok(Vec::new()),
        other => Err(from.protocol("LRANGE/ZRANGE", &other.shape())),
    }
}

/// Runs `body` as one MULTI/EXEC on `conn` (after the caller's WATCH): Done, or Raced when a
/// WATCHed key changed.
async fn transact(conn: &mut Conn, body: Vec<Vec<Vec<u8>>>) -> KvResult<Step> {
    let mut tx = Vec::with_capacity(body.len() + 2);
    tx.push(cmd!["MULTI"]);
    tx.extend(body);
    tx.push(cmd!["EXEC"]);
    let answers = conn.pipeline(tx).await?;
    Ok(if exec_ran(conn, &answers)? {
        Step::Done
    } else {
        Step::Raced
    })
}

/// Whether an EXEC answer says the transaction ran (a nil array: a WATCHed key changed).
fn exec_ran(from: &Conn, answers: &[Value]) -> KvResult<bool> {
    for a in answers {
        if let Value::Error(message) = a {
            return Err(KvError::Refused {
                server: from.server().to_string(),
                command: "MULTI/EXEC".into(),
                message: message.clone(),
            });
        }
    }
    match answers.last() {
        Some(Value::Array(None)) => Ok(false),
        Some(Value::Array(Some(results))) => {
            for r in results {
                if let Value::Error(message) = r {
                    return Err(KvError::Refused {
                        server: from.server().to_string(),
                        command: "EXEC".into(),
                        message: message.clone(),
                    });
                }
            }
            Ok(true)
        }
        _ => Err(from.protocol("EXEC", "no EXEC answer")),
    }
}

/// Step 1: takes up to `batch` jobs of `key` into its (empty) moving area.
async fn fill(from: &mut Conn, key: &[u8], kind: Kind, batch: usize) -> KvResult<Step> {
    let area = moving(key);
    // A list's RPOPLPUSHes are atomic in the MULTI, so only the area is watched (a worker
    // popping the queue meanwhile must not make the fill lose); a sorted set's members are
    // read first, so the key is watched too.
    match kind {
        Kind::List => from.call(cmd!["WATCH", &area]).await?,
        Kind::Zset => from.call(cmd!["WATCH", &area, key]).await?,
    };
    let busy = int(from, cmd!["EXISTS", &area]).await? > 0;
    if busy {
        from.call(cmd!["UNWATCH"]).await?;
        return Ok(Step::Raced);
    }
    let mut tx = Vec::new();
    match kind {
        Kind::List => {
            if int(from, cmd!["LLEN", key]).await? == 0 {
                from.call(cmd!["UNWATCH"]).await?;
                return Ok(Step::Empty);
            }
            tx.extend((0..batch).map(|_| cmd!["RPOPLPUSH", key, &area]));
        }
        Kind::Zset => {
            let lowest = from
                .call(cmd![
                    "ZRANGE",
                    key,
                    "0",
                    (batch - 1).to_string(),
                    "WITHSCORES"
                ])
                .await?;
            let Value::Array(Some(items)) = lowest else {
                return Err(from.protocol("ZRANGE", &lowest.shape()));
            };
            if items.is_empty() {
                from.call(cmd!["UNWATCH"]).await?;
                return Ok(Step::Empty);
            }
            let mut zadd = cmd!["ZADD", &area];
            let mut zrem = cmd!["ZREM", key];
            for pair in items.chunks(2) {
                let [Value::Bulk(Some(member)), Value::Bulk(Some(score))] = pair else {
                    return Err(from.protocol("ZRANGE", "not member/score pairs"));
                };
                zadd.push(score.clone());
                zadd.push(member.clone());
                zrem.push(member.clone());
            }
            tx.push(zadd);
            tx.push(zrem);
        }
    }
    transact(from, tx).await
}

/// Step 2: puts batch `n` on the receiving side unless its marker says it is there.
async fn put(to: &mut Conn, key: &[u8], kind: Kind, n: u64, jobs: &[Vec<u8>]) -> KvResult<Step> {
    let marker = taken(key, n);
    to.call(cmd!["WATCH", &marker]).await?;
    if int(to, cmd!["EXISTS", &marker]).await? > 0 {
        to.call(cmd!["UNWATCH"]).await?;
        return Ok(Step::Empty);
    }
    let mut write = match kind {
        Kind::List => cmd!["RPUSH", key],
        Kind::Zset => cmd!["ZADD", key],
    };
    match kind {
        Kind::List => write.extend(jobs.iter().cloned()),
        Kind::Zset => {
            for pair in jobs.chunks(2) {
                if let [member, score] = pair {
                    write.push(score.clone());
                    write.push(member.clone());
                }
            }
        }
    }
    let tx = vec![write, cmd!["SET", &marker, "1", "EX", KEEP_SECONDS]];
    transact(to, tx).await
}

/// Step 3: empties the moving area and numbers the batch done, if nobody did already.
async fn clear(from: &mut Conn, key: &[u8], n: u64) -> KvResult<Step> {
    let counter = given(key);
    from.call(cmd!["WATCH", &counter]).await?;
    if int(from, cmd!["GET", &counter]).await? != n - 1 {
        from.call(cmd!["UNWATCH"]).await?;
        return Ok(Step::Raced);
    }
    let tx = vec![
        cmd!["DEL", moving(key)],
        cmd!["SET", &counter, n.to_string(), "EX", KEEP_SECONDS],
    ];
    transact(from, tx).await
}

/// Keeps handing over until `stop` says so: a round every `every` while there are jobs to
/// move (the giving side's workers may push jobs back as they shut down, long after the
/// switch), backing off to 30 × `every` while there are none (each round reads the giving
/// side's keyspace, which is production's Heroku Redis). `on_progress` gets the running total
/// and the jobs still waiting after each round.
pub async fn keep_handing_over(
    from: &mut Conn,
    to: &mut Conn,
    patterns: &[String],
    batch: usize,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut on_progress: impl FnMut(Moved, u64),
) -> KvResult<Moved> {
    let mut total = Moved::default();
    let mut pause = every;
    loop {
        let keys = queue_keys(from, patterns).await?;
        let mut round = hand_over_keys(from, to, &keys, batch).await?;
        round.keys = 0;
        total.add(round);
        total.keys = keys.len() as u64;
        let left = waiting_in(from, &keys).await?;
        on_progress(total, left);
        pause = if round.jobs > 0 || left > 0 {
            every
        } else {
            (pause * 2).min(every * 30)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return Ok(total),
        }
        if *stop.borrow() {
            return Ok(total);
        }
    }
}
