//! The replication engine on real servers: consistent copy plus trigger capture under
//! concurrent writes converges, PG 15 → 15 and PG 15 → newer.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ferry_core::spec::CaptureMode;
use ferry_pg::PgUrl;
use ferry_replicator::{
    engine::{Config, Replicator, stage},
    schema::Tools,
};
use ferry_tests::{Side, TestDb, bed_var, workload};

/// pg_dump and psql of the target's major version (never older than the source's): a newer
/// pg_dump writes settings an older server does not know.
fn config(source: PgUrl, target: PgUrl, target_side: Side, capture: CaptureMode) -> Config {
    let bin = match target_side {
        Side::Source | Side::Legacy => "FERRY_BED_SOURCE_BIN",
        Side::Target => "FERRY_BED_TARGET_BIN",
    };
    Config {
        source,
        target,
        tools: Tools {
            bin_dir: PathBuf::from(bed_var(bin)),
        },
        parallelism: 2,
        rows_per_chunk: 100,
        batch_size: 150,
        capture,
        max_copy_bytes_per_second: None,
        logical_transport: ferry_core::spec::LogicalTransport::default(),
    }
}

async fn converges_under_writes(
    db: &TestDb,
    source: PgUrl,
    target: PgUrl,
    target_side: Side,
    capture: CaptureMode,
) {
    let cfg = config(source, target, target_side, capture);
    converges_with(db, cfg).await;
}

async fn converges_with(db: &TestDb, cfg: Config) {
    let target = cfg.target.clone();
    TestDb::load(&db.source_app_url(), "coverage.sql").await;
    TestDb::load(&db.source_app_url(), "coverage_data.sql").await;
    db.source_app_url()
        .connect()
        .await
        .expect("source")
        .batch_execute("ANALYZE")
        .await
        .expect("analyze");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|seed| {
            tokio::spawn(workload::run(
                db.source_app_url(),
                stop.clone(),
                seed,
                20_000,
                Duration::from_secs(60),
            ))
        })
        .collect();

    // The copy runs while the writers change rows, including rows of chunks being copied.
    let mut rep = Replicator::connect(cfg).await.expect("connect");
    rep.prepare().await.expect("prepare");
    assert_eq!(
        rep.stage().await.expect("stage").as_deref(),
        Some(stage::STREAMING)
    );
    let status = rep.status().await.expect("status");
    assert!(status.rows_copied >= 1_600, "copied {}", status.rows_copied);
    assert_eq!(status.tables_done, status.tables_total);
    // The planner has statistics on every table, the partitioned ones included (autovacuum
    // never analyses those): reltuples is -1 until a table is first analysed.
    let unanalysed: Vec<String> = target
        .connect()
        .await
        .expect("target")
        .query(
            "SELECT c.relkind::text || ' ' || c.oid::regclass::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'ferry')
                AND c.relkind IN ('r', 'p') AND c.reltuples < 0",
            &[],
        )
        .await
        .expect("reltuples")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unanalysed.is_empty(), "not analysed: {unanalysed:?}");

    // Stream for a while with the writers still going, then stop them and drain.
    for _ in 0..20 {
        rep.apply_once().await.expect("apply");
    }
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for w in writers {
        let stats = w.await.expect("writer");
        committed += stats.committed;
    }
    assert!(
        committed > 50,
        "writers committed only {committed} transactions"
    );
    rep.drain(None).await.expect("drain");

    let checks = rep.verify().await.expect("verify");
    assert_eq!(checks.len(), 5, "{checks:#?}");
    for c in &checks {
        assert!(c.equal(), "{} differs: {:#?}", c.table, c.mismatches);
        assert!(c.source_rows > 0, "{} is empty", c.table);
    }
    // Verification is not vacuous: one changed value on the target is found, in its chunk.
    let t = target.connect().await.expect("target");
    t.batch_execute("UPDATE order_items SET qty = qty + 1 WHERE (order_id, line_no) = (SELECT order_id, line_no FROM order_items ORDER BY 1, 2 LIMIT 1)")
        .await
        .expect("tamper");
    t.batch_execute(
        "UPDATE customers SET name = 'tampered' WHERE id = (SELECT max(id) FROM customers)",
    )
    .await
    .expect("tamper");
    let checks = rep.verify().await.expect("verify");
    let bad: Vec<&str> = checks
        .iter()
        .filter(|c| !c.equal())
        .map(|c| c.table.as_str())
        .collect();
    assert_eq!(bad, ["public.customers", "public.order_items"]);
    let customers = checks
        .iter()
        .find(|c| c.table == "public.customers")
        .expect("customers");
    assert_eq!(
        customers.mismatches.len(),
        1,
        "only the tampered chunk differs"
    );
    assert!(
        customers.mismatches[0].hi.is_some(),
        "integer keys are checked in ranges"
    );

    let status = rep.status().await.expect("status");
    assert_eq!(status.lag_changes, 0);
    assert!(status.changes_applied > 0);

    // Sequences: the next id on the target is above every id the source handed out.
    assert!(rep.sync_sequences(1000).await.expect("sync sequences") >= 3);
    let src_max: i64 = db
        .source_app_url()
        .connect()
        .await
        .expect("source")
        .query_one("SELECT max(id) FROM customers", &[])
        .await
        .expect("max")
        .get(0);
    let next: i64 = target
        .connect()
        .await
        .expect("target")
        .query_one("SELECT nextval('customers_id_seq')", &[])
        .await
        .expect("nextval")
        .get(0);
    assert!(next > src_max + 1000, "next {next} vs source max {src_max}");

    // Cleanup leaves nothing behind on the source.
    rep.cleanup().await.expect("cleanup");
    let source = db.source_app_url().connect().await.expect("source");
    let leftovers: i64 = source
        .query_one(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ferry\\_%')
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'ferry')
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ferry')
                  + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ferry%' AND database = current_database())
                  + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'ferry%')",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(leftovers, 0);
}

/// Trigger capture (the stock Heroku case) from the app's own database into the newer target,
/// under writes.
async fn trigger_capture_converges_into_the_newer_target(db: TestDb) {
    converges_under_writes(
        &db,
        db.source_app_url(),
        db.target_url(),
        Side::Target,
        CaptureMode::Trigger,
    )
    .await;
}

