//! Verify as a job of the replication worker (an ECS task, no time limit), not of a Lambda
//! (15 minutes at most: a few tens of GB).
//!
//! The Verify step writes a request into the `verify_job` fact; the worker's job loop
//! ([`serve`]) takes it, compares the tables with several session pairs ([`pass`]), judges
//! the keys that differed ([`judge`]) and writes the verdicts back; the step long-polls the
//! fact and reports. The fact is the job's whole record (state, beat, the pass's progress,
//! the verdicts), written by compare-and-swap only: a worker that finds it replaced (a new
//! request, or another worker that took over a job whose beat went stale) stops. A worker
//! that dies leaves the job `running`; its successor resumes it at the first slice not done.
//! A lost connection resumes it too, at most [`MAX_ATTEMPTS`] times.

pub mod judge;
pub mod pass;

use std::{collections::BTreeMap, collections::HashMap, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use ferry_core::{
    StepErrorName,
    spec::CaptureMode,
    store::{MigrationStore, StoreError},
};
use ferry_pg::{PgUrl, catalog};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::{ReplError, ReplResult, runner::RunError, throttle::Throttle, verify};
use judge::{Capture, Ledger};
use pass::Pass;

/// The fact that holds the job.
pub const FACT: &str = "verify_job";
/// A running job whose beat is older than this is taken over by another worker.
pub const STALE_SECONDS: i64 = 30;
/// Attempts of one job (a lost connection resumes it) before it fails.
pub const MAX_ATTEMPTS: u32 = 5;
/// Keys kept per table in the verdicts.
pub const KEYS_KEPT: usize = 100;
/// How often a running job's beat and progress are written.
pub const BEAT: Duration = Duration::from_secs(2);

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Written by the Verify step; no worker has taken it yet.
    Requested,
    /// A worker compares.
    Running,
    /// Verdicts written.
    Done,
    /// The job could not finish (the error is recorded).
    Failed,
    /// The step has reported the outcome; the next Verify asks for a new job.
    Reported,
}

/// The `verify_job` fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Names this request (a new request replaces the fact whole).
    pub id: String,
    /// When the step asked.
    pub requested_at: DateTime<Utc>,
    /// How long each key round waits for the worker's apply, in milliseconds.
    pub settle_ms: u64,
    /// Source rows compared per second at most (`replication.verify_rows_per_second`).
    #[serde(default)]
    pub rows_per_second: Option<u64>,
    /// Where it stands.
    pub state: JobState,
    /// The worker running it.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The running worker's last beat.
    #[serde(default)]
    pub beat_at: Option<DateTime<Utc>>,
    /// When a worker first took it.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// The bucket pass's progress.
    #[serde(default)]
    pub pass: Pass,
    /// The verdicts, once done.
    #[serde(default)]
    pub result: Option<Verdicts>,
    /// Why it failed (or why the last attempt did).
    #[serde(default)]
    pub error: Option<String>,
    /// The failure's Step Functions error name.
    #[serde(default)]
    pub error_name: Option<String>,
}

impl Job {
    /// A new request.
    pub fn request(
        id: impl Into<String>,
        now: DateTime<Utc>,
        settle: Duration,
        rows_per_second: Option<u64>,
    ) -> Self {
        Self {
            id: id.into(),
            requested_at: now,
            settle_ms: settle.as_millis() as u64,
            rows_per_second,
            state: JobState::Requested,
            worker_id: None,
            beat_at: None,
            started_at: None,
            finished_at: None,
            attempts: 0,
            pass: Pass::default(),
            result: None,
            error: None,
            error_name: None,
        }
    }

    /// Whether worker `me` should run it now: requested, already its own, or left by a
    /// worker whose beat went stale.
    pub fn wanted_by(&self, me: &str, now: DateTime<Utc>) -> bool {
        match self.state {
            JobState::Requested => true,
            JobState::Running => {
                self.worker_id.as_deref() == Some(me)
                    || self
                        .beat_at
                        .is_none_or(|b| (now - b).num_seconds() >= STALE_SECONDS)
            }
            JobState::Done | JobState::Failed | JobState::Reported => false,
        }
    }

