//! The SAM template agrees with the code: every function crate has a template resource that
//! builds its binary and vice versa, every `${...}` of the state machine has a substitution,
//! and no secret value is written into the template.

use std::{collections::BTreeSet, path::PathBuf};

fn root() -> PathBuf {
    ferry_tests::repo_root()
}

fn template() -> String {
    std::fs::read_to_string(root().join("infra/template.yaml")).expect("read the template")
}

#[test]
fn every_function_crate_has_a_template_resource_and_back() {
    let crates: BTreeSet<String> = std::fs::read_dir(root().join("functions"))
        .expect("functions/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| format!("ferry-{}", e.file_name().to_string_lossy()))
        .collect();
    let binaries: BTreeSet<String> = template()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Binary: "))
        .map(|b| b.trim().to_string())
        .collect();
    assert!(!crates.is_empty());
    assert_eq!(
        crates, binaries,
        "functions/ and the template's Binary entries differ"
    );
    assert_eq!(
        template().matches("BuildMethod: rust-cargolambda").count(),
        crates.len(),
        "every function builds with cargo-lambda"
    );
}

#[test]
fn every_state_machine_substitution_is_defined() {
    let asl = std::fs::read_to_string(root().join("statemachines/migration.asl.json"))
        .expect("read the ASL");
    let used: BTreeSet<String> = asl
        .split("${")
        .skip(1)
        .map(|p| p.split('}').next().expect("brace").to_string())
        .collect();
    let tpl = template();
    let block = tpl
        .split("DefinitionSubstitutions:")
        .nth(1)
        .expect("the state machine has DefinitionSubstitutions");
    let defined: BTreeSet<String> = block
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("        "))
        .filter(|l| !l.starts_with("         ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':').to_string())
        .collect();
    assert_eq!(used, defined, "ASL ${{...}} vs DefinitionSubstitutions");
    assert!(tpl.contains("DefinitionUri: ../statemachines/migration.asl.json"));
}

#[test]
fn the_template_holds_no_secret_and_scopes_what_aws_allows() {
    let tpl = template();
    for word in ["password", "Password", "SecretString", "NoEcho: false"] {
        assert!(!tpl.contains(word), "the template mentions {word}");
    }
    // Callbacks only for the two functions that resume executions.
    let senders = tpl.matches("states:SendTaskSuccess").count();
    assert_eq!(
        senders, 2,
        "SendTask* is granted to the callback functions only"
    );
    // Route 53 only on the hosted zone given as a parameter.
    assert!(tpl.contains("hostedzone/${HostedZoneId}"));
    assert!(tpl.contains("rule/ferry-canary-*"));
}

/// CloudWatch alarms may not publish to a topic under the AWS-managed `alias/aws/sns` key (the
/// notification is dropped): every topic an alarm notifies is under a key of the template's
/// whose policy lets cloudwatch.amazonaws.com use it, and every role that publishes to it may
/// use the key too.
#[test]
fn alarms_notify_a_topic_whose_key_cloudwatch_may_use() {
    let tpl = template();
    assert!(
        !tpl.contains("alias/aws/sns"),
        "no topic under the AWS-managed SNS key"
    );
    let key = tpl
        .split("  ApprovalTopicKey:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  ApprovalTopic:\n").next())
        .expect("the approval topic's key");
    assert!(key.contains("Service: cloudwatch.amazonaws.com"), "{key}");
    assert!(key.contains("kms:GenerateDataKey*"), "{key}");
    assert!(
        tpl.contains(
            "KmsMasterKeyId:\n        Ref: ApprovalTopicKey\n      DisplayName: Ferry approvals"
        ),
        "the topic is under ApprovalTopicKey"
    );
    let publishers = tpl.matches("- sns:Publish").count();
    let key_users = tpl.matches("Fn::GetAtt: ApprovalTopicKey.Arn").count();
    assert_eq!(
        publishers, key_users,
        "every publisher may use the topic's key"
    );
}

/// The worker's Dockerfile builds the worker with the workspace's Rust, carries the PostgreSQL
/// client tools of a recent major where the worker looks for them, and does not run as root.
/// (No container engine here: the image itself is built by `make deploy`'s operator.)
#[test]
fn the_worker_dockerfile_carries_a_recent_pg_dump_where_the_worker_looks() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let arg = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}= missing"))
            .trim()
            .to_string()
    };
    let pg: u32 = arg("PG_MAJOR").parse().expect("PG_MAJOR is a number");
    // Heroku Postgres runs up to 17: pg_dump must be at least as new as the source.
    assert!(pg >= 17, "pg_dump {pg} is older than Heroku's newest major");
    assert!(text.contains("postgresql-client-${PG_MAJOR}"));
    assert!(text.contains("ENV FERRY_PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin"));
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let rust = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"')
        .to_string();
    assert_eq!(
        arg("RUST_VERSION"),
        rust,
        "the image builds with the workspace's Rust"
    );
    assert!(
        text.contains("-p ferry-worker")
            && text.contains("ENTRYPOINT [\"/usr/local/bin/ferry-worker\"]")
    );
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        user.trim() != "root" && user.trim() != "0",
        "the worker runs as root"
    );
    // The task definition must not point the worker at other client tools.
    assert!(
        !template().contains("FERRY_PG_BIN"),
        "the template overrides FERRY_PG_BIN"
    );
}

/// Every knob the worker reads (`var_or`/`positive` with a default) is set in the worker's task
/// definition from a template parameter, so an operator can tune it at deploy time (a knob added
/// to the worker without its parameter fails here).
#[test]
fn every_worker_knob_is_a_template_parameter() {
    let worker = std::fs::read_to_string(root().join("crates/worker/src/main.rs")).expect("worker");
    let knobs: BTreeSet<String> = ["var_or(\"", "positive(\""]
        .iter()
        .flat_map(|call| {
            worker
                .split(call)
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .filter(|name| name.starts_with("FERRY_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(knobs.contains("FERRY_BATCH_SIZE"), "{knobs:?}");
    let tpl = template();
    let task = tpl
        .split("  WorkerTaskDefinition:")
        .nth(1)
        .and_then(|rest| rest.split("\n  # ").next())
        .expect("the worker's task definition");
    for knob in &knobs {
        assert!(
            task.contains(&format!(
                "- Name: {knob}\n          Value:\n            Ref: Worker"
            )),
            "{knob} is not set from a Worker* parameter in the worker's task definition"
        );
    }
}
