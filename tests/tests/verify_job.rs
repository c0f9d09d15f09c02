//! Verify's job in the worker (`ferry_replicator::verify_job`), run against the bed's servers:
//! a job whose worker dies part-way is resumed by another worker at the first slice not
//! compared, and its verdicts are those of an uninterrupted job.

use std::time::Duration;

use ferry_replicator::{
    ReplResult,
    verify_job::{self, Job, JobState, Recorder},
};
use ferry_tests::{TestDb, fresh_store, unique};

const SQL: &str = "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL);
     INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 250000) g;
     ANALYZE big;";

fn worker(id: &str, who: &str) -> verify_job::Worker {
    verify_job::Worker {
        migration_id: id.to_string(),
        worker_id: who.to_string(),
        sessions: 1,
        poll: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn a_job_left_by_a_dead_worker_is_resumed_where_it_stopped() {
    let db = TestDb::heroku_like("vj_").await;
    for url in [db.source_app_url(), db.target_url()] {
        url.connect()
            .await
            .expect("connect")
            .batch_execute(SQL)
            .await
            .expect("table");
    }
    let store = fresh_store().await;
    let id = unique("mig-");
    let (source, target) = (db.source_app_url(), db.target_url());
    let urls = move || {
        let (s, t) = (source.clone(), target.clone());
        async move { ReplResult::Ok((s, t)) }
    };
    // 250,000 rows in three slices of ~100,000 at 10,000 rows a second: after its first
    // slice the worker waits about 9 s before the next, and it is stopped as soon as that
    // slice is recorded (the record is written every 2 s), so it dies part-way.
    let mut first = Recorder::new(
        store.as_ref(),
        &id,
        None,
        Job::request(
            "j1",
            chrono::Utc::now(),
            Duration::from_millis(100),
            Some(10_000),
        ),
    );
    assert!(first.save().await.expect("request"));
    let dead = worker(&id, "worker-a");
    let running = tokio::spawn({
        let (store, urls, dead) = (store.clone(), urls.clone(), dead.clone());
        async move { verify_job::serve(store.as_ref(), &dead, urls).await }
    });
    let part = loop {
        let (_, job) = verify_job::read(store.as_ref(), &id)
            .await
            .expect("read")
            .expect("job");
        if job.pass.tables.first().is_some_and(|t| t.slices_done >= 1) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.abort();
    let _ = running.await;
    assert_eq!(part.state, JobState::Running, "{part:?}");
    let done_before = part.pass.tables[0].slices_done;
    assert!(done_before < part.pass.tables[0].slices, "{part:?}");

    // The dead worker's beat goes stale (made so here, rather than waited for); the rate
    // limit is lifted so the rest goes at the servers' speed.
    let (raw, mut job) = verify_job::read(store.as_ref(), &id)
        .await
        .expect("read")
        .expect("job");
    job.beat_at =
        Some(chrono::Utc::now() - chrono::Duration::seconds(verify_job::STALE_SECONDS + 1));
    job.rows_per_second = None;
    let resumed_from = job.pass.tables[0].slices_done;
    assert!(
        Recorder::new(store.as_ref(), &id, Some(raw), job)
            .save()
            .await
            .expect("age")
    );

    let other = worker(&id, "worker-b");
    assert!(
        verify_job::serve_once(store.as_ref(), &other, &urls)
            .await
            .expect("the other worker runs it")
    );
    let (_, done) = verify_job::read(store.as_ref(), &id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.worker_id.as_deref(), Some("worker-b"));
    assert_eq!(done.attempts, 2, "taken twice");
    let t = &done.pass.tables[0];
    assert_eq!(t.slices_done, t.slices);
    assert!(resumed_from >= 1);
    let verdicts = done.result.expect("verdicts");
    assert!(verdicts.passed(), "{verdicts:?}");
    assert_eq!(verdicts.source_rows, 250_000, "every row counted once");
    assert_eq!(done.pass.rows_compared, 250_000, "no slice compared twice");
}
