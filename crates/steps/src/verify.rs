//! Step 4: compare source and target while the app writes, in either capture mode.
//!
//! 1. Every table is compared bucket by bucket (count and checksum per ~1,000 rows: key ranges
//!    for one integer key, key-hash slices for any other key); differing buckets are narrowed
//!    to the keys whose rows differ.
//! 2. Those keys are judged in rounds. Each round first waits (bounded) until the worker has
//!    applied everything committed before the previous round, then reads, per key, what
//!    waits in the capture (the trigger log by key, or a temporary copy of the logical slot,
//!    decoded for keys only: the worker's slot is never touched), the target's row, the
//!    source's row, the target's row again, and what waits once more. A key whose source row
//!    equals either target read has converged; a key with a change waiting is tolerated for
//!    this round; any other key is suspect, and a key suspect in two rounds running fails
//!    Verify, named with its table (keys only, never row values). A key that still has a
//!    change waiting after the last round (a row the app rewrites all the time) is tolerated
//!    and counted.
//!
//! The figures (tables, rows, keys rechecked and tolerated, duration) go to the output, the
//! audit log and the `verify` fact that `ferry status` and `ferry report` read.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ferry_core::{
    spec::CaptureMode,
    state::{Outcome, Phase},
};
use ferry_pg::catalog::{self, Table};
use ferry_replicator::{
    capture::{Waiting, logical, trigger},
    verify::{self, TableCheck},
};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::{Deps, MigrationRef, StepError, StepResult, facts};

/// Rounds of judging (one more for keys suspect once in the last).
const ROUNDS: u32 = 5;
/// Changes decoded at most per look at a logical slot's backlog.
const PEEK_LIMIT: i64 = 200_000;
/// Keys named per table in an error and in the audit.
const NAMED_KEYS: usize = 10;

/// Output: what was compared and what was tolerated (also stored as the `verify` fact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Tables compared.
    pub tables: usize,
    /// Rows on the source, summed (rows compared).
    pub source_rows: i64,
    /// Tables with keys that differed at first and were compared again.
    pub rechecked: Vec<String>,
    /// Rounds run.
    pub rounds: u32,
    /// Tables with keys still changing at the end (a change for each waiting): tolerated.
    pub in_flight: Vec<String>,
    /// Keys compared again after the first pass.
    #[serde(default)]
    pub keys_rechecked: u64,
    /// Keys tolerated at the end because a change for each still waited.
    #[serde(default)]
    pub keys_tolerated: u64,
    /// How long Verify took, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The capture mode whose backlog decided what was in flight.
    #[serde(default)]
    pub capture: Option<CaptureMode>,
    /// When it finished.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// Redis databases verified (spec `redis`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redis: Vec<crate::verify_redis::Checked>,
    /// Objects on which the app's own target role was granted what its Heroku role may do (0
    /// when the app logs in as Ferry's login).
    #[serde(default)]
    pub app_grants: usize,
}

/// Where changes wait on the source.
enum Capture {
    Trigger,
    Logical {
        slot: String,
    },
    /// No capture installed (nothing is in flight: every difference is real).
    None,
}

impl Capture {
    async fn mark(&self, source: &Client) -> StepResult<String> {
        Ok(match self {
            Capture::Trigger => trigger::mark(source).await?.to_string(),
            Capture::Logical { .. } => logical::mark(source).await?,
            Capture::None => String::new(),
        })
    }

    async fn applied_past(&self, source: &Client, mark: &str) -> StepResult<bool> {
        Ok(match self {
            Capture::Trigger => {
                let m: i64 = mark.parse().unwrap_or(i64::MAX);
                trigger::applied_past(source, m).await?
            }
            Capture::Logical { slot } => logical::applied_past(source, slot, mark).await?,
            Capture::None => true,
        })
    }

    /// What waits for the open keys of every table, by table.
    async fn waiting(
        &self,
        source: &Client,
        open: &[(&Table, Vec<String>)],
    ) -> StepResult<HashMap<String, Waiting>> {
        match self {
            Capture::Trigger => {
                let mut out = HashMap::new();
                for (t, keys) in open {
                    out.insert(t.display_name(), trigger::waiting(source, t, keys).await?);
                }
                Ok(out)
            }
            Capture::Logical { slot } => {
                let list: Vec<(&Table, &[String])> =
                    open.iter().map(|(t, k)| (*t, k.as_slice())).collect();
                Ok(logical::waiting(source, slot, &list, PEEK_LIMIT).await?)
            }
            Capture::None => Ok(HashMap::new()),
        }
    }
}

