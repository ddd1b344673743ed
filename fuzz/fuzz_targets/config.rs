//! Any text as the configuration file: parsing and validation never panic, an error is
//! non-empty and a syntax error's position lies inside the text; rendering the accepted
//! configuration for operators (`hookgate config`) never panics either.

#![no_main]

use std::path::Path;

use hookgate::config::{Config, ConfigError, ServiceUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = ServiceUrl::new(text).masked();
    let parsed = Config::from_toml(text, Path::new("hookgate.toml"), &|name: &str| {
        // A few set variables, so interpolation takes both paths.
        (name.len() % 2 == 0).then(|| format!("value-of-{name}"))
    });
    let result = parsed.and_then(|config| config.validate().map(|()| config));
    match result {
        Ok(config) => {
            let _ = config.redacted_toml();
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.trim().is_empty());
            if let ConfigError::Syntax { line, column, .. }
            | ConfigError::Shape { line, column, .. } = &error
            {
                let lines: Vec<&str> = text.split('\n').collect();
                assert!(
                    *line >= 1 && *line <= lines.len() + 1,
                    "line {line}: {message}"
                );
                let len = lines.get(line - 1).map_or(0, |l| l.chars().count());
                assert!(
                    *column >= 1 && *column <= len + 1,
                    "column {column}: {message}"
                );
            }
        }
    }
});
