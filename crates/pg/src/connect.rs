//! TLS connections to the source (Heroku Postgres) and target (RDS). Ferry never connects
//! without TLS.
//!
//! `sslmode` follows libpq, with TLS as the floor:
//! - absent or `require`: encrypted; the certificate is verified against `sslrootcert` when
//!   one is given (like libpq), otherwise not (Heroku's certificates do not chain to a public
//!   CA on every plan);
//! - `verify-ca`: the chain must lead to `sslrootcert` (or the public web roots);
//! - `verify-full`: as `verify-ca`, and the certificate must name the host;
//! - `disable`, `allow`, `prefer`: refused.
//!
//! An RDS endpoint (`*.rds.amazonaws.com`) named with neither `sslmode` nor `sslrootcert` is
//! `verify-full` against AWS's RDS CA bundle, which Ferry ships (`crate::rds_ca`).

use std::{path::PathBuf, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tokio_postgres::{Client, config::SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A session's connection half, over TLS.
type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

use crate::PgError;

/// How strictly the server certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsCheck {
    /// Encrypted, certificate not checked (libpq `require` without a root certificate).
    EncryptOnly,
    /// Chain checked against the roots, host name not checked.
    VerifyCa,
    /// Chain and host name checked.
    VerifyFull,
}

/// A parsed connection URL: the tokio-postgres config plus Ferry's TLS settings. Its `Debug`
/// shows the redacted URL only.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    check: TlsCheck,
    root_cert: Option<PathBuf>,
    /// The check and root above were implied by an RDS host, not written in the URL.
    rds_default: bool,
    redacted: String,
    raw: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUrl")
            .field("url", &self.redacted)
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl PgUrl {
    /// Parses a `postgres://` URL. `sslmode` and `sslrootcert` are read here; other
    /// parameters go to tokio-postgres.
    pub fn parse(url: &str) -> Result<Self, PgError> {
        let invalid = |reason: String| PgError::InvalidUrl {
            url: redact(url),
            reason,
        };
        let parts = Parts::split(url).ok_or_else(|| {
            invalid("not a URL; write postgres://user:password@host:port/dbname".into())
        })?;
        let mut sslmode = None;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for (k, v) in &parts.query {
            match (*k, v) {
                ("sslmode", Some(v)) => sslmode = Some(v.to_string()),
                ("sslrootcert", Some(v)) => root_cert = Some(PathBuf::from(percent_decode(v))),
                _ => rest.push((*k, *v)),
            }
        }
        let mut check = match sslmode.as_deref() {
            None | Some("require") if root_cert.is_some() => TlsCheck::VerifyCa,
            None | Some("require") => TlsCheck::EncryptOnly,
            Some("verify-ca") => TlsCheck::VerifyCa,
            Some("verify-full") => TlsCheck::VerifyFull,
            Some(other) => {
                return Err(invalid(format!(
                    "sslmode={other} is not allowed: Ferry always uses TLS; use require, verify-ca or verify-full"
                )));
            }
        };
        // What tokio-postgres parses: user and password percent-encoded whatever the URL had
        // (an unencoded `?`, `/`, `@` or `#` in a password is common and allowed by RDS).
        let rebuilt = parts.rebuild(Secrets::Encode, &rest);
        let mut config: tokio_postgres::Config =
            rebuilt.parse().map_err(|e| invalid(format!("{e}")))?;
        config.ssl_mode(SslMode::Require);
        if config.get_hosts().is_empty() {
            return Err(invalid(
                "no host; write postgres://user:password@host:port/dbname".into(),
            ));
        }
        let rds_default = sslmode.is_none() && root_cert.is_none() && names_rds(&config);
        if rds_default {
            let bundle = crate::rds_ca::bundle_path().map_err(|reason| PgError::Tls {
                url: redact(url),
                reason,
            })?;
            root_cert = Some(bundle.to_path_buf());
            check = TlsCheck::VerifyFull;
        }
        Ok(Self {
            config,
            check,
            root_cert,
            rds_default,
            redacted: redact(url),
            raw: url.to_string(),
        })
    }

    /// The full URL, password included: a secret, for handing to a secret store only.
    pub fn expose_secret(&self) -> &str {
        &self.raw
    }

    /// The URL with its password replaced by `***`, safe to log.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The certificate check in force.
    pub fn tls_check(&self) -> TlsCheck {
        self.check
    }

    /// The database name.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server with another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other.raw = replace_dbname(&self.raw, dbname);
        other.redacted = redact(&other.raw);
        other
    }

    /// This URL with the user and password of `other` (everything else — host, database,
    /// sslmode, root certificate — kept): after a credential rotation.
    pub fn with_login_of(&self, other: &PgUrl) -> Result<PgUrl, PgError> {
        let (Some(mut mine), Some(theirs)) = (Parts::split(&self.raw), Parts::split(&other.raw))
        else {
            return Err(PgError::InvalidUrl {
                url: self.redacted.clone(),
                reason: "cannot take the login of another URL".into(),
            });
        };
        mine.user = theirs.user;
        mine.password = theirs.password;
        PgUrl::parse(&mine.rebuild(Secrets::Keep, &mine.query))
    }

    /// This URL with another password (everything else kept): after Secrets Manager rotated
    /// it.
    pub fn with_password(&self, password: &str) -> Result<PgUrl, PgError> {
        let Some(mut mine) = Parts::split(&self.raw) else {
            return Err(PgError::InvalidUrl {
                url: self.redacted.clone(),
                reason: "cannot replace the password".into(),
            });
        };
        let encoded = percent_encode(password);
        mine.password = Some(&encoded);
        PgUrl::parse(&mine.rebuild(Secrets::Keep, &mine.query))
    }

    /// Whether `other` names the same database on the same server (any login).
    pub fn same_database(&self, other: &PgUrl) -> bool {
        self.host_port() == other.host_port() && self.dbname() == other.dbname()
    }

    /// The first host and port (TCP), for a pooler's backend entry.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let host = match self.config.get_hosts().first()? {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => return None,
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        Some((host, port))
    }

    /// The password, if the URL has one: a secret, for a pooler's private config file only.
    pub fn expose_password(&self) -> Option<String> {
        self.config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// The root certificate file given as `sslrootcert`, if any.
    pub fn root_cert(&self) -> Option<&std::path::Path> {
        self.root_cert.as_deref()
    }

    /// The role the URL logs in as.
    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// For libpq tools (pg_dump, psql): the URL without its password, and the password to
    /// pass as `PGPASSWORD` (so it never shows in a process list).
    pub fn for_libpq(&self) -> (String, Option<String>) {
        let password = self
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let url = match Parts::split(&self.raw) {
            Some(parts) => {
                let implied_root = self
                    .root_cert
                    .as_deref()
                    .filter(|_| self.rds_default)
                    .map(|p| percent_encode(&p.to_string_lossy()));
                let mut query: Vec<(&str, Option<&str>)> = parts
                    .query
                    .iter()
                    .filter(|(k, _)| !SECRET_PARAMS.contains(k))
                    .copied()
                    .collect();
                if let Some(root) = implied_root.as_deref() {
                    query.push(("sslmode", Some("verify-full")));
                    query.push(("sslrootcert", Some(root)));
                }
                parts.rebuild(Secrets::Drop, &query)
            }
            None => String::new(),
        };
        (url, password)
    }

    /// Opens a Ferry session; its I/O runs on a spawned task that ends when the client is
    /// dropped.
    pub async fn connect(&self) -> Result<Client, PgError> {
        self.open(true).await
    }

    /// Opens a session as an application would: none of Ferry's session options, so a role
    /// frozen by the cutover is read-only in it (rehearsals' sample app).
    pub async fn connect_as_app(&self) -> Result<Client, PgError> {
        self.open(false).await
    }

    /// Opens a Ferry session that listens on `channel` (LISTEN): the payload of every
    /// notification on it arrives on the receiver, which ends when the session does.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), PgError> {
        let (client, mut connection) = self.dial(true).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let url = self.redacted.clone();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(url = %url, error = %e, "listening session ended with an error");
                        return;
                    }
                    None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", crate::catalog::quote_ident(channel)))
            .await
            .map_err(|source| PgError::Query {
                what: "listen for wake-ups",
                source,
            })?;
        Ok((client, rx))
    }

    /// Connects; the caller drives the connection.
    async fn dial(&self, ferry_session: bool) -> Result<(Client, Connection), PgError> {
        let tls = MakeRustlsConnect::new(self.client_config()?);
        self.session_config(ferry_session)
            .connect(tls)
            .await
            .map_err(|source| PgError::Connect {
                url: self.redacted.clone(),
                source,
            })
    }

    async fn open(&self, ferry_session: bool) -> Result<Client, PgError> {
        let (client, connection) = self.dial(ferry_session).await?;
        let url = self.redacted.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(url = %url, error = %e, "postgres connection ended with an error");
            }
        });
        Ok(client)
    }

    /// The driver's settings for a session: keepalives, and for Ferry's own sessions its
    /// name and options.
    fn session_config(&self, ferry_session: bool) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        // Probes within the 350 s an NLB or NAT gateway keeps an idle flow (the driver's
        // default waits two hours); a URL asking for sooner keeps its own, and one with
        // `keepalives=0` (libpq's way to turn them off) has none.
        if config.get_keepalives() {
            let idle = config.get_keepalives_idle().min(crate::net::KEEPALIVE_IDLE);
            config
                .keepalives_idle(idle)
                .keepalives_interval(crate::net::KEEPALIVE_INTERVAL)
                .keepalives_retries(crate::net::KEEPALIVE_RETRIES);
        }
        if ferry_session {
            // Ferry's sessions are named (the cutover's session termination spares them) and
            // writable even when the cutover froze the role with default_transaction_read_only.
            if config.get_application_name().is_none() {
                config.application_name(crate::freeze::APPLICATION_NAME);
            }
            let options = match config.get_options() {
                Some(o) => format!("{o} {}", crate::freeze::SESSION_OPTIONS),
                None => crate::freeze::SESSION_OPTIONS.to_string(),
            };
            config.options(&options);
        }
        config
    }

    fn client_config(&self) -> Result<ClientConfig, PgError> {
        if self.check == TlsCheck::EncryptOnly && names_rds(&self.config) {
            tracing::warn!(url = %self.redacted, "RDS certificate not verified: the URL says sslmode=require; drop sslmode to check it against the RDS CA bundle Ferry ships");
        } else if self.check == TlsCheck::EncryptOnly {
            tracing::warn!(url = %self.redacted, "server certificate not verified (sslmode=require without sslrootcert)");
        }
        client_tls(self.check, self.root_cert.as_deref()).map_err(|reason| PgError::Tls {
            url: self.redacted.clone(),
            reason,
        })
    }
}

