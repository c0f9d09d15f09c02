//! **Info.** The source has sequences. Neither capture mode carries sequence advances, so the
//! target's sequences would lag behind the rows copied into it.
//!
//! Nothing to do: Ferry sets every sequence on the target during the cutover's freeze, from
//! the source's final values plus a safety gap.

use super::{Ctx, Finding};
use crate::preflight::{Code, Severity};

pub(super) fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let n = ctx.snapshot.sequences.len();
    if n > 0 {
        out.push(Finding::general(
            Severity::Info,
            Code::Sequences,
            format!("{n} sequences are not replicated continuously"),
            "nothing to do: Ferry sets them on the target at cutover with a safety gap",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::preflight::fixture;

    #[test]
    fn sequences_are_counted_once() {
        let mut s = fixture::heroku_like();
        let found = fixture::auto(super::check, &s);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.starts_with("1 sequences"), "{}", found[0]);
        s.sequences.clear();
        assert!(fixture::auto(super::check, &s).is_empty());
    }
}
