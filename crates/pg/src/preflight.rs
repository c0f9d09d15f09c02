//! Preflight analysis: everything about source and target that decides whether and how a
//! migration can run, as a structured report. Blockers name the table and the fix.

use ferry_core::spec::CaptureMode;
use serde::Serialize;
use tokio_postgres::Client;

use crate::{
    PgError, ServerInfo,
    catalog::{self, Table, TableKind},
    server_info,
};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The migration cannot start until this is fixed.
    Blocker,
    /// The migration can run, but a person should know.
    Warning,
    /// A fact worth recording.
    Info,
}

/// One thing preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// A stable code (`no_primary_key`, `extension_missing`, …).
    pub code: &'static str,
    /// The table (or other object) concerned, if any.
    pub object: Option<String>,
    /// What was found.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for Finding {
    /// `code (object): message Fix: fix`, one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {} Fix: {}", self.message, self.fix)
    }
}

/// What an attacker on the path to Heroku could do when the source's certificate is not
/// checked, said once in every such warning.
pub const UNCHECKED_RISK: &str = "the connection is encrypted but the server's certificate is not checked (Heroku's are self-signed), so whoever can intercept the route between AWS and Heroku could pose as the server and receive the password Ferry and the endpoint log in with";

/// A warning when the source database's certificate is not checked (`sslmode=require`, the
/// only mode Heroku's self-signed certificates allow): the risk stated, the ways out named.
pub fn unchecked_source_certificate(url: &crate::PgUrl, param: &str) -> Option<Finding> {
    (url.tls_check() == crate::TlsCheck::EncryptOnly).then(|| Finding {
        severity: Severity::Warning,
        code: "source_certificate_unchecked",
        object: Some(param.to_string()),
        message: format!("{UNCHECKED_RISK} (the endpoint's PgBouncer connects to it the same way)."),
        fix: "accept it for the migration's days and rotate the Heroku credentials after decommission, or reach Heroku privately (Private Spaces with PrivateLink), or give sslrootcert= a CA your Heroku plan's certificate chains to and sslmode=verify-ca".into(),
    })
}

/// What one server is and what the connected role may do there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerReport {
    /// `server_version_num`.
    pub version_num: i32,
    /// Major version.
    pub major: i32,
    /// `wal_level`.
    pub wal_level: String,
    /// The connected role.
    pub role: String,
    /// Whether it is a superuser.
    pub superuser: bool,
    /// Whether it has the REPLICATION attribute.
    pub replication: bool,
    /// Whether it may create schemas in the database.
    pub can_create_schema: bool,
    /// `max_connections`.
    pub max_connections: i64,
    /// Connections open now.
    pub connections_in_use: i64,
    /// Replication slots still free.
    pub free_replication_slots: i64,
    /// Whether the role may set `session_replication_role` (needed to apply without firing
    /// triggers and foreign keys out of order).
    pub can_set_replication_role: bool,
}

/// One table's size and shape, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableReport {
    /// `schema.name`.
    pub name: String,
    /// `table`, `partitioned`, `partition` or `sub_partitioned`.
    pub kind: &'static str,
    /// Planner's estimate.
    pub estimated_rows: i64,
    /// Bytes on disk with indexes and TOAST.
    pub total_bytes: i64,
    /// Primary-key columns.
    pub primary_key: Vec<String>,
    /// Stored generated columns (the target computes them).
    pub generated_columns: Vec<String>,
    /// Identity columns.
    pub identity_columns: Vec<String>,
}

/// A sequence and the column that owns it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SequenceReport {
    /// `schema.name`.
    pub name: String,
    /// `schema.table.column` owning it (serial/identity), if any.
    pub owned_by: Option<String>,
    /// Its current value, if it has been used.
    pub last_value: Option<i64>,
}

