//! **Blocker.** The target runs an older PostgreSQL major version than the source. A dump
//! taken from a newer server may not restore on an older one, and the apply's statements are
//! written for the source's features.
//!
//! Fix: create the RDS instance with an engine version at least the source's major.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let src = &ctx.snapshot.source;
    if let Some(tgt) = ctx.snapshot.target_server()
        && tgt.major < src.major
    {
        out.push(Finding::general(
            Severity::Blocker,
            Code::TargetOlder,
            format!(
                "target runs PostgreSQL {} but the source runs {}",
                tgt.major, src.major
            ),
            "create the RDS instance with an engine version at least the source's major",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::fixture;

    #[test]
    fn an_older_target_is_a_blocker_and_a_newer_or_absent_one_is_not() {
        let mut s = fixture::heroku_like();
        assert!(fixture::auto(super::check, &s).is_empty(), "17 over 15");
        s.target.as_mut().expect("target").server.major = 14;
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("PostgreSQL 14"), "{}", found[0]);
        s.target = None;
        assert!(fixture::auto(super::check, &s).is_empty(), "no target yet");
    }
}