#[tokio::test]
async fn trigger_capture_converges_from_pg15_to_the_newer_target() {
    assert!(
        Side::Target.major() > Side::Source.major(),
        "the bed's target is newer"
    );
    trigger_capture_converges_into_the_newer_target(TestDb::heroku_like("rep_up_").await).await;
}

/// Heroku still runs PostgreSQL 14: the same from a 14 source.
#[tokio::test]
async fn trigger_capture_converges_from_a_pg14_source() {
    assert_eq!(Side::Legacy.major(), 14);
    trigger_capture_converges_into_the_newer_target(TestDb::heroku_like_pg14("rep_14_").await)
        .await;
}

#[tokio::test]
async fn trigger_capture_converges_between_same_versions() {
    let db = TestDb::heroku_like_same_version("rep_same_").await;
    converges_under_writes(
        &db,
        db.source_app_url(),
        db.target_url(),
        Side::Source,
        CaptureMode::Trigger,
    )
    .await;
}

// Logical capture needs REPLICATION (or superuser) on the source: RDS, self-hosted, or
// Heroku after a support grant. The writers still write as the app role.
#[tokio::test]
async fn serial_logical_capture_converges_from_pg15_to_the_newer_target() {
    let db = TestDb::heroku_like("rep_lup_").await;
    converges_under_writes(
        &db,
        db.url(Side::Source),
        db.target_url(),
        Side::Target,
        CaptureMode::Logical,
    )
    .await;
}

/// The slot read through the SQL functions (`logical_transport: sql`, for a source behind a
/// pooler that refuses replication sessions) instead of streamed.
#[tokio::test]
async fn serial_logical_capture_over_the_sql_functions_converges_between_same_versions() {
    let db = TestDb::heroku_like_same_version("rep_lsame_").await;
    let mut cfg = config(
        db.url(Side::Source),
        db.target_url(),
        Side::Source,
        CaptureMode::Logical,
    );
    cfg.logical_transport = ferry_core::spec::LogicalTransport::Sql;
    converges_with(&db, cfg).await;
}

#[tokio::test]
async fn reverse_replication_brings_writes_made_after_cutover_back_to_the_source() {
    reverse_brings_writes_back(TestDb::heroku_like("rep_rev_").await).await;
}

/// The same onto a PostgreSQL 14 source, which is then the write side: the apply's check of
/// what the role may set must not name `has_parameter_privilege`, which 14 lacks (the
/// query failed whatever guarded it).
#[tokio::test]
async fn reverse_replication_onto_a_pg14_source() {
    reverse_brings_writes_back(TestDb::heroku_like_pg14("rep_rev14_").await).await;
}

async fn reverse_brings_writes_back(db: TestDb) {
    let source = db.source_app_url();
    let target = db.target_url();
    TestDb::load(&source, "coverage.sql").await;
    TestDb::load(&source, "coverage_data.sql").await;
    let mut rep = Replicator::connect(config(
        source.clone(),
        target.clone(),
        Side::Target,
        CaptureMode::Trigger,
    ))
    .await
    .expect("connect");
    rep.prepare().await.expect("prepare");
    rep.drain(None).await.expect("drain forward");
    rep.sync_sequences(1000).await.expect("sequences");

    // Cutover: the app now writes to the target; the source (as on stock Heroku: no
    // superuser, no session_replication_role) is kept in sync for a lossless rollback.
    rep.start_reverse().await.expect("reverse");
    rep.start_reverse()
        .await
        .expect("reverse twice is harmless");
    let stop = Arc::new(AtomicBool::new(false));
    let stats = workload::run_with(
        target.clone(),
        stop,
        11,
        1_500,
        Duration::from_secs(60),
        false,
    )
    .await;
    assert!(stats.committed > 1_000, "{stats:?}");
    rep.drain(None).await.expect("drain reverse");

    let src = source.connect().await.expect("source");
    let tgt = target.connect().await.expect("target");
    let tables = ferry_pg::catalog::tables(&src).await.expect("catalog");
    for c in ferry_replicator::verify::verify(&src, &tgt, &tables, 100)
        .await
        .expect("verify")
    {
        assert!(
            c.equal(),
            "{} differs after reverse: {:#?}",
            c.table,
            c.mismatches
        );
    }
    let triggers = |client: tokio_postgres::Client| async move {
        client
            .query_one(
                "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ferry\\_%'",
                &[],
            )
            .await
            .expect("catalog")
            .get::<_, i64>(0)
    };
    assert_eq!(triggers(src).await, 0, "forward capture is off the source");
    assert!(triggers(tgt).await > 0, "reverse capture is on the target");
    assert_eq!(rep.status().await.expect("status").lag_changes, 0);
    rep.cleanup().await.expect("cleanup");
}

