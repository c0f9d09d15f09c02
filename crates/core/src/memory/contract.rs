//! The store's contract as one test run against any implementation: the in-memory one in
//! this crate's tests, the DynamoDB adapter against the emulator in `tests/tests/store.rs`.
//! A fast test of step logic is only as good as the fake under it; this keeps the fake honest.

use chrono::{DateTime, Duration, Utc};

use crate::{
    MigrationSpec,
    endpoint::{Backend, EndpointDesired, EndpointStore, UNTOLD_GAP},
    secret::Secret,
    state::{
        Appended, ApprovalRequest, ApprovalStatus, AuditEvent, Gate, MigrationRecord, Outcome,
        Phase, WorkerCommand, WorkerPhase, WorkerProgress,
    },
    store::{MigrationStore, StoreError},
};

/// Runs every rule of [`MigrationStore`] on `store`, for a migration of `spec` (its id and
/// app must be unused in the store).
pub async fn migration_store(store: &dyn MigrationStore, spec: MigrationSpec) {
    let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    lock(store, &spec.heroku.app, &spec.migration_id, now).await;
    record(store, &spec, now).await;
    audit(store, &spec.migration_id, now).await;
    progress(store, &spec.migration_id, now).await;
    commands(store, &spec.migration_id, now).await;
    approvals(store, &spec.migration_id, now).await;
    facts(store, &spec.migration_id).await;
}

async fn lock(store: &dyn MigrationStore, app: &str, id: &str, now: DateTime<Utc>) {
    assert_eq!(store.app_lock(app).await.expect("read"), None);
    let l = store.acquire_app_lock(app, id, now).await.expect("take");
    assert_eq!(l.migration_id, id);
    let again = store
        .acquire_app_lock(app, id, now + Duration::seconds(5))
        .await
        .expect("a retry takes it again");
    assert_eq!(again.acquired_at, now, "the first taking stands");
    let other = store.acquire_app_lock(app, "someone-else", now).await;
    assert!(
        matches!(&other, Err(StoreError::LockHeld { holder, .. }) if holder == id),
        "{other:?}"
    );
    let not_mine = store.release_app_lock(app, "someone-else").await;
    assert!(
        matches!(not_mine, Err(StoreError::LockHeld { .. })),
        "{not_mine:?}"
    );
    store.release_app_lock(app, id).await.expect("release");
    store
        .release_app_lock(app, id)
        .await
        .expect("releasing a free lock");
    assert_eq!(store.app_lock(app).await.expect("read"), None);
}

