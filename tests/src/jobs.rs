//! A Sidekiq-like Redis workload, as a Rails app on Heroku runs one: producers `LPUSH` jobs
//! with unique ids onto `queue:default` and schedule some in the `schedule` sorted set; workers
//! `BRPOP` (Sidekiq's basic fetch) and a scheduler poller moves due jobs (`ZRANGEBYSCORE`, then
//! `ZREM` and push only when the ZREM removed it, as Sidekiq's poller does); each request also
//! writes a session key with a TTL and a cache entry.
//!
//! Two fleets, as in a migration: the AWS fleet reads `REDIS_URL` (the endpoint's Redis proxy)
//! once at boot and keeps its connections; Heroku's dynos talk to Heroku Redis directly until
//! they are scaled down. Nothing in it knows about Ferry. At the end every acknowledged job id
//! must have run exactly once, and every session must be on the side the app ended on.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use ferry_kv::{Conn, RedisUrl, cmd, resp::Value};

/// What the workload saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Job ids whose enqueue was acknowledged.
    pub enqueued: Mutex<Vec<String>>,
    /// Job id → how many times a worker ran it.
    pub ran: Mutex<BTreeMap<String, u32>>,
    /// Session keys written (acknowledged).
    pub sessions: Mutex<Vec<String>>,
    /// Errors a client of the app saw (none is the goal).
    pub errors: Mutex<Vec<String>>,
}

/// The exactly-once check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// Jobs enqueued.
    pub enqueued: usize,
    /// Jobs run.
    pub ran: usize,
    /// Jobs run more than once.
    pub twice: Vec<String>,
    /// Jobs enqueued and never run.
    pub lost: Vec<String>,
}

impl JobReport {
    /// One line for a report.
    pub fn line(&self) -> String {
        format!(
            "{} job(s) enqueued, {} run, {} run twice, {} lost",
            self.enqueued,
            self.ran,
            self.twice.len(),
            self.lost.len()
        )
    }
}

/// The running workload.
pub struct Jobs {
    /// What it saw.
    pub tally: Arc<Tally>,
    stop_all: Arc<AtomicBool>,
    stop_producers: Arc<AtomicBool>,
    stop_heroku: Arc<AtomicBool>,
    /// Heroku-side loops still running (its dynos' processes, as Heroku's dyno list counts
    /// them until they exit).
    heroku_alive: Arc<AtomicUsize>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next: Arc<AtomicU64>,
}

/// One side's loops: told to stop together, counted while they run.
#[derive(Clone, Default)]
struct Side {
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicUsize>,
}

/// Counts a loop as running until it is dropped (the loop's end).
struct Alive(Arc<AtomicUsize>);

impl Side {
    fn enter(&self) -> Alive {
        self.alive.fetch_add(1, SeqCst);
        Alive(self.alive.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish()
    }
}

const QUEUE: &str = "queue:default";
const SCHEDULE: &str = "schedule";

fn now_s() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

fn error(tally: &Tally, what: &str, e: impl std::fmt::Display) {
    tally.errors.lock().expect("errors").push(format!(
        "{} {what}: {e}",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    ));
}

async fn connect(url: &RedisUrl, tally: &Tally) -> Option<Conn> {
    match Conn::connect(url).await {
        Ok(c) => Some(c),
        Err(e) => {
            error(tally, "connect", e);
            None
        }
    }
}

impl Jobs {
    /// Starts the AWS fleet on `aws` (the endpoint's proxy URL) and Heroku's dynos on
    /// `heroku` (Heroku Redis itself): one producer each (`per_second` jobs), one worker
    /// each, one scheduler poller each.
    pub async fn start(aws: RedisUrl, heroku: RedisUrl, per_second: u32) -> Self {
        let jobs = Self {
            tally: Arc::default(),
            stop_all: Arc::default(),
            stop_producers: Arc::default(),
            stop_heroku: Arc::default(),
            heroku_alive: Arc::default(),
            tasks: Mutex::default(),
            next: Arc::default(),
        };
        let heroku_side = Side {
            stop: jobs.stop_heroku.clone(),
            alive: jobs.heroku_alive.clone(),
        };
        for (url, name, side) in [
            (aws, "aws", Side::default()),
            (heroku, "heroku", heroku_side),
        ] {
            jobs.spawn_producer(url.clone(), name, per_second, side.clone())
                .await;
            jobs.spawn_worker(url.clone(), side.clone()).await;
            jobs.spawn_poller(url, side).await;
        }
        jobs
    }

