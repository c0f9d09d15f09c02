//! The operator's command line against the emulator running the real state machine:
//! `ferry start`, `ferry status`, `ferry approve` / `ferry reject` as an IAM identity.

use std::{process::Command, time::Duration};

use aws_sdk_sfn::types::ExecutionStatus;
use ferry_core::{MigrationStore, state::Gate};
use ferry_tests::{
    bed_var,
    rehearsal::{Approver, EcsRunner, Options, Rehearsal, Scheduler},
    unique, workspace_bin,
};

/// Whether `ferry args` succeeded, and all it printed.
fn ferry(args: &[&str], machine: &str) -> (bool, String) {
    let (code, out, err) = run(args, machine);
    (code == Some(0), format!("{out}{err}"))
}

/// Exit code, stdout and stderr of `ferry args`.
fn run(args: &[&str], machine: &str) -> (Option<i32>, String, String) {
    let out = Command::new(workspace_bin("ferry"))
        .args(args)
        .env("FERRY_STATE_MACHINE_ARN", machine)
        .env("FERRY_STATE_TABLE", bed_var("FERRY_BED_STATE_TABLE"))
        .output()
        .expect("run ferry");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `args --output json`, parsed back.
fn json(args: &[&str], machine: &str) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let (code, out, err) = run(&all, machine);
    assert_eq!(code, Some(0), "{all:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{all:?} printed no JSON ({e}):\n{out}"))
}

