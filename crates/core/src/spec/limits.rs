//! What a spec asks of one Step Functions execution, against what an execution may hold.
//!
//! A standard execution fails, beyond any `Catch` (so with no rollback), once its history
//! passes [`HISTORY_EVENTS_MAX`] events or it runs past the state machine's `TimeoutSeconds`
//! ([`EXECUTION_TIMEOUT_SECONDS`], 60 days in `statemachines/migration.asl.json`). The loops
//! that wait for the worker cost [`EVENTS_PER_TURN`] events a turn; each turn lasts at least
//! `timing.status_wait_seconds` (the status function long-polls; [`STATUS_WAIT_SECONDS`] by default) or `timing.poll_seconds`, whichever
//! is longer. `ferry validate` refuses a spec whose waits cannot fit, with the arithmetic.

use super::MigrationSpec;

/// Events one Step Functions execution's history may hold (AWS's quota, not raisable).
pub const HISTORY_EVENTS_MAX: u64 = 25_000;
/// The state machine's `TimeoutSeconds`: 60 days.
pub const EXECUTION_TIMEOUT_SECONDS: u64 = 60 * 86_400;
/// How long one status invocation waits for the worker by default (`timing.status_wait_seconds`).
pub const STATUS_WAIT_SECONDS: u32 = 600;
/// The longest `timing.status_wait_seconds` may be: a minute inside the function's 15.
pub const STATUS_WAIT_MAX_SECONDS: u32 = 840;
/// One turn of a wait loop: the status task (entered, scheduled, started, succeeded, exited),
/// the Choice (entered, exited) and the Wait (entered, exited).
pub const EVENTS_PER_TURN: u64 = 9;
/// Every other state once, each Task retried to its limit: a generous allowance.
pub const EVENTS_OUTSIDE_LOOPS: u64 = 1_500;

/// The worst case of one execution of the migration under `spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// History events if every wait runs to its limit.
    pub events: u64,
    /// Seconds if every wait runs to its limit.
    pub seconds: u64,
    /// Seconds one wait-loop turn lasts at least.
    pub turn_seconds: u64,
}

/// Seconds one turn of a wait loop lasts at least.
pub fn turn_seconds(spec: &MigrationSpec) -> u64 {
    u64::from(
        spec.timing
            .status_wait_seconds()
            .max(spec.timing.poll_seconds),
    )
}

/// The worst case: both catch-up loops (before the traffic gate, and before the freeze), the
/// Verify loop (bounded by the catch-up's hours) and the exact check's loop run to their limits, every gate waits its timeout, the canary runs
/// every step and the rollback window runs out.
pub fn budget(spec: &MigrationSpec) -> Budget {
    let t = &spec.timing;
    let turn = turn_seconds(spec);
    let catch_up = u64::from(t.catch_up_hours) * 3600;
    let exact = u64::from(spec.cutover.exact_check_seconds) + 300 + 30;
    // Both catch-ups and Verify (bounded by the same hours), and the exact check.
    let turns = 3 * catch_up.div_ceil(turn) + exact.div_ceil(turn) + 4;
    let gate = u64::from(t.approval_timeout_hours) * 3600;
    let interval = t.canary_interval_seconds.map_or(
        u64::from(spec.traffic.step_interval_minutes) * 60,
        u64::from,
    );
    let canary = (spec.traffic.steps.len() as u64 + 1) * interval * 2 + 300 + 86_400;
    Budget {
        events: EVENTS_OUTSIDE_LOOPS + turns * EVENTS_PER_TURN,
        seconds: 3 * catch_up + exact + 2 * gate + canary + spec.rollback_window_seconds(),
        turn_seconds: turn,
    }
}

