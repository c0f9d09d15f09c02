//! `ferry`: the operator's command line. Today: `validate` a migration spec and print its
//! JSON `schema`.

use std::{path::Path, process::ExitCode};

use anyhow::Context;

const USAGE: &str = "\
usage:
  ferry validate <migration.json>   check a migration spec; prints every problem, exits 1 if any
  ferry schema                      print the JSON Schema of the migration spec
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["validate", path] => validate(Path::new(path)),
        ["schema"] => schema(),
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
