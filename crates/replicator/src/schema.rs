//! Schema copy with pg_dump: pre-data (types, tables, sequences) before the snapshot copy, post-data
//! (primary keys, indexes, constraints, triggers) after it, so the copy writes into bare tables.

use std::{path::PathBuf, process::Stdio};

use ferry_pg::PgUrl;
use tokio::io::AsyncWriteExt;

use crate::error::{ReplError, ReplResult};

/// Where the PostgreSQL client tools live. pg_dump must be at least as new as the source.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Folder holding `pg_dump` and `psql`.
    pub bin_dir: PathBuf,
}

/// A pg_dump section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Types, tables, sequences, functions.
    PreData,
    /// Primary keys, indexes, constraints, triggers, rules.
    PostData,
}

impl Tools {
    /// Dumps one section of the source's schema as SQL (Ferry's own schema left out).
    pub async fn dump(&self, source: &PgUrl, section: Section) -> ReplResult<String> {
        let (url, password) = source.for_libpq();
        let section = match section {
            Section::PreData => "pre-data",
            Section::PostData => "post-data",
        };
        let mut cmd = tokio::process::Command::new(self.bin_dir.join("pg_dump"));
        cmd.arg("--dbname")
            .arg(&url)
            .arg(format!("--section={section}"))
            .args([
                "--schema-only",
                "--no-owner",
                "--no-privileges",
                "--no-publications",
                "--no-subscriptions",
            ])
            .arg(format!(
                "--exclude-schema={}",
                ferry_pg::catalog::FERRY_SCHEMA
            ));
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| ReplError::Tool {
                tool: "pg_dump".into(),
                detail: format!("start {}: {e}", self.bin_dir.join("pg_dump").display()),
            })?;
        if !out.status.success() {
            return Err(ReplError::Tool {
                tool: "pg_dump".into(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        String::from_utf8(out.stdout).map_err(|e| ReplError::Tool {
            tool: "pg_dump".into(),
            detail: format!("output is not UTF-8: {e}"),
        })
    }

    /// Runs SQL (a pg_dump section) on the target with psql, stopping at the first error, in
    /// one transaction.
    pub async fn restore(&self, target: &PgUrl, sql: &str) -> ReplResult<()> {
        let (url, password) = target.for_libpq();
        let mut cmd = tokio::process::Command::new(self.bin_dir.join("psql"));
        cmd.arg("--dbname").arg(&url).args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            "-",
        ]);
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ReplError::Tool {
                tool: "psql".into(),
                detail: format!("start {}: {e}", self.bin_dir.join("psql").display()),
            })?;
        let mut stdin = child.stdin.take().ok_or_else(|| ReplError::Tool {
            tool: "psql".into(),
            detail: "no stdin".into(),
        })?;
        let input = sql.as_bytes().to_vec();
        let writer = tokio::spawn(async move {
            let r = stdin.write_all(&input).await;
            drop(stdin);
            r
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| ReplError::Tool {
                tool: "psql".into(),
                detail: e.to_string(),
            })?;
        let _ = writer.await;
        if !out.status.success() {
            return Err(ReplError::Tool {
                tool: "psql".into(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }
}
