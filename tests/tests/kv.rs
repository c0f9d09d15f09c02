//! Heroku Key-Value Store → ElastiCache, the data part, on the bed's two real Redis servers
//! (TLS and AUTH on both; the source refuses CONFIG as Heroku does): the copy keeps every
//! type, value and TTL, and the comparison finds every kind of difference. Each test works
//! under its own key prefix.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_kv::{Conn, RedisUrl, cmd, copy, resp::Value, sync, verify};
use ferry_tests::{bed_var, unique};

async fn conn(var: &str) -> Conn {
    Conn::connect(&RedisUrl::parse(&bed_var(var)).expect("bed URL"))
        .await
        .expect("connect")
}

async fn run(c: &mut Conn, args: Vec<Vec<u8>>) -> Value {
    c.call(args).await.expect("command")
}

/// Strings, hashes, lists, sets, sorted sets and a stream under `p`, some with TTLs.
async fn populate(c: &mut Conn, p: &str) {
    let mut commands = Vec::new();
    for i in 0..300 {
        commands.push(cmd!["SET", format!("{p}s:{i}"), format!("value-{i}")]);
        commands.push(cmd![
            "HSET",
            format!("{p}h:{i}"),
            "a",
            i.to_string(),
            "b",
            "x"
        ]);
    }
    commands.push(cmd![
        "RPUSH",
        format!("{p}queue:default"),
        "job-1",
        "job-2",
        "job-3"
    ]);
    commands.push(cmd!["SADD", format!("{p}queues"), "default", "mailers"]);
    commands.push(cmd![
        "ZADD",
        format!("{p}schedule"),
        "1700000000",
        "job-9",
        "1800000000",
        "job-10"
    ]);
    commands.push(cmd!["XADD", format!("{p}events"), "*", "k", "v"]);
    commands.push(cmd![
        "SET",
        format!("{p}session:abc"),
        "user=1",
        "EX",
        "3600"
    ]);
    commands.push(cmd![
        "SET",
        format!("{p}cache:page"),
        "<html>",
        "PX",
        "900000"
    ]);
    commands.push(cmd!["SET", format!("{p}bin"), b"\x00\xff\r\n".to_vec()]);
    for a in c.pipeline(commands).await.expect("populate") {
        assert!(!matches!(a, Value::Error(_)), "{a:?}");
    }
}

/// The comparison of the prefix's keys (`skip` left out), `batch` keys per round trip.
async fn compare(
    source: &mut Conn,
    target: &mut Conn,
    pattern: &str,
    skip: &[String],
    batch: usize,
) -> verify::Report {
    verify::compare_db(source, target, Some(pattern.as_bytes()), skip, batch, 10)
        .await
        .expect("compare")
}

/// The copy of the keys matching `pattern` from the bed's source to its target (two
/// sessions, 100 keys per round trip).
async fn copy_prefix(pattern: &str) -> copy::CopyStats {
    let url = |var: &str| RedisUrl::parse(&bed_var(var)).expect("bed URL");
    copy::copy_db_parallel(
        &url("FERRY_BED_REDIS_SOURCE_URL"),
        &url("FERRY_BED_REDIS_TARGET_URL"),
        Some(pattern.as_bytes()),
        &[],
        100,
        2,
        None,
    )
    .await
    .expect("copy")
}

/// Sessions with both servers, a populated source under a new prefix, and the prefix's
/// pattern.
async fn populated() -> (Conn, Conn, String, String) {
    let mut source = conn("FERRY_BED_REDIS_SOURCE_URL").await;
    let target = conn("FERRY_BED_REDIS_TARGET_URL").await;
    let p = unique("kv-");
    populate(&mut source, &format!("{p}:")).await;
    let pattern = format!("{p}:*");
    (source, target, p, pattern)
}

#[tokio::test]
async fn the_copy_keeps_every_type_value_and_ttl_over_tls_with_auth() {
    let (mut source, mut target, p, pattern) = populated().await;

    let stats = copy_prefix(&pattern).await;
    assert!(stats.keys >= 607, "{stats:?}");
    assert!(stats.with_ttl >= 2, "{stats:?}");

    let report = compare(&mut source, &mut target, &pattern, &[], 100).await;
    assert!(report.equal(), "{report:?}");
    assert_eq!(report.compared, 607);
    let ttl = run(&mut target, cmd!["PTTL", format!("{p}:session:abc")]).await;
    assert!(
        matches!(ttl, Value::Int(t) if t > 3_500_000 && t <= 3_600_000),
        "{ttl:?}"
    );
    assert_eq!(
        run(
            &mut target,
            cmd!["LRANGE", format!("{p}:queue:default"), "0", "-1"]
        )
        .await,
        Value::Array(Some(
            ["job-1", "job-2", "job-3"]
                .map(|j| Value::Bulk(Some(j.into())))
                .to_vec()
        ))
    );
    assert_eq!(
        run(&mut target, cmd!["GET", format!("{p}:bin")]).await,
        Value::Bulk(Some(b"\x00\xff\r\n".to_vec()))
    );

    // A second pass converges on the same state (RESTORE … REPLACE).
    copy_prefix(&pattern).await;
    let again = compare(&mut source, &mut target, &pattern, &[], 100).await;
    assert!(again.equal(), "{again:?}");
}

