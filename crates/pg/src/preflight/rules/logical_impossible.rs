//! **Blocker.** The spec asks for `replication.capture: logical`, but the source cannot decode:
//! `wal_level` is not `logical`, the role has no REPLICATION attribute, fewer than two
//! replication slots are free (the stream's, and the temporary copy Verify decodes), a table is
//! UNLOGGED, or a keyed table's replica identity is neither its key nor FULL. The message lists
//! which.
//!
//! Fix: set `replication.capture` to `trigger` (works on stock Heroku Postgres) or `auto`.

use ferry_core::spec::CaptureMode;

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let c = ctx.capture;
    if c.requested == CaptureMode::Logical && c.chosen.is_none() {
        out.push(Finding::general(
            Severity::Blocker,
            Code::LogicalImpossible,
            format!(
                "logical capture is not possible on the source: {}",
                c.logical_reasons()
            ),
            "set replication.capture to trigger (works on stock Heroku Postgres) or auto",
        ));
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::spec::CaptureMode;

    use crate::preflight::fixture;

    #[test]
    fn asking_for_logical_on_stock_heroku_is_a_blocker_saying_why() {
        let s = fixture::heroku_like();
        let found = fixture::run(super::check, &s, CaptureMode::Logical);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("wal_level is replica"), "{}", found[0]);
        assert!(fixture::auto(super::check, &s).is_empty(), "auto falls back");
        let ready = fixture::logical_ready();
        assert!(fixture::run(super::check, &ready, CaptureMode::Logical).is_empty());
    }
}