    async fn spawn_producer(&self, url: RedisUrl, side: &str, per_second: u32, side_loops: Side) {
        let (tally, stop, producers, next) = (
            self.tally.clone(),
            self.stop_all.clone(),
            self.stop_producers.clone(),
            self.next.clone(),
        );
        let side = side.to_string();
        let Some(mut c) = connect(&url, &tally).await else {
            return;
        };
        let pause = Duration::from_millis(1000 / u64::from(per_second.max(1)));
        let (alive, stop_side) = (side_loops.enter(), side_loops.stop);
        self.tasks
            .lock()
            .expect("tasks")
            .push(tokio::spawn(async move {
                let _alive = alive;
                while !stop.load(SeqCst) && !producers.load(SeqCst) && !stop_side.load(SeqCst) {
                    let n = next.fetch_add(1, SeqCst);
                    let jid = format!("{side}-{n}");
                    let job =
                        format!("{{\"class\":\"HardWorker\",\"jid\":\"{jid}\",\"args\":[{n}]}}");
                    let session = format!("session:{jid}");
                    let mut commands = vec![
                        cmd!["SET", &session, "user=1", "EX", "3600"],
                        cmd!["SET", format!("cache:views:{}", n % 50), n.to_string()],
                    ];
                    commands.push(if n % 5 == 0 {
                        cmd!["ZADD", SCHEDULE, format!("{:.3}", now_s() + 1.5), &job]
                    } else {
                        cmd!["LPUSH", QUEUE, &job]
                    });
                    match c.pipeline(commands).await {
                        Ok(answers) if !answers.iter().any(|a| matches!(a, Value::Error(_))) => {
                            tally.enqueued.lock().expect("enqueued").push(jid);
                            tally.sessions.lock().expect("sessions").push(session);
                        }
                        Ok(answers) => error(&tally, "enqueue", format!("{answers:?}")),
                        Err(e) => error(&tally, "enqueue", e),
                    }
                    tokio::time::sleep(pause).await;
                }
            }));
    }

