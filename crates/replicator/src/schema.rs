//! Schema copy with pg_dump: pre-data (types, tables, sequences) before the snapshot copy, post-data
//! (primary keys, indexes, constraints, triggers) after it, so the copy writes into bare tables.

use std::{path::PathBuf, process::Stdio};

use ferry_pg::PgUrl;
use tokio::io::AsyncWriteExt;

use ferry_pg::catalog::FERRY_SCHEMA;

use crate::{
    capture::trigger::OWN_TRIGGERS,
    error::{ReplError, ReplResult},
};

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
            .arg(format!("--exclude-schema={}", FERRY_SCHEMA));
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        cmd.env("PGOPTIONS", ferry_pg::freeze::SESSION_OPTIONS)
            .env("PGAPPNAME", ferry_pg::freeze::APPLICATION_NAME);
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
        cmd.env("PGOPTIONS", ferry_pg::freeze::SESSION_OPTIONS)
            .env("PGAPPNAME", ferry_pg::freeze::APPLICATION_NAME);
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

/// A post-data script split for parallel restore: index and key builds are independent across
/// tables and run in parallel; everything else (foreign keys, partition index attachments,
/// triggers, rules) runs afterwards, in the dump's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostData {
    /// Session settings from the dump's header (`SET …`, `set_config`).
    pub preamble: Vec<String>,
    /// Per table (`schema.name`, unquoted): its primary key, unique constraints and indexes.
    pub per_table: Vec<(String, Vec<String>)>,
    /// The rest, in order.
    pub dependent: Vec<String>,
}

