//! Verification: per table, row count and an order-independent checksum (the sum of a 64-bit
//! hash of every row's text), computed in key-range chunks on both sides, so a mismatch names
//! the ranges to look at.

use std::collections::BTreeMap;

use ferry_pg::catalog::{Table, quote_ident};
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{ReplError, ReplResult};

/// One chunk whose count or checksum differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkMismatch {
    /// Inclusive lower key bound (None: the whole table).
    pub lo: Option<i64>,
    /// Exclusive upper key bound.
    pub hi: Option<i64>,
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
}

/// The result for one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// `schema.name`.
    pub table: String,
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
    /// The first mismatching chunks (at most 10), empty when equal.
    pub mismatches: Vec<ChunkMismatch>,
}

impl TableCheck {
    /// Whether source and target hold the same rows.
    pub fn equal(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Compares every capture unit (plain tables and partition roots) of `tables`.
pub async fn verify(
    source: &Client,
    target: &Client,
    tables: &[Table],
    rows_per_chunk: i64,
) -> ReplResult<Vec<TableCheck>> {
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| t.is_capture_unit()) {
        out.push(verify_table(source, target, t, rows_per_chunk.max(1)).await?);
    }
    Ok(out)
}

/// For a table with an integer key: the keys whose rows differ between source and target,
/// among `keys` (or, without them, in `[lo, hi)`). Used to tell rows in flight (they converge
/// once applied) from real differences.
pub async fn differing_keys(
    source: &Client,
    target: &Client,
    t: &Table,
    range: (i64, i64),
    keys: Option<&[i64]>,
) -> ReplResult<Vec<i64>> {
    let Some(key) = t.integer_key() else {
        return Err(ReplError::State(format!(
            "{} has no integer key to compare row by row",
            t.display_name()
        )));
    };
    let row_hash = row_md5(t);
    let k = quote_ident(key);
    let filter = match keys {
        Some(_) => format!("{k} = ANY($1::bigint[])"),
        None => format!("{k} >= $1::bigint AND {k} < $2::bigint"),
    };
    let sql = format!(
        "SELECT {k}::bigint, {row_hash} FROM {q} WHERE {filter}",
        q = t.qualified()
    );
    let what = format!("compare rows of {}", t.display_name());
    let (a, b) = tokio::try_join!(
        row_hashes(source, &sql, &what, range, keys),
        row_hashes(target, &sql, &what, range, keys)
    )?;
    let mut out: Vec<i64> = a
        .iter()
        .filter(|(k, h)| b.get(k) != Some(h))
        .map(|(k, _)| *k)
        .chain(b.keys().filter(|k| !a.contains_key(k)).copied())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The md5 of a row over every column (generated ones too: both sides compute them), the same
/// expression for the chunk sums and the row-by-row comparison.
fn row_md5(t: &Table) -> String {
    let cols = t
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!("md5(ROW({cols})::text)")
}

async fn row_hashes(
    client: &Client,
    sql: &str,
    what: &str,
    range: (i64, i64),
    keys: Option<&[i64]>,
) -> ReplResult<std::collections::HashMap<i64, String>> {
    let rows = match keys {
        Some(list) => client.query(sql, &[&list]).await,
        None => client.query(sql, &[&range.0, &range.1]).await,
    }
    .map_err(ReplError::sql(what.to_string()))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn verify_table(
    source: &Client,
    target: &Client,
    t: &Table,
    rows_per_chunk: i64,
) -> ReplResult<TableCheck> {
    let row_hash = row_md5(t);
    let hash = format!(
        "coalesce(sum(('x' || substr({row_hash}, 1, 16))::bit(64)::bigint::numeric), 0)::text"
    );
    let name = t.display_name();
    let (bucket, step, min) = match t.integer_key() {
        Some(key) => {
            let row = source
                .query_one(
                    &format!(
                        "SELECT min({k})::bigint, max({k})::bigint, count(*) FROM {q}",
                        k = quote_ident(key),
                        q = t.qualified()
                    ),
                    &[],
                )
                .await
                .map_err(ReplError::sql(format!("measure {name}")))?;
            let (min, max, count): (Option<i64>, Option<i64>, i64) =
                (row.get(0), row.get(1), row.get(2));
            match (min, max) {
                (Some(min), Some(max)) => {
                    let n = (count / rows_per_chunk).max(1);
                    let step = ((max - min) / n + 1).max(1);
                    (
                        format!(
                            "floor(({} - {min})::numeric / {step})::bigint",
                            quote_ident(key)
                        ),
                        step,
                        min,
                    )
                }
                _ => ("0::bigint".to_string(), 0, 0),
            }
        }
        None => ("0::bigint".to_string(), 0, 0),
    };
    let sql = format!(
        "SELECT {bucket} AS b, count(*), {hash} FROM {q} GROUP BY 1",
        q = t.qualified()
    );
    let (a, b) = tokio::try_join!(
        checksums(source, &sql, &name),
        checksums(target, &sql, &name)
    )?;
    let mut mismatches = Vec::new();
    let buckets: std::collections::BTreeSet<i64> = a.keys().chain(b.keys()).copied().collect();
    for k in buckets {
        let (sa, sb) = (a.get(&k), b.get(&k));
        if sa != sb {
            mismatches.push(ChunkMismatch {
                lo: (step > 0).then(|| min + k * step),
                hi: (step > 0).then(|| min + (k + 1) * step),
                source_rows: sa.map_or(0, |x| x.0),
                target_rows: sb.map_or(0, |x| x.0),
            });
        }
        if mismatches.len() >= 10 {
            break;
        }
    }
    Ok(TableCheck {
        table: name,
        source_rows: a.values().map(|x| x.0).sum(),
        target_rows: b.values().map(|x| x.0).sum(),
        mismatches,
    })
}

async fn checksums(
    client: &Client,
    sql: &str,
    name: &str,
) -> ReplResult<BTreeMap<i64, (i64, String)>> {
    let rows = client
        .query(sql, &[])
        .await
        .map_err(ReplError::sql(format!("checksum {name}")))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                (r.get::<_, i64>(1), r.get::<_, String>(2)),
            )
        })
        .collect())
}

/// Sets every source sequence on the target to the source's value plus `gap`, never lowering
/// a target sequence. Returns how many sequences were set.
pub async fn sync_sequences(source: &Client, target: &Client, gap: i64) -> ReplResult<usize> {
    let rows = source
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'ferry')",
            &[],
        )
        .await
        .map_err(ReplError::sql("read source sequences"))?;
    let mut n = 0;
    for r in rows {
        let name: String = r.get(0);
        let Some(last): Option<i64> = r.get(1) else {
            continue;
        };
        target
            .query_one(
                "SELECT setval($1::text::regclass, greatest($2::bigint + $3::bigint,
                        (SELECT coalesce(s.last_value, 0) FROM pg_sequences s
                          WHERE format('%I.%I', s.schemaname, s.sequencename) = $1::text)), true)",
                &[&name, &last, &gap],
            )
            .await
            .map_err(ReplError::sql(format!("set sequence {name} on the target")))?;
        n += 1;
    }
    Ok(n)
}
