//! The write freeze: the app's role made read-only by default and its open sessions ended,
//! without superuser (a role may change its own defaults and end its own sessions). Ferry's
//! own sessions are named [`APPLICATION_NAME`] and start with [`SESSION_OPTIONS`], so they
//! stay writable and are not ended.

use tokio_postgres::Client;

use crate::{PgError, catalog::quote_ident};

/// `application_name` of every Ferry session.
pub const APPLICATION_NAME: &str = "ferry";

/// Startup options of every Ferry session: writable whatever the role's default says, and
/// never cancelled by a timeout the app's role carries (a copy, a catch-up read or a
/// comparison holding its snapshot may take hours; app roles often set seconds).
pub const SESSION_OPTIONS: &str = "-c default_transaction_read_only=off -c statement_timeout=0 -c idle_in_transaction_session_timeout=0";

async fn current_database(client: &Client) -> Result<String, PgError> {
    Ok(client
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(|source| PgError::Query {
            what: "read the database name",
            source,
        })?
        .get(0))
}

/// Makes new sessions of `role` in this database read-only by default (other databases of the
/// server are not touched). Idempotent.
pub async fn freeze_role(client: &Client, role: &str) -> Result<(), PgError> {
    let db = current_database(client).await?;
    client
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on",
            quote_ident(role),
            quote_ident(&db)
        ))
        .await
        .map_err(|source| PgError::Query {
            what: "make the app role read-only",
            source,
        })
}

/// Lets new sessions of `role` in this database write again. Idempotent.
pub async fn unfreeze_role(client: &Client, role: &str) -> Result<(), PgError> {
    let db = current_database(client).await?;
    client
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} RESET default_transaction_read_only",
            quote_ident(role),
            quote_ident(&db)
        ))
        .await
        .map_err(|source| PgError::Query {
            what: "make the app role writable",
            source,
        })
}

/// Whether `role` is frozen in this database.
pub async fn is_frozen(client: &Client, role: &str) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_db_role_setting s
                   JOIN pg_roles r ON r.oid = s.setrole
                  WHERE r.rolname = $1
                    AND s.setdatabase = (SELECT oid FROM pg_database
                                          WHERE datname = current_database())
                    AND 'default_transaction_read_only=on' = ANY (s.setconfig))",
            &[&role],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "read the app role's settings",
            source,
        })?;
    Ok(row.get(0))
}

/// Ends every session of `role` in this database except this one and Ferry's own, and waits
/// until they are gone: `pg_terminate_backend` only signals, and a backend finishing a commit
/// when the signal arrives still commits. Only once no such session remains is the capture
/// head final (a position read earlier could miss that last commit). Their open transactions
/// roll back; nothing they did was acknowledged as committed. Returns how many were ended.
pub async fn end_sessions(client: &Client, role: &str) -> Result<u64, PgError> {
    const OTHERS: &str = "FROM pg_stat_activity
                           WHERE usename = $1
                             AND pid <> pg_backend_pid()
                             AND datname = current_database()
                             AND coalesce(application_name, '') <> $2";
    let row = client
        .query_one(
            &format!("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) {OTHERS}"),
            &[&role, &APPLICATION_NAME],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "end the app role's sessions",
            source,
        })?;
    let ended = row.get::<_, i64>(0) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = client
            .query_one(
                &format!("SELECT count(*) {OTHERS}"),
                &[&role, &APPLICATION_NAME],
            )
            .await
            .map_err(|source| PgError::Query {
                what: "wait for the app role's sessions to end",
                source,
            })?
            .get(0);
        if left == 0 {
            return Ok(ended);
        }
        if std::time::Instant::now() >= deadline {
            return Err(PgError::Stuck {
                what: format!("{left} session(s) of role {role} did not end within 10 s"),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
