//! **Blocker or warning.** Ferry opens `replication.parallelism` copy sessions on the source
//! plus its own three (the worker's apply, capture and command sessions). A blocker when that
//! is more than the source's free connections (`max_connections` less those in use); a warning
//! when it is more than half of them, since the app's pool may then starve during the copy.
//!
//! Fix: lower `replication.parallelism` (`ferry plan` writes one that fits) or the app's pool
//! size; watch the app's pool during the copy.

use super::{Ctx, Finding};
use crate::preflight::{Code, FERRY_SESSIONS, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let src = &ctx.snapshot.source;
    let parallelism = ctx.parallelism;
    let needed = i64::from(parallelism) + FERRY_SESSIONS;
    let free = src.max_connections - src.connections_in_use;
    if needed > free {
        out.push(Finding::general(
            Severity::Blocker,
            Code::Connections,
            format!(
                "the source allows {} connections and {} are in use; Ferry needs {needed} (parallelism {parallelism} + {FERRY_SESSIONS})",
                src.max_connections, src.connections_in_use
            ),
            "lower replication.parallelism or the app's pool size",
        ));
    } else if needed * 2 > free {
        out.push(Finding::general(
            Severity::Warning,
            Code::Connections,
            format!("Ferry needs {needed} of the source's {free} free connections"),
            "watch the app's pool during the copy; lower replication.parallelism if it starves",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::{
        Severity, fitting_parallelism, fixture,
        rules::{Ctx, Finding},
    };
    use crate::preflight::capture::CaptureDecision;
    use ferry_core::spec::CaptureMode;

    fn with(max: i64, in_use: i64, parallelism: u32) -> Vec<Finding> {
        let mut s = fixture::heroku_like();
        s.source.max_connections = max;
        s.source.connections_in_use = in_use;
        let capture = CaptureDecision::decide(&s, CaptureMode::Auto);
        let mut out = Vec::new();
        super::check(
            &Ctx {
                snapshot: &s,
                capture: &capture,
                parallelism,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn past_the_free_connections_is_a_blocker_past_half_a_warning() {
        assert!(with(120, 20, 4).is_empty(), "7 of 100 free");
        let warn = with(20, 8, 4);
        assert_eq!(warn.len(), 1);
        assert_eq!(warn[0].severity, Severity::Warning, "7 of 12 free");
        let block = with(20, 14, 4);
        assert_eq!(block[0].severity, Severity::Blocker, "7 of 6 free");
        assert!(block[0].message.contains("parallelism 4 + 3"), "{}", block[0]);
    }

    #[test]
    fn the_parallelism_plan_writes_never_draws_a_warning_when_one_session_fits() {
        for free in 8..200 {
            let p = fitting_parallelism(free);
            assert!(with(free + 10, 10, p).is_empty(), "free {free}, parallelism {p}");
        }
    }
}
