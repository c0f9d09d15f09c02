//! **Blocker.** The spec leaves `replication.capture` at `auto`, and neither mode works: logical
//! decoding is ruled out (see `logical_impossible`) and so are triggers (see
//! `trigger_impossible`). The message gives both lists of reasons.
//!
//! Fix: connect to the source as the role that owns the app's tables.

use ferry_core::spec::CaptureMode;

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let c = ctx.capture;
    if c.requested == CaptureMode::Auto && c.chosen.is_none() {
        out.push(Finding::general(
            Severity::Blocker,
            Code::NoCaptureMode,
            format!(
                "neither capture mode is possible: logical ({}); trigger ({})",
                c.logical_reasons(),
                c.trigger_reasons()
            ),
            "connect to the source as the role that owns the app's tables",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::fixture;

    #[test]
    fn a_source_neither_mode_can_capture_is_a_blocker_with_both_reasons() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty());
        s.source.can_create_schema = false;
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("logical (wal_level is replica")
                && found[0].message.contains("trigger (role app may not create a schema"),
            "{}",
            found[0]
        );
    }
}