    async fn spawn_worker(&self, url: RedisUrl, side: Side) {
        let (tally, stop) = (self.tally.clone(), self.stop_all.clone());
        let Some(mut c) = connect(&url, &tally).await else {
            return;
        };
        let (alive, stop_side) = (side.enter(), side.stop);
        self.tasks
            .lock()
            .expect("tasks")
            .push(tokio::spawn(async move {
                let _alive = alive;
                while !stop.load(SeqCst) && !stop_side.load(SeqCst) {
                    // A fetch blocks at most 100 ms: a stopping worker exits within that.
                    match c.call(cmd!["BRPOP", QUEUE, "0.1"]).await {
                        Ok(Value::Array(Some(pair))) => {
                            if let Some(Value::Bulk(Some(job))) = pair.get(1) {
                                let text = String::from_utf8_lossy(job);
                                if let Some(jid) = text
                                    .split("\"jid\":\"")
                                    .nth(1)
                                    .and_then(|r| r.split('"').next())
                                {
                                    *tally
                                        .ran
                                        .lock()
                                        .expect("ran")
                                        .entry(jid.to_string())
                                        .or_default() += 1;
                                }
                            }
                            // The job's work.
                            tokio::time::sleep(Duration::from_millis(4)).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            error(&tally, "fetch", e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
    }

    async fn spawn_poller(&self, url: RedisUrl, side: Side) {
        let (tally, stop) = (self.tally.clone(), self.stop_all.clone());
        let Some(mut c) = connect(&url, &tally).await else {
            return;
        };
        let (alive, stop_side) = (side.enter(), side.stop);
        self.tasks
            .lock()
            .expect("tasks")
            .push(tokio::spawn(async move {
                let _alive = alive;
                while !stop.load(SeqCst) && !stop_side.load(SeqCst) {
                    let due = c
                        .call(cmd![
                            "ZRANGEBYSCORE",
                            SCHEDULE,
                            "-inf",
                            format!("{:.3}", now_s()),
                            "LIMIT",
                            "0",
                            "50"
                        ])
                        .await;
                    match due {
                        Ok(Value::Array(Some(members))) => {
                            for m in members {
                                let Value::Bulk(Some(m)) = m else { continue };
                                match c.call(cmd!["ZREM", SCHEDULE, &m]).await {
                                    Ok(Value::Int(1)) => {
                                        if let Err(e) = c.call(cmd!["LPUSH", QUEUE, &m]).await {
                                            error(&tally, "enqueue a due job", e);
                                        }
                                    }
                                    Ok(_) => {}
                                    Err(e) => error(&tally, "ZREM", e),
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => error(&tally, "poll", e),
                    }
                    // Every 200 ms, and a stopping dyno's poller exits within 20 ms.
                    for _ in 0..10 {
                        if stop.load(SeqCst) || stop_side.load(SeqCst) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
    }

    /// Heroku's dynos are scaled down: its producer, worker and poller stop (a job a worker
    /// holds is finished first: the worker loop ends between jobs).
    pub fn stop_heroku(&self) {
        self.stop_heroku.store(true, SeqCst);
    }

    /// Stops Heroku's side and waits until its loops have ended (bounded).
    pub async fn heroku_stopped(&self, bound: Duration) {
        self.stop_heroku();
        let deadline = std::time::Instant::now() + bound;
        while self.heroku_alive.load(SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// No more jobs (the workers go on).
    pub fn stop_producers(&self) {
        self.stop_producers.store(true, SeqCst);
    }

    /// Waits until `on`'s queue and schedule are empty (bounded), then stops everything and
    /// checks every acknowledged job ran exactly once.
    pub async fn drain(&self, on: &RedisUrl, bound: Duration) -> JobReport {
        self.stop_producers();
        let deadline = std::time::Instant::now() + bound;
        if let Ok(mut c) = Conn::connect(on).await {
            loop {
                let left = c
                    .pipeline(vec![cmd!["LLEN", QUEUE], cmd!["ZCARD", SCHEDULE]])
                    .await
                    .unwrap_or_default();
                if left == vec![Value::Int(0), Value::Int(0)]
                    || std::time::Instant::now() > deadline
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A job popped just now is noted before the next BRPOP.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop_all.store(true, SeqCst);
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("tasks"));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        self.report()
    }

    /// The exactly-once check as it stands.
    pub fn report(&self) -> JobReport {
        let enqueued = self.tally.enqueued.lock().expect("enqueued").clone();
        let ran = self.tally.ran.lock().expect("ran").clone();
        JobReport {
            enqueued: enqueued.len(),
            ran: ran.len(),
            twice: ran
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(j, _)| j.clone())
                .collect(),
            lost: enqueued
                .into_iter()
                .filter(|j| !ran.contains_key(j))
                .collect(),
        }
    }

    /// Sessions written and acknowledged that `on` does not hold with a TTL.
    pub async fn missing_sessions(&self, on: &RedisUrl) -> Vec<String> {
        let sessions = self.tally.sessions.lock().expect("sessions").clone();
        let Ok(mut c) = Conn::connect(on).await else {
            return sessions;
        };
        let ttls = c
            .pipeline(sessions.iter().map(|s| cmd!["TTL", s]).collect())
            .await
            .unwrap_or_default();
        sessions
            .into_iter()
            .zip(ttls.into_iter().chain(std::iter::repeat(Value::Int(-2))))
            .filter(|(_, t)| !matches!(t, Value::Int(n) if *n > 0))
            .map(|(s, _)| s)
            .collect()
    }

    /// Errors the app's clients saw.
    pub fn errors(&self) -> Vec<String> {
        self.tally.errors.lock().expect("errors").clone()
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.stop_all.store(true, SeqCst);
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

/// The Redis part of a rehearsal: the workload, Heroku's side stopped when the cutover starts
/// (the dynos go into maintenance and are scaled down), and the figures at the end.
#[derive(Debug)]
pub struct RedisRun {
    /// The workload.
    pub jobs: Arc<Jobs>,
    watcher: tokio::task::JoinHandle<()>,
}

/// What a rehearsal's Redis part ended with.
#[derive(Debug)]
pub struct RedisOutcome {
    /// Every job exactly once?
    pub jobs: JobReport,
    /// Sessions not on the side the app ended on (with a TTL).
    pub missing_sessions: Vec<String>,
    /// Errors the app's Redis clients saw.
    pub errors: Vec<String>,
    /// The report's Redis lines.
    pub lines: Vec<String>,
}

impl RedisRun {
    /// Starts the workload when the rehearsal moves Redis.
    pub async fn start(r: &crate::rehearsal::Rehearsal, per_second: u32) -> Option<Self> {
        let sides = r.redis.clone()?;
        let jobs = Arc::new(Jobs::start(sides.aws.clone(), sides.heroku.clone(), per_second).await);
        // Heroku's dynos stop when Ferry scales them down (the fake Platform API's formation
        // says so), not before: a write they make until then must reach ElastiCache. Read
        // from the fake's test-bed side, outside the API's rate limit, every 20 ms. The fake
        // lists them in the dyno list until their loops have ended, as Heroku lists a dyno
        // until its process exits.
        let (app, j) = (r.app.clone(), jobs.clone());
        let (base, _) = crate::heroku();
        let http = reqwest::Client::new();
        http.post(format!("{base}/__bed/apps/{app}/processes"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("the fake Platform API runs the app's processes");
        let watcher = tokio::spawn(async move {
            let url = format!("{base}/__bed/apps/{app}/running");
            let running = || async {
                let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                v["dynos"].as_u64()
            };
            let mut before = None;
            loop {
                if let Some(now) = running().await {
                    match before {
                        None => before = Some(now),
                        Some(b) if now < b => {
                            j.heroku_stopped(Duration::from_secs(10)).await;
                            let _ = http
                                .post(format!("{base}/__bed/apps/{app}/exited"))
                                .json(&serde_json::json!({}))
                                .send()
                                .await;
                            return;
                        }
                        Some(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Some(Self { jobs, watcher })
    }

    /// Stops the producers, lets the workers empty the queues of `ended_on`, and gathers the
    /// figures (the `redis` fact, the cutover's Redis window, jobs, sessions).
    pub async fn finish(
        self,
        r: &crate::rehearsal::Rehearsal,
        ended_on: &RedisUrl,
    ) -> RedisOutcome {
        self.watcher.abort();
        let jobs = self.jobs.drain(ended_on, Duration::from_secs(90)).await;
        let missing_sessions = self.jobs.missing_sessions(ended_on).await;
        let errors = self.jobs.errors();
        let mut lines = Vec::new();
        if let Ok(Some(v)) =
            ferry_core::MigrationStore::fact(r.store.as_ref(), &r.id, ferry_core::state::REDIS_FACT)
                .await
            && let Ok(f) = serde_json::from_value::<ferry_core::state::RedisSync>(v)
        {
            lines.extend(f.databases.iter().map(|d| d.summary()));
        }
        let cut: Option<ferry_steps::facts::CutoverFact> =
            ferry_steps::facts::get(r.store.as_ref(), &r.id, ferry_steps::facts::CUTOVER)
                .await
                .ok()
                .flatten();
        if let Some(c) = &cut {
            lines.push(format!(
                "redis freeze: {} ms held at the endpoint with the database (pause → resume), of which the drain of the live sync {} ms",
                c.paused_ms().map_or("-".into(), |m| m.to_string()),
                c.window_ms("redis_drain_started", "redis_drained")
                    .map_or("-".into(), |m| m.to_string())
            ));
        }
        if let Ok(Some(report)) = ferry_steps::facts::get::<ferry_steps::decommission::Report>(
            r.store.as_ref(),
            &r.id,
            ferry_steps::facts::REPORT,
        )
        .await
            && let Some(n) = report.redis_jobs_handed_over
        {
            lines.push(format!("redis jobs handed over by the decommission: {n}"));
        }
        lines.push(format!("redis jobs: {}", jobs.line()));
        let sessions = self
            .jobs
            .tally
            .sessions
            .lock()
            .map(|s| s.len())
            .unwrap_or(0);
        lines.push(format!(
            "redis sessions: {} of {sessions} written present with their TTL where the app ended",
            sessions - missing_sessions.len()
        ));
        lines.push(format!(
            "redis client errors through the endpoint and on Heroku: {}",
            errors.len()
        ));
        RedisOutcome {
            jobs,
            missing_sessions,
            errors,
            lines,
        }
    }
}