/// Whether the URL's first host is an RDS endpoint.
fn names_rds(config: &tokio_postgres::Config) -> bool {
    matches!(config.get_hosts().first(), Some(tokio_postgres::config::Host::Tcp(h)) if crate::rds_ca::is_rds_host(h))
}

/// The rustls client configuration for a server checked as `check` says, against the PEM
/// roots at `root_cert` (the public web roots without one). Shared by every TLS client of
/// Ferry's (PostgreSQL, Redis), so they check certificates the same way.
pub fn client_tls(
    check: TlsCheck,
    root_cert: Option<&std::path::Path>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if check == TlsCheck::EncryptOnly {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect)
                .map_err(|e| format!("read root certificate {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "root certificate {} holds no usable certificate",
                    path.display()
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verify {
            inner: webpki,
            check_name: check == TlsCheck::VerifyFull,
        }));
    Ok(config.with_no_client_auth())
}

/// Checks the chain, and the host name only for `verify-full`.
#[derive(Debug)]
struct Verify {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// libpq's `sslmode=require`: any certificate, but the handshake signatures are still checked
/// so the session is really encrypted to the holder of the presented key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Replaces the password in a `postgres://user:password@host/db` URL with `***`.
pub fn redact(url: &str) -> String {
    let Some(parts) = Parts::split(url) else {
        return "<not a URL>".to_string();
    };
    let query: Vec<(&str, Option<&str>)> = parts
        .query
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if SECRET_PARAMS.contains(k) {
                    Some("***")
                } else {
                    *v
                },
            )
        })
        .collect();
    parts.rebuild(Secrets::Mask, &query)
}

