//! Request signing for approvals: Slack's request signature (HMAC-SHA256 of `v0:ts:body`),
//! and Ferry's own signed links for email approvers. Comparisons are constant-time; stale
//! requests are refused. Replays within the window are refused by the store (an approval is
//! decided once).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{errors::StepErrorName, state::Gate};

type HmacSha256 = Hmac<Sha256>;

/// How old a Slack request may be.
pub const MAX_AGE_SECONDS: i64 = 5 * 60;

/// Why a signed request was refused. Never says what the right signature would have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Header or token missing or malformed.
    #[error("request signature is missing or malformed: {0}")]
    Malformed(&'static str),
    /// Older (or further in the future) than the window allows.
    #[error(
        "request timestamp is {age_seconds} s away from now; at most {MAX_AGE_SECONDS} s is accepted"
    )]
    Stale {
        /// Distance from now in seconds.
        age_seconds: i64,
    },
    /// The signature does not match.
    #[error("request signature does not match")]
    Mismatch,
}

impl StepErrorName for SignatureError {
    fn step_error_name(&self) -> &'static str {
        "Ferry.Blocked.BadSignature"
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    // Digits only: `from_str_radix` alone would take a `+` sign.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The checks of a Slack request that need no secret: a timestamp of seconds within
/// [`MAX_AGE_SECONDS`] of `now`, and a signature of the form `v0=<64 hex digits>` (returned
/// as bytes). The approval URL runs them before it reads the signing secret, so a flood of
/// stale or malformed requests costs no SSM or KMS call.
pub fn slack_precheck(
    timestamp: &str,
    signature: &str,
    now: i64,
) -> Result<Vec<u8>, SignatureError> {
    if timestamp.is_empty()
        || timestamp.len() > 18
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(SignatureError::Malformed(
            "X-Slack-Request-Timestamp is not a number of seconds",
        ));
    }
    let ts: i64 = timestamp.parse().map_err(|_| {
        SignatureError::Malformed("X-Slack-Request-Timestamp is not a number of seconds")
    })?;
    let age = now
        .checked_sub(ts)
        .and_then(i64::checked_abs)
        .unwrap_or(i64::MAX);
    if age > MAX_AGE_SECONDS {
        return Err(SignatureError::Stale { age_seconds: age });
    }
    signature
        .strip_prefix("v0=")
        .filter(|h| h.len() == 64)
        .and_then(unhex)
        .ok_or(SignatureError::Malformed(
            "X-Slack-Signature is not v0=<64 hex digits>",
        ))
}

/// Checks a Slack request: `timestamp` is the `X-Slack-Request-Timestamp` header, `signature`
/// the `X-Slack-Signature` header (`v0=<64 hex digits>`), `body` the raw body, `now` Unix
/// seconds. The MAC covers the timestamp header's bytes as sent (a re-formatted timestamp does
/// not verify); the age is computed without overflow. Returns the signature as lowercase hex,
/// the one spelling a replay record may be keyed on (hex case is not part of the MAC).
pub fn verify_slack(
    signing_secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<String, SignatureError> {
    let given = slack_precheck(timestamp, signature, now)?;
    let mut m = mac(signing_secret);
    m.update(b"v0:");
    m.update(timestamp.as_bytes());
    m.update(b":");
    m.update(body);
    m.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(hex(&given))
}

/// Signs a Slack-style request (what Slack does; used by tests and the local rehearsal).
pub fn sign_slack(signing_secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(signing_secret);
    m.update(format!("v0:{timestamp}:").as_bytes());
    m.update(body);
    format!("v0={}", hex(&m.finalize().into_bytes()))
}

/// What a signed email link grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    /// The migration.
    pub migration_id: String,
    /// The gate.
    pub gate: Gate,
    /// `true`: approve; `false`: reject.
    pub approve: bool,
    /// Who the link was sent to.
    pub approver: String,
    /// Unix seconds after which the link is refused.
    pub expires_at: i64,
}

fn link_payload(c: &LinkClaims) -> String {
    format!(
        "{}.{}.{}.{}.{}",
        hex(c.migration_id.as_bytes()),
        c.gate.as_str(),
        if c.approve { "approve" } else { "reject" },
        hex(c.approver.as_bytes()),
        c.expires_at
    )
}

/// Makes the token for an approve/reject link.
pub fn sign_link(secret: &[u8], claims: &LinkClaims) -> String {
    let payload = link_payload(claims);
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!("{payload}.{}", hex(&m.finalize().into_bytes()))
}

