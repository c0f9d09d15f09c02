//! The rehearsal's report: what was measured, stage by stage, and what it projects for the
//! real run. Serialized as is for `--output json`; [`Report::markdown`] for people.

use ferry_core::spec::CaptureMode;
use serde::Serialize;

use crate::{Traffic, load::LoadStats};

pub use ferry_pg::preflight::Finding;

/// The source as found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceFacts {
    /// Major version.
    pub major: i32,
    /// Tables to copy.
    pub tables: usize,
    /// Their size on disk, with indexes and TOAST.
    pub bytes: i64,
    /// What the traffic check saw.
    pub traffic: Traffic,
}

/// The copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CopyFigures {
    /// Schema dump and pre-data restore, seconds.
    pub schema_seconds: f64,
    /// Capture installation, seconds.
    pub capture_seconds: f64,
    /// Snapshot copy, seconds.
    pub copy_seconds: f64,
    /// Keys, indexes and constraints built on the target, seconds.
    pub post_data_seconds: f64,
    /// Rows copied.
    pub rows: u64,
    /// COPY bytes moved.
    pub copy_bytes: u64,
    /// Source bytes on disk per second of copy and post-data (what the projection scales).
    pub disk_bytes_per_second: f64,
    /// The copy's read rate limit, MB per second, if any.
    pub max_copy_mb_per_second: Option<u32>,
    /// The synthetic app's write latency on the source during the copy and post-data: p50, ms.
    pub app_write_p50_ms: Option<f64>,
    /// The same, p99.
    pub app_write_p99_ms: Option<f64>,
    /// Writes those figures come from.
    pub app_writes: usize,
}

/// The catch-up after the copy and the stream under load.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CatchUpFigures {
    /// Changes waiting when the copy ended.
    pub backlog_at_copy_end: u64,
    /// Seconds until nothing waited.
    pub seconds: f64,
    /// Changes per second the applier sustained on a burst of known size.
    pub apply_changes_per_second: f64,
    /// The burst's size (changes).
    pub burst_changes: u64,
    /// Seconds streamed under load afterwards.
    pub streamed_seconds: f64,
    /// Lag samples taken while streaming.
    pub lag_samples: usize,
    /// Lag p50, milliseconds.
    pub lag_p50_ms: u64,
    /// Lag p99, milliseconds.
    pub lag_p99_ms: u64,
    /// Lag max, milliseconds.
    pub lag_max_ms: u64,
}

/// The comparison of both sides once drained.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyFigures {
    /// Tables compared.
    pub tables: usize,
    /// Rows on the source.
    pub rows: i64,
    /// Seconds.
    pub seconds: f64,
    /// Tables that differ (none expected).
    pub differing: Vec<String>,
    /// Foreign keys validated on the target.
    pub foreign_keys_validated: usize,
}

/// One timed cutover freeze.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FreezeFigures {
    /// Freeze → source frozen and its sessions ended, ms.
    pub frozen_ms: u64,
    /// → every change up to the head applied, ms.
    pub drained_ms: u64,
    /// → sequences set on the target, ms.
    pub sequences_ms: u64,
    /// → unfrozen: the whole window the app's writes wait (through Ferry's endpoint) or fail.
    pub total_ms: u64,
    /// Changes applied inside the freeze.
    pub drained_changes: u64,
    /// Whether every table's row count matched inside the freeze.
    pub counts_equal: bool,
}

/// What the measurements project for the real run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Projection {
    /// Production's size (bytes on disk) the projection is for.
    pub production_bytes: u64,
    /// Production's write rate assumed (writes per second).
    pub writes_per_second: f64,
    /// Snapshot copy plus post-data at the measured throughput, seconds.
    pub copy_seconds: f64,
    /// Changes that pile up meanwhile.
    pub backlog: f64,
    /// Seconds to catch up afterwards (`None`: the applier is slower than the writes).
    pub catch_up_seconds: Option<f64>,
    /// The verification, scaled by size, seconds.
    pub verify_seconds: f64,
    /// The cutover's write freeze: the slowest rehearsed, ms.
    pub freeze_ms: u64,
    /// What makes the projection less sure.
    pub caveats: Vec<String>,
}

