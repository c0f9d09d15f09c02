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
fn bad_spec_prints_every_problem_and_exits_one() {
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
    assert_eq!(code, 1);
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
    assert!(err.contains("usage:"), "{err}");
}

#[test]
fn a_non_utf8_argument_is_refused_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("validate")
        .arg(std::ffi::OsStr::from_bytes(b"\xff.json"))
        .output()
        .expect("run ferry");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("argument 2") && err.contains("not valid UTF-8"),
        "{err}"
    );
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
