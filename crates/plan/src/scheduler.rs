//! Heroku Scheduler's jobs. The Platform API does not expose them: the team copies them from
//! the Scheduler dashboard into a small JSON file (`ferry plan --scheduler jobs.json`):
//!
//! ```json
//! {"jobs": [
//!   {"command": "bundle exec rake cleanup", "every": "10m"},
//!   {"command": "bin/report", "every": "1h", "at": ":30"},
//!   {"command": "bin/digest", "every": "1d", "at": "02:00", "size": "performance-m"}
//! ]}
//! ```
//!
//! `every` is one of Scheduler's frequencies (`10m`, `1h`, `1d`); `at` is the minute past the
//! hour (`:MM`) or the UTC time of day (`HH:MM`), as the dashboard shows them.

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// One Scheduler job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The command, run in the app's image as a one-off process.
    pub command: String,
    /// `10m`, `1h` or `1d`.
    pub every: String,
    /// `:MM` for hourly jobs, `HH:MM` (UTC) for daily ones.
    #[serde(default)]
    pub at: Option<String>,
    /// The dyno size it runs on (the task size follows it).
    #[serde(default)]
    pub size: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    jobs: Vec<Job>,
}

/// At most this many jobs (Heroku Scheduler's own list stays far below).
const MAX_JOBS: usize = 100;

/// Reads and checks a jobs file; every problem names the job and field.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Job>, PlanError> {
    let bad = |reason: String| PlanError::Scheduler {
        origin: origin.to_string(),
        reason,
    };
    let file: File = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "{e}; write {{\"jobs\": [{{\"command\": \"…\", \"every\": \"10m|1h|1d\", \"at\": \":MM|HH:MM\"}}]}}"
        ))
    })?;
    if file.jobs.len() > MAX_JOBS {
        return Err(bad(format!("{} jobs; at most {MAX_JOBS}", file.jobs.len())));
    }
    for (i, job) in file.jobs.iter().enumerate() {
        expression(job).map_err(|why| bad(format!("jobs[{i}]: {why}")))?;
        if job.command.trim().is_empty() || job.command.len() > 1024 {
            return Err(bad(format!(
                "jobs[{i}].command: give the command (1-1024 characters)"
            )));
        }
    }
    Ok(file.jobs)
}

/// The EventBridge Scheduler expression (UTC) for a job.
pub fn expression(job: &Job) -> Result<String, String> {
    let minute = |m: &str| -> Result<u32, String> {
        m.parse::<u32>()
            .ok()
            .filter(|m| *m < 60)
            .ok_or_else(|| format!("at: {m:?} is not a minute (00-59)"))
    };
    match (job.every.as_str(), job.at.as_deref()) {
        ("10m", None) => Ok("rate(10 minutes)".into()),
        ("1h", Some(at)) if at.starts_with(':') => {
            Ok(format!("cron({} * * * ? *)", minute(&at[1..])?))
        }
        ("1h", None) => Ok("cron(0 * * * ? *)".into()),
        ("1d", Some(at)) => {
            let (h, m) = at
                .split_once(':')
                .ok_or_else(|| format!("at: {at:?} is not HH:MM (UTC)"))?;
            let hour = h
                .parse::<u32>()
                .ok()
                .filter(|h| *h < 24)
                .ok_or_else(|| format!("at: {at:?} is not HH:MM (UTC)"))?;
            Ok(format!("cron({} {hour} * * ? *)", minute(m)?))
        }
        ("10m" | "1h", Some(at)) => Err(format!(
            "at: {at:?} does not fit every {:?}; `:MM` for 1h, `HH:MM` for 1d, none for 10m",
            job.every
        )),
        ("1d", None) => Err("at: a daily job needs its time of day, HH:MM (UTC)".into()),
        (other, _) => Err(format!(
            "every: {other:?} is not one of Scheduler's frequencies: 10m, 1h, 1d"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(every: &str, at: Option<&str>) -> Job {
        Job {
            command: "bin/x".into(),
            every: every.into(),
            at: at.map(str::to_string),
            size: None,
        }
    }

    #[test]
    fn schedulers_frequencies_become_utc_expressions() {
        assert_eq!(
            expression(&job("10m", None)).as_deref(),
            Ok("rate(10 minutes)")
        );
        assert_eq!(
            expression(&job("1h", Some(":30"))).as_deref(),
            Ok("cron(30 * * * ? *)")
        );
        assert_eq!(
            expression(&job("1d", Some("02:00"))).as_deref(),
            Ok("cron(0 2 * * ? *)")
        );
        for (every, at) in [
            ("1d", None),
            ("1d", Some("25:00")),
            ("1h", Some(":75")),
            ("2h", None),
            ("10m", Some(":10")),
        ] {
            assert!(expression(&job(every, at)).is_err(), "{every} {at:?}");
        }
    }

    #[test]
    fn a_bad_file_names_the_job_and_field() {
        let err = parse(
            r#"{"jobs": [{"command": "a", "every": "10m"}, {"command": "b", "every": "1d"}]}"#,
            "jobs.json",
        )
        .expect_err("no time of day")
        .to_string();
        assert!(
            err.contains("jobs.json") && err.contains("jobs[1]: at"),
            "{err}"
        );
        assert!(
            parse(
                r#"{"jobs": [{"command": "a", "every": "10m", "cron": "x"}]}"#,
                "j"
            )
            .is_err()
        );
        assert_eq!(parse(r#"{"jobs": []}"#, "j").expect("empty").len(), 0);
    }
}
