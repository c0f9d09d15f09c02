//! The app's privileges on the target, granted and checked before the cutover gate (from
//! Verify). The schema reached the target owned by Ferry's login; an app that logs in on RDS
//! as a role of its own gets what its Heroku role may do, table by table, and the check with
//! `has_*_privilege` stops the migration here, not at the first query after the cutover.

use ferry_core::state::Outcome;
use ferry_pg::grants;
use tokio_postgres::Client;

use crate::{Deps, StepError, StepResult, facts};

/// Grants the app's target role what its source role may do on `schemas`, then checks it.
/// Returns how many objects were granted (0 when the app logs in as Ferry's login itself).
pub async fn ensure(
    deps: &Deps,
    id: &str,
    source: &Client,
    target: &Client,
    target_login: &str,
    schemas: &[String],
) -> StepResult<usize> {
    let Some(roles) =
        facts::get::<facts::AppRoles>(deps.store.as_ref(), id, facts::APP_ROLES).await?
    else {
        return Ok(0);
    };
    if roles.target == target_login || roles.source.is_empty() {
        // The app logs in as the login that owns the restored objects.
        return Ok(0);
    }
    if !grants::role_exists(target, &roles.target).await? {
        return Err(StepError::AppPrivileges {
            role: roles.target.clone(),
            reason: "does not exist. Fix: create it on the RDS instance (CREATE ROLE ... LOGIN PASSWORD ...) with the password in the endpoint's target URL, then retry".into(),
        });
    }
    let wanted = grants::read(source, &roles.source, schemas).await?;
    let statements: Vec<String> = wanted.iter().map(|g| g.statement(&roles.target)).collect();
    if !statements.is_empty() {
        target
            .batch_execute(&format!("BEGIN; {}; COMMIT", statements.join("; ")))
            .await
            .map_err(|source| {
                StepError::Pg(ferry_pg::PgError::Query {
                    what: "grant the app's role its privileges on the target",
                    source,
                })
            })?;
    }
    let missing = grants::missing(target, &roles.target, &wanted).await?;
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        return Err(StepError::AppPrivileges {
            role: roles.target.clone(),
            reason: format!(
                "lacks {} privilege(s) its Heroku role {} has: {}{}. Fix: grant them as the RDS master user, then retry",
                missing.len(),
                roles.source,
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        });
    }
    deps.audit(
        id,
        "verify",
        "app_grants",
        Outcome::Info,
        serde_json::json!({
            "source_role": roles.source,
            "target_role": roles.target,
            "objects": wanted.len(),
        }),
        Some("verify/app_grants".into()),
    )
    .await?;
    Ok(wanted.len())
}
