//! `destination.yaml`: the app's AWS side as a CloudFormation template, written by
//! `ferry plan` from the same inventory and the same sizes the plan prices
//! ([`crate::sizing`]). One ECR repository for the app's Cloud Native Buildpacks image; one
//! ECS Fargate service per process type (web behind an HTTPS load balancer); RDS for
//! PostgreSQL and, when the app has a Key-Value Store, ElastiCache set up for Ferry's sync;
//! security groups admitting only load balancer → app → data, plus Ferry's own tasks; log
//! groups with retention; the alarms the canary's health gate reads; the team's VPC, or a new
//! one. Its outputs fill `migration.json` (see [`spec_from_outputs`]).

mod compute;
mod data;
mod edge;
mod network;
mod schedules;
pub mod yaml;

use serde_json::{Map, Value, json};

use crate::{inventory::Inventory, prices::Prices};

/// What the template is made from.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The app as read from Heroku.
    pub inventory: &'a Inventory,
    /// The price table (its sizes).
    pub prices: &'a Prices,
    /// `x86_64` or `arm64`.
    pub architecture: &'a str,
    /// The SSM prefix config sync fills (`config_vars.ssm_prefix` of migration.json).
    pub config_prefix: &'a str,
    /// Heroku Scheduler's jobs (`ferry plan --scheduler`), if given.
    pub jobs: &'a [crate::scheduler::Job],
}

/// A template being written: resources, parameters, conditions, outputs.
#[derive(Debug, Default)]
pub struct Template {
    parameters: Map<String, Value>,
    conditions: Map<String, Value>,
    resources: Map<String, Value>,
    outputs: Map<String, Value>,
}

impl Template {
    fn parameter(&mut self, name: &str, spec: Value) {
        self.parameters.insert(name.into(), spec);
    }

    fn condition(&mut self, name: &str, expr: Value) {
        self.conditions.insert(name.into(), expr);
    }

    fn resource(&mut self, name: &str, resource: Value) {
        self.resources.insert(name.into(), resource);
    }

    fn output(&mut self, name: &str, description: &str, value: Value) {
        self.outputs.insert(
            name.into(),
            json!({ "Description": description, "Value": value }),
        );
    }

    /// Whether a resource of that logical id exists.
    pub fn has(&self, name: &str) -> bool {
        self.resources.contains_key(name)
    }

    /// The template document.
    pub fn to_value(&self, description: &str) -> Value {
        let mut doc = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": description,
            "Parameters": self.parameters,
            "Resources": self.resources,
            "Outputs": self.outputs,
        });
        if !self.conditions.is_empty() {
            doc["Conditions"] = Value::Object(self.conditions.clone());
        }
        // The subnet lists default to empty (a new VPC is made then); cfn-lint resolves those
        // defaults inside the Fn::If branch that only a given VPC takes, and warns (W1030).
        doc["Metadata"] = json!({"cfn-lint": {"config": {"ignore_checks": ["W1030"]}}});
        doc
    }
}

/// `{"Ref": name}`.
fn r(name: &str) -> Value {
    json!({ "Ref": name })
}

/// `{"Fn::GetAtt": [name, attr]}`.
fn att(name: &str, attr: &str) -> Value {
    json!({ "Fn::GetAtt": [name, attr] })
}

/// `{"Fn::Sub": text}`.
fn sub(text: &str) -> Value {
    json!({ "Fn::Sub": text })
}

/// A checkov skip with its reason, as resource metadata.
fn skips(list: &[(&str, &str)]) -> Value {
    json!({ "checkov": { "skip": list.iter().map(|(id, why)| json!({"id": id, "comment": why})).collect::<Vec<_>>() } })
}

