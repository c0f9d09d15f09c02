//! The DynamoDB migration store against the AWS emulator.

use chrono::{Duration, Utc};
use ferry_core::{
    MigrationStore, StepErrorName, StoreError,
    state::{
        Appended, ApprovalStatus, AuditEvent, Gate, MigrationRecord, Outcome, Phase, WorkerCommand,
        WorkerProgress,
    },
};
use ferry_tests::{fresh_store, pending_approval, spec, unique};

#[tokio::test]
async fn lock_refuses_a_second_migration_of_the_same_app() {
    let store = fresh_store().await;
    let app = unique("app-");
    let now = Utc::now();
    let lock = store
        .acquire_app_lock(&app, "m1", now)
        .await
        .expect("first");
    assert_eq!(lock.migration_id, "m1");
    // A retried step of the same migration gets the lock again.
    store
        .acquire_app_lock(&app, "m1", now)
        .await
        .expect("retry is safe");
    let err = store
        .acquire_app_lock(&app, "m2", now)
        .await
        .expect_err("second migration refused");
    assert!(
        matches!(&err, StoreError::LockHeld { holder, .. } if holder == "m1"),
        "{err:?}"
    );
    assert_eq!(err.step_error_name(), "Ferry.Blocked.LockHeld");
    assert!(
        err.to_string().contains("locked by migration \"m1\""),
        "{err}"
    );
    // Only the holder may release; then the next migration may start.
    assert!(matches!(
        store.release_app_lock(&app, "m2").await,
        Err(StoreError::LockHeld { .. })
    ));
    store.release_app_lock(&app, "m1").await.expect("release");
    store
        .release_app_lock(&app, "m1")
        .await
        .expect("release twice is safe");
    store
        .acquire_app_lock(&app, "m2", now)
        .await
        .expect("m2 now");
    assert_eq!(
        store
            .app_lock(&app)
            .await
            .expect("read")
            .map(|l| l.migration_id),
        Some("m2".to_string())
    );
}

#[tokio::test]
async fn concurrent_lock_attempts_have_exactly_one_winner() {
    let store = fresh_store().await;
    let app = unique("app-");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            store
                .acquire_app_lock(&app, &format!("m{i}"), Utc::now())
                .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => winners += 1,
            Err(StoreError::LockHeld { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn migration_record_round_trips_and_creation_is_idempotent() {
    let store = fresh_store().await;
    let id = unique("mig-");
    let record = MigrationRecord::new(spec(&id, "acme-prod"), Utc::now());
    let created = store.create_migration(&record).await.expect("create");
    let read = store.migration(&id).await.expect("read");
    assert_eq!(read.spec, record.spec);
    assert_eq!((read.phase, read.version), (Phase::Created, 1));
    assert_eq!(
        read.created_at.timestamp_millis(),
        created.created_at.timestamp_millis()
    );
    // Same spec again (a retried preflight): fine, and nothing changes.
    let again = MigrationRecord::new(spec(&id, "acme-prod"), Utc::now() + Duration::seconds(5));
    let back = store.create_migration(&again).await.expect("idempotent");
    assert_eq!(back.created_at, read.created_at);
    // A different spec under the same id: refused.
    let other = MigrationRecord::new(spec(&id, "other-app"), Utc::now());
    let err = store
        .create_migration(&other)
        .await
        .expect_err("different spec");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.MigrationExists");
    let missing = store
        .migration("no-such-migration")
        .await
        .expect_err("missing");
    assert_eq!(missing.step_error_name(), "Ferry.Failed.NotFound");
}

#[tokio::test]
async fn conditional_writes_reject_a_stale_version() {
    let store = fresh_store().await;
    let id = unique("mig-");
    store
        .create_migration(&MigrationRecord::new(spec(&id, "acme-prod"), Utc::now()))
        .await
        .expect("create");
    let v2 = store
        .advance_phase(&id, 1, Phase::Preflight, Utc::now())
        .await
        .expect("advance");
    assert_eq!((v2.phase, v2.version), (Phase::Preflight, 2));
    // A retry of the same step (it wrote, then timed out) gets the stored record back.
    let replay = store
        .advance_phase(&id, 1, Phase::Preflight, Utc::now())
        .await
        .expect("replay is safe");
    assert_eq!(replay.version, 2);
    // A writer that read version 1 and wants something else is refused.
    let err = store
        .advance_phase(&id, 1, Phase::Failed, Utc::now())
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StoreError::VersionConflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.step_error_name(), "Ferry.Retryable.Conflict");
    // Skipping phases is refused before any write.
    let err = store
        .advance_phase(&id, 2, Phase::Verifying, Utc::now())
        .await
        .expect_err("skip");
    assert_eq!(err.step_error_name(), "Ferry.Failed.IllegalTransition");
    assert_eq!(store.migration(&id).await.expect("read").version, 2);
    let v3 = store
        .set_execution_arn(
            &id,
            2,
            "arn:aws:states:us-east-1:123456789012:execution:ferry:x",
            Utc::now(),
        )
        .await
        .expect("set arn");
    assert_eq!(v3.version, 3);
    assert!(v3.execution_arn.is_some_and(|a| a.ends_with(":x")));
}

#[tokio::test]
async fn concurrent_phase_changes_apply_once() {
    let store = fresh_store().await;
    let id = unique("mig-");
    store
        .create_migration(&MigrationRecord::new(spec(&id, "acme-prod"), Utc::now()))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for to in [
        Phase::Preflight,
        Phase::Failed,
        Phase::RollingBack,
        Phase::Preflight,
    ] {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            store.advance_phase(&id, 1, to, Utc::now()).await
        }));
    }
    let results: Vec<_> = futures_join(tasks).await;
    let stored = store.migration(&id).await.expect("read");
    assert_eq!(stored.version, 2, "exactly one change applied");
    for r in results {
        match r {
            Ok(rec) => assert_eq!(rec.phase, stored.phase),
            Err(e) => assert_eq!(e.step_error_name(), "Ferry.Retryable.Conflict", "{e:?}"),
        }
    }
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

