//! Snapshots for the rules' unit tests: a stock Heroku source read as JSON, and variants.

use super::{
    Finding,
    capture::CaptureDecision,
    rules::{Check, Ctx},
    snapshot::Snapshot,
};
use crate::catalog::{Column, Table, TableKind};
use ferry_core::spec::CaptureMode;

/// A stock Heroku source (no REPLICATION, `wal_level` replica, the app role owns its one
/// table) with a PostgreSQL 17 RDS target.
pub fn heroku_like() -> Snapshot {
    serde_json::from_str(include_str!("fixtures/heroku_like.json")).expect("fixture parses")
}

/// The same source on a server that allows logical decoding, read by a superuser.
pub fn logical_ready() -> Snapshot {
    let mut s = heroku_like();
    s.source.wal_level = "logical".into();
    s.source.superuser = true;
    s.source.free_replication_slots = 10;
    s
}

/// A plain keyed table `public.<name>` with an `id bigint` key.
pub fn table(name: &str) -> Table {
    Table {
        oid: 20000,
        schema: "public".into(),
        name: name.into(),
        kind: TableKind::Ordinary,
        columns: vec![Column {
            name: "id".into(),
            type_sql: "bigint".into(),
            generated: false,
            identity_always: false,
            identity: false,
            binary_portable: true,
        }],
        primary_key: vec!["id".into()],
        replica_identity: 'd',
        unlogged: false,
        estimated_rows: 0,
        total_bytes: 8192,
        owner: "app".into(),
        can_trigger: true,
    }
}

/// What `check` finds on `snapshot` with capture `requested` and parallelism 4.
pub fn run(check: Check, snapshot: &Snapshot, requested: CaptureMode) -> Vec<Finding> {
    let capture = CaptureDecision::decide(snapshot, requested);
    let mut out = Vec::new();
    check(
        &Ctx {
            snapshot,
            capture: &capture,
            parallelism: 4,
        },
        &mut out,
    );
    out
}

/// [`run`] under `auto`.
pub fn auto(check: Check, snapshot: &Snapshot) -> Vec<Finding> {
    run(check, snapshot, CaptureMode::Auto)
}
