//! The plugin host: loads source plugins (WASM components) and runs them sandboxed.