#[tokio::test]
async fn audit_log_is_append_only_ordered_and_deduplicated() {
    let store = fresh_store().await;
    let id = unique("mig-");
    let t0 = Utc::now();
    let events: Vec<AuditEvent> = (0..30)
        .map(|i| {
            AuditEvent::new(
                t0 + Duration::milliseconds(i),
                "preflight",
                "ferry:preflight",
                format!("check-{i}"),
                Outcome::Succeeded,
                serde_json::json!({ "n": i }),
            )
        })
        .collect();
    // Written out of order, read back in time order.
    for e in events.iter().rev() {
        assert_eq!(
            store.append_audit(&id, e).await.expect("append"),
            Appended::New
        );
    }
    let keyed = AuditEvent::new(
        t0,
        "approval",
        "ops@acme.example",
        "approve",
        Outcome::Info,
        serde_json::Value::Null,
    )
    .with_key("exec-1/ApproveTraffic/1");
    assert_eq!(
        store.append_audit(&id, &keyed).await.expect("append"),
        Appended::New
    );
    let mut retried = keyed.clone();
    retried.at = t0 + Duration::seconds(9);
    assert_eq!(
        store.append_audit(&id, &retried).await.expect("append"),
        Appended::AlreadyRecorded
    );
    let log = store.audit_log(&id).await.expect("read");
    assert_eq!(log.len(), 31);
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    let stored = log
        .iter()
        .find(|e| e.key == keyed.key)
        .expect("keyed event");
    assert_eq!(
        stored.at.timestamp_millis(),
        t0.timestamp_millis(),
        "first write wins"
    );
    assert_eq!(
        log.iter()
            .find(|e| e.action == "check-7")
            .map(|e| e.detail.clone()),
        Some(serde_json::json!({"n": 7}))
    );
}

fn progress(id: &str, epoch: u64, seq: u64) -> WorkerProgress {
    WorkerProgress {
        rows_copied: 1_000_000 + seq,
        lag_seconds: Some(0.8),
        lag_changes: Some(12),
        ..ferry_core::memory::contract::heartbeat(id, epoch, seq, Utc::now())
    }
}

