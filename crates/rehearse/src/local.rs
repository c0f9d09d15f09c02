//! A scratch PostgreSQL server for the rehearsal's target: initdb in a temporary folder, TLS
//! with a certificate made for it (Ferry never connects without TLS), a random password, a
//! free loopback port. Stopped and removed when dropped, unless kept.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use ferry_pg::PgUrl;
use rand::distr::{Alphanumeric, SampleString};

use crate::RehearseError;

/// PostgreSQL client and server programs the rehearsal runs.
const PROGRAMS: [&str; 4] = ["initdb", "pg_ctl", "pg_dump", "psql"];

/// The folder with PostgreSQL's programs at least `min_major`: `given` if set (it must
/// qualify), else `FERRY_PG_BIN`, else the newest `/usr/lib/postgresql/<major>/bin`.
pub fn find_bin(given: Option<&Path>, min_major: i32) -> Result<(PathBuf, i32), RehearseError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(g) = given {
        candidates.push(g.to_path_buf());
    } else {
        if let Some(env) = std::env::var_os("FERRY_PG_BIN") {
            candidates.push(PathBuf::from(env));
        }
        let mut installed: Vec<(i32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<i32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        installed.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
        candidates.extend(installed.into_iter().map(|(_, p)| p));
    }
    let mut seen = Vec::new();
    for dir in candidates {
        if let Some(missing) = PROGRAMS.iter().find(|p| !dir.join(p).exists()) {
            seen.push(format!("{} (no {missing})", dir.display()));
            continue;
        }
        let major = major_of(&dir)?;
        if major >= min_major {
            return Ok((dir, major));
        }
        seen.push(format!("{} (PostgreSQL {major})", dir.display()));
    }
    Err(RehearseError::Tools(format!(
        "no PostgreSQL {min_major} or newer programs ({}) found{}; install them (apt-get install postgresql-{min_major}) and pass --pg-bin DIR or set FERRY_PG_BIN",
        PROGRAMS.join(", "),
        if seen.is_empty() {
            String::new()
        } else {
            format!(" (looked at {})", seen.join(", "))
        }
    )))
}

