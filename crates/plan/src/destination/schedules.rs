//! Heroku Scheduler's jobs as EventBridge Scheduler schedules, each running the app's image
//! as a one-off ECS task with the job's command. They are created disabled: until the cutover,
//! Heroku's Scheduler still runs the same jobs, and running both would run each job twice.

use serde_json::{Value, json};

use super::{Input, Template, att, r, sub};
use crate::scheduler;

pub(super) fn schedules(t: &mut Template, input: &Input, secrets: &[Value]) {
    if input.jobs.is_empty() {
        return;
    }
    t.parameter(
        "SchedulesEnabled",
        json!({"Type": "String", "Default": "false", "AllowedValues": ["false", "true"], "Description": "Whether the Scheduler jobs run on AWS. Keep false until the cutover (Heroku Scheduler runs them until then); turn Heroku's jobs off and this on together."}),
    );
    t.condition(
        "SchedulesOn",
        json!({"Fn::Equals": [r("SchedulesEnabled"), "true"]}),
    );
    t.resource(
        "JobLogs",
        json!({
            "Type": "AWS::Logs::LogGroup",
            "Metadata": super::skips(&[("CKV_AWS_158", "Encrypted at rest by CloudWatch Logs' own key; a customer-managed key is the team's choice to add.")]),
            "Properties": {"LogGroupName": sub("/ecs/${AWS::StackName}/scheduler"), "RetentionInDays": r("LogRetentionDays")},
        }),
    );
    role(t);
    for (i, job) in input.jobs.iter().enumerate() {
        job_task(t, input, i, job, secrets);
        schedule(t, i, job);
    }
}

fn role(t: &mut Template) {
    t.resource(
        "SchedulerRole",
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
                "Policies": [{"PolicyName": "run-jobs", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": sub("arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task-definition/${AWS::StackName}-job-*")},
                    {"Effect": "Allow", "Action": "iam:PassRole", "Resource": [att("TaskExecutionRole", "Arn"), att("TaskRole", "Arn")]},
                ]}}],
            },
        }),
    );
}

fn job_task(t: &mut Template, input: &Input, i: usize, job: &scheduler::Job, secrets: &[Value]) {
    let size = job
        .size
        .as_deref()
        .and_then(|s| input.prices.aws.dyno_to_fargate.get(s).copied())
        .unwrap_or(crate::prices::TaskSize {
            vcpu: 0.25,
            memory_gb: 0.5,
        });
    let container = json!({
        "Name": "job",
        "Image": sub("${ImageRepository.RepositoryUri}:${ImageTag}"),
        // The buildpacks launcher runs a command line with the app's environment, as
        // `heroku run` does.
        "EntryPoint": ["launcher"],
        "Command": [job.command],
        "Essential": true,
        "Secrets": secrets,
        "ReadonlyRootFilesystem": false,
        "LogConfiguration": {"LogDriver": "awslogs", "Options": {
            "awslogs-group": r("JobLogs"),
            "awslogs-region": r("AWS::Region"),
            "awslogs-stream-prefix": format!("job-{i}"),
        }},
    });
    t.resource(
        &format!("Job{i}Task"),
        super::compute::fargate_task(input, &format!("job-{i}"), size, container),
    );
}

fn schedule(t: &mut Template, i: usize, job: &scheduler::Job) {
    // Checked when the jobs file was read.
    let expression = scheduler::expression(job).unwrap_or_else(|_| "rate(1 day)".into());
    let description: String = job.command.chars().take(500).collect();
    t.resource(
        &format!("Job{i}Schedule"),
        json!({
            "Type": "AWS::Scheduler::Schedule",
            "Properties": {
                "Description": description,
                "ScheduleExpression": expression,
                "ScheduleExpressionTimezone": "UTC",
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "State": {"Fn::If": ["SchedulesOn", "ENABLED", "DISABLED"]},
                "Target": {
                    "Arn": att("Cluster", "Arn"),
                    "RoleArn": att("SchedulerRole", "Arn"),
                    "RetryPolicy": {"MaximumRetryAttempts": 0},
                    "EcsParameters": {
                        "TaskDefinitionArn": r(&format!("Job{i}Task")),
                        "LaunchType": "FARGATE",
                        "NetworkConfiguration": {"AwsvpcConfiguration": {
                            "Subnets": super::network::private_subnets(),
                            "SecurityGroups": [r("AppSecurityGroup")],
                            "AssignPublicIp": "DISABLED",
                        }},
                    },
                },
            },
        }),
    );
}
