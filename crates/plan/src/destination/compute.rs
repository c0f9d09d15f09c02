//! The app's image repository, cluster, roles, and one task definition, log group and ECS
//! service per process type.

use serde_json::{Value, json};

use super::{Input, Template, att, logical, r, skips, sub};
use crate::inventory::Process;

/// The port the app listens on in its container (`$PORT`, as on Heroku).
pub const APP_PORT: u16 = 8080;

pub(super) fn registry_and_cluster(t: &mut Template, input: &Input) {
    t.parameter(
        "ImageTag",
        json!({"Type": "String", "Default": "none", "AllowedPattern": "^[A-Za-z0-9_.-]{1,128}$", "Description": "The image tag the services run (the CI workflow pushes one per commit and deploys with it). Until an image is pushed, keep none: the services then run no task."}),
    );
    t.condition(
        "HasImage",
        json!({"Fn::Not": [{"Fn::Equals": [r("ImageTag"), "none"]}]}),
    );
    t.resource(
        "ImageRepository",
        json!({
            "Type": "AWS::ECR::Repository",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "ImageScanningConfiguration": {"ScanOnPush": true},
                "ImageTagMutability": "IMMUTABLE",
                "EncryptionConfiguration": {"EncryptionType": "KMS"},
            },
        }),
    );
    t.output(
        "ImageRepositoryUri",
        "Where CI pushes the image (pack build … --publish)",
        att("ImageRepository", "RepositoryUri"),
    );
    t.resource(
        "Cluster",
        json!({
            "Type": "AWS::ECS::Cluster",
            "Properties": {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]},
        }),
    );
    t.output("ClusterName", "The ECS cluster", r("Cluster"));
    roles(t, input);
}

fn roles(t: &mut Template, input: &Input) {
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    });
    t.resource(
        "TaskExecutionRole",
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": trust,
                "ManagedPolicyArns": [sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")],
                "Policies": [{
                    "PolicyName": "config-vars",
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow",
                        "Action": "ssm:GetParameters",
                        "Resource": sub(&format!("arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{}*", input.config_prefix)),
                    }]},
                }],
            },
        }),
    );
    t.resource(
        "TaskRole",
        json!({"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": trust}}),
    );
    t.output(
        "TaskRoleArn",
        "The role the app's containers run as: attach what the app calls on AWS",
        att("TaskRole", "Arn"),
    );
}

/// The config vars every container gets, as ECS secrets from the SSM prefix config sync fills:
/// the app's vars as Heroku has them, without Heroku's own and the Postgres attachments
/// (DATABASE_URL, the endpoint's URL, replaces them).
pub fn config_secrets(input: &Input) -> Vec<String> {
    let postgres: Vec<&str> = input
        .inventory
        .addons
        .iter()
        .filter(|a| a.service == "heroku-postgresql")
        .map(|a| a.name.as_str())
        .collect();
    let mut names: Vec<String> = input
        .inventory
        .config_vars
        .iter()
        .filter(|v| !ferry_core::spec::HEROKU_MANAGED.contains(&v.name.as_str()))
        .filter(|v| {
            v.set_by_addon
                .as_deref()
                .is_none_or(|a| !postgres.contains(&a))
        })
        .map(|v| v.name.clone())
        .collect();
    names.push("DATABASE_URL".into());
    names.sort();
    names.dedup();
    names
}

pub(super) fn processes(t: &mut Template, input: &Input) {
    let secrets: Vec<Value> = config_secrets(input)
        .iter()
        .map(|name| {
            json!({"Name": name, "ValueFrom": sub(&format!("arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{}{name}", input.config_prefix))})
        })
        .collect();
    super::schedules::schedules(t, input, &secrets);
    for p in &input.inventory.processes {
        let id = logical(&p.process_type);
        if id.is_empty() {
            continue;
        }
        log_group(t, p, &id);
        task_definition(t, input, p, &id, &secrets);
        if p.process_type != "release" {
            service(t, p, &id);
        }
        if let Some(a) = &p.autoscaling {
            autoscaling(t, a, &id);
        }
    }
}

fn log_group(t: &mut Template, p: &Process, id: &str) {
    t.resource(
        &format!("{id}Logs"),
        json!({
            "Type": "AWS::Logs::LogGroup",
            "Metadata": skips(&[("CKV_AWS_158", "Encrypted at rest by CloudWatch Logs' own key; a customer-managed key is the team's choice to add.")]),
            "Properties": {
                "LogGroupName": sub(&format!("/ecs/${{AWS::StackName}}/{}", p.process_type)),
                "RetentionInDays": r("LogRetentionDays"),
            },
        }),
    );
}