    /// One line for `ferry status` while the job is under way (`None` once it ended).
    pub fn progress_line(&self, now: DateTime<Utc>) -> Option<String> {
        let state = match self.state {
            JobState::Requested => "requested, no worker has taken it yet".to_string(),
            JobState::Running => format!(
                "running in worker {} (attempt {}, beat {} s ago)",
                self.worker_id.as_deref().unwrap_or("?"),
                self.attempts,
                self.beat_age_seconds(now)
                    .map_or("never".into(), |a| format!("{a:.0}"))
            ),
            JobState::Done | JobState::Failed | JobState::Reported => return None,
        };
        let table = self
            .pass
            .tables
            .iter()
            .find(|t| !t.done())
            .map(|t| format!("; now {} slice {}/{}", t.table, t.slices_done, t.slices))
            .unwrap_or_default();
        Some(format!(
            "verify: {state}: {}/{} tables, {} source rows compared{table}; {} s since asked",
            self.pass.tables_done,
            self.pass.tables_total,
            self.pass.rows_compared,
            (now - self.requested_at).num_seconds()
        ))
    }

    /// Seconds since the running worker's last beat.
    pub fn beat_age_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        self.beat_at
            .map(|b| (now - b).num_milliseconds() as f64 / 1000.0)
    }
}

/// Keys of one table, counted, the first [`KEYS_KEPT`] kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// How many.
    pub count: usize,
    /// The first ones (canonical key texts; never row values).
    pub keys: Vec<String>,
}

impl KeyList {
    fn of(keys: &[String]) -> Self {
        Self {
            count: keys.len(),
            keys: keys.iter().take(KEYS_KEPT).cloned().collect(),
        }
    }
}

/// What a job found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    /// Tables compared.
    pub tables: usize,
    /// Rows on the source, summed.
    pub source_rows: i64,
    /// Tables with keys that differed at first and were compared again.
    pub rechecked: Vec<String>,
    /// Rounds run.
    pub rounds: u32,
    /// Tables with keys still changing at the end: tolerated.
    pub in_flight: Vec<String>,
    /// Keys compared again after the pass.
    pub keys_rechecked: u64,
    /// Keys tolerated at the end because a change for each still waited.
    pub keys_tolerated: u64,
    /// The capture whose backlog decided what was in flight.
    pub capture: Option<CaptureMode>,
    /// Keys that differ with no change waiting, by table.
    pub failed: BTreeMap<String, KeyList>,
    /// Keys that differ where the capture's backlog was too long to tell, by table.
    pub undecided: BTreeMap<String, KeyList>,
    /// Tables with too many differing buckets to be rows in flight (a sentence each).
    pub too_many: Vec<String>,
}

impl Verdicts {
    /// Whether the target holds what the source does, rows in flight aside.
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.undecided.is_empty() && self.too_many.is_empty()
    }
}

/// Reads the job, with the stored value its next write must swap.
pub async fn read(
    store: &dyn MigrationStore,
    migration_id: &str,
) -> Result<Option<(serde_json::Value, Job)>, StoreError> {
    let Some(raw) = store.fact(migration_id, FACT).await? else {
        return Ok(None);
    };
    let job = serde_json::from_value(raw.clone()).map_err(|e| StoreError::Corrupt {
        key: format!("{migration_id}/{FACT}"),
        reason: e.to_string(),
    })?;
    Ok(Some((raw, job)))
}

/// The job's record and the value stored last, written by compare-and-swap.
pub struct Recorder<'a> {
    store: &'a dyn MigrationStore,
    migration_id: String,
    last: Option<serde_json::Value>,
    /// The job as this writer holds it.
    pub job: Job,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("migration_id", &self.migration_id)
            .field("job", &self.job.id)
            .finish_non_exhaustive()
    }
}

impl<'a> Recorder<'a> {
    /// A writer of `job`, read as `last`.
    pub fn new(
        store: &'a dyn MigrationStore,
        migration_id: &str,
        last: Option<serde_json::Value>,
        job: Job,
    ) -> Self {
        Self {
            store,
            migration_id: migration_id.to_string(),
            last,
            job,
        }
    }

    /// Writes the job if the fact is still what this writer wrote or read last; whether it
    /// was (`false`: replaced by someone else, whose version stands).
    pub async fn save(&mut self) -> Result<bool, StoreError> {
        let value = serde_json::to_value(&self.job).map_err(|e| StoreError::Corrupt {
            key: format!("{}/{FACT}", self.migration_id),
            reason: e.to_string(),
        })?;
        let written = self
            .store
            .swap_fact(&self.migration_id, FACT, self.last.as_ref(), &value)
            .await?;
        if written {
            self.last = Some(value);
        }
        Ok(written)
    }
}

/// How the worker runs jobs.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The migration.
    pub migration_id: String,
    /// This worker (the replication worker's id).
    pub worker_id: String,
    /// Session pairs comparing at once.
    pub sessions: usize,
    /// How often the fact is read for a request.
    pub poll: Duration,
}