async fn record(store: &dyn MigrationStore, spec: &MigrationSpec, now: DateTime<Utc>) {
    let id = &spec.migration_id;
    assert!(matches!(
        store.migration(id).await,
        Err(StoreError::NotFound { .. })
    ));
    let rec = MigrationRecord::new(spec.clone(), now);
    assert_eq!(store.create_migration(&rec).await.expect("create"), rec);
    assert_eq!(store.create_migration(&rec).await.expect("again"), rec);
    let mut other = spec.clone();
    other.rollback_window_hours += 1;
    let changed = store
        .create_migration(&MigrationRecord::new(other, now))
        .await;
    assert!(
        matches!(changed, Err(StoreError::MigrationExists { .. })),
        "{changed:?}"
    );

    let later = now + Duration::seconds(1);
    let moved = store
        .advance_phase(id, 1, Phase::Preflight, later)
        .await
        .expect("move");
    assert_eq!(
        (moved.phase, moved.version, moved.updated_at),
        (Phase::Preflight, 2, later)
    );
    let replay = store
        .advance_phase(id, 1, Phase::Preflight, later)
        .await
        .expect("a retried move returns the stored record");
    assert_eq!(replay, moved);
    let stale = store.advance_phase(id, 1, Phase::Failed, later).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::VersionConflict {
                expected: 1,
                found: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    let illegal = store.advance_phase(id, 2, Phase::Completed, later).await;
    assert!(
        matches!(illegal, Err(StoreError::IllegalTransition { .. })),
        "{illegal:?}"
    );
    let arn = "arn:aws:states:us-east-1:000000000000:execution:ferry:run-1";
    let with = store
        .set_execution_arn(id, 2, arn, later)
        .await
        .expect("arn");
    assert_eq!(
        (with.execution_arn.as_deref(), with.version),
        (Some(arn), 3)
    );
    assert_eq!(
        store
            .set_execution_arn(id, 2, arn, later)
            .await
            .expect("replay"),
        with
    );
    assert_eq!(store.migration(id).await.expect("read"), with);
}

async fn audit(store: &dyn MigrationStore, id: &str, now: DateTime<Utc>) {
    let event = |secs, key: &str| {
        AuditEvent::new(
            now + Duration::seconds(secs),
            "canary",
            "ferry:canary",
            "set_weights",
            Outcome::Info,
            serde_json::json!({ "n": secs }),
        )
        .with_key(key)
    };
    let (b, a) = (event(2, "b"), event(1, "a"));
    assert_eq!(store.append_audit(id, &b).await.expect("b"), Appended::New);
    assert_eq!(store.append_audit(id, &a).await.expect("a"), Appended::New);
    assert_eq!(
        store.append_audit(id, &event(9, "a")).await.expect("again"),
        Appended::AlreadyRecorded,
        "a key is written once"
    );
    assert_eq!(
        store.audit_log(id).await.expect("log"),
        [a, b],
        "time order"
    );
}

/// A copying worker's heartbeat number `seq` of worker epoch `epoch`.
pub fn heartbeat(id: &str, epoch: u64, seq: u64, now: DateTime<Utc>) -> WorkerProgress {
    WorkerProgress {
        migration_id: id.to_string(),
        worker_id: format!("worker-{epoch}"),
        epoch,
        seq,
        phase: WorkerPhase::Copying,
        tables_done: 1,
        tables_total: 2,
        rows_copied: seq,
        bytes_copied: 0,
        bytes_total: None,
        copy_bytes_per_second: None,
        source_position: None,
        applied_position: None,
        lag_seconds: None,
        lag_changes: None,
        heartbeat_at: now,
        error: None,
        error_name: None,
        acked_command: 0,
        paused: false,
        drained_to: None,
    }
}

async fn progress(store: &dyn MigrationStore, id: &str, now: DateTime<Utc>) {
    assert_eq!(store.progress(id).await.expect("none"), None);
    store
        .put_progress(&heartbeat(id, 1, 1, now))
        .await
        .expect("first");
    store
        .put_progress(&heartbeat(id, 1, 2, now))
        .await
        .expect("later");
    for (epoch, seq) in [(1, 2), (1, 1)] {
        let old = store.put_progress(&heartbeat(id, epoch, seq, now)).await;
        assert!(
            matches!(old, Err(StoreError::WorkerSuperseded { .. })),
            "{old:?}"
        );
    }
    store
        .put_progress(&heartbeat(id, 2, 1, now))
        .await
        .expect("newer worker");
    let superseded = store.put_progress(&heartbeat(id, 1, 99, now)).await;
    assert!(
        matches!(
            superseded,
            Err(StoreError::WorkerSuperseded { newer_epoch: 2, .. })
        ),
        "{superseded:?}"
    );
    let stored = store.progress(id).await.expect("read").expect("some");
    assert_eq!((stored.epoch, stored.seq), (2, 1));
}

async fn commands(store: &dyn MigrationStore, id: &str, now: DateTime<Utc>) {
    assert_eq!(store.command(id).await.expect("none"), None);
    let first = store
        .send_command(id, WorkerCommand::Pause, "alice", now)
        .await
        .expect("send");
    let second = store
        .send_command(id, WorkerCommand::Resume { force: false }, "bob", now)
        .await
        .expect("send");
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(store.command(id).await.expect("read"), Some(second));
}

async fn approvals(store: &dyn MigrationStore, id: &str, now: DateTime<Utc>) {
    let request = |token: &str| ApprovalRequest {
        migration_id: id.to_string(),
        gate: Gate::Cutover,
        task_token: Secret::new(token),
        requested_at: now,
        status: ApprovalStatus::Pending,
        decided_by: None,
        decided_at: None,
    };
    let decide = |token: &'static str, d| async move {
        store
            .decide_approval(id, Gate::Cutover, token, d, "alice@acme.example", now)
            .await
    };
    let missing = decide("t1", ApprovalStatus::Approved).await;
    assert!(
        matches!(&missing, Err(StoreError::ApprovalNotPending { status, .. }) if status == "missing"),
        "{missing:?}"
    );
    store.put_approval(&request("t1")).await.expect("put");
    store
        .put_approval(&request("t2"))
        .await
        .expect("a retried gate replaces a pending one");
    let wrong = decide("t1", ApprovalStatus::Approved).await;
    assert!(
        matches!(wrong, Err(StoreError::ApprovalNotPending { .. })),
        "{wrong:?}"
    );
    let pending = decide("t2", ApprovalStatus::Pending).await;
    assert!(
        matches!(pending, Err(StoreError::ApprovalNotPending { .. })),
        "{pending:?}"
    );
    let decided = decide("t2", ApprovalStatus::Approved)
        .await
        .expect("decide");
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("alice@acme.example"));
    let replay = decide("t2", ApprovalStatus::Rejected).await;
    assert!(
        matches!(&replay, Err(StoreError::ApprovalNotPending { status, .. }) if status == "approved"),
        "{replay:?}"
    );
    let replace = store.put_approval(&request("t3")).await;
    assert!(
        matches!(replace, Err(StoreError::ApprovalNotPending { .. })),
        "a decided gate stays"
    );
    assert_eq!(
        store
            .approval(id, Gate::Cutover)
            .await
            .expect("read")
            .map(|a| a.status),
        Some(ApprovalStatus::Approved)
    );
    assert_eq!(store.approval(id, Gate::Finish).await.expect("read"), None);
}