async fn truncate_converges(capture: CaptureMode) {
    let db = TestDb::heroku_like(if capture == CaptureMode::Logical {
        "rep_trl_"
    } else {
        "rep_trt_"
    })
    .await;
    // Logical capture needs the REPLICATION attribute: use the admin role for it.
    let source = if capture == CaptureMode::Logical {
        db.url(Side::Source)
    } else {
        db.source_app_url()
    };
    TestDb::load(&db.source_app_url(), "coverage.sql").await;
    TestDb::load(&db.source_app_url(), "coverage_data.sql").await;
    let target = db.target_url();
    let mut rep = Replicator::connect(config(
        source.clone(),
        target.clone(),
        Side::Target,
        capture,
    ))
    .await
    .expect("connect");
    rep.prepare().await.expect("prepare");
    let src = db.source_app_url().connect().await.expect("source");
    src.batch_execute(
        "INSERT INTO order_items VALUES (9001, 1, 'before', 1, 1);
         TRUNCATE order_items;
         INSERT INTO order_items VALUES (9002, 1, 'after', 2, 2), (9002, 2, 'after', 3, 3);
         UPDATE documents SET title = 'kept' WHERE id = 1;",
    )
    .await
    .expect("truncate and write");
    rep.drain(None).await.expect("drain");
    let tgt = target.connect().await.expect("target");
    let rows: Vec<(i64, String)> = tgt
        .query("SELECT order_id, sku FROM order_items ORDER BY 1, 2", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [(9002, "after".to_string()), (9002, "after".to_string())]
    );
    let tables = ferry_pg::catalog::tables(&src).await.expect("catalog");
    for c in ferry_replicator::verify::verify(&src, &tgt, &tables, 100)
        .await
        .expect("verify")
    {
        assert!(c.equal(), "{} differs: {:#?}", c.table, c.mismatches);
    }
    rep.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn truncate_is_replicated_by_trigger_capture() {
    truncate_converges(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn serial_truncate_is_replicated_by_logical_capture() {
    truncate_converges(CaptureMode::Logical).await;
}

/// Capture triggers run with the writer's rights: a role that writes the app's tables but owns
/// neither them nor Ferry's log must still write (its writes must never fail because of Ferry)
/// and be captured.
#[tokio::test]
async fn writes_by_a_role_that_owns_nothing_are_captured() {
    let db = TestDb::heroku_like("rep_role_").await;
    let source = db.source_app_url();
    TestDb::load(&source, "coverage.sql").await;
    TestDb::load(&source, "coverage_data.sql").await;
    let mut rep = Replicator::connect(config(
        source.clone(),
        db.target_url(),
        Side::Target,
        CaptureMode::Trigger,
    ))
    .await
    .expect("connect");
    rep.prepare().await.expect("prepare");

    let role = ferry_tests::unique("writer_");
    let admin = Side::Source.admin_url().connect().await.expect("admin");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'writer-password' NOSUPERUSER"
        ))
        .await
        .expect("create role");
    source
        .connect()
        .await
        .expect("owner")
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON order_items TO {role};
             GRANT SELECT, UPDATE ON customers TO {role};"
        ))
        .await
        .expect("grant");
    let writer_url = source.expose_secret().replacen(
        &format!("{}:heroku-app-password@", ferry_tests::APP_ROLE),
        &format!("{role}:writer-password@"),
        1,
    );
    let writer = ferry_pg::PgUrl::parse(&writer_url)
        .expect("url")
        .connect()
        .await
        .expect("writer");
    let result = writer
        .batch_execute(
            "INSERT INTO order_items VALUES (7777, 1, 'by another role', 1, 1);
             UPDATE customers SET name = 'renamed by another role' WHERE id = 2;
             DELETE FROM order_items WHERE order_id = 1;",
        )
        .await;
    drop(writer);
    rep.drain(None).await.expect("drain");
    let target = db.target_url().connect().await.expect("target");
    let found: (i64, i64, i64) = {
        let r = target
            .query_one(
                "SELECT (SELECT count(*) FROM order_items WHERE sku = 'by another role'),
                        (SELECT count(*) FROM customers WHERE name = 'renamed by another role'),
                        (SELECT count(*) FROM order_items WHERE order_id = 1)",
                &[],
            )
            .await
            .expect("read");
        (r.get(0), r.get(1), r.get(2))
    };
    rep.cleanup().await.expect("cleanup");
    let owner = source.connect().await.expect("owner");
    let _ = owner.batch_execute(&format!("DROP OWNED BY {role}")).await;
    let _ = admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
    result.unwrap_or_else(|e| {
        panic!(
            "a non-owner's writes failed under capture: {}",
            ferry_pg::describe(&e)
        )
    });
    assert_eq!(
        found,
        (1, 1, 0),
        "the other role's insert, update and delete reached the target"
    );
}

/// A copy plan whose writing fails part-way (a worker killed between chunks) leaves nothing
/// stored, so the next attempt plans the whole table again instead of trusting a partial plan
/// and never copying its top key ranges.
#[tokio::test]
async fn a_copy_plan_cut_short_is_not_trusted() {
    let db = TestDb::new("plan_").await;
    let source = db.url(Side::Source).connect().await.expect("source");
    source
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, note text);
             INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 5000) g;
             ANALYZE items;",
        )
        .await
        .expect("source data");
    let target = db.url(Side::Target).connect().await.expect("target");
    ferry_replicator::bookkeeping::ensure(&target)
        .await
        .expect("bookkeeping");
    // The fourth chunk's row cannot be written: the plan's writer dies there.
    target
        .batch_execute(
            "CREATE FUNCTION ferry.die_at_chunk_3() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.chunk = 3 THEN RAISE EXCEPTION 'killed while writing the plan'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER die BEFORE INSERT ON ferry.copy_chunks
                 FOR EACH ROW EXECUTE FUNCTION ferry.die_at_chunk_3();",
        )
        .await
        .expect("fault");
    let tables = ferry_pg::catalog::tables(&source).await.expect("catalog");
    let cut = ferry_replicator::copy::plan(&source, &target, &tables, 500).await;
    assert!(cut.is_err(), "the plan's write failed");
    let left: i64 = target
        .query_one("SELECT count(*) FROM ferry.copy_chunks", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "nothing of a plan cut short is stored");
    target
        .batch_execute("DROP TRIGGER die ON ferry.copy_chunks")
        .await
        .expect("drop fault");
    let chunks = ferry_replicator::copy::plan(&source, &target, &tables, 500)
        .await
        .expect("plan again");
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    assert_eq!(
        chunks.last().and_then(|c| c.hi),
        None,
        "the top range is planned"
    );
}

async fn count(target: &tokio_postgres::Client, sql: &str) -> i64 {
    target.query_one(sql, &[]).await.expect(sql).get(0)
}

/// The target as the pre-data restore leaves it for a copy test: Ferry's bookkeeping and the
/// tables of `ddl` (without keys); with the source's catalog.
async fn bare_target(
    target_url: &PgUrl,
    source: &tokio_postgres::Client,
    ddl: &str,
) -> (tokio_postgres::Client, Vec<ferry_pg::catalog::Table>) {
    let target = target_url.connect().await.expect("target");
    ferry_replicator::bookkeeping::ensure(&target)
        .await
        .expect("bookkeeping");
    target.batch_execute(ddl).await.expect("target tables");
    let tables = ferry_pg::catalog::tables(source).await.expect("catalog");
    (target, tables)
}

/// A copy planned under a new exported snapshot: the session holding it, the snapshot, the
/// chunks (1,000 rows each).
async fn plan_under_snapshot(
    source_url: &PgUrl,
    target: &tokio_postgres::Client,
    tables: &[ferry_pg::catalog::Table],
) -> (
    tokio_postgres::Client,
    String,
    Vec<ferry_replicator::copy::Chunk>,
) {
    let mut holder = source_url.connect().await.expect("holder");
    let snapshot = ferry_replicator::copy::export_snapshot(&mut holder)
        .await
        .expect("snapshot");
    let chunks = ferry_replicator::copy::plan(&holder, target, tables, 1000)
        .await
        .expect("plan");
    (holder, snapshot, chunks)
}

