//! `ferry rehearse` as an operator runs it, on a source database this test creates (the
//! schema-coverage set, owned by a Heroku-like role): the report's figures, the source left
//! exactly as it was, a live source refused, a non-empty target refused.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ferry_pg::PgUrl;
use ferry_tests::{Side, TestDb, bed_var, capture_leftovers, workspace_bin};

fn rehearse(source: &PgUrl, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(workspace_bin("ferry"))
        .arg("rehearse")
        .args(["--pg-bin", &bed_var("FERRY_BED_TARGET_BIN")])
        .args(extra)
        .env("FERRY_REHEARSE_SOURCE_URL", source.expose_secret())
        .output()
        .expect("run ferry rehearse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every user table's rows, fingerprinted: equal before and after means nothing was written.
async fn fingerprint(url: &PgUrl) -> Vec<(String, Option<String>)> {
    let client = url.connect().await.expect("connect");
    let tables = ferry_pg::catalog::tables(&client).await.expect("tables");
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| t.holds_rows()) {
        let sql = format!(
            "SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM {} r",
            t.qualified()
        );
        let row = client.query_one(&sql, &[]).await.expect("fingerprint");
        out.push((t.display_name(), row.get(0)));
    }
    out
}

/// Waits until no other session uses the database and its statistics have settled.
async fn quiet(url: &PgUrl) {
    let client = url.connect().await.expect("connect");
    for _ in 0..100 {
        let others: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND backend_type = 'client backend'",
                &[],
            )
            .await
            .expect("sessions")
            .get(0);
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    // Statistics of ended sessions, and the state_change window of the guard (60 s) is about
    // sessions that ran something: a loader that ended is not counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_rehearsal_on_a_copy_reports_every_figure_and_leaves_the_source_as_it_was() {
    let db = TestDb::heroku_like("reh_").await;
    let source = db.source_app_url();
    TestDb::load(&source, "coverage.sql").await;
    TestDb::load(&source, "coverage_data.sql").await;
    let before = fingerprint(&source).await;
    quiet(&source).await;

    let (code, out, err) = rehearse(
        &source,
        &[
            "--load",
            "200",
            "--stream-seconds",
            "4",
            "--freezes",
            "2",
            "--production-gb",
            "50",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    println!("{out}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("the report is JSON");
    assert_eq!(r["blockers"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["capture"], "trigger", "{r:#}");
    assert!(r["source"]["tables"].as_u64() > Some(5), "{r:#}");
    let copy = &r["copy"];
    assert!(copy["rows"].as_u64() > Some(0), "{r:#}");
    assert!(copy["copy_seconds"].as_f64() > Some(0.0), "{r:#}");
    assert!(copy["disk_bytes_per_second"].as_f64() > Some(0.0), "{r:#}");
    let catch = &r["catch_up"];
    // 10,000 rows inserted then updated; the load may delete a few in between.
    assert!(
        (19_000..=20_000).contains(&catch["burst_changes"].as_u64().unwrap_or(0)),
        "{r:#}"
    );
    assert!(
        catch["apply_changes_per_second"].as_f64() > Some(0.0),
        "{r:#}"
    );
    assert!(catch["lag_samples"].as_u64() > Some(3), "{r:#}");
    assert!(r["load"]["written"].as_u64() > Some(100), "{r:#}");
    assert_eq!(r["verify"]["differing"], serde_json::json!([]), "{r:#}");
    assert!(r["verify"]["rows"].as_i64() > Some(0), "{r:#}");
    let freezes = r["freezes"].as_array().expect("freezes");
    assert_eq!(freezes.len(), 2, "{r:#}");
    for f in freezes {
        assert_eq!(f["counts_equal"], true, "{r:#}");
        assert!(f["total_ms"].as_u64() > Some(0), "{r:#}");
    }
    let p = &r["projection"];
    assert_eq!(p["production_bytes"], 50_000_000_000u64, "{r:#}");
    assert!(
        p["copy_seconds"].as_f64() > copy["copy_seconds"].as_f64(),
        "{r:#}"
    );
    assert!(p["catch_up_seconds"].as_f64().is_some(), "{r:#}");
    assert_eq!(r["source_objects_left"], serde_json::json!([]), "{r:#}");

    // The source as it was: the same rows in every table, no Ferry object, writable.
    assert_eq!(fingerprint(&source).await, before);
    let client = source.connect_as_app().await.expect("connect as the app");
    assert_eq!(capture_leftovers(&client).await, 0);
    let schemas: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ferry%'",
            &[],
        )
        .await
        .expect("schemas")
        .get(0);
    assert_eq!(schemas, 0);
    client
        .batch_execute(
            "CREATE TEMP TABLE still_writable (x int); INSERT INTO still_writable VALUES (1)",
        )
        .await
        .expect("the app's role is not left frozen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_traffic_or_a_target_with_tables_is_refused_with_exit_three() {
    let db = TestDb::heroku_like("reh_live_").await;
    let source = db.source_app_url();
    TestDb::load(&source, "coverage.sql").await;
    let stop = Arc::new(AtomicBool::new(false));
    let app = {
        let (source, stop) = (source.clone(), stop.clone());
        tokio::spawn(async move {
            let client = source.connect_as_app().await.expect("the app connects");
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(
                        "INSERT INTO customers (email, name) VALUES (md5(random()::text), 'app')",
                    )
                    .await
                    .expect("the app writes");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (code, _, err) = rehearse(&source, &[]);
    stop.store(true, Ordering::Relaxed);
    app.await.expect("app");
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("looks like a live primary"), "{err}");
    assert!(err.contains("--i-know-this-is-production"), "{err}");

    quiet(&source).await;
    let target = db.url(Side::Target);
    target
        .connect()
        .await
        .expect("target")
        .batch_execute("CREATE TABLE someone_elses (id int)")
        .await
        .expect("a table on the target");
    let (code, _, err) = rehearse(&source, &["--target-url", target.expose_secret()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("already holds 1 table(s)"), "{err}");
    assert!(err.contains("someone_elses"), "{err}");
    let left = capture_leftovers(&source.connect().await.expect("source")).await;
    assert_eq!(left, 0, "nothing was installed");
}