/// The checks of a link token that need no secret: five payload parts, an expiry not passed
/// (read unverified here; [`verify_link`] checks it again once the signature holds) and a
/// signature of 64 hex digits. Returns the payload and the signature's bytes. The approval URL
/// runs them before it reads the link secret.
pub fn link_precheck(token: &str, now: i64) -> Result<(&str, Vec<u8>), SignatureError> {
    let (payload, sig) = token
        .rsplit_once('.')
        .ok_or(SignatureError::Malformed("token has no signature"))?;
    let sig = Some(sig)
        .filter(|h| h.len() == 64)
        .and_then(unhex)
        .ok_or(SignatureError::Malformed("signature is not 64 hex digits"))?;
    let parts: Vec<&str> = payload.split('.').collect();
    let [_, _, _, _, expires] = parts[..] else {
        return Err(SignatureError::Malformed(
            "token has the wrong number of parts",
        ));
    };
    let expires: i64 = expires
        .parse()
        .map_err(|_| SignatureError::Malformed("bad expiry"))?;
    if now > expires {
        return Err(SignatureError::Stale {
            age_seconds: now - expires,
        });
    }
    Ok((payload, sig))
}

/// The key a used link is remembered by: its signature in lower-case hex, so the same link
/// with its signature re-cased is the same link (a replay).
pub fn link_nonce(token: &str) -> String {
    token
        .rsplit_once('.')
        .map_or(token, |(_, sig)| sig)
        .to_ascii_lowercase()
}

/// Checks a link token and returns what it grants.
pub fn verify_link(secret: &[u8], token: &str, now: i64) -> Result<LinkClaims, SignatureError> {
    let (payload, sig) = link_precheck(token, now)?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    m.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)?;
    let parts: Vec<&str> = payload.split('.').collect();
    let [id, gate, decision, approver, expires] = parts[..] else {
        return Err(SignatureError::Malformed(
            "token has the wrong number of parts",
        ));
    };
    let text = |h: &str| unhex(h).and_then(|b| String::from_utf8(b).ok());
    let claims = LinkClaims {
        migration_id: text(id).ok_or(SignatureError::Malformed("bad migration id"))?,
        gate: Gate::parse(gate).ok_or(SignatureError::Malformed("bad gate"))?,
        approve: match decision {
            "approve" => true,
            "reject" => false,
            _ => return Err(SignatureError::Malformed("bad decision")),
        },
        approver: text(approver).ok_or(SignatureError::Malformed("bad approver"))?,
        expires_at: expires
            .parse()
            .map_err(|_| SignatureError::Malformed("bad expiry"))?,
    };
    if now > claims.expires_at {
        return Err(SignatureError::Stale {
            age_seconds: now - claims.expires_at,
        });
    }
    Ok(claims)
}

/// How far an endpoint control message's timestamp may be from the receiver's clock.
pub const CONTROL_MAX_AGE_SECONDS: i64 = 30;

/// Signs an endpoint control message (see [`crate::control`]): HMAC-SHA256 of
/// `ferry-endpoint/1:<timestamp>:<body>`, as 64 lowercase hex digits.
pub fn sign_control(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(format!("ferry-endpoint/1:{timestamp}:").as_bytes());
    m.update(body);
    hex(&m.finalize().into_bytes())
}

