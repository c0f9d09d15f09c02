//! The queue hand-over on the bed's two real Redis servers: every job of a list queue and of a
//! scheduled-jobs sorted set ends on exactly one side and is popped exactly once, while
//! workers pop on both sides, while two movers run at once, and while the mover is killed at
//! any point of its protocol again and again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_kv::{Conn, RedisUrl, cmd, handover, resp::Value};
use ferry_tests::{bed_var, unique};
use rand::Rng;

async fn conn(var: &str) -> Conn {
    Conn::connect(&RedisUrl::parse(&bed_var(var)).expect("bed URL"))
        .await
        .expect("connect")
}

const SOURCE: &str = "FERRY_BED_REDIS_SOURCE_URL";
const TARGET: &str = "FERRY_BED_REDIS_TARGET_URL";

/// `jobs` list jobs in `{p}:queue:default` and `zjobs` scheduled ones in `{p}:schedule`, on
/// the source; returns the queue patterns.
async fn enqueue(p: &str, jobs: usize, zjobs: usize) -> Vec<String> {
    let mut source = conn(SOURCE).await;
    let mut commands = Vec::new();
    for i in 0..jobs {
        commands.push(cmd![
            "LPUSH",
            format!("{p}:queue:default"),
            format!("{{\"jid\":\"L{i}\"}}")
        ]);
    }
    for i in 0..zjobs {
        commands.push(cmd![
            "ZADD",
            format!("{p}:schedule"),
            (1_700_000_000 + i).to_string(),
            format!("{{\"jid\":\"Z{i}\"}}")
        ]);
    }
    for a in source.pipeline(commands).await.expect("enqueue") {
        assert!(!matches!(a, Value::Error(_)), "{a:?}");
    }
    vec![format!("{p}:queue:*"), format!("{p}:schedule")]
}

/// Jobs of `{p}` on the target now: the queue's length and the schedule's size.
async fn on_target(c: &mut Conn, p: &str) -> i64 {
    let count = |v| match v {
        Value::Int(n) => n,
        other => panic!("a count: {other:?}"),
    };
    let queue = c
        .call(cmd!["LLEN", format!("{p}:queue:default")])
        .await
        .expect("LLEN");
    let schedule = c
        .call(cmd!["ZCARD", format!("{p}:schedule")])
        .await
        .expect("ZCARD");
    count(queue) + count(schedule)
}

type Seen = Arc<Mutex<HashMap<String, u32>>>;

fn note(seen: &Seen, job: Vec<u8>) {
    let job = String::from_utf8(job).expect("utf8 job");
    *seen.lock().expect("seen").entry(job).or_default() += 1;
}

