//! `ferry`: the operator's command line. `rehearse` on a copy of production, `validate` and
//! `plan` a migration, `preflight` it, `start` it, follow it (`status --watch`, `wait`, `list`,
//! `report`), decide its gates (`approve` / `reject`), hold its apply (`pause` / `resume`) and
//! `abort` it — against AWS, or the local emulator through `AWS_ENDPOINT_URL`.

mod destination;
mod fail;
mod list;
mod ops;
mod plan;
mod preflight;
mod rehearse;
mod session;
mod status;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::fail::Code;

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  failed: a call failed, or the migration failed or rolled back
  2  usage: a wrong argument or a missing setting (FERRY_STATE_TABLE, FERRY_STATE_MACHINE_ARN)
  3  blocked: a person must act (an invalid spec, preflight blockers, a live source, a paused worker)
  4  timed out (wait)

Settings: FERRY_STATE_TABLE and FERRY_STATE_MACHINE_ARN come from the stack's outputs. AWS
credentials come from the usual chain: environment, profiles (AWS_PROFILE) including IAM
Identity Center (aws sso login) and credential_process, and instance or container roles.";

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines and tables for people.
    #[default]
    Text,
    /// One JSON document on stdout (errors stay on stderr).
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Move a Heroku app to AWS with no failed request, no lost write and a lossless rollback.",
    after_help = EXIT_CODES,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rehearse the move on a copy of production: preflight, schema, copy, catch-up under load,
    /// verification and cutover freezes, timed, with a projection for the real run.
    #[command(after_help = rehearse::HELP)]
    Rehearse(rehearse::Args),
    /// Check a migration spec; prints every problem (exit 3 if any).
    #[command(
        after_help = "Examples:\n  ferry validate migration.json\n  ferry validate migration.json --output json"
    )]
    Validate {
        /// The migration spec (JSON).
        spec: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the JSON Schema of the migration spec.
    #[command(after_help = "Example:\n  ferry schema > migration.schema.json")]
    Schema,
    /// Inventory a Heroku app, map it to AWS with both sides' monthly cost, and write a
    /// migration.json to start from (HEROKU_API_KEY).
    #[command(after_help = plan::HELP)]
    Plan(plan::Args),
    /// Fill migration.json from the outputs of the stack deployed from destination.yaml.
    #[command(after_help = destination::HELP)]
    Destination(destination::Args),
    /// Check a spec's source and target databases (and the app lock) without starting anything.
    #[command(after_help = preflight::HELP)]
    Preflight {
        /// The migration spec (JSON).
        spec: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// What a preflight finding's code means and how to fix it; every code without one.
    #[command(
        after_help = "Examples:\n  ferry explain no_primary_key\n  ferry explain            # every code, one line each"
    )]
    Explain {
        /// A finding's code, as reports print it (`no_primary_key`).
        code: Option<String>,
    },
    /// Validate a spec, then start the state machine with it (FERRY_STATE_MACHINE_ARN).
    #[command(after_help = "Example:\n  ferry start migration.json   # prints the execution ARN")]
    Start {
        /// The migration spec (JSON).
        spec: PathBuf,
    },
    /// Where a migration stands: phase, execution state, copy by bytes with ETA, lag, pause
    /// and error, traffic, gates, cutover windows.
    #[command(after_help = status::STATUS_HELP)]
    Status(status::StatusArgs),
    /// Wait until a migration reaches a phase (for CI); exit 1 if it fails or rolls back
    /// first, 3 if its worker is blocked, 4 on --timeout.
    #[command(after_help = status::WAIT_HELP)]
    Wait(status::WaitArgs),
    /// The migrations in the state table, newest first.
    #[command(
        after_help = "Examples:\n  ferry list\n  ferry list --output json | jq '.[] | select(.phase == \"rollback_window\")'"
    )]
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// The audit log as a markdown timeline (or JSON), with the outcome.
    #[command(
        after_help = "Examples:\n  ferry report acme-2026-12 > report.md\n  ferry report acme-2026-12 --output json"
    )]
    Report {
        /// The migration id.
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Approve a waiting gate as your IAM identity (listed in approvals.approvers).
    #[command(after_help = "Example:\n  ferry approve acme-2026-12 --gate cutover")]
    Approve(ops::GateArgs),
    /// Reject a waiting gate as your IAM identity: the migration rolls back.
    #[command(after_help = "Example:\n  ferry reject acme-2026-12 --gate shift_traffic")]
    Reject(ops::GateArgs),
    /// Hold the worker's apply (capture goes on); audited, approvers only.
    #[command(after_help = "Example:\n  ferry pause acme-2026-12   # then apply DDL on both sides")]
    Pause {
        /// The migration id.
        id: String,
    },
    /// Let the worker apply again; audited, approvers only. After a schema change, apply the
    /// same DDL on the target first (or pass --force once you have checked).
    #[command(
        after_help = "Examples:\n  ferry resume acme-2026-12\n  ferry resume acme-2026-12 --force   # the schemas still differ and you checked why"
    )]
    Resume {
        /// The migration id.
        id: String,
        /// Resume even though the worker still sees the schemas differ.
        #[arg(long)]
        force: bool,
    },
    /// Roll the migration back now (audited with your IAM identity).
    #[command(after_help = "Example:\n  ferry abort acme-2026-12")]
    Abort {
        /// The migration id.
        id: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help and --version print and exit 0; a usage error prints and exits 2.
        Err(e) => e.exit(),
    };
    let result = runtime().and_then(|rt| rt.block_on(dispatch(cli.command)));
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("ferry: {e:#}");
            fail::code_of(&e).into()
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<Code> {
    match command {
        Command::Rehearse(a) => rehearse::run(a).await,
        Command::Validate { spec, output } => ops::validate(&spec, output),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&ferry_core::spec::json_schema())?
            );
            Ok(Code::Done)
        }
        Command::Plan(a) => plan::run(a).await,
        Command::Destination(a) => destination::run(a).await,
        Command::Preflight { spec, output } => preflight::run(&spec, output).await,
        Command::Explain { code } => preflight::explain(code.as_deref()),
        Command::Start { spec } => ops::start(&spec).await,
        Command::Status(a) => status::status(a).await,
        Command::Wait(a) => status::wait(a).await,
        Command::List { output } => list::run(output).await,
        Command::Report { id, output } => ops::report(&id, output).await,
        Command::Approve(a) => ops::decide(&a, true).await,
        Command::Reject(a) => ops::decide(&a, false).await,
        Command::Pause { id } => ops::command(&id, ops::Hold::Pause).await,
        Command::Resume { id, force } => ops::command(&id, ops::Hold::Resume { force }).await,
        Command::Abort { id } => ops::abort(&id).await,
    }
}

/// Parses `90s`, `15m`, `6h`, `1d` (or plain seconds) for --timeout and --interval.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write 90s, 15m, 6h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("must be more than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_durations_parse() {
        Cli::command().debug_assert();
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("6h"), Ok(Duration::from_secs(21_600)));
        assert_eq!(duration("45"), Ok(Duration::from_secs(45)));
        assert!(duration("0").is_err());
        assert!(duration("5 weeks").is_err());
        assert!(duration("h").is_err());
    }
}
