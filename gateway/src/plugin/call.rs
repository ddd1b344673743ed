//! Running one webhook through a plugin: a fresh store and instance, `verify` then `map`
//! on that same instance, under the engine's deadline and memory cap.

use std::fmt;
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{CallState, SourcePlugin, wit};
use super::convert::{
    map_error_from_wit, map_outcome_from_wit, request_to_wit, verify_error_from_wit,
};
use super::fault::{PluginFault, classify_trap};
use super::load::Plugin;
use super::types::{MapError, MapOutcome, Settings, VerifyError, WebhookRequest};

/// What one call needs besides the plugin. `Debug` shows how many secrets, never their
/// values.
#[derive(Clone, Copy)]
pub struct CallInput<'a> {
    /// The delivery.
    pub request: &'a WebhookRequest,
    /// The source's secret values; the plugin sees handles `0..n` in this order.
    pub secrets: &'a [Vec<u8>],
    /// The source's free-form settings.
    pub settings: &'a Settings,
    /// Replaces the host clock the plugin reads (tests, replays); none uses the system
    /// clock.
    pub now_unix_seconds: Option<i64>,
    /// Tags the plugin's log lines.
    pub correlation_id: &'a str,
}

/// [`CallInput`] with owned data, to move onto a guest thread. `Debug` shows how many
/// secrets, never their values.
#[derive(Clone, Default)]
pub struct OwnedCallInput {
    /// The delivery; shared, as the caller keeps it to store.
    pub request: Arc<WebhookRequest>,
    /// The source's secret values.
    pub secrets: Arc<[Vec<u8>]>,
    /// The source's settings.
    pub settings: Arc<Settings>,
    /// Clock override.
    pub now_unix_seconds: Option<i64>,
    /// Tags the plugin's log lines.
    pub correlation_id: String,
}

fn debug_input(f: &mut fmt::Formatter<'_>, name: &str, input: &CallInput<'_>) -> fmt::Result {
    f.debug_struct(name)
        .field("request", input.request)
        .field(
            "secrets",
            &format_args!("<{} redacted>", input.secrets.len()),
        )
        .field("settings", input.settings)
        .field("now_unix_seconds", &input.now_unix_seconds)
        .field("correlation_id", &input.correlation_id)
        .finish()
}

impl fmt::Debug for CallInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_input(f, "CallInput", self)
    }
}

impl fmt::Debug for OwnedCallInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_input(f, "OwnedCallInput", &self.as_input())
    }
}

impl OwnedCallInput {
    /// Borrows this as a [`CallInput`].
    pub fn as_input(&self) -> CallInput<'_> {
        CallInput {
            request: &self.request,
            secrets: &self.secrets,
            settings: &self.settings,
            now_unix_seconds: self.now_unix_seconds,
            correlation_id: &self.correlation_id,
        }
    }
}

/// Why a verified webhook has no mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapFailure {
    /// The plugin's own `map-error`.
    Plugin(MapError),
    /// The plugin failed while mapping.
    Fault(PluginFault),
}

impl fmt::Display for MapFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plugin(e) => e.fmt(f),
            Self::Fault(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MapFailure {}

/// The result of running a webhook through its plugin. A mapping exists only inside
/// `Verified`: there is no way to map a delivery whose signature did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// The plugin refused the delivery's signature.
    Rejected(VerifyError),
    /// The signature holds.
    Verified {
        /// Index into `CallInput::secrets` of the secret that matched, if the scheme uses
        /// one.
        matched_secret: Option<usize>,
        /// What the webhook means, or why that is unknown.
        mapped: Result<MapOutcome, MapFailure>,
    },
}

impl Plugin {
    /// Starts one webhook's call on a fresh instance. The instance serves `tenant-hint`,
    /// `verify` and `map` for this webhook only and is dropped with the returned value.
    pub fn start(
        &self,
        request: &WebhookRequest,
        now_unix_seconds: Option<i64>,
        correlation_id: &str,
    ) -> Result<Call, PluginFault> {
        let mut store = self
            .engine
            .new_store(self.name.clone(), correlation_id, now_unix_seconds);
        match self.pre.instantiate(&mut store) {
            Ok(instance) => Ok(Call {
                store,
                instance,
                request: request_to_wit(request),
                deadline_ticks: self.engine.shared.deadline_ticks,
                trapped: false,
            }),
            Err(e) => Err(classify_trap(&e, store.data())),
        }
    }

    /// Runs one webhook whose secrets are known up front: `verify` and, if the signature
    /// holds, `map`, on one fresh instance that is dropped afterwards. (Sources with
    /// per-tenant secrets use [`start`](Self::start) and [`Call::tenant_hint`] first.)
    /// Blocking: runs guest code on the calling thread, each export for up to the engine's
    /// timeout.
    pub fn process(&self, input: &CallInput<'_>) -> Result<Processed, PluginFault> {
        let call = self.start(input.request, input.now_unix_seconds, input.correlation_id)?;
        match call.verify(input.secrets, input.settings)? {
            Err(rejected) => Ok(Processed::Rejected(rejected)),
            Ok(verified) => Ok(Processed::Verified {
                matched_secret: verified.matched_secret(),
                mapped: verified.map(input.settings),
            }),
        }
    }

