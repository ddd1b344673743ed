//! How a plugin fails, as opposed to what it answers: [`PluginFault`], and the reading
//! of a failed wasmtime call (deadline, memory cap, trap, no free instance slot) as one.
//! Loading (the `metadata()` call) and calling both use it.

use wasmtime::Trap;

use super::engine::one_line;
use super::state::CallState;
use super::types::{sanitize, truncate};

/// The plugin failed rather than answered: a fault of the plugin (or of the host's
/// capacity), never of the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFault {
    /// The call ran past the deadline and was interrupted.
    #[error("plugin timed out")]
    Timeout,
    /// The plugin reached the memory cap.
    #[error("plugin ran out of memory")]
    OutOfMemory,
    /// The plugin trapped (panic, `unreachable`, bad memory access...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin answered something the host refuses (unknown secret handle, event type
    /// that is no subject, bad timestamp...).
    #[error("plugin returned an invalid result: {0}")]
    Invalid(String),
    /// Every instance slot is in use: the gateway is overloaded, the plugin is not at
    /// fault.
    #[error("no plugin instance slot free: {0}")]
    Busy(String),
}

impl PluginFault {
    /// A stable machine code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::OutOfMemory => "out_of_memory",
            Self::Trap(_) => "trap",
            Self::Invalid(_) => "invalid",
            Self::Busy(_) => "busy",
        }
    }
}

/// Turns a failed wasmtime call into the fault it stands for.
pub(crate) fn classify_trap(error: &wasmtime::Error, state: &CallState) -> PluginFault {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginFault::Timeout;
    }
    // A guest refused memory usually aborts through `unreachable`: the limiter's record,
    // not the trap code, says why.
    if state.memory_exhausted() {
        return PluginFault::OutOfMemory;
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return PluginFault::Busy(one_line(error));
    }
    // The trap code (or the innermost cause) says what happened; the wasm backtrace
    // wasmtime attaches is too long for a log field, and the guest's stderr (a panic
    // message with its location) says more.
    let mut detail = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => {
            let root = error.root_cause().to_string();
            root.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    if let Some(stderr) = state.guest_stderr() {
        detail.push_str(" (guest stderr: ");
        // Guest-written text: no control characters (NUL included) reach logs or storage.
        detail.push_str(&sanitize(&stderr, 512));
        detail.push(')');
    }
    PluginFault::Trap(truncate(&detail, 2048).to_string())
}
