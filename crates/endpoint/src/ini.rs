//! `pgbouncer.ini` and `auth_file`, rendered from the backend URL and the client credentials.
//!
//! Pure functions: the supervisor writes the text to private files (mode 0600); nothing here
//! logs. Values go into PgBouncer's connection strings single-quoted with `'` doubled (its
//! loader's rule); anything that cannot be written safely (a newline, a NUL) is refused with
//! the field named.

use std::{fmt, path::PathBuf};

use ferry_core::endpoint::Backend;
use ferry_pg::{PgUrl, TlsCheck};

use crate::EndpointError;

/// The admin user the supervisor logs in as on PgBouncer's console (unix socket only).
pub const ADMIN_USER: &str = "ferry_admin";

/// One backend as the pool connects to it. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendEntry {
    /// Which side this is.
    pub side: Backend,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database on the server.
    pub dbname: String,
    /// Role.
    pub user: String,
    password: String,
    /// `server_tls_sslmode`.
    pub sslmode: &'static str,
    /// `server_tls_ca_file`, when the URL names one.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for BackendEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendEntry")
            .field("side", &self.side)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"***")
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

/// System roots, used for `verify-ca`/`verify-full` backends that name no root certificate.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl BackendEntry {
    /// From a backend URL (the parameter named by `param`, for error messages).
    pub fn from_url(side: Backend, url: &PgUrl, param: &str) -> Result<Self, EndpointError> {
        let bad = |why: &str| EndpointError::Config {
            field: param.to_string(),
            reason: why.to_string(),
        };
        let (host, port) = url
            .host_port()
            .ok_or_else(|| bad("the URL names no TCP host"))?;
        let entry = Self {
            side,
            host,
            port,
            dbname: url
                .dbname()
                .ok_or_else(|| bad("the URL names no database"))?
                .to_string(),
            user: url
                .user()
                .ok_or_else(|| bad("the URL names no user"))?
                .to_string(),
            password: url
                .expose_password()
                .ok_or_else(|| bad("the URL has no password"))?,
            sslmode: match url.tls_check() {
                TlsCheck::EncryptOnly => "require",
                TlsCheck::VerifyCa => "verify-ca",
                TlsCheck::VerifyFull => "verify-full",
            },
            ca_file: url.root_cert().map(PathBuf::from).or_else(|| {
                (url.tls_check() != TlsCheck::EncryptOnly).then(|| PathBuf::from(SYSTEM_ROOTS))
            }),
        };
        for (what, v) in [
            ("host", entry.host.as_str()),
            ("database", &entry.dbname),
            ("user", &entry.user),
            ("password", &entry.password),
        ] {
            if v.chars().any(|c| c.is_control()) {
                return Err(bad(&format!(
                    "the {what} holds a control character, which PgBouncer's config cannot carry"
                )));
            }
        }
        Ok(entry)
    }

    /// The `[databases]` connection string for this backend.
    fn connstr(&self) -> String {
        format!(
            "host={} port={} dbname={} user={} password={}",
            quote(&self.host),
            self.port,
            quote(&self.dbname),
            quote(&self.user),
            quote(&self.password)
        )
    }
}

/// The credentials the app presents to the endpoint (from its DATABASE_URL). `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientLogin {
    /// The database name clients ask for.
    pub dbname: String,
    /// The user clients log in as.
    pub user: String,
    password: String,
}

impl fmt::Debug for ClientLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLogin")
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl ClientLogin {
    /// From the endpoint URL the app fleet uses (the parameter named by `param`).
    pub fn from_url(url: &PgUrl, param: &str) -> Result<Self, EndpointError> {
        let bad = |why: &str| EndpointError::Config {
            field: param.to_string(),
            reason: why.to_string(),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        let dbname = url.dbname().unwrap_or_default().to_string();
        let user = url.user().unwrap_or_default().to_string();
        if !name_ok(&dbname) {
            return Err(bad(
                "the database name must be 1-63 letters, digits, `_` or `-` (it becomes a PgBouncer database entry)",
            ));
        }
        // PgBouncer keeps `pgbouncer` for its admin console: it refuses such an entry and logs
        // the entry's connection string, password included.
        if dbname.eq_ignore_ascii_case("pgbouncer") {
            return Err(bad(
                "the database name `pgbouncer` is PgBouncer's admin console; name the app's database otherwise in the client URL (the entry's name, not the server's database)",
            ));
        }
        if !name_ok(&user) || user == ADMIN_USER {
            return Err(bad(&format!(
                "the user must be 1-63 letters, digits, `_` or `-`, and not `{ADMIN_USER}`"
            )));
        }
        let password = url
            .expose_password()
            .filter(|p| p.len() >= 12)
            .ok_or_else(|| bad("the URL needs a password of at least 12 characters"))?;
        Ok(Self {
            dbname,
            user,
            password,
        })
    }
}

/// Where the supervisor keeps PgBouncer's files and how PgBouncer listens.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Private directory (0700) for the ini, the auth file and the unix socket.
    pub dir: PathBuf,
    /// TCP address clients reach (`*` for every address).
    pub listen_addr: String,
    /// TCP port (also names the unix socket).
    pub port: u16,
    /// TLS certificate and key PgBouncer presents to clients.
    pub client_tls: (PathBuf, PathBuf),
    /// `default_pool_size`: server connections per database and user.
    pub pool_size: u32,
    /// `max_client_conn`.
    pub max_client_conn: u32,
}

