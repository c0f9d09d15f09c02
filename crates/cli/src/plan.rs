//! `ferry plan <app>`: reads the app from the Heroku Platform API and its database, and
//! writes plan.md, plan.json and migration.json.

use std::path::PathBuf;

use anyhow::{Context, bail};
use ferry_plan::{Options, Prices, inventory};

/// The parsed command line of `ferry plan`.
#[derive(Debug)]
pub struct Args {
    app: String,
    procfile: Option<PathBuf>,
    prices: Option<PathBuf>,
    arch: String,
    out: Option<PathBuf>,
}

/// Parses `<app> [--procfile FILE] [--prices FILE] [--arch x86_64|arm64] [--out DIR]`.
pub fn parse(args: &[&str]) -> anyhow::Result<Args> {
    let mut app = None;
    let mut parsed = Args {
        app: String::new(),
        procfile: None,
        prices: None,
        arch: "x86_64".into(),
        out: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .map(|v| v.to_string())
                .with_context(|| format!("{flag} needs a value"))
        };
        match *arg {
            "--procfile" => parsed.procfile = Some(value("--procfile")?.into()),
            "--prices" => parsed.prices = Some(value("--prices")?.into()),
            "--out" => parsed.out = Some(value("--out")?.into()),
            "--arch" => {
                let v = value("--arch")?;
                if v != "x86_64" && v != "arm64" {
                    bail!(
                        "--arch {v:?}: use x86_64 (what Heroku builds) or arm64 (Graviton, cheaper; the image must be built for it)"
                    );
                }
                parsed.arch = v;
            }
            flag if flag.starts_with("--") => bail!("unknown option {flag} for ferry plan"),
            name if app.is_none() => app = Some(name.to_string()),
            extra => bail!("unexpected argument {extra:?}: ferry plan takes one app name"),
        }
    }
    parsed.app = app.context("ferry plan needs the Heroku app's name")?;
    Ok(parsed)
}

/// Runs the plan and writes its files; returns the markdown and a line per file written.
pub async fn run(args: Args) -> anyhow::Result<String> {
    let token = std::env::var("HEROKU_API_KEY").context(
        "set HEROKU_API_KEY to a Heroku API token that can read the app (heroku auth:token)",
    )?;
    let base = std::env::var("HEROKU_API_URL")
        .unwrap_or_else(|_| ferry_heroku::DEFAULT_BASE_URL.to_string());
    let heroku = ferry_heroku::HerokuClient::new(&base, token)?;
    let prices = match &args.prices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read price table {}", path.display()))?;
            Prices::with_override(&text, &path.display().to_string())?
        }
        None => Prices::built_in(),
    };
    let procfile = match &args.procfile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read Procfile {}", path.display()))?;
            Some(inventory::parse_procfile(
                &text,
                &path.display().to_string(),
            )?)
        }
        None => None,
    };
    let database_url = std::env::var("FERRY_PLAN_DATABASE_URL").ok();
    let inv = inventory::collect(
        &heroku,
        &args.app,
        procfile.as_ref(),
        database_url.as_deref(),
    )
    .await?;
    let plan = ferry_plan::build(
        inv,
        &prices,
        &Options {
            architecture: args.arch.clone(),
            today: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        },
    );
    let markdown = ferry_plan::render::markdown(&plan);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("ferry-plan-{}", args.app)));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let files = [
        ("plan.md", markdown.clone()),
        ("plan.json", serde_json::to_string_pretty(&plan)?),
        (
            "migration.json",
            serde_json::to_string_pretty(&plan.migration)?,
        ),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(format!(
        "{markdown}\n---\n{} blockers, {} warnings, {} fields to fill in; wrote {}",
        plan.blockers.len(),
        plan.warnings.len(),
        plan.fill_in.len(),
        written.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_mistakes_name_the_option() {
        let a = parse(&["acme", "--procfile", "Procfile", "--arch", "arm64"]).expect("parses");
        assert_eq!(a.app, "acme");
        assert_eq!(a.arch, "arm64");
        assert_eq!(a.procfile, Some(PathBuf::from("Procfile")));
        for (args, needle) in [
            (vec!["--procfile"], "--procfile needs a value"),
            (vec!["acme", "--arch", "sparc"], "--arch"),
            (vec!["acme", "--bogus"], "--bogus"),
            (vec!["acme", "other"], "other"),
            (vec![], "app's name"),
        ] {
            let e = parse(&args).expect_err("refused").to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
