//! Verification: per table, row count and an order-independent checksum (the sum of a 64-bit
//! hash of every row's text) per bucket of rows, computed on both sides; a bucket that differs
//! is then narrowed to the keys whose rows differ (keys only, never row values).
//!
//! Buckets are key ranges for a table with one integer key (the index serves the narrowing)
//! and slices of the md5 of the key text otherwise (uuid, text and composite keys,
//! partitioned tables alike). Keys travel as their canonical text — a JSON array of each key
//! column's text, e.g. `["7", "2026-01-01"]` — the same on both sides and in the capture's
//! lists of changes waiting (see [`canonical_keys`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ferry_pg::catalog::{Table, quote_ident};
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{ReplError, ReplResult};

/// Rows per bucket aimed at: a differing bucket costs this many rows to narrow.
pub const ROWS_PER_BUCKET: i64 = 1_000;
/// At most this many buckets per table (bigger tables get bigger buckets).
const MAX_BUCKETS: i64 = 200_000;
/// At most this many differing buckets of one table are narrowed to keys in one pass.
pub const MAX_NARROWED_BUCKETS: usize = 2_000;

/// Pins the session settings that decide how values print (time zone, date and interval
/// styles, float digits, bytea), so a row's text — and so its hash — is the same on two
/// servers whose defaults differ.
pub async fn normalise_session(client: &Client) -> ReplResult<()> {
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
             SET extra_float_digits = 3; SET bytea_output = 'hex';",
        )
        .await
        .map_err(ReplError::sql(
            "set the comparison session's output settings",
        ))
}

/// How a table's rows are put in buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Buckets {
    /// `[min + b·step, min + (b+1)·step)` of the single integer key.
    Range {
        /// The key column.
        key: String,
        /// The smallest key on the source.
        min: i64,
        /// Keys per bucket.
        step: i64,
    },
    /// The first 60 bits of the md5 of the key's text, modulo `n`.
    Hash {
        /// How many buckets.
        n: i64,
    },
}

impl Buckets {
    /// The bucket of a row (of `alias`, or the table's own columns), as SQL.
    fn expr(&self, t: &Table, alias: Option<&str>) -> ReplResult<String> {
        Ok(match self {
            Buckets::Range { key, min, step } => format!(
                "floor(({}{k}::numeric - {min}) / {step})::bigint",
                alias.map(|a| format!("{a}.")).unwrap_or_default(),
                k = quote_ident(key)
            ),
            Buckets::Hash { n } => format!(
                "(('x' || substr(md5({}), 1, 15))::bit(60)::bigint % {n})",
                key_text(t, alias)?
            ),
        })
    }

    /// The key range of bucket `b` (range buckets only).
    pub fn range(&self, b: i64) -> Option<(i64, i64)> {
        match self {
            Buckets::Range { min, step, .. } => Some((
                min.saturating_add(b.saturating_mul(*step)),
                min.saturating_add(b.saturating_add(1).saturating_mul(*step)),
            )),
            Buckets::Hash { .. } => None,
        }
    }
}

/// One bucket whose count or checksum differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChunkMismatch {
    /// The bucket.
    pub bucket: i64,
    /// Inclusive lower key bound (range buckets).
    pub lo: Option<i64>,
    /// Exclusive upper key bound (range buckets).
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
    /// How the rows were bucketed.
    pub buckets: Buckets,
    /// Every differing bucket (empty when equal).
    pub mismatches: Vec<ChunkMismatch>,
}

impl TableCheck {
    /// Whether source and target hold the same rows.
    pub fn equal(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// The differing buckets' ids.
    pub fn differing(&self) -> Vec<i64> {
        self.mismatches.iter().map(|m| m.bucket).collect()
    }
}

/// Compares every capture unit (plain tables and partition roots) of `tables`, bucket by
/// bucket (about `rows_per_bucket` rows each).
pub async fn verify(
    source: &Client,
    target: &Client,
    tables: &[Table],
    rows_per_bucket: i64,
) -> ReplResult<Vec<TableCheck>> {
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| t.is_capture_unit()) {
        out.push(verify_table(source, target, t, rows_per_bucket.max(1)).await?);
    }
    Ok(out)
}

