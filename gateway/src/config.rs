//! Configuration: the TOML file, environment overrides, defaults and validation.