fn major_of(dir: &Path) -> Result<i32, RehearseError> {
    let out = run(
        Command::new(dir.join("pg_ctl")).arg("--version"),
        "pg_ctl --version",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            RehearseError::Tools(format!(
                "{}: cannot read the version from {text:?}",
                dir.display()
            ))
        })
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, RehearseError> {
    let out = cmd
        .output()
        .map_err(|e| RehearseError::Local(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(RehearseError::Local(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A running scratch server.
#[derive(Debug)]
pub struct LocalServer {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    keep: bool,
    /// How to reach it (TLS, verified against its own certificate).
    pub url: PgUrl,
    /// Its major version.
    pub major: i32,
}

impl LocalServer {
    /// Starts a server with `bin`'s programs. PostgreSQL refuses to run as root: as root the
    /// server runs as the `postgres` user.
    pub fn start(bin: &Path, major: i32, keep: bool) -> Result<Self, RehearseError> {
        let dir = std::env::temp_dir().join(format!(
            "ferry-rehearse-{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 8)
                .to_lowercase()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| RehearseError::Local(format!("create {}: {e}", dir.display())))?;
        let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| RehearseError::Local(format!("find a free port: {e}")))?
            .port();
        let server = LocalServer {
            as_postgres: is_root(),
            url: PgUrl::parse(&format!(
                "postgres://ferry:{password}@127.0.0.1:{port}/rehearsal?sslmode=verify-full&sslrootcert={}",
                dir.join("ca.crt").display()
            ))?,
            dir,
            bin: bin.to_path_buf(),
            keep,
            major,
        };
        server.init(port, &password)?;
        server.sql(port, "CREATE DATABASE rehearsal")?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for a server program, as `postgres` when we are root.
    fn program(&self, name: &str) -> Command {
        self.command(self.bin.join(name))
    }

    /// A command run as `postgres` when we are root (files it writes are the server's).
    fn command(&self, path: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// initdb with the password from a file only the server's user reads (never on a command
    /// line, where `ps` shows it, nor in a statement an error message would echo).
    fn init(&self, port: u16, password: &str) -> Result<(), RehearseError> {
        let data = self.data();
        if self.as_postgres {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&self.dir),
                "chown the scratch folder to postgres",
            )?;
        }
        let pwfile = self.dir.join("pwfile");
        {
            use std::{io::Write, os::unix::fs::OpenOptionsExt};
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)
                .and_then(|mut f| f.write_all(password.as_bytes()))
                .map_err(|e| RehearseError::Local(format!("write the password file: {e}")))?;
        }
        if self.as_postgres {
            run(
                Command::new("chown").arg("postgres:postgres").arg(&pwfile),
                "chown the password file to postgres",
            )?;
        }
        let made = run(
            self.program("initdb")
                .arg("-D")
                .arg(&data)
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["--auth=trust", "--no-sync", "-E", "UTF8", "-U", "ferry"]),
            "initdb",
        );
        let _ = std::fs::remove_file(&pwfile);
        made?;
        let (crt, key) = self.certificates(&data)?;
        let conf = format!(
            "\n# ferry rehearse: scratch target\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\nssl = on\nssl_cert_file = '{crt}'\nssl_key_file = '{key}'\npassword_encryption = 'scram-sha-256'\n",
            dir = self.dir.display(),
            crt = crt.display(),
            key = key.display(),
        );
        append(&data.join("postgresql.conf"), &conf)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(|e| RehearseError::Local(format!("write pg_hba.conf: {e}")))?;
        run(
            self.program("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )?;
        Ok(())
    }

    /// A CA of its own and a server certificate it signs for localhost and 127.0.0.1 (a
    /// verifier refuses a self-signed CA used as the server's certificate); Ferry checks the
    /// server against the CA.
    fn certificates(&self, data: &Path) -> Result<(PathBuf, PathBuf), RehearseError> {
        let at = |name: &str| self.dir.join(name);
        let key = data.join("server.key");
        std::fs::write(
            at("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(|e| RehearseError::Local(format!("write ext.cnf: {e}")))?;
        let steps: [(&str, Vec<std::ffi::OsString>); 3] = [
            (
                "make the scratch CA",
                args(&[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .chain(args(&["-subj", "/CN=ferry rehearse scratch CA", "-keyout"]))
                .chain([at("ca.key").into(), "-out".into(), at("ca.crt").into()])
                .collect(),
            ),
            (
                "make the server's key and request",
                args(&[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                ])
                .chain(["-keyout".into(), key.clone().into(), "-out".into()])
                .chain([at("server.csr").into()])
                .collect(),
            ),
            (
                "sign the server's certificate",
                args(&["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                    .chain([at("server.csr").into(), "-CA".into(), at("ca.crt").into()])
                    .chain(["-CAkey".into(), at("ca.key").into(), "-extfile".into()])
                    .chain([at("ext.cnf").into(), "-out".into(), at("server.crt").into()])
                    .collect(),
            ),
        ];
        for (what, argv) in steps {
            run(
                self.command("openssl").args(argv),
                &format!("openssl: {what}"),
            )?;
        }
        run(
            self.command("chmod").arg("600").arg(&key),
            "chmod the scratch server's key",
        )?;
        Ok((at("server.crt"), key))
    }

    /// Runs one statement as the server's superuser over its local socket.
    fn sql(&self, port: u16, statement: &str) -> Result<(), RehearseError> {
        run(
            self.program("psql")
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &port.to_string(), "-U", "ferry", "-d", "postgres"])
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", statement]),
            "psql on the scratch server",
        )
        .map(drop)
    }

    /// Where it keeps its files (kept after the run with `keep`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn args(list: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
    list.iter()
        .map(std::ffi::OsString::from)
        .collect::<Vec<_>>()
        .into_iter()
}

fn append(path: &Path, text: &str) -> Result<(), RehearseError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| RehearseError::Local(format!("write {}: {e}", path.display())))
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let stopped = self
            .program("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output();
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "stop the scratch server");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "remove the scratch server's folder");
        }
    }
}
