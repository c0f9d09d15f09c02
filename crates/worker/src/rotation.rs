//! Heroku rotates database credentials (maintenance, HA failover, `pg:credentials:rotate`)
//! during a migration that can last days. When the source refuses the worker's login, the
//! current URL is read again from the Heroku app's config vars (the attachment's var naming
//! the same database), the source parameter is updated — keeping the stored URL's sslmode
//! and root certificate — audited, and the worker goes on.

use anyhow::Context;
use ferry_core::{
    MigrationStore, ParamStore,
    spec::MigrationSpec,
    state::{AuditEvent, Outcome},
};
use ferry_heroku::{DEFAULT_BASE_URL, HerokuClient};
use ferry_pg::PgUrl;

/// Reads the app's current URL for the source database; when its login differs from
/// `stale`'s, stores the fresh URL in the source parameter, audits it and returns it.
pub async fn refresh_source(
    store: &dyn MigrationStore,
    params: &dyn ParamStore,
    spec: &MigrationSpec,
    stale: &PgUrl,
) -> anyhow::Result<Option<PgUrl>> {
    let token = params
        .get(&spec.heroku.api_token_param)
        .await
        .context("read the Heroku API token to look for rotated credentials")?;
    let base = std::env::var("FERRY_HEROKU_API_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.into());
    let heroku = HerokuClient::new(&base, token)?;
    let vars = heroku
        .config_vars(&spec.heroku.app)
        .await
        .context("read the Heroku app's config vars")?;
    let current = vars.iter().find_map(|(name, value)| {
        PgUrl::parse(value)
            .ok()
            .filter(|u| u.same_database(stale))
            .map(|u| (name.clone(), u))
    });
    let Some((var, current)) = current else {
        return Ok(None);
    };
    let fresh = stale.with_login_of(&current)?;
    if fresh.expose_secret() == stale.expose_secret() {
        return Ok(None);
    }
    params
        .put_secure(&spec.source.database_url_param, fresh.expose_secret())
        .await
        .context("store the source's new URL")?;
    audit(
        store,
        spec,
        "source_credentials_refreshed",
        serde_json::json!({
            "from_config_var": var,
            "parameter": spec.source.database_url_param,
            "user_changed": fresh.user() != stale.user(),
        }),
    )
    .await?;
    tracing::warn!(%var, "the source refused the stored login; took Heroku's current one");
    Ok(Some(fresh))
}

/// How often the worker looks at the target's password secret: a rotation reaches the stored
/// URL (and, from there, the endpoint's PgBouncer) within this.
pub const TARGET_SECRET_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// When the spec names `target.password_secret` (RDS manages and rotates the master password),
/// takes its current password into the target parameter if it changed, audits it, and says
/// whether it did.
pub async fn follow_target_secret(
    store: &dyn MigrationStore,
    params: &dyn ParamStore,
    secrets: &dyn ferry_core::SecretStore,
    spec: &MigrationSpec,
) -> anyhow::Result<bool> {
    let Some(id) = &spec.target.password_secret else {
        return Ok(false);
    };
    let param = &spec.target.database_url_param;
    let stale = PgUrl::parse(&params.get(param).await?)
        .with_context(|| format!("{param} holds an unusable URL"))?;
    let secret = secrets.current(id).await?;
    let Some(fresh) = ferry_pg::rds_secret::login_from_secret(&stale, &secret)? else {
        return Ok(false);
    };
    params
        .put_secure(param, fresh.expose_secret())
        .await
        .context("store the target's current password")?;
    audit(
        store,
        spec,
        "target_password_followed",
        serde_json::json!({ "secret": id, "parameter": param }),
    )
    .await?;
    tracing::warn!(secret = %id, "the target's password was rotated; stored the current one");
    Ok(true)
}

/// An audit event of the worker's (no secret in `detail`).
async fn audit(
    store: &dyn MigrationStore,
    spec: &MigrationSpec,
    action: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .append_audit(
            &spec.migration_id,
            &AuditEvent::new(
                chrono::Utc::now(),
                "worker",
                "ferry:worker",
                action,
                Outcome::Info,
                detail,
            ),
        )
        .await?;
    Ok(())
}
