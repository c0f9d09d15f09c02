//! **Warning.** A table is UNLOGGED: its changes never reach the write-ahead log, so logical
//! decoding never sees them (and a crash of the source empties it). Trigger capture still
//! carries them; the capture decision already rules logical capture out when one exists.
//!
//! Fix: use capture mode `trigger`, or `ALTER TABLE … SET LOGGED` before migrating.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for t in ctx.snapshot.tables.iter().filter(|t| t.unlogged) {
        let name = t.display_name();
        out.push(Finding::about(
            Severity::Warning,
            Code::UnloggedTable,
            &name,
            format!("{name} is UNLOGGED: logical decoding never sees its changes"),
            "use capture mode trigger, or ALTER TABLE … SET LOGGED before migrating",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::{Severity, fixture};

    #[test]
    fn an_unlogged_table_is_a_warning_naming_it() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty());
        let mut t = fixture::table("scratch");
        t.unlogged = true;
        s.tables.push(t);
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(found[0].object.as_deref(), Some("public.scratch"));
    }
}
