//! Step 4: compare source and target table by table (row counts and order-independent
//! checksums per key range). Writes keep arriving while it runs, so a table that differs is
//! compared again after the worker has had time to apply what was in flight; only a
//! difference that persists fails the migration, naming the tables and key ranges.

use std::time::Duration;

use ferry_core::state::{Outcome, Phase};
use ferry_pg::catalog;
use ferry_replicator::verify::{self, TableCheck};
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
}

/// Runs the verification. `settle` is the pause before a recheck (the lag limit if unset).
pub async fn run(deps: &Deps, input: MigrationRef, settle: Option<Duration>) -> StepResult<Output> {
    let id = &input.migration_id;
    let rec = deps.enter(id, Phase::Verifying).await?;
    let spec = &rec.spec;
    let (source_url, target_url) = deps.urls(spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    let tables = catalog::tables(&source).await?;
    let settle = settle.unwrap_or(Duration::from_secs(u64::from(
        spec.replication.max_lag_seconds.max(1),
    )));

    let mut todo = tables.clone();
    let mut rechecked = Vec::new();
    let mut source_rows = 0;
    let mut rounds = 0;
    let mut last: Vec<TableCheck> = Vec::new();
    while rounds < 3 && !todo.is_empty() {
        if rounds > 0 {
            tokio::time::sleep(settle * rounds).await;
        }
        rounds += 1;
        let checks = verify::verify(&source, &target, &todo, ROWS_PER_CHUNK).await?;
        if rounds == 1 {
            source_rows = checks.iter().map(|c| c.source_rows).sum();
        }
        last = checks.into_iter().filter(|c| !c.equal()).collect();
        todo.retain(|t| last.iter().any(|c| c.table == t.qualified()));
        if rounds > 1 {
            continue;
        }
        rechecked = last.iter().map(|c| c.table.clone()).collect();
    }
    let detail = serde_json::json!({
        "tables": tables.iter().filter(|t| t.is_capture_unit()).count(),
        "source_rows": source_rows,
        "rechecked": rechecked,
        "rounds": rounds,
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
    })
}