impl Layout {
    /// `pgbouncer.ini`.
    pub fn ini_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    /// The auth file.
    pub fn auth_path(&self) -> PathBuf {
        self.dir.join("userlist.txt")
    }
}

/// The whole `pgbouncer.ini` for the app's database pointing at `backend`.
pub fn render_ini(layout: &Layout, client: &ClientLogin, backend: &BackendEntry) -> String {
    let mut ini = String::new();
    ini.push_str("; written by ferry-endpoint; rewritten on every retarget\n[databases]\n");
    ini.push_str(&format!("{} = {}\n", client.dbname, backend.connstr()));
    ini.push_str("\n[pgbouncer]\n");
    let (cert, key) = &layout.client_tls;
    let mut settings: Vec<(&str, String)> = vec![
        ("listen_addr", layout.listen_addr.clone()),
        ("listen_port", layout.port.to_string()),
        ("unix_socket_dir", layout.dir.display().to_string()),
        ("unix_socket_mode", "0700".into()),
        ("auth_type", "scram-sha-256".into()),
        ("auth_file", layout.auth_path().display().to_string()),
        ("admin_users", ADMIN_USER.into()),
        // Transaction pooling: PAUSE waits for transactions, not sessions, to end.
        ("pool_mode", "transaction".into()),
        // Protocol-level named prepared statements survive transaction pooling (>= 1.21).
        ("max_prepared_statements", "200".into()),
        ("default_pool_size", layout.pool_size.to_string()),
        ("max_client_conn", layout.max_client_conn.to_string()),
        (
            "ignore_startup_parameters",
            "extra_float_digits,options".into(),
        ),
        ("client_tls_sslmode", "require".into()),
        ("client_tls_cert_file", cert.display().to_string()),
        ("client_tls_key_file", key.display().to_string()),
        // Clients present no certificate (sslmode require), so no CA checks one; unset, this
        // loads the system's whole trust store on every RELOAD (measured: 42 ms a RELOAD
        // quiet, about 250 ms on a loaded 2-core machine, inside the cutover's window).
        ("client_tls_ca_file", cert.display().to_string()),
        ("server_tls_sslmode", backend.sslmode.into()),
        // A held query waits this long for the pause to end before it fails.
        ("query_wait_timeout", "120".into()),
        // Probes on client and server sockets within the 350 s an NLB or NAT gateway keeps
        // an idle flow (ferry_pg::net's timings).
        ("tcp_keepalive", "1".into()),
        (
            "tcp_keepidle",
            ferry_pg::net::KEEPALIVE_IDLE.as_secs().to_string(),
        ),
        (
            "tcp_keepintvl",
            ferry_pg::net::KEEPALIVE_INTERVAL.as_secs().to_string(),
        ),
        ("tcp_keepcnt", ferry_pg::net::KEEPALIVE_RETRIES.to_string()),
        ("log_connections", "0".into()),
        ("log_disconnections", "0".into()),
    ];
    if let Some(ca) = &backend.ca_file {
        settings.push(("server_tls_ca_file", ca.display().to_string()));
    }
    for (k, v) in settings {
        ini.push_str(&format!("{k} = {v}\n"));
    }
    ini
}

/// The auth file: the app's user and the admin user with their passwords. Plain text on
/// purpose, in a file only this user reads (like the backend passwords in the ini): with a
/// SCRAM secret here, PgBouncer 1.24 reuses the client's SCRAM keys to log in to the server,
/// which fails as soon as the server role differs from the client's (it always does here).
pub fn render_auth(client: &ClientLogin, admin_password: &str) -> String {
    format!(
        "{} {}\n{} {}\n",
        dquote(&client.user),
        dquote(&client.password),
        dquote(ADMIN_USER),
        dquote(admin_password),
    )
}