    /// [`process`](Self::process) on the engine's guest threads, so async workers never
    /// run guest code.
    pub async fn process_async(
        self: &Arc<Self>,
        input: OwnedCallInput,
    ) -> Result<Processed, PluginFault> {
        let plugin = Arc::clone(self);
        self.engine
            .shared
            .guests
            .run(move || plugin.process(&input.as_input()))
            .await
            .unwrap_or_else(|| Err(PluginFault::Trap("plugin host panicked".into())))
    }
}

/// One webhook's instance before verification. Each export call gets the engine's full
/// timeout, so a caller may look up secrets (from `tenant_hint`) between calls.
pub struct Call {
    store: Store<CallState>,
    instance: SourcePlugin,
    request: wit::Request,
    deadline_ticks: u64,
    /// Set when a call failed: a trapped instance must not run again.
    trapped: bool,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

impl Call {
    /// The tenant the delivery claims, read before verification to pick its secrets.
    #[allow(
        clippy::ptr_arg,
        reason = "the bindings take the settings list as a Vec"
    )]
    pub fn tenant_hint(&mut self, settings: &Settings) -> Result<Option<String>, PluginFault> {
        self.ready()?;
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self
            .instance
            .call_tenant_hint(&mut self.store, &self.request, settings);
        result.map_err(|e| {
            self.trapped = true;
            classify_trap(&e, self.store.data())
        })
    }

    fn ready(&self) -> Result<(), PluginFault> {
        if self.trapped {
            return Err(PluginFault::Trap(
                "the instance already failed for this webhook".into(),
            ));
        }
        Ok(())
    }

    /// Checks the signature with the given secrets (handles `0..n` in this order). Only a
    /// passed verification yields a [`VerifiedCall`], the one way to reach `map`.
    #[allow(
        clippy::ptr_arg,
        reason = "the bindings take the settings list as a Vec"
    )]
    pub fn verify(
        mut self,
        secrets: &[Vec<u8>],
        settings: &Settings,
    ) -> Result<Result<VerifiedCall, VerifyError>, PluginFault> {
        self.ready()?;
        self.store.data_mut().set_secrets(secrets);
        self.store.set_epoch_deadline(self.deadline_ticks);
        let handles = Handles::new(secrets.len());
        let verified =
            match self
                .instance
                .call_verify(&mut self.store, &self.request, &handles, settings)
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Ok(Err(verify_error_from_wit(e))),
                Err(e) => return Err(classify_trap(&e, self.store.data())),
            };
        let matched_secret = match verified.secret {
            None => None,
            Some(h) => match usize::try_from(h) {
                Ok(i) if i < secrets.len() => Some(i),
                _ => {
                    return Err(PluginFault::Invalid(format!(
                        "verify reported secret handle {h}, but only {} were given",
                        secrets.len()
                    )));
                }
            },
        };
        // MACs are done: the secrets need not stay in memory while `map` runs.
        self.store.data_mut().set_secrets(&[]);
        Ok(Ok(VerifiedCall {
            call: self,
            matched_secret,
        }))
    }
}

/// One webhook's instance after its signature held.
pub struct VerifiedCall {
    call: Call,
    matched_secret: Option<usize>,
}

impl fmt::Debug for VerifiedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCall")
            .field("matched_secret", &self.matched_secret)
            .finish_non_exhaustive()
    }
}

impl VerifiedCall {
    /// Index of the secret that matched, if the scheme uses one.
    pub fn matched_secret(&self) -> Option<usize> {
        self.matched_secret
    }

    /// Maps the verified delivery; consumes the instance.
    #[allow(
        clippy::ptr_arg,
        reason = "the bindings take the settings list as a Vec"
    )]
    pub fn map(mut self, settings: &Settings) -> Result<MapOutcome, MapFailure> {
        let call = &mut self.call;
        call.store.set_epoch_deadline(call.deadline_ticks);
        match call
            .instance
            .call_map(&mut call.store, &call.request, settings)
        {
            Ok(Ok(outcome)) => map_outcome_from_wit(outcome)
                .map_err(|detail| MapFailure::Fault(PluginFault::Invalid(detail))),
            Ok(Err(e)) => Err(MapFailure::Plugin(map_error_from_wit(e))),
            Err(e) => Err(MapFailure::Fault(classify_trap(&e, call.store.data()))),
        }
    }
}

/// Secret handles `0..n`; the usual one or two secrets need no allocation.
enum Handles {
    Inline(usize),
    Heap(Vec<u32>),
}

const INLINE_HANDLES: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

impl Handles {
    fn new(n: usize) -> Self {
        if n <= INLINE_HANDLES.len() {
            Self::Inline(n)
        } else {
            Self::Heap(
                (0..n)
                    .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                    .collect(),
            )
        }
    }
}

impl std::ops::Deref for Handles {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Self::Inline(n) => &INLINE_HANDLES[..*n],
            Self::Heap(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secret_values() {
        let input = OwnedCallInput {
            secrets: Arc::from(vec![b"hunter2-secret".to_vec()]),
            ..OwnedCallInput::default()
        };
        for text in [format!("{input:?}"), format!("{:?}", input.as_input())] {
            assert!(!text.contains("hunter2"), "{text}");
            // Nor as the byte list `Vec<u8>` would print.
            assert!(!text.contains("104, 117, 110"), "{text}");
            assert!(text.contains("<1 redacted>"), "{text}");
        }
    }
}