/// The whole analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightReport {
    /// The source server.
    pub source: ServerReport,
    /// The target server (`None` when analysed without one, as `ferry plan` does before the
    /// RDS instance exists).
    pub target: Option<ServerReport>,
    /// The capture mode the spec asked for.
    pub requested_capture: CaptureMode,
    /// The capture mode that will be used (`auto` resolved), or `None` if neither works.
    pub capture: Option<CaptureMode>,
    /// Whether logical decoding is possible on the source.
    pub logical_possible: bool,
    /// Whether trigger capture is possible on the source.
    pub trigger_possible: bool,
    /// Every user table.
    pub tables: Vec<TableReport>,
    /// Every sequence.
    pub sequences: Vec<SequenceReport>,
    /// Large objects in the source database.
    pub large_objects: i64,
    /// Extensions installed on the source (name, version), `plpgsql` left out.
    pub extensions: Vec<(String, String)>,
    /// Everything found, blockers first.
    pub findings: Vec<Finding>,
}

impl PreflightReport {
    /// The blockers.
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
    }

    /// The findings with `code`.
    pub fn with_code<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.code == code)
    }

    /// Bytes to copy (ordinary tables and leaf partitions).
    pub fn total_bytes(&self) -> i64 {
        self.tables.iter().map(|t| t.total_bytes).sum()
    }
}

async fn server(client: &Client) -> Result<ServerReport, PgError> {
    let info: ServerInfo = server_info(client).await?;
    let q = |source| PgError::Query {
        what: "read role and limits",
        source,
    };
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper, r.rolreplication,
                    has_database_privilege(current_database(), 'CREATE'),
                    current_setting('max_connections')::bigint,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    current_setting('max_replication_slots')::bigint
                      - (SELECT count(*) FROM pg_replication_slots)
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(q)?;
    let superuser: bool = row.get(1);
    // PostgreSQL 15+ can grant SET on a superuser-only parameter (RDS grants it to
    // rds_superuser members).
    let can_set = if superuser {
        true
    } else if info.major >= 15 {
        client
            .query_one(
                "SELECT has_parameter_privilege('session_replication_role', 'SET')",
                &[],
            )
            .await
            .map_err(q)?
            .get(0)
    } else {
        false
    };
    Ok(ServerReport {
        version_num: info.version_num,
        major: info.major,
        wal_level: info.wal_level,
        role: row.get(0),
        superuser,
        replication: row.get(2),
        can_create_schema: row.get(3),
        max_connections: row.get(4),
        connections_in_use: row.get(5),
        free_replication_slots: row.get(6),
        can_set_replication_role: can_set,
    })
}

/// Sessions Ferry opens on the source besides the copy's: the worker's apply, capture and
/// command sessions.
pub const FERRY_SESSIONS: i64 = 3;

/// The copy parallelism that leaves the app half of `free_connections`, the line past which
/// [`analyse`] warns (`parallelism + FERRY_SESSIONS` at most half of what is free); at least 1,
/// at most 4 (the spec's default). A source too small even for 1 gets the blocker from
/// [`analyse`].
pub fn fitting_parallelism(free_connections: i64) -> u32 {
    (free_connections / 2 - FERRY_SESSIONS).clamp(1, 4) as u32
}

/// Analyses source and target for a migration with the requested capture mode and copy
/// parallelism.
pub async fn analyse(
    source: &Client,
    target: &Client,
    requested: CaptureMode,
    parallelism: u32,
) -> Result<PreflightReport, PgError> {
    analyse_with(source, Some(target), requested, parallelism).await
}

/// Analyses the source alone, before a target exists (`ferry plan`): everything
/// [`analyse`] finds except the checks that need the target (its version, its role, which
/// extensions it offers).
pub async fn analyse_source(
    source: &Client,
    requested: CaptureMode,
    parallelism: u32,
) -> Result<PreflightReport, PgError> {
    analyse_with(source, None, requested, parallelism).await
}