/// Where a key stands after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    /// A change for it waits in the capture.
    Waiting,
    /// Different with nothing waiting (a second time running fails the key).
    Suspect,
    /// Different, and the capture's backlog was too long to tell whether a change waits.
    Undecided,
}

/// The verdict on one key for one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Converged,
    Open(KeyState),
    Failed,
}

/// Judges a key from the source's row hash `s`, the target's before (`t0`) and after (`t1`)
/// it, and what waited around the reads.
fn judge(
    s: Option<&String>,
    t0: Option<&String>,
    t1: Option<&String>,
    waiting: bool,
    decided: bool,
    before: Option<KeyState>,
) -> Verdict {
    if s == t0 || s == t1 {
        return Verdict::Converged;
    }
    if waiting {
        return Verdict::Open(KeyState::Waiting);
    }
    if !decided {
        return Verdict::Open(KeyState::Undecided);
    }
    match before {
        Some(KeyState::Suspect) => Verdict::Failed,
        _ => Verdict::Open(KeyState::Suspect),
    }
}

/// The keys under judgement and the ones that failed, by table.
#[derive(Default)]
struct Ledger {
    /// The state each key was left in by the last round (`None`: not judged yet).
    open: BTreeMap<String, BTreeMap<String, Option<KeyState>>>,
    failed: BTreeMap<String, Vec<String>>,
    /// Failed because the capture's backlog could not be read whole.
    undecided: BTreeMap<String, Vec<String>>,
}

/// Runs the verification. `settle` bounds each wait for the worker (the lag limit if unset).
pub async fn run(deps: &Deps, input: MigrationRef, settle: Option<Duration>) -> StepResult<Output> {
    let started = Instant::now();
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.enter(id, Phase::Verifying).await?;
    let spec = &rec.spec;
    let (source_url, target_url) = deps.urls(spec).await?;
    let source = source_url.connect().await?;
    let target = target_url.connect().await?;
    verify::normalise_session(&source).await?;
    verify::normalise_session(&target).await?;
    let tables = catalog::tables(&source).await?;
    let schemas: Vec<String> = tables
        .iter()
        .map(|t| t.schema.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let login = target_url.user().unwrap_or_default().to_string();
    let app_grants =
        crate::app_grants::ensure(deps, id, &source, &target, &login, &schemas).await?;
    let settle = settle.unwrap_or(Duration::from_secs(u64::from(
        spec.replication.max_lag_seconds.max(1),
    )));
    let slot = logical::slot_name(source_url.dbname().unwrap_or("postgres"));
    let (mode, capture) = if trigger::is_installed(&source).await? {
        (Some(CaptureMode::Trigger), Capture::Trigger)
    } else if logical::slot_exists(&source, &slot).await? {
        (Some(CaptureMode::Logical), Capture::Logical { slot })
    } else {
        (None, Capture::None)
    };

    let mut mark = capture.mark(&source).await?;
    let checks = verify::verify(&source, &target, &tables, verify::ROWS_PER_BUCKET).await?;
    let source_rows: i64 = checks.iter().map(|c| c.source_rows).sum();
    let by_name: HashMap<String, &Table> = tables.iter().map(|t| (t.display_name(), t)).collect();
    let mut ledger = Ledger::default();
    for c in checks.iter().filter(|c| !c.equal()) {
        let t = table_of(&by_name, &c.table)?;
        let c = narrowable(&source, &target, t, c, &capture, &mark, settle).await?;
        let keys = verify::differing_keys(&source, &target, t, &c.buckets, &c.differing()).await?;
        if !keys.is_empty() {
            ledger.open.insert(
                c.table.clone(),
                keys.into_iter().map(|k| (k, None)).collect(),
            );
        }
    }
    let rechecked: Vec<String> = ledger.open.keys().cloned().collect();
    let keys_rechecked = ledger.open.values().map(|k| k.len() as u64).sum();
    let mut rounds = 1;
    for round in 1..=ROUNDS + 1 {
        let suspects_left = ledger
            .open
            .values()
            .flat_map(|k| k.values())
            .any(|s| *s == Some(KeyState::Suspect));
        if ledger.open.is_empty() || (round > ROUNDS && !suspects_left) {
            break;
        }
        rounds = round + 1;
        wait_applied(&capture, &source, &mark, settle).await?;
        mark = capture.mark(&source).await?;
        judge_round(&source, &target, &capture, &by_name, &mut ledger).await?;
    }
    conclude(&mut ledger);
    let redis = crate::verify_redis::run(deps, spec, settle).await?;
    let out = Output {
        tables: checks.len(),
        source_rows,
        rechecked,
        rounds,
        in_flight: ledger.open.keys().cloned().collect(),
        keys_rechecked,
        keys_tolerated: ledger.open.values().map(|k| k.len() as u64).sum(),
        duration_ms: started.elapsed().as_millis() as u64,
        capture: mode,
        at: Some(Utc::now()),
        redis,
        app_grants,
    };
    record(deps, id, &out, &ledger).await?;
    Ok(out)
}

fn table_of<'a>(by_name: &HashMap<String, &'a Table>, name: &str) -> StepResult<&'a Table> {
    by_name.get(name).copied().ok_or_else(|| {
        StepError::Input(format!(
            "table {name} vanished from the source catalog during Verify"
        ))
    })
}

