//! The key copy: every key the source holds (or those matching a pattern) lands on the target
//! with its type, value and remaining TTL, through `DUMP` and `RESTORE … REPLACE`, pipelined
//! in batches. A key that expires or is deleted between the SCAN and the DUMP is skipped and
//! counted. Run again, it converges: RESTORE REPLACE overwrites what an earlier pass wrote.
//!
//! Two Redis facts shape it: SCAN guarantees every key present for the whole scan is returned
//! (some more than once), not keys written during it, which is what the live sync's
//! notifications and re-scan are for; and RESTORE needs a target whose RDB version is the
//! source's or newer (ElastiCache at the source's major or later).

use crate::{Conn, KvError, KvResult, cmd, resp::Value};

/// What one copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Keys restored on the target (a key SCAN returned twice counts twice).
    pub keys: u64,
    /// Bytes of DUMP payload moved.
    pub bytes: u64,
    /// Keys gone (expired or deleted) between the SCAN and the DUMP: deleted on the target
    /// too (an earlier pass may have written them).
    pub vanished: u64,
    /// Keys restored with a TTL.
    pub with_ttl: u64,
}

/// One SCAN step: the next cursor and the keys.
pub async fn scan_step(
    conn: &mut Conn,
    cursor: &[u8],
    pattern: Option<&[u8]>,
    count: usize,
) -> KvResult<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut args = cmd!["SCAN", cursor, "COUNT", count.to_string()];
    if let Some(p) = pattern {
        args.extend(cmd!["MATCH", p]);
    }
    let answer = conn.call(args).await?;
    let Value::Array(Some(mut parts)) = answer else {
        return Err(conn.protocol("SCAN", &answer.shape()));
    };
    if parts.len() != 2 {
        return Err(conn.protocol("SCAN", "not [cursor, keys]"));
    }
    let keys = parts.pop();
    let next = parts.pop();
    match (next, keys) {
        (Some(Value::Bulk(Some(next))), Some(Value::Array(Some(keys)))) => {
            let keys = keys
                .into_iter()
                .filter_map(|k| match k {
                    Value::Bulk(Some(k)) => Some(k),
                    _ => None,
                })
                .collect();
            Ok((next, keys))
        }
        _ => Err(conn.protocol("SCAN", "not [cursor, keys]")),
    }
}

/// Every key of `conn`'s database matching `pattern` (Ferry's own keys included).
pub async fn keys_matching(
    conn: &mut Conn,
    pattern: &[u8],
    batch: usize,
) -> KvResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let (next, keys) = scan_step(conn, &cursor, Some(pattern), batch).await?;
        out.extend(keys);
        if next == b"0" {
            return Ok(out);
        }
        cursor = next;
    }
}

