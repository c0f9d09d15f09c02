//! **Info.** A table has stored generated columns (`GENERATED ALWAYS AS (…) STORED`). They are
//! not copied or applied: the target computes them from the copied columns, as the source does.
//!
//! Nothing to do.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for t in ctx.snapshot.tables.iter().filter(|t| t.is_capture_unit()) {
        let generated: Vec<&str> = t
            .columns
            .iter()
            .filter(|c| c.generated)
            .map(|c| c.name.as_str())
            .collect();
        if generated.is_empty() {
            continue;
        }
        let name = t.display_name();
        out.push(Finding::about(
            Severity::Info,
            Code::GeneratedColumns,
            &name,
            format!(
                "{name} has stored generated columns ({}): not copied, the target computes them",
                generated.join(", ")
            ),
            "nothing to do",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::{catalog::Column, preflight::fixture};

    #[test]
    fn stored_generated_columns_are_listed_by_name() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty());
        s.tables[0].columns.push(Column {
            name: "tax".into(),
            type_sql: "numeric".into(),
            generated: true,
            identity_always: false,
            identity: false,
            binary_portable: true,
        });
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("(tax)"), "{}", found[0]);
    }
}
