//! Step 2: Heroku config vars → SSM Parameter Store SecureStrings under the spec's prefix.
//!
//! Rules, not a blind copy: `exclude`/`include` patterns; Heroku's dyno metadata
//! (`HEROKU_APP_NAME`…) is Heroku's, not the app's; the Heroku Postgres attachments are
//! replaced by `DATABASE_URL`, which is the endpoint's URL in proxy mode (for good: the
//! endpoint moves at cutover, the URL does not) and in redeploy mode points at the source
//! (through its checked TLS URL) until the cutover moves it; other add-on attachments are copied and reported, since they point at
//! Heroku add-ons that need an AWS replacement before decommission. Values are never logged,
//! audited or returned.

use std::collections::BTreeSet;

use ferry_core::{
    MigrationSpec,
    params::PutOutcome,
    state::{Outcome, Phase},
};
use serde::{Deserialize, Serialize};

use crate::{Deps, MigrationRef, StepError, StepResult, facts};

/// Largest value SSM's standard tier stores.
const MAX_VALUE_BYTES: usize = 4096;

use ferry_core::spec::HEROKU_MANAGED;

/// A var not copied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The var.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Output: names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The SSM prefix.
    pub prefix: String,
    /// New parameters.
    pub added: Vec<String>,
    /// Parameters whose value changed.
    pub changed: Vec<String>,
    /// Parameters already holding the value.
    pub unchanged: Vec<String>,
    /// Vars not copied.
    pub skipped: Vec<Skipped>,
    /// Copied vars that point at Heroku add-ons (replace them before decommission).
    pub addon_vars: Vec<String>,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The config vars of a Heroku Redis attachment, not copied once the spec moves Redis.
const REDIS_VARS: [&str; 2] = ["REDIS_URL", "REDIS_TLS_URL"];

/// The config vars Heroku's add-on attachments set: Heroku Postgres's (`<NAME>_URL` of each
/// of its attachments), and every other add-on's (its attachments' and what it declares).
fn attachment_vars(
    attachments: &[ferry_heroku::AddOnAttachment],
    addons: &[ferry_heroku::AddOn],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let postgres_addons: BTreeSet<&str> = addons
        .iter()
        .filter(|a| a.addon_service.name == "heroku-postgresql")
        .map(|a| a.id.as_str())
        .collect();
    let mut postgres_vars = BTreeSet::new();
    let mut addon_vars = BTreeSet::new();
    for a in attachments {
        let var = format!("{}_URL", a.name);
        if postgres_addons.contains(a.addon.id.as_str()) {
            postgres_vars.insert(var);
        } else {
            addon_vars.insert(var);
        }
    }
    for a in addons {
        if a.addon_service.name != "heroku-postgresql" {
            addon_vars.extend(a.config_vars.iter().cloned());
        }
    }
    (postgres_vars, addon_vars)
}

/// Why config var `name` (= `value`) is not copied, or `None` when it is. DATABASE_URL is
/// handled apart (see [`database_url`]).
fn skip_reason(
    spec: &MigrationSpec,
    name: &str,
    value: &str,
    postgres_vars: &BTreeSet<String>,
) -> Option<&'static str> {
    let cfg = &spec.config_vars;
    if cfg.exclude.iter().any(|p| glob(p, name)) {
        Some("excluded by config_vars.exclude")
    } else if !cfg.include.is_empty() && !cfg.include.iter().any(|p| glob(p, name)) {
        Some("not in config_vars.include")
    } else if HEROKU_MANAGED.contains(&name) {
        Some("set by Heroku itself (dyno metadata)")
    } else if spec.redis.is_some() && REDIS_VARS.contains(&name) {
        Some(
            "Heroku Redis URL; the migration's redis section moves Redis, and the AWS fleet's REDIS_URL is ElastiCache's, not Heroku's",
        )
    } else if postgres_vars.contains(name) {
        Some("Heroku Postgres attachment; DATABASE_URL replaces it on AWS")
    } else if value.is_empty() {
        Some("empty value; SSM cannot store an empty parameter")
    } else if value.len() > MAX_VALUE_BYTES {
        Some("longer than 4096 bytes (SSM standard tier); move it to Secrets Manager by hand")
    } else {
        None
    }
}

