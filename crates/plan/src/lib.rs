//! `ferry plan`: the audit a migration starts with. It reads the Heroku app through the
//! Platform API (process types, dyno sizes and counts, add-ons and plans, config var names,
//! domains), the app's Procfile if given, and the source database (version, size,
//! extensions, and a source-only preflight), maps each part to its AWS target, prices both
//! sides from a dated price table (`prices.json`, overridable), lists the blockers, and
//! writes a `migration.json` to start from. Nothing is dropped: a part with no AWS
//! equivalent is reported as such.

pub mod build;
pub mod destination;
pub mod inventory;
pub mod prices;
pub mod render;
pub mod scheduler;
pub mod sizing;

pub use build::{Options, Plan, build};
pub use prices::Prices;

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The Platform API refused or could not be reached.
    #[error(transparent)]
    Heroku(#[from] ferry_heroku::HerokuError),
    /// A price table is unusable.
    #[error("price table {origin}: {reason}")]
    Prices {
        /// The file.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The Scheduler jobs file is unusable.
    #[error("Scheduler jobs {origin}: {reason}")]
    Scheduler {
        /// The file.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The Procfile is unreadable.
    #[error("{origin} line {line}: {reason}")]
    Procfile {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
}
