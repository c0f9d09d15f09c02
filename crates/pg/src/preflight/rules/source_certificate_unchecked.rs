//! **Warning.** The source database's URL has `sslmode=require`, the only mode Heroku's
//! self-signed certificates allow: the connection is encrypted, but the server is not
//! authenticated, so whoever can intercept the route between AWS and Heroku could pose as the
//! server and receive the password Ferry and the endpoint's PgBouncer log in with. Checked on
//! the URL, not the catalog, by the preflight step, `ferry preflight` and rehearsals.
//!
//! Fix: accept it for the migration's days and rotate the Heroku credentials after
//! decommission, or reach Heroku privately (Private Spaces with PrivateLink), or give
//! `sslrootcert=` a CA your Heroku plan's certificate chains to and `sslmode=verify-ca`.

use crate::preflight::{Code, Finding, Severity, UNCHECKED_RISK};

/// The warning for the source URL stored under `param`, if its certificate is not checked.
pub fn check(url: &crate::PgUrl, param: &str) -> Option<Finding> {
    (url.tls_check() == crate::TlsCheck::EncryptOnly).then(|| Finding::about(
        Severity::Warning,
        Code::SourceCertificateUnchecked,
        param,
        format!("{UNCHECKED_RISK} (the endpoint's PgBouncer connects to it the same way)."),
        "accept it for the migration's days and rotate the Heroku credentials after decommission, or reach Heroku privately (Private Spaces with PrivateLink), or give sslrootcert= a CA your Heroku plan's certificate chains to and sslmode=verify-ca",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn require_is_warned_and_a_checked_certificate_is_not() {
        let url = crate::PgUrl::parse("postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com/d")
            .expect("url");
        let f = super::check(&url, "/ferry/app/source").expect("warned");
        assert_eq!(f.object.as_deref(), Some("/ferry/app/source"));
        assert!(f.message.contains("password"), "{f}");
        assert!(!f.to_string().contains("u:p@"), "no credentials in the finding: {f}");
        let checked = crate::PgUrl::parse(
            "postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com/d?sslmode=verify-full",
        )
        .expect("url");
        assert!(super::check(&checked, "/p").is_none());
    }
}
