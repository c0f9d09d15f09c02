//! What the Heroku app is made of, read from the Platform API, the app's Procfile (if given)
//! and its database. Config var values never leave this module: only names are kept.

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::spec::CaptureMode;
use ferry_heroku::HerokuClient;
use ferry_pg::{PgUrl, preflight::PreflightReport};
use serde::Serialize;

use crate::PlanError;

/// The whole inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The app.
    pub app: AppInfo,
    /// Process types from the formation and the Procfile.
    pub processes: Vec<Process>,
    /// Add-ons and their plans.
    pub addons: Vec<AddOnInfo>,
    /// Config var names and who owns them.
    pub config_vars: Vec<ConfigVar>,
    /// Domains.
    pub domains: Vec<DomainInfo>,
    /// The database attached as DATABASE, if it could be read.
    pub database: Option<DatabaseInfo>,
    /// Why the database could not be read, if it could not.
    pub database_unavailable: Option<String>,
    /// Why web's autoscaling could not be read from the Metrics API, if it could not.
    pub autoscaling_unavailable: Option<String>,
}

/// The app itself.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    /// Its name.
    pub name: String,
    /// Its region (`us`, `eu`).
    pub region: Option<String>,
    /// Its stack.
    pub stack: Option<String>,
}

/// One process type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    /// `web`, `worker`, `clock`, …
    pub process_type: String,
    /// Dynos running it (0 when only the Procfile names it).
    pub quantity: u32,
    /// Dyno size, when the formation has it.
    pub size: Option<String>,
    /// The command.
    pub command: String,
    /// Whether the formation has it.
    pub in_formation: bool,
    /// Whether the Procfile has it (`None`: no Procfile given).
    pub in_procfile: Option<bool>,
    /// Heroku's dyno autoscaling of it, when on (web only).
    pub autoscaling: Option<ferry_heroku::Autoscaling>,
}

/// One add-on.
#[derive(Debug, Clone, Serialize)]
pub struct AddOnInfo {
    /// Its name.
    pub name: String,
    /// Service (`heroku-postgresql`).
    pub service: String,
    /// Plan without the service prefix (`standard-0`).
    pub plan: String,
    /// What Heroku bills per month, when the API says (USD).
    pub billed_monthly: Option<f64>,
    /// Config vars it sets on the app.
    pub config_vars: Vec<String>,
    /// Attachment names on this app (`DATABASE`).
    pub attached_as: Vec<String>,
}

/// A config var's name and who sets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigVar {
    /// Its name.
    pub name: String,
    /// The add-on that sets it, if one does.
    pub set_by_addon: Option<String>,
}

/// A domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainInfo {
    /// Host name.
    pub hostname: String,
    /// `heroku` or `custom`.
    pub kind: String,
    /// Heroku's DNS target for it.
    pub cname: Option<String>,
}

/// The source database as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    /// The add-on holding it, if it is a Heroku Postgres add-on.
    pub addon: Option<String>,
    /// Its plan (`standard-0`).
    pub plan: Option<String>,
    /// `server_version`.
    pub version: String,
    /// Bytes in the database.
    pub size_bytes: i64,
    /// Copy sessions that fit the free connections twice over (1 to 4), for the spec.
    pub parallelism: u32,
    /// The source-only preflight (no target exists yet).
    pub preflight: PreflightReport,
}

/// Parses a Procfile: `type: command` per line; blank lines and `#` comments are skipped.
pub fn parse_procfile(text: &str, origin: &str) -> Result<BTreeMap<String, String>, PlanError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| PlanError::Procfile {
            origin: origin.to_string(),
            line: i + 1,
            reason: reason.to_string(),
        };
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| bad("expected `<process type>: <command>`"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "the process type may hold only letters, digits, `_` and `-`",
            ));
        }
        if command.trim().is_empty() {
            return Err(bad("the command is empty"));
        }
        if out
            .insert(name.to_string(), command.trim().to_string())
            .is_some()
        {
            return Err(bad(&format!("process type {name} is defined twice")));
        }
    }
    Ok(out)
}