/// `docs`: 20,000 rows keyed by a uuid, the block-split table of the resumed-copy tests.
async fn seed_docs(source: &tokio_postgres::Client) {
    source
        .batch_execute(
            "CREATE TABLE docs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), n int NOT NULL, body text NOT NULL);
             INSERT INTO docs (n, body) SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
             ANALYZE docs;",
        )
        .await
        .expect("source docs");
}

/// A first copy run that copies `chunks` under `snapshot` (held by `holder`) and dies.
async fn die_after_copying(
    source_url: &PgUrl,
    target_url: &PgUrl,
    holder: tokio_postgres::Client,
    snapshot: &str,
    tables: &[ferry_pg::catalog::Table],
    chunks: Vec<ferry_replicator::copy::Chunk>,
) {
    use ferry_replicator::copy;
    let sessions = copy::Sessions {
        parallelism: 2,
        ..Default::default()
    };
    copy::run(source_url, target_url, snapshot, tables, chunks, sessions)
        .await
        .expect("the first run's chunks");
    holder.batch_execute("COMMIT").await.expect("end snapshot");
}

/// Every row of `docs` updated: full pages, so each new version lands in a later block.
async fn move_every_doc(source: &tokio_postgres::Client) {
    source
        .batch_execute("UPDATE docs SET n = n + 1, body = body || 'x'")
        .await
        .expect("move every row");
}

/// A restarted copy: plans again (resuming the stored plan) and copies what is not done.
async fn copy_under_a_new_snapshot(
    source_url: &PgUrl,
    target_url: &PgUrl,
    target: &tokio_postgres::Client,
    tables: &[ferry_pg::catalog::Table],
) {
    use ferry_replicator::copy;
    let mut holder = source_url.connect().await.expect("holder");
    let snapshot = copy::export_snapshot(&mut holder).await.expect("snapshot");
    let chunks = copy::plan(&holder, target, tables, 1000)
        .await
        .expect("resume");
    copy::run(
        source_url,
        target_url,
        &snapshot,
        tables,
        chunks,
        copy::Sessions {
            parallelism: 2,
            ..Default::default()
        },
    )
    .await
    .expect("copy the rest");
    holder.batch_execute("COMMIT").await.expect("end snapshot");
}

/// Keys and indexes are built while the copy runs, each table's as soon as its last chunk is
/// in: a block-split table resumed part-way (so holding some rows twice) is deduplicated before
/// its primary key is built, or the build would fail on the doubles; the post-data stage then
/// skips what was built and adds the rest.
#[tokio::test]
async fn keys_are_built_as_each_table_is_copied_a_resumed_table_deduplicated_first() {
    use ferry_replicator::{copy, postdata, schema};
    let db = TestDb::new("asbuilt_").await;
    let source_url = db.url(Side::Source);
    let target_url = db.url(Side::Target);
    let source = source_url.connect().await.expect("source");
    seed_docs(&source).await;
    source
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, doc uuid, body text);
             INSERT INTO notes SELECT g, NULL, 'n' || g FROM generate_series(1, 300) g;
             ANALYZE notes;",
        )
        .await
        .expect("source data");
    let mut target = target_url.connect().await.expect("target");
    ferry_replicator::bookkeeping::ensure(&target)
        .await
        .expect("bookkeeping");
    target
        .batch_execute(
            "CREATE TABLE docs (id uuid, n int NOT NULL, body text NOT NULL);
             CREATE TABLE notes (id int, doc uuid, body text);",
        )
        .await
        .expect("target tables");
    let tables = ferry_pg::catalog::tables(&source).await.expect("catalog");
    let post = schema::split_post_data(
        "ALTER TABLE ONLY public.docs\n    ADD CONSTRAINT docs_pkey PRIMARY KEY (id);\n\n\
         ALTER TABLE ONLY public.notes\n    ADD CONSTRAINT notes_pkey PRIMARY KEY (id);\n\n\
         CREATE INDEX notes_doc ON public.notes USING btree (doc);\n\n\
         ALTER TABLE ONLY public.notes\n    ADD CONSTRAINT notes_doc_fkey FOREIGN KEY (doc) REFERENCES public.docs(id);\n",
    );
    let sizes = tables
        .iter()
        .map(|t| (t.display_name(), t.total_bytes))
        .collect();

    // A first run copies half of docs' chunks and dies; every row then moves on the source.
    let mut holder = source_url.connect().await.expect("holder");
    let snapshot = copy::export_snapshot(&mut holder).await.expect("snapshot");
    let chunks = copy::plan(&holder, &target, &tables, 1000)
        .await
        .expect("plan");
    let first: Vec<_> = chunks
        .iter()
        .filter(|c| c.rel == "public.docs")
        .cloned()
        .collect();
    let copied = first[..first.len() / 2].to_vec();
    die_after_copying(&source_url, &target_url, holder, &snapshot, &tables, copied).await;
    move_every_doc(&source).await;

    // The restart: the copy and the builds together.
    let mut holder = source_url.connect().await.expect("holder");
    let snapshot = copy::export_snapshot(&mut holder).await.expect("snapshot");
    let chunks = copy::plan(&holder, &target, &tables, 1000)
        .await
        .expect("resume");
    let (finished, copied) = tokio::sync::mpsc::unbounded_channel();
    let copying = copy::run(
        &source_url,
        &target_url,
        &snapshot,
        &tables,
        chunks,
        copy::Sessions {
            parallelism: 2,
            finished: Some(finished),
            ..Default::default()
        },
    );
    let building = postdata::build_as_copied(&target_url, &post, &sizes, 2, copied);
    tokio::try_join!(copying, building).expect("copy and build");
    holder.batch_execute("COMMIT").await.expect("end snapshot");

    let built = "SELECT count(*) FROM pg_indexes WHERE indexname IN ('docs_pkey', 'notes_pkey', 'notes_doc')";
    assert_eq!(
        count(&target, built).await,
        3,
        "every key and index built during the copy"
    );
    assert_eq!(count(&target, "SELECT count(*) FROM docs").await, 20_000);
    assert_eq!(count(&target, "SELECT count(*) FROM notes").await, 300);
    assert_eq!(
        count(
            &target,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'notes_doc_fkey'"
        )
        .await,
        0,
        "a foreign key waits for the post-data stage"
    );
    // The post-data stage: what was built is skipped (adding a key twice would fail).
    postdata::restore(&target_url, &post, &sizes, 2)
        .await
        .expect("post-data after the builds");
    assert_eq!(
        count(
            &target,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'notes_doc_fkey'"
        )
        .await,
        1
    );
    assert_eq!(
        copy::dedupe_resumed(&mut target, &tables)
            .await
            .expect("dedupe"),
        0,
        "deduplicated before its key was built"
    );
}