/// Splits a plain-format pg_dump post-data script into statements and groups them.
pub fn split_post_data(sql: &str) -> PostData {
    let mut out = PostData::default();
    let mut current = String::new();
    let mut depth: i32 = 0;
    for line in sql.lines() {
        let trimmed = line.trim();
        if current.is_empty()
            && (trimmed.is_empty() || trimmed.starts_with("--") || trimmed.starts_with('\\'))
        {
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        depth += paren_depth(line);
        if trimmed.ends_with(';') && depth <= 0 {
            let stmt = std::mem::take(&mut current);
            depth = 0;
            classify(stmt, &mut out);
        }
    }
    if !current.trim().is_empty() {
        out.dependent.push(current);
    }
    out
}

fn paren_depth(line: &str) -> i32 {
    let (mut depth, mut quote) = (0, None::<char>);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// Splits on whitespace, keeping double-quoted identifiers (which may hold spaces) whole.
fn tokens(stmt: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in stmt.chars() {
        if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `public."My Table"` → `public.My Table` (the form `Table::display_name` uses).
fn unquote_qualified(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.trim_end_matches(';').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                out.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            _ => out.push(c),
        }
    }
    out
}

/// Whether `stmt` is, or switches, one of Ferry's own capture triggers: a source that still
/// carries them from an earlier, unfinished migration dumps them with its tables, but they call
/// functions in Ferry's schema, which the dump leaves out, and they capture for the source
/// only; restored on the target they would fail, so they are left out too.
fn is_ferrys_trigger(t: &[String]) -> bool {
    let upper = |i: usize| t.get(i).map(|w| w.to_ascii_uppercase()).unwrap_or_default();
    if upper(0) == "CREATE" && (upper(1) == "TRIGGER" || upper(2) == "TRIGGER") {
        let calls_ferry = t.windows(3).any(|w| {
            w[0].eq_ignore_ascii_case("EXECUTE")
                && (w[1].eq_ignore_ascii_case("FUNCTION") || w[1].eq_ignore_ascii_case("PROCEDURE"))
                && (w[2].starts_with(&format!("{FERRY_SCHEMA}."))
                    || w[2].starts_with(&format!("\"{FERRY_SCHEMA}\".")))
        });
        return calls_ferry;
    }
    // ALTER TABLE [ONLY] <t> ENABLE|DISABLE [ALWAYS|REPLICA] TRIGGER <name>;
    if upper(0) == "ALTER" && upper(1) == "TABLE" {
        let action = if upper(2) == "ONLY" { 4 } else { 3 };
        if !matches!(upper(action).as_str(), "ENABLE" | "DISABLE") {
            return false;
        }
        let mut at = action + 1;
        if matches!(upper(at).as_str(), "ALWAYS" | "REPLICA") {
            at += 1;
        }
        let name = t.get(at + 1).map(|n| n.trim_end_matches(';')).unwrap_or("");
        return upper(at) == "TRIGGER" && OWN_TRIGGERS.contains(&name);
    }
    false
}

fn classify(stmt: String, out: &mut PostData) {
    let t = tokens(&stmt);
    if is_ferrys_trigger(&t) {
        tracing::info!(
            statement = stmt.lines().next().unwrap_or(""),
            "leaving out a capture trigger of an earlier migration from the target's schema"
        );
        return;
    }
    let upper: Vec<String> = t.iter().take(8).map(|s| s.to_ascii_uppercase()).collect();
    let word = |i: usize| upper.get(i).map(String::as_str).unwrap_or("");
    if word(0) == "SET"
        || stmt
            .trim_start()
            .starts_with("SELECT pg_catalog.set_config(")
    {
        out.preamble.push(stmt);
        return;
    }
    // ALTER TABLE ONLY <t> ADD CONSTRAINT <n> PRIMARY KEY | UNIQUE …
    if word(0) == "ALTER" && word(1) == "TABLE" {
        let at = if word(2) == "ONLY" { 3 } else { 2 };
        if word(at + 1) == "ADD"
            && word(at + 2) == "CONSTRAINT"
            && matches!(word(at + 4), "PRIMARY" | "UNIQUE")
            && let Some(table) = t.get(at)
        {
            push_table(out, unquote_qualified(table), stmt);
            return;
        }
    }
    // CREATE [UNIQUE] INDEX <n> ON [ONLY] <t> …
    if word(0) == "CREATE" {
        let at = if word(1) == "UNIQUE" { 2 } else { 1 };
        if word(at) == "INDEX" && word(at + 2) == "ON" {
            let table_at = if word(at + 3) == "ONLY" {
                at + 4
            } else {
                at + 3
            };
            if let Some(table) = t.get(table_at) {
                push_table(out, unquote_qualified(table), stmt);
                return;
            }
        }
    }
    out.dependent.push(stmt);
}

fn push_table(out: &mut PostData, table: String, stmt: String) {
    match out.per_table.iter_mut().find(|(t, _)| *t == table) {
        Some((_, list)) => list.push(stmt),
        None => out.per_table.push((table, vec![stmt])),
    }
}

/// A stable 64-bit FNV-1a hash, hex: the restart marker of one post-data statement.
pub fn statement_key(stmt: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stmt.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"--
-- PostgreSQL database dump
--

\restrict abc

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: Invoices Invoices_pkey; Type: CONSTRAINT; Schema: Billing; Owner: -
--

ALTER TABLE ONLY "Billing"."Invoices"
    ADD CONSTRAINT "Invoices_pkey" PRIMARY KEY ("InvoiceId");

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_email_key UNIQUE (email);

CREATE INDEX orders_customer ON public.orders USING btree (customer_id);

CREATE UNIQUE INDEX "odd name" ON ONLY public."My Table" USING btree (a);

ALTER INDEX public.events_pkey ATTACH PARTITION public.events_2025_pkey;

ALTER TABLE ONLY "Billing"."Invoices"
    ADD CONSTRAINT "Invoices_customer_id_fkey" FOREIGN KEY (customer_id) REFERENCES public.customers(id) ON DELETE CASCADE;

CREATE RULE r AS
    ON INSERT TO public.t DO INSTEAD (INSERT INTO public.a VALUES (1);
 INSERT INTO public.b VALUES (2);
);

\unrestrict abc
"#;

    #[test]
    fn post_data_is_split_by_table_and_dependency() {
        let p = split_post_data(DUMP);
        assert_eq!(p.preamble.len(), 2);
        let tables: Vec<(&str, usize)> = p
            .per_table
            .iter()
            .map(|(t, s)| (t.as_str(), s.len()))
            .collect();
        assert_eq!(
            tables,
            [
                ("Billing.Invoices", 1),
                ("public.customers", 1),
                ("public.orders", 1),
                ("public.My Table", 1)
            ]
        );
        assert_eq!(p.dependent.len(), 3);
        assert!(p.dependent[0].starts_with("ALTER INDEX public.events_pkey ATTACH"));
        assert!(p.dependent[1].contains("FOREIGN KEY"));
        assert!(
            p.dependent[2].starts_with("CREATE RULE") && p.dependent[2].trim_end().ends_with(");")
        );
    }

    #[test]
    fn capture_triggers_of_an_earlier_migration_are_left_out() {
        let dump = r#"
CREATE TRIGGER ferry_capture AFTER INSERT OR UPDATE ON public.customers FOR EACH ROW EXECUTE FUNCTION ferry.capture_16842_new();
CREATE TRIGGER ferry_capture_rekey AFTER UPDATE ON "Billing"."Invoices" FOR EACH ROW WHEN ((old.id IS DISTINCT FROM new.id)) EXECUTE FUNCTION ferry.capture_16850_old();
CREATE TRIGGER ferry_capture_truncate AFTER TRUNCATE ON public.customers FOR EACH STATEMENT EXECUTE PROCEDURE ferry.capture_truncate('public.customers');
ALTER TABLE public.customers DISABLE TRIGGER ferry_capture;
ALTER TABLE ONLY public.customers ENABLE ALWAYS TRIGGER ferry_capture_delete;
CREATE TRIGGER audit AFTER INSERT ON public.customers FOR EACH ROW EXECUTE FUNCTION public.audit();
CREATE TRIGGER ferry_capture AFTER INSERT ON public.notes FOR EACH ROW EXECUTE FUNCTION ferrylike.f();
ALTER TABLE public.customers DISABLE TRIGGER audit;
ALTER TABLE public.customers ENABLE REPLICA TRIGGER ferry_capture_audit;
"#;
        let p = split_post_data(dump);
        let kept: Vec<String> = p
            .dependent
            .iter()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            kept,
            [
                "CREATE TRIGGER audit",
                "CREATE TRIGGER ferry_capture",
                "ALTER TABLE public.customers",
                "ALTER TABLE public.customers"
            ],
            "the app's own triggers stay, named like Ferry's or not: {:?}",
            p.dependent
        );
        assert!(p.dependent[1].contains("ferrylike.f()"));
        assert!(p.dependent[3].contains("ferry_capture_audit"));
    }

    #[test]
    fn statement_keys_are_stable_and_distinct() {
        assert_eq!(statement_key("a"), statement_key("a"));
        assert_ne!(statement_key("a"), statement_key("b"));
        assert_eq!(statement_key("").len(), 16);
    }
}
