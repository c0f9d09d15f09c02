//! The endpoint's control channel: the cutover and the rollback tell each endpoint task the
//! desired state directly, instead of waiting for the task to find it in the state table and
//! for its report to land there (two table round trips and two poll intervals per step, inside
//! the window the app's queries are held).
//!
//! The state table stays the record and the fallback: the control plane stores the desired
//! state first (its number comes from there), then sends it to every task in parallel; a task
//! answers once it has converged, with the same report it writes to the table. A task that
//! cannot be reached is waited for through the table, as before.
//!
//! One request per TCP connection, one line each way:
//!
//! ```text
//! → ferry-endpoint/1 <unix seconds> <hex HMAC-SHA256 of "ferry-endpoint/1:<ts>:<json>"> <json EndpointDesired>\n
//! ← <json ControlReply>\n
//! ```
//!
//! The key is a SecureString both sides read from SSM at start (never on the wire). A message
//! older than [`crate::signing::CONTROL_MAX_AGE_SECONDS`] is refused; a replayed message
//! changes nothing (a task acts only on a number above the one it reached).

use serde::{Deserialize, Serialize};

use crate::{
    endpoint::{EndpointDesired, EndpointTask},
    signing::{self, SignatureError},
};

/// The protocol's name and version, the first word of a request.
pub const PROTOCOL: &str = "ferry-endpoint/1";

/// The shortest key either side uses (a shorter one leaves the channel off).
pub const MIN_KEY: usize = 32;

/// Longest request or reply line accepted, in bytes.
pub const MAX_LINE: usize = 16 * 1024;

/// A task's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    /// Where the task is after acting on the request (or before it, when the request's number
    /// was not above the one it had reached).
    Report(Box<EndpointTask>),
    /// Why the request was not acted on (bad signature, stale, another app, malformed).
    Refused(String),
}

/// Why a request line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Not `ferry-endpoint/1 <ts> <sig> <json>`, or the JSON is not a desired state.
    #[error("malformed control request: {0}")]
    Malformed(String),
    /// The signature or the timestamp is wrong.
    #[error("control request refused: {0}")]
    Signature(#[from] SignatureError),
    /// Meant for another app's endpoint.
    #[error("control request is for app {got}, this endpoint serves {want}")]
    OtherApp {
        /// The app in the request.
        got: String,
        /// This endpoint's app.
        want: String,
    },
}

/// The request line (newline included) telling a task `want`, signed with `key` at `now`.
pub fn request_line(key: &[u8], want: &EndpointDesired, now: i64) -> String {
    // An EndpointDesired always serialises.
    let body = serde_json::to_string(want).unwrap_or_default();
    let sig = signing::sign_control(key, now, body.as_bytes());
    format!("{PROTOCOL} {now} {sig} {body}\n")
}

/// Checks a request line (without its newline) for `app` at `now` and returns the desired
/// state it carries.
pub fn parse_request(
    key: &[u8],
    app: &str,
    line: &str,
    now: i64,
) -> Result<EndpointDesired, ControlError> {
    let malformed = |what: &str| ControlError::Malformed(what.to_string());
    let mut parts = line.splitn(4, ' ');
    if parts.next() != Some(PROTOCOL) {
        return Err(malformed("expected the ferry-endpoint/1 protocol"));
    }
    let ts = parts
        .next()
        .filter(|t| !t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| malformed("timestamp is not a number of seconds"))?;
    let sig = parts.next().ok_or_else(|| malformed("no signature"))?;
    let body = parts.next().ok_or_else(|| malformed("no body"))?;
    signing::verify_control(key, ts, body.as_bytes(), sig, now)?;
    let want: EndpointDesired = serde_json::from_str(body)
        .map_err(|e| malformed(&format!("body is not a desired endpoint state: {e}")))?;
    if want.app != app {
        return Err(ControlError::OtherApp {
            got: want.app,
            want: app.to_string(),
        });
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Backend;

    fn want() -> EndpointDesired {
        EndpointDesired {
            seq: 7,
            paused: true,
            backend: Backend::Target,
            ..EndpointDesired::initial("acme")
        }
    }

    fn line(key: &[u8], now: i64) -> String {
        request_line(key, &want(), now).trim_end().to_string()
    }

    #[test]
    fn a_signed_request_round_trips() {
        let got = parse_request(b"k1", "acme", &line(b"k1", 1_000), 1_010).expect("valid");
        assert_eq!(got, want());
    }

    #[test]
    fn the_wrong_key_a_changed_body_or_an_old_message_is_refused() {
        assert!(matches!(
            parse_request(b"k2", "acme", &line(b"k1", 1_000), 1_000),
            Err(ControlError::Signature(SignatureError::Mismatch))
        ));
        let tampered = line(b"k1", 1_000).replace("\"paused\":true", "\"paused\":false");
        assert!(matches!(
            parse_request(b"k1", "acme", &tampered, 1_000),
            Err(ControlError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            parse_request(b"k1", "acme", &line(b"k1", 1_000), 1_031),
            Err(ControlError::Signature(SignatureError::Stale { .. }))
        ));
        assert!(matches!(
            parse_request(b"k1", "acme", &line(b"k1", 1_000), 969),
            Err(ControlError::Signature(SignatureError::Stale { .. }))
        ));
    }

    #[test]
    fn another_apps_request_or_junk_is_refused() {
        assert!(matches!(
            parse_request(b"k1", "other", &line(b"k1", 1_000), 1_000),
            Err(ControlError::OtherApp { .. })
        ));
        for junk in [
            "",
            "GET / HTTP/1.1",
            "ferry-endpoint/1",
            "ferry-endpoint/1 -5 ab {}",
            "ferry-endpoint/1 1000",
            "ferry-endpoint/1 1000 zz {}",
        ] {
            assert!(
                parse_request(b"k1", "acme", junk, 1_000).is_err(),
                "{junk:?} accepted"
            );
        }
        // Signed, but not a desired state.
        let sig = signing::sign_control(b"k1", 1_000, b"{}");
        assert!(matches!(
            parse_request(b"k1", "acme", &format!("{PROTOCOL} 1000 {sig} {{}}"), 1_000),
            Err(ControlError::Malformed(_))
        ));
    }

    #[test]
    fn a_reply_round_trips() {
        let r = ControlReply::Refused("stale".into());
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(text, r#"{"refused":"stale"}"#);
        assert_eq!(
            serde_json::from_str::<ControlReply>(&text).expect("parse"),
            r
        );
    }
}
