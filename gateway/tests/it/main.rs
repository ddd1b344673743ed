//! End-to-end tests: real HTTP requests into a gateway started in-process, against the
//! real PostgreSQL, Redis and NATS of the machine (or the embedded backends).

mod child;
mod cli;
mod e2e_admin;
mod e2e_console;
mod e2e_crash;
mod e2e_delivery;
mod e2e_embedded;
mod e2e_errors;
mod e2e_faults;
mod e2e_full_disk;
mod e2e_hardening;
mod e2e_plugin_langs;
mod e2e_production;
mod e2e_reload;
mod e2e_replay;
mod e2e_sources;
mod e2e_tenant_secrets;
mod example_plugins;
mod plugins_bundled;
mod scaffold;
mod support;