/// A value in a PgBouncer connection string: single-quoted, `'` doubled.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// A field of the auth file: double-quoted, `"` doubled.
fn dquote(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_consoles_name_is_refused_as_the_apps_database() {
        for name in ["pgbouncer", "PgBouncer"] {
            let e = ClientLogin::from_url(
                &url(&format!(
                    "postgres://app:a-long-password@h:5432/{name}?sslmode=require"
                )),
                "/p/client",
            )
            .expect_err("reserved");
            let text = e.to_string();
            assert!(
                text.contains("/p/client") && text.contains("admin console"),
                "{text}"
            );
            assert!(!text.contains("a-long-password"), "{text}");
        }
    }

    fn url(s: &str) -> PgUrl {
        PgUrl::parse(s).expect("url")
    }

    fn layout() -> Layout {
        Layout {
            dir: "/run/ferry".into(),
            listen_addr: "*".into(),
            port: 6432,
            client_tls: ("/run/ferry/c.crt".into(), "/run/ferry/c.key".into()),
            pool_size: 20,
            max_client_conn: 1000,
        }
    }

    #[test]
    fn backend_values_are_quoted_so_a_password_cannot_add_settings() {
        let b = BackendEntry::from_url(
            Backend::Target,
            &url("postgres://app:pa%27ss%20word%3Dx@db.example:5433/prod?sslmode=require"),
            "/p",
        )
        .expect("entry");
        let client = ClientLogin::from_url(
            &url("postgres://app:a-long-client-secret@endpoint:6432/app"),
            "/c",
        )
        .expect("client");
        let ini = render_ini(&layout(), &client, &b);
        assert!(
            ini.contains(
                "app = host='db.example' port=5433 dbname='prod' user='app' password='pa''ss word=x'\n"
            ),
            "{ini}"
        );
        assert!(ini.contains("server_tls_sslmode = require\n"));
        assert!(!ini.contains("server_tls_ca_file"));
        // Not the system trust store, which PgBouncer would parse again on every RELOAD.
        assert!(
            ini.contains("client_tls_ca_file = /run/ferry/c.crt\n"),
            "{ini}"
        );
        assert!(ini.contains("pool_mode = transaction\n"));
        assert!(ini.contains("max_prepared_statements = 200\n"));
        // Idle flows are probed well within an NLB's or NAT gateway's 350 s.
        for line in [
            "tcp_keepalive = 1\n",
            "tcp_keepidle = 60\n",
            "tcp_keepintvl = 15\n",
            "tcp_keepcnt = 4\n",
        ] {
            assert!(ini.contains(line), "{line:?} missing from {ini}");
        }
    }

    #[test]
    fn verify_full_without_a_root_uses_the_system_roots() {
        let b = BackendEntry::from_url(
            Backend::Target,
            &url("postgres://u:p@db:5432/d?sslmode=verify-full"),
            "/p",
        )
        .expect("entry");
        assert_eq!(b.sslmode, "verify-full");
        assert_eq!(
            b.ca_file.as_deref(),
            Some(std::path::Path::new(SYSTEM_ROOTS))
        );
    }

    #[test]
    fn an_rds_target_is_verified_against_the_shipped_rds_bundle() {
        let b = BackendEntry::from_url(
            Backend::Target,
            &url("postgres://u:p@app.c9akciq32.us-east-1.rds.amazonaws.com:5432/d"),
            "/p",
        )
        .expect("entry");
        assert_eq!(b.sslmode, "verify-full");
        let ca = b.ca_file.as_deref().expect("a CA file");
        assert_eq!(
            std::fs::read_to_string(ca).expect("bundle"),
            ferry_pg::rds_ca::BUNDLE
        );
    }

    #[test]
    fn debug_never_shows_passwords() {
        let b = BackendEntry::from_url(
            Backend::Source,
            &url("postgres://u:hunter2-secret@db:5432/d"),
            "/p",
        )
        .expect("entry");
        let c = ClientLogin::from_url(&url("postgres://app:client-hunter2-secret@e/app"), "/c")
            .expect("client");
        let shown = format!("{b:?} {c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn bad_client_logins_name_the_parameter() {
        for (u, why) in [
            ("postgres://app:short@e/app", "at least 12"),
            (
                "postgres://ferry_admin:a-long-client-secret@e/app",
                "not `ferry_admin`",
            ),
            (
                "postgres://app:a-long-client-secret@e/a%20b",
                "database name",
            ),
        ] {
            let err = ClientLogin::from_url(&url(u), "/acme/endpoint-url")
                .expect_err(u)
                .to_string();
            assert!(
                err.contains("/acme/endpoint-url") && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn control_characters_are_refused() {
        let err = BackendEntry::from_url(
            Backend::Source,
            &url("postgres://u:a%0Abad@db:5432/d"),
            "/src",
        )
        .expect_err("newline")
        .to_string();
        assert!(err.contains("/src") && err.contains("password"), "{err}");
    }

    #[test]
    fn auth_file_quotes_users_and_passwords() {
        let c = ClientLogin::from_url(&url("postgres://app:client-%22secret%22-1@e/app"), "/c")
            .expect("client");
        let auth = render_auth(&c, "admin-secret-xyz");
        assert_eq!(
            auth,
            "\"app\" \"client-\"\"secret\"\"-1\"\n\"ferry_admin\" \"admin-secret-xyz\"\n"
        );
    }
}