async fn analyse_with(
    source: &Client,
    target: Option<&Client>,
    requested: CaptureMode,
    parallelism: u32,
) -> Result<PreflightReport, PgError> {
    let src = server(source).await?;
    let tgt = match target {
        Some(t) => Some(server(t).await?),
        None => None,
    };
    let tables = catalog::tables(source).await?;
    let mut findings = Vec::new();
    let mut add = |severity, code, object: Option<String>, message: String, fix: String| {
        findings.push(Finding {
            severity,
            code,
            object,
            message,
            fix,
        })
    };

    if let Some(tgt) = &tgt
        && tgt.major < src.major
    {
        add(
            Severity::Blocker,
            "target_older",
            None,
            format!(
                "target runs PostgreSQL {} but the source runs {}",
                tgt.major, src.major
            ),
            "create the RDS instance with an engine version at least the source's major".into(),
        );
    }
    if let Some(tgt) = &tgt
        && !tgt.can_set_replication_role
    {
        add(
            Severity::Blocker,
            "target_role",
            None,
            format!(
                "target role {} may not set session_replication_role",
                tgt.role
            ),
            "connect to the target as the RDS master user (a member of rds_superuser)".into(),
        );
    }

    // Tables.
    for t in &tables {
        let name = t.display_name();
        if t.is_capture_unit() && t.primary_key.is_empty() {
            add(
                Severity::Blocker,
                "no_primary_key",
                Some(name.clone()),
                format!(
                    "{name} has no primary key: its changes cannot be matched on the target (and once published, UPDATE/DELETE on it fail on the source)"
                ),
                format!(
                    "add one before migrating, e.g. ALTER TABLE {} ADD COLUMN ferry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY (or a primary key over existing unique NOT NULL columns)",
                    t.qualified()
                ),
            );
        }
        if t.unlogged {
            add(
                Severity::Warning,
                "unlogged_table",
                Some(name.clone()),
                format!("{name} is UNLOGGED: logical decoding never sees its changes"),
                "use capture mode trigger, or ALTER TABLE … SET LOGGED before migrating".into(),
            );
        }
        let generated: Vec<&str> = t
            .columns
            .iter()
            .filter(|c| c.generated)
            .map(|c| c.name.as_str())
            .collect();
        if !generated.is_empty() && t.is_capture_unit() {
            add(
                Severity::Info,
                "generated_columns",
                Some(name.clone()),
                format!(
                    "{name} has stored generated columns ({}): not copied, the target computes them",
                    generated.join(", ")
                ),
                "nothing to do".into(),
            );
        }
        if matches!(t.kind, TableKind::Partitioned) {
            add(
                Severity::Info,
                "partitioned_table",
                Some(name.clone()),
                format!(
                    "{name} is partitioned: leaves are copied in parallel, changes are captured and applied through the root"
                ),
                "nothing to do".into(),
            );
        }
    }
    let logical_identity_blockers: Vec<&Table> = tables
        .iter()
        .filter(|t| {
            t.is_capture_unit()
                && !t.primary_key.is_empty()
                && !matches!(t.replica_identity, 'd' | 'f')
        })
        .collect();
    let not_owned: Vec<&Table> = tables.iter().filter(|t| !t.can_trigger).collect();

    // Large objects.
    let large_objects: i64 = source
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|source| PgError::Query {
            what: "count large objects",
            source,
        })?
        .get(0);
    if large_objects > 0 {
        add(
            Severity::Blocker,
            "large_objects",
            None,
            format!(
                "the source holds {large_objects} large objects: neither triggers nor logical decoding carry them"
            ),
            "move them into bytea columns before migrating, or unlink them if they are not needed"
                .into(),
        );
    }

    // Extensions.
    let src_ext = source
        .query(
            "SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "list source extensions",
            source,
        })?;
    let available: Option<Vec<String>> = match target {
        Some(target) => Some(
            target
                .query("SELECT name::text FROM pg_available_extensions", &[])
                .await
                .map_err(|source| PgError::Query {
                    what: "list target extensions",
                    source,
                })?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        ),
        None => None,
    };
    let extensions: Vec<(String, String)> = src_ext.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (name, _) in &extensions {
        let name = name.clone();
        if available.as_ref().is_some_and(|a| !a.contains(&name)) {
            add(
                Severity::Blocker,
                "extension_missing",
                Some(name.clone()),
                format!(
                    "extension {name} is installed on the source but not available on the target"
                ),
                format!(
                    "use an RDS engine version that supports {name}, or drop it from the source if unused"
                ),
            );
        }
    }

    // Sequences.
    let seq_rows = source
        .query(
            "SELECT format('%I.%I', s.schemaname, s.sequencename), s.last_value,
                    (SELECT format('%I.%I.%I', tn.nspname, tc.relname, a.attname)
                       FROM pg_depend d
                       JOIN pg_class tc ON tc.oid = d.refobjid
                       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_class'::regclass
                        AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
                        AND d.deptype IN ('a', 'i') LIMIT 1)
               FROM pg_sequences s
              WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', $1)
              ORDER BY 1",
            &[&catalog::FERRY_SCHEMA],
        )
        .await
        .map_err(|source| PgError::Query {
            what: "list sequences",
            source,
        })?;
    let sequences: Vec<SequenceReport> = seq_rows
        .iter()
        .map(|r| SequenceReport {
            name: r.get(0),
            last_value: r.get(1),
            owned_by: r.get(2),
        })
        .collect();
    if !sequences.is_empty() {
        add(
            Severity::Info,
            "sequences",
            None,
            format!(
                "{} sequences are not replicated continuously",
                sequences.len()
            ),
            "nothing to do: Ferry sets them on the target at cutover with a safety gap".into(),
        );
    }

    // Connections: the copy's sessions, the worker's own, plus headroom for the app.
    let needed = i64::from(parallelism) + FERRY_SESSIONS;
    let free = src.max_connections - src.connections_in_use;
    if needed > free {
        add(
            Severity::Blocker,
            "connections",
            None,
            format!(
                "the source allows {} connections and {} are in use; Ferry needs {needed} (parallelism {parallelism} + {FERRY_SESSIONS})",
                src.max_connections, src.connections_in_use
            ),
            "lower replication.parallelism or the app's pool size".into(),
        );
    } else if needed * 2 > free {
        add(
            Severity::Warning,
            "connections",
            None,
            format!("Ferry needs {needed} of the source's {free} free connections"),
            "watch the app's pool during the copy; lower replication.parallelism if it starves"
                .into(),
        );
    }

    // Which capture modes are possible.
    let mut logical_reasons = Vec::new();
    if src.wal_level != "logical" {
        logical_reasons.push(format!("wal_level is {}", src.wal_level));
    }
    if !(src.replication || src.superuser) {
        logical_reasons.push(format!("role {} has no REPLICATION attribute", src.role));
    }
    // One slot for the stream, and one for the temporary copy Verify decodes to see which
    // keys have changes waiting (it never reads the stream's own slot).
    if src.free_replication_slots < 2 {
        logical_reasons.push(format!(
            "{} free replication slot(s); logical capture needs 2 (the stream's and Verify's temporary copy of it)",
            src.free_replication_slots.max(0)
        ));
    }
    if tables.iter().any(|t| t.unlogged) {
        logical_reasons.push("UNLOGGED tables are invisible to decoding".to_string());
    }
    if !logical_identity_blockers.is_empty() {
        logical_reasons
            .push("tables whose replica identity is neither the primary key nor FULL".to_string());
    }
    let logical_possible = logical_reasons.is_empty();
    let mut trigger_reasons = Vec::new();
    if !src.can_create_schema {
        trigger_reasons.push(format!(
            "role {} may not create a schema in the database",
            src.role
        ));
    }
    if !not_owned.is_empty() {
        trigger_reasons.push(format!(
            "role {} does not own {}",
            src.role,
            not_owned
                .iter()
                .map(|t| t.display_name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let trigger_possible = trigger_reasons.is_empty();
    let capture = match requested {
        CaptureMode::Logical if logical_possible => Some(CaptureMode::Logical),
        CaptureMode::Trigger if trigger_possible => Some(CaptureMode::Trigger),
        CaptureMode::Auto if logical_possible => Some(CaptureMode::Logical),
        CaptureMode::Auto if trigger_possible => Some(CaptureMode::Trigger),
        _ => None,
    };
    match (requested, capture) {
        (CaptureMode::Logical, None) => add(
            Severity::Blocker,
            "logical_impossible",
            None,
            format!("logical capture is not possible on the source: {}", logical_reasons.join("; ")),
            "set replication.capture to trigger (works on stock Heroku Postgres) or auto".into(),
        ),
        (CaptureMode::Trigger, None) => add(
            Severity::Blocker,
            "trigger_impossible",
            None,
            format!("trigger capture is not possible on the source: {}", trigger_reasons.join("; ")),
            "connect to the source as the role that owns the app's tables (Heroku's default credential)".into(),
        ),
        (CaptureMode::Auto, None) => add(
            Severity::Blocker,
            "no_capture_mode",
            None,
            format!(
                "neither capture mode is possible: logical ({}); trigger ({})",
                logical_reasons.join("; "),
                trigger_reasons.join("; ")
            ),
            "connect to the source as the role that owns the app's tables".into(),
        ),
        (_, Some(mode)) => add(
            Severity::Info,
            "capture_mode",
            None,
            format!(
                "capture mode {}{}",
                if mode == CaptureMode::Logical { "logical" } else { "trigger" },
                if requested == CaptureMode::Auto && mode == CaptureMode::Trigger {
                    format!(" (logical is not possible: {})", logical_reasons.join("; "))
                } else {
                    String::new()
                }
            ),
            "nothing to do".into(),
        ),
    }
    if capture == Some(CaptureMode::Logical) {
        for t in &logical_identity_blockers {
            add(
                Severity::Blocker,
                "replica_identity",
                Some(t.display_name()),
                format!(
                    "{} has REPLICA IDENTITY {}: decoded changes would not carry its primary key",
                    t.display_name(),
                    t.replica_identity
                ),
                format!("ALTER TABLE {} REPLICA IDENTITY DEFAULT", t.qualified()),
            );
        }
    }

    findings.sort_by(|a, b| (a.severity, &a.object).cmp(&(b.severity, &b.object)));
    let table_reports = tables
        .iter()
        .map(|t| TableReport {
            name: t.display_name(),
            kind: match t.kind {
                TableKind::Ordinary => "table",
                TableKind::Partitioned => "partitioned",
                TableKind::Partition { .. } => "partition",
                TableKind::SubPartitioned { .. } => "sub_partitioned",
            },
            estimated_rows: t.estimated_rows.max(0),
            total_bytes: t.total_bytes,
            primary_key: t.primary_key.clone(),
            generated_columns: t
                .columns
                .iter()
                .filter(|c| c.generated)
                .map(|c| c.name.clone())
                .collect(),
            identity_columns: t
                .columns
                .iter()
                .filter(|c| c.identity)
                .map(|c| c.name.clone())
                .collect(),
        })
        .collect();
    Ok(PreflightReport {
        source: src,
        target: tgt,
        requested_capture: requested,
        capture,
        logical_possible,
        trigger_possible,
        tables: table_reports,
        sequences,
        large_objects,
        extensions,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::fitting_parallelism;

    #[test]
    fn parallelism_leaves_the_app_half_the_free_connections() {
        assert_eq!(fitting_parallelism(97), 4, "plenty");
        assert_eq!(fitting_parallelism(12), 3);
        assert_eq!(fitting_parallelism(10), 2);
        assert_eq!(
            fitting_parallelism(3),
            1,
            "never below 1: preflight reports the rest"
        );
        assert_eq!(fitting_parallelism(-2), 1);
    }
}
