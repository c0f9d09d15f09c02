//! Whether the named source looks like a live primary with traffic. A rehearsal installs
//! capture and freezes writes for a moment: on a fork or a restored snapshot that touches no
//! one; on the production primary it would. Two looks a few seconds apart at the database's
//! other sessions and at its write counters.

use std::time::Duration;

use tokio_postgres::Client;

use crate::RehearseError;

/// What two looks at the source saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// A hot standby: capture cannot be installed there.
    pub in_recovery: bool,
    /// Other client sessions on this database that ran something in the last minute (Ferry's
    /// own, named `ferry`, left out), the larger of the two looks.
    pub recent_sessions: i64,
    /// Rows of user tables inserted, updated or deleted between the two looks (the catalog's
    /// left out: autovacuum's ANALYZE writes statistics there on a quiet database).
    pub rows_written: i64,
    /// How far apart the looks were, in milliseconds.
    pub window_ms: u64,
}

impl Traffic {
    /// Why this looks live, or `None`.
    pub fn evidence(&self) -> Option<String> {
        let mut seen = Vec::new();
        if self.recent_sessions > 0 {
            seen.push(format!(
                "{} other client session(s) used the database in the last minute",
                self.recent_sessions
            ));
        }
        if self.rows_written > 0 {
            seen.push(format!(
                "{} row(s) written in {} ms",
                self.rows_written, self.window_ms
            ));
        }
        (!seen.is_empty()).then(|| seen.join("; "))
    }
}

async fn look(client: &Client) -> Result<(bool, i64, i64), RehearseError> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .map_err(|e| RehearseError::sql("clear the statistics snapshot", &e))?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    (SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND backend_type = 'client backend'
                        AND pid <> pg_backend_pid()
                        AND coalesce(application_name, '') <> 'ferry'
                        AND (state = 'active' OR state_change > now() - interval '60 seconds')),
                    (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
                       FROM pg_stat_user_tables)",
            &[],
        )
        .await
        .map_err(|e| RehearseError::sql("look at the source's sessions and writes", &e))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Looks twice, `window` apart.
pub async fn observe(client: &Client, window: Duration) -> Result<Traffic, RehearseError> {
    let (in_recovery, first_sessions, first_writes) = look(client).await?;
    tokio::time::sleep(window).await;
    let (_, sessions, writes) = look(client).await?;
    Ok(Traffic {
        in_recovery,
        recent_sessions: first_sessions.max(sessions),
        rows_written: (writes - first_writes).max(0),
        window_ms: window.as_millis() as u64,
    })
}

/// Refuses a standby always, and a source with traffic unless `production` (the operator's
/// `--i-know-this-is-production`).
pub fn check(traffic: &Traffic, production: bool) -> Result<(), RehearseError> {
    if traffic.in_recovery {
        return Err(RehearseError::Standby);
    }
    match traffic.evidence() {
        Some(evidence) if !production => Err(RehearseError::LivePrimary { evidence }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_or_writes_make_a_source_live_and_the_flag_lets_it_through() {
        let quiet = Traffic::default();
        assert!(check(&quiet, false).is_ok());
        let busy = Traffic {
            recent_sessions: 2,
            rows_written: 40,
            window_ms: 3000,
            ..Traffic::default()
        };
        let e = check(&busy, false).expect_err("refused").to_string();
        assert!(e.contains("2 other client session(s)"), "{e}");
        assert!(e.contains("40 row(s) written in 3000 ms"), "{e}");
        assert!(e.contains("--i-know-this-is-production"), "{e}");
        assert!(check(&busy, true).is_ok());
        let standby = Traffic {
            in_recovery: true,
            ..Traffic::default()
        };
        assert!(matches!(check(&standby, true), Err(RehearseError::Standby)));
    }
}
