//! **Blocker.** The spec asks for `replication.capture: trigger`, but the connected role may
//! not create Ferry's schema in the database, or does not own (and is not a member of the owner
//! of) some table, so it cannot create the capture triggers. The message names the tables.
//!
//! Fix: connect to the source as the role that owns the app's tables (Heroku's default
//! credential).

use ferry_core::spec::CaptureMode;

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let c = ctx.capture;
    if c.requested == CaptureMode::Trigger && c.chosen.is_none() {
        out.push(Finding::general(
            Severity::Blocker,
            Code::TriggerImpossible,
            format!(
                "trigger capture is not possible on the source: {}",
                c.trigger_reasons()
            ),
            "connect to the source as the role that owns the app's tables (Heroku's default credential)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::spec::CaptureMode;

    use crate::preflight::fixture;

    #[test]
    fn asking_for_triggers_on_tables_the_role_does_not_own_is_a_blocker_naming_them() {
        let mut s = fixture::heroku_like();
        assert!(fixture::run(super::check, &s, CaptureMode::Trigger).is_empty());
        s.tables[0].can_trigger = false;
        let found = fixture::run(super::check, &s, CaptureMode::Trigger);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("role app does not own public.customers"),
            "{}",
            found[0]
        );
    }
}