/// The problems of a spec whose worst case does not fit one execution, each with the fix.
pub fn problems(spec: &MigrationSpec) -> Vec<(String, String)> {
    let b = budget(spec);
    let mut out = Vec::new();
    if b.events > HISTORY_EVENTS_MAX {
        // The catch-up hours that would fit at this turn length, after the exact check's turns.
        let exact = (u64::from(spec.cutover.exact_check_seconds) + 330).div_ceil(b.turn_seconds);
        let spare = ((HISTORY_EVENTS_MAX - EVENTS_OUTSIDE_LOOPS) / EVENTS_PER_TURN)
            .saturating_sub(exact + 4);
        let fit_hours = (spare / 3 * b.turn_seconds) / 3600;
        out.push((
            "timing.catch_up_hours".to_string(),
            format!(
                "{} h of catch-up, waited for three times (before the traffic gate, for Verify and before the freeze) at one check every {} s, can take {} history events; a Step Functions execution holds {HISTORY_EVENTS_MAX} and fails past them with no rollback. Fix: {}",
                spec.timing.catch_up_hours,
                b.turn_seconds,
                b.events,
                if fit_hours >= 1 {
                    format!("lower timing.catch_up_hours to {fit_hours} or less, or raise timing.status_wait_seconds (or timing.poll_seconds)")
                } else {
                    "raise timing.status_wait_seconds (or timing.poll_seconds): at this turn length not even one hour fits".to_string()
                }
            ),
        ));
    }
    if b.seconds > EXECUTION_TIMEOUT_SECONDS {
        out.push((
            "timing".to_string(),
            format!(
                "the waits add up to {} h (catch-up twice and Verify, two approval gates, the canary, the exact check, the rollback window); the execution times out after {} h with no rollback. Fix: lower timing.catch_up_hours, timing.approval_timeout_hours or rollback_window_hours",
                b.seconds / 3600,
                EXECUTION_TIMEOUT_SECONDS / 3600
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(catch_up_hours: u32, poll_seconds: u32) -> MigrationSpec {
        let mut v = crate::spec::tests::minimal();
        v["timing"] =
            serde_json::json!({"catch_up_hours": catch_up_hours, "poll_seconds": poll_seconds});
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn the_defaults_fit_with_room() {
        let s = spec(72, 30);
        let b = budget(&s);
        assert_eq!(b.turn_seconds, 600);
        // 3 × 432 turns of catch-up and Verify (72 h / 600 s) + the exact check's + 4, 9
        // events each.
        let exact = (u64::from(s.cutover.exact_check_seconds) + 330).div_ceil(600);
        assert_eq!(b.events, 1_500 + (3 * 432 + exact + 4) * 9);
        assert!(b.events < HISTORY_EVENTS_MAX * 6 / 10, "{b:?}");
        assert!(problems(&spec(72, 30)).is_empty());
    }

    #[test]
    fn a_poll_per_turn_would_not_have_fit_the_default_catch_up() {
        // The loop as it was (one check per turn, every 30 s): 72 h is 8,640 turns per loop.
        let old_events = 2 * (72 * 3600 / 30) * EVENTS_PER_TURN;
        assert!(old_events > HISTORY_EVENTS_MAX, "{old_events}");
    }

    #[test]
    fn a_catch_up_too_long_for_the_history_is_refused_with_the_arithmetic() {
        let p = problems(&spec(720, 30));
        let (path, msg) = p
            .iter()
            .find(|(path, _)| path == "timing.catch_up_hours")
            .expect("history problem");
        assert_eq!(path, "timing.catch_up_hours");
        assert!(msg.contains("25000"), "{msg}");
        let fit: u32 = msg
            .split("lower timing.catch_up_hours to ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("suggested hours");
        assert!(
            problems(&spec(fit, 30))
                .iter()
                .all(|(path, _)| path != "timing.catch_up_hours")
        );
        assert!(!problems(&spec(fit + 30, 30)).is_empty());
        // A longer poll makes each turn longer, so fewer turns fit the same hours.
        assert!(
            problems(&spec(720, 3600))
                .iter()
                .all(|(path, _)| path != "timing.catch_up_hours")
        );
    }

    #[test]
    fn waits_longer_than_the_execution_timeout_are_refused() {
        let mut s = spec(700, 3600);
        s.timing.approval_timeout_hours = 720;
        let p = problems(&s);
        assert!(
            p.iter()
                .any(|(path, m)| path == "timing" && m.contains("1440 h")),
            "{p:?}"
        );
    }
}
