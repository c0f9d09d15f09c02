//! `ferry-endpoint`: the supervisor of one database endpoint task (PgBouncer beside it in the
//! same container). It renders PgBouncer's files from SSM, starts PgBouncer, and carries out
//! the desired state Ferry stores for the app (pause, retarget, resume), reporting each step.
//!
//! Environment (names only; every secret comes from SSM and goes to files readable by this
//! user only):
//! - `FERRY_STATE_TABLE`, `FERRY_ENDPOINT_APP` (the Heroku app), `FERRY_ENDPOINT_SOURCE_PARAM`,
//!   `FERRY_ENDPOINT_TARGET_PARAM` (the migration's database URL parameters),
//!   `FERRY_ENDPOINT_CLIENT_PARAM` (the URL the app fleet uses to reach the endpoint): required;
//! - `FERRY_ENDPOINT_TASK_ID` (default: the ECS task id from the metadata endpoint),
//!   `FERRY_PGBOUNCER` (default `pgbouncer`), `FERRY_ENDPOINT_DIR` (default
//!   `/tmp/ferry-endpoint`), `FERRY_ENDPOINT_LISTEN` (`*`), `FERRY_ENDPOINT_PORT` (6432),
//!   `FERRY_ENDPOINT_TLS_CERT` / `FERRY_ENDPOINT_TLS_KEY` (default: a self-signed pair),
//!   `FERRY_ENDPOINT_POOL_SIZE` (20), `FERRY_ENDPOINT_MAX_CLIENTS` (1000),
//!   `FERRY_ENDPOINT_POLL_MS` (100), `FERRY_ENDPOINT_HEARTBEAT_MS` (1000),
//!   `FERRY_ENDPOINT_REFRESH_S` (60);
//! - the Redis proxy (spec `redis`), all or none: `FERRY_ENDPOINT_REDIS_SOURCE_PARAM`,
//!   `FERRY_ENDPOINT_REDIS_TARGET_PARAM`, `FERRY_ENDPOINT_REDIS_CLIENT_PARAM` (the URL the app
//!   fleet uses as `REDIS_URL`: its password is the clients' login), and
//!   `FERRY_ENDPOINT_REDIS_PORT` (6380), `FERRY_ENDPOINT_REDIS_DATABASES` (the databases the
//!   app may SELECT, comma separated: the migration's `redis.databases`; default the client
//!   URL's own); the same TLS certificate as PgBouncer's;
//! - the control channel (signed desired states sent by the cutover, see
//!   `ferry_core::control`): on when `FERRY_ENDPOINT_CONTROL_KEY_PARAM` names the SSM
//!   SecureString holding its key (32+ characters); `FERRY_ENDPOINT_CONTROL_PORT` (6433),
//!   `FERRY_ENDPOINT_CONTROL_HOST` (the address the control plane reaches the task at;
//!   default the task's private IP from the ECS metadata endpoint).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use ferry_endpoint::supervisor::{self, ControlSettings, RedisSettings, Settings};

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set; the task definition must pass it"))
}

fn var_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

