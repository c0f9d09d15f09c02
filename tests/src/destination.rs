//! The app's AWS side as a team makes it: `ferry plan` writes `destination.yaml`, the emulator's
//! CloudFormation deploys it, and `ferry destination --stack` fills `migration.json` from the
//! stack's outputs. Used by `tests/tests/destination.rs` and by the rehearsal (`make demo`).
//!
//! What the emulator cannot create is made by the bed's stand-ins (`tests/bed/cfn_standins.py`
//! says which and how); what a migration then talks to is the bed's servers: its PostgreSQL 17
//! stands in for the stack's RDS instance, its TLS Redis for the stack's ElastiCache group, the
//! rehearsal's app processes for the stack's ECS services.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};

use crate::{heroku, unique, workspace_bin};

/// `ferry plan <args>` against the fake Heroku API (FERRY_PLAN_DATABASE_URL unset, `env`
/// added): whether it succeeded, and what it printed.
pub fn ferry_plan(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (base, token) = heroku();
    let mut cmd = Command::new(workspace_bin("ferry"));
    cmd.arg("plan")
        .args(args)
        .env("HEROKU_API_URL", base)
        .env("HEROKU_API_KEY", token)
        .env_remove("FERRY_PLAN_DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ferry plan");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `ferry plan` run for `app` with a Procfile (and Scheduler jobs): its output directory.
pub fn plan(app: &str, procfile: &str, jobs: Option<&serde_json::Value>) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("ferry-destination-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (procfile_path, out) = (dir.join("Procfile"), dir.join("out"));
    std::fs::write(&procfile_path, procfile).expect("Procfile");
    let (procfile_arg, out_arg) = (procfile_path.to_string_lossy(), out.to_string_lossy());
    let mut args = vec![app, "--procfile", &procfile_arg, "--out", &out_arg];
    let jobs_path = dir.join("jobs.json");
    let jobs_arg = jobs_path.to_string_lossy();
    if let Some(jobs) = jobs {
        std::fs::write(&jobs_path, jobs.to_string()).expect("jobs");
        args.extend(["--scheduler", &jobs_arg]);
    }
    let (ok, printed) = ferry_plan(&args, &[]);
    assert!(ok, "ferry plan: {printed}");
    out
}

/// A stack deployed from a template.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Its name.
    pub name: String,
    /// Output name → value.
    pub outputs: BTreeMap<String, String>,
    /// Resource type → how many the stack made.
    pub resources: BTreeMap<String, usize>,
    /// How long CreateStack took to CREATE_COMPLETE.
    pub took: Duration,
}

impl Stack {
    /// An output the template declares.
    pub fn output(&self, name: &str) -> &str {
        self.outputs
            .get(name)
            .unwrap_or_else(|| panic!("stack {} has no output {name}", self.name))
    }

    /// One line per resource type, for the demo's log.
    pub fn summary(&self) -> String {
        let total: usize = self.resources.values().sum();
        let types: Vec<String> = self
            .resources
            .iter()
            .map(|(t, n)| format!("{n} {}", t.trim_start_matches("AWS::")))
            .collect();
        format!(
            "stack {}: CREATE_COMPLETE in {:.1} s, {total} resources ({})",
            self.name,
            self.took.as_secs_f64(),
            types.join(", ")
        )
    }
}

