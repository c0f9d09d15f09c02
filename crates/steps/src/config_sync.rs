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
    let postgres_addons: BTreeSet<&str> = addons
        .iter()
        .filter(|a| a.addon_service.name == "heroku-postgresql")
        .map(|a| a.id.as_str())
        .collect();
    // Config vars each attachment sets: `<NAME>_URL`, plus what the add-on declares.
    let mut postgres_vars = BTreeSet::new();
    let mut addon_vars = BTreeSet::new();
    for a in &attachments {
        let var = format!("{}_URL", a.name);
        if postgres_addons.contains(a.addon.id.as_str()) {
            postgres_vars.insert(var);
        } else {
            addon_vars.insert(var);
        }
    }
    for a in &addons {
        if a.addon_service.name != "heroku-postgresql" {
            addon_vars.extend(a.config_vars.iter().cloned());
        }
    }

    let prefix = spec.config_ssm_prefix();
    let cfg = &spec.config_vars;
    let mut out = Output {
        prefix: prefix.clone(),
        added: vec![],
        changed: vec![],
        unchanged: vec![],
        skipped: vec![],
        addon_vars: vec![],
    };
    let skip = |out: &mut Output, name: &str, reason: &str| {
        out.skipped.push(Skipped {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    for (name, value) in &vars {
        if name == "DATABASE_URL" {
            continue; // by rule, below
        }
        if cfg.exclude.iter().any(|p| glob(p, name)) {
            skip(&mut out, name, "excluded by config_vars.exclude");
        } else if !cfg.include.is_empty() && !cfg.include.iter().any(|p| glob(p, name)) {
            skip(&mut out, name, "not in config_vars.include");
        } else if HEROKU_MANAGED.contains(&name.as_str()) {
            skip(&mut out, name, "set by Heroku itself (dyno metadata)");
        } else if spec.redis.is_some() && REDIS_VARS.contains(&name.as_str()) {
            skip(
                &mut out,
                name,
                "Heroku Redis URL; the migration's redis section moves Redis, and the AWS fleet's REDIS_URL is ElastiCache's, not Heroku's",
            );
        } else if postgres_vars.contains(name) {
            skip(
                &mut out,
                name,
                "Heroku Postgres attachment; DATABASE_URL replaces it on AWS",
            );
        } else if value.is_empty() {
            skip(
                &mut out,
                name,
                "empty value; SSM cannot store an empty parameter",
            );
        } else if value.len() > MAX_VALUE_BYTES {
            skip(
                &mut out,
                name,
                "longer than 4096 bytes (SSM standard tier); move it to Secrets Manager by hand",
            );
        } else {
            let outcome = deps
                .params
                .put_secure(&format!("{prefix}{name}"), value)
                .await?;
            record(&mut out, name, outcome);
            if addon_vars.contains(name) {
                out.addon_vars.push(name.clone());
            }
        }
    }

    // DATABASE_URL. Proxy mode: the endpoint's URL, from the start and for good (the endpoint
    // moves, the URL never does). Redeploy mode: the source, through the checked TLS URL, until
    // the cutover moves it; a retry after the cutover leaves it alone.
    let cutover: Option<facts::CutoverFact> =
        facts::get(deps.store.as_ref(), id, facts::CUTOVER).await?;
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
            record(&mut out, "DATABASE_URL", outcome);
        }
        _ if switched => skip(
            &mut out,
            "DATABASE_URL",
            "already points at the target (cutover done)",
        ),
        _ => {
            let source = deps.params.get(&spec.source.database_url_param).await?;
            let outcome = deps
                .params
                .put_secure(&spec.app_database_url_param(), &source)
                .await?;
            record(&mut out, "DATABASE_URL", outcome);
        }
    }

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
    use super::glob;

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