/// A uuid-keyed table is split by block ranges; resumed part-way after its rows moved (updated)
/// it holds some rows twice until the deduplication, which leaves each key once; rewritten
/// meanwhile (VACUUM FULL) it is copied again from the start.
#[tokio::test]
async fn a_table_without_an_integer_key_is_split_by_blocks_and_resumes_without_doubles() {
    use ferry_replicator::copy;
    let db = TestDb::new("ctid_").await;
    let source_url = db.url(Side::Source);
    let target_url = db.url(Side::Target);
    let source = source_url.connect().await.expect("source");
    seed_docs(&source).await;
    // What the pre-data restore creates: the table without its key.
    let (mut target, tables) = bare_target(
        &target_url,
        &source,
        "CREATE TABLE docs (id uuid, n int NOT NULL, body text NOT NULL)",
    )
    .await;

    // First run: plan under a snapshot, copy half the chunks, die.
    let (holder, snapshot, chunks) = plan_under_snapshot(&source_url, &target, &tables).await;
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    assert_eq!(chunks[0].lo, None);
    assert!(
        chunks[0].hi.is_some_and(|b| b > 0),
        "block bounds: {chunks:?}"
    );
    let half = chunks.len() / 2;
    let copied = chunks[..half].to_vec();
    die_after_copying(&source_url, &target_url, holder, &snapshot, &tables, copied).await;
    move_every_doc(&source).await;

    // The restart: the rest under a new snapshot, then the deduplication.
    copy_under_a_new_snapshot(&source_url, &target_url, &target, &tables).await;
    let doubled = count(&target, "SELECT count(*) - count(DISTINCT id) FROM docs").await;
    assert!(
        doubled > 0,
        "rows that moved after the first half were copied twice"
    );
    let deleted = copy::dedupe_resumed(&mut target, &tables)
        .await
        .expect("dedupe");
    assert_eq!(deleted as i64, doubled);
    assert_eq!(
        count(&target, "SELECT count(DISTINCT id) FROM docs").await,
        20_000
    );
    assert_eq!(count(&target, "SELECT count(*) FROM docs").await, 20_000);
    assert_eq!(
        copy::dedupe_resumed(&mut target, &tables)
            .await
            .expect("again"),
        0,
        "the mark went with the deletion"
    );

    // Rewritten part-way: copied again from the start, nothing doubled.
    target
        .batch_execute(
            "TRUNCATE docs; UPDATE ferry.copy_chunks SET done = (chunk < 3), rows = 0, bytes = 0",
        )
        .await
        .expect("part-way again");
    source
        .batch_execute("VACUUM FULL docs")
        .await
        .expect("rewrite");
    copy_under_a_new_snapshot(&source_url, &target_url, &target, &tables).await;
    assert_eq!(count(&target, "SELECT count(*) FROM docs").await, 20_000);
    assert_eq!(
        count(&target, "SELECT count(DISTINCT id) FROM docs").await,
        20_000
    );
    assert_eq!(
        count(
            &target,
            "SELECT count(*) FROM ferry.state WHERE key LIKE 'copy_dedupe:%'"
        )
        .await,
        0
    );
}

