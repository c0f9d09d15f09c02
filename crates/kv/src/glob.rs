//! Redis's glob patterns (as KEYS, SCAN MATCH and PSUBSCRIBE read them): `*` any run of
//! bytes, `?` one byte, `[abc]`, `[a-z]` and `[^a]` classes, `\` escaping the next byte.
//! Used to leave the spec's disposable keys out of the copy, the live sync and the comparison.

/// Whether `key` matches `pattern`.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((b'*', rest)) => (0..=key.len()).any(|i| matches(rest, &key[i..])),
        Some((b'?', rest)) => !key.is_empty() && matches(rest, &key[1..]),
        Some((b'[', rest)) => {
            let Some((&k, key_rest)) = key.split_first() else {
                return false;
            };
            let (negate, mut body) = match rest.split_first() {
                Some((b'^', b)) => (true, b),
                _ => (false, rest),
            };
            let mut hit = false;
            loop {
                match body {
                    [] => return false, // unterminated class: Redis treats it as no match
                    [b']', tail @ ..] => {
                        body = tail;
                        break;
                    }
                    [b'\\', c, tail @ ..] => {
                        hit |= *c == k;
                        body = tail;
                    }
                    [a, b'-', z, tail @ ..] if *z != b']' => {
                        let (lo, hi) = if a <= z { (*a, *z) } else { (*z, *a) };
                        hit |= (lo..=hi).contains(&k);
                        body = tail;
                    }
                    [c, tail @ ..] => {
                        hit |= *c == k;
                        body = tail;
                    }
                }
            }
            hit != negate && matches(body, key_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            key.first() == Some(&rest[0]) && matches(&rest[1..], &key[1..])
        }
        Some((c, rest)) => key.first() == Some(c) && matches(rest, &key[1..]),
    }
}

/// Whether `pattern` names one key (no `*`, `?`, `[` or `\\`): it can be looked up, not
/// scanned.
pub fn is_literal(pattern: &[u8]) -> bool {
    !pattern
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// Whether `key` matches any of `patterns`.
pub fn any(patterns: &[String], key: &[u8]) -> bool {
    patterns.iter().any(|p| matches(p.as_bytes(), key))
}

/// The glob of the keys preflight's probes write (each with a TTL of 2 s or 60 s); the sync
/// leaves them out.
pub const PROBE_KEYS: &str = "ferry:probe:*";

/// Prefix of every key the queue hand-over writes (left out of the copy, sync and
/// comparison).
pub const HANDOVER_KEYS: &str = "ferry:handover:*";

/// The prefix of the drain markers the live sync writes and waits for.
pub const DRAIN_PREFIX: &str = "ferry:drain:";

/// Whether `key` is a drain marker (`ferry:drain:*`; left out of copies and comparisons).
pub fn is_marker(key: &[u8]) -> bool {
    key.starts_with(DRAIN_PREFIX.as_bytes())
}

/// Whether the copy, the live sync and the comparison leave `key` out: one of the disposable
/// `skip` globs, or one of Ferry's own keys (preflight's short-lived probe keys, the queue
/// hand-over's moving areas, counters and markers, the drain markers: not the app's data).
pub fn left_out(skip: &[String], key: &[u8]) -> bool {
    any(skip, key)
        || matches(PROBE_KEYS.as_bytes(), key)
        || matches(HANDOVER_KEYS.as_bytes(), key)
        || is_marker(key)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_semantics() {
        for (p, k, want) in [
            ("cache:*", "cache:page:1", true),
            ("cache:*", "session:1", false),
            ("*", "", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("rack::attack:*", "rack::attack:1.2.3.4", true),
            ("*:tmp", "x:y:tmp", true),
            ("[abc", "a", false),
        ] {
            assert_eq!(matches(p.as_bytes(), k.as_bytes()), want, "{p} ~ {k}");
        }
        assert!(super::is_literal(b"schedule"));
        for p in ["queue:*", "h?llo", "h[ae]llo", "a\\*b"] {
            assert!(!super::is_literal(p.as_bytes()), "{p}");
        }
    }
}