/// Checks an endpoint control message: a timestamp within [`CONTROL_MAX_AGE_SECONDS`] of
/// `now` and a signature over it and the body, compared in constant time.
pub fn verify_control(
    key: &[u8],
    timestamp: i64,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let age = now
        .checked_sub(timestamp)
        .and_then(i64::checked_abs)
        .unwrap_or(i64::MAX);
    if age > CONTROL_MAX_AGE_SECONDS {
        return Err(SignatureError::Stale { age_seconds: age });
    }
    let given = Some(signature)
        .filter(|h| h.len() == 64)
        .and_then(unhex)
        .ok_or(SignatureError::Malformed("signature is not 64 hex digits"))?;
    let mut m = mac(key);
    m.update(format!("ferry-endpoint/1:{timestamp}:").as_bytes());
    m.update(body);
    m.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relinked_signature_in_upper_case_is_the_same_link() {
        let token = sign_link(
            b"k",
            &LinkClaims {
                migration_id: "m".into(),
                gate: Gate::Cutover,
                approve: true,
                approver: "a@example.com".into(),
                expires_at: 2_000,
            },
        );
        let (payload, sig) = token.rsplit_once('.').expect("signed");
        let shouted = format!("{payload}.{}", sig.to_ascii_uppercase());
        assert!(
            verify_link(b"k", &shouted, 1_000).is_ok(),
            "hex of either case verifies"
        );
        assert_eq!(
            link_nonce(&shouted),
            link_nonce(&token),
            "and is the same link"
        );
    }

    #[test]
    fn junk_and_stale_requests_are_refused_before_any_secret_is_read() {
        assert!(matches!(
            link_precheck("no-signature", 0),
            Err(SignatureError::Malformed(_))
        ));
        let stale = format!("a.b.approve.c.10.{}", "0".repeat(64));
        assert!(matches!(
            link_precheck(&stale, 11),
            Err(SignatureError::Stale { .. })
        ));
        let short = format!("a.b.approve.c.10.{}", "0".repeat(10));
        assert!(link_precheck(&short, 0).is_err());
        assert!(link_precheck(&format!("a.b.approve.c.10.{}", "0".repeat(64)), 5).is_ok());
        assert!(matches!(
            slack_precheck("100", &format!("v0={}", "0".repeat(64)), 100 + 301),
            Err(SignatureError::Stale { .. })
        ));
        assert!(slack_precheck("100", "v0=abc", 100).is_err());
        assert!(slack_precheck("100", &format!("v0={}", "a".repeat(64)), 100).is_ok());
    }

    // Slack's documented example (api.slack.com "Verifying requests from Slack").
    const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        let now = 1_531_420_618 + 10;
        assert_eq!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, SLACK_SIG, now),
            Ok(SLACK_SIG[3..].to_string())
        );
        assert_eq!(
            sign_slack(SLACK_SECRET, 1_531_420_618, SLACK_BODY),
            SLACK_SIG
        );
    }

    #[test]
    fn tampered_stale_and_malformed_slack_requests_are_refused() {
        let now = 1_531_420_618;
        let mut body = SLACK_BODY.to_vec();
        body[0] ^= 1;
        assert_eq!(
            verify_slack(SLACK_SECRET, SLACK_TS, &body, SLACK_SIG, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_slack(b"other-secret", SLACK_TS, SLACK_BODY, SLACK_SIG, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, SLACK_SIG, now + 301),
            Err(SignatureError::Stale { age_seconds: 301 })
        );
        assert!(matches!(
            verify_slack(SLACK_SECRET, "yesterday", SLACK_BODY, SLACK_SIG, now),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, "v1=abc", now),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn re_encoded_and_extreme_slack_headers_are_refused() {
        let now = 1_531_420_618;
        // i64::MIN and other numbers that overflow an age: refused, never a panic or a pass.
        for ts in [
            "-9223372036854775808",
            "9223372036854775807",
            "99999999999999999999",
        ] {
            assert!(
                verify_slack(SLACK_SECRET, ts, SLACK_BODY, SLACK_SIG, now).is_err(),
                "{ts}"
            );
        }
        assert!(matches!(
            verify_slack(
                SLACK_SECRET,
                "-9223372036854775808",
                SLACK_BODY,
                SLACK_SIG,
                now
            ),
            Err(SignatureError::Malformed(_))
        ));
        // The same instant written differently does not verify: the MAC covers the bytes sent.
        for ts in ["+1531420618", "01531420618", " 1531420618", "1531420618 "] {
            assert!(
                verify_slack(SLACK_SECRET, ts, SLACK_BODY, SLACK_SIG, now).is_err(),
                "{ts:?}"
            );
        }
        // Upper-case hex verifies, and maps to the same replay key as the lower-case original.
        let upper = format!("v0={}", SLACK_SIG[3..].to_ascii_uppercase());
        assert_eq!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, &upper, now),
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, SLACK_SIG, now)
        );
        // A sign inside the hex is not a digit.
        let signed = format!("v0=+{}", &SLACK_SIG[4..]);
        assert!(matches!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, &signed, now),
            Err(SignatureError::Malformed(_))
        ));
        // A signature of the wrong length is malformed, not compared.
        assert!(matches!(
            verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY, &SLACK_SIG[..60], now),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn links_round_trip_and_refuse_tampering_and_expiry() {
        let claims = LinkClaims {
            migration_id: "acme-prod.1".into(),
            gate: Gate::Cutover,
            approve: true,
            approver: "ops@acme.example".into(),
            expires_at: 2_000,
        };
        let token = sign_link(b"k", &claims);
        assert_eq!(verify_link(b"k", &token, 1_000), Ok(claims.clone()));
        assert_eq!(
            verify_link(b"other", &token, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_link(b"k", &token, 2_001),
            Err(SignatureError::Stale { age_seconds: 1 })
        );
        // Turning an approve link into a reject link breaks the signature.
        let forged = token.replacen(".approve.", ".reject.", 1);
        assert_eq!(
            verify_link(b"k", &forged, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_link(b"k", "nonsense", 1_000),
            Err(SignatureError::Malformed(_))
        ));
    }
}
