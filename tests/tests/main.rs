//! Integration tests against the local test bed, gathered in one binary (one mod per area).

mod approvals;
mod cli;
mod cloud;
mod destination;
mod e2e;
mod emulator;
mod endpoint;
mod handover;
mod heroku;
mod iam;
mod infra;
mod kv;
mod lambda;
mod pg;
mod plan;
mod preflight;
mod redis_endpoint;
mod rehearse;
mod replication;
mod spec;
mod statemachine;
mod steps;
mod store;
mod traffic;
mod verify_job;
mod worker;