/// Everything a rehearsal measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The source, password redacted.
    pub source_url: String,
    /// The target: a redacted URL, or the scratch server.
    pub target: String,
    /// The source as found.
    pub source: SourceFacts,
    /// Capture used (`auto` resolved), if possible at all.
    pub capture: Option<CaptureMode>,
    /// Preflight blockers, each with its fix; the rehearsal stops after preflight if any.
    pub blockers: Vec<Finding>,
    /// Preflight warnings.
    pub warnings: Vec<Finding>,
    /// The copy, when it ran.
    pub copy: Option<CopyFigures>,
    /// The catch-up, when it ran.
    pub catch_up: Option<CatchUpFigures>,
    /// The synthetic load, when there was one.
    pub load: Option<LoadStats>,
    /// The comparison.
    pub verify: Option<VerifyFigures>,
    /// The timed freezes.
    pub freezes: Vec<FreezeFigures>,
    /// The projection for the real run.
    pub projection: Option<Projection>,
    /// Ferry objects found on the source after cleanup (none expected).
    pub source_objects_left: Vec<String>,
    /// Wall-clock seconds of the whole rehearsal.
    pub seconds: f64,
}

/// The value at quantile `p` of sorted `samples` (nearest rank), or `None` when empty.
fn at<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * p).round() as usize).copied()
}

/// p50 and p99 of `samples`, or `None` without samples.
pub fn quantiles(samples: &mut [f64]) -> (Option<f64>, Option<f64>) {
    samples.sort_by(f64::total_cmp);
    (at(samples, 0.5), at(samples, 0.99))
}

/// p50, p99 and max of `samples` (ms); zeros without samples.
pub fn spread(samples: &mut [u64]) -> (u64, u64, u64) {
    samples.sort_unstable();
    (
        at(samples, 0.5).unwrap_or(0),
        at(samples, 0.99).unwrap_or(0),
        at(samples, 1.0).unwrap_or(0),
    )
}

impl Report {
    /// Whether a person must act before a rehearsal can go further: preflight blockers.
    pub fn needs_a_person(&self) -> bool {
        !self.blockers.is_empty()
    }

    /// Whether the rehearsal found a fault in the move itself.
    pub fn failed(&self) -> bool {
        self.verify
            .as_ref()
            .is_some_and(|v| !v.differing.is_empty())
            || self.freezes.iter().any(|f| !f.counts_equal)
            || !self.source_objects_left.is_empty()
    }

    /// Projects the real run from the measurements.
    pub fn project(&mut self, production_bytes: Option<u64>, writes: Option<f64>) {
        let (Some(copy), Some(catch)) = (&self.copy, &self.catch_up) else {
            return;
        };
        let bytes = production_bytes.unwrap_or(self.source.bytes.max(0) as u64);
        let scale = if self.source.bytes > 0 {
            bytes as f64 / self.source.bytes as f64
        } else {
            1.0
        };
        let writes = writes.unwrap_or_else(|| {
            self.load
                .as_ref()
                .map_or(0.0, |l| l.achieved_per_second.max(0.0))
        });
        let copy_seconds = (copy.copy_seconds + copy.post_data_seconds) * scale;
        let mut caveats = Vec::new();
        if self.source.bytes < 100_000_000 {
            caveats.push(format!(
                "the source holds {}: fixed costs (sessions, planning, index builds) dominate a copy this small, so the copy projection overstates; rehearse on a fuller copy for a throughput worth projecting",
                mb(self.source.bytes as f64)
            ));
        }
        if scale > 10.0 {
            caveats.push(format!(
                "production is {scale:.0}× the rehearsed source: index builds grow faster than linearly"
            ));
        }
        if self.load.is_none() && writes == 0.0 {
            caveats.push(
                "no write rate: pass --production-writes-per-second for a catch-up projection"
                    .into(),
            );
        }
        let backlog = writes * copy_seconds;
        let catch_up_seconds = (catch.apply_changes_per_second > writes)
            .then(|| backlog / (catch.apply_changes_per_second - writes));
        self.projection = Some(Projection {
            production_bytes: bytes,
            writes_per_second: writes,
            copy_seconds,
            backlog,
            catch_up_seconds,
            verify_seconds: self.verify.as_ref().map_or(0.0, |v| v.seconds * scale),
            freeze_ms: self.freezes.iter().map(|f| f.total_ms).max().unwrap_or(0),
            caveats,
        });
    }
}

