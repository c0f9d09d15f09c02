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

fn ferry(args: &[&str], machine: &str) -> (bool, String) {
    let out = Command::new(workspace_bin("ferry"))
        .args(args)
        .env("FERRY_STATE_MACHINE_ARN", machine)
        .env("FERRY_STATE_TABLE", bed_var("FERRY_BED_STATE_TABLE"))
        .output()
        .expect("run ferry");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
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

    let approver = Approver::new(&r);
    approver
        .wait_pending(&r.id, &exec, Gate::ShiftTraffic, Duration::from_secs(240))
        .await;
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
    let (ok, out) = ferry(&["approve", &r.id, "--gate", "lunch"], &r.machine_arn);
    assert!(!ok && out.contains("is not a gate"), "{out}");

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
    assert_eq!(
        r.weights().await.map(|w| w.aws),
        Some(0),
        "all traffic back on Heroku"
    );
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