/// A key's DUMP and remaining TTL read in one pipeline: `(key, payload, ttl_ms)`, with `None`
/// payload for a key that is gone and `None` TTL for a key without one.
pub type Dumped = (Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// DUMPs `keys` (with their PTTL) in one round trip.
pub async fn dump_keys(conn: &mut Conn, keys: Vec<Vec<u8>>) -> KvResult<Vec<Dumped>> {
    let mut commands = Vec::with_capacity(keys.len() * 2);
    for k in &keys {
        commands.push(cmd!["PTTL", k]);
        commands.push(cmd!["DUMP", k]);
    }
    let answers = conn.pipeline(commands).await?;
    let mut out = Vec::with_capacity(keys.len());
    for (k, pair) in keys.into_iter().zip(answers.chunks(2)) {
        let (ttl, payload) = match pair {
            [Value::Int(t), Value::Bulk(p)] => (*t, p.clone()),
            [Value::Error(m), _] | [_, Value::Error(m)] => {
                return Err(KvError::Refused {
                    server: conn.server().to_string(),
                    command: "DUMP".into(),
                    message: m.clone(),
                });
            }
            _ => return Err(conn.protocol("PTTL/DUMP", "unexpected answers")),
        };
        // PTTL: -2 gone, -1 no TTL, 0 expiring this millisecond (gone for our purpose).
        let (payload, ttl) = match ttl {
            -2 | 0 => (None, None),
            -1 => (payload, None),
            t => (payload, Some(t)),
        };
        out.push((k, payload, ttl));
    }
    Ok(out)
}

/// Writes dumped keys to `conn` with `RESTORE key ttl payload REPLACE` (TTL relative: no
/// clock is shared between the two servers), and DEL for a key the source no longer has;
/// returns the stats of this batch. The one writer of the copy and the live sync.
pub async fn restore_keys(conn: &mut Conn, dumped: Vec<Dumped>) -> KvResult<CopyStats> {
    let mut stats = CopyStats::default();
    let mut commands = Vec::with_capacity(dumped.len());
    for (k, payload, ttl) in dumped {
        let Some(payload) = payload else {
            stats.vanished += 1;
            commands.push(cmd!["DEL", k]);
            continue;
        };
        stats.keys += 1;
        stats.bytes += payload.len() as u64;
        stats.with_ttl += u64::from(ttl.is_some());
        commands.push(cmd![
            "RESTORE",
            k,
            ttl.unwrap_or(0).to_string(),
            payload,
            "REPLACE"
        ]);
    }
    for answer in conn.pipeline(commands).await? {
        if let Value::Error(message) = answer {
            return Err(KvError::Refused {
                server: conn.server().to_string(),
                command: "RESTORE".into(),
                message: format!(
                    "{message} (a payload version error means the target runs an older Redis than the source: give ElastiCache the source's major or later)"
                ),
            });
        }
    }
    Ok(stats)
}

/// Copies every key of the source's database (matching `pattern`, if given, and none of the
/// disposable `skip` globs nor Ferry's own keys) to the target's, with `workers` parallel
/// sessions: one session scans and hands batches of `batch` keys to the workers, each with its
/// own source and target sessions (DUMP and RESTORE pipelined per batch). The order of keys
/// does not matter: each is written whole. The drain markers the scan met (left out of the
/// copy) go to `markers`, when given: the live sync writes them after the pass.
pub async fn copy_db_parallel(
    source: &crate::RedisUrl,
    target: &crate::RedisUrl,
    pattern: Option<&[u8]>,
    skip: &[String],
    batch: usize,
    workers: usize,
    mut markers: Option<&mut Vec<Vec<u8>>>,
) -> KvResult<CopyStats> {
    let workers = workers.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(workers * 2);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (rx, source, target) = (rx.clone(), source.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = Conn::connect(&source).await?;
            let mut t = Conn::connect(&target).await?;
            let mut total = CopyStats::default();
            loop {
                let next = rx.lock().await.recv().await;
                let Some(keys) = next else {
                    return Ok::<CopyStats, KvError>(total);
                };
                let stats = restore_keys(&mut t, dump_keys(&mut s, keys).await?).await?;
                total.keys += stats.keys;
                total.bytes += stats.bytes;
                total.vanished += stats.vanished;
                total.with_ttl += stats.with_ttl;
            }
        }));
    }
    let scanned = async {
        let mut scan = Conn::connect(source).await?;
        let mut cursor = b"0".to_vec();
        loop {
            let (next, mut keys) = scan_step(&mut scan, &cursor, pattern, batch).await?;
            if let Some(found) = markers.as_deref_mut() {
                found.extend(keys.iter().filter(|k| crate::glob::is_marker(k)).cloned());
            }
            keys.retain(|k| !crate::glob::left_out(skip, k));
            if !keys.is_empty() && tx.send(keys).await.is_err() {
                // A worker failed: its error is reported below.
                return Ok::<(), KvError>(());
            }
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }
    .await;
    drop(tx);
    let mut total = CopyStats::default();
    let mut failure = scanned.err();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => {
                total.keys += s.keys;
                total.bytes += s.bytes;
                total.vanished += s.vanished;
                total.with_ttl += s.with_ttl;
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => {
                failure = failure.or(Some(KvError::Io {
                    server: source.to_string(),
                    reason: format!("a copy worker ended: {e}"),
                }))
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}
