//! The EventBridge, CloudWatch, ECS and RDS adapters against the AWS emulator.

use std::time::Duration;

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use ferry_aws::{
    CloudWatchAlarms, EcsCompute, EventBridgeSchedule, RdsDatabases, WorkerTask, rate_expression,
};
use ferry_core::cloud::{Alarms, Compute, Databases, Schedule};
use ferry_tests::{bed_var, unique};

#[tokio::test]
async fn canary_rules_are_created_read_and_deleted() {
    let aws = ferry_tests::aws::config().await;
    let eb = aws_sdk_eventbridge::Client::new(&aws);
    let schedule = EventBridgeSchedule::new(eb.clone());
    let name = unique("ferry-canary-");
    assert!(!schedule.rule_exists(&name).await.expect("exists?"));
    let input = serde_json::json!({"migration_id": "m-1", "interval_seconds": 300});
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:ferry-canary-tick";
    schedule
        .put_rate_rule(&name, 5, arn, &input)
        .await
        .expect("put rule");
    // Twice (a retried canary start) is fine.
    schedule
        .put_rate_rule(&name, 5, arn, &input)
        .await
        .expect("put rule again");
    assert!(schedule.rule_exists(&name).await.expect("exists?"));
    let rule = eb
        .describe_rule()
        .name(&name)
        .send()
        .await
        .expect("describe");
    assert_eq!(rule.schedule_expression(), Some("rate(5 minutes)"));
    let targets = eb
        .list_targets_by_rule()
        .rule(&name)
        .send()
        .await
        .expect("targets");
    let t = targets.targets().first().expect("one target");
    assert_eq!(t.arn(), arn);
    let sent: serde_json::Value = serde_json::from_str(t.input().expect("input")).expect("json");
    assert_eq!(sent, input);
    assert!(schedule.delete_rule(&name).await.expect("delete"));
    assert!(!schedule.rule_exists(&name).await.expect("exists?"));
    assert!(!schedule.delete_rule(&name).await.expect("delete again"));
    // AWS refuses `rate(1 minutes)`.
    assert_eq!(rate_expression(1), "rate(1 minute)");
    assert_eq!(rate_expression(15), "rate(15 minutes)");
}

#[tokio::test]
async fn alarms_in_alarm_and_missing_alarms_are_both_reported() {
    let aws = ferry_tests::aws::config().await;
    let cw = aws_sdk_cloudwatch::Client::new(&aws);
    let (ok, firing, missing) = (unique("ok-"), unique("firing-"), unique("missing-"));
    for name in [&ok, &firing] {
        cw.put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/ApplicationELB")
            .metric_name("HTTPCode_Target_5XX_Count")
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(10.0)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .send()
            .await
            .expect("alarm");
    }
    cw.set_alarm_state()
        .alarm_name(&ok)
        .state_value(StateValue::Ok)
        .state_reason("test")
        .send()
        .await
        .expect("state");
    cw.set_alarm_state()
        .alarm_name(&firing)
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .expect("state");
    // A composite alarm over the firing one, as teams build their health gate: CloudWatch
    // lists it only when DescribeAlarms names the composite type (the bed refuses likewise).
    let composite = unique("composite-");
    cw.put_composite_alarm()
        .alarm_name(&composite)
        .alarm_rule(format!("ALARM(\"{firing}\")"))
        .send()
        .await
        .expect("composite alarm");
    cw.set_alarm_state()
        .alarm_name(&composite)
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .expect("state");
    let listed = cw
        .describe_alarms()
        .alarm_names(&composite)
        .send()
        .await
        .expect("describe");
    assert!(
        listed.composite_alarms().is_empty(),
        "without AlarmTypes only metric alarms are listed"
    );
    let states = CloudWatchAlarms::new(cw)
        .states(&[
            ok.clone(),
            firing.clone(),
            missing.clone(),
            composite.clone(),
        ])
        .await
        .expect("states");
    assert_eq!(states.firing, vec![firing, composite]);
    assert_eq!(states.missing, vec![missing]);
}

#[tokio::test]
async fn the_worker_task_runs_until_stopped() {
    let aws = ferry_tests::aws::config().await;
    let ecs = aws_sdk_ecs::Client::new(&aws);
    let cluster = unique("ferry-");
    let worker = ferry_tests::aws::worker_task(&aws, &cluster, &unique("ferry-worker-")).await;
    let compute = EcsCompute::new(ecs.clone(), worker);
    let arn = compute.run_worker("mig-42").await.expect("run");
    let described = ecs
        .describe_tasks()
        .cluster(&cluster)
        .tasks(&arn)
        .send()
        .await
        .expect("describe");
    let env = described.tasks()[0]
        .overrides()
        .and_then(|o| o.container_overrides().first())
        .map(|c| c.environment().to_vec())
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|kv| kv.name() == Some("FERRY_MIGRATION_ID") && kv.value() == Some("mig-42")),
        "the migration id travels in the container overrides: {env:?}"
    );
    for _ in 0..6 {
        let t = compute.task(&arn).await.expect("task").expect("known");
        assert!(!t.is_stopped(), "a running task stays running: {t:?}");
    }
    compute.stop_task(&arn, "test").await.expect("stop");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = compute.task(&arn).await.expect("task").expect("known");
    assert!(t.is_stopped(), "{t:?}");
    compute.stop_task(&arn, "test").await.expect("stop again");
    // A refused RunTask names the reason (no such task definition).
    let bad = EcsCompute::new(
        ecs,
        WorkerTask {
            cluster,
            task_definition: "no-such-family".into(),
            container: "worker".into(),
            subnets: vec![bed_var("FERRY_BED_SUBNET")],
            security_groups: vec![],
            public_ip: false,
        },
    );
    let err = bad.run_worker("mig-43").await.expect_err("refused");
    assert!(
        ferry_core::StepErrorName::step_error_name(&err).starts_with("Ferry.Blocked."),
        "{err}"
    );
}

#[tokio::test]
async fn rds_instances_are_described_and_a_missing_one_is_none() {
    let aws = ferry_tests::aws::config().await;
    let rds = aws_sdk_rds::Client::new(&aws);
    let id = ferry_tests::aws::rds_instance(&aws, "17.2").await;
    let dbs = RdsDatabases::new(rds);
    let db = dbs.instance(&id).await.expect("describe").expect("found");
    assert_eq!(db.status, "available");
    assert_eq!(db.engine, "postgres");
    assert_eq!(db.engine_version, "17.2");
    assert!(
        dbs.instance(&unique("nope-"))
            .await
            .expect("describe")
            .is_none()
    );
}
