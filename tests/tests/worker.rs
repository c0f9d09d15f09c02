//! The worker process under kill -9: killed at random moments of the copy and of streaming,
//! restarted each time, it still converges with no row lost or duplicated. Also drain and stop
//! commands, and clean-up asserted from the catalogs.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use ferry_core::{
    MigrationStore, ParamStore,
    state::{MigrationRecord, WorkerCommand, WorkerPhase, WorkerProgress},
};
use ferry_pg::catalog;
use ferry_replicator::verify;
use ferry_tests::{TestDb, bed_var, fresh_store, spec, unique, workload, workspace_bin};
use rand::Rng;

/// State store, SSM parameters and the migration record, as the preflight step leaves them.
async fn migration_for(db: &TestDb) -> (std::sync::Arc<ferry_aws::DynamoStore>, String) {
    migration_with(
        db,
        &db.source_app_url(),
        ferry_core::spec::CaptureMode::Trigger,
    )
    .await
}

/// The same, from `source` (a role with REPLICATION for logical capture) with `capture`.
async fn migration_with(
    db: &TestDb,
    source: &ferry_pg::PgUrl,
    capture: ferry_core::spec::CaptureMode,
) -> (std::sync::Arc<ferry_aws::DynamoStore>, String) {
    let store = fresh_store().await;
    let aws = ferry_aws::sdk_config().await;
    let params = ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(&aws));
    let id = unique("mig-");
    let prefix = format!("/{id}");
    let mut migration = spec(&id, "acme-prod");
    migration.source.database_url_param = format!("{prefix}/source-url");
    migration.target.database_url_param = format!("{prefix}/target-url");
    migration.replication.parallelism = 2;
    migration.replication.capture = capture;
    params
        .put_secure(&migration.source.database_url_param, source.expose_secret())
        .await
        .expect("param");
    params
        .put_secure(
            &migration.target.database_url_param,
            db.target_url().expose_secret(),
        )
        .await
        .expect("param");
    store
        .create_migration(&MigrationRecord::new(migration, Utc::now()))
        .await
        .expect("record");
    (store, id)
}

async fn send(store: &dyn MigrationStore, id: &str, command: WorkerCommand) -> u64 {
    store
        .send_command(id, command, "ferry:test", Utc::now())
        .await
        .expect("send command")
        .seq
}

/// Where a worker's stdout (its EMF metric lines) goes.
fn stdout_path(migration_id: &str, worker_id: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ferry-worker-{migration_id}-{worker_id}.out"))
}

/// The EMF metrics the worker printed so far, line by line.
fn worker_metrics(
    migration_id: &str,
    worker_id: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(stdout_path(migration_id, worker_id))
        .unwrap_or_default()
        .lines()
        .filter_map(ferry_core::metrics::parse)
        .filter(|m| m["MigrationId"] == migration_id)
        .collect()
}

fn spawn_worker(migration_id: &str, table: &str, worker_id: &str) -> Child {
    let stdout = std::fs::File::create(stdout_path(migration_id, worker_id))
        .expect("create the worker's stdout file");
    Command::new(workspace_bin("ferry-worker"))
        .stdout(stdout)
        .env("FERRY_MIGRATION_ID", migration_id)
        .env("FERRY_STATE_TABLE", table)
        .env("FERRY_WORKER_ID", worker_id)
        .env("FERRY_PG_BIN", bed_var("FERRY_BED_TARGET_BIN"))
        .env("FERRY_HEARTBEAT_MS", "50")
        .env("FERRY_ROWS_PER_CHUNK", "4000")
        .env("FERRY_BATCH_SIZE", "200")
        .env("FERRY_SCHEMA_CHECK_MS", "1000")
        .env("RUST_LOG", ferry_tests::worker_log_filter())
        // Its own process group, so a kill takes pg_dump/psql children with it, as stopping
        // an ECS task does.
        .process_group(0)
        .spawn()
        .expect("start ferry-worker")
}

