//! **Blocker.** The spec asks for logical capture and a keyed table's replica identity is
//! neither DEFAULT (its primary key) nor FULL: decoded UPDATEs and DELETEs would not carry the
//! key the apply matches rows on. One finding per table, beside `logical_impossible`, which
//! names every reason. Under `auto` such a table makes the migration use triggers instead.
//!
//! Fix: `ALTER TABLE … REPLICA IDENTITY DEFAULT`.

use ferry_core::spec::CaptureMode;

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity, capture::identity_lacks_key};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if ctx.capture.requested != CaptureMode::Logical {
        return;
    }
    for t in ctx.snapshot.tables.iter().filter(|t| identity_lacks_key(t)) {
        let name = t.display_name();
        out.push(Finding::about(
            Severity::Blocker,
            Code::ReplicaIdentity,
            &name,
            format!(
                "{name} has REPLICA IDENTITY {}: decoded changes would not carry its primary key",
                match t.replica_identity {
                    'n' => "NOTHING",
                    'i' => "USING INDEX",
                    _ => "other than DEFAULT or FULL",
                }
            ),
            format!("ALTER TABLE {} REPLICA IDENTITY DEFAULT", t.qualified()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::spec::CaptureMode;

    use crate::preflight::fixture;

    #[test]
    fn a_table_whose_identity_lacks_its_key_blocks_logical_with_the_alter() {
        let mut s = fixture::logical_ready();
        assert!(fixture::run(super::check, &s, CaptureMode::Logical).is_empty());
        s.tables[0].replica_identity = 'n';
        let found = fixture::run(super::check, &s, CaptureMode::Logical);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("REPLICA IDENTITY NOTHING"), "{}", found[0]);
        assert_eq!(
            found[0].fix,
            r#"ALTER TABLE "public"."customers" REPLICA IDENTITY DEFAULT"#
        );
        assert!(
            fixture::auto(super::check, &s).is_empty(),
            "auto uses triggers instead"
        );
        s.tables[0].replica_identity = 'f';
        assert!(
            fixture::run(super::check, &s, CaptureMode::Logical).is_empty(),
            "FULL carries the key"
        );
    }
}