async fn facts(store: &dyn MigrationStore, id: &str) {
    let (one, two) = (serde_json::json!({"n": 1}), serde_json::json!({"n": 2}));
    assert_eq!(store.fact(id, "canary").await.expect("none"), None);
    assert!(
        !store
            .swap_fact(id, "canary", Some(&one), &two)
            .await
            .expect("absent")
    );
    assert!(
        store
            .swap_fact(id, "canary", None, &one)
            .await
            .expect("create")
    );
    assert!(
        !store
            .swap_fact(id, "canary", None, &two)
            .await
            .expect("exists")
    );
    assert!(
        store
            .swap_fact(id, "canary", Some(&one), &two)
            .await
            .expect("swap")
    );
    assert!(
        !store
            .swap_fact(id, "canary", Some(&one), &one)
            .await
            .expect("stale")
    );
    assert_eq!(store.fact(id, "canary").await.expect("read"), Some(two));
}

/// Runs every rule of [`EndpointStore`] on `store` for an app unused in it.
pub async fn endpoint_store(store: &dyn EndpointStore, app: &str) {
    let want = |paused| EndpointDesired {
        paused,
        backend: Backend::Source,
        ..EndpointDesired::initial(app)
    };
    assert_eq!(store.endpoint_desired(app).await.expect("none"), None);
    let first = store.set_endpoint_desired(want(false)).await.expect("set");
    assert_eq!(
        first.seq, UNTOLD_GAP,
        "numbered above a state told but never stored"
    );
    let told = store
        .put_endpoint_desired_after(first.seq, want(true))
        .await
        .expect("put")
        .expect("over the one its caller knew");
    assert_eq!(told.seq, first.seq + 1);
    assert_eq!(
        store
            .put_endpoint_desired_after(first.seq, want(false))
            .await
            .expect("put"),
        None,
        "another was stored since"
    );
    let next = store.set_endpoint_desired(want(false)).await.expect("set");
    assert_eq!(next.seq, told.seq + UNTOLD_GAP);
    assert_eq!(store.endpoint_desired(app).await.expect("read"), Some(next));
}