/// The trigger log's layout: a single integer or uuid key goes into a typed column, any other
/// key into jsonb, and the reader turns each back into the same JSON array, in order, old and
/// new key of a re-keyed row alike; a log from the earlier layout (identity primary key, jsonb
/// only) is brought to this one with its rows kept; the log is trimmed by row location, and a
/// row that moved (a table rewrite) between the read and the trim is kept, not another row deleted.
#[tokio::test]
async fn the_trigger_log_keeps_typed_keys_and_is_trimmed_by_location() {
    use ferry_replicator::{KeyChange, capture::trigger};
    use serde_json::json;

    let db = TestDb::new("tlog_").await;
    let c = db.url(Side::Source).connect().await.expect("source");
    c.batch_execute(
        r#"CREATE TABLE ints (id int PRIMARY KEY, v text);
           CREATE TABLE "Uu" (id uuid PRIMARY KEY, v text);
           CREATE TABLE pairs (a text, b int, v text, PRIMARY KEY (a, b));
           CREATE SCHEMA ferry;
           CREATE TABLE ferry.changes (
               id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rel text NOT NULL, pk jsonb,
               at timestamptz NOT NULL DEFAULT clock_timestamp());
           INSERT INTO ferry.changes (rel, pk) VALUES ('public.ints', '[99]');"#,
    )
    .await
    .expect("schema");
    let tables = ferry_pg::catalog::tables(&c).await.expect("catalog");
    trigger::install(&c, &tables).await.expect("install");
    trigger::install(&c, &tables).await.expect("install again");
    let (u1, u2) = (
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000002",
    );
    c.batch_execute(&format!(
        r#"INSERT INTO ints VALUES (1, 'a');
           UPDATE ints SET v = 'b';
           UPDATE ints SET id = 2 WHERE id = 1;
           DELETE FROM ints;
           INSERT INTO "Uu" VALUES ('{u1}', 'a');
           UPDATE "Uu" SET id = '{u2}';
           INSERT INTO pairs VALUES ('x', 1, 'a');
           UPDATE pairs SET b = 2;
           TRUNCATE pairs;"#
    ))
    .await
    .expect("writes");

    let shape: (i64, i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM pg_index WHERE indrelid = 'ferry.changes'::regclass),
                        count(k), count(u), count(pk) FROM ferry.changes",
                &[],
            )
            .await
            .expect("log shape");
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        shape,
        (0, 5, 3, 4),
        "no index; integer keys in k, uuid keys in u, the rest (and the old row) in pk"
    );

    let key = |rel: &str, key| KeyChange::Key {
        rel: rel.into(),
        key,
    };
    let expected = vec![
        key("public.ints", json!([99])),
        key("public.ints", json!([1])),
        key("public.ints", json!([1])),
        key("public.ints", json!([2])),
        key("public.ints", json!([1])),
        key("public.ints", json!([2])),
        key("public.Uu", json!([u1])),
        key("public.Uu", json!([u2])),
        key("public.Uu", json!([u1])),
        key("public.pairs", json!(["x", 1])),
        key("public.pairs", json!(["x", 2])),
        key("public.pairs", json!(["x", 1])),
        KeyChange::Truncate {
            rel: "public.pairs".into(),
        },
    ];
    let mut reader = trigger::LogReader::default();
    let mut seen = Vec::new();
    let first = reader.read_batch(&c, 4).await.expect("read");
    seen.extend(first.changes.clone());
    trigger::ack(&c, &first).await.expect("trim");
    let second = reader.read_batch(&c, 4).await.expect("read");
    seen.extend(second.changes.clone());

    // The log is rewritten between the read and the trim, as VACUUM FULL, CLUSTER or pg_repack
    // would: the trimmed rows leave room, every later row moves to another location, and the
    // second batch's locations now hold other rows, which its trim must not delete. Done by
    // hand (copied out, truncated, copied back in id order, as VACUUM FULL does) because
    // VACUUM FULL itself keeps deleted rows, in place, while any session of the cluster may
    // still see them, and other tests' replication slots hold that horizon back.
    c.batch_execute(
        "CREATE TEMP TABLE moved AS SELECT * FROM ferry.changes;
         TRUNCATE ferry.changes;
         INSERT INTO ferry.changes OVERRIDING SYSTEM VALUE SELECT * FROM moved ORDER BY id;",
    )
    .await
    .expect("rewrite the log");
    let taken: i64 = c
        .query_one(
            "SELECT count(*) FROM ferry.changes
              WHERE ctid = ANY($1::text[]::tid[]) AND NOT id = ANY($2)",
            &[&second.locations, &second.ids],
        )
        .await
        .expect("locations")
        .get(0);
    assert_eq!(
        taken, 4,
        "the rewrite put other rows where the second batch was"
    );
    trigger::ack(&c, &second).await.expect("trim after a move");
    let left: i64 = c
        .query_one("SELECT count(*) FROM ferry.changes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 9, "only the first batch's rows were trimmed");
    // The rest, read again from the log: the second batch comes again, then everything else.
    let mut again = trigger::LogReader::default();
    let rest = again.read_batch(&c, 100).await.expect("read the rest");
    assert_eq!(rest.changes[..4], second.changes[..]);
    seen.extend(rest.changes[4..].iter().cloned());
    assert_eq!(seen, expected);

    let ints = tables.iter().find(|t| t.name == "ints").expect("ints");
    let waiting = trigger::waiting(&c, ints, &[r#"["2"]"#.into(), r#"["7"]"#.into()])
        .await
        .expect("waiting");
    assert!(waiting.has(r#"["2"]"#) && !waiting.has(r#"["7"]"#) && !waiting.truncate);
    let backlog = trigger::backlog(&c).await.expect("backlog");
    assert_eq!((backlog.waiting, backlog.head), (9, 13));
    assert!(!trigger::applied_past(&c, 13).await.expect("applied past"));
    trigger::ack(&c, &rest).await.expect("trim the rest");
    assert!(trigger::applied_past(&c, 13).await.expect("applied past"));

    trigger::uninstall(&c, &tables).await.expect("uninstall");
    let leftovers: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ferry\\_%')
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname = 'ferry')
                  + (SELECT count(*) FROM pg_class WHERE relname = 'changes'
                      AND relnamespace = 'ferry'::regnamespace)",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(leftovers, 0);
}

/// Logical decoding hands a transaction over once its commit record is flushed, a moment
/// before other sessions can see it, so the apply waits for that before it fetches rows (a
/// fetch in the window missed an inserted row: the lost row of a logical end-to-end run). An
/// open transaction stands in for one in that window: the wait does not end while it runs,
/// and ends once it commits.
#[tokio::test]
async fn the_apply_waits_until_decoded_commits_are_visible() {
    let db = TestDb::new("rep_vis_").await;
    let url = db.url(Side::Source);
    let writer = url.connect().await.expect("connect");
    writer
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("open a writing transaction");
    let xid: i64 = writer
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("its id")
        .get(0);
    let xid = u32::try_from(xid & 0xFFFF_FFFF).expect("low 32 bits");
    let reader = url.connect().await.expect("connect");
    let open = [xid];
    let waiting = ferry_replicator::apply::wait_visible(&reader, &open);
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "the wait ended while the transaction was still running"
    );
    writer.batch_execute("COMMIT").await.expect("commit");
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends once the transaction commits")
        .expect("no error");
    // Ended transactions, and ids of no transaction below the next one, pass at once.
    tokio::time::timeout(
        Duration::from_secs(10),
        ferry_replicator::apply::wait_visible(&reader, &[xid, xid.wrapping_sub(1)]),
    )
    .await
    .expect("no wait")
    .expect("no error");
}

/// The same window end to end, on a real stream: the bed's servers name a synchronous standby
/// that never connects, so a session with `synchronous_commit = on` stays in its commit after
/// the commit record is flushed and decoded, invisible to other sessions, until it is
/// cancelled. The apply must not go past such a change (it would fetch no row for the key and
/// acknowledge the slot past the insert: the row lost); once the commit is let through, the
/// row reaches the target.
#[tokio::test]
async fn a_commit_decoded_before_other_sessions_see_it_is_not_lost_streamed() {
    held_commit_is_not_lost(ferry_core::spec::LogicalTransport::Stream).await;
}

/// The same through the SQL decoding functions (they too decode up to the flushed WAL).
#[tokio::test]
async fn a_commit_decoded_before_other_sessions_see_it_is_not_lost_sql() {
    held_commit_is_not_lost(ferry_core::spec::LogicalTransport::Sql).await;
}

/// A replicator in logical mode over `transport`, from the bed's source to its target server.
async fn logical_replicator(
    source: &PgUrl,
    target: &PgUrl,
    transport: ferry_core::spec::LogicalTransport,
) -> Replicator {
    let mut cfg = config(
        source.clone(),
        target.clone(),
        Side::Target,
        CaptureMode::Logical,
    );
    cfg.logical_transport = transport;
    Replicator::connect(cfg).await.expect("connect")
}

async fn held_commit_is_not_lost(transport: ferry_core::spec::LogicalTransport) {
    let db = TestDb::new("rep_win_").await;
    let (source, target) = (db.url(Side::Source), db.url(Side::Target));
    let admin = source.connect().await.expect("connect");
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)")
        .await
        .expect("create the table");
    let mut rep = logical_replicator(&source, &target, transport).await;
    rep.prepare().await.expect("prepare");
    rep.drain(None).await.expect("drain to the head");

    let writer = source.connect().await.expect("connect");
    writer
        .batch_execute("SET synchronous_commit = on")
        .await
        .expect("wait for the standby at commit");
    let pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let mut watchdog = release_later(&source, pid, Duration::from_secs(15));
    let insert = tokio::spawn(async move {
        writer
            .batch_execute("INSERT INTO t VALUES (1, 'held')")
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    wait_until_held(&admin, pid, deadline).await;
    let seen_by_others: i64 = admin
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(seen_by_others, 0, "the held commit is already visible");

    apply_past_held_commit(&mut rep, &admin, pid, deadline).await;
    insert
        .await
        .expect("the writer's task")
        .expect("the insert commits once its wait is cancelled");
    let rows: Vec<(i32, String)> = target
        .connect()
        .await
        .expect("connect")
        .query("SELECT id, v FROM t", &[])
        .await
        .expect("read the target")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, "held".to_string())], "the row on the target");
    rep.cleanup().await.expect("cleanup");
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

/// Waits until backend `pid` waits at commit for the standby.
async fn wait_until_held(admin: &tokio_postgres::Client, pid: i32, deadline: std::time::Instant) {
    loop {
        let waiting: Option<String> = admin
            .query_opt(
                "SELECT wait_event FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'",
                &[&pid],
            )
            .await
            .expect("look at the writer")
            .map(|r| r.get(0));
        if waiting.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the insert never waited for the standby: is the bed's synchronous_standby_names set?"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Applies until a batch holds the held insert: that apply must not finish while the commit is
/// held; it is then let through, and the same apply must end with the insert.
async fn apply_past_held_commit(
    rep: &mut Replicator,
    admin: &tokio_postgres::Client,
    pid: i32,
    deadline: std::time::Instant,
) {
    let mut held_back = false;
    while !held_back {
        assert!(
            std::time::Instant::now() < deadline,
            "the insert was never decoded"
        );
        let applying = rep.apply_once();
        tokio::pin!(applying);
        match tokio::time::timeout(Duration::from_secs(1), &mut applying).await {
            Ok(applied) => {
                let applied = applied.expect("apply");
                assert_eq!(
                    applied.changes, 0,
                    "a batch holding a commit no other session sees yet was applied"
                );
            }
            Err(_) => {
                // Waiting for the commit, as it should: let the commit through (cancelling
                // the wait for the standby ends it; it is already flushed) and the same
                // apply goes on.
                held_back = true;
                admin
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .await
                    .expect("let the commit through");
                let applied = tokio::time::timeout(Duration::from_secs(30), &mut applying)
                    .await
                    .expect("the apply ends once the commit is visible")
                    .expect("apply");
                assert_eq!(applied.changes, 1, "the held insert");
            }
        }
    }
}

/// While a commit is held, slot creations anywhere on the cluster wait for it, and nothing in
/// the server lets it go by itself (the statement timeout is off during a commit): a process of
/// its own cancels the wait after `after` even if the test dies first. It cancels only a
/// backend waiting for the standby, so a later session given the same pid is left alone.
fn release_later(admin: &PgUrl, pid: i32, after: Duration) -> std::process::Child {
    let (url, password) = admin.for_libpq();
    let psql = PathBuf::from(bed_var("FERRY_BED_SOURCE_BIN")).join("psql");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "sleep {}; exec \"$0\" \"$1\" -qAtc \"SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE pid = {pid} AND wait_event = 'SyncRep'\"",
            after.as_secs()
        ))
        .arg(psql)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd.spawn().expect("start the watchdog")
}

/// A streamed batch the apply refuses because its table changed shape on the source (the
/// worker blocks and goes on with the same session) is applied once the target matches: a
/// later batch's acknowledgement must not move the slot past it.
#[tokio::test]
async fn a_streamed_batch_refused_for_a_changed_table_is_applied_once_the_target_matches() {
    let db = TestDb::new("rep_shape_").await;
    let (source, target) = (db.url(Side::Source), db.url(Side::Target));
    let admin = source.connect().await.expect("connect");
    admin
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); INSERT INTO t VALUES (1, 'a')",
        )
        .await
        .expect("create the table");
    let mut rep =
        logical_replicator(&source, &target, ferry_core::spec::LogicalTransport::Stream).await;
    rep.prepare().await.expect("prepare");
    rep.drain(None).await.expect("drain");
    admin
        .batch_execute(
            "ALTER TABLE t ADD COLUMN w text; UPDATE t SET v = 'changed', w = 'new' WHERE id = 1",
        )
        .await
        .expect("change the table");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match rep.apply_once().await {
            Err(ferry_replicator::ReplError::SchemaChanged { tables }) => {
                assert_eq!(tables, "public.t");
                break;
            }
            Err(e) => panic!("apply: {e}"),
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "the changed table was never refused"
            ),
        }
    }
    // The target is brought to the same shape; a later write goes through the same stream.
    let t = target.connect().await.expect("target");
    t.batch_execute("ALTER TABLE t ADD COLUMN w text")
        .await
        .expect("target ddl");
    rep.reload_catalog().await.expect("reload");
    admin
        .batch_execute("INSERT INTO t VALUES (2, 'b', 'later')")
        .await
        .expect("later write");
    rep.drain(None).await.expect("drain");
    let rows: Vec<(i32, String, Option<String>)> = t
        .query("SELECT id, v, w FROM t ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (1, "changed".to_string(), Some("new".to_string())),
            (2, "b".to_string(), Some("later".to_string()))
        ],
        "the refused update is applied, not skipped"
    );
    rep.cleanup().await.expect("cleanup");
}