fn task_definition(t: &mut Template, input: &Input, p: &Process, id: &str, secrets: &[Value]) {
    let size = crate::sizing::task_size(p, input.prices).unwrap_or(crate::prices::TaskSize {
        vcpu: 0.5,
        memory_gb: 1.0,
    });
    let mut container = json!({
        "Name": p.process_type,
        "Image": sub("${ImageRepository.RepositoryUri}:${ImageTag}"),
        // Every Procfile entry is a launch process of the buildpacks image.
        "EntryPoint": [format!("/cnb/process/{}", p.process_type)],
        "Essential": true,
        "Environment": [{"Name": "PORT", "Value": APP_PORT.to_string()}],
        "Secrets": secrets,
        "ReadonlyRootFilesystem": false,
        "LogConfiguration": {"LogDriver": "awslogs", "Options": {
            "awslogs-group": r(&format!("{id}Logs")),
            "awslogs-region": r("AWS::Region"),
            "awslogs-stream-prefix": p.process_type,
        }},
    });
    if p.process_type == "web" {
        container["PortMappings"] = json!([{"ContainerPort": APP_PORT, "Protocol": "tcp"}]);
    }
    t.resource(
        &format!("{id}Task"),
        fargate_task(input, &p.process_type, size, container),
    );
}

/// A Fargate task definition of the app's image (family `<stack>-<name>`), with the app's
/// execution and task roles.
pub(super) fn fargate_task(
    input: &Input,
    name: &str,
    size: crate::prices::TaskSize,
    container: Value,
) -> Value {
    json!({
        "Type": "AWS::ECS::TaskDefinition",
        "Metadata": skips(&[("CKV_AWS_336", "Buildpacks images write to the app directory at run time (as on Heroku); a read-only root filesystem breaks them.")]),
        "Properties": {
            "Family": sub(&format!("${{AWS::StackName}}-{name}")),
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": ((size.vcpu * 1024.0).round() as u32).to_string(),
            "Memory": ((size.memory_gb * 1024.0).round() as u32).to_string(),
            "RuntimePlatform": {"CpuArchitecture": if input.architecture == "arm64" { "ARM64" } else { "X86_64" }, "OperatingSystemFamily": "LINUX"},
            "ExecutionRoleArn": att("TaskExecutionRole", "Arn"),
            "TaskRoleArn": att("TaskRole", "Arn"),
            "ContainerDefinitions": [container],
        },
    })
}

/// Heroku's dyno autoscaling as Application Auto Scaling of the service, between the same
/// bounds, once an image is pushed (before, the service runs nothing). Heroku scales web on its
/// p95 response time; AWS's target tracking has no percentile target, so the service keeps
/// 60 % average CPU (the response time is still watched by the canary's alarms).
fn autoscaling(t: &mut Template, a: &ferry_heroku::Autoscaling, id: &str) {
    let target = format!("{id}ScalableTarget");
    t.resource(
        &target,
        json!({
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Condition": "HasImage",
            "Properties": {
                "MinCapacity": a.min,
                "MaxCapacity": a.max,
                "ResourceId": sub(&format!("service/${{Cluster}}/${{{id}Service.Name}}")),
                "ScalableDimension": "ecs:service:DesiredCount",
                "ServiceNamespace": "ecs",
            },
        }),
    );
    t.resource(
        &format!("{id}ScalingPolicy"),
        json!({
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Condition": "HasImage",
            "Metadata": {"heroku": {"p95_ms": a.p95_ms}},
            "Properties": {
                "PolicyName": sub(&format!("${{AWS::StackName}}-{id}-cpu")),
                "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": r(&target),
                "TargetTrackingScalingPolicyConfiguration": {
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                    "TargetValue": 60,
                    "ScaleOutCooldown": 60,
                    "ScaleInCooldown": 300,
                },
            },
        }),
    );
}

/// How many tasks a process type runs: the formation's count (a clock exactly one), none
/// until an image is pushed.
fn desired(p: &Process) -> u32 {
    match p.process_type.as_str() {
        "clock" | "scheduler" => p.quantity.min(1),
        _ => p.quantity,
    }
}

fn service(t: &mut Template, p: &Process, id: &str) {
    let mut props = json!({
        "Cluster": r("Cluster"),
        "TaskDefinition": r(&format!("{id}Task")),
        "LaunchType": "FARGATE",
        "DesiredCount": {"Fn::If": ["HasImage", desired(p), 0]},
        "PropagateTags": "SERVICE",
        "EnableECSManagedTags": true,
        // Heroku's preboot: new tasks healthy before old ones stop, a failed deploy rolled back.
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": 100,
            "MaximumPercent": 200,
            "DeploymentCircuitBreaker": {"Enable": true, "Rollback": true},
        },
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "AssignPublicIp": "DISABLED",
            "Subnets": super::network::private_subnets(),
            "SecurityGroups": [r("AppSecurityGroup")],
        }},
    });
    let mut resource = json!({"Type": "AWS::ECS::Service"});
    if p.process_type == "web" {
        props["LoadBalancers"] = json!([{"ContainerName": "web", "ContainerPort": APP_PORT, "TargetGroupArn": r("WebTargetGroup")}]);
        props["HealthCheckGracePeriodSeconds"] = json!(60);
        resource["DependsOn"] = json!(["HttpsListener"]);
    }
    resource["Properties"] = props;
    t.resource(&format!("{id}Service"), resource);
    t.output(
        &format!("{id}ServiceName"),
        &format!("The {} process type's ECS service", p.process_type),
        att(&format!("{id}Service"), "Name"),
    );
}