#[tokio::test]
async fn progress_from_an_older_worker_or_heartbeat_is_refused() {
    let store = fresh_store().await;
    let id = unique("mig-");
    assert_eq!(store.progress(&id).await.expect("none yet"), None);
    store
        .put_progress(&progress(&id, 100, 1))
        .await
        .expect("first");
    store
        .put_progress(&progress(&id, 100, 2))
        .await
        .expect("next heartbeat");
    let err = store
        .put_progress(&progress(&id, 100, 2))
        .await
        .expect_err("same seq");
    assert_eq!(err.step_error_name(), "Ferry.Failed.WorkerSuperseded");
    // A restarted worker (newer epoch) takes over; the old one is told to stop.
    store
        .put_progress(&progress(&id, 200, 1))
        .await
        .expect("new worker");
    let err = store
        .put_progress(&progress(&id, 100, 3))
        .await
        .expect_err("zombie");
    assert!(
        matches!(
            err,
            StoreError::WorkerSuperseded {
                newer_epoch: 200,
                ..
            }
        ),
        "{err:?}"
    );
    let p = store.progress(&id).await.expect("read").expect("some");
    assert_eq!((p.epoch, p.seq, p.rows_copied), (200, 1, 1_000_001));
    assert_eq!(p.lag_changes, Some(12));
}

#[tokio::test]
async fn approvals_are_decided_once_with_the_right_token() {
    let store = fresh_store().await;
    let id = unique("mig-");
    let request = |token: &str| pending_approval(&id, Gate::ShiftTraffic, token);
    store.put_approval(&request("token-1")).await.expect("put");
    // The gate step was retried and got a new token: the pending request is replaced.
    store
        .put_approval(&request("token-2"))
        .await
        .expect("replace pending");
    let stale = store
        .decide_approval(
            &id,
            Gate::ShiftTraffic,
            "token-1",
            ApprovalStatus::Approved,
            "ops@acme.example",
            Utc::now(),
        )
        .await
        .expect_err("old token");
    assert_eq!(stale.step_error_name(), "Ferry.Blocked.ApprovalNotPending");
    let decided = store
        .decide_approval(
            &id,
            Gate::ShiftTraffic,
            "token-2",
            ApprovalStatus::Approved,
            "ops@acme.example",
            Utc::now(),
        )
        .await
        .expect("approve");
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("ops@acme.example"));
    // A replayed click, or a late reject, changes nothing.
    let replay = store
        .decide_approval(
            &id,
            Gate::ShiftTraffic,
            "token-2",
            ApprovalStatus::Rejected,
            "mallory@evil.example",
            Utc::now(),
        )
        .await
        .expect_err("replay");
    assert!(replay.to_string().contains("status approved"), "{replay}");
    assert!(
        store.put_approval(&request("token-3")).await.is_err(),
        "decided gate is never replaced"
    );
    let stored = store
        .approval(&id, Gate::ShiftTraffic)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(
        (stored.status, stored.decided_by.as_deref()),
        (ApprovalStatus::Approved, Some("ops@acme.example"))
    );
    assert_eq!(
        store.approval(&id, Gate::Cutover).await.expect("read"),
        None
    );
}

#[tokio::test]
async fn commands_are_numbered_once_each_even_when_sent_concurrently() {
    let store = fresh_store().await;
    let id = unique("mig-");
    assert_eq!(store.command(&id).await.expect("none"), None);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let cmd = if i % 2 == 0 {
                WorkerCommand::Pause
            } else {
                WorkerCommand::Resume { force: false }
            };
            store.send_command(&id, cmd, "ferry:test", Utc::now()).await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join").expect("send").seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let drain = store
        .send_command(
            &id,
            WorkerCommand::Drain {
                until: Some("42".into()),
            },
            "ferry:cutover",
            Utc::now(),
        )
        .await
        .expect("send");
    let latest = store.command(&id).await.expect("read").expect("some");
    assert_eq!(
        (latest.seq, latest.command),
        (
            5,
            WorkerCommand::Drain {
                until: Some("42".into())
            }
        )
    );
    assert_eq!(latest.issued_by, "ferry:cutover");
    assert_eq!(drain.seq, 5);
}

