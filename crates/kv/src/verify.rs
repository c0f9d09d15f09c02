//! Do the two sides hold the same keys and values? Every source key's DUMP is compared with
//! the target's, minus the payload's trailer (RDB version and checksum), so that a target on a
//! newer Redis compares equal when the value encoding is the same; keys the target holds and
//! the source does not are found by a second scan. A TTL on one side only is a difference; the
//! remaining TTLs themselves are not compared (they run down while the check runs).
//!
//! The bytes compared are the value's serialised encoding: two servers that encode one value
//! differently (a newer major changing a small list's encoding) show it as different. The
//! bed's servers run one version; a type-aware comparison is left for mixed versions.

use md5::{Digest, Md5};

use crate::{
    Conn, KvResult, cmd,
    copy::{dump_keys, scan_step},
    resp::Value,
};

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

/// The payload's value part: DUMP ends with a 2-byte RDB version and an 8-byte CRC64.
fn digest(payload: &[u8]) -> [u8; 16] {
    let body = &payload[..payload.len().saturating_sub(10)];
    Md5::digest(body).into()
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
    batch: usize,
    limit: usize,
) -> KvResult<Report> {
    let mut r = Report::default();
    let mut cursor = b"0".to_vec();
    loop {
        let (next, keys) = scan_step(source, &cursor, pattern, batch).await?;
        if !keys.is_empty() {
            let theirs = dump_keys(target, keys.clone()).await?;
            let ours = dump_keys(source, keys).await?;
            for ((key, mine, my_ttl), (_, other, other_ttl)) in ours.into_iter().zip(theirs) {
                let Some(mine) = mine else { continue };
                r.compared += 1;
                match other {
                    None => note(&mut r.missing, &mut r.unlisted, limit, key),
                    Some(other) if digest(&mine) != digest(&other) => {
                        note(&mut r.differing, &mut r.unlisted, limit, key)
                    }
                    Some(_) if my_ttl.is_some() != other_ttl.is_some() => {
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
        let (next, keys) = scan_step(target, &cursor, pattern, batch).await?;
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
