//! `ferry-worker`: the long-lived replication worker, run as an ECS task with the migration id.
//! It reads the migration's spec from the state store, the database URLs from SSM, and runs the
//! replicator until told to stop.
//!
//! Environment: `FERRY_MIGRATION_ID`, `FERRY_STATE_TABLE` (required); `FERRY_PG_BIN` (pg_dump
//! and psql of the target's major version), `FERRY_WORKER_ID`, `FERRY_HEARTBEAT_MS`,
//! `FERRY_BATCH_SIZE`, `FERRY_ROWS_PER_CHUNK`, `FERRY_SCHEMA_CHECK_MS`, `FERRY_COMMAND_POLL_MS`
//! (optional, set from the template's `Worker*` parameters; commands are read every 100 ms
//! so a cutover's drain starts at once),
//! `FERRY_HEROKU_API_URL` (the Platform API, default api.heroku.com: read when the source
//! refuses the stored login); AWS settings as usual (`AWS_REGION`, `AWS_ENDPOINT_URL` …).
//!
//! With a `redis` section in the spec it also runs the Redis live sync for its lifetime
//! ([`redis`]), progress in the `redis` fact.
//!
//! A lost connection or a refused login does not end the process: the run starts again (at
//! most [`MAX_RUNS`] times) with the URLs read again, and a refused source login is replaced
//! by the Heroku app's current one ([`rotation`]).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use ferry_core::{MigrationStore, ParamStore, StepErrorName, spec::CaptureMode};
use ferry_pg::PgUrl;
use ferry_replicator::{
    engine::Config,
    runner::{self, Exit, RunnerConfig},
    schema::Tools,
};

mod redis;
mod rotation;

/// Runs of the replicator in one process (after a lost connection or a refused login).
const MAX_RUNS: u32 = 4;

/// This worker's migration's spec, read now.
async fn current_spec(store: &dyn MigrationStore) -> anyhow::Result<ferry_core::MigrationSpec> {
    let migration_id = var("FERRY_MIGRATION_ID")?;
    Ok(store
        .migration(&migration_id)
        .await
        .with_context(|| format!("read migration {migration_id}"))?
        .spec)
}

/// Logs in to the source with the stored URL; when the login is refused, takes Heroku's
/// current one (see [`rotation`]). Other connection errors are left to the run.
async fn ensure_source_login(
    store: &dyn MigrationStore,
    params: &dyn ParamStore,
) -> anyhow::Result<()> {
    let spec = current_spec(store).await?;
    let stale = PgUrl::parse(&params.get(&spec.source.database_url_param).await?)
        .context("source.database_url_param holds an unusable URL")?;
    match stale.connect().await {
        Err(e) if e.is_auth_failure() => {
            match rotation::refresh_source(store, params, &spec, &stale).await? {
                Some(_) => Ok(()),
                None => bail!(
                    "the source refused the login in {} and the Heroku app's config vars hold no other login for that database: {e}",
                    spec.source.database_url_param
                ),
            }
        }
        _ => Ok(()),
    }
}

/// Before each run: the target's current password, when RDS manages it (a run that ended on a
/// refused login starts again with the rotated one).
async fn ensure_target_password(
    store: &dyn MigrationStore,
    params: &dyn ParamStore,
    secrets: &dyn ferry_core::SecretStore,
) -> anyhow::Result<()> {
    let spec = current_spec(store).await?;
    rotation::follow_target_secret(store, params, secrets, &spec).await?;
    Ok(())
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set; the task definition must pass it"))
}

fn var_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

/// A knob that must be above 0 (the template's parameters bound them; a bad value names the
/// variable).
fn positive<T: std::str::FromStr + PartialOrd + Default>(
    name: &str,
    default: T,
) -> anyhow::Result<T> {
    let v: T = var_or(name, default)?;
    if v <= T::default() {
        bail!("{name} must be above 0; set it through the template's Worker* parameters");
    }
    Ok(v)
}

