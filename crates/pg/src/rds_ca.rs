//! AWS's RDS certificate bundle, shipped inside Ferry so that a connection to RDS checks the
//! server's certificate and name (`verify-full`) without the team fetching anything.
//!
//! `certs/rds-global-bundle.pem` is AWS's global bundle
//! (<https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem>): the root
//! certificates of every commercial region's RDS CAs (`rds-ca-rsa2048-g1`,
//! `rds-ca-rsa4096-g1`, `rds-ca-ecc384-g1`). `make rds-bundle` refreshes it. A region opened
//! after the copy was taken, GovCloud or a private CA needs `sslrootcert=` in the URL, which
//! always wins over this default.
//!
//! The bundle is embedded in each binary; tools that read a file (pg_dump, psql, PgBouncer)
//! get it written once per process into a fresh private directory.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The bundle's PEM text.
pub const BUNDLE: &str = include_str!("../certs/rds-global-bundle.pem");

/// Whether `host` is an RDS endpoint name (instance, cluster, reader or RDS Proxy), whose
/// certificate the RDS CAs sign.
pub fn is_rds_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    [".rds.amazonaws.com", ".rds.amazonaws.com.cn"]
        .iter()
        .any(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
}

/// The bundle as a file, written on first use into a directory only this process's user can
/// enter (created anew, so nothing another user placed in the temporary directory is read).
pub fn bundle_path() -> Result<&'static Path, String> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| write_bundle(&std::env::temp_dir()))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn write_bundle(base: &Path) -> Result<PathBuf, String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::DirBuilderExt;
    let mut last = String::new();
    for attempt in 0..8u32 {
        let dir = base.join(format!(
            "ferry-rds-ca-{}-{}-{attempt}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        builder.mode(0o700);
        match builder.create(&dir) {
            Ok(()) => {
                let path = dir.join("rds-global-bundle.pem");
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| format!("write the RDS CA bundle to {}: {e}", path.display()))?;
                file.write_all(BUNDLE.as_bytes())
                    .map_err(|e| format!("write the RDS CA bundle to {}: {e}", path.display()))?;
                return Ok(path);
            }
            Err(e) => last = format!("create {}: {e}", dir.display()),
        }
    }
    Err(format!(
        "could not write the RDS CA bundle into {}: {last}; set TMPDIR to a writable directory or give sslrootcert= in the URL",
        base.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_endpoint_names_are_recognised_and_others_are_not() {
        for host in [
            "app.c9akciq32.us-east-1.rds.amazonaws.com",
            "app.cluster-ro-c9akciq32.eu-west-1.rds.amazonaws.com",
            "proxy.proxy-c9akciq32.us-east-2.rds.amazonaws.com",
            "APP.C9AKCIQ32.CN-NORTH-1.RDS.AMAZONAWS.COM.CN",
            "app.c9akciq32.us-east-1.rds.amazonaws.com.",
        ] {
            assert!(is_rds_host(host), "{host}");
        }
        for host in [
            "ec2-1-2-3-4.compute-1.amazonaws.com",
            "rds.amazonaws.com",
            ".rds.amazonaws.com",
            "db.example.com",
            "rds.amazonaws.com.evil.example",
            "127.0.0.1",
        ] {
            assert!(!is_rds_host(host), "{host}");
        }
    }

    #[test]
    fn the_bundle_holds_the_rds_roots_and_is_written_privately() {
        let certs = BUNDLE.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(certs >= 60, "{certs} certificates");
        let dir = std::env::temp_dir().join(format!("ferry-rds-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test dir");
        let path = write_bundle(&dir).expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), BUNDLE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.parent().expect("its directory"))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "directory mode {mode:o}");
        }
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }
}
