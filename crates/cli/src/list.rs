//! `ferry list`: the migrations in the state table, newest first.

use ferry_core::MigrationStore;

use crate::{Output, fail::Code};

/// `ferry list`.
pub async fn run(output: Output) -> anyhow::Result<Code> {
    let aws = crate::session::aws().await;
    let store = crate::session::store(&aws)?;
    let records = store.migrations().await?;
    let mut rows = Vec::new();
    for r in &records {
        let progress = store.progress(&r.migration_id).await?;
        rows.push(serde_json::json!({
            "migration_id": r.migration_id,
            "app": r.app,
            "phase": r.phase,
            "started": r.created_at,
            "updated": r.updated_at,
            "execution_arn": r.execution_arn,
            "worker_error": progress.as_ref().and_then(|p| p.error_name.clone()),
            "lag_seconds": progress.as_ref().and_then(|p| p.lag_seconds),
        }));
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Code::Done);
    }
    if records.is_empty() {
        println!("no migrations in {}", store.table());
        return Ok(Code::Done);
    }
    println!(
        "{:<32} {:<24} {:<26} {:<20} note",
        "MIGRATION", "APP", "PHASE", "UPDATED (UTC)"
    );
    for (r, row) in records.iter().zip(&rows) {
        let note = match (row["worker_error"].as_str(), row["lag_seconds"].as_f64()) {
            (Some(e), _) => e.to_string(),
            (None, Some(l)) if !r.phase.is_final() => format!("lag {l:.1} s"),
            _ => String::new(),
        };
        println!(
            "{:<32} {:<24} {:<26} {:<20} {note}",
            r.migration_id,
            r.app,
            r.phase.as_str(),
            r.updated_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(Code::Done)
}
