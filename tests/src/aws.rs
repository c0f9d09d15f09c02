//! AWS resources an operator creates before a migration, made in the emulator for one test:
//! a hosted zone, an SNS topic, an RDS instance, and the worker's ECS cluster and task
//! definition.

use crate::{bed_var, unique};

/// The emulator's SDK configuration (the bed's `AWS_ENDPOINT_URL`).
pub async fn config() -> aws_config::SdkConfig {
    bed_var("AWS_ENDPOINT_URL");
    ferry_aws::sdk_config().await
}

/// A new hosted zone: its id and domain.
pub async fn hosted_zone(aws: &aws_config::SdkConfig) -> (String, String) {
    let domain = format!("{}.example.com", unique("z"));
    let zone = aws_sdk_route53::Client::new(aws)
        .create_hosted_zone()
        .name(&domain)
        .caller_reference(unique("ref-"))
        .send()
        .await
        .expect("create hosted zone");
    let id = zone
        .hosted_zone()
        .map(|z| z.id().to_string())
        .expect("zone id");
    (id, domain)
}

/// A new SNS topic's ARN.
pub async fn topic(aws: &aws_config::SdkConfig) -> String {
    aws_sdk_sns::Client::new(aws)
        .create_topic()
        .name(unique("ferry-"))
        .send()
        .await
        .expect("create topic")
        .topic_arn()
        .expect("topic arn")
        .to_string()
}

/// A new PostgreSQL RDS instance of `engine_version`; its id.
pub async fn rds_instance(aws: &aws_config::SdkConfig, engine_version: &str) -> String {
    let id = unique("ferry-db-");
    aws_sdk_rds::Client::new(aws)
        .create_db_instance()
        .db_instance_identifier(&id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version(engine_version)
        .master_username("ferry")
        .master_user_password("not-used-by-ferry")
        .allocated_storage(20)
        .send()
        .await
        .expect("create rds instance");
    id
}

/// A new PostgreSQL RDS instance whose master password RDS manages in Secrets Manager
/// (`ManageMasterUserPassword`), with `master` as its master user; its id and the secret's ARN.
pub async fn rds_instance_managed(
    aws: &aws_config::SdkConfig,
    engine_version: &str,
    master: &str,
) -> (String, String) {
    let id = unique("ferry-db-");
    let out = aws_sdk_rds::Client::new(aws)
        .create_db_instance()
        .db_instance_identifier(&id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version(engine_version)
        .master_username(master)
        .manage_master_user_password(true)
        .allocated_storage(20)
        .send()
        .await
        .expect("create rds instance");
    let arn = out
        .db_instance()
        .and_then(|i| i.master_user_secret())
        .and_then(|m| m.secret_arn())
        .expect("the managed secret's ARN")
        .to_string();
    (id, arn)
}

/// A new secret named as RDS names the master passwords it manages (`rds!db-…`), holding
/// `value`; its ARN.
pub async fn rds_like_secret(aws: &aws_config::SdkConfig, value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(aws)
        .create_secret()
        .name(unique("rds!db-"))
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn()
        .expect("secret arn")
        .to_string()
}

/// A new current value for the secret, as a rotation writes it.
pub async fn rotate_secret(aws: &aws_config::SdkConfig, arn: &str, value: &str) {
    aws_sdk_secretsmanager::Client::new(aws)
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .expect("put secret value");
}

/// The worker's ECS cluster (created if missing) and a Fargate task definition of `family`,
/// in the bed's subnet and security group.
pub async fn worker_task(
    aws: &aws_config::SdkConfig,
    cluster: &str,
    family: &str,
) -> ferry_aws::WorkerTask {
    let ecs = aws_sdk_ecs::Client::new(aws);
    ecs.create_cluster()
        .cluster_name(cluster)
        .send()
        .await
        .expect("create cluster");
    ecs.register_task_definition()
        .family(family)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("1024")
        .memory("2048")
        // The template's roles: RunTask must be allowed to pass them (iam:PassRole).
        .task_role_arn("arn:aws:iam::123456789012:role/WorkerTaskRole")
        .execution_role_arn("arn:aws:iam::123456789012:role/WorkerExecutionRole")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("worker")
                .image("ferry-worker:test")
                .cpu(1024)
                .memory(2048)
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
    ferry_aws::WorkerTask {
        cluster: cluster.to_string(),
        task_definition: family.to_string(),
        container: "worker".into(),
        subnets: vec![bed_var("FERRY_BED_SUBNET")],
        security_groups: vec![bed_var("FERRY_BED_SECURITY_GROUP")],
        public_ip: false,
    }
}

/// An SQS queue subscribed to `topic` (raw delivery) with an optional filter policy; its URL.
pub async fn queue_on(aws: &aws_config::SdkConfig, topic: &str, filter: Option<&str>) -> String {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let url = sqs
        .create_queue()
        .queue_name(unique("ferry-sub-"))
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue arn")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue arn")
        .clone();
    let mut sub = aws_sdk_sns::Client::new(aws)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true");
    if let Some(f) = filter {
        sub = sub.attributes("FilterPolicy", f);
    }
    sub.send().await.expect("subscribe");
    url
}

/// Every message body waiting in the queue at `url`.
pub async fn drain_queue(aws: &aws_config::SdkConfig, url: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let mut out = Vec::new();
    loop {
        let msgs = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if msgs.messages().is_empty() {
            return out;
        }
        for m in msgs.messages() {
            out.extend(m.body().map(str::to_string));
            if let Some(h) = m.receipt_handle() {
                let _ = sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(h)
                    .send()
                    .await;
            }
        }
    }
}

/// The app's own record before any migration: a simple CNAME from `name` to Heroku's DNS
/// target, as Heroku's custom-domain setup has it.
pub async fn app_record(aws: &aws_config::SdkConfig, zone_id: &str, name: &str, target: &str) {
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let record = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::Cname)
        .ttl(300)
        .resource_records(ResourceRecord::builder().value(target).build().expect("rr"))
        .build()
        .expect("record");
    let change = Change::builder()
        .action(ChangeAction::Create)
        .resource_record_set(record)
        .build()
        .expect("change");
    aws_sdk_route53::Client::new(aws)
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(
            ChangeBatch::builder()
                .changes(change)
                .build()
                .expect("batch"),
        )
        .send()
        .await
        .expect("create the app's CNAME");
}

/// The record sets at `name`: (set identifier, first value, TTL), sorted.
pub async fn records_at(
    aws: &aws_config::SdkConfig,
    zone_id: &str,
    name: &str,
) -> Vec<(Option<String>, String, i64)> {
    let want = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
    let out = aws_sdk_route53::Client::new(aws)
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .send()
        .await
        .expect("list records");
    let mut v: Vec<_> = out
        .resource_record_sets()
        .iter()
        .filter(|r| r.name().to_ascii_lowercase() == want)
        .map(|r| {
            (
                r.set_identifier().map(str::to_string),
                r.resource_records()
                    .first()
                    .map(|v| v.value().to_string())
                    .unwrap_or_default(),
                r.ttl().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}
