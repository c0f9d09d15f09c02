//! Do the two sides hold the same keys and values (the `skip` globs and Ferry's own keys left
//! out)? Every source key is read on both sides by its type (see [`Held`]) and compared by digest; keys the target holds and the source does
//! not are found by a second scan. A TTL on one side only is a difference; the remaining TTLs
//! themselves are not compared (they run down while the check runs). Reading by type, not
//! comparing DUMP bytes, matters: a set's or hash's DUMP lists members in hash order, which
//! differs between two servers holding the same value.

use md5::{Digest, Md5};

use crate::{Conn, KvResult, cmd, copy::scan_step, resp::Value};

/// What differs, keys listed up to the report's limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Source keys compared.
    pub compared: u64,
    /// Keys on the source the target lacks.
    pub missing: Vec<Vec<u8>>,
    /// Keys whose values differ.
    pub differing: Vec<Vec<u8>>,
    /// Keys with a TTL on one side only.
    pub ttl_differs: Vec<Vec<u8>>,
    /// Keys on the target the source lacks.
    pub extra: Vec<Vec<u8>>,
    /// Differences found beyond the limit, not listed.
    pub unlisted: u64,
}

impl Report {
    /// Whether the sides are equal.
    pub fn equal(&self) -> bool {
        self.missing.is_empty()
            && self.differing.is_empty()
            && self.ttl_differs.is_empty()
            && self.extra.is_empty()
            && self.unlisted == 0
    }
}

/// What a key holds, read by type and serialised canonically: members of sets and fields
/// of hashes sorted (their order inside Redis follows a per-process hash seed, so neither
/// their iteration order nor DUMP's bytes compare across servers); lists, sorted sets (by
/// score, then member) and streams in their own order. `None`: the key is gone.
pub type Held = Option<(String, [u8; 16], bool)>;

fn flatten(v: &Value, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::Bulk(Some(b)) => out.push(b.clone()),
        Value::Simple(s) => out.push(s.clone().into_bytes()),
        Value::Int(i) => out.push(i.to_string().into_bytes()),
        Value::Array(Some(items)) => {
            out.push(format!("[{}", items.len()).into_bytes());
            for i in items {
                flatten(i, out);
            }
            out.push(b"]".to_vec());
        }
        Value::Bulk(None) | Value::Array(None) => out.push(b"nil".to_vec()),
        Value::Error(e) => out.push(format!("-{e}").into_bytes()),
    }
}

fn digest(parts: &[Vec<u8>]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Reads `keys` by type in two round trips (TYPE and PTTL, then the type's read command).
pub async fn held(conn: &mut Conn, keys: &[Vec<u8>]) -> KvResult<Vec<Held>> {
    let mut first = Vec::with_capacity(keys.len() * 2);
    for k in keys {
        first.push(cmd!["TYPE", k]);
        first.push(cmd!["PTTL", k]);
    }
    let answers = conn.pipeline(first).await?;
    let mut kinds = Vec::with_capacity(keys.len());
    let mut reads = Vec::new();
    for (k, pair) in keys.iter().zip(answers.chunks(2)) {
        let kind = match &pair[0] {
            Value::Simple(t) => t.clone(),
            other => return Err(conn.protocol("TYPE", &other.shape())),
        };
        let ttl = matches!(pair[1], Value::Int(t) if t > 0);
        let read = match kind.as_str() {
            "none" => None,
            "string" => Some(cmd!["GET", k]),
            "list" => Some(cmd!["LRANGE", k, "0", "-1"]),
            "set" => Some(cmd!["SMEMBERS", k]),
            "zset" => Some(cmd!["ZRANGE", k, "0", "-1", "WITHSCORES"]),
            "hash" => Some(cmd!["HGETALL", k]),
            "stream" => Some(cmd!["XRANGE", k, "-", "+"]),
            // Module types: their serialised form is all there is.
            _ => Some(cmd!["DUMP", k]),
        };
        if let Some(r) = read {
            reads.push(r);
        }
        kinds.push((kind, ttl));
    }
    let mut values = conn.pipeline(reads).await?.into_iter();
    let mut out = Vec::with_capacity(keys.len());
    for (kind, ttl) in kinds {
        if kind == "none" {
            out.push(None);
            continue;
        }
        let v = values
            .next()
            .ok_or_else(|| conn.protocol("read", "missing answer"))?;
        let mut parts = Vec::new();
        match (kind.as_str(), &v) {
            ("set", Value::Array(Some(items))) => {
                items.iter().for_each(|m| flatten(m, &mut parts));
                parts.sort();
            }
            ("hash", Value::Array(Some(items))) => {
                let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = items
                    .chunks(2)
                    .map(|p| {
                        let mut f = Vec::new();
                        p.iter().for_each(|x| flatten(x, &mut f));
                        (
                            f.first().cloned().unwrap_or_default(),
                            f.get(1).cloned().unwrap_or_default(),
                        )
                    })
                    .collect();
                pairs.sort();
                for (f, val) in pairs {
                    parts.push(f);
                    parts.push(val);
                }
            }
            ("string" | "list" | "zset" | "stream", _) => flatten(&v, &mut parts),
            // DUMP: the value without its RDB version and checksum trailer.
            (_, Value::Bulk(Some(payload))) => {
                parts.push(payload[..payload.len().saturating_sub(10)].to_vec());
            }
            _ => flatten(&v, &mut parts),
        }
        out.push(Some((kind, digest(&parts), ttl)));
    }
    Ok(out)
}

fn note(list: &mut Vec<Vec<u8>>, unlisted: &mut u64, limit: usize, key: Vec<u8>) {
    if list.len() < limit {
        list.push(key);
    } else {
        *unlisted += 1;
    }
}

/// Compares the source's database (keys matching `pattern`) with the target's.
pub async fn compare_db(
    source: &mut Conn,
    target: &mut Conn,
    pattern: Option<&[u8]>,
    skip: &[String],
    batch: usize,
    limit: usize,
) -> KvResult<Report> {
    let mut r = Report::default();
    let mut cursor = b"0".to_vec();
    loop {
        let (next, mut keys) = scan_step(source, &cursor, pattern, batch).await?;
        keys.retain(|k| !crate::glob::left_out(skip, k));
        if !keys.is_empty() {
            let theirs = held(target, &keys).await?;
            let ours = held(source, &keys).await?;
            for ((key, mine), other) in keys.into_iter().zip(ours).zip(theirs) {
                let Some((my_type, mine, my_ttl)) = mine else {
                    continue;
                };
                r.compared += 1;
                match other {
                    None => note(&mut r.missing, &mut r.unlisted, limit, key),
                    Some((t, other, _)) if t != my_type || other != mine => {
                        note(&mut r.differing, &mut r.unlisted, limit, key)
                    }
                    Some((_, _, other_ttl)) if my_ttl != other_ttl => {
                        note(&mut r.ttl_differs, &mut r.unlisted, limit, key)
                    }
                    Some(_) => {}
                }
            }
        }
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    let mut cursor = b"0".to_vec();
    loop {
        let (next, mut keys) = scan_step(target, &cursor, pattern, batch).await?;
        keys.retain(|k| !crate::glob::left_out(skip, k));
        if !keys.is_empty() {
            let commands = keys.iter().map(|k| cmd!["EXISTS", k]).collect();
            let answers = source.pipeline(commands).await?;
            for (key, a) in keys.into_iter().zip(answers) {
                if a == Value::Int(0) {
                    note(&mut r.extra, &mut r.unlisted, limit, key);
                }
            }
        }
        if next == b"0" {
            return Ok(r);
        }
        cursor = next;
    }
}