/// App roles often carry a `statement_timeout` and an `idle_in_transaction_session_timeout`,
/// and Ferry logs in as the app's role on Heroku: its own sessions override both, so the copy,
/// the apply and the comparison run however long they take. Here the app's role, in this
/// test's database only, may run no statement longer than 1 ms.
#[tokio::test]
async fn a_role_timeout_cancels_none_of_ferrys_work() {
    let db = TestDb::heroku_like("rep_tmo_").await;
    TestDb::load(&db.source_app_url(), "coverage.sql").await;
    TestDb::load(&db.source_app_url(), "coverage_data.sql").await;
    let admin = Side::Source
        .admin_url()
        .with_dbname(db.name())
        .connect()
        .await
        .expect("admin");
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} IN DATABASE \"{name}\" SET statement_timeout = '1ms';
             ALTER ROLE {role} IN DATABASE \"{name}\" SET idle_in_transaction_session_timeout = '100ms';",
            role = ferry_tests::APP_ROLE,
            name = db.name()
        ))
        .await
        .expect("role timeouts");
    // The setting bites the app's own sessions.
    let app = db.source_app_url().connect_as_app().await.expect("app");
    let err = app
        .batch_execute("SELECT pg_sleep(0.05)")
        .await
        .expect_err("the app's statement is cancelled");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );

    let cfg = config(
        db.source_app_url(),
        db.target_url(),
        Side::Target,
        CaptureMode::Trigger,
    );
    let mut rep = Replicator::connect(cfg).await.expect("connect");
    rep.prepare()
        .await
        .expect("prepare under the role's timeouts");
    admin
        .batch_execute("UPDATE customers SET name = name || '!' WHERE id % 7 = 0")
        .await
        .expect("a change to stream");
    rep.drain(None).await.expect("drain");
    for c in rep.verify().await.expect("verify") {
        assert!(c.equal(), "{} differs: {:#?}", c.table, c.mismatches);
    }
}

