//! `ferry preflight <spec>`: the spec validated, both databases analysed as the preflight step
//! does, and the app's lock looked at, without starting anything or writing anywhere.

use std::path::Path;

use ferry_core::MigrationStore;
use ferry_pg::{PgUrl, preflight::Severity};

use crate::{
    Output,
    fail::{Code, Usage},
    ops,
};

pub const HELP: &str = "\
Reads the spec's source.database_url_param and target.database_url_param from SSM Parameter
Store, connects to both (read-only look: nothing is installed), and lists every blocker with
its fix and every warning. Also says whether another migration holds the app's lock
(FERRY_STATE_TABLE, when set).

Examples:
  ferry preflight migration.json
  ferry preflight migration.json --output json | jq '.findings[] | select(.severity == \"blocker\")'

Exit: 0 no blocker, 3 blockers (fix them and run it again), 1 a database or AWS call failed.";

async fn url(aws: &aws_config::SdkConfig, param: &str) -> anyhow::Result<PgUrl> {
    let params = ferry_aws::SsmParams::new(aws_sdk_ssm::Client::new(aws));
    let value = ferry_core::ParamStore::get(&params, param)
        .await
        .map_err(|e| anyhow::anyhow!("read {param} from SSM: {e}"))?;
    PgUrl::parse(value.expose()).map_err(|e| Usage(format!("{param}: {e}")).into())
}

/// `ferry preflight`.
pub async fn run(path: &Path, output: Output) -> anyhow::Result<Code> {
    let (_, spec) = ops::read_spec(path)?;
    let aws = crate::session::aws().await;
    let source = url(&aws, &spec.source.database_url_param).await?;
    let mut target = url(&aws, &spec.target.database_url_param).await?;
    if let Some(id) = &spec.target.password_secret {
        let secret =
            ferry_core::SecretStore::current(&ferry_aws::SecretsManagerStore::new(&aws), id)
                .await
                .map_err(|e| anyhow::anyhow!("read target.password_secret: {e}"))?;
        if let Some(fresh) = ferry_pg::rds_secret::login_from_secret(&target, &secret)
            .map_err(|e| Usage(format!("target.password_secret: {e}")))?
        {
            target = fresh;
        }
    }
    let (s, t) = (source.connect().await?, target.connect().await?);
    let mut report = ferry_pg::preflight::analyse(
        &s,
        &t,
        spec.replication.capture,
        spec.replication.parallelism,
    )
    .await?;
    report
        .findings
        .extend(ferry_pg::preflight::unchecked_source_certificate(
            &source,
            &spec.source.database_url_param,
        ));
    let lock = match std::env::var("FERRY_STATE_TABLE") {
        Ok(t) if !t.is_empty() => crate::session::store(&aws)?
            .app_lock(&spec.heroku.app)
            .await?
            .map(|l| {
                format!(
                    "by migration {} since {}",
                    l.migration_id,
                    l.acquired_at.to_rfc3339()
                )
            }),
        _ => None,
    };
    let blockers = report.blockers().count();
    if output == Output::Json {
        let doc = serde_json::json!({ "migration_id": spec.migration_id, "report": report, "app_lock": lock });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "preflight of {} ({} → {}): capture {}, {} tables, {:.1} MB",
            spec.migration_id,
            source.redacted(),
            target.redacted(),
            report
                .capture
                .map_or("none possible".into(), |c| format!("{c:?}").to_lowercase()),
            report.tables.len(),
            report.total_bytes() as f64 / 1e6
        );
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity != Severity::Info)
        {
            println!("- {:?} {f}", f.severity);
        }
        if let Some(l) = &lock {
            println!("app lock: held ({l})");
        }
        println!("{blockers} blocker(s)");
    }
    Ok(if blockers > 0 {
        Code::Blocked
    } else {
        Code::Done
    })
}

/// `ferry explain [code]`: the rule's documentation, or every code with its first line.
pub fn explain(code: Option<&str>) -> anyhow::Result<Code> {
    use ferry_pg::preflight::Code as Finding;
    let Some(text) = code else {
        for c in Finding::ALL {
            let doc = c.explain();
            let first = doc
                .split(". ")
                .next()
                .unwrap_or_default()
                .replace('\n', " ");
            println!("{c:<30} {first}.");
        }
        return Ok(Code::Done);
    };
    let found = Finding::parse(text.trim()).ok_or_else(|| {
        Usage(format!(
            "code: no finding is called {text:?}; `ferry explain` lists them ({})",
            Finding::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    println!("{found}\n\n{}", found.explain());
    Ok(Code::Done)
}
