//! **Info.** A table is partitioned. Its leaves are copied in parallel like ordinary tables;
//! changes are captured and applied through the root, so rows that move between partitions
//! stay consistent.
//!
//! Nothing to do.

use super::{Ctx, Finding};
use crate::{
    catalog::TableKind,
    preflight::{Code, Severity},
};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for t in &ctx.snapshot.tables {
        if matches!(t.kind, TableKind::Partitioned) {
            let name = t.display_name();
            out.push(Finding::about(
                Severity::Info,
                Code::PartitionedTable,
                &name,
                format!(
                    "{name} is partitioned: leaves are copied in parallel, changes are captured and applied through the root"
                ),
                "nothing to do",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{catalog::TableKind, preflight::fixture};

    #[test]
    fn only_a_top_level_partitioned_table_is_reported() {
        let mut s = fixture::heroku_like();
        let mut root = fixture::table("events");
        root.kind = TableKind::Partitioned;
        let mut mid = fixture::table("events_eu");
        mid.kind = TableKind::SubPartitioned {
            root: "\"public\".\"events\"".into(),
        };
        s.tables.extend([root, mid]);
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].object.as_deref(), Some("public.events"));
    }
}
