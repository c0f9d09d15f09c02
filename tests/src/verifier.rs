//! Verify's worker side ([`ferry_replicator::verify_job::serve`]) run in the test process, for
//! step tests that start no replication worker: the step asks, this answers, as the worker's
//! job loop does on ECS.

use std::time::Duration;

use ferry_pg::PgUrl;
use ferry_replicator::{ReplError, verify_job};
use ferry_steps::{Deps, MigrationRef, StepResult, verify};

/// Runs the Verify step with a job loop beside it in this process.
pub async fn verify_here(
    deps: &Deps,
    id: &str,
    settle: Option<Duration>,
) -> StepResult<verify::Output> {
    let store = deps.store.clone();
    let params = deps.params.clone();
    let spec = deps.record(id).await?.spec;
    let worker = verify_job::Worker {
        migration_id: id.to_string(),
        worker_id: "test-process".into(),
        sessions: 2,
        poll: Duration::from_millis(100),
    };
    let task = tokio::spawn(async move {
        let urls = || {
            let (params, spec) = (params.clone(), spec.clone());
            async move {
                let url = |param: String| {
                    let params = params.clone();
                    async move {
                        let raw = params
                            .get(&param)
                            .await
                            .map_err(|e| ReplError::State(format!("read {param}: {e}")))?;
                        PgUrl::parse(&raw).map_err(|e| ReplError::State(format!("{param}: {e}")))
                    }
                };
                Ok((
                    url(spec.source.database_url_param.clone()).await?,
                    url(spec.target.database_url_param.clone()).await?,
                ))
            }
        };
        verify_job::serve(store.as_ref(), &worker, urls).await;
    });
    let out = verify::run(
        deps,
        MigrationRef {
            migration_id: id.to_string(),
        },
        settle,
    )
    .await;
    task.abort();
    out
}