#[tokio::test]
async fn ssm_parameters_round_trip_as_secure_strings() {
    use ferry_core::params::{ParamStore, PutOutcome};
    ferry_tests::bed_var("AWS_ENDPOINT_URL");
    let config = ferry_aws::sdk_config().await;
    let params = ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&config));
    let prefix = format!("/{}/", unique("ferry-test-"));
    let name = format!("{prefix}DATABASE_URL");
    let err = params.get(&name).await.expect_err("missing");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.ParamNotFound");
    assert!(err.to_string().contains(&name));
    assert_eq!(
        params.put_secure(&name, "postgres://a").await.expect("put"),
        PutOutcome::Added
    );
    assert_eq!(
        params.put_secure(&name, "postgres://a").await.expect("put"),
        PutOutcome::Unchanged
    );
    assert_eq!(
        params.put_secure(&name, "postgres://b").await.expect("put"),
        PutOutcome::Changed
    );
    assert_eq!(
        params.get(&name).await.expect("get").expose(),
        "postgres://b"
    );
    // A value read back is typed so that printing it cannot leak it.
    let read = params.get(&name).await;
    assert!(!format!("{read:?}").contains("postgres://b"), "{read:?}");
    params
        .put_secure(&format!("{prefix}nested/KEY"), "v")
        .await
        .expect("put");
    let all = params.get_by_path(&prefix).await.expect("by path");
    assert_eq!(all.len(), 2);
    assert_eq!(all.get(&name).map(String::as_str), Some("postgres://b"));
}

/// A desired endpoint state told over the control channel beside its write is stored only
/// over the state its caller knew (one winner among concurrent writers); a state stored the
/// other way is numbered above any such state that may have been told and never stored.
#[tokio::test]
async fn an_endpoint_state_told_beside_its_write_is_stored_only_over_the_one_its_caller_knew() {
    use ferry_core::endpoint::{Backend, EndpointDesired, EndpointStore, UNTOLD_GAP};
    let store = fresh_store().await;
    let app = unique("app-");
    let want = |paused: bool, by: &str| EndpointDesired {
        paused,
        backend: Backend::Source,
        migration_id: "m".into(),
        issued_at: Utc::now(),
        issued_by: by.into(),
        ..EndpointDesired::initial(&app)
    };
    // Nothing stored yet: the first state told beside its write is number 1.
    let first = store
        .put_endpoint_desired_after(0, want(true, "first"))
        .await
        .expect("store")
        .expect("nothing was stored before");
    assert_eq!(first.seq, 1);
    // Two writers that both knew state 1: exactly one lands.
    let (a, b) = tokio::join!(
        store.put_endpoint_desired_after(1, want(false, "a")),
        store.put_endpoint_desired_after(1, want(true, "b"))
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert!(a.is_some() != b.is_some(), "one winner: {a:?} {b:?}");
    let stored = store
        .endpoint_desired(&app)
        .await
        .expect("read")
        .expect("some");
    let winner = a.or(b).expect("a winner");
    assert_eq!((stored.seq, &stored.issued_by), (2, &winner.issued_by));
    // A writer that knew state 1 only: refused, the stored state unchanged.
    assert!(
        store
            .put_endpoint_desired_after(1, want(true, "late"))
            .await
            .expect("store")
            .is_none()
    );
    // State 3 may have been told and never stored (its writer stopped): a state stored the
    // other way comes above it, and one told after it follows on.
    let next = store
        .set_endpoint_desired(want(false, "read-path"))
        .await
        .expect("store");
    assert_eq!(next.seq, 2 + UNTOLD_GAP);
    assert!(next.seq > 3);
    let after = store
        .put_endpoint_desired_after(next.seq, want(true, "after"))
        .await
        .expect("store")
        .expect("it knew the stored state");
    assert_eq!(after.seq, next.seq + 1);
    assert_eq!(
        store
            .endpoint_desired(&app)
            .await
            .expect("read")
            .expect("some")
            .issued_by,
        "after"
    );
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_contract_the_in_memory_one_is_held_to() {
    let store = fresh_store().await;
    ferry_core::memory::contract::migration_store(
        store.as_ref(),
        spec(&unique("contract-"), &unique("contract-app-")),
    )
    .await;
    ferry_core::memory::contract::endpoint_store(store.as_ref(), &unique("contract-app-")).await;
}
