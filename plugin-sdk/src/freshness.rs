//! Replay protection for schemes that sign a timestamp: how far it may be from now (a
//! source setting, failing closed on a typo) and the check itself, the same for every
//! plugin.

use crate::host::now_unix_seconds;
use crate::types::{Settings, VerifyError};

/// The setting that overrides a plugin's default tolerance, in whole seconds.
pub const TOLERANCE_SETTING: &str = "tolerance_seconds";

/// The tolerance the source configures in `tolerance_seconds`, else `default_seconds`. A
/// value that is not a whole number refuses the delivery: a typo must not turn the replay
/// check off.
pub fn timestamp_tolerance(settings: &Settings, default_seconds: u64) -> Result<u64, VerifyError> {
    match settings.get(TOLERANCE_SETTING) {
        None => Ok(default_seconds),
        Some(text) => text.trim().parse().map_err(|_| {
            VerifyError::Rejected(format!(
                "setting {TOLERANCE_SETTING} is not a whole number of seconds"
            ))
        }),
    }
}

/// Refuses a signed `timestamp` (Unix seconds) more than `tolerance` seconds from now, in
/// either direction: a timestamp from the future is no fresher than an old one. Call it
/// after the signature holds, so `Expired` only ever describes an authentic delivery.
pub fn check_timestamp(timestamp: i64, tolerance: u64) -> Result<(), VerifyError> {
    let age = now_unix_seconds().abs_diff(timestamp);
    if age > tolerance {
        return Err(VerifyError::Expired(format!(
            "timestamp {timestamp} is {age} s from now, tolerance {tolerance} s"
        )));
    }
    Ok(())
}
