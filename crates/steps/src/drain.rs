//! The worker's drain, which the cutover (forward) and the rollback (reverse) both wait on: a
//! leaf, so neither imports the other's module for it.

use chrono::Utc;

use crate::{Deps, StepResult};

/// Commands the worker to apply every change up to `position` (waking it through the source,
/// `ferry_pg::wake`) and waits at most `limit` for
/// its heartbeat to say so (that command acknowledged, `drained_to` at `position`), polling
/// every `drain_poll`: `Err(changes still waiting)` when it has not. The cutover's forward
/// drain and the rollback's reverse one; `between` runs after the command is sent (a
/// rehearsal fault).
pub(crate) async fn drain_to<F>(
    deps: &Deps,
    rep: &ferry_replicator::engine::Replicator,
    id: &str,
    position: &str,
    limit: std::time::Duration,
    by: &str,
    between: F,
) -> StepResult<Result<(), u64>>
where
    F: std::future::Future<Output = StepResult<()>>,
{
    let store = deps.store.as_ref();
    let cmd = store
        .send_command(
            id,
            ferry_core::state::WorkerCommand::Drain {
                until: Some(position.to_string()),
            },
            by,
            Utc::now(),
        )
        .await?;
    // The command is stored; the worker hears of it at once instead of at its next poll (a
    // lost wake-up costs only that poll).
    if let Err(e) = rep.wake_worker(id).await {
        tracing::warn!(error = %e, "could not wake the worker; it reads the command at its next poll");
    }
    between.await?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let p = store.progress(id).await?;
        if p.as_ref().is_some_and(|p| {
            p.acked_command >= cmd.seq && p.drained_to.as_deref() == Some(position)
        }) {
            return Ok(Ok(()));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Err(p.and_then(|p| p.lag_changes).unwrap_or(0)));
        }
        tokio::time::sleep(deps.settings.drain_poll).await;
    }
}
