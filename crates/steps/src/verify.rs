//! Step 4: compare source and target table by table (row counts and order-independent
//! checksums per key range). Writes keep arriving while it runs, so a table that differs is
//! compared again after the worker has had time to apply what was in flight; only a
//! difference that persists fails the migration, naming the tables and key ranges.

use std::time::Duration;

use ferry_core::state::{Outcome, Phase};
use ferry_pg::catalog;
use ferry_replicator::{
    capture::trigger,
    verify::{self, TableCheck},
};
use serde::{Deserialize, Serialize};

use crate::{Deps, MigrationRef, StepError, StepResult};

/// Rows per checksum chunk.
const ROWS_PER_CHUNK: i64 = 100_000;

/// Output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Tables compared.
    pub tables: usize,
    /// Rows on the source, summed.
    pub source_rows: i64,
    /// Tables compared a second (or third) time because rows were in flight.
    pub rechecked: Vec<String>,
    /// Rounds run.
    pub rounds: u32,
    /// Tables whose last differences all have captured changes still waiting to be applied
    /// (rows in flight under live writes): tolerated, named here.
    pub in_flight: Vec<String>,
}

/// Runs the verification. `settle` is the pause before a recheck (the lag limit if unset).
pub async fn run(deps: &Deps, input: MigrationRef, settle: Option<Duration>) -> StepResult<Output> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.enter(id, Phase::Verifying).await?;
    let spec = &rec.spec;
    let (source_url, target_url) = deps.urls(spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    let tables = catalog::tables(&source).await?;
    let settle = settle.unwrap_or(Duration::from_secs(u64::from(
        spec.replication.max_lag_seconds.max(1),
    )));

    // Under live writes the newest rows are always in flight, so a first difference is looked
    // at row by row (tables with an integer key): the differing rows are compared again after
    // a pause; rows that converged were in flight, rows still different with a change waiting
    // in the capture log are in flight, anything else is real. Tables without an integer key
    // are compared again whole, and tolerated only with changes waiting.
    let checks = verify::verify(&source, &target, &tables, ROWS_PER_CHUNK).await?;
    let source_rows: i64 = checks.iter().map(|c| c.source_rows).sum();
    let mut rounds = 1;
    let mut rechecked = Vec::new();
    let mut in_flight: Vec<String> = Vec::new();
    let mut last: Vec<TableCheck> = Vec::new();
    for c in checks.into_iter().filter(|c| !c.equal()) {
        rechecked.push(c.table.clone());
        let Some(table) = tables.iter().find(|t| t.display_name() == c.table) else {
            last.push(c);
            continue;
        };
        let ranges: Option<Vec<(i64, i64)>> =
            c.mismatches.iter().map(|m| Some((m.lo?, m.hi?))).collect();
        let converged = match (table.integer_key(), ranges) {
            (Some(_), Some(ranges)) if !ranges.is_empty() => {
                let mut keys = Vec::new();
                for r in &ranges {
                    keys.extend(verify::differing_keys(&source, &target, table, *r, None).await?);
                }
                tokio::time::sleep(settle).await;
                rounds = rounds.max(2);
                let still =
                    verify::differing_keys(&source, &target, table, (0, 0), Some(&keys)).await?;
                still.is_empty() || trigger::pending(&source, &c.table, Some(&still), None).await?
            }
            _ => {
                let mut ok = false;
                for round in 2..=3 {
                    tokio::time::sleep(settle).await;
                    rounds = rounds.max(round);
                    let again = verify::verify(
                        &source,
                        &target,
                        std::slice::from_ref(table),
                        ROWS_PER_CHUNK,
                    )
                    .await?;
                    if again.iter().all(TableCheck::equal) {
                        ok = true;
                        break;
                    }
                }
                ok || pending_for(&source, &c).await?
            }
        };
        if converged {
            in_flight.push(c.table.clone());
        } else {
            last.push(c);
        }
    }
    let detail = serde_json::json!({
        "tables": tables.iter().filter(|t| t.is_capture_unit()).count(),
        "source_rows": source_rows,
        "rechecked": rechecked,
        "rounds": rounds,
        "in_flight": in_flight,
        "mismatches": last,
    });
    if !last.is_empty() {
        deps.audit(id, "verify", "verify", Outcome::Failed, detail, None)
            .await?;
        return Err(StepError::VerifyMismatch {
            tables: last
                .iter()
                .map(|c| {
                    let ranges: Vec<String> = c
                        .mismatches
                        .iter()
                        .map(|m| match (m.lo, m.hi) {
                            (Some(lo), Some(hi)) => format!("keys [{lo}, {hi})"),
                            _ => "whole table".into(),
                        })
                        .collect();
                    format!(
                        "{} (source {} rows, target {} rows; {})",
                        c.table,
                        c.source_rows,
                        c.target_rows,
                        ranges.join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    deps.audit(id, "verify", "verify", Outcome::Succeeded, detail, None)
        .await?;
    Ok(Output {
        tables: tables.iter().filter(|t| t.is_capture_unit()).count(),
        source_rows,
        rechecked,
        rounds,
        in_flight,
    })
}

/// Whether every differing key range of `check` has captured changes still waiting (trigger
/// capture's log on the source). Without a change log (logical capture) nothing is tolerated.
async fn pending_for(source: &tokio_postgres::Client, check: &TableCheck) -> StepResult<bool> {
    for m in &check.mismatches {
        let range = m.lo.zip(m.hi);
        if !trigger::pending(source, &check.table, None, range).await? {
            return Ok(false);
        }
    }
    Ok(true)
}
