//! Preflight analysis on real servers: a Heroku-like source, then one with every blocker.

use ferry_core::spec::CaptureMode;
use ferry_pg::preflight::{Code, PreflightReport, Severity, Snapshot, analyse};
use ferry_tests::{Side, TestDb};

#[tokio::test]
async fn heroku_like_source_gets_trigger_capture_and_a_full_inventory() {
    let db = TestDb::heroku_like("pre_ok_").await;
    TestDb::load(&db.source_app_url(), "coverage.sql").await;
    TestDb::load(&db.source_app_url(), "coverage_data.sql").await;
    let source = db
        .source_app_url()
        .connect()
        .await
        .expect("source as app role");
    let target = db.url(Side::Target).connect().await.expect("target");
    source.batch_execute("ANALYZE").await.expect("analyze");

    let report = analyse(&source, &target, CaptureMode::Auto, 4)
        .await
        .expect("analyse");
    // The snapshot is everything the rules read: kept as JSON, it gives the same report.
    let snapshot = Snapshot::gather(&source, Some(&target))
        .await
        .expect("snapshot");
    let kept: Snapshot =
        serde_json::from_str(&serde_json::to_string(&snapshot).expect("to json")).expect("back");
    assert_eq!(kept, snapshot);
    assert_eq!(
        PreflightReport::assess(&kept, CaptureMode::Auto, 4),
        PreflightReport::assess(&snapshot, CaptureMode::Auto, 4)
    );
    let blockers: Vec<_> = report.blockers().collect();
    assert!(blockers.is_empty(), "{blockers:#?}");
    assert_eq!(report.capture, Some(CaptureMode::Trigger));
    assert!(!report.logical_possible && report.trigger_possible);
    let why = report
        .with_code(Code::CaptureMode)
        .next()
        .expect("capture finding");
    assert!(
        why.message.contains("has no REPLICATION attribute"),
        "{}",
        why.message
    );
    assert_eq!(
        (
            report.source.major,
            report.target.as_ref().expect("target analysed").major
        ),
        (Side::Source.major(), Side::Target.major())
    );
    assert!(
        !report.source.superuser
            && report
                .target
                .as_ref()
                .is_some_and(|t| t.can_set_replication_role)
    );

    let names: Vec<&str> = report.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Billing.Invoices",
            "public.customers",
            "public.documents",
            "public.events",
            "public.events_2025",
            "public.events_2026",
            "public.order_items"
        ]
    );
    let invoices = &report.tables[0];
    assert_eq!(invoices.primary_key, ["InvoiceId"]);
    assert_eq!(invoices.generated_columns, ["tax"]);
    let customers = &report.tables[1];
    assert_eq!(customers.identity_columns, ["id"]);
    assert_eq!(customers.estimated_rows, 300);
    assert!(
        report
            .tables
            .iter()
            .find(|t| t.name == "public.documents")
            .is_some_and(|t| t.total_bytes > 100_000),
        "TOAST counted"
    );
    assert_eq!(
        report
            .tables
            .iter()
            .find(|t| t.name == "public.events")
            .map(|t| t.kind),
        Some("partitioned")
    );
    assert!(
        report
            .with_code(Code::PartitionedTable)
            .any(|f| f.object.as_deref() == Some("public.events"))
    );
    assert!(
        report
            .with_code(Code::GeneratedColumns)
            .any(|f| f.object.as_deref() == Some("Billing.Invoices"))
    );

    let seqs: Vec<(&str, Option<&str>)> = report
        .sequences
        .iter()
        .map(|s| (s.name.as_str(), s.owned_by.as_deref()))
        .collect();
    assert_eq!(
        seqs,
        [
            ("public.customers_id_seq", Some("public.customers.id")),
            ("public.documents_id_seq", Some("public.documents.id")),
            ("public.events_id_seq", Some("public.events.id")),
        ]
    );
    assert_eq!(report.sequences[0].last_value, Some(300));
}

