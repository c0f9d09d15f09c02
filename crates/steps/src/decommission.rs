//! Step 10: after the rollback window. Stops the worker and removes capture objects from both
//! sides, retires the Heroku DNS record (weight 0, then deleted), scales the Heroku dynos to
//! 0 (maintenance mode stays on; the app and its add-ons are left for a person to delete),
//! writes the final report, completes the migration and releases the app's lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::{
    endpoint::Backend,
    state::{Outcome, Phase},
};
use ferry_heroku::FormationUpdate;
use serde::{Deserialize, Serialize};

use crate::{
    Deps, MigrationRef, StepResult,
    facts::{self, CutoverFact},
    replication,
};

/// The final report item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The migration.
    pub migration_id: String,
    /// The Heroku app.
    pub app: String,
    /// When the migration started.
    pub started_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
    /// The cutover's write freeze, in milliseconds.
    pub freeze_ms: Option<i64>,
    /// How long the endpoint held the app's queries at the cutover, in milliseconds (proxy
    /// mode).
    #[serde(default)]
    pub paused_ms: Option<i64>,
    /// Rows copied by the snapshot.
    pub rows_copied: u64,
    /// Worker restarts.
    pub worker_restarts: u32,
    /// Heroku Redis queue jobs the decommission's last hand-over moved to ElastiCache (spec
    /// `redis`; the worker moved the others while it ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_jobs_handed_over: Option<u64>,
}

/// Output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Whether a worker was stopped.
    pub worker_stopped: bool,
    /// Whether the Heroku record was deleted now (false: already gone).
    pub heroku_record_removed: bool,
    /// Process types scaled to 0.
    pub dynos_scaled_to_zero: Vec<String>,
    /// The report.
    pub report: Report,
}

/// Runs the decommission.
pub async fn run(deps: &Deps, input: MigrationRef) -> StepResult<Output> {
    let id = &input.migration_id;
    let done = deps.record(id).await?;
    if done.phase == Phase::Completed
        && let Some(report) = facts::get::<Report>(deps.store.as_ref(), id, facts::REPORT).await?
    {
        // A retry after it completed: report again, touch nothing.
        return Ok(Output {
            worker_stopped: false,
            heroku_record_removed: false,
            dynos_scaled_to_zero: Vec::new(),
            report,
        });
    }
    let rec = deps.enter(id, Phase::CleaningUp).await?;
    let spec = &rec.spec;
    let store = deps.store.as_ref();
    let progress = store.progress(id).await?;
    let worker: Option<facts::WorkerFact> = facts::get(store, id, facts::WORKER).await?;
    let worker_stopped = replication::stop_worker(deps, id, Duration::from_secs(60)).await?;
    let heroku_record_removed = deps.router.retire_heroku(&spec.traffic).await?;
    let heroku = deps.heroku(spec).await?;
    let formation = heroku.formation(&spec.heroku.app).await?;
    let updates: Vec<FormationUpdate> = formation
        .iter()
        .filter(|f| f.quantity > 0)
        .map(|f| FormationUpdate {
            process_type: f.process_type.clone(),
            quantity: 0,
            size: None,
        })
        .collect();
    if !updates.is_empty() {
        heroku.scale(&spec.heroku.app, &updates).await?;
    }
    // Heroku's dynos are down and the worker stopped: what is left in Heroku Redis's queues
    // (jobs pushed back by workers as they shut down) moves to ElastiCache, each once.
    let redis_jobs_handed_over =
        match crate::redis_switch::open(deps, spec, Backend::Source).await? {
            Some(mut r) => Some(r.hand_over().await?),
            None => None,
        };
    let cutover: Option<CutoverFact> = facts::get(store, id, facts::CUTOVER).await?;
    let freeze_ms = cutover.as_ref().and_then(CutoverFact::freeze_ms);
    let paused_ms = cutover.as_ref().and_then(CutoverFact::paused_ms);
    let report = facts::put_once(
        store,
        id,
        facts::REPORT,
        &Report {
            migration_id: id.clone(),
            app: spec.heroku.app.clone(),
            started_at: rec.created_at,
            completed_at: Utc::now(),
            freeze_ms,
            paused_ms,
            rows_copied: progress.map_or(0, |p| p.rows_copied),
            worker_restarts: worker.map_or(0, |w| w.restarts),
            redis_jobs_handed_over,
        },
    )
    .await?;
    deps.audit(
        id,
        "decommission",
        "complete",
        Outcome::Succeeded,
        serde_json::to_value(&report).unwrap_or_default(),
        Some("decommission/complete".into()),
    )
    .await?;
    deps.enter(id, Phase::Completed).await?;
    store.release_app_lock(&spec.heroku.app, id).await?;
    Ok(Output {
        worker_stopped,
        heroku_record_removed,
        dynos_scaled_to_zero: updates.into_iter().map(|u| u.process_type).collect(),
        report,
    })
}
