//! Which capture mode the source allows, decided from the snapshot alone.

use std::fmt;

use ferry_core::spec::CaptureMode;
use serde::Serialize;

use super::snapshot::Snapshot;

/// Why logical decoding cannot capture the source's changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogicalObstacle {
    /// `wal_level` is not `logical` (stock Heroku: `replica`).
    WalLevel {
        /// The server's setting.
        wal_level: String,
    },
    /// The role may not open a replication connection.
    NoReplication {
        /// The connected role.
        role: String,
    },
    /// Fewer than the two slots logical capture needs are free.
    Slots {
        /// Slots free now.
        free: i64,
    },
    /// Some table is UNLOGGED.
    Unlogged,
    /// Some keyed table's replica identity is neither the key nor FULL.
    ReplicaIdentity,
}

impl fmt::Display for LogicalObstacle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WalLevel { wal_level } => write!(f, "wal_level is {wal_level}"),
            Self::NoReplication { role } => write!(f, "role {role} has no REPLICATION attribute"),
            Self::Slots { free } => write!(
                f,
                "{} free replication slot(s); logical capture needs 2 (the stream's and Verify's temporary copy of it)",
                (*free).max(0)
            ),
            Self::Unlogged => f.write_str("UNLOGGED tables are invisible to decoding"),
            Self::ReplicaIdentity => {
                f.write_str("tables whose replica identity is neither the primary key nor FULL")
            }
        }
    }
}

/// Why triggers cannot capture the source's changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerObstacle {
    /// The role may not create Ferry's schema.
    NoCreateSchema {
        /// The connected role.
        role: String,
    },
    /// The role may not create triggers on these tables.
    NotOwner {
        /// The connected role.
        role: String,
        /// `schema.name` of each table.
        tables: Vec<String>,
    },
}

impl fmt::Display for TriggerObstacle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCreateSchema { role } => {
                write!(f, "role {role} may not create a schema in the database")
            }
            Self::NotOwner { role, tables } => {
                write!(f, "role {role} does not own {}", tables.join(", "))
            }
        }
    }
}

/// The capture decision: what was asked, what each mode lacks, what will be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureDecision {
    /// The mode the spec asked for.
    pub requested: CaptureMode,
    /// The mode that will be used (`auto` resolved), or `None` if the asked one cannot work.
    pub chosen: Option<CaptureMode>,
    /// What stands in logical decoding's way; empty when it is possible.
    pub logical: Vec<LogicalObstacle>,
    /// What stands in trigger capture's way; empty when it is possible.
    pub trigger: Vec<TriggerObstacle>,
}

impl CaptureDecision {
    /// Decides for `requested` on the snapshot's source.
    pub fn decide(snapshot: &Snapshot, requested: CaptureMode) -> Self {
        let logical = logical_obstacles(snapshot);
        let trigger = trigger_obstacles(snapshot);
        let chosen = match requested {
            CaptureMode::Logical if logical.is_empty() => Some(CaptureMode::Logical),
            CaptureMode::Trigger if trigger.is_empty() => Some(CaptureMode::Trigger),
            CaptureMode::Auto if logical.is_empty() => Some(CaptureMode::Logical),
            CaptureMode::Auto if trigger.is_empty() => Some(CaptureMode::Trigger),
            _ => None,
        };
        Self {
            requested,
            chosen,
            logical,
            trigger,
        }
    }

    /// Whether logical decoding is possible.
    pub fn logical_possible(&self) -> bool {
        self.logical.is_empty()
    }

    /// Whether trigger capture is possible.
    pub fn trigger_possible(&self) -> bool {
        self.trigger.is_empty()
    }

    /// The logical obstacles joined with `; `.
    pub fn logical_reasons(&self) -> String {
        join(&self.logical)
    }

