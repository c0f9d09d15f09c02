//! Logging as Lambda's log settings ask: `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`) and
//! `AWS_LAMBDA_LOG_LEVEL` (`TRACE` … `FATAL`), which the function's LoggingConfig sets;
//! `RUST_LOG`, when set, wins (a developer's override). Every invocation runs in a `step` span
//! with the step, the migration id and the request id, which JSON lines carry as fields.

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line (CloudWatch Logs Insights reads its fields).
    Json,
    /// Plain lines without colours or timestamps (CloudWatch Logs adds the time).
    Text,
}

/// The format and filter for these settings.
pub fn settings(
    format: Option<&str>,
    level: Option<&str>,
    rust_log: Option<&str>,
) -> (Format, String) {
    let format = match format {
        Some(f) if f.eq_ignore_ascii_case("json") => Format::Json,
        _ => Format::Text,
    };
    let filter = match (rust_log.filter(|r| !r.trim().is_empty()), level) {
        (Some(r), _) => r.to_string(),
        (None, Some(l)) => match l.to_ascii_uppercase().as_str() {
            "TRACE" => "trace",
            "DEBUG" => "debug",
            "WARN" => "warn",
            "ERROR" | "FATAL" => "error",
            _ => "info",
        }
        .to_string(),
        (None, None) => "info".to_string(),
    };
    (format, filter)
}

/// The subscriber for `format` and `filter`, writing to `writer` ([`init`] installs it
/// globally; tests install it with `tracing::subscriber::with_default`).
pub fn subscriber<W>(
    format: Format,
    filter: &str,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let base = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    match format {
        Format::Json => Box::new(
            base.json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        Format::Text => Box::new(base.without_time().finish()),
    }
}

/// Installs the subscriber the environment asks for (once; later calls do nothing).
pub fn init() {
    let var = |n: &str| std::env::var(n).ok();
    let (format, filter) = settings(
        var("AWS_LAMBDA_LOG_FORMAT").as_deref(),
        var("AWS_LAMBDA_LOG_LEVEL").as_deref(),
        var("RUST_LOG").as_deref(),
    );
    let _ = tracing::subscriber::set_global_default(subscriber(format, &filter, std::io::stdout));
}

/// The migration an invocation's input names (`migration_id`, or the preflight's
/// `spec.migration_id`), bounded and printable: it goes into every log line.
pub fn migration_of(payload: &serde_json::Value) -> Option<String> {
    let id = payload
        .get("migration_id")
        .or_else(|| payload.pointer("/spec/migration_id"))?
        .as_str()?;
    Some(id.chars().filter(|c| !c.is_control()).take(128).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn lambda_settings_choose_format_and_level_and_rust_log_wins() {
        assert_eq!(
            settings(Some("JSON"), Some("WARN"), None),
            (Format::Json, "warn".into())
        );
        assert_eq!(
            settings(Some("Text"), Some("FATAL"), None),
            (Format::Text, "error".into())
        );
        assert_eq!(settings(None, None, None), (Format::Text, "info".into()));
        assert_eq!(
            settings(Some("json"), Some("ERROR"), Some("ferry=debug")),
            (Format::Json, "ferry=debug".into())
        );
    }

    #[test]
    fn json_lines_carry_the_step_and_the_migration() {
        let buf = Buffer::default();
        let sub = subscriber(Format::Json, "info", buf.clone());
        tracing::subscriber::with_default(sub, || {
            let payload = serde_json::json!({"spec": {"migration_id": "acme-2026\n12"}});
            let id = migration_of(&payload);
            assert_eq!(id.as_deref(), Some("acme-202612"));
            let span = tracing::info_span!(
                "step",
                step = "preflight",
                migration_id = id.as_deref(),
                request_id = "r-1"
            );
            span.in_scope(|| tracing::debug!("hidden at info"));
            span.in_scope(|| tracing::info!(tables = 7, "done"));
        });
        let text = String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        assert_eq!(line["message"], "done");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["tables"], 7);
        assert_eq!(line["span"]["step"], "preflight");
        assert_eq!(line["span"]["migration_id"], "acme-202612");
        assert_eq!(line["span"]["request_id"], "r-1");
    }
}
