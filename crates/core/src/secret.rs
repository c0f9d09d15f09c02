//! [`Secret`]: a string that cannot print.

use serde::{Deserialize, Serialize};

/// A secret string (a bearer token, a task token, a key): `Debug` and `Display` print `***`,
/// so a struct holding one can be logged or formatted without leaking it. It serialises as
/// the plain string (it is stored only where secrets belong); code that must use the value
/// reads it through `Deref<Target = str>` or [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value: for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn a_secret_never_prints_but_serialises_whole() {
        let s = Secret::new("tok-Zk7");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"tok-Zk7\"");
        let back: Secret = serde_json::from_str("\"tok-Zk7\"").expect("json");
        assert_eq!(back.expose(), "tok-Zk7");
    }

    #[test]
    fn a_pending_gate_prints_without_its_task_token() {
        let r = crate::state::ApprovalRequest {
            migration_id: "m".into(),
            gate: crate::state::Gate::Cutover,
            task_token: Secret::new("AQCEAAAAKgAAAAMAAAAAAAAAAZk7"),
            requested_at: chrono::Utc::now(),
            status: crate::state::ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
        };
        assert!(!format!("{r:?}").contains("Zk7"));
    }
}