/// Reads everything about `app`. `procfile` is the app's Procfile text (with where it came
/// from); `database_url` overrides the app's DATABASE_URL (for example a read-only
/// credential). A database that cannot be read is reported in `database_unavailable`, not
/// an error: the rest of the plan still stands.
pub async fn collect(
    heroku: &HerokuClient,
    app: &str,
    procfile: Option<&BTreeMap<String, String>>,
    database_url: Option<&str>,
) -> Result<Inventory, PlanError> {
    let info = heroku.app(app).await?;
    let formation = heroku.formation(app).await?;
    let addons = heroku.addons(app).await?;
    let attachments = heroku.attachments(app).await?;
    let vars = heroku.config_vars(app).await?;
    let domains = heroku.domains(app).await?;

    let (processes, autoscaling_unavailable) =
        processes(heroku, &info.id, &formation, procfile).await;

    let addon_infos = addon_infos(&addons, &attachments);
    let owned: BTreeMap<&str, &str> = addon_infos
        .iter()
        .flat_map(|a| a.config_vars.iter().map(|v| (v.as_str(), a.name.as_str())))
        .collect();
    let config_vars = vars
        .keys()
        .map(|k| ConfigVar {
            name: k.clone(),
            set_by_addon: owned.get(k.as_str()).map(|s| s.to_string()),
        })
        .collect();

    let db_addon = addon_infos
        .iter()
        .find(|a| a.attached_as.iter().any(|n| n == "DATABASE"));
    let url = database_url.or(vars.get("DATABASE_URL").map(String::as_str));
    let (database, database_unavailable) = database(url, db_addon).await;

    Ok(Inventory {
        app: AppInfo {
            name: info.name,
            region: info.region.map(|r| r.name),
            stack: info.stack.map(|s| s.name),
        },
        processes,
        addons: addon_infos,
        config_vars,
        domains: domains
            .into_iter()
            .map(|d| DomainInfo {
                hostname: d.hostname,
                kind: d.kind,
                cname: d.cname,
            })
            .collect(),
        database,
        database_unavailable,
        autoscaling_unavailable,
    })
}

/// The process types: the formation's, then the Procfile's that the formation lacks, in a
/// fixed order; web's autoscaling read from the Metrics API (or why it could not be).
async fn processes(
    heroku: &HerokuClient,
    app_id: &str,
    formation: &[ferry_heroku::Formation],
    procfile: Option<&BTreeMap<String, String>>,
) -> (Vec<Process>, Option<String>) {
    let mut processes: Vec<Process> = formation
        .iter()
        .map(|f| Process {
            process_type: f.process_type.clone(),
            quantity: f.quantity,
            size: Some(f.size.clone()),
            command: f.command.clone(),
            in_formation: true,
            in_procfile: procfile.map(|p| p.contains_key(&f.process_type)),
            autoscaling: None,
        })
        .collect();
    // Heroku autoscales only web, and only on Performance and Private dynos: other sizes are
    // not asked about. A token that may not read the Metrics API leaves the counts as the
    // formation has them, with a warning.
    let mut autoscaling_unavailable = None;
    if let Some(web) = processes
        .iter_mut()
        .find(|p| p.process_type == "web" && p.size.as_deref().is_some_and(can_autoscale))
    {
        match heroku.autoscaling(app_id, "web").await {
            Ok(a) => web.autoscaling = a,
            Err(e) => autoscaling_unavailable = Some(e.to_string()),
        }
    }
    if let Some(procfile) = procfile {
        for (name, command) in procfile {
            if !processes.iter().any(|p| &p.process_type == name) {
                processes.push(Process {
                    process_type: name.clone(),
                    quantity: 0,
                    size: None,
                    command: command.clone(),
                    in_formation: false,
                    in_procfile: Some(true),
                    autoscaling: None,
                });
            }
        }
    }
    processes.sort_by_key(process_order);
    (processes, autoscaling_unavailable)
}

/// Each add-on with its plan, what Heroku bills for it and the names it is attached as.
fn addon_infos(
    addons: &[ferry_heroku::AddOn],
    attachments: &[ferry_heroku::AddOnAttachment],
) -> Vec<AddOnInfo> {
    addons
        .iter()
        .map(|a| AddOnInfo {
            name: a.name.clone(),
            service: a.addon_service.name.clone(),
            plan: a
                .plan
                .name
                .split_once(':')
                .map_or(a.plan.name.as_str(), |(_, p)| p)
                .to_string(),
            billed_monthly: a
                .billed_price
                .as_ref()
                .filter(|b| b.unit == "month" && !b.contract)
                .map(|b| b.cents as f64 / 100.0),
            config_vars: a.config_vars.clone(),
            attached_as: attachments
                .iter()
                .filter(|t| t.addon.id == a.id)
                .map(|t| t.name.clone())
                .collect(),
        })
        .collect()
}

