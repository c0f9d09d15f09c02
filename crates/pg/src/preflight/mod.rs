//! Preflight analysis: everything about source and target that decides whether and how a
//! migration can run, as a structured report. Blockers name the table and the fix.
//!
//! Three parts, in order:
//! - [`Snapshot::gather`] reads the servers with a few catalog queries: the only code here
//!   that touches a database. A snapshot serialises, so a real catalog can be kept as JSON.
//! - [`CaptureDecision::decide`] settles the capture mode from the snapshot alone.
//! - [`rules`]: one file per finding [`Code`], each a pure `fn check(&Ctx, &mut Vec<Finding>)`;
//!   [`PreflightReport::assess`] runs them all.

mod capture;
mod finding;
#[cfg(test)]
mod fixture;
mod report;
pub mod rules;
mod snapshot;

use ferry_core::spec::CaptureMode;
use tokio_postgres::Client;

pub use capture::{CaptureDecision, LogicalObstacle, TriggerObstacle};
pub use finding::{Code, Finding, Severity, UNCHECKED_RISK};
pub use report::{PreflightReport, TableReport};
pub use rules::Ctx;
pub use snapshot::{Extension, SequenceReport, ServerReport, Snapshot, TargetSnapshot};

use crate::PgError;

/// A warning when the source database's certificate is not checked (`sslmode=require`, the
/// only mode Heroku's self-signed certificates allow); see `rules/source_certificate_unchecked.rs`.
pub fn unchecked_source_certificate(url: &crate::PgUrl, param: &str) -> Option<Finding> {
    rules::source_certificate_unchecked::check(url, param)
}

/// The same warning for a source Redis URL whose TLS check is `tls` (`ssl_cert_reqs=none`);
/// see `rules/redis_certificate_unchecked.rs`.
pub fn unchecked_redis_certificate(tls: Option<crate::TlsCheck>, param: &str) -> Option<Finding> {
    rules::redis_certificate_unchecked::check(tls, param)
}

/// Sessions Ferry opens on the source besides the copy's: the worker's apply, capture and
/// command sessions.
pub const FERRY_SESSIONS: i64 = 3;

/// The copy parallelism that leaves the app half of `free_connections`, the line past which
/// [`analyse`] warns (`parallelism + FERRY_SESSIONS` at most half of what is free); at least 1,
/// at most 4 (the spec's default). A source too small even for 1 gets the blocker from
/// [`analyse`].
pub fn fitting_parallelism(free_connections: i64) -> u32 {
    (free_connections / 2 - FERRY_SESSIONS).clamp(1, 4) as u32
}

/// Analyses source and target for a migration with the requested capture mode and copy
/// parallelism.
pub async fn analyse(
    source: &Client,
    target: &Client,
    requested: CaptureMode,
    parallelism: u32,
) -> Result<PreflightReport, PgError> {
    analyse_with(source, Some(target), requested, parallelism).await
}

/// Analyses the source alone, before a target exists (`ferry plan`): everything
/// [`analyse`] finds except the checks that need the target (its version, its role, which
/// extensions it offers).
pub async fn analyse_source(
    source: &Client,
    requested: CaptureMode,
    parallelism: u32,
) -> Result<PreflightReport, PgError> {
    analyse_with(source, None, requested, parallelism).await
}

/// Analyses source and target for a migration with the requested capture mode and copy
/// parallelism: a [`Snapshot`] of both, then every rule.
async fn analyse_with(
    source: &Client,
    target: Option<&Client>,
    requested: CaptureMode,
    parallelism: u32,
) -> Result<PreflightReport, PgError> {
    let snapshot = Snapshot::gather(source, target).await?;
    Ok(PreflightReport::assess(&snapshot, requested, parallelism))
}

#[cfg(test)]
mod tests {
    use super::fitting_parallelism;

    #[test]
    fn parallelism_leaves_the_app_half_the_free_connections() {
        assert_eq!(fitting_parallelism(97), 4, "plenty");
        assert_eq!(fitting_parallelism(12), 3);
        assert_eq!(fitting_parallelism(10), 2);
        assert_eq!(
            fitting_parallelism(3),
            1,
            "never below 1: preflight reports the rest"
        );
        assert_eq!(fitting_parallelism(-2), 1);
    }
}