#[tokio::test]
async fn the_comparison_names_missing_changed_extra_and_ttl_less_keys() {
    let (mut source, mut target, p, pattern) = populated().await;
    copy_prefix(&pattern).await;
    run(&mut target, cmd!["DEL", format!("{p}:s:7")]).await;
    run(
        &mut target,
        cmd!["HSET", format!("{p}:h:8"), "a", "tampered"],
    )
    .await;
    run(&mut target, cmd!["SET", format!("{p}:ghost"), "x"]).await;
    run(&mut target, cmd!["PERSIST", format!("{p}:session:abc")]).await;

    let r = compare(&mut source, &mut target, &pattern, &[], 50).await;
    let key = |k: &str| format!("{p}:{k}").into_bytes();
    assert_eq!(r.missing, vec![key("s:7")], "{r:?}");
    assert_eq!(r.differing, vec![key("h:8")], "{r:?}");
    assert_eq!(r.extra, vec![key("ghost")], "{r:?}");
    assert_eq!(r.ttl_differs, vec![key("session:abc")], "{r:?}");
    assert!(!r.equal());
}

#[tokio::test]
async fn the_source_behaves_like_heroku_and_a_wrong_password_is_refused_without_echo() {
    let mut source = conn("FERRY_BED_REDIS_SOURCE_URL").await;
    let err = source
        .call(cmd!["CONFIG", "GET", "maxmemory-policy"])
        .await
        .expect_err("CONFIG is refused, as on Heroku")
        .to_string();
    assert!(err.contains("refused CONFIG"), "{err}");

    let url =
        bed_var("FERRY_BED_REDIS_SOURCE_URL").replace(":ferry-bed-redis-source@", ":wrong-pass@");
    let err = Conn::connect(&RedisUrl::parse(&url).expect("url"))
        .await
        .expect_err("a wrong password is refused")
        .to_string();
    assert!(err.contains("refused AUTH"), "{err}");
    assert!(!err.contains("wrong-pass"), "{err}");
}

/// A live sync of the prefix's keys in the background: its progress, its stop switch and its
/// task.
struct Live {
    progress: Arc<Mutex<sync::Progress>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<ferry_kv::KvResult<(sync::Progress, sync::Ended)>>,
    name: String,
}

impl Live {
    fn start(pattern: &str, skip: &[String]) -> Self {
        let progress = Arc::new(Mutex::new(sync::Progress::default()));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let name = unique("ferry-sync-");
        let options = sync::Options {
            pattern: Some(pattern.to_string()),
            skip: skip.to_vec(),
            batch: 100,
            client_name: name.clone(),
            ..sync::Options::default()
        };
        let seen = progress.clone();
        let task = tokio::spawn(async move {
            let source = RedisUrl::parse(&bed_var("FERRY_BED_REDIS_SOURCE_URL")).expect("url");
            let target = RedisUrl::parse(&bed_var("FERRY_BED_REDIS_TARGET_URL")).expect("url");
            sync::run(&source, &target, &options, rx, |p| {
                *seen.lock().expect("progress") = p.clone();
            })
            .await
        });
        Self {
            progress,
            stop,
            task,
            name,
        }
    }