#[tokio::test]
async fn every_blocker_names_its_object_and_fix() {
    let db = TestDb::new("pre_block_").await;
    let admin = db.url(Side::Source);
    TestDb::load(&admin, "coverage.sql").await;
    let source = admin.connect().await.expect("source");
    source
        .batch_execute(
            "CREATE TABLE audit_trail (at timestamptz, what text);
             CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
             CREATE TABLE weird (id int PRIMARY KEY, v text);
             ALTER TABLE weird REPLICA IDENTITY NOTHING;
             SELECT lo_from_bytea(0, 'hello');",
        )
        .await
        .expect("set up blockers");
    let target = db.url(Side::Target).connect().await.expect("target");

    let report = analyse(&source, &target, CaptureMode::Logical, 4)
        .await
        .expect("analyse");
    // A superuser source on a wal_level=logical server could decode, but an UNLOGGED table and
    // REPLICA IDENTITY NOTHING make logical capture impossible: the spec asked for it, so blocker.
    let codes: Vec<(Code, Option<&str>)> = report
        .blockers()
        .map(|f| (f.code, f.object.as_deref()))
        .collect();
    assert!(
        codes.contains(&(Code::NoPrimaryKey, Some("public.audit_trail"))),
        "{codes:?}"
    );
    assert!(codes.contains(&(Code::LargeObjects, None)), "{codes:?}");
    assert!(
        codes.contains(&(Code::LogicalImpossible, None)),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(Code::ReplicaIdentity, Some("public.weird"))),
        "the table whose identity lacks its key is named: {codes:?}"
    );
    let nopk = report
        .with_code(Code::NoPrimaryKey)
        .next()
        .expect("finding");
    assert!(
        nopk.fix
            .contains("ALTER TABLE \"public\".\"audit_trail\" ADD COLUMN ferry_id"),
        "{}",
        nopk.fix
    );
    let logical = report
        .with_code(Code::LogicalImpossible)
        .next()
        .expect("finding");
    assert!(logical.message.contains("UNLOGGED"), "{}", logical.message);
    assert!(
        report
            .with_code(Code::UnloggedTable)
            .any(|f| f.severity == Severity::Warning
                && f.object.as_deref() == Some("public.scratch"))
    );
    assert_eq!(report.large_objects, 1);

    // Trigger mode works for the same source (superuser owns everything); the missing key
    // still blocks.
    let report = analyse(&source, &target, CaptureMode::Auto, 4)
        .await
        .expect("analyse");
    assert_eq!(report.capture, Some(CaptureMode::Trigger));
    assert!(report.blockers().any(|f| f.code == Code::NoPrimaryKey));

    // An extension the target does not offer (adminpack was removed in PostgreSQL 17).
    if Side::Target.major() >= 17 {
        source
            .batch_execute("CREATE EXTENSION adminpack")
            .await
            .expect("adminpack");
        let report = analyse(&source, &target, CaptureMode::Auto, 4)
            .await
            .expect("analyse");
        assert!(
            report
                .blockers()
                .any(|f| f.code == Code::ExtensionMissing
                    && f.object.as_deref() == Some("adminpack"))
        );
    }

    // Too many copy sessions for the server's connection limit.
    let report = analyse(&source, &target, CaptureMode::Auto, 400)
        .await
        .expect("analyse");
    assert!(
        report
            .blockers()
            .any(|f| f.code == Code::Connections && f.fix.contains("parallelism"))
    );
}

#[tokio::test]
async fn superuser_source_with_logical_wal_gets_logical_capture() {
    let db = TestDb::new("pre_logical_").await;
    TestDb::load(&db.url(Side::Source), "coverage.sql").await;
    let source = db.url(Side::Source).connect().await.expect("source");
    let target = db.url(Side::Target).connect().await.expect("target");
    let report = analyse(&source, &target, CaptureMode::Auto, 2)
        .await
        .expect("analyse");
    assert!(report.logical_possible);
    assert_eq!(report.capture, Some(CaptureMode::Logical));
    assert_eq!(report.blockers().count(), 0, "{:#?}", report.findings);
}