fn mb(bytes: f64) -> String {
    if bytes >= 10e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 120.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

impl Report {
    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Ferry rehearsal\n\n- source: {} (PostgreSQL {}, {} tables, {} on disk)\n- target: {}\n- capture: {}\n- took {}\n",
            self.source_url,
            self.source.major,
            self.source.tables,
            mb(self.source.bytes as f64),
            self.target,
            self.capture
                .map_or("none possible".into(), |c| format!("{c:?}").to_lowercase()),
            duration(self.seconds)
        );
        self.findings_md(&mut md);
        self.measured_md(&mut md);
        self.projection_md(&mut md);
        md.push_str("\n## Source left as found\n\n");
        if self.source_objects_left.is_empty() {
            md.push_str("No Ferry object is left on the source (capture, log, slot, publication, ferry_rehearsal all removed).\n");
        } else {
            md.push_str(&format!(
                "Left on the source (remove by hand): {}\n",
                self.source_objects_left.join(", ")
            ));
        }
        md
    }

    fn findings_md(&self, md: &mut String) {
        md.push_str(&format!(
            "\n## Preflight: {} blocker(s), {} warning(s)\n\n",
            self.blockers.len(),
            self.warnings.len()
        ));
        for (kind, list) in [("blocker", &self.blockers), ("warning", &self.warnings)] {
            for f in list {
                md.push_str(&format!("- **{kind}** {f}\n"));
            }
        }
        if !self.blockers.is_empty() {
            md.push_str(
                "\nThe rehearsal stopped after preflight: fix the blockers and run it again.\n",
            );
        }
    }

    fn measured_md(&self, md: &mut String) {
        let Some(c) = &self.copy else { return };
        md.push_str("\n## Measured\n\n| stage | figure |\n|---|---|\n");
        let mut row = |k: &str, v: String| md.push_str(&format!("| {k} | {v} |\n"));
        row("schema (pre-data)", duration(c.schema_seconds));
        row("capture installed", duration(c.capture_seconds));
        row(
            "snapshot copy, with each table's keys and indexes built as it is copied",
            format!(
                "{} — {} rows, {} of COPY data",
                duration(c.copy_seconds),
                c.rows,
                mb(c.copy_bytes as f64)
            ),
        );
        row(
            "keys and indexes left, foreign keys, triggers",
            duration(c.post_data_seconds),
        );
        if let (Some(p50), Some(p99)) = (c.app_write_p50_ms, c.app_write_p99_ms) {
            row(
                "the app's write latency on the source during the copy",
                format!(
                    "p50 {p50:.2} ms, p99 {p99:.2} ms ({} writes; copy {})",
                    c.app_writes,
                    c.max_copy_mb_per_second
                        .map_or("not throttled".into(), |m| format!("held to {m} MB/s"))
                ),
            );
        }
        row(
            "throughput (source on-disk size ÷ copy and post-data)",
            format!("{}/s", mb(c.disk_bytes_per_second)),
        );
        self.streaming_md(md);
    }

    /// The rows of the measured table after the copy: the load, the catch-up and streaming,
    /// the verification and each cutover freeze.
    fn streaming_md(&self, md: &mut String) {
        let mut row = |k: &str, v: String| md.push_str(&format!("| {k} | {v} |\n"));
        if let Some(l) = &self.load {
            row(
                "synthetic load",
                format!(
                    "{:.0} writes/s asked, {:.0} achieved, {} written, {} refused or cut off by the freezes{}",
                    l.requested_per_second,
                    l.achieved_per_second,
                    l.written,
                    l.errors,
                    l.last_error
                        .as_deref()
                        .map(|e| format!(" (last: {})", e.replace('|', "/")))
                        .unwrap_or_default()
                ),
            );
        }
        if let Some(k) = &self.catch_up {
            row(
                "catch-up after the copy",
                format!(
                    "{} change(s) in {}",
                    k.backlog_at_copy_end,
                    duration(k.seconds)
                ),
            );
            row(
                "apply rate",
                format!(
                    "{:.0} changes/s (a burst of {} changes)",
                    k.apply_changes_per_second, k.burst_changes
                ),
            );
            row(
                "lag while streaming under load",
                format!(
                    "p50 {} ms, p99 {} ms, max {} ms ({} samples over {})",
                    k.lag_p50_ms,
                    k.lag_p99_ms,
                    k.lag_max_ms,
                    k.lag_samples,
                    duration(k.streamed_seconds)
                ),
            );
        }
        if let Some(v) = &self.verify {
            row(
                "verification",
                format!(
                    "{} tables, {} rows in {}; {}; {} foreign key(s) validated",
                    v.tables,
                    v.rows,
                    duration(v.seconds),
                    if v.differing.is_empty() {
                        "all equal".to_string()
                    } else {
                        format!("DIFFERENT: {}", v.differing.join(", "))
                    },
                    v.foreign_keys_validated
                ),
            );
        }
        for (i, f) in self.freezes.iter().enumerate() {
            row(
                &format!("cutover freeze {}", i + 1),
                format!(
                    "{} ms (frozen +{} ms, drained {} change(s) +{} ms, sequences +{} ms); row counts {}",
                    f.total_ms,
                    f.frozen_ms,
                    f.drained_changes,
                    f.drained_ms,
                    f.sequences_ms,
                    if f.counts_equal { "equal" } else { "DIFFERENT" }
                ),
            );
        }
    }

    fn projection_md(&self, md: &mut String) {
        let Some(p) = &self.projection else { return };
        md.push_str(&format!(
            "\n## Projection for the real run\n\nFor {} of production at {:.0} writes/s, on this run's throughput (the real source and RDS differ: treat it as an estimate, and rehearse on a machine like the worker's):\n\n",
            mb(p.production_bytes as f64),
            p.writes_per_second
        ));
        md.push_str(&format!(
            "- snapshot copy and indexes: {}\n",
            duration(p.copy_seconds)
        ));
        md.push_str(&format!(
            "- catch-up afterwards: {}\n",
            match p.catch_up_seconds {
                Some(s) => format!("{} for about {:.0} changes", duration(s), p.backlog),
                None => format!(
                    "never: the applier is slower than {:.0} writes/s; raise WorkerBatchSize or rehearse with a smaller --production-writes-per-second",
                    p.writes_per_second
                ),
            }
        ));
        md.push_str(&format!(
            "- verification: {}\n- cutover write freeze: about {} ms (the slowest rehearsed); the app's queries wait that long at Ferry's endpoint\n",
            duration(p.verify_seconds),
            p.freeze_ms
        ));
        for c in &p.caveats {
            md.push_str(&format!("- caveat: {c}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_scales_the_copy_and_refuses_a_catch_up_that_never_ends() {
        let mut r = Report {
            source: SourceFacts {
                bytes: 1_000_000_000,
                ..SourceFacts::default()
            },
            copy: Some(CopyFigures {
                copy_seconds: 80.0,
                post_data_seconds: 20.0,
                ..CopyFigures::default()
            }),
            catch_up: Some(CatchUpFigures {
                apply_changes_per_second: 1000.0,
                ..CatchUpFigures::default()
            }),
            verify: Some(VerifyFigures {
                seconds: 10.0,
                ..VerifyFigures::default()
            }),
            freezes: vec![
                FreezeFigures {
                    total_ms: 300,
                    counts_equal: true,
                    ..FreezeFigures::default()
                },
                FreezeFigures {
                    total_ms: 450,
                    counts_equal: true,
                    ..FreezeFigures::default()
                },
            ],
            ..Report::default()
        };
        r.project(Some(10_000_000_000), Some(500.0));
        let p = r.projection.clone().expect("projected");
        assert_eq!(p.copy_seconds, 1000.0);
        assert_eq!(p.backlog, 500_000.0);
        assert_eq!(p.catch_up_seconds, Some(1000.0));
        assert_eq!(p.verify_seconds, 100.0);
        assert_eq!(p.freeze_ms, 450);
        assert!(r.markdown().contains("about 450 ms"), "{}", r.markdown());
        r.project(None, Some(2000.0));
        let p = r.projection.clone().expect("projected");
        assert_eq!(p.catch_up_seconds, None);
        assert!(r.markdown().contains("never: the applier is slower"));
        assert!(!r.failed());
        r.freezes[0].counts_equal = false;
        assert!(r.failed());
    }

    #[test]
    fn spread_reads_percentiles_of_unsorted_samples() {
        let mut s: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(spread(&mut s), (51, 99, 100));
        assert_eq!(spread(&mut []), (0, 0, 0));
    }
}