/// Waits until the worker has carried out command `seq` (it polls its commands).
async fn acked(r: &Rehearsal, seq_at_least: u64) -> ferry_core::state::WorkerProgress {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = r.store.progress(&r.id).await.expect("progress")
            && p.acked_command >= seq_at_least
        {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_starts_watches_and_decides_from_the_command_line() {
    let mut r = Rehearsal::new(&Options::default()).await;
    // The emulator's caller is this IAM user.
    r.spec["approvals"]["approvers"] =
        serde_json::json!(["arn:aws:iam::123456789012:user/moto", "ops@example.com"]);
    let runner = EcsRunner::start(&r.id);
    let scheduler = Scheduler::start(&r.id);
    let dir = std::env::temp_dir().join(unique("ferry-cli-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("migration.json");
    std::fs::write(&file, r.spec.to_string()).expect("write spec");
    let path = file.to_string_lossy().to_string();

    let (ok, out) = ferry(&["start", &path], &r.machine_arn);
    assert!(ok, "{out}");
    let exec = out.trim().to_string();
    assert!(exec.contains(&r.id), "{out}");

    let pre = json(&["preflight", &path], &r.machine_arn);
    assert_eq!(pre["report"]["capture"], "trigger", "{pre:#}");
    assert!(pre["report"]["findings"].as_array().is_some(), "{pre:#}");
    // The CI path: wait for the gate, bounded.
    let (code, out, err) = run(
        &[
            "wait",
            &r.id,
            "--until=awaiting_traffic_approval",
            "--timeout",
            "4m",
            "--interval",
            "1s",
        ],
        &r.machine_arn,
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "awaiting_traffic_approval");
    // Not there within 2 s: exit 4, the phase it is in named.
    let (code, _, err) = run(
        &[
            "wait",
            &r.id,
            "--until",
            "completed",
            "--timeout",
            "2s",
            "--interval",
            "1s",
        ],
        &r.machine_arn,
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("did not reach completed within") && err.contains("awaiting_traffic_approval"),
        "{err}"
    );
    let approver = Approver::new(&r);
    approver
        .wait_pending(&r.id, &exec, Gate::ShiftTraffic, Duration::from_secs(240))
        .await;
    let view = json(&["status", &r.id], &r.machine_arn);
    assert_eq!(view["phase"], "awaiting_traffic_approval", "{view:#}");
    assert_eq!(view["execution"]["status"], "RUNNING", "{view:#}");
    assert!(view["execution"]["current_state"].is_string(), "{view:#}");
    assert_eq!(view["worker"]["phase"], "streaming", "{view:#}");
    assert_eq!(view["worker"]["copy_percent"], 100.0, "{view:#}");
    assert_eq!(view["worker"]["paused"], false, "{view:#}");
    assert!(view["worker"]["bytes_total"].as_u64() > Some(0), "{view:#}");
    assert_eq!(view["gates"][0]["gate"], "shift_traffic", "{view:#}");
    assert_eq!(view["gates"][0]["status"], "pending", "{view:#}");
    let listed = json(&["list"], &r.machine_arn);
    let mine = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|m| m["migration_id"] == r.id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{} not listed: {listed:#}", r.id));
    assert_eq!(mine["phase"], "awaiting_traffic_approval");
    // Pause and resume the worker's apply, as an approver, audited.
    let (code, out, err) = run(&["pause", &r.id], &r.machine_arn);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("apply paused"), "{out}");
    assert!(acked(&r, 1).await.paused);
    let (_, text, _) = run(&["status", &r.id], &r.machine_arn);
    assert!(text.contains("apply PAUSED"), "{text}");
    let (code, out, err) = run(&["resume", &r.id], &r.machine_arn);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("apply running"), "{out}");
    let audit = r.store.audit_log(&r.id).await.expect("audit");
    for action in ["pause_apply", "resume_apply"] {
        assert!(
            audit
                .iter()
                .any(|a| a.action == action && a.actor == "arn:aws:sts::123456789012:user/moto"),
            "{action} audited with the caller"
        );
    }
    let (ok, status) = ferry(&["status", &r.id], &r.machine_arn);
    assert!(ok, "{status}");
    assert!(
        status.contains("phase: awaiting_traffic_approval"),
        "{status}"
    );
    assert!(status.contains("gate shift_traffic: pending"), "{status}");
    assert!(status.contains("worker: streaming"), "{status}");

    let (ok, out) = ferry(
        &["approve", &r.id, "--gate", "shift_traffic"],
        &r.machine_arn,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("approved by arn:aws:sts::123456789012:user/moto"),
        "{out}"
    );
    let (ok, out) = ferry(
        &["approve", &r.id, "--gate", "shift_traffic"],
        &r.machine_arn,
    );
    assert!(!ok && out.contains("already decided"), "{out}");
    let (code, _, err) = run(&["approve", &r.id, "--gate", "lunch"], &r.machine_arn);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value 'lunch'"), "{err}");

    approver
        .wait_pending(&r.id, &exec, Gate::Cutover, Duration::from_secs(240))
        .await;
    let (ok, out) = ferry(&["reject", &r.id, "--gate", "cutover"], &r.machine_arn);
    assert!(ok, "{out}");
    let (status, error, _) = r.finished(&exec, Duration::from_secs(240)).await;
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.as_deref(), Some("Ferry.Rejected"));
    let (_, after) = ferry(&["status", &r.id], &r.machine_arn);
    assert!(after.contains("phase: rolled_back"), "{after}");
    assert!(after.contains("failure: Ferry.Rejected"), "{after}");
    // Rolled back: it will never complete (exit 1), and `ended` is not a success either.
    for until in ["completed", "ended"] {
        let (code, _, err) = run(&["wait", &r.id, "--until", until], &r.machine_arn);
        assert_eq!(code, Some(1), "{until}: {err}");
        assert!(err.contains("is rolled_back and will not reach"), "{err}");
    }
    let (code, _, _) = run(&["wait", &r.id, "--until", "rolled_back"], &r.machine_arn);
    assert_eq!(code, Some(0));
    let watched = run(
        &["status", &r.id, "--watch", "--output", "json"],
        &r.machine_arn,
    );
    assert_eq!(
        watched.0,
        Some(1),
        "--watch ends with the migration's outcome"
    );
    let doc: serde_json::Value = serde_json::from_str(watched.1.lines().next().unwrap_or(""))
        .expect("one JSON document per line");
    assert_eq!(doc["phase"], "rolled_back");
    let report = json(&["report", &r.id], &r.machine_arn);
    assert!(
        report["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["action"] == "reject")),
        "{report:#}"
    );
    let audit = r.store.audit_log(&r.id).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "reject" && a.actor == "arn:aws:sts::123456789012:user/moto"),
        "the CLI decision is audited with the caller's identity"
    );
    let (ok, report) = ferry(&["report", &r.id], &r.machine_arn);
    assert!(ok, "{report}");
    assert!(report.contains("phase: **rolled_back**"), "{report}");
    for action in [
        "heroku_inventory",
        "copy_config_vars",
        "start_worker",
        "approve",
        "reject",
        "rollback",
    ] {
        assert!(
            report.contains(&format!("| {action} |")),
            "{action} missing:\n{report}"
        );
    }
    scheduler.shutdown();
    runner.shutdown();
}

/// `ferry abort` while the canary moves traffic: the waiting task fails with `Ferry.Aborted`,
/// the rollback sends all traffic back to Heroku, the abort is audited with the caller.
#[tokio::test]
async fn an_operator_aborts_during_the_canary_and_the_migration_rolls_back() {
    let mut r = Rehearsal::new(&Options {
        steps: vec![5, 20, 50, 100],
        canary_interval_seconds: 3,
        ..Options::default()
    })
    .await;
    r.spec["approvals"]["approvers"] = serde_json::json!(["arn:aws:iam::123456789012:user/moto"]);
    let runner = EcsRunner::start(&r.id);
    let scheduler = Scheduler::start(&r.id);
    let exec = r.start_with_cli(&r.id);
    let approver = Approver::new(&r);
    approver
        .wait_pending(&r.id, &exec, Gate::ShiftTraffic, Duration::from_secs(240))
        .await;
    let (ok, out) = ferry(
        &["approve", &r.id, "--gate", "shift_traffic"],
        &r.machine_arn,
    );
    assert!(ok, "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while r.weights().await.is_none_or(|w| w.aws == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the canary never started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out) = ferry(&["abort", &r.id], &r.machine_arn);
    assert!(ok, "{out}");
    assert!(out.contains("interrupted: canary"), "{out}");
    let (status, error, _) = r.finished(&exec, Duration::from_secs(240)).await;
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.as_deref(), Some("Ferry.Aborted"));
    r.app_record_restored().await;
    let audit = r.store.audit_log(&r.id).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "abort_requested"
                && a.actor == "arn:aws:sts::123456789012:user/moto")
    );
    assert!(audit.iter().any(|a| a.action == "rollback"));
    // A second abort of an ended migration is refused.
    let (ok, out) = ferry(&["abort", &r.id], &r.machine_arn);
    assert!(!ok && out.contains("has ended"), "{out}");
    scheduler.shutdown();
    runner.shutdown();
}