/// A CloudFormation logical id for a process type (`worker_2` → `Worker2`).
pub fn logical(process_type: &str) -> String {
    process_type
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The whole template.
pub fn template(input: &Input) -> Template {
    let mut t = Template::default();
    network::network(&mut t);
    log_retention(&mut t);
    edge::security_groups(&mut t, input);
    compute::registry_and_cluster(&mut t, input);
    compute::processes(&mut t, input);
    edge::load_balancer(&mut t, input);
    data::database(&mut t, input);
    data::cache(&mut t, input);
    t
}

/// The template as YAML, with its description.
pub fn render(input: &Input) -> String {
    let doc = template(input).to_value(&format!(
        "{} on AWS: written by ferry plan from the Heroku app (process types, dyno sizes, formation, add-ons). Deploy it, push the image, then run ferry destination migration.json --stack <this stack> to fill migration.json.",
        input.inventory.app.name
    ));
    yaml::to_yaml(&doc)
}

fn log_retention(t: &mut Template) {
    t.parameter(
        "LogRetentionDays",
        json!({"Type": "Number", "Default": 30, "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653], "Description": "How long the process types' logs are kept."}),
    );
}

/// Where each output of the destination stack (and of Ferry's own) goes in `migration.json`.
pub const OUTPUT_FIELDS: &[(&str, &[&str])] = &[
    ("DatabaseInstanceId", &["target", "rds_instance_id"]),
    ("DatabaseMasterSecretArn", &["target", "password_secret"]),
    ("LoadBalancerDnsName", &["traffic", "aws_target"]),
    ("HealthUrl", &["traffic", "health", "url"]),
    ("HostedZoneId", &["traffic", "hosted_zone_id"]),
    // Ferry's own stack.
    ("ApprovalTopicArn", &["approvals", "sns_topic_arn"]),
];

/// Fills `migration.json` from the deployed stack's outputs (`HealthAlarmNames` into
/// `traffic.health.alarm_names`); returns the fields it filled, by path.
pub fn spec_from_outputs(
    spec: &mut Value,
    outputs: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut filled = Vec::new();
    for (output, path) in OUTPUT_FIELDS {
        let Some(value) = outputs.get(*output) else {
            continue;
        };
        let mut at = &mut *spec;
        for key in &path[..path.len() - 1] {
            if !at.get(*key).is_some_and(Value::is_object) {
                at[*key] = json!({});
            }
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = json!(value);
        filled.push(path.join("."));
    }
    if let Some(names) = outputs.get("HealthAlarmNames") {
        let names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
        if !spec["traffic"]["health"].is_object() {
            spec["traffic"]["health"] = json!({});
        }
        spec["traffic"]["health"]["alarm_names"] = json!(names);
        filled.push("traffic.health.alarm_names".into());
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stacks_outputs_fill_the_fields_a_person_would_have_filled() {
        let mut spec = json!({
            "target": {"rds_instance_id": "FILL-IN: x", "database_url_param": "/p"},
            "traffic": {"aws_target": "FILL-IN: y", "health": {"url": "FILL-IN: z"}},
        });
        let outputs = [
            ("DatabaseInstanceId", "acme-db"),
            (
                "DatabaseMasterSecretArn",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1",
            ),
            ("LoadBalancerDnsName", "acme-1.us-east-1.elb.amazonaws.com"),
            ("HealthUrl", "https://app.acme.example/"),
            ("HostedZoneId", "Z123"),
            ("HealthAlarmNames", "acme-5xx,acme-unhealthy"),
            ("Unrelated", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let filled = spec_from_outputs(&mut spec, &outputs);
        assert_eq!(filled.len(), 6, "{filled:?}");
        assert_eq!(spec["target"]["rds_instance_id"], "acme-db");
        assert_eq!(spec["target"]["database_url_param"], "/p");
        assert_eq!(
            spec["traffic"]["health"]["alarm_names"],
            json!(["acme-5xx", "acme-unhealthy"])
        );
        assert!(!spec.to_string().contains("FILL-IN"), "{spec}");
    }

    #[test]
    fn process_types_become_logical_ids() {
        assert_eq!(logical("web"), "Web");
        assert_eq!(logical("worker_2"), "Worker2");
        assert_eq!(logical("high-priority"), "HighPriority");
    }
}
