//! The template's roles, enforced: the bed makes every role of `infra/template.yaml` in the
//! emulator, runs each function, the worker and the endpoint with its role's session, and the
//! emulator authorises every call those sessions sign against the role's policies
//! (`tests/bed/iam_enforce.py`). These tests show the enforcement is on and strict, with a
//! second session of each role (`probe`), so their denials are not counted as Ferry's.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_ssm::config::Credentials;
use ferry_tests::{bed_var, rehearsal::invoke, unique};

/// The `probe` session of `binary`'s role: (key id, secret, session token).
fn probe_session(binary: &str) -> (String, String, String) {
    let path = std::path::PathBuf::from(bed_var("FERRY_BED_ROLES"))
        .join("probe")
        .join(format!("{binary}.env"));
    let text = std::fs::read_to_string(&path).expect("the probe session's credentials");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {}", path.display()))
            .to_string()
    };
    (
        get("AWS_ACCESS_KEY_ID"),
        get("AWS_SECRET_ACCESS_KEY"),
        get("AWS_SESSION_TOKEN"),
    )
}

/// An SDK configuration signing with the `probe` session of `binary`'s role.
async fn as_role(binary: &str) -> aws_config::SdkConfig {
    let (key, secret, token) = probe_session(binary);
    signing_with(Credentials::new(key, secret, Some(token), None, "bed-role")).await
}

async fn signing_with(creds: Credentials) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(creds)
        .load()
        .await
}

/// The error's whole text (the SDK's Debug keeps the raw answer, whose message names the
/// action and the resource).
fn denied<T, E: std::fmt::Debug>(result: Result<T, E>, action: &str) -> String {
    let text = match result {
        Ok(_) => panic!("{action} was allowed; the role does not grant it"),
        Err(e) => format!("{e:?}"),
    };
    assert!(
        text.contains(&format!("not authorized to perform: {action}")),
        "expected a denial of {action}, got: {text}"
    );
    text
}

#[tokio::test]
async fn the_verify_role_reads_the_state_table_but_cannot_touch_dns_or_write_parameters() {
    let admin = ferry_tests::aws::config().await;
    let verify = as_role("ferry-verify").await;
    let table = bed_var("FERRY_BED_STATE_TABLE");
    ferry_aws::create_table(&aws_sdk_dynamodb::Client::new(&admin), &table)
        .await
        .expect("the bed's state table");

    // What its role grants: the state table.
    aws_sdk_dynamodb::Client::new(&verify)
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(unique("m#")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("state".into()),
        )
        .send()
        .await
        .expect("the verify role reads the state table");

    // Route 53 is not in its role.
    let (zone, domain) = ferry_tests::aws::hosted_zone(&admin).await;
    let record = ResourceRecordSet::builder()
        .name(format!("app.{domain}"))
        .r#type(RrType::Cname)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value("x.example.com")
                .build()
                .expect("a complete request"),
        )
        .build()
        .expect("a complete request");
    let change = ChangeBatch::builder()
        .changes(
            Change::builder()
                .action(ChangeAction::Upsert)
                .resource_record_set(record)
                .build()
                .expect("a complete request"),
        )
        .build()
        .expect("a complete request");
    let text = denied(
        aws_sdk_route53::Client::new(&verify)
            .change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(change)
            .send()
            .await,
        "route53:ChangeResourceRecordSets",
    );
    assert!(
        text.contains("assumed-role/VerifyFunctionRole/probe"),
        "{text}"
    );

    // Parameters: read under the prefix only, never written.
    let ssm = aws_sdk_ssm::Client::new(&verify);
    denied(
        ssm.put_parameter()
            .name(format!("/ferry/rehearsal/{}", unique("iam-")))
            .value("x")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await,
        "ssm:PutParameter",
    );
    let outside = format!("/other-app/{}", unique("secret-"));
    aws_sdk_ssm::Client::new(&admin)
        .put_parameter()
        .name(&outside)
        .value("not Ferry's")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("admin writes a parameter outside Ferry's prefix");
    let text = denied(
        ssm.get_parameter().name(&outside).send().await,
        "ssm:GetParameter",
    );
    assert!(text.contains(&format!("parameter{outside}")), "{text}");

    // Another table of the account.
    denied(
        aws_sdk_dynamodb::Client::new(&verify)
            .get_item()
            .table_name("someone-elses-table")
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("x".into()))
            .send()
            .await,
        "dynamodb:GetItem",
    );
}

