//! Judging the keys a bucket pass found different, in rounds, while the app writes.
//!
//! Each round first waits (bounded) until the worker has applied everything committed before
//! the previous round, then reads, per key, what waits in the capture (the trigger log by key,
//! or a temporary copy of the logical slot, decoded for keys only: the worker's slot is never
//! touched), the target's row, the source's row, the target's row again, and what waits once
//! more. A key whose source row equals either target read has converged; a key with a change
//! waiting is tolerated for this round; any other key is suspect, and a key suspect in two
//! rounds running fails, named with its table (keys only, never row values). A key that still
//! has a change waiting after the last round (a row the app rewrites all the time) is
//! tolerated and counted.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use ferry_core::spec::CaptureMode;
use ferry_pg::catalog::Table;
use tokio_postgres::Client;

use crate::{
    ReplError, ReplResult,
    capture::{Waiting, logical, trigger},
    verify,
};

/// Rounds of judging (one more for keys suspect once in the last).
pub const ROUNDS: u32 = 5;
/// Changes decoded at most per look at a logical slot's backlog.
pub const PEEK_LIMIT: i64 = 200_000;

/// Where changes wait on the source.
#[derive(Debug)]
pub enum Capture {
    /// The trigger log.
    Trigger,
    /// A logical slot.
    Logical {
        /// The worker's slot (only copied, never advanced).
        slot: String,
    },
    /// No capture installed (nothing is in flight: every difference is real).
    None,
}

impl Capture {
    /// The capture installed on `source` (database `dbname`), and its mode.
    pub async fn detect(source: &Client, dbname: &str) -> ReplResult<(Option<CaptureMode>, Self)> {
        let slot = logical::slot_name(dbname);
        Ok(if trigger::is_installed(source).await? {
            (Some(CaptureMode::Trigger), Capture::Trigger)
        } else if logical::slot_exists(source, &slot).await? {
            (Some(CaptureMode::Logical), Capture::Logical { slot })
        } else {
            (None, Capture::None)
        })
    }

    /// Where the capture stands now.
    pub async fn mark(&self, source: &Client) -> ReplResult<String> {
        Ok(match self {
            Capture::Trigger => trigger::mark(source).await?.to_string(),
            Capture::Logical { .. } => logical::mark(source).await?,
            Capture::None => String::new(),
        })
    }

    async fn applied_past(&self, source: &Client, mark: &str) -> ReplResult<bool> {
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
    ) -> ReplResult<HashMap<String, Waiting>> {
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
                logical::waiting(source, slot, &list, PEEK_LIMIT).await
            }
            Capture::None => Ok(HashMap::new()),
        }
    }

    /// Waits until the worker has applied everything committed before `mark`, at most
    /// `settle`; whether it had.
    pub async fn wait_applied(
        &self,
        source: &Client,
        mark: &str,
        settle: Duration,
    ) -> ReplResult<bool> {
        let deadline = Instant::now() + settle;
        loop {
            if self.applied_past(source, mark).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Where a key stands after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// A change for it waits in the capture.
    Waiting,
    /// Different with nothing waiting (a second time running fails the key).
    Suspect,
    /// Different, and the capture's backlog was too long to tell whether a change waits.
    Undecided,
}

/// The verdict on one key for one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The source's row equals a target read.
    Converged,
    /// Still open, in this state.
    Open(KeyState),
    /// Suspect twice running.
    Failed,
}

/// Judges a key from the source's row hash `s`, the target's before (`t0`) and after (`t1`)
/// it, and what waited around the reads.
pub fn judge(
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
#[derive(Debug, Default)]
pub struct Ledger {
    /// The state each key was left in by the last round (`None`: not judged yet).
    pub open: BTreeMap<String, BTreeMap<String, Option<KeyState>>>,
    /// Keys that differ with nothing waiting.
    pub failed: BTreeMap<String, Vec<String>>,
    /// Failed because the capture's backlog could not be read whole.
    pub undecided: BTreeMap<String, Vec<String>>,
}

impl Ledger {
    fn suspects_left(&self) -> bool {
        self.open
            .values()
            .flat_map(|k| k.values())
            .any(|s| *s == Some(KeyState::Suspect))
    }
}

/// The tables of `by_name` by display name.
pub fn table_of<'a>(by_name: &HashMap<String, &'a Table>, name: &str) -> ReplResult<&'a Table> {
    by_name.get(name).copied().ok_or_else(|| {
        ReplError::State(format!(
            "table {name} vanished from the source catalog during Verify"
        ))
    })
}

/// A table's differing buckets, few enough to narrow to keys: compared once more after the
/// worker had time when there are too many (a target far behind). `Err(message)` when still
/// too many: the table fails as a whole.
pub async fn narrowable(
    source: &Client,
    target: &Client,
    t: &Table,
    check: verify::TableCheck,
    complete: bool,
    (capture, mark, settle): (&Capture, &str, Duration),
) -> ReplResult<Result<verify::TableCheck, String>> {
    if complete && check.mismatches.len() <= verify::MAX_NARROWED_BUCKETS {
        return Ok(Ok(check));
    }
    capture.wait_applied(source, mark, settle).await?;
    let again = verify::verify_table(source, target, t, verify::ROWS_PER_BUCKET).await?;
    if again.mismatches.len() > verify::MAX_NARROWED_BUCKETS {
        return Ok(Err(format!(
            "{} ({} of its row buckets differ, too many to be rows in flight; source {} rows, target {} rows)",
            again.table,
            again.mismatches.len(),
            again.source_rows,
            again.target_rows
        )));
    }
    Ok(Ok(again))
}

/// Judges the open keys of `ledger` in rounds (see the module's doc); returns the rounds run.
pub async fn rounds(
    source: &Client,
    target: &Client,
    capture: &Capture,
    by_name: &HashMap<String, &Table>,
    (mut mark, settle): (String, Duration),
    ledger: &mut Ledger,
) -> ReplResult<u32> {
    let mut rounds = 1;
    for round in 1..=ROUNDS + 1 {
        if ledger.open.is_empty() || (round > ROUNDS && !ledger.suspects_left()) {
            break;
        }
        rounds = round + 1;
        capture.wait_applied(source, &mark, settle).await?;
        mark = capture.mark(source).await?;
        judge_round(source, target, capture, by_name, ledger).await?;
    }
    conclude(ledger);
    Ok(rounds)
}

/// One round: what waits, target, source, target, what waits; then each open key's verdict.
async fn judge_round(
    source: &Client,
    target: &Client,
    capture: &Capture,
    by_name: &HashMap<String, &Table>,
    ledger: &mut Ledger,
) -> ReplResult<()> {
    let open: Vec<(&Table, Vec<String>)> = ledger
        .open
        .iter()
        .map(|(name, keys)| Ok((table_of(by_name, name)?, keys.keys().cloned().collect())))
        .collect::<ReplResult<_>>()?;
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
            let v = judge(
                s.get(key),
                t0.get(key),
                t1.get(key),
                w.has(key),
                w.complete,
                *state,
            );
            match v {
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
pub fn conclude(ledger: &mut Ledger) {
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
        let suspect = Some(KeyState::Suspect);
        assert_eq!(
            judge(a.as_ref(), b.as_ref(), b.as_ref(), false, true, suspect),
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
            judge(a.as_ref(), None, None, true, true, suspect),
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
