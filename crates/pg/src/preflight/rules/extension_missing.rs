//! **Blocker.** An extension installed on the source is not available on the target, so the
//! schema (and any column of its types) cannot be created there. Checked only when a target
//! exists; `ferry plan` runs before RDS does.
//!
//! Fix: use an RDS engine version that supports the extension, or drop it from the source if it
//! is unused.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let Some(target) = &ctx.snapshot.target else {
        return;
    };
    for e in &ctx.snapshot.extensions {
        if !target.available_extensions.contains(&e.name) {
            let name = &e.name;
            out.push(Finding::about(
                Severity::Blocker,
                Code::ExtensionMissing,
                name,
                format!(
                    "extension {name} is installed on the source but not available on the target"
                ),
                format!(
                    "use an RDS engine version that supports {name}, or drop it from the source if unused"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::{fixture, snapshot::Extension};

    #[test]
    fn an_extension_the_target_lacks_is_a_blocker_naming_it() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty(), "citext is offered");
        s.extensions.push(Extension {
            name: "adminpack".into(),
            version: "2.1".into(),
        });
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].object.as_deref(), Some("adminpack"));
        s.target = None;
        assert!(fixture::auto(super::check, &s).is_empty(), "no target yet");
    }
}
