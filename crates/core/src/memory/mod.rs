//! In-memory implementations of every interface the steps use, for fast tests of step logic
//! (canary decisions, gates, rollback) without PostgreSQL or the AWS emulator. Each keeps the
//! rules of the real service that the steps depend on — conditional writes, one resumption
//! per task token, Route 53's refusal of a weighted set beside another record — and
//! [`contract`] runs the same checks on the in-memory store and the DynamoDB adapter.
//!
//! Behind the `memory` feature: test code turns it on, production builds leave it out.

mod cloud;
pub mod contract;
mod store;

pub use cloud::{
    MemoryAlarms, MemoryCallbacks, MemoryCompute, MemoryDatabases, MemoryNotifier, MemoryParams,
    MemoryRouter, MemorySchedule, MemorySecrets, Published, Resumed, Rule,
};
pub use store::MemoryStore;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> crate::MigrationSpec {
        let mut spec: crate::MigrationSpec =
            serde_json::from_str(include_str!("../../../../examples/minimal.json"))
                .expect("example spec");
        spec.migration_id = id.to_string();
        spec
    }

    #[tokio::test]
    async fn the_in_memory_store_keeps_the_store_contract() {
        let store = MemoryStore::new();
        contract::migration_store(&store, spec("contract-1")).await;
        contract::endpoint_store(&store, "contract-app").await;
    }
}