/// The worker's job loop: forever, takes a job meant for it and runs it. `urls` gives the
/// source and target URLs, read again for every attempt (Heroku rotates credentials).
pub async fn serve<F, Fut>(store: &dyn MigrationStore, worker: &Worker, urls: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ReplResult<(PgUrl, PgUrl)>>,
{
    loop {
        tokio::time::sleep(worker.poll).await;
        if let Err(e) = serve_once(store, worker, &urls).await {
            tracing::warn!(step = "verify", "verify job: {e}");
        }
    }
}

/// Takes and runs the job if one is meant for this worker; whether one ran.
pub async fn serve_once<F, Fut>(
    store: &dyn MigrationStore,
    worker: &Worker,
    urls: &F,
) -> Result<bool, RunError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ReplResult<(PgUrl, PgUrl)>>,
{
    let Some((raw, job)) = read(store, &worker.migration_id).await? else {
        return Ok(false);
    };
    let now = Utc::now();
    if !job.wanted_by(&worker.worker_id, now) {
        return Ok(false);
    }
    let mut rec = Recorder::new(store, &worker.migration_id, Some(raw), job);
    rec.job.state = JobState::Running;
    rec.job.worker_id = Some(worker.worker_id.clone());
    rec.job.beat_at = Some(now);
    rec.job.started_at.get_or_insert(now);
    rec.job.attempts += 1;
    if !rec.save().await? {
        return Ok(false);
    }
    tracing::info!(step = "verify", job = %rec.job.id, attempt = rec.job.attempts, "verify job taken");
    let outcome = match attempt(&mut rec, worker, urls).await? {
        Some(o) => o,
        None => {
            tracing::warn!(step = "verify", "the verify job was replaced; leaving it");
            return Ok(true);
        }
    };
    match outcome {
        Ok(v) => {
            rec.job.state = JobState::Done;
            rec.job.result = Some(v);
            rec.job.error = None;
            rec.job.error_name = None;
        }
        Err(e) => {
            let name = e.step_error_name();
            let again = rec.job.attempts < MAX_ATTEMPTS
                && (e.is_auth_failure() || name == "Ferry.Retryable.PgConnect");
            tracing::warn!(step = "verify", error_name = name, again, "verify job: {e}");
            rec.job.error = Some(e.to_string());
            rec.job.error_name = Some(name.to_string());
            if !again {
                rec.job.state = JobState::Failed;
            }
        }
    }
    if rec.job.state != JobState::Running {
        rec.job.finished_at = Some(Utc::now());
    }
    rec.save().await?;
    Ok(true)
}

/// One attempt: sessions connected, the comparison run while the beat is written. `None`
/// when the job was replaced under it.
async fn attempt<F, Fut>(
    rec: &mut Recorder<'_>,
    worker: &Worker,
    urls: &F,
) -> Result<Option<ReplResult<Verdicts>>, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ReplResult<(PgUrl, PgUrl)>>,
{
    let pairs = match connect(urls, worker.sessions.max(1)).await {
        Ok(p) => p,
        Err(e) => return Ok(Some(Err(e))),
    };
    let dbname = match urls().await {
        Ok((s, _)) => s.dbname().unwrap_or("postgres").to_string(),
        Err(e) => return Ok(Some(Err(e))),
    };
    let (tx, rx) = watch::channel(rec.job.pass.clone());
    let mut pass = rec.job.pass.clone();
    let job = rec.job.clone();
    let result = {
        let work = execute(&pairs, &dbname, &job, &mut pass, &tx);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(BEAT);
        loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    rec.job.pass = rx.borrow().clone();
                    rec.job.beat_at = Some(Utc::now());
                    if !rec.save().await? {
                        return Ok(None);
                    }
                }
            }
        }
    };
    rec.job.pass = pass;
    rec.job.beat_at = Some(Utc::now());
    Ok(Some(result))
}

/// `n` session pairs, output settings normalised.
async fn connect<F, Fut>(urls: &F, n: usize) -> ReplResult<Vec<(Client, Client)>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ReplResult<(PgUrl, PgUrl)>>,
{
    let (source, target) = urls().await?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, t) = (source.connect().await?, target.connect().await?);
        verify::normalise_session(&s).await?;
        verify::normalise_session(&t).await?;
        pairs.push((s, t));
    }
    Ok(pairs)
}