/// Query parameters that carry a secret.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// What [`Parts::rebuild`] does with the password.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrets {
    /// Percent-encode user and password (for the URL parser).
    Encode,
    /// `***` instead of the password (for logs).
    Mask,
    /// No password (for libpq tools, which get it from the environment).
    Drop,
    /// Everything as written (the secret form, for the secret store).
    Keep,
}

/// A connection URL cut into its parts without trusting the password to be percent-encoded:
/// the user information ends at the *last* `@` (so a `?`, `/`, `#` or `@` in the password
/// stays in it; an `@` in the query must be encoded).
struct Parts<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    /// `host[:port][,host[:port]…]`.
    host: &'a str,
    /// `/dbname` or empty.
    path: &'a str,
    query: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Parts<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let (userinfo, after) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').ok_or(u)) {
            Some(Ok((u, p))) => (Some(u), Some(p)),
            Some(Err(u)) => (Some(u), None),
            None => (None, None),
        };
        let after = after.split_once('#').map_or(after, |(a, _)| a);
        let (before_q, query) = after.split_once('?').unwrap_or((after, ""));
        let (host, path) = before_q.split_at(before_q.find('/').unwrap_or(before_q.len()));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            })
            .collect();
        Some(Self {
            scheme,
            user,
            password,
            host,
            path,
            query,
        })
    }

    fn rebuild(&self, secrets: Secrets, query: &[(&str, Option<&str>)]) -> String {
        let enc = |s: &str| -> String {
            if secrets == Secrets::Encode {
                percent_encode(&percent_decode(s))
            } else {
                s.to_string()
            }
        };
        let mut out = format!("{}://", self.scheme);
        if let Some(user) = self.user {
            out.push_str(&enc(user));
            match (self.password, secrets) {
                (Some(p), Secrets::Encode | Secrets::Keep) => {
                    out.push(':');
                    out.push_str(&enc(p));
                }
                (Some(_), Secrets::Mask) => out.push_str(":***"),
                _ => {}
            }
            out.push('@');
        }
        out.push_str(self.host);
        out.push_str(self.path);
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.to_string(),
                })
                .collect();
            out.push('?');
            out.push_str(&pairs.join("&"));
        }
        out
    }
}

