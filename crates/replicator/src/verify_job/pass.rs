//! The bucket pass of a Verify job: every table compared bucket by bucket, a big table in key
//! slices read by several session pairs at once, resumable slice by slice.
//!
//! A table with one integer key is planned as key-range buckets and read in slices of
//! [`BUCKETS_PER_SLICE`] buckets, `sessions` slices at a time (one per session pair: each
//! reads its key range through the key's index on both sides at once). A table bucketed by key
//! hash is read whole by one pair. Each slice reads both sides fresh, at the same moment: a
//! snapshot held over the whole pass would keep Heroku's vacuum from cleaning up for hours
//! and compare an ever older source with a target that moved on; the key rounds that follow
//! settle what was in flight.
//!
//! The [`Pass`] is the job's record: which tables and slices are done, the rows compared and
//! the buckets that differed. A worker that resumes a job starts at the first slice not done.

use ferry_pg::catalog::Table;
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::{
    ReplResult,
    throttle::Throttle,
    verify::{self, Buckets, ChunkMismatch, TableCheck},
};

/// Buckets read by one session pair at a time (about 100,000 rows).
pub const BUCKETS_PER_SLICE: i64 = 100;
/// Differing buckets kept in the record across the pass: past it a table's are counted only,
/// and the table is compared again whole before its keys are narrowed (the record must fit a
/// DynamoDB item).
pub const MAX_STORED_MISMATCHES: usize = 2_500;

/// Where one table's comparison stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TablePass {
    /// `schema.name`.
    pub table: String,
    /// How its rows are bucketed (fixed for the job, so a resumed pass adds up).
    pub buckets: Buckets,
    /// How many buckets the plan spans.
    pub planned: i64,
    /// Slices it is read in.
    pub slices: u32,
    /// Slices compared.
    pub slices_done: u32,
    /// Rows on the source, over the slices done.
    pub source_rows: i64,
    /// Rows on the target, over the slices done.
    pub target_rows: i64,
    /// Differing buckets kept (see [`MAX_STORED_MISMATCHES`]).
    pub mismatches: Vec<ChunkMismatch>,
    /// Differing buckets found.
    pub mismatches_total: u64,
}

impl TablePass {
    /// Every slice compared.
    pub fn done(&self) -> bool {
        self.slices_done >= self.slices
    }

    /// Every differing bucket is in the record.
    pub fn complete(&self) -> bool {
        self.mismatches.len() as u64 == self.mismatches_total
    }

    /// The table's check as a one-shot comparison gives it.
    pub fn check(&self) -> TableCheck {
        TableCheck {
            table: self.table.clone(),
            source_rows: self.source_rows,
            target_rows: self.target_rows,
            buckets: self.buckets.clone(),
            mismatches: self.mismatches.clone(),
        }
    }
}

/// The pass's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// Tables to compare.
    pub tables_total: usize,
    /// Tables compared whole.
    pub tables_done: usize,
    /// Source rows compared so far.
    pub rows_compared: i64,
    /// Every table begun, in the order compared.
    pub tables: Vec<TablePass>,
}

impl Pass {
    fn stored(&self) -> usize {
        self.tables.iter().map(|t| t.mismatches.len()).sum()
    }
}

/// What bounds the pass.
#[derive(Debug)]
pub struct Bounds<'a> {
    /// Rows per bucket aimed at.
    pub rows_per_bucket: i64,
    /// Buckets per slice.
    pub buckets_per_slice: i64,
    /// Source rows per second over every session (`None`: unbounded).
    pub throttle: Option<&'a Throttle>,
}

