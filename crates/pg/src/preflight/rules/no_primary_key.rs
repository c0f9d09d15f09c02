//! **Blocker.** A table (or partition root) has no primary key. Its changes cannot be matched
//! to a row on the target, and once it is published for logical decoding, UPDATE and DELETE on
//! it fail on the source. Leaf partitions are judged through their root.
//!
//! Fix: add a key before migrating, e.g. `ALTER TABLE … ADD COLUMN ferry_id bigint GENERATED
//! ALWAYS AS IDENTITY PRIMARY KEY`, or a primary key over existing unique NOT NULL columns.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for t in &ctx.snapshot.tables {
        if t.is_capture_unit() && t.primary_key.is_empty() {
            let name = t.display_name();
            out.push(Finding::about(
                Severity::Blocker,
                Code::NoPrimaryKey,
                &name,
                format!(
                    "{name} has no primary key: its changes cannot be matched on the target (and once published, UPDATE/DELETE on it fail on the source)"
                ),
                format!(
                    "add one before migrating, e.g. ALTER TABLE {} ADD COLUMN ferry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY (or a primary key over existing unique NOT NULL columns)",
                    t.qualified()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        catalog::TableKind,
        preflight::{Severity, fixture},
    };

    #[test]
    fn a_keyless_table_is_a_blocker_whose_fix_quotes_its_name() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty());
        let mut t = fixture::table("Audit \"Trail\"");
        t.primary_key.clear();
        s.tables.push(t);
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Blocker);
        assert_eq!(found[0].object.as_deref(), Some("public.Audit \"Trail\""));
        assert!(
            found[0]
                .fix
                .contains(r#"ALTER TABLE "public"."Audit ""Trail""" ADD COLUMN ferry_id"#),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn a_keyless_leaf_partition_is_judged_through_its_root() {
        let mut s = fixture::heroku_like();
        let mut leaf = fixture::table("events_2026");
        leaf.primary_key.clear();
        leaf.kind = TableKind::Partition {
            root: "\"public\".\"events\"".into(),
        };
        s.tables.push(leaf);
        assert!(fixture::auto(super::check, &s).is_empty());
    }
}
