//! **Info.** The capture mode the migration will use, and, when `auto` settled on triggers,
//! why logical decoding was not possible. Trigger capture works on stock Heroku Postgres;
//! logical decoding needs `wal_level = logical`, the REPLICATION attribute and two free slots.
//!
//! Nothing to do.

use ferry_core::spec::CaptureMode;

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let c = ctx.capture;
    let Some(mode) = c.chosen else {
        return;
    };
    let why = if c.requested == CaptureMode::Auto && mode == CaptureMode::Trigger {
        format!(" (logical is not possible: {})", c.logical_reasons())
    } else {
        String::new()
    };
    let name = if mode == CaptureMode::Logical {
        "logical"
    } else {
        "trigger"
    };
    out.push(Finding::general(
        Severity::Info,
        Code::CaptureMode,
        format!("capture mode {name}{why}"),
        "nothing to do",
    ));
}

#[cfg(test)]
mod tests {
    use ferry_core::spec::CaptureMode;

    use crate::preflight::fixture;

    #[test]
    fn the_chosen_mode_is_stated_with_why_auto_fell_back() {
        let found = fixture::auto(super::check, &fixture::heroku_like());
        assert_eq!(
            found[0].message,
            "capture mode trigger (logical is not possible: wal_level is replica; role app has no REPLICATION attribute)"
        );
        let found = fixture::auto(super::check, &fixture::logical_ready());
        assert_eq!(found[0].message, "capture mode logical");
        let found = fixture::run(super::check, &fixture::heroku_like(), CaptureMode::Logical);
        assert!(found.is_empty(), "no mode, no statement (the blocker says it)");
    }
}
