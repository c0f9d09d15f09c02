//! **Blocker.** The source database holds large objects (`pg_largeobject`). Neither trigger
//! capture nor logical decoding carries them, and they are not part of any table's rows, so
//! they would be left behind.
//!
//! Fix: move them into `bytea` columns before migrating, or unlink them if they are not needed.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let n = ctx.snapshot.large_objects;
    if n > 0 {
        out.push(Finding::general(
            Severity::Blocker,
            Code::LargeObjects,
            format!(
                "the source holds {n} large objects: neither triggers nor logical decoding carry them"
            ),
            "move them into bytea columns before migrating, or unlink them if they are not needed",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::fixture;

    #[test]
    fn any_large_object_is_a_blocker_counting_them() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty());
        s.large_objects = 3;
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("holds 3 large objects"), "{}", found[0]);
    }
}
