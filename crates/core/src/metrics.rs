//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines: one JSON object per line on
//! stdout, which CloudWatch Logs turns into metrics in the `Ferry` namespace (Lambda log
//! groups and the worker's awslogs group alike). No SDK call and no extra permission: dashboards
//! and alarms work from the log lines alone.
//!
//! Every line has the dimension `MigrationId`, plus `Source` (`worker`, `step:<name>`) as a
//! plain property for log searches.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace.
pub const NAMESPACE: &str = "Ferry";

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// Bytes.
    Bytes,
    /// Bytes/Second.
    BytesPerSecond,
    /// Count.
    Count,
    /// Percent.
    Percent,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::BytesPerSecond => "Bytes/Second",
            Unit::Count => "Count",
            Unit::Percent => "Percent",
        }
    }
}

/// One value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// Its name, e.g. `ReplicationLagSeconds`.
    pub name: &'static str,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
}

impl Metric {
    /// A metric.
    pub fn new(name: &'static str, value: f64, unit: Unit) -> Self {
        Self { name, value, unit }
    }
}

/// The EMF line for `metrics` of `migration_id`, from `source`, at `at`. Metrics whose value
/// is not finite are left out (CloudWatch rejects them); `None` if none is left.
pub fn line(
    migration_id: &str,
    source: &str,
    metrics: &[Metric],
    at: DateTime<Utc>,
) -> Option<String> {
    let metrics: Vec<&Metric> = metrics.iter().filter(|m| m.value.is_finite()).collect();
    if metrics.is_empty() {
        return None;
    }
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                // Per migration, and once more without a dimension: alarms cannot match a
                // dimension by pattern, so the stack's alarms watch the dimensionless series.
                "Dimensions": [["MigrationId"], []],
                "Metrics": metrics
                    .iter()
                    .map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() }))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("MigrationId".into(), json!(migration_id));
    root.insert("Source".into(), json!(source));
    for m in metrics {
        root.insert(m.name.into(), json!(m.value));
    }
    Some(Value::Object(root).to_string())
}

/// Where EMF lines go.
pub trait MetricSink: Send + Sync + std::fmt::Debug {
    /// Writes one line.
    fn write_line(&self, line: &str);

    /// Writes the EMF line of `metrics` now.
    fn emit(&self, migration_id: &str, source: &str, metrics: &[Metric]) {
        if let Some(l) = line(migration_id, source, metrics, Utc::now()) {
            self.write_line(&l);
        }
    }
}

/// Standard output: one write per line, so lines from other threads never interleave.
#[derive(Debug, Default)]
pub struct Stdout;

impl MetricSink for Stdout {
    fn write_line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop a migration step.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Keeps the lines in memory (for tests and for callers that forward them).
#[derive(Debug, Default, Clone)]
pub struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl MetricSink for Recorder {
    fn write_line(&self, line: &str) {
        if let Ok(mut l) = self.0.lock() {
            l.push(line.to_string());
        }
    }
}

/// The metrics in an EMF `line` that `line` produced, by name, if it is one (the checks
/// CloudWatch applies: the `_aws` block, a namespace, dimensions naming present string
/// properties, every declared metric present as a number).
pub fn parse(line: &str) -> Option<Map<String, Value>> {
    let v: Value = serde_json::from_str(line).ok()?;
    let root = v.as_object()?;
    let aws = root.get("_aws")?;
    aws.get("Timestamp")?.as_i64()?;
    let mut out = Map::new();
    for directive in aws.get("CloudWatchMetrics")?.as_array()? {
        directive.get("Namespace")?.as_str()?;
        for set in directive.get("Dimensions")?.as_array()? {
            for d in set.as_array()? {
                root.get(d.as_str()?)?.as_str()?;
            }
        }
        for m in directive.get("Metrics")?.as_array()? {
            let name = m.get("Name")?.as_str()?;
            let value = root.get(name)?.as_f64()?;
            out.insert(name.to_string(), json!(value));
        }
    }
    out.insert("MigrationId".into(), root.get("MigrationId")?.clone());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_valid_emf_and_drops_values_cloudwatch_refuses() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("time");
        let l = line(
            "acme-prod-2026-11",
            "worker",
            &[
                Metric::new("ReplicationLagSeconds", 0.25, Unit::Seconds),
                Metric::new("CopyBytesPerSecond", f64::NAN, Unit::BytesPerSecond),
            ],
            at,
        )
        .expect("a line");
        assert!(!l.contains('\n'), "one line");
        let v: Value = serde_json::from_str(&l).expect("JSON");
        assert_eq!(v["_aws"]["Timestamp"], json!(1_700_000_000_123_i64));
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Ferry");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "ReplicationLagSeconds", "Unit": "Seconds"}])
        );
        assert_eq!(v["Source"], "worker");
        let m = parse(&l).expect("parses as EMF");
        assert_eq!(m["ReplicationLagSeconds"], json!(0.25));
        assert_eq!(m["MigrationId"], "acme-prod-2026-11");
        assert!(
            line(
                "x",
                "worker",
                &[Metric::new("A", f64::INFINITY, Unit::Count)],
                at
            )
            .is_none()
        );
        assert!(parse("{\"not\": \"emf\"}").is_none());
        assert!(parse("plain log line").is_none());
    }

    #[test]
    fn a_recorder_keeps_what_is_emitted() {
        let r = Recorder::default();
        r.emit(
            "m",
            "step:cutover",
            &[Metric::new(
                "WriteFreezeMilliseconds",
                153.0,
                Unit::Milliseconds,
            )],
        );
        let lines = r.lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            parse(&lines[0]).expect("EMF")["WriteFreezeMilliseconds"],
            json!(153.0)
        );
    }
}