/// The database at `url` as the source-only preflight reads it, or why it could not be read
/// (no URL, no answer within [`DATABASE_TIMEOUT`], an error).
async fn database(
    url: Option<&str>,
    db_addon: Option<&AddOnInfo>,
) -> (Option<DatabaseInfo>, Option<String>) {
    match url {
        None => (
            None,
            Some("the app has no DATABASE_URL and FERRY_PLAN_DATABASE_URL is not set".to_string()),
        ),
        // A host that drops packets would hold the plan for the OS's TCP timeout: give up
        // sooner and say so.
        Some(url) => match tokio::time::timeout(DATABASE_TIMEOUT, read_database(url))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer from the database within {} s",
                    DATABASE_TIMEOUT.as_secs()
                ))
            }) {
            Ok((version, size_bytes, parallelism, preflight)) => (
                Some(DatabaseInfo {
                    parallelism,
                    addon: db_addon.map(|a| a.name.clone()),
                    plan: db_addon
                        .filter(|a| a.service == "heroku-postgresql")
                        .map(|a| a.plan.clone()),
                    version,
                    size_bytes,
                    preflight,
                }),
                None,
            ),
            Err(e) => (None, Some(e)),
        },
    }
}

/// Whether Heroku offers dyno autoscaling on a dyno size (Performance, Private and Shield
/// tiers, as its CLI checks before enabling it).
fn can_autoscale(size: &str) -> bool {
    let size = size.to_ascii_lowercase();
    ["performance", "private", "shield"]
        .iter()
        .any(|tier| size.contains(tier))
}

fn process_order(p: &Process) -> (u8, String) {
    let rank = match p.process_type.as_str() {
        "web" => 0,
        "worker" => 1,
        "clock" | "scheduler" => 2,
        "release" => 4,
        _ => 3,
    };
    (rank, p.process_type.clone())
}

/// How long `ferry plan` waits for the database.
const DATABASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn read_database(url: &str) -> Result<(String, i64, u32, PreflightReport), String> {
    read_database_inner(url).await.map_err(|e| e.to_string())
}

async fn read_database_inner(
    url: &str,
) -> Result<(String, i64, u32, PreflightReport), ferry_pg::PgError> {
    let url = PgUrl::parse(url)?;
    let client = url.connect().await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), pg_database_size(current_database()),
                    current_setting('max_connections')::bigint
                      - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await
        .map_err(|source| ferry_pg::PgError::Query {
            what: "read version, size and free connections",
            source,
        })?;
    let parallelism = ferry_pg::preflight::fitting_parallelism(row.get(2));
    // `auto` finds which capture mode works.
    let report =
        ferry_pg::preflight::analyse_source(&client, CaptureMode::Auto, parallelism).await?;
    Ok((row.get(0), row.get(1), parallelism, report))
}

/// Names of process types in `inventory` that run (quantity above 0), in name order.
pub fn running(inventory: &Inventory) -> BTreeSet<&str> {
    inventory
        .processes
        .iter()
        .filter(|p| p.quantity > 0)
        .map(|p| p.process_type.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_procfile_parses_and_bad_lines_name_their_number() {
        let p = parse_procfile(
            "# comment\nweb: bundle exec puma -C config/puma.rb\n\nworker: bundle exec sidekiq\nrelease: rails db:migrate\n",
            "Procfile",
        )
        .expect("parses");
        assert_eq!(p.len(), 3);
        assert_eq!(p["web"], "bundle exec puma -C config/puma.rb");
        let e = parse_procfile("web: a\nworker b\n", "Procfile")
            .expect_err("no colon")
            .to_string();
        assert!(e.contains("Procfile") && e.contains("line 2"), "{e}");
        let e = parse_procfile("web: a\nweb: b\n", "Procfile")
            .expect_err("twice")
            .to_string();
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");
        let e = parse_procfile("we b: a\n", "Procfile")
            .expect_err("space")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_procfile("web:   \n", "Procfile")
            .expect_err("empty")
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