    async fn until(&self, what: &str, done: impl Fn(&sync::Progress) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.progress.lock().expect("progress")) {
            assert!(Instant::now() < deadline, "the sync never {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> sync::Progress {
        self.stop.send(true).expect("stop");
        self.task.await.expect("sync task").expect("sync").0
    }
}

#[tokio::test]
async fn live_sync_carries_writes_deletes_renames_and_expiries_but_not_disposable_keys() {
    let (mut source, mut target, p, pattern) = populated().await;
    let disposable = vec![format!("{p}:cache:*")];
    let live = Live::start(&pattern, &disposable);
    live.until("finished its first pass", |g| g.full_passes >= 1)
        .await;

    let mut writes = Vec::new();
    for i in 0..200 {
        writes.push(cmd!["SET", format!("{p}:new:{i}"), format!("n{i}")]);
    }
    writes.push(cmd!["HSET", format!("{p}:h:3"), "a", "changed"]);
    writes.push(cmd!["DEL", format!("{p}:s:4"), format!("{p}:s:5")]);
    writes.push(cmd!["RENAME", format!("{p}:s:6"), format!("{p}:renamed")]);
    writes.push(cmd!["LPUSH", format!("{p}:queue:default"), "job-4"]);
    writes.push(cmd!["SET", format!("{p}:short"), "x", "PX", "150"]);
    writes.push(cmd!["SET", format!("{p}:cache:fresh"), "regenerated"]);
    for a in source.pipeline(writes).await.expect("writes") {
        assert!(!matches!(a, Value::Error(_)), "{a:?}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    live.until("applied the writes", |g| g.applied >= 203 && g.pending == 0)
        .await;
    let progress = live.finish().await;
    assert!(progress.deleted >= 3, "{progress:?}");

    let r = compare(&mut source, &mut target, &pattern, &disposable, 100).await;
    assert!(r.equal(), "{r:?}");
    assert_eq!(
        run(
            &mut target,
            cmd![
                "EXISTS",
                format!("{p}:s:6"),
                format!("{p}:short"),
                format!("{p}:cache:page"),
                format!("{p}:cache:fresh")
            ]
        )
        .await,
        Value::Int(0),
        "a renamed-away key, an expired key and the disposable cache are not on the target"
    );
}

#[tokio::test]
async fn a_lost_subscription_is_healed_by_a_full_pass() {
    let (mut source, mut target, p, pattern) = populated().await;
    let live = Live::start(&pattern, &[]);
    live.until("finished its first pass", |g| g.full_passes >= 1)
        .await;

    // Find the sync's subscriber, then kill it and write in the same round trip, so the
    // writes land while nothing listens.
    let Value::Bulk(Some(list)) = run(&mut source, cmd!["CLIENT", "LIST", "TYPE", "pubsub"]).await
    else {
        panic!("CLIENT LIST");
    };
    let list = String::from_utf8_lossy(&list).into_owned();
    let id = list
        .lines()
        .find(|l| l.contains(&format!(" name={} ", live.name)))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("the subscriber in {list}"))
        .to_string();
    let answers = source
        .pipeline(vec![
            cmd!["CLIENT", "KILL", "ID", id],
            cmd!["DEL", format!("{p}:s:10"), format!("{p}:s:11")],
            cmd!["SET", format!("{p}:during-gap"), "x"],
            cmd!["HSET", format!("{p}:h:12"), "b", "gap"],
        ])
        .await
        .expect("kill and write");
    assert_eq!(answers[0], Value::Int(1), "{answers:?}");

    live.until("made a second full pass", |g| g.full_passes >= 2)
        .await;
    let progress = live.finish().await;
    assert!(progress.deleted >= 2, "{progress:?}");
    let r = compare(&mut source, &mut target, &pattern, &[], 100).await;
    assert!(r.equal(), "{r:?}");
}

#[tokio::test]
async fn preflight_probes_both_servers_and_names_what_blocks() {
    use ferry_kv::probe;
    let source_url = RedisUrl::parse(&bed_var("FERRY_BED_REDIS_SOURCE_URL")).expect("url");
    let target_url = RedisUrl::parse(&bed_var("FERRY_BED_REDIS_TARGET_URL")).expect("url");
    let source = probe::probe(&source_url, false, true)
        .await
        .expect("probe source");
    let target = probe::probe(&target_url, true, true)
        .await
        .expect("probe target");
    assert!(!source.version.is_empty(), "{source:?}");
    assert!(
        !source.config_allowed,
        "CONFIG is refused as on Heroku: {source:?}"
    );
    assert!(source.dump_allowed, "{source:?}");
    assert_eq!(source.notifications, Some(true), "{source:?}");
    assert_eq!(target.restore_allowed, Some(true), "{target:?}");
    assert!(target.config_allowed, "{target:?}");
    assert_eq!(target.maxmemory_policy, "noeviction");
    assert_eq!(target.notifications, Some(true), "{target:?}");
    assert_eq!(probe::blockers(&source, &target), Vec::<String>::new());

    // Sidekiq's keys, in a database of their own (db 5 is this test's).
    let jobs = source_url.with_db(5);
    let mut c = Conn::connect(&jobs).await.expect("connect");
    c.pipeline(vec![
        cmd!["FLUSHDB"],
        cmd!["RPUSH", "queue:default", "{\"jid\":\"1\"}"],
        cmd!["SADD", "queues", "default"],
        cmd!["ZADD", "schedule", "1700000000", "{\"jid\":\"2\"}"],
    ])
    .await
    .expect("sidekiq keys");
    let with_jobs = probe::probe(&jobs, false, false).await.expect("probe");
    assert_eq!(with_jobs.sidekiq.queues, 1, "{with_jobs:?}");
    assert!(with_jobs.sidekiq.schedule && !with_jobs.sidekiq.retry);

    // What blocks, each with its fix.
    let evicting = probe::Probe {
        maxmemory_policy: "allkeys-lru".into(),
        version: "6.2.6".into(),
        restore_allowed: Some(false),
        notifications: Some(false),
        ..target.clone()
    };
    let silent = probe::Probe {
        notifications: Some(false),
        ..with_jobs
    };
    let found = probe::blockers(&silent, &evicting).join("\n");
    for says in [
        "noeviction",
        "engine version",
        "keyspace-notifications",
        "notify-keyspace-events to KEA in the ElastiCache parameter group",
        "refuses RESTORE",
    ] {
        assert!(found.contains(says), "{says}: {found}");
    }
}

/// The cutover's drain: a marker written on the source after a burst of writes reaches the
/// target only after all of them; a `final` one ends the sync, so later source writes stay
/// behind. Database 9 is this test's (the sync covers every key of its database).
#[tokio::test]
async fn a_drain_marker_lands_after_every_earlier_change_and_a_final_one_ends_the_sync() {
    let url = |var: &str| RedisUrl::parse(&bed_var(var)).expect("url").with_db(9);
    let (src_url, tgt_url) = (
        url("FERRY_BED_REDIS_SOURCE_URL"),
        url("FERRY_BED_REDIS_TARGET_URL"),
    );
    let mut source = Conn::connect(&src_url).await.expect("source");
    let mut target = Conn::connect(&tgt_url).await.expect("target");
    source.call(cmd!["FLUSHDB"]).await.expect("flush");
    target.call(cmd!["FLUSHDB"]).await.expect("flush");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let progress = Arc::new(Mutex::new(sync::Progress::default()));
    let seen = progress.clone();
    let options = sync::Options {
        client_name: unique("ferry-drain-"),
        ..sync::Options::default()
    };
    let (s2, t2) = (src_url.clone(), tgt_url.clone());
    let task = tokio::spawn(async move {
        sync::run(&s2, &t2, &options, rx, |p| {
            *seen.lock().expect("progress") = p.clone();
        })
        .await
    });
    while progress.lock().expect("progress").full_passes == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst = |from: usize| {
        (from..from + 2000)
            .map(|i| cmd!["SET", format!("k:{i}"), i.to_string()])
            .collect::<Vec<_>>()
    };
    source.pipeline(burst(0)).await.expect("burst");
    let took = sync::drain(
        &mut source,
        &mut target,
        "t1",
        false,
        Duration::from_secs(10),
    )
    .await
    .expect("drain");
    let Value::Int(n) = target.call(cmd!["DBSIZE"]).await.expect("dbsize") else {
        panic!("DBSIZE");
    };
    assert_eq!(
        n, 2000,
        "keys on the target when the marker arrived (the marker itself removed)"
    );
    eprintln!("drained 2000 keys in {took:?}");

    source.pipeline(burst(2000)).await.expect("burst");
    sync::drain(
        &mut source,
        &mut target,
        "t2",
        true,
        Duration::from_secs(10),
    )
    .await
    .expect("final drain");
    let (_, ended) = task.await.expect("task").expect("sync");
    assert_eq!(ended, sync::Ended::Drained);
    assert_eq!(
        target.call(cmd!["EXISTS", "k:3999"]).await.expect("exists"),
        Value::Int(1)
    );
    source.call(cmd!["SET", "k:after", "x"]).await.expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        target
            .call(cmd!["EXISTS", "k:after"])
            .await
            .expect("exists"),
        Value::Int(0),
        "a write after the final marker reached the target"
    );
    drop(stop);

    // The other direction (a rollback's reverse sync) finds a final marker both sides hold
    // (delivered before) and takes it for nothing: it keeps syncing.
    for c in [&mut source, &mut target] {
        c.call(cmd![
            "SET",
            "ferry:drain:old:cutover:db9",
            "final:old:cutover:db9",
            "EX",
            "600"
        ])
        .await
        .expect("old marker");
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let options = sync::Options {
        client_name: unique("ferry-reverse-"),
        ..sync::Options::default()
    };
    let (s2, t2) = (tgt_url.clone(), src_url.clone());
    let reverse = tokio::spawn(async move { sync::run(&s2, &t2, &options, rx, |_| {}).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    target
        .call(cmd!["SET", "k:reverse", "x"])
        .await
        .expect("set");
    let deadline = Instant::now() + Duration::from_secs(10);
    while source
        .call(cmd!["EXISTS", "k:reverse"])
        .await
        .expect("exists")
        != Value::Int(1)
    {
        assert!(
            Instant::now() < deadline,
            "the reverse sync stopped at the other direction's marker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).expect("stop");
    let (_, ended) = reverse.await.expect("task").expect("reverse sync");
    assert_eq!(ended, sync::Ended::Stopped);
}