/// A key's canonical text as SQL: `jsonb_build_array(k1::text, …)::text` over the primary key
/// of `row` (a row alias, or the table's own columns).
pub fn key_text(t: &Table, row: Option<&str>) -> ReplResult<String> {
    if t.primary_key.is_empty() {
        return Err(ReplError::State(format!(
            "{} has no primary key to compare rows by; preflight reports this as a blocker",
            t.display_name()
        )));
    }
    let cols: Vec<String> = t
        .primary_key
        .iter()
        .map(|c| match row {
            Some(r) => format!("{r}.{}::text", quote_ident(c)),
            None => format!("{}::text", quote_ident(c)),
        })
        .collect();
    Ok(format!(
        "pg_catalog.jsonb_build_array({})::text",
        cols.join(", ")
    ))
}

/// The canonical texts of keys as a capture holds them (JSON arrays of typed values, from the
/// trigger log, or of text, from logical decoding): each value goes through its column's type,
/// so `[7]` and `["7"]` are the same key.
pub async fn canonical_keys(
    client: &Client,
    t: &Table,
    raw: &[serde_json::Value],
) -> ReplResult<BTreeSet<String>> {
    if raw.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sql = format!(
        "SELECT DISTINCT {} FROM pg_catalog.jsonb_array_elements($1::text::jsonb) k",
        crate::keys::canonical(t, "k")?
    );
    let list = serde_json::Value::Array(raw.to_vec()).to_string();
    let rows = client
        .query(&sql, &[&list])
        .await
        .map_err(ReplError::sql(format!(
            "read waiting keys of {}",
            t.display_name()
        )))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The md5 of a row (of `alias`, or the table's own columns) over every column (generated
/// ones too: both sides compute them), the same expression for the bucket sums and the
/// row-by-row comparison.
fn row_md5(t: &Table, alias: Option<&str>) -> String {
    let prefix = alias.map(|a| format!("{a}.")).unwrap_or_default();
    let cols = t
        .columns
        .iter()
        .map(|c| format!("{prefix}{}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("md5(ROW({cols})::text)")
}

/// Row hashes by canonical key of the rows of `keys` (canonical texts) on one side; a key
/// without a row is absent. Looked up through the primary key.
pub async fn row_hashes(
    client: &Client,
    t: &Table,
    keys: &[String],
) -> ReplResult<HashMap<String, String>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let typed = crate::keys::typed(t, "k::jsonb")?.join(", ");
    let sql = format!(
        "SELECT {kt}, {h} FROM {q} WHERE ({pk}) IN (SELECT {typed} FROM pg_catalog.unnest($1::text[]) k)",
        kt = key_text(t, None)?,
        h = row_md5(t, None),
        q = t.qualified(),
        pk = t.pk_list(),
    );
    let rows = client
        .query(&sql, &[&keys])
        .await
        .map_err(ReplError::sql(format!(
            "compare rows of {}",
            t.display_name()
        )))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The keys (canonical texts, sorted) whose rows differ between the two sides among the rows
/// of `buckets` (at most [`MAX_NARROWED_BUCKETS`] of them: one pass per side).
pub async fn differing_keys(
    source: &Client,
    target: &Client,
    t: &Table,
    scheme: &Buckets,
    buckets: &[i64],
) -> ReplResult<Vec<String>> {
    let buckets = &buckets[..buckets.len().min(MAX_NARROWED_BUCKETS)];
    if buckets.is_empty() {
        return Ok(Vec::new());
    }
    let (kt, h, q) = (
        key_text(t, Some("t"))?,
        row_md5(t, Some("t")),
        t.qualified(),
    );
    let what = format!("narrow the differences of {}", t.display_name());
    let (a, b) = match scheme {
        Buckets::Range { key, .. } => {
            let (lo, hi): (Vec<i64>, Vec<i64>) =
                buckets.iter().filter_map(|b| scheme.range(*b)).unzip();
            let sql = format!(
                "SELECT {kt}, {h} FROM unnest($1::bigint[], $2::bigint[]) r(lo, hi)
                   JOIN {q} t ON t.{k} >= r.lo AND t.{k} < r.hi",
                k = quote_ident(key)
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&lo, &hi];
            tokio::try_join!(
                key_hashes(source, &sql, &params, &what),
                key_hashes(target, &sql, &params, &what)
            )?
        }
        Buckets::Hash { .. } => {
            let sql = format!(
                "SELECT {kt}, {h} FROM {q} t WHERE {b} = ANY($1::bigint[])",
                b = scheme.expr(t, Some("t"))?
            );
            let list = buckets.to_vec();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&list];
            tokio::try_join!(
                key_hashes(source, &sql, &params, &what),
                key_hashes(target, &sql, &params, &what)
            )?
        }
    };
    Ok(diff_keys(&a, &b))
}

async fn key_hashes(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    what: &str,
) -> ReplResult<HashMap<String, String>> {
    let rows = client
        .query(sql, params)
        .await
        .map_err(ReplError::sql(what.to_string()))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Keys whose hashes differ, or that one side lacks, sorted.
pub fn diff_keys(a: &HashMap<String, String>, b: &HashMap<String, String>) -> Vec<String> {
    let mut out: BTreeSet<String> = a
        .iter()
        .filter(|(k, h)| b.get(*k) != Some(*h))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    out.into_iter().collect()
}

/// How to bucket `t`: about `rows_per_bucket` rows each, counted from the planner's estimate
/// (a count only for a table never analysed: no extra scan of a big table), and for an
/// integer key its bounds on the source (read through the key's index). Also returns how many
/// buckets the plan spans (keys written past the source's bounds since land in buckets
/// outside it, which the first and last slices take in: see [`slice_bounds`]).
pub async fn plan(source: &Client, t: &Table, rows_per_bucket: i64) -> ReplResult<(Buckets, i64)> {
    let name = t.display_name();
    let rows = if t.estimated_rows >= 0 {
        t.estimated_rows
    } else {
        source
            .query_one(&format!("SELECT count(*) FROM {}", t.qualified()), &[])
            .await
            .map_err(ReplError::sql(format!("count the rows of {name}")))?
            .get(0)
    };
    let n = (rows / rows_per_bucket.max(1)).clamp(1, MAX_BUCKETS);
    let Some(key) = t.integer_key() else {
        return Ok((Buckets::Hash { n }, n));
    };
    let row = source
        .query_one(
            &format!(
                "SELECT min({k})::bigint, max({k})::bigint FROM {q}",
                k = quote_ident(key),
                q = t.qualified()
            ),
            &[],
        )
        .await
        .map_err(ReplError::sql(format!("measure {name}")))?;
    let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    Ok(match (min, max) {
        (Some(min), Some(max)) => (
            Buckets::Range {
                key: key.to_string(),
                min,
                // Wide key spans: i128 so max − min cannot overflow.
                step: ((i128::from(max) - i128::from(min)) / i128::from(n) + 1)
                    .clamp(1, i128::from(i64::MAX)) as i64,
            },
            n,
        ),
        _ => (
            Buckets::Range {
                key: key.to_string(),
                min: 0,
                step: i64::MAX,
            },
            1,
        ),
    })
}

/// The key bounds of slice `i` of `slices` over a range plan of `n` buckets: whole buckets,
/// the first open below and the last open above (rows written outside the planned bounds
/// belong to them). `None` for a hash plan, which is one slice.
pub fn slice_bounds(scheme: &Buckets, n: i64, i: u32, slices: u32) -> (Option<i64>, Option<i64>) {
    let Buckets::Range { .. } = scheme else {
        return (None, None);
    };
    let slices = i64::from(slices.max(1));
    let per = (n.max(1) + slices - 1) / slices;
    let i = i64::from(i);
    let lo = (i > 0).then(|| scheme.range(i * per).map_or(i64::MIN, |r| r.0));
    let hi = (i + 1 < slices).then(|| scheme.range((i + 1) * per).map_or(i64::MAX, |r| r.0));
    (lo, hi)
}

/// How many slices a plan of `n` buckets is read in, `buckets_per_slice` buckets each (a
/// hash plan is read whole: its buckets are spread over the whole table).
pub fn slice_count(scheme: &Buckets, n: i64, buckets_per_slice: i64) -> u32 {
    match scheme {
        Buckets::Range { .. } => ((n.max(1) + buckets_per_slice.max(1) - 1)
            / buckets_per_slice.max(1))
        .clamp(1, 100_000) as u32,
        Buckets::Hash { .. } => 1,
    }
}

/// One slice of a table compared: rows on each side and the buckets that differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceCheck {
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
    /// The differing buckets.
    pub mismatches: Vec<ChunkMismatch>,
}

/// Compares the rows of `t` with keys in `[lo, hi)` (either end open; both `None`: the whole
/// table), bucket by bucket, reading both sides at once.
pub async fn check_slice(
    source: &Client,
    target: &Client,
    t: &Table,
    scheme: &Buckets,
    (lo, hi): (Option<i64>, Option<i64>),
) -> ReplResult<SliceCheck> {
    let name = t.display_name();
    let hash = format!(
        "coalesce(sum(('x' || substr({}, 1, 16))::bit(64)::bigint::numeric), 0)::text",
        row_md5(t, None)
    );
    let mut filter = Vec::new();
    if let Buckets::Range { key, .. } = scheme {
        if let Some(lo) = lo {
            filter.push(format!("{} >= {lo}", quote_ident(key)));
        }
        if let Some(hi) = hi {
            filter.push(format!("{} < {hi}", quote_ident(key)));
        }
    }
    let sql = format!(
        "SELECT {bucket} AS b, count(*), {hash} FROM {q}{w} GROUP BY 1",
        bucket = scheme.expr(t, None)?,
        q = t.qualified(),
        w = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filter.join(" AND "))
        }
    );
    let (a, b) = tokio::try_join!(
        checksums(source, &sql, &name),
        checksums(target, &sql, &name)
    )?;
    let buckets: BTreeSet<i64> = a.keys().chain(b.keys()).copied().collect();
    let mismatches = buckets
        .into_iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|k| {
            let range = scheme.range(k);
            ChunkMismatch {
                bucket: k,
                lo: range.map(|r| r.0),
                hi: range.map(|r| r.1),
                source_rows: a.get(&k).map_or(0, |x| x.0),
                target_rows: b.get(&k).map_or(0, |x| x.0),
            }
        })
        .collect();
    Ok(SliceCheck {
        source_rows: a.values().map(|x| x.0).sum(),
        target_rows: b.values().map(|x| x.0).sum(),
        mismatches,
    })
}