fn skip(out: &mut Output, name: &str, reason: &str) {
    out.skipped.push(Skipped {
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

/// Runs the config sync.
pub async fn run(deps: &Deps, input: MigrationRef) -> StepResult<Output> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = deps.enter(id, Phase::ConfigSync).await?;
    let spec = &rec.spec;
    let heroku = deps.heroku(spec).await?;
    let vars = heroku.config_vars(&spec.heroku.app).await?;
    let attachments = heroku.attachments(&spec.heroku.app).await?;
    let addons = heroku.addons(&spec.heroku.app).await?;
    let (postgres_vars, addon_vars) = attachment_vars(&attachments, &addons);
    let prefix = spec.config_ssm_prefix();
    let mut out = Output {
        prefix: prefix.clone(),
        added: vec![],
        changed: vec![],
        unchanged: vec![],
        skipped: vec![],
        addon_vars: vec![],
    };
    for (name, value) in &vars {
        if name == "DATABASE_URL" {
            continue; // by rule, below
        }
        if let Some(reason) = skip_reason(spec, name, value, &postgres_vars) {
            skip(&mut out, name, reason);
            continue;
        }
        let outcome = deps
            .params
            .put_secure(&format!("{prefix}{name}"), value)
            .await?;
        record(&mut out, name, outcome);
        if addon_vars.contains(name) {
            out.addon_vars.push(name.clone());
        }
    }
    database_url(deps, spec, &mut out).await?;
    deps.audit(
        id,
        "config_sync",
        "copy_config_vars",
        Outcome::Succeeded,
        serde_json::to_value(&out).unwrap_or_default(),
        None,
    )
    .await?;
    Ok(out)
}

/// DATABASE_URL. Proxy mode: the endpoint's URL, from the start and for good (the endpoint
/// moves, the URL never does). Redeploy mode: the source, through the checked TLS URL, until
/// the cutover moves it; a retry after the cutover leaves it alone.
async fn database_url(deps: &Deps, spec: &MigrationSpec, out: &mut Output) -> StepResult<()> {
    let cutover: Option<facts::CutoverFact> =
        facts::get(deps.store.as_ref(), &spec.migration_id, facts::CUTOVER).await?;
    let switched = cutover.is_some_and(|c| c.state.on_target());
    match &spec.endpoint {
        Some(e) if spec.proxied() => {
            let url = deps.params.get(&e.url_param).await?;
            ferry_pg::PgUrl::parse(&url).map_err(|err| StepError::BadParam {
                param: e.url_param.clone(),
                reason: err.to_string(),
            })?;
            let outcome = deps
                .params
                .put_secure(&spec.app_database_url_param(), &url)
                .await?;
            record(out, "DATABASE_URL", outcome);
        }
        _ if switched => skip(
            out,
            "DATABASE_URL",
            "already points at the target (cutover done)",
        ),
        _ => {
            let source = deps.params.get(&spec.source.database_url_param).await?;
            let outcome = deps
                .params
                .put_secure(&spec.app_database_url_param(), &source)
                .await?;
            record(out, "DATABASE_URL", outcome);
        }
    }
    Ok(())
}

fn record(out: &mut Output, name: &str, outcome: PutOutcome) {
    let list = match outcome {
        PutOutcome::Added => &mut out.added,
        PutOutcome::Changed => &mut out.changed,
        PutOutcome::Unchanged => &mut out.unchanged,
    };
    list.push(name.to_string());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{glob, skip_reason};

    #[test]
    fn each_var_left_out_says_why_and_the_rest_are_copied() {
        let mut spec: serde_json::Value =
            serde_json::from_str(include_str!("../../../examples/minimal.json")).expect("example");
        spec["config_vars"]["exclude"] = serde_json::json!(["LEGACY_*"]);
        let spec = ferry_core::spec::from_value(&spec).expect("spec");
        let postgres: BTreeSet<String> = ["HEROKU_POSTGRESQL_RED_URL".to_string()].into();
        let why = |name: &str, value: &str| skip_reason(&spec, name, value, &postgres);
        assert_eq!(why("SECRET_KEY_BASE", "x"), None);
        assert_eq!(
            why("LEGACY_TOKEN", "x"),
            Some("excluded by config_vars.exclude")
        );
        assert_eq!(
            why("HEROKU_SLUG_COMMIT", "abc"),
            Some("set by Heroku itself (dyno metadata)")
        );
        assert!(
            why("HEROKU_POSTGRESQL_RED_URL", "postgres://x")
                .is_some_and(|r| r.contains("Heroku Postgres"))
        );
        assert!(why("EMPTY", "").is_some_and(|r| r.contains("empty")));
        assert!(why("BIG", &"x".repeat(4097)).is_some_and(|r| r.contains("4096")));
        assert_eq!(why("EXACTLY_MAX", &"x".repeat(4096)), None);
    }

    #[test]
    fn globs_match_like_the_spec_says() {
        assert!(glob("HEROKU_*", "HEROKU_APP_NAME"));
        assert!(!glob("HEROKU_*", "MY_HEROKU_X"));
        assert!(glob("*_URL", "REDIS_URL"));
        assert!(glob("A*B*C", "AxxBxxC"));
        assert!(!glob("A*B*C", "AxxC"));
        assert!(glob("EXACT", "EXACT"));
        assert!(!glob("EXACT", "EXACTLY"));
        assert!(glob("*", ""));
        assert!(!glob("AB*BA", "ABA"));
    }
}
