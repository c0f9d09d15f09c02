//! `ferry destination`: fills migration.json from the deployed destination stack's outputs
//! (`ferry plan` wrote both), so only what a person must decide is left.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::fail::{Blocked, Code, Usage};

pub const HELP: &str = "\
Reads the outputs of the stack deployed from destination.yaml (DescribeStacks, or a file saved
from `aws cloudformation describe-stacks`) and writes them into migration.json: the RDS
instance and its managed password secret, the load balancer's name, the health URL and alarms,
the hosted zone. Lists what is still to fill in (the approvers, the approval topic).

Examples:
  ferry destination ferry-plan-acme/migration.json --stack acme-destination --stack ferry
  aws cloudformation describe-stacks --stack-name acme-destination > outputs.json
  ferry destination ferry-plan-acme/migration.json --outputs outputs.json

Exit: 0 nothing left to fill in, 3 fields left (listed), 1 a call failed, 2 a wrong argument.";

/// `ferry destination` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The migration.json ferry plan wrote (updated in place).
    spec: PathBuf,
    /// The deployed stack's name (read with DescribeStacks); again for Ferry's own stack,
    /// whose ApprovalTopicArn fills approvals.sns_topic_arn.
    #[arg(long, conflicts_with = "outputs", required_unless_present = "outputs")]
    stack: Vec<String>,
    /// `aws cloudformation describe-stacks` output saved to a file (or its Stacks[0].Outputs).
    #[arg(long)]
    outputs: Option<PathBuf>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<Code> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("read {}", args.spec.display()))?;
    let mut spec: Value = serde_json::from_str(&text)
        .map_err(|e| Usage(format!("{} is not JSON: {e}", args.spec.display())))?;
    let mut outputs = BTreeMap::new();
    for stack in &args.stack {
        outputs.extend(stack_outputs(stack).await?);
    }
    if let Some(path) = &args.outputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        outputs.extend(
            outputs_from_json(&text).map_err(|e| Usage(format!("{}: {e}", path.display())))?,
        );
    }
    let filled = ferry_plan::destination::spec_from_outputs(&mut spec, &outputs);
    if filled.is_empty() {
        return Err(Usage(format!(
            "the stack has none of the outputs destination.yaml declares ({}); is it the stack deployed from destination.yaml?",
            ferry_plan::destination::OUTPUT_FIELDS
                .iter()
                .map(|(o, _)| *o)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let tmp = args.spec.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&spec)? + "\n")
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.spec)
        .with_context(|| format!("replace {}", args.spec.display()))?;
    println!("filled from the stack: {}", filled.join(", "));
    let left = fill_ins(&spec, "$");
    if left.is_empty() {
        println!(
            "nothing left to fill in; next: ferry validate {}",
            args.spec.display()
        );
        return Ok(Code::Done);
    }
    Err(Blocked(format!(
        "still to fill in:\n{}",
        left.iter()
            .map(|(path, what)| format!("  {path}: {what}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
    .into())
}

/// The stack's outputs, by key.
async fn stack_outputs(stack: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let aws = crate::session::aws().await;
    let out = aws_sdk_cloudformation::Client::new(&aws)
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "DescribeStacks {stack}: {}",
                aws_sdk_cloudformation::error::DisplayErrorContext(e)
            )
        })?;
    let s = out
        .stacks()
        .first()
        .ok_or_else(|| Usage(format!("no stack named {stack}")))?;
    Ok(s.outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect())
}

/// Outputs from `describe-stacks` JSON (`{"Stacks": [{"Outputs": [...]}]}`) or its
/// `Stacks[0].Outputs` list.
fn outputs_from_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = match &v {
        Value::Array(_) => &v,
        _ => &v["Stacks"][0]["Outputs"],
    };
    let list = list.as_array().ok_or(
        "no Outputs: save `aws cloudformation describe-stacks --stack-name <stack>` or its Stacks[0].Outputs",
    )?;
    Ok(list
        .iter()
        .filter_map(|o| {
            Some((
                o["OutputKey"].as_str()?.to_string(),
                o["OutputValue"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The `FILL-IN: …` placeholders left, by path.
fn fill_ins(v: &Value, path: &str) -> Vec<(String, String)> {
    match v {
        Value::String(s) => s
            .strip_prefix("FILL-IN: ")
            .map(|what| vec![(path.to_string(), what.to_string())])
            .unwrap_or_default(),
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| fill_ins(v, &ferry_core::problems::child(path, k)))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .flat_map(|(i, v)| fill_ins(v, &ferry_core::problems::index(path, i)))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_read_from_either_form_of_describe_stacks() {
        let full = r#"{"Stacks": [{"StackName": "s", "Outputs": [{"OutputKey": "HealthUrl", "OutputValue": "https://a/"}]}]}"#;
        let list = r#"[{"OutputKey": "HealthUrl", "OutputValue": "https://a/"}]"#;
        for text in [full, list] {
            assert_eq!(
                outputs_from_json(text).expect("outputs")["HealthUrl"],
                "https://a/"
            );
        }
        assert!(outputs_from_json(r#"{"Stacks": []}"#).is_err());
    }

    #[test]
    fn fill_ins_are_listed_by_their_path() {
        let v = serde_json::json!({"approvals": {"approvers": ["FILL-IN: who approves"], "sns_topic_arn": "arn"}});
        assert_eq!(
            fill_ins(&v, "$"),
            vec![(
                "approvals.approvers[0]".to_string(),
                "who approves".to_string()
            )]
        );
    }
}
