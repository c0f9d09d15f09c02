//! PgBouncer's admin console (the special database `pgbouncer`), reached over the unix socket
//! in the supervisor's private directory. Simple-query protocol only, as the console requires.

use std::{path::PathBuf, time::Duration};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::{EndpointError, ini::ADMIN_USER};

/// How to reach the console.
#[derive(Clone)]
pub struct Console {
    /// The directory holding `.s.PGSQL.<port>`.
    pub socket_dir: PathBuf,
    /// The port naming the socket.
    pub port: u16,
    /// The admin password (random per task, never leaves the process and the auth file).
    pub password: String,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("socket_dir", &self.socket_dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn admin_err(what: &str, e: tokio_postgres::Error) -> EndpointError {
    EndpointError::Admin {
        what: what.to_string(),
        reason: ferry_pg::describe(&e),
    }
}

impl Console {
    /// Opens a console session.
    pub async fn connect(&self) -> Result<Client, EndpointError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.socket_dir)
            .port(self.port)
            .user(ADMIN_USER)
            .password(&self.password)
            .dbname("pgbouncer")
            .connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg
            .connect(NoTls)
            .await
            .map_err(|e| admin_err("connect", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Waits until PgBouncer answers on its console (after it starts).
    pub async fn wait_ready(&self, limit: Duration) -> Result<Client, EndpointError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.connect().await {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// `PAUSE`: returns once every server connection is released (transactions ended), or
    /// after `limit`, in which case the pause is called off (`RESUME` from a second session)
    /// and [`EndpointError::PauseTimeout`] says how many server connections were still busy.
    /// The session whose PAUSE never returned is replaced by the second one (PgBouncer would
    /// never answer anything else on it).
    pub async fn pause(&self, admin: &mut Client, limit: Duration) -> Result<(), EndpointError> {
        match tokio::time::timeout(limit, admin.simple_query("PAUSE")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(admin_err("PAUSE", e)),
            Err(_) => {
                let other = self.connect().await?;
                let busy = active_servers(&other).await.unwrap_or(0);
                other
                    .simple_query("RESUME")
                    .await
                    .map_err(|e| admin_err("RESUME after a pause that timed out", e))?;
                *admin = other;
                Err(EndpointError::PauseTimeout {
                    ms: limit.as_millis() as u64,
                    busy,
                })
            }
        }
    }

    /// `RESUME`. Resuming an endpoint that is not paused is not an error.
    pub async fn resume(&self, admin: &Client) -> Result<(), EndpointError> {
        match admin.simple_query("RESUME").await {
            Ok(_) => Ok(()),
            Err(e) if ferry_pg::describe(&e).contains("not paused") => Ok(()),
            Err(e) => Err(admin_err("RESUME", e)),
        }
    }

    /// `RELOAD`: re-reads the ini and auth file.
    pub async fn reload(&self, admin: &Client) -> Result<(), EndpointError> {
        admin
            .simple_query("RELOAD")
            .await
            .map(|_| ())
            .map_err(|e| admin_err("RELOAD", e))
    }
}

/// Rows of a console `SHOW`, as (column → value) maps.
pub async fn show(
    admin: &Client,
    what: &str,
) -> Result<Vec<std::collections::BTreeMap<String, String>>, EndpointError> {
    let msgs = admin
        .simple_query(&format!("SHOW {what}"))
        .await
        .map_err(|e| admin_err(&format!("SHOW {what}"), e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            c.name().to_string(),
                            r.get(i).unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// PgBouncer's version string (`SHOW VERSION`), e.g. `PgBouncer 1.24.1`.
pub async fn version(admin: &Client) -> Result<String, EndpointError> {
    Ok(show(admin, "VERSION")
        .await?
        .first()
        .and_then(|r| r.values().next().cloned())
        .unwrap_or_default())
}

/// Server connections currently linked to a client (inside a transaction).
pub async fn active_servers(admin: &Client) -> Result<usize, EndpointError> {
    Ok(show(admin, "SERVERS")
        .await?
        .iter()
        .filter(|r| r.get("state").map(String::as_str) == Some("active"))
        .count())
}

/// The (host, port) PgBouncer has for `dbname` now (`SHOW DATABASES`).
pub async fn database_target(
    admin: &Client,
    dbname: &str,
) -> Result<Option<(String, u16)>, EndpointError> {
    Ok(show(admin, "DATABASES")
        .await?
        .iter()
        .find(|r| r.get("name").map(String::as_str) == Some(dbname))
        .and_then(|r| Some((r.get("host")?.clone(), r.get("port")?.parse().ok()?))))
}

pub use ferry_core::endpoint::supports_prepared_statements;
