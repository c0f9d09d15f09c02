//! End to end: the real state machine in the emulator runs the real function binaries
//! against real PostgreSQL while the sample app keeps writing through the weighted resolver.
//! Each test asserts outcomes (data, weights, locks, capture objects), not logs.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use ferry_core::{
    MigrationStore,
    state::{Gate, Phase, WorkerPhase},
    traffic::Weights,
};
use ferry_tests::{
    capture_leftovers,
    rehearsal::{App, Approver, EcsRunner, Options, Rehearsal, Scheduler},
};

const GATE_WAIT: Duration = Duration::from_secs(240);
const RUN_WAIT: Duration = Duration::from_secs(300);

impl Drop for World {
    fn drop(&mut self) {
        // Also on a failed assertion: no worker process outlives its test.
        self.shutdown();
    }
}

struct World {
    r: Rehearsal,
    runner: EcsRunner,
    scheduler: Scheduler,
    app: App,
    approver: Approver,
}

impl World {
    async fn new(options: Options) -> Self {
        let r = Rehearsal::new(&options).await;
        let runner = EcsRunner::start(&r.id);
        let scheduler = Scheduler::start(&r.id);
        let app = App::start(&r, options.writes_per_second);
        let approver = Approver::new(&r);
        Self {
            r,
            runner,
            scheduler,
            app,
            approver,
        }
    }

    fn shutdown(&self) {
        self.app.shutdown();
        self.scheduler.shutdown();
        self.runner.shutdown();
    }

    async fn decide(&self, exec: &str, gate: Gate, approve: bool) -> String {
        self.approver
            .decide(&self.r.id, exec, gate, approve, GATE_WAIT)
            .await
    }

    /// Ids acknowledged to the app's users that `db` does not hold.
    async fn lost_writes(&self, db: &ferry_pg::PgUrl) -> Vec<i64> {
        let acked = self.app.acked();
        assert!(!acked.is_empty(), "the app acknowledged no write at all");
        let client = db.connect().await.expect("connect");
        let present: Vec<i64> = client
            .query("SELECT id FROM orders WHERE id = ANY($1)", &[&acked])
            .await
            .expect("read orders")
            .iter()
            .map(|r| r.get(0))
            .collect();
        acked
            .into_iter()
            .filter(|id| !present.contains(id))
            .collect()
    }

    async fn wait_state(&self, exec: &str, state: &str) {
        let deadline = std::time::Instant::now() + GATE_WAIT;
        while self.r.current_state(exec).await.as_deref() != Some(state) {
            assert!(
                std::time::Instant::now() < deadline,
                "never reached {state}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the worker reports nothing waiting (forward or reverse) in a heartbeat
    /// written after this call began.
    async fn caught_up(&self, phase: WorkerPhase) {
        let since = chrono::Utc::now();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.r.store.progress(&self.r.id).await.expect("progress")
                && p.phase == phase
                && p.heartbeat_at > since
                && p.lag_changes == Some(0)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker never caught up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn tables_equal(a: &ferry_pg::PgUrl, b: &ferry_pg::PgUrl) {
    let (a, b) = (a.connect().await.expect("a"), b.connect().await.expect("b"));
    let tables = ferry_pg::catalog::tables(&a).await.expect("catalog");
    let checks = ferry_replicator::verify::verify(&a, &b, &tables, 50_000)
        .await
        .expect("verify");
    for c in &checks {
        assert!(c.equal(), "{} differs: {c:?}", c.table);
    }
    assert_eq!(checks.len(), 3);
}

/// 1. Happy path: SUCCEEDED; target == source by checksums; no acknowledged write lost;
///    Route 53 ends 100% AWS; capture objects cleaned up; lock released.
#[tokio::test]
async fn happy_path_moves_the_app_with_no_lost_write() {
    let w = World::new(Options {
        rollback_window_seconds: 600,
        ..Options::default()
    })
    .await;
    let exec = w.r.start_with_cli(&w.r.id);
    w.decide(&exec, Gate::ShiftTraffic, true).await;
    w.decide(&exec, Gate::Cutover, true).await;
    w.wait_state(&exec, "RollbackWindow").await;
    // The app stops; the reverse stream brings the source level; then finish early.
    w.app.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.caught_up(WorkerPhase::Reverse).await;
    tables_equal(&w.r.source_admin, &w.r.target).await;
    w.decide(&exec, Gate::Finish, true).await;
    let (status, error, _) = w.r.finished(&exec, RUN_WAIT).await;
    w.shutdown();
    assert_eq!(status, ExecutionStatus::Succeeded, "error: {error:?}");
    assert_eq!(w.lost_writes(&w.r.target).await, Vec::<i64>::new());
    assert_eq!(
        w.r.weights().await,
        Some(Weights {
            heroku: 0,
            aws: 100
        })
    );
    for db in [&w.r.source_admin, &w.r.target] {
        let c = db.connect().await.expect("connect");
        assert_eq!(capture_leftovers(&c).await, 0);
    }
    assert!(w.r.store.app_lock(&w.r.app).await.expect("lock").is_none());
    assert_eq!(
        w.r.store.migration(&w.r.id).await.expect("rec").phase,
        Phase::Completed
    );
}