/// The comparison: the bucket pass (resuming `pass`), the differing buckets narrowed to keys,
/// the keys judged in rounds.
pub async fn execute(
    pairs: &[(Client, Client)],
    dbname: &str,
    job: &Job,
    pass: &mut Pass,
    progress: &watch::Sender<Pass>,
) -> ReplResult<Verdicts> {
    let (source, target) = pairs
        .first()
        .ok_or_else(|| ReplError::State("a Verify job needs a session pair".into()))?;
    let tables = catalog::tables(source).await?;
    let (capture_mode, capture) = Capture::detect(source, dbname).await?;
    let mark = capture.mark(source).await?;
    let throttle = job.rows_per_second.map(Throttle::new);
    let bounds = pass::Bounds {
        rows_per_bucket: verify::ROWS_PER_BUCKET,
        buckets_per_slice: pass::BUCKETS_PER_SLICE,
        throttle: throttle.as_ref(),
    };
    pass::run(pairs, &tables, pass, &bounds, progress).await?;
    let settle = Duration::from_millis(job.settle_ms);
    let by_name: HashMap<String, &catalog::Table> =
        tables.iter().map(|t| (t.display_name(), t)).collect();
    let mut ledger = Ledger::default();
    let mut too_many = Vec::new();
    for tp in pass.tables.iter().filter(|t| t.mismatches_total > 0) {
        let t = judge::table_of(&by_name, &tp.table)?;
        let c = tp.check();
        match judge::narrowable(
            source,
            target,
            t,
            c,
            tp.complete(),
            (&capture, &mark, settle),
        )
        .await?
        {
            Err(sentence) => too_many.push(sentence),
            Ok(c) => {
                let keys =
                    verify::differing_keys(source, target, t, &c.buckets, &c.differing()).await?;
                if !keys.is_empty() {
                    ledger.open.insert(
                        c.table.clone(),
                        keys.into_iter().map(|k| (k, None)).collect(),
                    );
                }
            }
        }
    }
    let rechecked: Vec<String> = ledger.open.keys().cloned().collect();
    let keys_rechecked = ledger.open.values().map(|k| k.len() as u64).sum();
    let rounds = judge::rounds(
        source,
        target,
        &capture,
        &by_name,
        (mark, settle),
        &mut ledger,
    )
    .await?;
    Ok(Verdicts {
        tables: pass.tables_total,
        source_rows: pass.tables.iter().map(|t| t.source_rows).sum(),
        rechecked,
        rounds,
        in_flight: ledger.open.keys().cloned().collect(),
        keys_rechecked,
        keys_tolerated: ledger.open.values().map(|k| k.len() as u64).sum(),
        capture: capture_mode,
        failed: ledger
            .failed
            .iter()
            .map(|(t, k)| (t.clone(), KeyList::of(k)))
            .collect(),
        undecided: ledger
            .undecided
            .iter()
            .map(|(t, k)| (t.clone(), KeyList::of(k)))
            .collect(),
        too_many,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_takes_a_request_its_own_job_or_one_whose_beat_went_stale() {
        let now = Utc::now();
        let mut j = Job::request("j1", now, Duration::from_secs(1), None);
        assert!(j.wanted_by("w1", now));
        j.state = JobState::Running;
        j.worker_id = Some("w1".into());
        j.beat_at = Some(now);
        assert!(j.wanted_by("w1", now), "its own job, resumed");
        assert!(!j.wanted_by("w2", now), "another's live job");
        let later = now + chrono::Duration::seconds(STALE_SECONDS);
        assert!(j.wanted_by("w2", later), "a job whose worker went quiet");
        for s in [JobState::Done, JobState::Failed, JobState::Reported] {
            j.state = s;
            assert!(!j.wanted_by("w1", now), "{s:?}");
        }
    }

    #[test]
    fn status_shows_a_running_jobs_progress_and_nothing_once_it_ended() {
        let now = Utc::now();
        let mut j = Job::request("j1", now, Duration::from_secs(1), None);
        assert!(j.progress_line(now).expect("a line").contains("requested"));
        j.state = JobState::Running;
        j.worker_id = Some("w1".into());
        j.attempts = 2;
        j.beat_at = Some(now);
        j.pass.tables_total = 3;
        j.pass.tables_done = 1;
        j.pass.rows_compared = 1234;
        let line = j
            .progress_line(now + chrono::Duration::seconds(7))
            .expect("a line");
        assert_eq!(
            line,
            "verify: running in worker w1 (attempt 2, beat 7 s ago): 1/3 tables, 1234 source rows compared; 7 s since asked"
        );
        j.state = JobState::Reported;
        assert_eq!(j.progress_line(now), None);
    }

    #[test]
    fn verdicts_pass_only_without_failed_undecided_or_too_many() {
        let mut v = Verdicts::default();
        assert!(v.passed());
        v.too_many.push("public.t (…)".into());
        assert!(!v.passed());
        let mut v = Verdicts::default();
        v.failed
            .insert("public.t".into(), KeyList::of(&["[\"1\"]".into()]));
        assert!(!v.passed());
    }
}
