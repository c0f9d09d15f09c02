//! [`Compute`] on ECS: the worker as a Fargate task, and redeployments of the app's services.

use async_trait::async_trait;
use aws_sdk_ecs::{
    Client,
    types::{
        AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
        NetworkConfiguration, TaskOverride,
    },
};
use ferry_core::cloud::{CloudError, CloudResult, Compute, Service, TaskState};

use crate::cloud::{build_error, classify};

/// Where and how the worker task runs.
#[derive(Debug, Clone, Default)]
pub struct WorkerTask {
    /// ECS cluster name or ARN.
    pub cluster: String,
    /// Task definition (family, family:revision or ARN).
    pub task_definition: String,
    /// The worker container's name in the task definition.
    pub container: String,
    /// Subnets of the task's network interface.
    pub subnets: Vec<String>,
    /// Security groups of the task's network interface.
    pub security_groups: Vec<String>,
    /// Whether the task gets a public IP (needed in a public subnet without a NAT gateway).
    pub public_ip: bool,
}

/// ECS.
#[derive(Debug, Clone)]
pub struct EcsCompute {
    client: Client,
    worker: WorkerTask,
}

impl EcsCompute {
    /// Runs `worker` tasks through `client`.
    pub fn new(client: Client, worker: WorkerTask) -> Self {
        Self { client, worker }
    }
}

#[async_trait]
impl Compute for EcsCompute {
    async fn run_worker(&self, migration_id: &str) -> CloudResult<String> {
        const WHAT: &str = "RunTask";
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.worker.subnets.clone()))
            .set_security_groups(Some(self.worker.security_groups.clone()))
            .assign_public_ip(if self.worker.public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| build_error(Service::Ecs, WHAT, e))?;
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&self.worker.container)
                    .environment(
                        KeyValuePair::builder()
                            .name("FERRY_MIGRATION_ID")
                            .value(migration_id)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let out = self
            .client
            .run_task()
            .cluster(&self.worker.cluster)
            .task_definition(&self.worker.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("ferry")
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .overrides(overrides)
            .send()
            .await
            .map_err(|e| classify(Service::Ecs, WHAT, e))?;
        if let Some(arn) = out.tasks().first().and_then(|t| t.task_arn()) {
            return Ok(arn.to_string());
        }
        let failures: Vec<(String, String)> = out
            .failures()
            .iter()
            .map(|f| {
                (
                    f.reason().unwrap_or("failure").to_string(),
                    f.detail().unwrap_or("").to_string(),
                )
            })
            .collect();
        Err(run_task_failed(WHAT, &failures))
    }

    async fn task(&self, task_arn: &str) -> CloudResult<Option<TaskState>> {
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.worker.cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(|e| classify(Service::Ecs, "DescribeTasks", e))?;
        Ok(out.tasks().first().map(|t| TaskState {
            task_arn: t.task_arn().unwrap_or(task_arn).to_string(),
            last_status: t.last_status().unwrap_or("UNKNOWN").to_string(),
            stopped_reason: t.stopped_reason().map(str::to_string),
        }))
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> CloudResult<()> {
        match self
            .client
            .stop_task()
            .cluster(&self.worker.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = classify(Service::Ecs, "StopTask", e);
                // A task ECS no longer knows is stopped.
                match &err {
                    CloudError::Refused { reason, .. }
                        if reason.contains("not found") || reason.contains("does not exist") =>
                    {
                        Ok(())
                    }
                    _ => Err(err),
                }
            }
        }
    }

    async fn redeploy(&self, cluster: &str, service: &str) -> CloudResult<()> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .force_new_deployment(true)
            .send()
            .await
            .map_err(|e| classify(Service::Ecs, "UpdateService", e))?;
        Ok(())
    }
}

/// RunTask answered with failures instead of a task. Fargate's "Capacity is unavailable at this
/// time" and the other transient reasons (an agent or resource shortage, throttling) are worth
/// a retry with backoff; anything else (a bad task definition, a missing subnet) needs a person.
fn run_task_failed(what: &str, failures: &[(String, String)]) -> CloudError {
    let reason = failures
        .iter()
        .map(|(r, d)| format!("{r}: {d}"))
        .collect::<Vec<_>>()
        .join("; ");
    let transient = failures.iter().any(|(r, d)| {
        let text = format!("{r} {d}").to_ascii_lowercase();
        [
            "capacity is unavailable",
            "resource:",
            "agent",
            "throttl",
            "try again",
        ]
        .iter()
        .any(|needle| text.contains(needle))
    });
    if transient {
        CloudError::Unavailable {
            service: Service::Ecs,
            source: format!("{what}: {reason}").into(),
        }
    } else {
        CloudError::Refused {
            service: Service::Ecs,
            what: what.into(),
            reason,
        }
    }
}

#[cfg(test)]
mod failure_tests {
    use ferry_core::StepErrorName;

    use super::*;

    #[test]
    fn fargate_capacity_is_retried_and_a_bad_setup_is_not() {
        let capacity = run_task_failed(
            "RunTask",
            &[(
                "Capacity is unavailable at this time. Please try again later or in a different availability zone".into(),
                String::new(),
            )],
        );
        assert_eq!(capacity.step_error_name(), "Ferry.Retryable.Ecs");
        let memory = run_task_failed("RunTask", &[("RESOURCE:MEMORY".into(), String::new())]);
        assert_eq!(memory.step_error_name(), "Ferry.Retryable.Ecs");
        let missing = run_task_failed(
            "RunTask",
            &[("MISSING".into(), "subnet-0abc does not exist".into())],
        );
        assert_eq!(missing.step_error_name(), "Ferry.Blocked.Ecs");
        assert!(missing.to_string().contains("subnet-0abc"), "{missing}");
    }
}
