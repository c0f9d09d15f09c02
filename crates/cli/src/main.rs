//! `ferry`: the operator's command line: `validate` a spec, print its JSON `schema`, and
//! `plan` a migration from a Heroku app, and `start` / `status` / `approve` / `reject` migrations against AWS (or the local emulator
//! through `AWS_ENDPOINT_URL`).

mod ops;
mod plan;

use std::{path::Path, process::ExitCode};

use anyhow::Context;

const USAGE: &str = "\
usage:
  ferry validate <migration.json>        check a migration spec; prints every problem, exits 1 if any
  ferry schema                           print the JSON Schema of the migration spec
  ferry plan <app> [--procfile FILE] [--prices FILE] [--arch x86_64|arm64] [--out DIR]
                                         inventory of a Heroku app mapped to AWS, monthly cost
                                         of both sides, blockers, and a migration.json to start
                                         from (HEROKU_API_KEY; FERRY_PLAN_DATABASE_URL overrides
                                         the app's DATABASE_URL); writes plan.md, plan.json,
                                         migration.json to DIR (ferry-plan-<app>)
  ferry start <migration.json>           validate, then start the state machine with it
                                         (FERRY_STATE_MACHINE_ARN)
  ferry status <migration-id>            phase, copy progress, lag, traffic, gates, freeze window
                                         (FERRY_STATE_TABLE)
  ferry abort <migration-id>             roll the migration back now (audited with your IAM identity)
  ferry report <migration-id>            the audit log as a markdown timeline (FERRY_STATE_TABLE)
  ferry approve <migration-id> --gate <shift_traffic|cutover|finish>
  ferry reject <migration-id> --gate <shift_traffic|cutover|finish>
                                         decide a gate as your IAM identity (the spec's
                                         approvals.approvers must list your user or role ARN)
";

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn print_ok(result: anyhow::Result<String>) -> anyhow::Result<ExitCode> {
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

/// The arguments as text; an argument that is not UTF-8 (a file name with other bytes) is
/// refused by its position, shown lossily, instead of panicking.
fn text_args() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|raw| {
                format!(
                    "argument {} ({:?}) is not valid UTF-8; rename the file or pass a path without those bytes",
                    i + 1,
                    raw.to_string_lossy()
                )
            })
        })
        .collect()
}

fn main() -> ExitCode {
    let args = match text_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferry: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["validate", path] => validate(Path::new(path)),
        ["schema"] => schema(),
        ["plan", ref rest @ ..] => plan::parse(rest)
            .and_then(|a| runtime().and_then(|rt| print_ok(rt.block_on(plan::run(a))))),
        ["start", path] => {
            runtime().and_then(|rt| print_ok(rt.block_on(ops::start(Path::new(path)))))
        }
        ["status", id] => runtime().and_then(|rt| print_ok(rt.block_on(ops::status(id)))),
        ["report", id] => runtime().and_then(|rt| print_ok(rt.block_on(ops::report(id)))),
        ["abort", id] => runtime().and_then(|rt| print_ok(rt.block_on(ops::abort(id)))),
        [verb @ ("approve" | "reject"), id, "--gate", gate] => {
            runtime().and_then(|rt| print_ok(rt.block_on(ops::decide(id, gate, verb == "approve"))))
        }
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprint!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("ferry: {e:#}");
        ExitCode::from(2)
    })
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read migration spec {}", path.display()))?;
    match ferry_core::spec::parse(&text) {
        Ok(spec) => {
            println!(
                "{}: valid (migration {}, app {}, capture {}, steps {:?})",
                path.display(),
                spec.migration_id,
                spec.heroku.app,
                serde_json::to_string(&spec.replication.capture)?,
                spec.traffic.steps
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            eprint!("{}: {problems}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn schema() -> anyhow::Result<ExitCode> {
    let text = serde_json::to_string_pretty(&ferry_core::spec::json_schema())?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
