//! The state machine and the Rust steps agree: every error name a step can fail with is
//! retried (`Ferry.Retryable.*`) or caught by every Task, every `Ferry.*` name the ASL lists
//! exists in Rust, and every `${...}FunctionArn` substitution names a function crate.

use std::{collections::BTreeSet, path::PathBuf};

use ferry_steps::StepError;
use serde_json::Value;

fn root() -> PathBuf {
    ferry_tests::repo_root()
}

fn asl() -> Value {
    let text = std::fs::read_to_string(root().join("statemachines/migration.asl.json"))
        .expect("read the ASL");
    serde_json::from_str(&text).expect("the ASL is JSON")
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Every `"Ferry.…"` literal in the Rust sources of crates/ and functions/.
fn rust_names() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root().join("crates"), root().join("functions")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("Ferry.")
                        && !piece.ends_with('.')
                        && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
                    {
                        out.insert(piece.to_string());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn asl_retry_and_catch_lists_agree_with_the_rust_error_names() {
    let declared: BTreeSet<String> = StepError::NAMES.iter().map(|s| s.to_string()).collect();
    let mut known = declared.clone();
    known.insert("Ferry.Rejected".into());
    // Every name written anywhere in Rust is declared (a new error name cannot be forgotten).
    let undeclared: Vec<_> = rust_names().difference(&known).cloned().collect();
    assert!(
        undeclared.is_empty(),
        "names in Rust but not in StepError::NAMES: {undeclared:?}"
    );

    let retryable: BTreeSet<String> = declared
        .iter()
        .filter(|n| n.starts_with("Ferry.Retryable."))
        .cloned()
        .collect();
    let others: BTreeSet<String> = known.difference(&retryable).cloned().collect();
    let asl = asl();
    let states = asl["States"].as_object().expect("States");
    let mut tasks = 0;
    for (name, state) in states {
        if state["Type"] != "Task" {
            continue;
        }
        tasks += 1;
        let retry = names(&state["Retry"]);
        let ferry_retry: BTreeSet<String> = retry
            .iter()
            .filter(|n| n.starts_with("Ferry."))
            .cloned()
            .collect();
        assert_eq!(
            ferry_retry, retryable,
            "{name}: Retry must list exactly the retryable names"
        );
        let catch = names(&state["Catch"]);
        let missing: Vec<_> = others.difference(&catch).collect();
        assert!(missing.is_empty(), "{name}: Catch misses {missing:?}");
        assert!(
            catch.contains("States.ALL"),
            "{name}: no Catch-all (States.Timeout, Lambda errors)"
        );
        for n in retry
            .iter()
            .chain(catch.iter())
            .filter(|n| n.starts_with("Ferry."))
        {
            assert!(known.contains(n), "{name}: {n} is not a Rust error name");
        }
        // (A rollback window that times out is the normal end of the window, not an error.)
        for t in state["Catch"]
            .as_array()
            .expect("Catch")
            .iter()
            .filter(|t| t["ErrorEquals"] != serde_json::json!(["States.Timeout"]))
        {
            assert_eq!(
                t["ResultPath"].as_str().map(|p| p.ends_with("error")),
                Some(true),
                "{name}: Catch keeps the input and records the error"
            );
        }
    }
    assert!(tasks >= 10, "only {tasks} tasks");
}

#[test]
fn every_function_substitution_names_a_function_crate() {
    let text = std::fs::read_to_string(root().join("statemachines/migration.asl.json"))
        .expect("read the ASL");
    let mut subs = BTreeSet::new();
    for piece in text.split("${").skip(1) {
        subs.insert(piece.split('}').next().expect("closing brace").to_string());
    }
    assert!(!subs.is_empty());
    for s in &subs {
        let binary = ferry_tests::rehearsal::function_binary(s)
            .unwrap_or_else(|| panic!("${{{s}}} is not a <Step>FunctionArn substitution"));
        let kebab = binary.trim_start_matches("ferry-");
        assert!(
            root()
                .join("functions")
                .join(kebab)
                .join("Cargo.toml")
                .exists(),
            "${{{s}}} has no functions/{kebab} crate"
        );
    }
}

/// `ferry validate`'s arithmetic (`ferry_core::spec::limits`) uses the state machine's own
/// timeout, and every wait loop's status task long-polls, so a turn costs the history one
/// status invocation rather than one poll.
#[test]
fn the_execution_limits_validate_checks_are_the_state_machines() {
    let asl = asl();
    assert_eq!(
        asl["TimeoutSeconds"].as_u64(),
        Some(ferry_core::spec::limits::EXECUTION_TIMEOUT_SECONDS)
    );
    let states = asl["States"].as_object().expect("states");
    let mut loops = 0;
    for (name, state) in states {
        if state["Type"] == "Wait" && state["SecondsPath"] == "$.preflight.timing.poll_seconds" {
            loops += 1;
            let status = &states[state["Next"].as_str().expect("next")];
            assert_eq!(
                status["Parameters"]["wait_seconds.$"], "$.preflight.timing.status_wait_seconds",
                "{name} loops back to a status task that does not long-poll"
            );
        }
    }
    assert_eq!(
        loops, 4,
        "the catch-up, Verify, cutover catch-up and exact-check loops"
    );
}

/// After the finish gate the app stays on AWS: a decommission that fails ends the execution
/// in a Fail state carrying its error, never in Rollback (by then the worker may have stopped
/// and removed the capture, so a rollback would wait for a reverse stream that no longer runs
/// and send traffic back to a Heroku nobody feeds). Before this, Decommission caught into
/// Rollback, and a rehearsal whose decommission was refused a secret looped in Rollback on
/// `ReverseBehind`.
#[test]
fn a_failed_decommission_never_rolls_back() {
    let asl = asl();
    let states = &asl["States"];
    let catches = states["Decommission"]["Catch"]
        .as_array()
        .expect("Decommission catches");
    assert!(!catches.is_empty());
    for c in catches {
        let next = c["Next"].as_str().expect("Next");
        assert_ne!(next, "Rollback", "{c}");
        let target = &states[next];
        assert_eq!(target["Type"], "Fail", "{next}");
        assert_eq!(
            target["ErrorPath"], "$.error.Error",
            "{next} keeps the error"
        );
        assert_eq!(
            target["CausePath"], "$.error.Cause",
            "{next} keeps the cause"
        );
    }
}