/// SIGKILL to the worker's whole process group. The `-s KILL -- -PGID` form matters: procps-ng
/// 4's kill misreads `kill -9 -PGID` (seen here: it took down every process of the session).
fn kill9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s KILL -- -{} failed", child.id());
    let _ = child.wait();
}

/// Sends the stop-with-clean-up command and waits for the worker to exit successfully; returns
/// the command's sequence number.
async fn stop_with_cleanup(store: &dyn MigrationStore, id: &str, child: &mut Child) -> u64 {
    let seq = send(store, id, WorkerCommand::Stop { cleanup: true }).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "worker did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "worker exit {status}");
    seq
}

/// Every table equal on both sides, row for row.
async fn assert_equal(
    source: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    kills: usize,
) {
    let tables = catalog::tables(source).await.expect("catalog");
    for c in verify::verify(source, target, &tables, 20_000)
        .await
        .expect("verify")
    {
        assert!(
            c.equal(),
            "{} differs after {kills} kills: {:#?}",
            c.table,
            c.mismatches
        );
        assert_eq!(c.source_rows, c.target_rows);
    }
}

async fn wait_progress(
    store: &dyn MigrationStore,
    id: &str,
    what: &str,
    ok: impl Fn(&WorkerProgress) -> bool,
) -> WorkerProgress {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(p) = store.progress(id).await.expect("read progress")
            && ok(&p)
        {
            return p;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn serial_worker_survives_kill_9_in_copy_and_streaming() {
    let db = TestDb::heroku_like("kill_").await;
    let app_url = db.source_app_url();
    TestDb::load(&app_url, "coverage.sql").await;
    TestDb::load(&app_url, "coverage_data.sql").await;
    app_url
        .connect()
        .await
        .expect("source")
        .batch_execute(
            "CREATE TABLE bulk (id bigint PRIMARY KEY, label text NOT NULL, amount numeric(14, 2), doc jsonb);
             INSERT INTO bulk SELECT g, md5(g::text) || repeat('x', 40), g * 0.37, jsonb_build_object('g', g)
               FROM generate_series(1, 600000) g;
             -- No integer key: split by block ranges, and its updated rows move between them.
             CREATE TABLE bulk_uuid (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), seq bigint NOT NULL,
                                     label text NOT NULL);
             CREATE INDEX ON bulk_uuid (seq);
             INSERT INTO bulk_uuid (seq, label) SELECT g, md5(g::text) FROM generate_series(1, 150000) g;
             ANALYZE;",
        )
        .await
        .expect("bulk data");

    let (store, id) = migration_for(&db).await;

    // Writers all along: the coverage workload and updates of the big table.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![tokio::spawn(workload::run(
        app_url.clone(),
        stop.clone(),
        7,
        1_000_000,
        Duration::from_secs(600),
    ))];
    {
        let (url, stop) = (app_url.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let c = url.connect().await.expect("bulk writer");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let k = 1 + (n * 7919) % 600_000;
                let u = 1 + (n * 104_729) % 150_000;
                let sql = match n % 5 {
                    0 => format!("UPDATE bulk SET amount = amount + 1, doc = doc || '{{\"u\": {n}}}' WHERE id = {k}"),
                    1 => format!("DELETE FROM bulk WHERE id = {k}"),
                    2 => format!("INSERT INTO bulk VALUES ({}, 'new', 1, '{{}}') ON CONFLICT (id) DO UPDATE SET label = 'again'", 600_000 + n),
                    // An indexed column: never a HOT update, the row moves to another block.
                    3 => format!("UPDATE bulk_uuid SET seq = seq + 1000000, label = label || 'u' WHERE seq = {u}"),
                    _ => format!("DELETE FROM bulk_uuid WHERE seq = {u} + 1000000"),
                };
                let _ = c.batch_execute(&sql).await;
            }
            workload::WorkloadStats { committed: n, failed: 0 }
        }));
    }

    let (mut in_copy, mut in_stream, mut runs) = (0, 0, 0);
    let mut copied_before = 0;
    let mut rng = rand::rng();
    while (in_copy < 5 || in_stream < 5) && runs < 40 {
        runs += 1;
        let worker_id = format!("worker-{runs}");
        let mut child = spawn_worker(&id, store.table(), &worker_id);
        // Each incarnation gets to copy something (or to stream) before it dies, so the run
        // makes progress; then it dies at a random moment.
        let p = wait_progress(store.as_ref(), &id, "progress of the new worker", |p| {
            p.worker_id == worker_id
                && ((p.phase == WorkerPhase::Copying && p.rows_copied > copied_before)
                    || p.phase == WorkerPhase::Streaming)
        })
        .await;
        copied_before = p.rows_copied;
        let pause = if p.phase == WorkerPhase::Copying {
            rng.random_range(0..40)
        } else {
            rng.random_range(0..600)
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let at_kill = store.progress(&id).await.expect("progress").expect("some");
        kill9(&mut child);
        match at_kill.phase {
            WorkerPhase::Copying => in_copy += 1,
            WorkerPhase::Streaming => in_stream += 1,
            other => panic!("unexpected phase {other:?}"),
        }
    }
    eprintln!(
        "worker killed {in_copy} times while copying, {in_stream} times while streaming, {runs} runs"
    );
    assert!(
        in_copy >= 5 && in_stream >= 5,
        "kills: {in_copy} in copy, {in_stream} streaming after {runs} runs"
    );

    // A last worker runs to the end: writers stop, drain, verify, stop with clean-up.
    let mut child = spawn_worker(&id, store.table(), "worker-final");
    wait_progress(store.as_ref(), &id, "streaming", |p| {
        p.worker_id == "worker-final" && p.phase == WorkerPhase::Streaming
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let drain = store
        .send_command(
            &id,
            WorkerCommand::Drain { until: None },
            "ferry:test",
            Utc::now(),
        )
        .await
        .expect("drain");
    let p = wait_progress(store.as_ref(), &id, "drained", |p| {
        p.acked_command >= drain.seq && p.drained_to.is_some()
    })
    .await;
    assert_eq!(p.lag_changes, Some(0), "{p:?}");

    let source = app_url.connect().await.expect("source");
    let target = db.target_url().connect().await.expect("target");
    let uuid_chunks: i64 = target
        .query_one(
            "SELECT count(*) FROM ferry.copy_chunks WHERE rel = 'public.bulk_uuid'",
            &[],
        )
        .await
        .expect("the copy plan")
        .get(0);
    assert!(
        uuid_chunks > 10,
        "the uuid-keyed table was split: {uuid_chunks} chunk(s)"
    );
    assert_equal(&source, &target, runs).await;

    let stop_seq = stop_with_cleanup(store.as_ref(), &id, &mut child).await;
    let p = store.progress(&id).await.expect("progress").expect("some");
    assert_eq!((p.phase, p.acked_command), (WorkerPhase::Stopped, stop_seq));
    let leftovers = ferry_tests::capture_leftovers(&source).await;
    assert_eq!(leftovers, 0, "capture objects left on the source");
    let target_ferry: i64 = target
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'ferry'",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(target_ferry, 0, "bookkeeping left on the target");
}

/// Logical capture streamed over the replication protocol: the worker is killed while it
/// streams under writes, again and again (its walsender may outlive it for a moment: the next
/// one waits for the slot), and each new worker streams from the slot's confirmed position.
/// Nothing is lost or doubled, the slot only ever moved past what the target had committed,
/// and the stop drops the slot.
#[tokio::test]
async fn serial_worker_streaming_from_a_slot_survives_kill_9() {
    let db = TestDb::heroku_like("kills_").await;
    let app_url = db.source_app_url();
    let admin = db.url(ferry_tests::Side::Source);
    TestDb::load(&app_url, "coverage.sql").await;
    TestDb::load(&app_url, "coverage_data.sql").await;
    let (store, id) = migration_with(&db, &admin, ferry_core::spec::CaptureMode::Logical).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(workload::run(
        app_url.clone(),
        stop.clone(),
        11,
        1_000_000,
        Duration::from_secs(600),
    ));
    let watch = admin.connect().await.expect("source");
    let streamed_by_ferry = || async {
        watch
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'ferry'",
                &[],
            )
            .await
            .expect("pg_stat_replication")
            .get::<_, i64>(0)
    };
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut applied_before: Option<String> = None;
    for run in 1..=8 {
        let worker_id = format!("worker-{run}");
        let mut child = spawn_worker(&id, store.table(), &worker_id);
        // Each incarnation applies something before it dies.
        wait_progress(store.as_ref(), &id, "the new worker applying", |p| {
            p.worker_id == worker_id
                && p.phase == WorkerPhase::Streaming
                && p.applied_position.is_some()
                && p.applied_position != applied_before
        })
        .await;
        assert_eq!(
            streamed_by_ferry().await,
            1,
            "one walsender streams the slot"
        );
        if run == 1 {
            // PostgreSQL 15+: plain tables keyed by their primary key publish the key only;
            // the partitioned root publishes every column. The writers' UPDATEs and DELETEs
            // keep working on all of them (the workload counts failures).
            let published: Vec<(String, Vec<String>)> = watch
                .query(
                    "SELECT schemaname || '.' || tablename, attnames::text[]
                       FROM pg_publication_tables WHERE pubname = 'ferry_pub' ORDER BY 1",
                    &[],
                )
                .await
                .expect("publication")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let cols = |t: &str| {
                published
                    .iter()
                    .find(|(n, _)| n == t)
                    .map(|(_, c)| c.join(","))
                    .unwrap_or_default()
            };
            assert_eq!(cols("public.customers"), "id", "{published:?}");
            assert_eq!(cols("public.order_items"), "order_id,line_no");
            assert_eq!(cols("Billing.Invoices"), "InvoiceId");
            assert_eq!(cols("public.events"), "id,happened_on,kind,payload");
            // A column list that missed the replica identity would make these fail.
            app_url
                .connect()
                .await
                .expect("app")
                .batch_execute(
                    "BEGIN;
                     UPDATE customers SET name = name WHERE id = (SELECT min(id) FROM customers);
                     UPDATE order_items SET qty = qty WHERE order_id = (SELECT min(order_id) FROM order_items);
                     UPDATE \"Billing\".\"Invoices\" SET lines = lines
                      WHERE \"InvoiceId\" = (SELECT min(\"InvoiceId\"::text)::uuid FROM \"Billing\".\"Invoices\");
                     UPDATE events SET kind = kind WHERE id = (SELECT min(id) FROM events);
                     DELETE FROM documents WHERE id = (SELECT min(id) FROM documents);
                     ROLLBACK;",
                )
                .await
                .expect("the app's UPDATE and DELETE on published tables");
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        applied_before = store
            .progress(&id)
            .await
            .expect("progress")
            .expect("some")
            .applied_position;
        kill9(&mut child);
        kills += 1;
    }
    eprintln!("streaming worker killed {kills} times");

    let mut child = spawn_worker(&id, store.table(), "worker-final");
    wait_progress(store.as_ref(), &id, "streaming", |p| {
        p.worker_id == "worker-final" && p.phase == WorkerPhase::Streaming
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let stats = writer.await.expect("writer");
    assert!(
        stats.committed > 100,
        "writers committed {}",
        stats.committed
    );
    let drain = send(store.as_ref(), &id, WorkerCommand::Drain { until: None }).await;
    let p = wait_progress(store.as_ref(), &id, "drained", |p| {
        p.acked_command >= drain && p.drained_to.is_some()
    })
    .await;
    assert_eq!(p.lag_changes, Some(0), "{p:?}");
    // Drained means confirmed: the slot has moved to the drain position.
    let confirmed_past: bool = watch
        .query_one(
            "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots
              WHERE slot_name LIKE 'ferry%' AND database = current_database()",
            &[&p.drained_to],
        )
        .await
        .expect("slot")
        .get(0);
    assert!(confirmed_past, "slot confirmed up to the drain position");

    let target = db.target_url().connect().await.expect("target");
    assert_equal(&watch, &target, kills).await;

    stop_with_cleanup(store.as_ref(), &id, &mut child).await;
    let slots: i64 = watch
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ferry%'
                        AND database = current_database())
                  + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'ferry%')",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(slots, 0, "slot or publication left on the source");
    assert_eq!(ferry_tests::capture_leftovers(&watch).await, 0);
}

#[tokio::test]
async fn serial_worker_pauses_on_commands_and_on_schema_changes() {
    let db = TestDb::heroku_like("watch_").await;
    let app = db.source_app_url();
    TestDb::load(&app, "coverage.sql").await;
    TestDb::load(&app, "coverage_data.sql").await;
    let (store, id) = migration_for(&db).await;
    let mut child = spawn_worker(&id, store.table(), "watcher");
    wait_progress(store.as_ref(), &id, "streaming", |p| {
        p.phase == WorkerPhase::Streaming
    })
    .await;
    let source = app.connect().await.expect("source");
    let target = db.target_url().connect().await.expect("target");

    // Pause: changes wait in the log; resume: they are applied.
    let seq = send(store.as_ref(), &id, WorkerCommand::Pause).await;
    wait_progress(store.as_ref(), &id, "paused", |p| {
        p.acked_command == seq && p.paused
    })
    .await;
    source
        .batch_execute("UPDATE customers SET name = 'while paused' WHERE id <= 10")
        .await
        .expect("write");
    let p = wait_progress(store.as_ref(), &id, "lag visible", |p| {
        p.lag_changes.unwrap_or(0) >= 10
    })
    .await;
    assert!(p.paused);
    // The heartbeat's EMF lines carry what the progress item says.
    let mut metrics = worker_metrics(&id, "watcher");
    for _ in 0..50 {
        if metrics
            .iter()
            .any(|m| m.get("ChangesWaiting").and_then(serde_json::Value::as_f64) >= Some(10.0))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = worker_metrics(&id, "watcher");
    }
    assert!(
        metrics
            .iter()
            .any(|m| m.get("ChangesWaiting").and_then(serde_json::Value::as_f64) >= Some(10.0)),
        "no EMF line shows the changes waiting: {metrics:?}"
    );
    assert!(
        metrics
            .iter()
            .any(|m| m.get("CopiedBytes").and_then(serde_json::Value::as_f64) > Some(0.0))
    );
    assert!(
        metrics
            .iter()
            .any(|m| m.contains_key("ReplicationLagSeconds"))
    );
    assert!(metrics.iter().any(|m| m.contains_key("CopyBytesPerSecond")));
    let seq = send(store.as_ref(), &id, WorkerCommand::Resume { force: false }).await;
    wait_progress(store.as_ref(), &id, "caught up", |p| {
        p.acked_command == seq && !p.paused && p.lag_changes == Some(0)
    })
    .await;
    let n: i64 = target
        .query_one(
            "SELECT count(*) FROM customers WHERE name = 'while paused'",
            &[],
        )
        .await
        .expect("read")
        .get(0);
    assert_eq!(n, 10);

    // DDL on the source only: apply pauses with a named error naming the table.
    source
        .batch_execute("ALTER TABLE customers ADD COLUMN nickname text; UPDATE customers SET nickname = 'nick' WHERE id = 1")
        .await
        .expect("ddl");
    let p = wait_progress(store.as_ref(), &id, "schema block", |p| {
        p.paused && p.error_name.is_some()
    })
    .await;
    assert_eq!(p.error_name.as_deref(), Some("Ferry.Blocked.SchemaChanged"));
    assert!(
        p.error
            .as_deref()
            .is_some_and(|e| e.contains("public.customers")),
        "{p:?}"
    );
    // The same DDL on the target: apply resumes by itself, the new column's data arrives.
    target
        .batch_execute("ALTER TABLE customers ADD COLUMN nickname text")
        .await
        .expect("ddl");
    wait_progress(store.as_ref(), &id, "unblocked", |p| {
        !p.paused && p.error_name.is_none() && p.lag_changes == Some(0)
    })
    .await;
    let nick: Option<String> = target
        .query_one("SELECT nickname FROM customers WHERE id = 1", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(nick.as_deref(), Some("nick"));

    send(store.as_ref(), &id, WorkerCommand::Stop { cleanup: true }).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "worker did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One writer on the target, whatever ECS does: a worker waits for the target's writer lock
/// (held here by the test, as a worker that has not exited yet would hold it) and writes
/// nothing until it is free; SIGTERM, which ECS sends to stop a task, ends a worker at once
/// and cleanly (without a handler the worker, PID 1 in its container, would go on for 30 s);
/// the next worker then takes the lock and converges.
#[tokio::test]
async fn a_worker_waits_for_the_target_lock_and_exits_on_sigterm() {
    let db = TestDb::heroku_like("wrk_fence_").await;
    let source = db.source_app_url().connect().await.expect("source");
    source
        .batch_execute(
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text);
             INSERT INTO notes (body) SELECT 'n' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("seed");
    let (store, id) = migration_for(&db).await;
    let table = store.table().to_string();
    let holder = db.target_url().connect().await.expect("target");
    holder
        .query_one(
            "SELECT pg_advisory_lock($1)",
            &[&ferry_replicator::fence::LOCK_KEY],
        )
        .await
        .expect("hold the writer lock");

    let mut first = spawn_worker(&id, &table, "fence-a");
    // Ten heartbeats in Starting: it is alive and waiting, and has written nothing.
    let started = wait_progress(store.as_ref(), &id, "a first heartbeat", |_| true).await;
    let waiting = wait_progress(store.as_ref(), &id, "ten heartbeats while waiting", |p| {
        p.seq >= started.seq + 10
    })
    .await;
    assert_eq!(waiting.phase, WorkerPhase::Starting, "{waiting:?}");
    let target = db.target_url().connect().await.expect("target");
    let written: bool = target
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'ferry')
                 OR to_regclass('public.notes') IS NOT NULL",
            &[],
        )
        .await
        .expect("ferry schema")
        .get(0);
    assert!(!written, "the waiting worker wrote on the target");

    drop(holder);
    wait_progress(
        store.as_ref(),
        &id,
        "streaming once the lock is free",
        |p| p.phase == WorkerPhase::Streaming,
    )
    .await;
    let status = Command::new("kill")
        .args(["-s", "TERM", &first.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = first.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(exit.success(), "SIGTERM ends the worker cleanly: {exit}");

    source
        .batch_execute("INSERT INTO notes (body) SELECT 'm' || g FROM generate_series(1, 500) g")
        .await
        .expect("more writes");
    let mut second = spawn_worker(&id, &table, "fence-b");
    wait_progress(store.as_ref(), &id, "the next worker streaming", |p| {
        p.phase == WorkerPhase::Streaming && p.worker_id == "fence-b"
    })
    .await;
    let admin = ferry_tests::Side::Source
        .admin_url()
        .with_dbname(db.name())
        .connect()
        .await
        .expect("admin");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = target
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if n == 2500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the next worker did not catch up: {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_equal(&admin, &target, 0).await;
    stop_with_cleanup(store.as_ref(), &id, &mut second).await;
}
