//! What the endpoint's Redis proxy refuses to forward, with the reason the client reads.
//!
//! The app logs in to the proxy with its own password, but the proxy talks to Heroku Redis and
//! ElastiCache with the migration's credentials, so it must not let the app drive either server
//! in ways a migration cannot follow: commands whose effect emits no keyspace event the live
//! sync could copy (FLUSHDB, FLUSHALL, SWAPDB), commands that manage the server or other
//! clients (CONFIG, CLIENT KILL/PAUSE, SHUTDOWN, REPLICAOF, ACL …), and writes to the keys Ferry
//! itself keeps on both servers (`ferry:*`: drain markers, the queue hand-over, probes). Each
//! refusal is an error reply; the session goes on.
//!
//! Keys are checked where a command names them: the first argument of every command, every
//! argument of the multi-key commands in [`ALL_KEYS`], and every other argument of MSET and
//! MSETNX.

/// Commands refused whole: the name and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "FLUSHDB",
        "its deletions emit no keyspace events, so the live sync would not copy them and the keys would come back on ElastiCache; delete the keys with UNLINK (or SCAN and UNLINK)",
    ),
    (
        "FLUSHALL",
        "its deletions emit no keyspace events, so the live sync would not copy them and the keys would come back on ElastiCache; delete the keys with UNLINK (or SCAN and UNLINK)",
    ),
    (
        "SWAPDB",
        "it emits no keyspace events, so the live sync would not follow it",
    ),
    (
        "MOVE",
        "a key moved to another database may be one the migration does not copy",
    ),
    (
        "CONFIG",
        "the servers' configuration is the migration's (keyspace notifications, eviction)",
    ),
    ("DEBUG", "it manages the server"),
    ("SHUTDOWN", "it manages the server"),
    ("REPLICAOF", "it manages the server"),
    ("SLAVEOF", "it manages the server"),
    ("FAILOVER", "it manages the server"),
    (
        "MIGRATE",
        "it moves keys to a server the migration does not know",
    ),
    ("ACL", "the servers' users are the migration's"),
    ("MODULE", "it manages the server"),
    ("SAVE", "it manages the server"),
    ("BGSAVE", "it manages the server"),
    ("BGREWRITEAOF", "it manages the server"),
    ("CLUSTER", "it manages the server"),
    ("SYNC", "replication protocol"),
    ("PSYNC", "replication protocol"),
    (
        "MONITOR",
        "a monitor would watch one server of two during the move",
    ),
    (
        "RESET",
        "it would log the proxy's own connection out of the server; open a new connection instead",
    ),
];

/// Subcommands refused: command, subcommand and why.
const REFUSED_SUB: &[(&str, &str, &str)] = &[
    (
        "CLIENT",
        "KILL",
        "the server's other clients include the migration's",
    ),
    (
        "CLIENT",
        "PAUSE",
        "a paused server stops the migration's own sessions",
    ),
    (
        "CLIENT",
        "UNPAUSE",
        "the servers' pauses are the migration's",
    ),
    (
        "CLIENT",
        "NO-EVICT",
        "it changes how the server treats other clients",
    ),
    (
        "SCRIPT",
        "FLUSH",
        "scripts flushed on one server are not flushed on the other",
    ),
    ("SCRIPT", "KILL", "a script may be the migration's"),
    (
        "FUNCTION",
        "FLUSH",
        "functions flushed on one server are not flushed on the other",
    ),
    (
        "FUNCTION",
        "DELETE",
        "functions deleted on one server are not deleted on the other",
    ),
    (
        "FUNCTION",
        "RESTORE",
        "functions restored on one server are not restored on the other",
    ),
    ("FUNCTION", "KILL", "a function may be the migration's"),
];

/// Commands whose every argument is a key.
const ALL_KEYS: &[&str] = &[
    "DEL",
    "UNLINK",
    "EXISTS",
    "TOUCH",
    "MGET",
    "WATCH",
    "RENAME",
    "RENAMENX",
    "COPY",
    "SMOVE",
    "RPOPLPUSH",
    "LMOVE",
    "SINTER",
    "SUNION",
    "SDIFF",
    "SINTERSTORE",
    "SUNIONSTORE",
    "SDIFFSTORE",
    "PFCOUNT",
    "PFMERGE",
];

/// The prefix of the keys Ferry keeps on both servers.
pub const FERRY_PREFIX: &[u8] = b"ferry:";

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

/// The error reply's text when the proxy must not forward `args`, `None` when it may.
pub fn refused(args: &[Vec<u8>]) -> Option<String> {
    let name = upper(args.first()?);
    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
        return Some(format!(
            "ERR {name} is refused through the Ferry endpoint: {why}"
        ));
    }
    if let Some(sub) = args.get(1).map(|a| upper(a))
        && let Some((_, _, why)) = REFUSED_SUB.iter().find(|(n, s, _)| *n == name && *s == sub)
    {
        return Some(format!(
            "ERR {name} {sub} is refused through the Ferry endpoint: {why}"
        ));
    }
    let keys: Vec<&Vec<u8>> = match name.as_str() {
        "MSET" | "MSETNX" => args.iter().skip(1).step_by(2).collect(),
        n if ALL_KEYS.contains(&n) => args.iter().skip(1).collect(),
        _ => args.get(1).into_iter().collect(),
    };
    keys.iter().find(|k| k.starts_with(FERRY_PREFIX)).map(|k| {
        format!(
            "ERR the key {} is refused through the Ferry endpoint: keys under ferry: are the migration's own",
            String::from_utf8_lossy(k)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn administrative_commands_and_ferrys_keys_are_refused_and_the_rest_passes() {
        for refused_one in [
            &["flushdb"][..],
            &["FLUSHALL", "ASYNC"],
            &["SWAPDB", "0", "1"],
            &["CONFIG", "SET", "notify-keyspace-events", ""],
            &["client", "kill", "ID", "7"],
            &["CLIENT", "PAUSE", "10000"],
            &["SCRIPT", "FLUSH"],
            &["RESET"],
            &["SET", "ferry:drain:x", "1"],
            &["DEL", "a", "ferry:handover:given:q"],
            &["MSET", "a", "1", "ferry:probe:1", "2"],
        ] {
            let a = args(refused_one);
            let text = refused(&a).unwrap_or_default();
            assert!(text.starts_with("ERR "), "{refused_one:?} → {text:?}");
            assert!(text.contains("Ferry endpoint"), "{text}");
        }
        for allowed in [
            &["GET", "k"][..],
            &["SET", "k", "ferry:a value, not a key"],
            &["MSET", "a", "ferry:value", "b", "2"],
            &["CLIENT", "SETNAME", "web"],
            &["SCRIPT", "LOAD", "return 1"],
            &["SELECT", "2"],
            &["PING"],
        ] {
            assert_eq!(refused(&args(allowed)), None, "{allowed:?}");
        }
    }
}
