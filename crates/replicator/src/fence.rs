//! One writer on the target. ECS stops a task with SIGTERM and may start its successor at
//! once; a worker that has not yet noticed it was superseded would apply beside the new one.
//! So every worker holds a session-level advisory lock on the target database for its whole
//! life, taken before it writes anything: a second worker waits until the first one's session
//! ends (its process exits, or its connection is cut), whatever the state table says.

use ferry_pg::PgUrl;
use tokio_postgres::Client;

use crate::ReplError;

/// The advisory lock's key ("ferrywkr"); advisory locks are per database, so one per target.
pub const LOCK_KEY: i64 = 0x6665_7272_7977_6b72;

/// The lock, held while this session lives.
#[derive(Debug)]
pub struct Fence {
    _session: Client,
}

/// A session that asks for the lock until it has it (one connection however long it waits).
#[derive(Debug)]
pub struct Waiter {
    session: Client,
}

impl Waiter {
    /// Opens the session on the target.
    pub async fn connect(target: &PgUrl) -> Result<Self, ReplError> {
        Ok(Self {
            session: target.connect().await?,
        })
    }

    /// Takes the lock if it is free; otherwise gives the waiter back with the holder's backend
    /// pid and application name, for the log.
    pub async fn try_take(self) -> Result<Result<Fence, (Self, String)>, ReplError> {
        let taken: bool = self
            .session
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(ReplError::sql("take the target's writer lock"))?
            .get(0);
        if taken {
            return Ok(Ok(Fence {
                _session: self.session,
            }));
        }
        let holder = self
            .session
            .query_opt(
                "SELECT l.pid::text || ' (' || coalesce(a.application_name, '') || ')'
                   FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.locktype = 'advisory' AND l.granted AND l.database =
                        (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND (l.classid::bigint << 32 | l.objid::bigint) = $1",
                &[&LOCK_KEY],
            )
            .await
            .map_err(ReplError::sql("find the target's writer lock holder"))?
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_else(|| "another session".into());
        Ok(Err((self, holder)))
    }
}
