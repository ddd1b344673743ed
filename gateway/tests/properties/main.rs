//! Properties of the gateway's edges over arbitrary input (issue 20): routing, header
//! handling, configuration and the bundled plugins, through the real HTTP server, SQLite
//! storage and wasmtime host. Case counts are kept so that each property takes a few
//! seconds in a debug build; `PROPTEST_CASES` raises them for a longer hunt.
//!
//! The `fuzz/` crate at the workspace root drives the same edges with libFuzzer.

mod config;
mod headers;
mod plugins;
mod routing;
mod support;