/// A table's check with few enough differing buckets to narrow: compared once more after the
/// worker had time when there are too many (a target far behind); still too many fails.
async fn narrowable(
    source: &Client,
    target: &Client,
    t: &Table,
    check: &TableCheck,
    capture: &Capture,
    mark: &str,
    settle: Duration,
) -> StepResult<TableCheck> {
    if check.mismatches.len() <= verify::MAX_NARROWED_BUCKETS {
        return Ok(check.clone());
    }
    wait_applied(capture, source, mark, settle).await?;
    let again = verify::verify(
        source,
        target,
        std::slice::from_ref(t),
        verify::ROWS_PER_BUCKET,
    )
    .await?
    .remove(0);
    if again.mismatches.len() > verify::MAX_NARROWED_BUCKETS {
        return Err(StepError::VerifyMismatch {
            tables: format!(
                "{} ({} of its row buckets differ, too many to be rows in flight; source {} rows, target {} rows)",
                again.table,
                again.mismatches.len(),
                again.source_rows,
                again.target_rows
            ),
        });
    }
    Ok(again)
}

/// Waits until the worker has applied everything committed before `mark`, at most `settle`.
async fn wait_applied(
    capture: &Capture,
    source: &Client,
    mark: &str,
    settle: Duration,
) -> StepResult<bool> {
    let deadline = Instant::now() + settle;
    loop {
        if capture.applied_past(source, mark).await? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One round: what waits, target, source, target, what waits; then each open key's verdict.
async fn judge_round(
    source: &Client,
    target: &Client,
    capture: &Capture,
    by_name: &HashMap<String, &Table>,
    ledger: &mut Ledger,
) -> StepResult<()> {
    let open: Vec<(&Table, Vec<String>)> = ledger
        .open
        .iter()
        .map(|(name, keys)| Ok((table_of(by_name, name)?, keys.keys().cloned().collect())))
        .collect::<StepResult<_>>()?;
    let mut waiting = capture.waiting(source, &open).await?;
    let mut reads = HashMap::new();
    for (t, keys) in &open {
        let t0 = verify::row_hashes(target, t, keys).await?;
        let s = verify::row_hashes(source, t, keys).await?;
        let t1 = verify::row_hashes(target, t, keys).await?;
        reads.insert(t.display_name(), (s, t0, t1));
    }
    for (name, w) in capture.waiting(source, &open).await? {
        waiting
            .entry(name)
            .or_insert_with(Waiting::complete)
            .merge(w);
    }
    for (name, keys) in ledger.open.iter_mut() {
        let (s, t0, t1) = &reads[name];
        let w = waiting.get(name).cloned().unwrap_or_else(Waiting::complete);
        let mut next = BTreeMap::new();
        for (key, state) in keys.iter() {
            match judge(
                s.get(key),
                t0.get(key),
                t1.get(key),
                w.has(key),
                w.complete,
                *state,
            ) {
                Verdict::Converged => {}
                Verdict::Open(st) => {
                    next.insert(key.clone(), Some(st));
                }
                Verdict::Failed => ledger
                    .failed
                    .entry(name.clone())
                    .or_default()
                    .push(key.clone()),
            }
        }
        *keys = next;
    }
    ledger.open.retain(|_, k| !k.is_empty());
    Ok(())
}

/// After the last round: suspects fail, undecided keys fail (named apart), waiting keys stay
/// tolerated.
fn conclude(ledger: &mut Ledger) {
    for (name, keys) in std::mem::take(&mut ledger.open) {
        let mut waiting = BTreeMap::new();
        for (key, state) in keys {
            match state {
                Some(KeyState::Waiting) => {
                    waiting.insert(key, state);
                }
                // Never judged cannot happen after a round; count it as different.
                Some(KeyState::Suspect) | None => {
                    ledger.failed.entry(name.clone()).or_default().push(key)
                }
                Some(KeyState::Undecided) => {
                    ledger.undecided.entry(name.clone()).or_default().push(key)
                }
            }
        }
        if !waiting.is_empty() {
            ledger.open.insert(name, waiting);
        }
    }
}

fn named(keys: &[String]) -> String {
    let mut shown: Vec<&str> = keys.iter().take(NAMED_KEYS).map(String::as_str).collect();
    if keys.len() > NAMED_KEYS {
        shown.push("…");
    }
    shown.join(", ")
}

/// Audits the result, stores the `verify` fact; a failure becomes `VerifyMismatch`.
async fn record(deps: &Deps, id: &str, out: &Output, ledger: &Ledger) -> StepResult<()> {
    let capped = |m: &BTreeMap<String, Vec<String>>| -> BTreeMap<String, Vec<String>> {
        m.iter()
            .map(|(t, k)| (t.clone(), k.iter().take(100).cloned().collect()))
            .collect()
    };
    let mut detail = serde_json::to_value(out).map_err(|e| StepError::Input(e.to_string()))?;
    detail["differing_keys"] = serde_json::json!(capped(&ledger.failed));
    detail["undecided_keys"] = serde_json::json!(capped(&ledger.undecided));
    if ledger.failed.is_empty() && ledger.undecided.is_empty() {
        deps.audit(id, "verify", "verify", Outcome::Succeeded, detail, None)
            .await?;
        facts::put(deps.store.as_ref(), id, facts::VERIFY, out).await?;
        return Ok(());
    }
    deps.audit(id, "verify", "verify", Outcome::Failed, detail, None)
        .await?;
    let mut parts: Vec<String> = ledger
        .failed
        .iter()
        .map(|(t, k)| {
            format!(
                "{t}: {} key(s) differ with no change waiting: {}",
                k.len(),
                named(k)
            )
        })
        .collect();
    parts.extend(ledger.undecided.iter().map(|(t, k)| {
        format!(
            "{t}: {} key(s) differ and the capture's backlog (over {PEEK_LIMIT} changes) was too long to tell whether they are in flight: {}",
            k.len(),
            named(k)
        )
    }));
    Err(StepError::VerifyMismatch {
        tables: parts.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn a_key_converges_when_either_target_read_matches() {
        let (a, b) = (h("a"), h("b"));
        assert_eq!(
            judge(a.as_ref(), b.as_ref(), a.as_ref(), false, true, None),
            Verdict::Converged
        );
        assert_eq!(
            judge(None, None, b.as_ref(), false, true, None),
            Verdict::Converged,
            "missing on both sides at the first read"
        );
    }

    #[test]
    fn a_key_fails_only_when_suspect_in_two_rounds_running() {
        let (a, b) = (h("a"), h("b"));
        let first = judge(a.as_ref(), b.as_ref(), b.as_ref(), false, true, None);
        assert_eq!(first, Verdict::Open(KeyState::Suspect));
        assert_eq!(
            judge(
                a.as_ref(),
                b.as_ref(),
                b.as_ref(),
                false,
                true,
                Some(KeyState::Suspect)
            ),
            Verdict::Failed
        );
        assert_eq!(
            judge(
                a.as_ref(),
                b.as_ref(),
                b.as_ref(),
                false,
                true,
                Some(KeyState::Waiting)
            ),
            Verdict::Open(KeyState::Suspect),
            "waiting in between resets the count"
        );
        assert_eq!(
            judge(a.as_ref(), None, None, true, true, Some(KeyState::Suspect)),
            Verdict::Open(KeyState::Waiting),
            "a change waiting for the key excuses it this round"
        );
        assert_eq!(
            judge(a.as_ref(), b.as_ref(), None, false, false, None),
            Verdict::Open(KeyState::Undecided)
        );
    }

    #[test]
    fn at_the_end_suspects_and_undecided_keys_fail_and_waiting_ones_are_tolerated() {
        let mut l = Ledger::default();
        l.open.insert(
            "public.a".into(),
            [
                ("[\"1\"]".to_string(), Some(KeyState::Waiting)),
                ("[\"2\"]".to_string(), Some(KeyState::Suspect)),
                ("[\"3\"]".to_string(), Some(KeyState::Undecided)),
            ]
            .into_iter()
            .collect(),
        );
        conclude(&mut l);
        assert_eq!(l.open["public.a"].len(), 1);
        assert_eq!(l.failed["public.a"], vec!["[\"2\"]".to_string()]);
        assert_eq!(l.undecided["public.a"], vec!["[\"3\"]".to_string()]);
    }
}