/// Compares every capture unit of `tables` not yet done in `pass`, with the session pairs
/// `pairs` (source, target; output settings normalised), reporting the record to `progress`
/// after each round of slices.
pub async fn run(
    pairs: &[(Client, Client)],
    tables: &[Table],
    pass: &mut Pass,
    bounds: &Bounds<'_>,
    progress: &watch::Sender<Pass>,
) -> ReplResult<()> {
    let units: Vec<&Table> = tables.iter().filter(|t| t.is_capture_unit()).collect();
    pass.tables_total = units.len();
    let (source, _) = pairs
        .first()
        .ok_or_else(|| crate::ReplError::State("a Verify pass needs a session pair".into()))?;
    for t in units {
        let name = t.display_name();
        let idx = match pass.tables.iter().position(|p| p.table == name) {
            Some(i) => i,
            None => {
                let (buckets, planned) = verify::plan(source, t, bounds.rows_per_bucket).await?;
                let slices = verify::slice_count(&buckets, planned, bounds.buckets_per_slice);
                pass.tables.push(TablePass {
                    table: name,
                    buckets,
                    planned,
                    slices,
                    slices_done: 0,
                    source_rows: 0,
                    target_rows: 0,
                    mismatches: Vec::new(),
                    mismatches_total: 0,
                });
                pass.tables.len() - 1
            }
        };
        while !pass.tables[idx].done() {
            let rows = round(pairs, t, pass, idx).await?;
            pass.rows_compared += rows;
            progress.send_replace(pass.clone());
            if let Some(th) = bounds.throttle {
                th.take(rows.max(0) as u64).await;
            }
        }
        pass.tables_done = pass.tables.iter().filter(|p| p.done()).count();
        progress.send_replace(pass.clone());
    }
    Ok(())
}

/// The next slices of table `idx`, one per session pair, compared at once and added to its
/// record; the source rows they held.
async fn round(
    pairs: &[(Client, Client)],
    t: &Table,
    pass: &mut Pass,
    idx: usize,
) -> ReplResult<i64> {
    let tp = &pass.tables[idx];
    let first = tp.slices_done;
    let last = tp.slices.min(first.saturating_add(pairs.len() as u32));
    let reads = (first..last).zip(pairs).map(|(i, (s, g))| {
        let bounds = verify::slice_bounds(&tp.buckets, tp.planned, i, tp.slices);
        verify::check_slice(s, g, t, &tp.buckets, bounds)
    });
    let checks = try_join_all(reads).await?;
    let mut room = MAX_STORED_MISMATCHES.saturating_sub(pass.stored());
    let tp = &mut pass.tables[idx];
    let mut rows = 0;
    for c in checks {
        rows += c.source_rows;
        tp.source_rows += c.source_rows;
        tp.target_rows += c.target_rows;
        tp.mismatches_total += c.mismatches.len() as u64;
        let keep = c.mismatches.len().min(room);
        room -= keep;
        tp.mismatches.extend(c.mismatches.into_iter().take(keep));
    }
    tp.slices_done = last;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(n: i64) -> TablePass {
        TablePass {
            table: "public.t".into(),
            buckets: Buckets::Range {
                key: "id".into(),
                min: 1,
                step: 10,
            },
            planned: n,
            slices: 3,
            slices_done: 0,
            source_rows: 0,
            target_rows: 0,
            mismatches: Vec::new(),
            mismatches_total: 0,
        }
    }

    #[test]
    fn slices_cover_every_key_once_and_the_ends_are_open() {
        let tp = range(250);
        let b: Vec<_> = (0..tp.slices)
            .map(|i| verify::slice_bounds(&tp.buckets, tp.planned, i, tp.slices))
            .collect();
        assert_eq!(
            b[0].0, None,
            "keys below the planned minimum belong to the first"
        );
        assert_eq!(
            b[2].1, None,
            "keys above the planned maximum belong to the last"
        );
        assert_eq!(b[0].1, b[1].0);
        assert_eq!(b[1].1, b[2].0);
        // 250 buckets in 3 slices: 84 buckets of 10 keys each from key 1.
        assert_eq!(b[0].1, Some(1 + 84 * 10));
        assert_eq!(verify::slice_count(&tp.buckets, 250, 100), 3);
        assert_eq!(verify::slice_count(&tp.buckets, 1, 100), 1);
        let hash = Buckets::Hash { n: 900 };
        assert_eq!(
            verify::slice_count(&hash, 900, 100),
            1,
            "a hash plan is read whole"
        );
        assert_eq!(verify::slice_bounds(&hash, 900, 0, 1), (None, None));
    }

    #[test]
    fn a_record_keeps_its_mismatches_only_when_it_holds_them_all() {
        let mut tp = range(10);
        tp.mismatches_total = 2;
        assert!(!tp.complete(), "one counted but not kept");
        tp.mismatches.push(ChunkMismatch {
            bucket: 0,
            lo: Some(1),
            hi: Some(11),
            source_rows: 1,
            target_rows: 0,
        });
        tp.mismatches_total = 1;
        assert!(tp.complete());
        assert_eq!(tp.check().differing(), vec![0]);
    }
}
