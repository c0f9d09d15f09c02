//! What preflight reports: findings, each with a severity, a stable code, the object concerned
//! and the fix.

use serde::Serialize;

pub use super::rules::Code;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The migration cannot start until this is fixed.
    Blocker,
    /// The migration can run, but a person should know.
    Warning,
    /// A fact worth recording.
    Info,
}

/// One thing preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// Its stable code (`no_primary_key`, `extension_missing`, …); [`Code::explain`] says
    /// what it means.
    pub code: Code,
    /// The table (or other object) concerned, if any.
    pub object: Option<String>,
    /// What was found.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl Finding {
    /// A finding about the whole source or target, not one object.
    pub fn general(
        severity: Severity,
        code: Code,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            code,
            object: None,
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// A finding about `object` (a table, an extension, a parameter).
    pub fn about(
        severity: Severity,
        code: Code,
        object: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            object: Some(object.into()),
            ..Self::general(severity, code, message, fix)
        }
    }
}

impl std::fmt::Display for Finding {
    /// `code (object): message Fix: fix`, one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {} Fix: {}", self.message, self.fix)
    }
}

/// What an attacker on the path to Heroku could do when the source's certificate is not
/// checked, said once in every such warning.
pub const UNCHECKED_RISK: &str = "the connection is encrypted but the server's certificate is not checked (Heroku's are self-signed), so whoever can intercept the route between AWS and Heroku could pose as the server and receive the password Ferry and the endpoint log in with";
