//! The report preflight returns: the snapshot's facts in the shape reports show, the capture
//! decision, and the findings, blockers first.

use ferry_core::spec::CaptureMode;
use serde::Serialize;

use super::{
    Code, Finding, Severity,
    capture::CaptureDecision,
    rules::{self, Ctx},
    snapshot::{SequenceReport, ServerReport, Snapshot},
};
use crate::catalog::{Table, TableKind};

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

impl TableReport {
    fn of(t: &Table) -> Self {
        let named = |keep: fn(&crate::catalog::Column) -> bool| {
            t.columns
                .iter()
                .filter(|c| keep(c))
                .map(|c| c.name.clone())
                .collect()
        };
        Self {
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
            generated_columns: named(|c| c.generated),
            identity_columns: named(|c| c.identity),
        }
    }
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
    /// Runs every rule on `snapshot` for the `requested` capture mode and copy `parallelism`.
    /// Pure: no server is touched.
    pub fn assess(snapshot: &Snapshot, requested: CaptureMode, parallelism: u32) -> Self {
        let capture = CaptureDecision::decide(snapshot, requested);
        let mut findings = rules::check_all(&Ctx {
            snapshot,
            capture: &capture,
            parallelism,
        });
        // Stable: among equals, the rule table's order.
        findings.sort_by(|a, b| (a.severity, &a.object).cmp(&(b.severity, &b.object)));
        Self {
            source: snapshot.source.clone(),
            target: snapshot.target_server().cloned(),
            requested_capture: requested,
            capture: capture.chosen,
            logical_possible: capture.logical_possible(),
            trigger_possible: capture.trigger_possible(),
            tables: snapshot.tables.iter().map(TableReport::of).collect(),
            sequences: snapshot.sequences.clone(),
            large_objects: snapshot.large_objects,
            extensions: snapshot
                .extensions
                .iter()
                .map(|e| (e.name.clone(), e.version.clone()))
                .collect(),
            findings,
        }
    }

    /// The blockers.
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
    }

    /// The findings with `code`.
    pub fn with_code(&self, code: Code) -> impl Iterator<Item = &Finding> + '_ {
        self.findings.iter().filter(move |f| f.code == code)
    }

    /// Bytes to copy (ordinary tables and leaf partitions).
    pub fn total_bytes(&self) -> i64 {
        self.tables.iter().map(|t| t.total_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::spec::CaptureMode;

    use super::PreflightReport;
    use crate::preflight::{Code, Severity, fixture};

    #[test]
    fn stock_heroku_passes_with_triggers_and_its_facts_reported() {
        let r = PreflightReport::assess(&fixture::heroku_like(), CaptureMode::Auto, 4);
        assert_eq!(r.blockers().count(), 0, "{:#?}", r.findings);
        assert_eq!(r.capture, Some(CaptureMode::Trigger));
        assert_eq!(r.tables[0].identity_columns, ["id"]);
        assert_eq!(r.extensions, [("citext".to_string(), "1.6".to_string())]);
        let codes: Vec<Code> = r.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, [Code::Sequences, Code::CaptureMode]);
    }

    #[test]
    fn blockers_come_first_then_by_object() {
        let mut s = fixture::heroku_like();
        s.large_objects = 1;
        let mut t = fixture::table("a_keyless");
        t.primary_key.clear();
        s.tables.push(t);
        let r = PreflightReport::assess(&s, CaptureMode::Auto, 4);
        let order: Vec<(Severity, Code)> =
            r.findings.iter().map(|f| (f.severity, f.code)).collect();
        assert_eq!(
            order,
            [
                (Severity::Blocker, Code::LargeObjects),
                (Severity::Blocker, Code::NoPrimaryKey),
                (Severity::Info, Code::Sequences),
                (Severity::Info, Code::CaptureMode),
            ]
        );
    }

    #[test]
    fn a_snapshot_read_back_from_json_gives_the_same_report() {
        let s = fixture::heroku_like();
        let json = serde_json::to_string(&s).expect("serialise");
        let back = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(s, back);
        assert_eq!(
            PreflightReport::assess(&s, CaptureMode::Auto, 4),
            PreflightReport::assess(&back, CaptureMode::Auto, 4)
        );
    }
}
