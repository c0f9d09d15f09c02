//! RDS can keep the master password in Secrets Manager and rotate it (every 7 days by
//! default, at once when asked). The secret holds JSON with `username` and `password`. A URL
//! stored with the old password then fails every new login; Ferry reads the secret and takes
//! its current password (see `target.password_secret`).

use ferry_core::secret::Secret;

use crate::{PgError, PgUrl};

/// `stale` with the secret's current password, or `None` when it already has it. The secret
/// must be RDS's JSON for the URL's own user.
pub fn login_from_secret(stale: &PgUrl, secret: &Secret) -> Result<Option<PgUrl>, PgError> {
    let bad = |reason: String| PgError::InvalidUrl {
        url: stale.redacted().to_string(),
        reason,
    };
    let doc: serde_json::Value = serde_json::from_str(secret.expose()).map_err(|_| {
        bad("target.password_secret does not hold JSON; give the secret RDS manages for the master user (its value is {\"username\": …, \"password\": …})".into())
    })?;
    let password = doc.get("password").and_then(|p| p.as_str()).ok_or_else(|| {
        bad("target.password_secret has no \"password\" string; give the secret RDS manages for the master user".into())
    })?;
    if let Some(user) = doc.get("username").and_then(|u| u.as_str())
        && Some(user) != stale.user()
    {
        return Err(bad(format!(
            "target.password_secret is the login of {user:?} but the URL logs in as {:?}; give the secret of the URL's own user, or that user in the URL",
            stale.user().unwrap_or_default()
        )));
    }
    if stale.expose_password().as_deref() == Some(password) {
        return Ok(None);
    }
    stale.with_password(password).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> PgUrl {
        PgUrl::parse(text).expect("url")
    }

    #[test]
    fn a_rotated_password_replaces_the_stored_one_and_nothing_else() {
        let stale = url("postgres://ferry:old@db.example.com:5432/app?sslmode=require");
        let secret = Secret::new(r#"{"username":"ferry","password":"n3w/p@ss#?"}"#);
        let fresh = login_from_secret(&stale, &secret)
            .expect("read")
            .expect("changed");
        assert_eq!(fresh.expose_password().as_deref(), Some("n3w/p@ss#?"));
        assert_eq!(fresh.user(), Some("ferry"));
        assert_eq!(fresh.host_port(), stale.host_port());
        assert_eq!(fresh.dbname(), Some("app"));
        assert_eq!(fresh.tls_check(), stale.tls_check());
        // Applied again: nothing to do.
        assert!(login_from_secret(&fresh, &secret).expect("read").is_none());
    }

    #[test]
    fn a_secret_of_another_user_or_not_rds_json_is_refused_without_its_value() {
        let stale = url("postgres://ferry:Sta1ePw@db.example.com/app");
        for (value, says) in [
            (
                r#"{"username":"postgres","password":"S3cretValue"}"#,
                "login of \"postgres\"",
            ),
            ("S3cretValue", "does not hold JSON"),
            (r#"{"username":"ferry"}"#, "no \"password\""),
        ] {
            let err = login_from_secret(&stale, &Secret::new(value))
                .expect_err(value)
                .to_string();
            assert!(err.contains(says), "{err}");
            assert!(
                !err.contains("S3cretValue") && !err.contains("Sta1ePw"),
                "{err}"
            );
        }
    }
}