/// The copy stopped exactly between a chunk's rows and its done mark (the crash point
/// `copy::chunk_copied`): both were in one transaction, so neither is on the target; the chunks
/// marked done before it stay done, and the restarted copy copies the rest once, each key once.
#[tokio::test]
async fn a_copy_stopped_between_a_chunks_rows_and_its_done_mark_copies_that_chunk_once() {
    use ferry_replicator::copy;
    let db = TestDb::new("chunkfp_").await;
    let source_url = db.url(Side::Source);
    let target_url = db.url(Side::Target);
    let source = source_url.connect().await.expect("source");
    source
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL);
             INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 10000) g;
             ANALYZE items;",
        )
        .await
        .expect("source data");
    let (target, tables) = bare_target(
        &target_url,
        &source,
        "CREATE TABLE items (id bigint, body text NOT NULL)",
    )
    .await;
    let (holder, snapshot, chunks) = plan_under_snapshot(&source_url, &target, &tables).await;
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    // One session, so chunks go one after another: the third one stops at the point.
    fail::cfg("copy::chunk_copied", "2*off->return").expect("configure the crash point");
    let sessions = copy::Sessions {
        parallelism: 1,
        ..Default::default()
    };
    let err = copy::run(
        &source_url,
        &target_url,
        &snapshot,
        &tables,
        chunks,
        sessions,
    )
    .await
    .expect_err("the copy stops at the crash point");
    assert!(err.to_string().contains("copy::chunk_copied"), "{err}");
    fail::remove("copy::chunk_copied");
    holder.batch_execute("COMMIT").await.expect("end snapshot");
    let done = count(&target, "SELECT count(*) FROM ferry.copy_chunks WHERE done").await;
    let rows = count(&target, "SELECT count(*) FROM items").await;
    let done_rows = count(
        &target,
        "SELECT coalesce(sum(rows), 0)::bigint FROM ferry.copy_chunks WHERE done",
    )
    .await;
    assert_eq!(done, 2, "the two chunks before the point stay done");
    assert_eq!(
        rows, done_rows,
        "the stopped chunk's rows rolled back with it"
    );

    copy_under_a_new_snapshot(&source_url, &target_url, &target, &tables).await;
    assert_eq!(count(&target, "SELECT count(*) FROM items").await, 10_000);
    assert_eq!(
        count(&target, "SELECT count(DISTINCT id) FROM items").await,
        10_000,
        "each key once"
    );
}

/// The preparation stopped right after each stage marker (the crash point `stage::marked`:
/// after capture is installed, after the copy, after the keys and indexes) starts again at the
/// stage the marker names, reaches streaming, and drains to a target equal to the source.
#[tokio::test]
async fn a_preparation_stopped_after_each_stage_marker_resumes_there_and_converges() {
    for (passed, stopped_at) in [
        (0, stage::CAPTURE),
        (1, stage::COPIED),
        (2, stage::STREAMING),
    ] {
        let db = TestDb::heroku_like("stagefp_").await;
        TestDb::load(&db.source_app_url(), "coverage.sql").await;
        TestDb::load(&db.source_app_url(), "coverage_data.sql").await;
        let cfg = config(
            db.source_app_url(),
            db.url(Side::Target),
            Side::Target,
            CaptureMode::Trigger,
        );
        fail::cfg("stage::marked", &format!("{passed}*off->return")).expect("crash point");
        let mut rep = Replicator::connect(cfg.clone()).await.expect("connect");
        let err = rep.prepare().await.expect_err("stops at the crash point");
        assert!(err.to_string().contains("stage::marked"), "{err}");
        fail::remove("stage::marked");
        assert_eq!(
            rep.stage().await.expect("stage").as_deref(),
            Some(stopped_at)
        );
        drop(rep);
        // Rows written between the stop and the restart are captured and streamed.
        db.source_app_url()
            .connect()
            .await
            .expect("source")
            .batch_execute("UPDATE customers SET name = name || '+' WHERE id % 7 = 0")
            .await
            .expect("write between the runs");
        let mut rep = Replicator::connect(cfg).await.expect("connect again");
        rep.prepare().await.expect("prepare resumes");
        rep.drain(None).await.expect("drain");
        for c in rep.verify().await.expect("verify") {
            assert!(
                c.equal(),
                "{stopped_at}: {} differs: {:#?}",
                c.table,
                c.mismatches
            );
        }
    }
}
