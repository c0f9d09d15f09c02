//! **Blocker.** The role Ferry connects to the target as may not set
//! `session_replication_role`. The apply sets it to `replica` so that rows land without firing
//! the target's triggers and foreign-key checks out of order. On RDS, members of
//! `rds_superuser` may set it (PostgreSQL 15 and later grant SET on the parameter).
//!
//! Fix: connect to the target as the RDS master user (a member of `rds_superuser`).

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if let Some(tgt) = ctx.snapshot.target_server()
        && !tgt.can_set_replication_role
    {
        out.push(Finding::general(
            Severity::Blocker,
            Code::TargetRole,
            format!(
                "target role {} may not set session_replication_role",
                tgt.role
            ),
            "connect to the target as the RDS master user (a member of rds_superuser)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::fixture;

    #[test]
    fn a_target_role_that_cannot_set_replication_role_is_a_blocker_naming_it() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty());
        s.target.as_mut().expect("target").server.can_set_replication_role = false;
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("role postgres"), "{}", found[0]);
    }
}