    /// The trigger obstacles joined with `; `.
    pub fn trigger_reasons(&self) -> String {
        join(&self.trigger)
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn logical_obstacles(s: &Snapshot) -> Vec<LogicalObstacle> {
    let src = &s.source;
    let mut out = Vec::new();
    if src.wal_level != "logical" {
        out.push(LogicalObstacle::WalLevel {
            wal_level: src.wal_level.clone(),
        });
    }
    if !(src.replication || src.superuser) {
        out.push(LogicalObstacle::NoReplication {
            role: src.role.clone(),
        });
    }
    // One slot for the stream, and one for the temporary copy Verify decodes to see which
    // keys have changes waiting (it never reads the stream's own slot).
    if src.free_replication_slots < 2 {
        out.push(LogicalObstacle::Slots {
            free: src.free_replication_slots,
        });
    }
    if s.tables.iter().any(|t| t.unlogged) {
        out.push(LogicalObstacle::Unlogged);
    }
    if s.tables.iter().any(identity_lacks_key) {
        out.push(LogicalObstacle::ReplicaIdentity);
    }
    out
}

/// Whether decoded changes of this table would not carry its primary key: a keyed capture
/// unit whose replica identity is neither DEFAULT (the key) nor FULL.
pub fn identity_lacks_key(t: &crate::catalog::Table) -> bool {
    t.is_capture_unit() && !t.primary_key.is_empty() && !matches!(t.replica_identity, 'd' | 'f')
}

fn trigger_obstacles(s: &Snapshot) -> Vec<TriggerObstacle> {
    let src = &s.source;
    let mut out = Vec::new();
    if !src.can_create_schema {
        out.push(TriggerObstacle::NoCreateSchema {
            role: src.role.clone(),
        });
    }
    let not_owned: Vec<String> = s
        .tables
        .iter()
        .filter(|t| !t.can_trigger)
        .map(|t| t.display_name())
        .collect();
    if !not_owned.is_empty() {
        out.push(TriggerObstacle::NotOwner {
            role: src.role.clone(),
            tables: not_owned,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::fixture;

    #[test]
    fn stock_heroku_gets_triggers_and_says_why_not_logical() {
        let s = fixture::heroku_like();
        let d = CaptureDecision::decide(&s, CaptureMode::Auto);
        assert_eq!(d.chosen, Some(CaptureMode::Trigger));
        assert_eq!(
            d.logical_reasons(),
            "wal_level is replica; role app has no REPLICATION attribute"
        );
        assert!(d.trigger_possible());
    }

    #[test]
    fn a_slot_ready_source_gets_logical_under_auto_and_trigger_when_asked() {
        let s = fixture::logical_ready();
        let auto = CaptureDecision::decide(&s, CaptureMode::Auto);
        assert_eq!(auto.chosen, Some(CaptureMode::Logical));
        let asked = CaptureDecision::decide(&s, CaptureMode::Trigger);
        assert_eq!(asked.chosen, Some(CaptureMode::Trigger));
    }

    #[test]
    fn each_logical_obstacle_is_found_alone() {
        let mut s = fixture::logical_ready();
        s.source.free_replication_slots = 1;
        let d = CaptureDecision::decide(&s, CaptureMode::Logical);
        assert_eq!(d.logical, [LogicalObstacle::Slots { free: 1 }]);
        assert_eq!(d.chosen, None);

        let mut s = fixture::logical_ready();
        s.tables[0].replica_identity = 'n';
        assert_eq!(
            CaptureDecision::decide(&s, CaptureMode::Logical).logical,
            [LogicalObstacle::ReplicaIdentity]
        );

        let mut s = fixture::logical_ready();
        s.tables[0].unlogged = true;
        assert_eq!(
            CaptureDecision::decide(&s, CaptureMode::Logical).logical,
            [LogicalObstacle::Unlogged]
        );
    }

    #[test]
    fn a_role_that_owns_nothing_and_has_no_replication_gets_no_mode() {
        let mut s = fixture::heroku_like();
        s.source.can_create_schema = false;
        s.tables[0].can_trigger = false;
        let d = CaptureDecision::decide(&s, CaptureMode::Auto);
        assert_eq!(d.chosen, None);
        assert_eq!(
            d.trigger_reasons(),
            "role app may not create a schema in the database; role app does not own public.customers"
        );
    }
}