#[tokio::test]
async fn start_replication_runs_only_the_worker_task_and_passes_only_its_roles() {
    let admin = ferry_tests::aws::config().await;
    let cluster = bed_var("FERRY_BED_CLUSTER");
    let worker =
        ferry_tests::aws::worker_task(&admin, &cluster, &bed_var("FERRY_BED_TASK_DEFINITION"))
            .await;
    let other = unique("other-task-");
    ferry_tests::aws::worker_task(&admin, &cluster, &other).await;
    let ecs = aws_sdk_ecs::Client::new(&as_role("ferry-start-replication").await);
    let network = aws_sdk_ecs::types::NetworkConfiguration::builder()
        .awsvpc_configuration(
            aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                .set_subnets(Some(worker.subnets.clone()))
                .set_security_groups(Some(worker.security_groups.clone()))
                .build()
                .expect("a complete request"),
        )
        .build();

    // A task definition other than the worker's.
    denied(
        ecs.run_task()
            .cluster(&cluster)
            .task_definition(&other)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .network_configuration(network.clone())
            .send()
            .await,
        "ecs:RunTask",
    );
    // The worker's task definition, but with another role passed to it.
    let text = denied(
        ecs.run_task()
            .cluster(&cluster)
            .task_definition(&worker.task_definition)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .network_configuration(network)
            .overrides(
                aws_sdk_ecs::types::TaskOverride::builder()
                    .task_role_arn("arn:aws:iam::123456789012:role/CutoverFunctionRole")
                    .build(),
            )
            .send()
            .await,
        "iam:PassRole",
    );
    assert!(text.contains("role/CutoverFunctionRole"), "{text}");
}

#[tokio::test]
async fn unknown_keys_and_forged_signatures_are_refused() {
    let table = bed_var("FERRY_BED_STATE_TABLE");
    let get = |cfg: aws_config::SdkConfig| {
        let table = table.clone();
        async move {
            aws_sdk_dynamodb::Client::new(&cfg)
                .get_item()
                .table_name(table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("x".into()))
                .send()
                .await
        }
    };
    let unknown = signing_with(Credentials::new(
        "ASIAUNKNOWNKEY000000",
        "secret",
        Some("token".into()),
        None,
        "forged",
    ))
    .await;
    let text = format!(
        "{:?}",
        get(unknown).await.expect_err("an unknown key is refused")
    );
    assert!(text.contains("InvalidClientTokenId"), "{text}");

    let (key, _, token) = probe_session("ferry-verify");
    let forged = signing_with(Credentials::new(
        key,
        "not-the-secret",
        Some(token),
        None,
        "forged",
    ))
    .await;
    let text = format!(
        "{:?}",
        get(forged)
            .await
            .expect_err("a forged signature is refused")
    );
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
}

/// The function binaries run with their roles' sessions (the bed's runner for cargo lambda
/// watch), not with the harness's key: the verify function's read of the state table is
/// recorded as made by the verify role's session (the log keeps each distinct call once).
#[tokio::test]
async fn a_function_signs_its_calls_as_its_template_role() {
    let log = std::path::PathBuf::from(bed_var("FERRY_BED_IAM_LOG"));
    let id = unique("iam-");
    let (ok, answer) = invoke("ferry-verify", &serde_json::json!({"migration_id": id})).await;
    assert!(!ok, "no migration {id} exists: {answer}");
    let text = std::fs::read_to_string(&log).expect("the emulator's IAM log");
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("assumed-role/VerifyFunctionRole/ferry-verify"))
        .unwrap_or_else(|| {
            panic!(
                "no call of the verify function's session in {}",
                log.display()
            )
        });
    assert!(line.contains("\"allowed\": true"), "{line}");
}