/// A worker popping `{p}:queue:default` and the due end of `{p}:schedule` on one side until
/// `stop`, each job noted once per pop (what Sidekiq's fetch and its scheduler poller do:
/// RPOP, and ZREM of a member the poller read, counted only when the ZREM removed it).
fn worker(
    var: &'static str,
    p: String,
    seen: Seen,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut c = conn(var).await;
        let (queue, schedule) = (format!("{p}:queue:default"), format!("{p}:schedule"));
        while !*stop.lock().expect("stop") {
            if let Ok(Value::Bulk(Some(job))) = c.call(cmd!["RPOP", &queue]).await {
                note(&seen, job);
            }
            if let Ok(Value::Array(Some(due))) = c.call(cmd!["ZRANGE", &schedule, "0", "0"]).await {
                for m in due {
                    if let Value::Bulk(Some(m)) = m
                        && c.call(cmd!["ZREM", &schedule, &m]).await.ok() == Some(Value::Int(1))
                    {
                        note(&seen, m);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// Pops what is left on both sides, then checks every job was seen exactly once.
async fn drain_and_check(p: &str, seen: &Seen, jobs: usize, zjobs: usize) {
    for var in [SOURCE, TARGET] {
        let stop = Arc::new(Mutex::new(false));
        let w = worker(var, p.to_string(), seen.clone(), stop.clone());
        let mut c = conn(var).await;
        loop {
            let left = c
                .pipeline(vec![
                    cmd!["LLEN", format!("{p}:queue:default")],
                    cmd!["ZCARD", format!("{p}:schedule")],
                ])
                .await
                .expect("lengths");
            if left == vec![Value::Int(0), Value::Int(0)] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *stop.lock().expect("stop") = true;
        w.await.expect("worker");
    }
    let seen = seen.lock().expect("seen");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
    for i in 0..jobs {
        assert!(
            seen.contains_key(&format!("{{\"jid\":\"L{i}\"}}")),
            "list job L{i} lost"
        );
    }
    for i in 0..zjobs {
        assert!(
            seen.contains_key(&format!("{{\"jid\":\"Z{i}\"}}")),
            "scheduled job Z{i} lost"
        );
    }
    assert_eq!(
        seen.len(),
        jobs + zjobs,
        "jobs that were never enqueued appeared"
    );
}

#[tokio::test]
async fn every_job_moves_exactly_once_while_workers_pop_on_both_sides_and_two_movers_race() {
    let p = unique("ho-");
    let (jobs, zjobs) = (3000, 400);
    let patterns = enqueue(&p, jobs, zjobs).await;
    let seen: Seen = Arc::default();
    let stop = Arc::new(Mutex::new(false));
    let workers = vec![
        worker(SOURCE, p.clone(), seen.clone(), stop.clone()),
        worker(SOURCE, p.clone(), seen.clone(), stop.clone()),
        worker(TARGET, p.clone(), seen.clone(), stop.clone()),
    ];
    let movers: Vec<_> = (0..2)
        .map(|_| {
            let patterns = patterns.clone();
            tokio::spawn(async move {
                let (mut from, mut to) = (conn(SOURCE).await, conn(TARGET).await);
                handover::hand_over(&mut from, &mut to, &patterns, 50)
                    .await
                    .expect("hand-over")
            })
        })
        .collect();
    let mut moved = handover::Moved::default();
    for m in movers {
        let m = m.await.expect("mover");
        moved.jobs += m.jobs;
    }
    *stop.lock().expect("stop") = true;
    for w in workers {
        w.await.expect("worker");
    }
    assert!(moved.jobs > 0, "the movers moved nothing: {moved:?}");
    let mut from = conn(SOURCE).await;
    assert_eq!(
        handover::waiting(&mut from, &patterns)
            .await
            .expect("waiting"),
        0,
        "jobs left on the source after the hand-over"
    );
    drain_and_check(&p, &seen, jobs, zjobs).await;
}

#[tokio::test]
async fn a_mover_killed_at_any_point_again_and_again_loses_and_repeats_nothing() {
    let p = unique("hk-");
    let (jobs, zjobs) = (2000, 300);
    let patterns = enqueue(&p, jobs, zjobs).await;
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut watch = conn(TARGET).await;
    let mut source = conn(SOURCE).await;
    // Each run is cut short after it has put a random few jobs on the target (a condition,
    // not a moment: how fast the machine is changes where inside its protocol the abort
    // lands, not how many runs there are), until nothing is left to move.
    for _ in 0..1000 {
        if handover::waiting(&mut source, &patterns)
            .await
            .expect("waiting")
            == 0
        {
            break;
        }
        let before = on_target(&mut watch, &p).await;
        let enough = before + rng.random_range(1..=20);
        let patterns = patterns.clone();
        let mover = tokio::spawn(async move {
            let (mut from, mut to) = (conn(SOURCE).await, conn(TARGET).await);
            handover::hand_over(&mut from, &mut to, &patterns, 5).await
        });
        while !mover.is_finished() && on_target(&mut watch, &p).await < enough {
            tokio::task::yield_now().await;
        }
        if !mover.is_finished() {
            kills += 1;
        }
        mover.abort();
        let _ = mover.await;
    }
    let (mut from, mut to) = (conn(SOURCE).await, conn(TARGET).await);
    let last = handover::hand_over(&mut from, &mut to, &patterns, 20)
        .await
        .expect("the last run");
    assert!(
        kills > 50,
        "too few runs were cut short to prove anything: {kills}"
    );
    assert_eq!(
        handover::waiting(&mut from, &patterns)
            .await
            .expect("waiting"),
        0
    );
    eprintln!("{kills} runs killed; the last one: {last:?}");
    // Every job now on the target exactly once: the target's queue and schedule hold them.
    let seen: Seen = Arc::default();
    drain_and_check(&p, &seen, jobs, zjobs).await;
}

#[tokio::test]
async fn a_key_that_is_not_a_queue_is_refused_by_name_before_anything_moves() {
    let p = unique("hn-");
    let mut from = conn(SOURCE).await;
    let mut to = conn(TARGET).await;
    from.call(cmd!["SET", format!("{p}:queue:oops"), "not a list"])
        .await
        .expect("set");
    let err = handover::hand_over(&mut from, &mut to, &[format!("{p}:queue:*")], 10)
        .await
        .expect_err("a string is not a queue");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{p}:queue:oops")), "{msg}");
    assert!(msg.contains("is a string"), "{msg}");
    assert!(msg.contains("redis.queue_patterns"), "{msg}");
}

/// The mover stopped exactly at each of its crash points — after a batch is taken into the
/// moving area and before it is put on the other side, and after it is put and before the
/// moving area is cleared — leaves that batch where the protocol says, and the next run moves
/// every job exactly once (the `fail` crate's named points; nextest runs each test in its own
/// process, so the configuration reaches no other test).
#[tokio::test]
async fn a_mover_stopped_at_each_crash_point_resumes_and_moves_every_job_once() {
    for point in ["handover::filled", "handover::put"] {
        let p = unique("hf-");
        let (jobs, zjobs) = (120, 30);
        let patterns = enqueue(&p, jobs, zjobs).await;
        let (mut from, mut to) = (conn(SOURCE).await, conn(TARGET).await);
        // Stopped at the third pass through the point: two batches moved before it.
        fail::cfg(point, "2*off->return").expect("configure the crash point");
        let err = handover::hand_over(&mut from, &mut to, &patterns, 10)
            .await
            .expect_err("the mover stops at the crash point");
        assert!(err.to_string().contains(point), "{point}: {err}");
        fail::remove(point);
        let area = format!("ferry:handover:moving:{p}:*");
        let left = from.call(cmd!["KEYS", &area]).await.expect("keys");
        assert!(
            matches!(&left, Value::Array(Some(keys)) if keys.len() == 1),
            "{point}: one batch waits in its moving area: {left:?}"
        );
        handover::hand_over(&mut from, &mut to, &patterns, 10)
            .await
            .expect("the next run");
        assert_eq!(
            handover::waiting(&mut from, &patterns)
                .await
                .expect("waiting"),
            0,
            "{point}"
        );
        let seen: Seen = Arc::default();
        drain_and_check(&p, &seen, jobs, zjobs).await;
    }
}
