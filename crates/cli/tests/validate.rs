//! `ferry validate` as a user runs it: exit codes and what it prints.

use std::{path::PathBuf, process::Command};

fn ferry(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    p.to_string_lossy().into_owned()
}

#[test]
fn valid_spec_exits_zero() {
    let (code, out, _) = ferry(&["validate", &example("full.json")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("valid (migration acme-prod-2026-11, app acme-prod, capture \"trigger\""),
        "{out}"
    );
}

#[test]
fn bad_spec_prints_every_problem_and_exits_three() {
    let dir = std::env::temp_dir().join(format!("ferry-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example("minimal.json")).expect("read"))
            .expect("json");
    v["traffic"]["steps"] = serde_json::json!([1, 5, 25, 10, 100]);
    v["replication"] = serde_json::json!({"paralelism": 4});
    std::fs::write(&path, v.to_string()).expect("write");
    let (code, _, err) = ferry(&["validate", path.to_str().expect("utf8")]);
    // 3: a person must act (fix the spec).
    assert_eq!(code, 3);
    assert!(err.contains("2 problems:"), "{err}");
    assert!(
        err.contains("traffic.steps[3]: weights must increase; got 10 after 25"),
        "{err}"
    );
    assert!(
        err.contains(
            "replication.paralelism: unknown field `paralelism`; did you mean `parallelism`?"
        ),
        "{err}"
    );
    let (code, out, _) = ferry(&["validate", path.to_str().expect("utf8"), "--output", "json"]);
    assert_eq!(code, 3);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(doc["valid"], false);
    let problems = doc["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "{doc}");
    assert!(
        problems.iter().any(|p| p["path"] == "traffic.steps[3]"
            && p["message"]
                .as_str()
                .is_some_and(|m| m.contains("weights must increase"))),
        "{doc}"
    );
    let (code, out, _) = ferry(&["validate", "--output=json", &example("full.json")]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["migration_id"], "acme-prod-2026-11");
}

#[test]
fn missing_file_and_bad_usage_exit_two() {
    let (code, _, err) = ferry(&["validate", "/no/such/migration.json"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("read migration spec /no/such/migration.json"),
        "{err}"
    );
    let (code, _, err) = ferry(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    assert!(err.contains("Usage:"), "{err}");
    let (code, _, err) = ferry(&["approve", "m-1", "--gate", "lunch"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("possible values: shift_traffic, cutover, finish"),
        "{err}"
    );
    let (code, _, err) = ferry(&["wait", "m-1", "--until", "done", "--timeout", "5 weeks"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ferry(&["rehearse", "--load", "99999"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--load"), "{err}");
}

/// Settings the stack's outputs give are usage errors when missing (exit 2), named.
#[test]
fn a_missing_setting_is_named_and_exits_two() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["list"])
        .env_remove("FERRY_STATE_TABLE")
        .output()
        .expect("run ferry");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("FERRY_STATE_TABLE is not set"), "{err}");
}

#[test]
fn every_command_has_help_with_examples_and_the_version_prints() {
    let (code, out, _) = ferry(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:"), "{out}");
    let commands = [
        "rehearse",
        "validate",
        "schema",
        "plan",
        "preflight",
        "start",
        "status",
        "wait",
        "list",
        "report",
        "approve",
        "reject",
        "pause",
        "resume",
        "abort",
    ];
    for c in commands {
        assert!(
            out.contains(&format!("  {c} ")),
            "{c} missing from --help:\n{out}"
        );
        for form in [vec![c, "--help"], vec!["help", c]] {
            let (code, text, err) = ferry(&form);
            assert_eq!(code, 0, "{form:?}: {err}");
            assert!(
                text.contains(&format!("Usage: ferry {c}")),
                "{form:?}:\n{text}"
            );
            assert!(text.contains("Example"), "{form:?} has no example:\n{text}");
        }
    }
    let (code, out, _) = ferry(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("ferry {}", env!("CARGO_PKG_VERSION")));
    let (code, out, _) = ferry(&["status", "--version"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_non_utf8_argument_is_refused_or_taken_as_a_path_never_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .output()
            .expect("run ferry");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let odd = std::ffi::OsStr::from_bytes(b"\xff.json");
    // A file name may hold any bytes: taken as a path (here, missing).
    let (code, err) = run(&["validate".as_ref(), odd]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("read migration spec"), "{err}");
    // A migration id may not.
    let (code, err) = run(&["status".as_ref(), odd]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid UTF-8"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let (code, out, _) = ferry(&["schema"]);
    assert_eq!(code, 0);
    let printed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(example("migration.schema.json")).expect("read"),
    )
    .expect("JSON");
    assert_eq!(printed, checked_in);
}

/// The CI example fits a hosted runner: the job's bound under 6 hours, `ferry wait`'s bound
/// under the job's, and every `ferry` command it runs exists.
#[test]
fn the_ci_example_fits_a_hosted_runner_and_calls_real_commands() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/ci/github-actions.yml"),
    )
    .expect("read the CI example");
    let job_minutes: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("timeout-minutes:"))
        .filter_map(|v| v.split('#').next()?.trim().parse().ok())
        .collect();
    assert!(!job_minutes.is_empty(), "the job is bounded");
    assert!(job_minutes.iter().all(|m| *m < 360), "{job_minutes:?}");
    let waits: Vec<u64> = text
        .split("--timeout ")
        .skip(1)
        .filter_map(|rest| {
            let word = rest.split_whitespace().next()?;
            let (n, unit) = word.split_at(word.len() - 1);
            let n: u64 = n.parse().ok()?;
            Some(match unit {
                "h" => n * 60,
                "m" => n,
                _ => 0,
            })
        })
        .collect();
    assert!(!waits.is_empty(), "ferry wait is bounded");
    assert!(
        waits.iter().all(|w| job_minutes.iter().all(|j| w < j)),
        "{waits:?} minutes of waiting within {job_minutes:?}"
    );
    for line in text.lines() {
        for part in line.split("ferry ").skip(1) {
            let Some(cmd) = part.split_whitespace().next() else {
                continue;
            };
            if !cmd.chars().all(|c| c.is_ascii_lowercase()) || cmd == "migration" {
                continue;
            }
            let (code, _, err) = ferry(&[cmd, "--help"]);
            assert_eq!(code, 0, "the CI example runs `ferry {cmd}`: {err}");
        }
    }
}

#[test]
fn explain_prints_a_rules_documentation_and_refuses_an_unknown_code() {
    let (code, out, _) = ferry(&["explain", "no_primary_key"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("no_primary_key\n\n**Blocker.**"), "{out}");
    assert!(out.contains("Fix: add a key before migrating"), "{out}");
    let (code, out, _) = ferry(&["explain"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.starts_with("replica_identity ")),
        "{out}"
    );
    let (code, _, err) = ferry(&["explain", "no_primary_keys"]);
    assert_eq!(code, 2, "a wrong argument");
    assert!(
        err.contains("no finding is called \"no_primary_keys\"") && err.contains("no_primary_key,"),
        "{err}"
    );
}
