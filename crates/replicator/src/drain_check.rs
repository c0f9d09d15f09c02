//! The exact comparison of a drained freeze. Inside the cutover's (or rollback's) write
//! freeze, once everything up to the frozen position is applied, nothing writes either side's
//! tables but the worker, which has stopped: both sides hold the same rows by construction.
//! The worker then takes a snapshot on each side (two sessions connected beforehand, one
//! round trip each, in parallel) and, after the freeze, compares every table through them —
//! checksums per bucket, then keys — with no tolerance at all.
//!
//! Holding the snapshots has a cost: on each server, VACUUM cannot remove row versions that
//! died after the snapshot was taken until it is released, so on the new primary every
//! update made meanwhile leaves one dead version behind (bloat ≈ update rate × time held).
//! The comparison is bounded in time for that reason (see [`Snapshots::compare`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_core::state::DrainDifference;
use ferry_pg::{PgUrl, catalog::Table};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::{
    error::{ReplError, ReplResult},
    verify,
};

/// Two sessions connected ahead of the drain (outside the freeze).
pub struct Sessions {
    source: Client,
    target: Client,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("drain_check::Sessions")
    }
}

impl Sessions {
    /// Connects one session to each side, with the comparison's output settings pinned.
    pub async fn connect(source: &PgUrl, target: &PgUrl) -> ReplResult<Self> {
        let (source, target) = tokio::try_join!(source.connect(), target.connect())?;
        verify::normalise_session(&source).await?;
        verify::normalise_session(&target).await?;
        Ok(Self { source, target })
    }

    /// Takes a snapshot on each side at once (a repeatable-read, read-only transaction whose
    /// first statement exports its snapshot). Call once the drain is complete, before the
    /// drain is reported: then neither side can have moved yet.
    pub async fn take(self) -> ReplResult<Snapshots> {
        let started = Instant::now();
        let sql = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT pg_export_snapshot()";
        tokio::try_join!(
            async {
                self.source
                    .simple_query(sql)
                    .await
                    .map_err(ReplError::sql("take the source's snapshot"))
            },
            async {
                self.target
                    .simple_query(sql)
                    .await
                    .map_err(ReplError::sql("take the target's snapshot"))
            }
        )?;
        Ok(Snapshots {
            source: self.source,
            target: self.target,
            taken_at: Utc::now(),
            took: started.elapsed(),
        })
    }
}

/// The two snapshots, held until the comparison ends.
pub struct Snapshots {
    source: Client,
    target: Client,
    /// When they were taken.
    pub taken_at: DateTime<Utc>,
    /// How long taking them took.
    pub took: Duration,
}

/// What the comparison reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// One more table compared.
    Table {
        /// Rows on the source side.
        rows: i64,
        /// Set when it differed.
        difference: Option<DrainDifference>,
    },
    /// Every table compared.
    Done,
    /// Stopped at the time limit.
    TimedOut,
    /// A query failed.
    Failed(String),
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("taken_at", &self.taken_at)
            .field("took", &self.took)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Compares every capture unit of `tables` through the snapshots, reporting each table on
    /// `out`, until done or `limit` has passed; then releases both snapshots.
    pub async fn compare(self, tables: Vec<Table>, limit: Duration, out: mpsc::Sender<Report>) {
        let deadline = tokio::time::Instant::now() + limit;
        for t in tables.iter().filter(|t| t.is_capture_unit()) {
            let one = verify::compare_exact(&self.source, &self.target, t, verify::ROWS_PER_BUCKET);
            let report = match tokio::time::timeout_at(deadline, one).await {
                Err(_) => {
                    let _ = out.send(Report::TimedOut).await;
                    return;
                }
                Ok(Err(e)) => {
                    let _ = out.send(Report::Failed(e.to_string())).await;
                    return;
                }
                Ok(Ok(r)) => Report::Table {
                    rows: r.source_rows,
                    difference: (!r.keys.is_empty() || r.differing_buckets > 0).then(|| {
                        DrainDifference {
                            table: r.table.clone(),
                            source_rows: r.source_rows,
                            target_rows: r.target_rows,
                            keys: r.keys.clone(),
                        }
                    }),
                },
            };
            if out.send(report).await.is_err() {
                return;
            }
        }
        let _ = out.send(Report::Done).await;
        // Dropping the sessions ends both transactions: the snapshots are released.
    }
}