/// `ferry` with only a profile to log in with: the environment's keys removed, the profile
/// read from a config file of the test's.
fn with_profile(
    table: &str,
    config: &std::path::Path,
    profile: &str,
    args: &[&str],
) -> (Option<i32>, String) {
    let out = Command::new(workspace_bin("ferry"))
        .args(args)
        .env("FERRY_STATE_TABLE", table)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", config.with_extension("none"))
        .env("AWS_PROFILE", profile)
        .output()
        .expect("run ferry");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Operators log in with a credential_process (a vault, a password manager) or IAM Identity
/// Center: the CLI is built with both providers.
#[tokio::test]
async fn a_credential_process_profile_works_and_an_sso_profile_is_understood() {
    let store = ferry_tests::fresh_store().await;
    let table = store.table();
    let dir = std::env::temp_dir().join(unique("ferry-cred-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let marker = dir.join("called");
    let script = dir.join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\nprintf '%s' '{{\"Version\": 1, \"AccessKeyId\": \"{}\", \"SecretAccessKey\": \"{}\"}}'\n",
            marker.display(),
            // The emulator checks keys: the process hands out the bed's.
            bed_var("AWS_ACCESS_KEY_ID"),
            bed_var("AWS_SECRET_ACCESS_KEY"),
        ),
    )
    .expect("script");
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&script)
        .status()
        .expect("chmod");
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "[profile vault]\ncredential_process = {}\nregion = us-east-1\n\n[profile sso]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = FerryOperator\nregion = us-east-1\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\nsso_registration_scopes = sso:account:access\n",
            script.display()
        ),
    )
    .expect("config");
    let (code, out) = with_profile(table, &config, "vault", &["list", "--output", "json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(marker.exists(), "the credential_process ran");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("a JSON list"),
        serde_json::json!([])
    );
    // No cached SSO token here: the SSO provider answers (asking for a login), where a build
    // without it would say the profile needs a feature it lacks.
    let (code, out) = with_profile(table, &config, "sso", &["list"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("cargo feature"), "{out}");
    assert!(out.to_lowercase().contains("sso"), "{out}");
}