async fn config(
    store: &dyn MigrationStore,
    params: &dyn ParamStore,
) -> anyhow::Result<RunnerConfig> {
    let migration_id = var("FERRY_MIGRATION_ID")?;
    let record = store
        .migration(&migration_id)
        .await
        .with_context(|| format!("read migration {migration_id}"))?;
    let spec = record.spec;
    // Read the URLs now, not from a cache: Heroku rotates credentials.
    let source = params.get(&spec.source.database_url_param).await?;
    let target = params.get(&spec.target.database_url_param).await?;
    let source =
        PgUrl::parse(&source).context("source.database_url_param holds an unusable URL")?;
    let target =
        PgUrl::parse(&target).context("target.database_url_param holds an unusable URL")?;
    let capture = capture_mode(spec.replication.capture, &source).await?;
    let heartbeat = Duration::from_millis(var_or("FERRY_HEARTBEAT_MS", 5_000)?);
    if heartbeat.is_zero() {
        bail!("FERRY_HEARTBEAT_MS must be above 0");
    }
    Ok(RunnerConfig {
        metrics: std::sync::Arc::new(ferry_core::metrics::Stdout),
        drain_check: (spec.cutover.exact_check_seconds > 0)
            .then(|| Duration::from_secs(u64::from(spec.cutover.exact_check_seconds))),
        worker_id: std::env::var("FERRY_WORKER_ID")
            .unwrap_or_else(|_| format!("pid-{}", std::process::id())),
        migration_id,
        heartbeat,
        // The cutover waits for the drain command inside the write freeze: read commands often.
        command_poll: heartbeat.min(Duration::from_millis(positive(
            "FERRY_COMMAND_POLL_MS",
            100,
        )?)),
        idle: Duration::from_millis(100),
        schema_check: Duration::from_millis(positive("FERRY_SCHEMA_CHECK_MS", 30_000)?),
        replicator: Config {
            source,
            target,
            tools: Tools {
                bin_dir: PathBuf::from(
                    std::env::var("FERRY_PG_BIN")
                        .unwrap_or_else(|_| "/usr/lib/postgresql/17/bin".into()),
                ),
            },
            parallelism: spec.replication.parallelism as usize,
            rows_per_chunk: positive("FERRY_ROWS_PER_CHUNK", 250_000)?,
            batch_size: positive("FERRY_BATCH_SIZE", 5_000)?,
            capture,
            max_copy_bytes_per_second: spec
                .replication
                .max_copy_mb_per_second
                .map(|mb| u64::from(mb) * 1_000_000),
            logical_transport: spec.replication.logical_transport,
        },
    })
}

/// The spec's capture mode, with `auto` resolved the way preflight resolves it. A worker
/// restarted mid-run finds the mode already in use and keeps it.
async fn capture_mode(requested: CaptureMode, source: &PgUrl) -> anyhow::Result<CaptureMode> {
    if requested != CaptureMode::Auto {
        return Ok(requested);
    }
    let client = source.connect().await?;
    let has_log = ferry_replicator::capture::trigger::is_installed(&client).await?;
    let slot = ferry_replicator::capture::logical::slot_name(source.dbname().unwrap_or("postgres"));
    let has_slot = ferry_replicator::capture::logical::slot_exists(&client, &slot).await?;
    Ok(if has_log {
        CaptureMode::Trigger
    } else if has_slot || logical_possible(&client).await? {
        CaptureMode::Logical
    } else {
        CaptureMode::Trigger
    })
}

