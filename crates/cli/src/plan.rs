//! `ferry plan <app>`: reads the app from the Heroku Platform API and its database, and
//! writes plan.md, plan.json, migration.json and destination.yaml.

use std::path::PathBuf;

use anyhow::Context;
use ferry_plan::{Options, Prices, inventory};

pub const HELP: &str = "\
Reads the app from the Heroku Platform API (HEROKU_API_KEY: heroku auth:token) and its database
(FERRY_PLAN_DATABASE_URL overrides the app's DATABASE_URL, for a fork); writes plan.md,
plan.json, migration.json and destination.yaml (the app's AWS side as a CloudFormation
template) to --out (ferry-plan-<app>). Deploy destination.yaml, then `ferry destination`
fills migration.json from its outputs.

Examples:
  ferry plan acme --procfile Procfile
  ferry plan acme --arch arm64 --out plan/ --output json | jq .blockers

Exit: 0 planned (blockers for the migration itself are listed in the plan, each with its fix),
1 a call failed, 2 a wrong argument or no HEROKU_API_KEY.";

/// CPU architecture of the AWS fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// What Heroku builds.
    #[value(name = "x86_64")]
    X86_64,
    /// Graviton, cheaper; the image must be built for it.
    Arm64,
}

/// `ferry plan` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Heroku app's name.
    app: String,
    /// The app's Procfile (process types and commands).
    #[arg(long)]
    procfile: Option<PathBuf>,
    /// A price table overriding the built-in one (JSON).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Heroku Scheduler's jobs, copied from its dashboard (JSON: {"jobs": [{"command",
    /// "every": "10m|1h|1d", "at": ":MM|HH:MM", "size"}]}): EventBridge schedules in
    /// destination.yaml, created disabled.
    #[arg(long)]
    scheduler: Option<PathBuf>,
    /// The AWS fleet's CPU architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: Arch,
    /// Where to write the files.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: crate::Output,
}

/// Runs the plan, writes its files and prints the markdown (or plan.json with --output json).
pub async fn run(args: Args) -> anyhow::Result<crate::fail::Code> {
    let token = std::env::var("HEROKU_API_KEY").map_err(|_| {
        crate::fail::Usage(
            "set HEROKU_API_KEY to a Heroku API token that can read the app (heroku auth:token)"
                .into(),
        )
    })?;
    let base = std::env::var("HEROKU_API_URL")
        .unwrap_or_else(|_| ferry_heroku::DEFAULT_BASE_URL.to_string());
    let heroku = ferry_heroku::HerokuClient::new(&base, token)?;
    let inputs = Inputs::read(&args)?;
    let database_url = std::env::var("FERRY_PLAN_DATABASE_URL").ok();
    let inv = inventory::collect(
        &heroku,
        &args.app,
        inputs.procfile.as_ref(),
        database_url.as_deref(),
    )
    .await?;
    let plan = ferry_plan::build(
        inv,
        &inputs.prices,
        &Options {
            architecture: match args.arch {
                Arch::X86_64 => "x86_64".into(),
                Arch::Arm64 => "arm64".into(),
            },
            today: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        },
    );
    let markdown = ferry_plan::render::markdown(&plan);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("ferry-plan-{}", args.app)));
    let written = write_files(&out, &plan, &inputs, &markdown)?;
    if args.output == crate::Output::Json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!(
            "{markdown}\n---\n{} blockers, {} warnings, {} fields to fill in; wrote {}",
            plan.blockers.len(),
            plan.warnings.len(),
            plan.fill_in.len(),
            written.join(", ")
        );
    }
    // The plan is written: its blockers are for the migration, listed with their fixes.
    Ok(crate::fail::Code::Done)
}

/// What the plan reads besides the Heroku app: the price table, the Procfile, Scheduler's jobs.
struct Inputs {
    prices: Prices,
    procfile: Option<std::collections::BTreeMap<String, String>>,
    jobs: Vec<ferry_plan::scheduler::Job>,
}

impl Inputs {
    fn read(args: &Args) -> anyhow::Result<Self> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path).with_context(|| format!("read {what} {}", path.display()))
        };
        let prices = match &args.prices {
            Some(path) => {
                Prices::with_override(&read(path, "price table")?, &path.display().to_string())?
            }
            None => Prices::built_in(),
        };
        let procfile = match &args.procfile {
            Some(path) => Some(inventory::parse_procfile(
                &read(path, "Procfile")?,
                &path.display().to_string(),
            )?),
            None => None,
        };
        let jobs = match &args.scheduler {
            Some(path) => ferry_plan::scheduler::parse(
                &read(path, "Scheduler jobs")?,
                &path.display().to_string(),
            )
            .map_err(|e| crate::fail::Usage(e.to_string()))?,
            None => Vec::new(),
        };
        Ok(Self {
            prices,
            procfile,
            jobs,
        })
    }
}

/// Writes plan.md, plan.json, migration.json and destination.yaml into `out`; their paths.
fn write_files(
    out: &std::path::Path,
    plan: &ferry_plan::Plan,
    inputs: &Inputs,
    markdown: &str,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let config_prefix = plan.migration["config_vars"]["ssm_prefix"]
        .as_str()
        .unwrap_or("/config/")
        .to_string();
    let destination = ferry_plan::destination::render(&ferry_plan::destination::Input {
        inventory: &plan.inventory,
        prices: &inputs.prices,
        architecture: &plan.prices.architecture,
        config_prefix: &config_prefix,
        jobs: &inputs.jobs,
    });
    let files = [
        ("plan.md", markdown.to_string()),
        ("plan.json", serde_json::to_string_pretty(plan)?),
        (
            "migration.json",
            serde_json::to_string_pretty(&plan.migration)?,
        ),
        ("destination.yaml", destination),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}