/// Compares `t` whole: one slice.
pub async fn verify_table(
    source: &Client,
    target: &Client,
    t: &Table,
    rows_per_bucket: i64,
) -> ReplResult<TableCheck> {
    let (scheme, _) = plan(source, t, rows_per_bucket).await?;
    let s = check_slice(source, target, t, &scheme, (None, None)).await?;
    Ok(TableCheck {
        table: t.display_name(),
        source_rows: s.source_rows,
        target_rows: s.target_rows,
        buckets: scheme,
        mismatches: s.mismatches,
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

/// Keys named per table at most, in an exact comparison's result.
pub const MAX_NAMED_KEYS: usize = 20;

/// One table of an exact comparison (both sides read at states that must be equal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExactTable {
    /// `schema.name`.
    pub table: String,
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
    /// Differing keys (canonical texts), at most [`MAX_NAMED_KEYS`].
    pub keys: Vec<String>,
    /// Differing buckets found (each holds at least one differing key).
    pub differing_buckets: usize,
}

/// Compares `t` with no tolerance: buckets, then the differing buckets' keys. For two
/// sessions that read fixed states (the exported snapshots of a drained freeze).
pub async fn compare_exact(
    source: &Client,
    target: &Client,
    t: &Table,
    rows_per_bucket: i64,
) -> ReplResult<ExactTable> {
    let check = verify_table(source, target, t, rows_per_bucket.max(1)).await?;
    let mut keys = if check.equal() {
        Vec::new()
    } else {
        differing_keys(source, target, t, &check.buckets, &check.differing()).await?
    };
    keys.truncate(MAX_NAMED_KEYS);
    Ok(ExactTable {
        table: check.table,
        source_rows: check.source_rows,
        target_rows: check.target_rows,
        keys,
        differing_buckets: check.mismatches.len(),
    })
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