async fn logical_possible(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level') = 'logical' AND (rolreplication OR rolsuper)
               FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    exit_on_sigterm();
    let aws = ferry_aws::sdk_config().await;
    let table = match var("FERRY_STATE_TABLE") {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let store = std::sync::Arc::new(ferry_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        table,
    ));
    let params = ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&aws));
    // Redis (spec `redis`) syncs beside the database for the process's lifetime.
    let redis = match var("FERRY_MIGRATION_ID") {
        Ok(id) => match redis::start(store.clone(), &params, &id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot start the Redis live sync: {e:#}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let verifier = match var("FERRY_MIGRATION_ID") {
        Ok(id) => tokio::spawn(verify_jobs(store.clone(), params.clone(), id)),
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let secrets = ferry_aws::SecretsManagerStore::new(&aws);
    let follower = match var("FERRY_MIGRATION_ID") {
        Ok(id) => tokio::spawn(follow_target_password(
            store.clone(),
            params.clone(),
            secrets.clone(),
            id,
        )),
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let code = replicate(store.as_ref(), &params, &secrets).await;
    follower.abort();
    verifier.abort();
    if let Some(r) = redis {
        r.stop().await;
    }
    code
}

/// Runs the Verify step's jobs for the process's lifetime (see
/// [`ferry_replicator::verify_job`]): Verify compares in this task, which has no time limit,
/// not in a Lambda.
async fn verify_jobs(
    store: std::sync::Arc<ferry_aws::DynamoStore>,
    params: ferry_aws::SsmParams,
    migration_id: String,
) {
    let parallelism = match store.migration(&migration_id).await {
        Ok(rec) => rec.spec.replication.parallelism,
        Err(e) => {
            tracing::error!("verify jobs: read migration {migration_id}: {e}");
            return;
        }
    };
    let worker = ferry_replicator::verify_job::Worker {
        migration_id: migration_id.clone(),
        worker_id: std::env::var("FERRY_WORKER_ID")
            .unwrap_or_else(|_| format!("pid-{}", std::process::id())),
        sessions: parallelism.clamp(1, 32) as usize,
        poll: Duration::from_secs(1),
    };
    let urls = || {
        let (store, params, id) = (store.clone(), params.clone(), migration_id.clone());
        async move { database_urls(store.as_ref(), &params, &id).await }
    };
    ferry_replicator::verify_job::serve(store.as_ref(), &worker, urls).await;
}

/// Follows a target password that RDS rotates in Secrets Manager, for the process's lifetime
/// (see [`rotation::follow_target_secret`]); a failed look is logged and tried again.
async fn follow_target_password(
    store: std::sync::Arc<ferry_aws::DynamoStore>,
    params: ferry_aws::SsmParams,
    secrets: ferry_aws::SecretsManagerStore,
    migration_id: String,
) {
    let spec = match store.migration(&migration_id).await {
        Ok(rec) if rec.spec.target.password_secret.is_some() => rec.spec,
        Ok(_) => return,
        Err(e) => {
            tracing::error!("target password: read migration {migration_id}: {e}");
            return;
        }
    };
    loop {
        tokio::time::sleep(rotation::TARGET_SECRET_EVERY).await;
        if let Err(e) =
            rotation::follow_target_secret(store.as_ref(), &params, &secrets, &spec).await
        {
            tracing::warn!("cannot read the target's password secret: {e:#}");
        }
    }
}

/// The source and target URLs, read now (Heroku rotates credentials).
async fn database_urls(
    store: &dyn MigrationStore,
    params: &dyn ParamStore,
    migration_id: &str,
) -> ferry_replicator::ReplResult<(PgUrl, PgUrl)> {
    let unusable = |what: &str, e: &dyn std::fmt::Display| {
        ferry_replicator::ReplError::State(format!("{what}: {e}"))
    };
    let spec = store
        .migration(migration_id)
        .await
        .map_err(|e| unusable("read the migration", &e))?
        .spec;
    let mut out = Vec::new();
    for param in [
        &spec.source.database_url_param,
        &spec.target.database_url_param,
    ] {
        let raw = params
            .get(param)
            .await
            .map_err(|e| unusable(&format!("read {param}"), &e))?;
        out.push(
            PgUrl::parse(&raw)
                .map_err(|e| unusable(&format!("{param} holds an unusable URL"), &e))?,
        );
    }
    let target = out.pop().expect("two URLs");
    let source = out.pop().expect("two URLs");
    Ok((source, target))
}

/// ECS stops a task with SIGTERM (SIGKILL 30 s later), and the worker is the container's
/// PID 1, which has no default action for it: without a handler it would go on applying beside
/// its successor for those 30 s. It exits at once instead: every batch commits with its
/// position, so stopping anywhere is as safe as the kill -9 the worker tests survive, and the
/// target's writer lock (ferry_replicator::fence) goes with the session.
fn exit_on_sigterm() {
    tokio::spawn(async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
                tracing::warn!(
                    "SIGTERM: exiting now; the next worker resumes from the target's position"
                );
                std::process::exit(0);
            }
            Err(e) => tracing::error!("cannot handle SIGTERM: {e}"),
        }
    });
}

/// Runs the database replication until it is told to stop, restarting it in this process
/// after a lost connection or a refused login.
async fn replicate(
    store: &ferry_aws::DynamoStore,
    params: &ferry_aws::SsmParams,
    secrets: &ferry_aws::SecretsManagerStore,
) -> ExitCode {
    for attempt in 1..=MAX_RUNS {
        if let Err(e) = ensure_source_login(store, params).await {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::from(2);
        }
        if let Err(e) = ensure_target_password(store, params, secrets).await {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::from(2);
        }
        let cfg = match config(store, params).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot start: {e:#}");
                return ExitCode::from(2);
            }
        };
        let span =
            tracing::info_span!("worker", migration_id = %cfg.migration_id, step = "replicate");
        let _guard = span.enter();
        tracing::info!(source = %cfg.replicator.source.redacted(), target = %cfg.replicator.target.redacted(), attempt, "starting");
        match runner::run(store, cfg).await {
            Ok(Exit::Stopped { cleaned_up }) => {
                tracing::info!(cleaned_up, "stopped on command");
                return ExitCode::SUCCESS;
            }
            Ok(Exit::Superseded) => {
                tracing::warn!("a newer worker took over; exiting");
                return ExitCode::SUCCESS;
            }
            // A lost connection or a refused login (Heroku maintenance, failover, credential
            // rotation): start again in this process, with the URLs read again (and the
            // source's login refreshed from Heroku if it is refused).
            Err(e)
                if attempt < MAX_RUNS
                    && (e.is_auth_failure()
                        || e.step_error_name() == "Ferry.Retryable.PgConnect") =>
            {
                tracing::warn!(
                    error_name = e.step_error_name(),
                    attempt,
                    "{e}; starting again"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                tracing::error!(error_name = e.step_error_name(), "{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::FAILURE
}
