//! `ferry rehearse`: the command-line side of `ferry_rehearse`.

use std::path::PathBuf;

use clap::ValueEnum;
use ferry_core::spec::CaptureMode;
use ferry_pg::PgUrl;

use crate::{
    Output,
    fail::{Blocked, Code, Usage},
};

pub const HELP: &str = "\
The source is a copy of production: a Heroku fork (heroku addons:create heroku-postgresql:<plan>
--fork DATABASE_URL, then heroku config:get <FORK>_URL), a restored snapshot, any PostgreSQL
URL. Nothing of yours is written there: Ferry installs its capture objects and one table of
its own (ferry_rehearsal.load, for the synthetic load), freezes the URL's role for a moment per
timed cutover, and removes all of it at the end. A source with other sessions or writes (a
live primary) is refused unless --i-know-this-is-production.

The target is a scratch PostgreSQL started for the run (initdb from --pg-bin, FERRY_PG_BIN or
/usr/lib/postgresql/<major>/bin, as new as the source or newer) and removed after it, or an
empty database you name with --target-url.

Examples:
  export FERRY_REHEARSE_SOURCE_URL='postgres://u:p@fork-host:5432/db?sslmode=require'
  ferry rehearse
  ferry rehearse --load 300 --freezes 5 --production-gb 120 --out rehearsal.md
  ferry rehearse --target-url \"$SCRATCH_URL\" --output json > rehearsal.json

Exit: 0 rehearsed, 3 blockers or a live source (the report says what to fix), 1 a failure
(including any difference between source and target).";

/// Capture modes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureArg {
    /// Logical decoding where the source allows a slot, triggers otherwise.
    Auto,
    /// Triggers and a change log (stock Heroku Postgres).
    Trigger,
    /// A logical replication slot.
    Logical,
}

/// `rehearse` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The copy of production (prefer the environment variable: a URL on the command line is
    /// visible to other users of the machine).
    #[arg(long, env = "FERRY_REHEARSE_SOURCE_URL", hide_env_values = true)]
    source_url: String,
    /// An empty database to copy into, instead of a scratch server.
    #[arg(long, env = "FERRY_REHEARSE_TARGET_URL", hide_env_values = true)]
    target_url: Option<String>,
    /// Folder with initdb, pg_ctl, pg_dump and psql.
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// Capture mode.
    #[arg(long, value_enum, default_value = "auto")]
    capture: CaptureArg,
    /// Parallel copy sessions (1–64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallelism: u32,
    /// Hold the copy to this many MB per second read from the source (the spec's
    /// replication.max_copy_mb_per_second; 1–10000); the report shows the app's write latency
    /// during the copy, so run it with and without.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_copy_mb_per_second: Option<u32>,
    /// Synthetic writes per second during the copy, catch-up and freezes (0: none; at most
    /// 20000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=20_000))]
    load: u32,
    /// Seconds to stream under load after the catch-up, measuring lag (1–3600).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    stream_seconds: u64,
    /// Cutover freezes to time (1–20).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    freezes: u32,
    /// The source is a live primary and you accept a few freezes of its writes.
    #[arg(long)]
    i_know_this_is_production: bool,
    /// Keep the scratch server and its data afterwards (its folder is in the report).
    #[arg(long)]
    keep_target: bool,
    /// Production's size in GB, when the source is a smaller subset (for the projection).
    #[arg(long)]
    production_gb: Option<f64>,
    /// Production's write rate (for the catch-up projection; default: the load's).
    #[arg(long)]
    production_writes_per_second: Option<f64>,
    /// Also write the report (markdown, or JSON with --output json) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

fn url(flag: &str, text: &str) -> anyhow::Result<PgUrl> {
    PgUrl::parse(text).map_err(|e| Usage(format!("{flag}: {e}")).into())
}

fn options(a: &Args) -> anyhow::Result<ferry_rehearse::Options> {
    let production_bytes = match a.production_gb {
        Some(gb) if gb.is_finite() && gb > 0.0 && gb <= 1_000_000.0 => Some((gb * 1e9) as u64),
        Some(gb) => {
            return Err(Usage(format!(
                "--production-gb {gb}: give production's size in GB, more than 0"
            ))
            .into());
        }
        None => None,
    };
    if let Some(w) = a.production_writes_per_second
        && !(w.is_finite() && w >= 0.0)
    {
        return Err(Usage(format!(
            "--production-writes-per-second {w}: give a rate of 0 or more"
        ))
        .into());
    }
    Ok(ferry_rehearse::Options {
        source: url("--source-url (FERRY_REHEARSE_SOURCE_URL)", &a.source_url)?,
        target: a
            .target_url
            .as_deref()
            .map(|t| url("--target-url (FERRY_REHEARSE_TARGET_URL)", t))
            .transpose()?,
        pg_bin: a.pg_bin.clone(),
        capture: match a.capture {
            CaptureArg::Auto => CaptureMode::Auto,
            CaptureArg::Trigger => CaptureMode::Trigger,
            CaptureArg::Logical => CaptureMode::Logical,
        },
        parallelism: a.parallelism,
        max_copy_mb_per_second: a.max_copy_mb_per_second,
        load_per_second: a.load,
        stream_seconds: a.stream_seconds,
        freezes: a.freezes,
        production: a.i_know_this_is_production,
        keep_target: a.keep_target,
        production_bytes,
        production_writes_per_second: a.production_writes_per_second,
    })
}

/// `ferry rehearse`.
pub async fn run(a: Args) -> anyhow::Result<Code> {
    let opts = options(&a)?;
    eprintln!(
        "ferry rehearse: {} → {} (this takes a while: the whole copy runs)",
        opts.source.redacted(),
        opts.target
            .as_ref()
            .map_or("a scratch PostgreSQL".to_string(), |t| t
                .redacted()
                .to_string())
    );
    let report = ferry_rehearse::run(&opts).await.map_err(|e| {
        if e.is_blocked() {
            anyhow::Error::new(Blocked(e.to_string()))
        } else {
            anyhow::Error::new(e)
        }
    })?;
    let text = match a.output {
        Output::Json => serde_json::to_string_pretty(&report)?,
        Output::Text => report.markdown(),
    };
    println!("{text}");
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
    }
    Ok(if report.needs_a_person() {
        Code::Blocked
    } else if report.failed() {
        Code::Failed
    } else {
        Code::Done
    })
}
