//! Preflight's rules: one file per finding code, each a pure `fn check(&Ctx, &mut Vec<Finding>)`
//! over the [`Snapshot`] and the [`CaptureDecision`]. A rule's `//!` comment is its published
//! documentation ([`Code::explain`], `docs/preflight-rules.md`).
//!
//! To add a rule: write `rules/<code>.rs` with its doc comment, `check` and a unit test on a
//! fixture snapshot, then add `Variant => <code>` to the table below (its place in the table is
//! its place in the report among findings of equal severity and object).

use serde::{Deserialize, Serialize};

use super::{Finding, capture::CaptureDecision, snapshot::Snapshot};

/// What every rule reads.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The facts gathered from the servers.
    pub snapshot: &'a Snapshot,
    /// The capture mode decided from them.
    pub capture: &'a CaptureDecision,
    /// The copy parallelism the spec asks for.
    pub parallelism: u32,
}

/// A rule's check.
pub type Check = fn(&Ctx<'_>, &mut Vec<Finding>);

macro_rules! registry {
    (
        catalog: [$($rule:ident => $rule_mod:ident),+ $(,)?],
        urls: [$($url:ident => $url_mod:ident),+ $(,)?] $(,)?
    ) => {
        $(mod $rule_mod;)+
        $(pub(super) mod $url_mod;)+

        /// A finding's stable code: what scripts and the audit log match on.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $(
                #[doc = concat!("See `rules/", stringify!($rule_mod), ".rs`.")]
                $rule,
            )+
            $(
                #[doc = concat!("See `rules/", stringify!($url_mod), ".rs`.")]
                $url,
            )+
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$rule,)+ $(Code::$url,)+];

            /// The rules that read the snapshot, in the order they run. (The checks of a
            /// connection URL are run by their callers.)
            pub const RULES: &'static [(Code, Check)] = &[$((Code::$rule, $rule_mod::check),)+];

            /// The code as it is written in reports (`no_primary_key`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$rule => stringify!($rule_mod),)+
                    $(Code::$url => stringify!($url_mod),)+
                }
            }

            fn source(self) -> &'static str {
                match self {
                    $(Code::$rule => include_str!(concat!(stringify!($rule_mod), ".rs")),)+
                    $(Code::$url => include_str!(concat!(stringify!($url_mod), ".rs")),)+
                }
            }
        }
    };
}

registry! {
    catalog: [
        TargetOlder => target_older,
        TargetRole => target_role,
        NoPrimaryKey => no_primary_key,
        UnloggedTable => unlogged_table,
        GeneratedColumns => generated_columns,
        PartitionedTable => partitioned_table,
        LargeObjects => large_objects,
        ExtensionMissing => extension_missing,
        Sequences => sequences,
        Connections => connections,
        LogicalImpossible => logical_impossible,
        TriggerImpossible => trigger_impossible,
        NoCaptureMode => no_capture_mode,
        CaptureMode => capture_mode,
        ReplicaIdentity => replica_identity,
    ],
    urls: [
        SourceCertificateUnchecked => source_certificate_unchecked,
        RedisCertificateUnchecked => redis_certificate_unchecked,
    ],
}

impl Code {
    /// What the code means and what to do, from its rule's `//!` comment.
    pub fn explain(self) -> String {
        self.source()
            .lines()
            .map_while(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string()
    }

    /// The code written as in reports.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Runs every catalog rule, in the table's order.
pub fn check_all(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (_, check) in Code::RULES {
        check(ctx, &mut out);
    }
    out
}

/// The published list of rules (`docs/preflight-rules.md`), generated from the doc comments.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Preflight rules\n\nGenerated from the `//!` comments of `crates/pg/src/preflight/rules/*.rs` \
         (`FERRY_BLESS=1 cargo test -p ferry-pg published` rewrites it). `ferry explain <code>` \
         prints one.\n",
    );
    for code in Code::ALL {
        out.push_str(&format!("\n## `{code}`\n\n{}\n", code.explain()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_written_as_serde_writes_it_and_parses_back() {
        for code in Code::ALL {
            let json = serde_json::to_value(code).expect("serialise");
            assert_eq!(json, serde_json::json!(code.as_str()));
            assert_eq!(Code::parse(code.as_str()), Some(*code));
        }
        assert_eq!(Code::parse("no_such_rule"), None);
    }

    #[test]
    fn every_rule_has_a_doc_comment_that_names_a_fix() {
        for code in Code::ALL {
            let doc = code.explain();
            assert!(doc.len() > 80, "{code}: doc comment too short: {doc:?}");
            assert!(
                doc.contains("Fix:") || doc.contains("Nothing to do"),
                "{code}: the doc comment says what to do ('Fix: …' or 'Nothing to do'): {doc:?}"
            );
        }
    }

    #[test]
    fn each_rule_reports_under_its_own_code_only() {
        use crate::preflight::{capture::CaptureDecision, fixture, snapshot::Extension};
        use ferry_core::spec::CaptureMode;
        // A source with something for every rule to find.
        let mut s = fixture::heroku_like();
        s.target.as_mut().expect("target").server.major = 14;
        s.target
            .as_mut()
            .expect("target")
            .server
            .can_set_replication_role = false;
        s.large_objects = 1;
        s.extensions.push(Extension {
            name: "adminpack".into(),
            version: "2.1".into(),
        });
        s.source.connections_in_use = s.source.max_connections;
        s.tables[0].unlogged = true;
        s.tables[0].replica_identity = 'n';
        s.tables[0].primary_key.clear();
        let mut found = std::collections::BTreeSet::new();
        for requested in [
            CaptureMode::Auto,
            CaptureMode::Logical,
            CaptureMode::Trigger,
        ] {
            let capture = CaptureDecision::decide(&s, requested);
            let ctx = Ctx {
                snapshot: &s,
                capture: &capture,
                parallelism: 4,
            };
            for (code, check) in Code::RULES {
                let mut out = Vec::new();
                check(&ctx, &mut out);
                assert!(out.iter().all(|f| f.code == *code), "{code}: {out:?}");
                found.extend(out.iter().map(|f| f.code));
            }
        }
        assert!(
            found.len() >= 8,
            "the snapshot gave most rules something: {found:?}"
        );
    }

    #[test]
    fn published_rule_list_is_the_doc_comments() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/preflight-rules.md");
        let want = markdown();
        if std::env::var_os("FERRY_BLESS").is_some() {
            std::fs::write(path, &want).expect("write docs/preflight-rules.md");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/preflight-rules.md is not the rules' doc comments: run FERRY_BLESS=1 cargo test -p ferry-pg published"
        );
    }
}