/// The task's metadata (`$ECS_CONTAINER_METADATA_URI_V4/task`).
async fn ecs_task_metadata(what: &str) -> anyhow::Result<serde_json::Value> {
    let base = var("ECS_CONTAINER_METADATA_URI_V4")
        .with_context(|| format!("set {what} when not running on ECS"))?;
    Ok(reqwest::Client::new()
        .get(format!("{base}/task"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .json()
        .await?)
}

/// The ECS task id, from the container metadata endpoint (`…/task` → `TaskARN`).
async fn ecs_task_id() -> anyhow::Result<String> {
    let v = ecs_task_metadata("FERRY_ENDPOINT_TASK_ID").await?;
    let arn = v["TaskARN"]
        .as_str()
        .context("no TaskARN in the task metadata")?;
    Ok(arn.rsplit('/').next().unwrap_or(arn).to_string())
}

/// The task's private IPv4 address (awsvpc networking), from the container metadata endpoint
/// (`…/task` → `Containers[].Networks[].IPv4Addresses[0]`).
async fn ecs_task_ip() -> anyhow::Result<String> {
    let v = ecs_task_metadata("FERRY_ENDPOINT_CONTROL_HOST").await?;
    v["Containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["Networks"].as_array().into_iter().flatten())
        .find_map(|n| n["IPv4Addresses"][0].as_str().map(str::to_string))
        .context(
            "no IPv4 address in the task metadata (the task definition must use awsvpc networking)",
        )
}

async fn settings() -> anyhow::Result<Settings> {
    let task_id = match std::env::var("FERRY_ENDPOINT_TASK_ID") {
        Ok(id) => id,
        Err(_) => ecs_task_id().await?,
    };
    let tls = match (
        std::env::var("FERRY_ENDPOINT_TLS_CERT"),
        std::env::var("FERRY_ENDPOINT_TLS_KEY"),
    ) {
        (Ok(c), Ok(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (Err(_), Err(_)) => None,
        _ => bail!("set both FERRY_ENDPOINT_TLS_CERT and FERRY_ENDPOINT_TLS_KEY, or neither"),
    };
    let ms = |name, default| -> anyhow::Result<Duration> {
        let v: u64 = var_or(name, default)?;
        if v == 0 {
            bail!("{name} must be above 0");
        }
        Ok(Duration::from_millis(v))
    };
    Ok(Settings {
        app: var("FERRY_ENDPOINT_APP")?,
        task_id,
        source_param: var("FERRY_ENDPOINT_SOURCE_PARAM")?,
        target_param: var("FERRY_ENDPOINT_TARGET_PARAM")?,
        client_param: var("FERRY_ENDPOINT_CLIENT_PARAM")?,
        pgbouncer: PathBuf::from(var_or("FERRY_PGBOUNCER", "pgbouncer".to_string())?),
        dir: PathBuf::from(var_or(
            "FERRY_ENDPOINT_DIR",
            "/tmp/ferry-endpoint".to_string(),
        )?),
        listen_addr: var_or("FERRY_ENDPOINT_LISTEN", "*".to_string())?,
        port: var_or("FERRY_ENDPOINT_PORT", 6432)?,
        tls,
        pool_size: var_or("FERRY_ENDPOINT_POOL_SIZE", 20)?,
        max_client_conn: var_or("FERRY_ENDPOINT_MAX_CLIENTS", 1000)?,
        poll: ms("FERRY_ENDPOINT_POLL_MS", 100)?,
        heartbeat: ms("FERRY_ENDPOINT_HEARTBEAT_MS", 1000)?,
        refresh: Duration::from_secs(var_or("FERRY_ENDPOINT_REFRESH_S", 60)?),
        redis: redis_settings()?,
        control: control_settings().await?,
    })
}

/// The control channel's settings: on when `FERRY_ENDPOINT_CONTROL_KEY_PARAM` is set.
async fn control_settings() -> anyhow::Result<Option<ControlSettings>> {
    let Some(key_param) = std::env::var("FERRY_ENDPOINT_CONTROL_KEY_PARAM")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let advertise_host = match std::env::var("FERRY_ENDPOINT_CONTROL_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => ecs_task_ip().await?,
    };
    Ok(Some(ControlSettings {
        key_param,
        port: var_or("FERRY_ENDPOINT_CONTROL_PORT", 6433)?,
        advertise_host,
    }))
}

/// The Redis proxy's settings: all three parameters, or none (no proxy).
fn redis_settings() -> anyhow::Result<Option<RedisSettings>> {
    let names = [
        "FERRY_ENDPOINT_REDIS_SOURCE_PARAM",
        "FERRY_ENDPOINT_REDIS_TARGET_PARAM",
        "FERRY_ENDPOINT_REDIS_CLIENT_PARAM",
    ];
    let values: Vec<Option<String>> = names
        .iter()
        .map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        .collect();
    match values.as_slice() {
        [None, None, None] => Ok(None),
        [Some(source), Some(target), Some(client)] => Ok(Some(RedisSettings {
            source_param: source.clone(),
            target_param: target.clone(),
            client_param: client.clone(),
            port: var_or("FERRY_ENDPOINT_REDIS_PORT", 6380)?,
            databases: databases()?,
        })),
        _ => bail!("set all of {} or none of them", names.join(", ")),
    }
}

/// `FERRY_ENDPOINT_REDIS_DATABASES`: the databases the app may use through the proxy, comma
/// separated (the migration's `redis.databases`); unset or empty: the client URL's own.
fn databases() -> anyhow::Result<Vec<u32>> {
    let text = std::env::var("FERRY_ENDPOINT_REDIS_DATABASES").unwrap_or_default();
    text.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<u32>().ok().filter(|n| *n < 16).ok_or_else(|| {
                anyhow::anyhow!(
                    "FERRY_ENDPOINT_REDIS_DATABASES={text:?}: give database numbers 0-15, comma separated (the template's EndpointRedisDatabases)"
                )
            })
        })
        .collect()
}

async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let s = match settings().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::from(2);
        }
    };
    let aws = ferry_aws::sdk_config().await;
    let store = ferry_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        match var("FERRY_STATE_TABLE") {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot start: {e:#}");
                return ExitCode::from(2);
            }
        },
    );
    let params = ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&aws));
    let span = tracing::info_span!("endpoint", app = %s.app, task = %s.task_id);
    let _guard = span.enter();
    match supervisor::run(&s, &store, &params, terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