/// Deploys `template` as stack `name` with `parameters` (CAPABILITY_IAM, as the README's
/// `aws cloudformation deploy` does) and waits for CREATE_COMPLETE.
pub async fn deploy(
    aws: &aws_config::SdkConfig,
    template: &Path,
    name: &str,
    parameters: &[(&str, &str)],
) -> Stack {
    let cfn = aws_sdk_cloudformation::Client::new(aws);
    let started = Instant::now();
    let body = std::fs::read_to_string(template).expect("template");
    let mut create = cfn
        .create_stack()
        .stack_name(name)
        .template_body(body)
        .capabilities(Capability::CapabilityIam);
    for (k, v) in parameters {
        create = create.parameters(
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(*v)
                .build(),
        );
    }
    create.send().await.expect("create stack");
    let deadline = Instant::now() + Duration::from_secs(120);
    let stack = loop {
        let out = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .expect("describe stack");
        let stack = out.stacks()[0].clone();
        match stack.stack_status() {
            Some(StackStatus::CreateInProgress) => {}
            Some(StackStatus::CreateComplete) => break stack,
            other => panic!(
                "stack {name}: {other:?} {}",
                stack.stack_status_reason().unwrap_or_default()
            ),
        }
        assert!(Instant::now() < deadline, "stack {name} still creating");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    let outputs = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    let mut resources = BTreeMap::new();
    let listed = cfn
        .describe_stack_resources()
        .stack_name(name)
        .send()
        .await
        .expect("stack resources");
    for r in listed.stack_resources() {
        *resources
            .entry(r.resource_type().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    Stack {
        name: name.to_string(),
        outputs,
        resources,
        took,
    }
}

/// `ferry destination <spec> --stack <stacks…>`: its exit code and what it printed.
pub fn fill_spec(spec: &Path, stacks: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(workspace_bin("ferry"));
    cmd.arg("destination").arg(spec);
    for s in stacks {
        cmd.args(["--stack", s]);
    }
    let out = cmd.output().expect("run ferry destination");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A stack whose only content is `outputs`: Ferry's own stack as far as `ferry destination`
/// reads it (its approval topic), which the bed does not deploy from infra/template.yaml.
pub async fn outputs_only_stack(
    aws: &aws_config::SdkConfig,
    name: &str,
    outputs: &serde_json::Value,
) {
    let outputs: serde_json::Map<String, serde_json::Value> = outputs
        .as_object()
        .expect("outputs")
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!({ "Value": v })))
        .collect();
    aws_sdk_cloudformation::Client::new(aws)
        .create_stack()
        .stack_name(name)
        .template_body(
            serde_json::json!({
                "Resources": {"Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": format!("/{name}/marker"), "Type": "String", "Value": "x"}}},
                "Outputs": outputs,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("create outputs-only stack");
}

/// The rehearsal's Procfile: the sample app's process types (web, a Sidekiq-like worker, a
/// release command) as a team's repository would have them.
pub const REHEARSAL_PROCFILE: &str = "web: bin/web\nworker: bin/jobs\nrelease: bin/migrate\n";

/// What the rehearsal's AWS side came from: the deployed stack, the spec `ferry destination`
/// filled from it, and what `ferry destination` printed.
#[derive(Debug, Clone)]
pub struct Made {
    /// The app's stack.
    pub stack: Stack,
    /// migration.json as `ferry destination` left it.
    pub filled: serde_json::Value,
    /// What `ferry destination` printed.
    pub printed: String,
}

/// The rehearsal's AWS side as a team makes it: `ferry plan` for the Heroku app (its
/// Procfile and a Scheduler job), the stack deployed into the emulator in `zone` for
/// `domain` with the target's major version, and `ferry destination` filling the plan's
/// migration.json from it and from Ferry's stack (its approval `topic`): only the approvers
/// are left. Stand-in: the master secret RDS made for the stack's instance holds the bed
/// target's login (`target`), since the bed's PostgreSQL plays that instance.
pub async fn for_rehearsal(
    aws: &aws_config::SdkConfig,
    app: &str,
    zone: &str,
    domain: &str,
    target: &ferry_pg::PgUrl,
    topic: &str,
) -> Made {
    let jobs = serde_json::json!({"jobs": [{"command": "bin/trim-sessions", "every": "10m"}]});
    let out = plan(app, REHEARSAL_PROCFILE, Some(&jobs));
    let major = crate::bed_var("FERRY_BED_TARGET_VERSION");
    let zone = zone.trim_start_matches("/hostedzone/");
    let stack = deploy(
        aws,
        &out.join("destination.yaml"),
        &format!("{app}-aws"),
        &[
            ("HostedZoneId", zone),
            ("DomainName", domain),
            ("DatabaseEngineVersion", &major),
        ],
    )
    .await;
    let login = serde_json::json!({
        "username": target.user().unwrap_or_default(),
        "password": target.expose_password().unwrap_or_default(),
    });
    crate::aws::rotate_secret(
        aws,
        stack.output("DatabaseMasterSecretArn"),
        &login.to_string(),
    )
    .await;
    let ferry = format!("{app}-ferry");
    outputs_only_stack(aws, &ferry, &serde_json::json!({"ApprovalTopicArn": topic})).await;
    let spec = out.join("migration.json");
    let (code, printed) = fill_spec(&spec, &[&stack.name, &ferry]);
    assert_eq!(
        code,
        Some(3),
        "ferry destination leaves only the approvers: {printed}"
    );
    let filled = serde_json::from_str(&std::fs::read_to_string(&spec).expect("spec"))
        .expect("migration.json");
    Made {
        stack,
        filled,
        printed,
    }
}
