//! hookgate: a webhook ingestion gateway. Verifies each webhook through a sandboxed source
//! plugin, drops duplicates, stores it durably and publishes its domain events to NATS
//! JetStream through an outbox.

pub mod admin_cli;
pub mod app;
pub mod client;
pub mod config;
pub mod dedupe;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod plugin;
pub mod publish;
pub mod purge;
pub mod reload;
pub mod sample;
pub mod secrets;
pub mod store;
