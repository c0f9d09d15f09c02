//! Exit codes: what a script or CI job can tell apart without reading the message.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: done.
    Done,
    /// 1: a call failed, or the migration failed or rolled back.
    Failed,
    /// 2: a wrong argument or a missing setting.
    Usage,
    /// 3: a person must act (invalid spec, blockers, a live source, a blocked worker).
    Blocked,
    /// 4: `wait` ran out of time.
    TimedOut,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(match c {
            Code::Done => 0,
            Code::Failed => 1,
            Code::Usage => 2,
            Code::Blocked => 3,
            Code::TimedOut => 4,
        })
    }
}

/// How ferry was called is wrong (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A person must act before this can go on (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Blocked(pub String);

/// `wait` ran out of time (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

/// The exit code of an error: the first typed cause in its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> Code {
    for cause in e.chain() {
        if cause.is::<Usage>() {
            return Code::Usage;
        }
        if cause.is::<Blocked>() {
            return Code::Blocked;
        }
        if cause.is::<TimedOut>() {
            return Code::TimedOut;
        }
    }
    Code::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_first_typed_cause_decides_the_code_even_under_context() {
        let e = anyhow::Error::new(Blocked("fix it".into())).context("preflight");
        assert_eq!(code_of(&e), Code::Blocked);
        let e: anyhow::Result<()> = Err(Usage("no table".into())).context("status");
        assert_eq!(code_of(&e.expect_err("err")), Code::Usage);
        assert_eq!(code_of(&anyhow::anyhow!("network")), Code::Failed);
        assert_eq!(
            code_of(&anyhow::Error::new(TimedOut("6h".into()))),
            Code::TimedOut
        );
    }
}
