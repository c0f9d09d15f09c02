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
//!
//! The comparison runs in parallel: further session pairs import the two exported snapshots
//! (`SET TRANSACTION SNAPSHOT`), so every session reads the same states, and take tables from
//! one queue.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

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
    urls: (PgUrl, PgUrl),
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("drain_check::Sessions")
    }
}

impl Sessions {
    /// Connects one session to each side, with the comparison's output settings pinned.
    pub async fn connect(source_url: &PgUrl, target_url: &PgUrl) -> ReplResult<Self> {
        let (source, target) = tokio::try_join!(source_url.connect(), target_url.connect())?;
        verify::normalise_session(&source).await?;
        verify::normalise_session(&target).await?;
        Ok(Self {
            source,
            target,
            urls: (source_url.clone(), target_url.clone()),
        })
    }

    /// Takes a snapshot on each side at once (a repeatable-read, read-only transaction whose
    /// first statement exports its snapshot). Call once the drain is complete, before the
    /// drain is reported: then neither side can have moved yet.
    pub async fn take(self) -> ReplResult<Snapshots> {
        let started = Instant::now();
        let sql = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT pg_export_snapshot()";
        let (source_id, target_id) = tokio::try_join!(
            async {
                exported(self.source.simple_query(sql).await)
                    .map_err(ReplError::sql("take the source's snapshot"))
            },
            async {
                exported(self.target.simple_query(sql).await)
                    .map_err(ReplError::sql("take the target's snapshot"))
            }
        )?;
        Ok(Snapshots {
            source: self.source,
            target: self.target,
            urls: self.urls,
            ids: (source_id, target_id),
            taken_at: Utc::now(),
            took: started.elapsed(),
        })
    }
}

/// The snapshot name `SELECT pg_export_snapshot()` returned.
fn exported(
    reply: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
) -> Result<String, tokio_postgres::Error> {
    Ok(reply?
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

/// The two snapshots, held until the comparison ends.
pub struct Snapshots {
    source: Client,
    target: Client,
    urls: (PgUrl, PgUrl),
    /// The exported snapshots' names (source, target), which further sessions import.
    ids: (String, String),
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
    /// A further session pair reading the same snapshots.
    async fn join(&self) -> ReplResult<(Client, Client)> {
        let (source, target) = tokio::try_join!(self.urls.0.connect(), self.urls.1.connect())?;
        for (client, id, side) in [
            (&source, &self.ids.0, "source"),
            (&target, &self.ids.1, "target"),
        ] {
            verify::normalise_session(client).await?;
            client
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                    ferry_pg::catalog::quote_literal(id)
                ))
                .await
                .map_err(ReplError::sql(format!("import the {side}'s snapshot")))?;
        }
        Ok((source, target))
    }

    /// Compares every capture unit of `tables` through the snapshots with up to `sessions`
    /// session pairs (fewer when a pair cannot connect), reporting each table on `out`, until
    /// done or `limit` has passed; then releases both snapshots.
    pub async fn compare(
        self,
        tables: Vec<Table>,
        limit: Duration,
        sessions: usize,
        out: mpsc::Sender<Report>,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pairs = Vec::new();
        for _ in 1..sessions.max(1) {
            match tokio::time::timeout_at(deadline, self.join()).await {
                Ok(Ok(p)) => pairs.push(p),
                Ok(Err(e)) => {
                    tracing::warn!("exact comparison: one session pair fewer: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        pairs.push((self.source, self.target));
        let queue: Arc<Mutex<VecDeque<Table>>> = Arc::new(Mutex::new(
            tables.into_iter().filter(|t| t.is_capture_unit()).collect(),
        ));
        let work = futures_util::future::try_join_all(
            pairs
                .iter()
                .map(|(s, t)| compare_from(s, t, queue.clone(), out.clone())),
        );
        let end = match tokio::time::timeout_at(deadline, work).await {
            Err(_) => Report::TimedOut,
            Ok(Err(Some(e))) => Report::Failed(e.to_string()),
            // The receiver went away: nobody to tell.
            Ok(Err(None)) => return,
            Ok(Ok(_)) => Report::Done,
        };
        let _ = out.send(end).await;
        // Dropping the sessions ends every transaction: the snapshots are released.
    }
}

/// One session pair's share: tables from `queue` until it is empty, each reported on `out`.
/// `Err(None)` when the receiver is gone.
async fn compare_from(
    source: &Client,
    target: &Client,
    queue: Arc<Mutex<VecDeque<Table>>>,
    out: mpsc::Sender<Report>,
) -> Result<(), Option<ReplError>> {
    loop {
        let next = queue.lock().map_err(|_| None)?.pop_front();
        let Some(t) = next else {
            return Ok(());
        };
        let r = verify::compare_exact(source, target, &t, verify::ROWS_PER_BUCKET)
            .await
            .map_err(Some)?;
        let report = Report::Table {
            rows: r.source_rows,
            difference: (!r.keys.is_empty() || r.differing_buckets > 0).then(|| DrainDifference {
                table: r.table.clone(),
                source_rows: r.source_rows,
                target_rows: r.target_rows,
                keys: r.keys.clone(),
            }),
        };
        out.send(report).await.map_err(|_| None)?;
    }
}
