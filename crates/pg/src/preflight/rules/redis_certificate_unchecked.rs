//! **Warning.** The source Redis URL has `ssl_cert_reqs=none`, as Heroku tells clients of its
//! Key-Value Store: the connection is encrypted, but the server is not authenticated, so
//! whoever can intercept the route between AWS and Heroku could pose as the server and receive
//! the password Ferry and the endpoint's Redis proxy log in with. Checked on the URL by the
//! preflight step when the spec has a `redis` section.
//!
//! Fix: accept it for the migration's days and rotate the Key-Value Store credentials after
//! decommission (`heroku redis:credentials --reset`), or give `sslrootcert=` a CA its
//! certificate chains to.

use crate::preflight::{Code, Finding, Severity, UNCHECKED_RISK};

/// The warning for the Redis URL stored under `param`, when its TLS check is encrypt-only.
pub fn check(tls: Option<crate::TlsCheck>, param: &str) -> Option<Finding> {
    (tls == Some(crate::TlsCheck::EncryptOnly)).then(|| Finding::about(
        Severity::Warning,
        Code::RedisCertificateUnchecked,
        param,
        format!("{UNCHECKED_RISK} (the endpoint's Redis proxy connects to it the same way)."),
        "accept it for the migration's days and rotate the Key-Value Store credentials after decommission (heroku redis:credentials --reset), or give sslrootcert= a CA its certificate chains to",
    ))
}

#[cfg(test)]
mod tests {
    use crate::TlsCheck;

    #[test]
    fn only_an_encrypt_only_connection_is_warned() {
        let f = super::check(Some(TlsCheck::EncryptOnly), "/ferry/app/redis").expect("warned");
        assert_eq!(f.object.as_deref(), Some("/ferry/app/redis"));
        assert!(f.message.contains("Redis proxy"), "{f}");
        assert!(super::check(None, "/p").is_none(), "plain redis:// is refused elsewhere");
        assert!(super::check(Some(TlsCheck::VerifyFull), "/p").is_none());
    }
}