/// Replaces the database name (the path) of a `postgres://` URL, keeping everything else as
/// written (the password included: this is the secret form).
fn replace_dbname(url: &str, dbname: &str) -> String {
    let Some(mut parts) = Parts::split(url) else {
        return url.to_string();
    };
    let path = format!("/{dbname}");
    parts.path = &path;
    parts.rebuild(Secrets::Keep, &parts.query)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://u:s3cret@db.example:5432/app?sslmode=require"),
            "postgres://u:***@db.example:5432/app?sslmode=require"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h"), "postgres://h");
        assert_eq!(redact("p@ss"), "<not a URL>");
    }

    #[test]
    fn sslmode_sets_the_check_and_plaintext_is_refused() {
        let check = |u: &str| PgUrl::parse(u).map(|p| p.tls_check());
        assert_eq!(
            check("postgres://u:p@h/db").ok(),
            Some(TlsCheck::EncryptOnly)
        );
        assert_eq!(
            check("postgres://u:p@h/db?sslmode=require&sslrootcert=/tmp/ca.pem").ok(),
            Some(TlsCheck::VerifyCa)
        );
        assert_eq!(
            check("postgres://u:p@h/db?sslmode=verify-full&application_name=ferry").ok(),
            Some(TlsCheck::VerifyFull)
        );
        let err = check("postgres://u:p@h/db?sslmode=disable").expect_err("plaintext");
        let text = err.to_string();
        assert!(text.contains("sslmode=disable is not allowed"), "{text}");
        assert!(!text.contains(":p@"), "password leaked: {text}");
    }

    #[test]
    fn an_rds_host_without_sslmode_is_verified_against_the_shipped_bundle() {
        let url = PgUrl::parse("postgres://u:pw@app.c9akciq32.us-east-1.rds.amazonaws.com/d")
            .expect("parse");
        assert_eq!(url.tls_check(), TlsCheck::VerifyFull);
        let root = url.root_cert().expect("the bundle");
        assert_eq!(
            std::fs::read_to_string(root).expect("bundle file"),
            crate::rds_ca::BUNDLE
        );
        // pg_dump and psql get the same check.
        let (libpq, password) = url.for_libpq();
        assert!(libpq.contains("sslmode=verify-full"), "{libpq}");
        assert!(libpq.contains("sslrootcert=%2F"), "{libpq}");
        assert!(!libpq.contains("pw"), "{libpq}");
        assert_eq!(password.as_deref(), Some("pw"));
        // What the URL says wins: its own root, or plain encryption.
        let own = PgUrl::parse(
            "postgres://u:pw@app.c9akciq32.us-east-1.rds.amazonaws.com/d?sslrootcert=/etc/ca.pem",
        )
        .expect("parse");
        assert_eq!(own.root_cert(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(own.tls_check(), TlsCheck::VerifyCa);
        let require = PgUrl::parse(
            "postgres://u:pw@app.c9akciq32.us-east-1.rds.amazonaws.com/d?sslmode=require",
        )
        .expect("parse");
        assert_eq!(require.tls_check(), TlsCheck::EncryptOnly);
        assert!(!require.for_libpq().0.contains("sslrootcert"));
        // Elsewhere nothing is implied.
        let heroku =
            PgUrl::parse("postgres://u:pw@ec2-1-2-3-4.compute-1.amazonaws.com/d").expect("parse");
        assert_eq!(heroku.tls_check(), TlsCheck::EncryptOnly);
        assert_eq!(heroku.root_cert(), None);
    }

    #[test]
    fn malformed_urls_never_echo_the_password() {
        for url in [
            "postgres://u:Sup3rS3cret@h:notaport/db",
            "postgres://u:Sup3rS3cret@h/db?unknown_option=1",
            "postgres://u:Sup3rS3cret@h/db?sslmode=allow",
            "postgres://u:Sup3rS3cret@/db",
            "mysql://u:Sup3rS3cret@h/db",
        ] {
            let err = PgUrl::parse(url).expect_err(url).to_string();
            assert!(
                !err.contains("Sup3rS3cret"),
                "{url} leaked its password: {err}"
            );
        }
    }

    #[test]
    fn dbname_is_replaced_and_libpq_url_has_no_password() {
        let url = PgUrl::parse("postgres://u:pw@h:5432/a?sslmode=require").expect("parse");
        let other = url.with_dbname("b");
        assert_eq!(other.dbname(), Some("b"));
        let (libpq, password) = other.for_libpq();
        assert_eq!(libpq, "postgres://u@h:5432/b?sslmode=require");
        assert_eq!(password.as_deref(), Some("pw"));
        assert_eq!(replace_dbname("postgres://h", "x"), "postgres://h/x");
    }

    /// URLs whose password a naive split would miss: `?`, `/`, `@`, `#` unencoded in it (RDS
    /// allows `?`), or the password in the query string.
    const HOSTILE: &[&str] = &[
        "postgres://u:Pa?Zk7Secret@h:5432/db",
        "postgres://u:Pa/Zk7Secret@h:5432/db?sslmode=require",
        "postgres://u:Pa@Zk7Secret@h/db",
        "postgres://u:Pa#Zk7Secret@h/db",
        "postgres://u:Pa?/@Zk7Secret@h/db?sslmode=require",
        "postgres://u@h/db?password=PaZk7Secret",
        "postgres://u@h/db?sslmode=require&password=PaZk7Secret&application_name=x",
        "postgres://u@h/db?sslpassword=PaZk7Secret",
        "postgresql://u:PaZk7Secret@h/db",
        "postgres://u:Pa%3FZk7Secret@h/db",
    ];

    #[test]
    fn hostile_urls_never_show_their_password() {
        for url in HOSTILE {
            let red = redact(url);
            assert!(!red.contains("Zk7Secret"), "redact({url}) = {red}");
            match PgUrl::parse(url) {
                Ok(p) => {
                    for shown in [p.redacted().to_string(), format!("{p:?}"), p.for_libpq().0] {
                        assert!(
                            !shown.contains("Zk7Secret"),
                            "{url} shows its password: {shown}"
                        );
                    }
                    let other = p.with_dbname("other");
                    assert!(!other.redacted().contains("Zk7Secret"));
                    assert_eq!(other.dbname(), Some("other"));
                    assert_eq!(other.expose_password(), p.expose_password(), "{url}");
                }
                Err(e) => {
                    let text = e.to_string();
                    assert!(!text.contains("Zk7Secret"), "{url}: {text}");
                }
            }
        }
    }

    #[test]
    fn unencoded_special_characters_stay_in_the_password() {
        for (url, pw) in [
            ("postgres://u:Pa?Zk7@h:5432/db", "Pa?Zk7"),
            ("postgres://u:Pa/Zk7@h/db?sslmode=require", "Pa/Zk7"),
            ("postgres://u:Pa@Zk7@h/db", "Pa@Zk7"),
            ("postgres://u:Pa%3FZk7@h/db", "Pa?Zk7"),
            ("postgres://u@h/db?password=Zk7", "Zk7"),
        ] {
            let p = PgUrl::parse(url).expect(url);
            assert_eq!(p.expose_password().as_deref(), Some(pw), "{url}");
            assert_eq!(p.dbname(), Some("db"), "{url}");
            assert_eq!(p.host_port().map(|h| h.0).as_deref(), Some("h"), "{url}");
            assert_eq!(p.for_libpq().1.as_deref(), Some(pw), "{url}");
        }
    }

    #[test]
    fn a_rotated_login_keeps_the_rest_of_the_url() {
        let stale =
            PgUrl::parse("postgres://u:old@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem")
                .expect("stale");
        let heroku = PgUrl::parse("postgres://u2:Ne?w@h:5432/db").expect("new");
        let fresh = stale.with_login_of(&heroku).expect("login");
        assert_eq!(fresh.user(), Some("u2"));
        assert_eq!(fresh.expose_password().as_deref(), Some("Ne?w"));
        assert_eq!(fresh.tls_check(), TlsCheck::VerifyFull);
        assert!(fresh.same_database(&stale));
        assert!(!fresh.same_database(&stale.with_dbname("other")));
    }

    #[test]
    fn percent_decoding_handles_paths() {
        assert_eq!(percent_decode("%2Ftmp%2Fca.pem"), "/tmp/ca.pem");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("50%"), "50%");
    }
}
