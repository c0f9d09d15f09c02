//! Redis connection URLs as Heroku and ElastiCache give them: `rediss://:password@host:port`
//! (TLS) or `redis://…` (plain), an optional `/db`, and Ferry's TLS options in the query:
//! `ssl_cert_reqs=none` (Heroku's self-signed certificates, as Heroku's docs tell clients to
//! connect: encrypted, certificate not checked) or `sslrootcert=/path/ca.pem` (checked against
//! that CA). Without either, a `rediss://` server's certificate is checked against the public
//! roots, host name included (ElastiCache). Its `Debug` shows the redacted URL only.

use std::path::PathBuf;

use ferry_core::secret::Secret;
use ferry_pg::TlsCheck;

use crate::{KvError, KvResult};

/// A parsed Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Logical database (`SELECT`).
    pub db: u32,
    /// How TLS is checked; `None` for plain `redis://`.
    pub tls: Option<TlsCheck>,
    /// The CA to check the server against.
    pub root_cert: Option<PathBuf>,
    /// ACL user (Redis 6+); `None` for the default user.
    pub username: Option<String>,
    password: Option<Secret>,
    redacted: String,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable Redis URL>".into(),
    }
}

impl RedisUrl {
    /// Parses `text`; errors name what is wrong with a redacted URL.
    pub fn parse(text: &str) -> KvResult<Self> {
        let redacted = redact(text);
        let bad = |reason: &str| KvError::BadUrl {
            url: redacted.clone(),
            reason: reason.to_string(),
        };
        let u = url::Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        let tls = match u.scheme() {
            "rediss" => true,
            "redis" => false,
            other => {
                return Err(bad(&format!(
                    "scheme {other}: use rediss:// (TLS) or redis://"
                )));
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = u.port().unwrap_or(6379);
        let db = match u.path().trim_start_matches('/') {
            "" => 0,
            d => d
                .parse::<u32>()
                .ok()
                .filter(|d| *d < 16_384)
                .ok_or_else(|| bad("the path must be a database number (0, 1, …)"))?,
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let username = Some(decode(u.username())).filter(|s| !s.is_empty());
        let password = u.password().map(|p| Secret::new(decode(p)));
        let mut check = tls.then_some(TlsCheck::VerifyFull);
        let mut root_cert = None;
        for (k, v) in u.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("ssl_cert_reqs", "none" | "CERT_NONE") if tls => {
                    check = Some(TlsCheck::EncryptOnly);
                }
                ("ssl_cert_reqs", "required" | "CERT_REQUIRED") if tls => {}
                ("sslrootcert", path) if tls && !path.is_empty() => {
                    root_cert = Some(PathBuf::from(path));
                }
                (k, _) => {
                    return Err(bad(&format!(
                        "unknown or misplaced option {k}: the options are ssl_cert_reqs=none and sslrootcert=<path> (rediss:// only)"
                    )));
                }
            }
        }
        Ok(Self {
            host,
            port,
            db,
            tls: check,
            root_cert,
            username,
            password,
            redacted,
        })
    }

    /// The password, for AUTH.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The same server, another logical database.
    pub fn with_db(&self, db: u32) -> Self {
        Self { db, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heroku_and_elasticache_forms_parse_and_never_print_the_password() {
        let u = RedisUrl::parse(
            "rediss://:p%40ss:w0rd@ec2-1-2-3-4.compute-1.amazonaws.com:25690?ssl_cert_reqs=none",
        )
        .expect("parses");
        assert_eq!(u.port, 25690);
        assert_eq!(u.db, 0);
        assert_eq!(u.tls, Some(TlsCheck::EncryptOnly));
        assert_eq!(u.password().map(|p| p.expose()), Some("p@ss:w0rd"));
        for shown in [format!("{u:?}"), u.to_string()] {
            assert!(
                !shown.contains("w0rd") && !shown.contains("p%40ss"),
                "{shown}"
            );
        }
        let e = RedisUrl::parse("rediss://ferry:secret@master.x.cache.amazonaws.com:6379/2")
            .expect("parses");
        assert_eq!(
            (e.db, e.tls, e.username.as_deref()),
            (2, Some(TlsCheck::VerifyFull), Some("ferry"))
        );
        assert_eq!(
            RedisUrl::parse("redis://localhost").expect("parses").tls,
            None
        );
    }

    #[test]
    fn bad_urls_say_what_to_fix_without_the_password() {
        for (text, says) in [
            ("http://:pw@h:1", "scheme http"),
            ("rediss://:pw@h:1/x", "database number"),
            (
                "rediss://:pw@h:1?verify=0",
                "unknown or misplaced option verify",
            ),
            ("redis://:pw@h:1?ssl_cert_reqs=none", "misplaced"),
        ] {
            let e = RedisUrl::parse(text).expect_err("refused").to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains(":pw@"), "{e}");
        }
    }
}
