//! Running one webhook through a plugin: a fresh store and instance, `verify` then `map`
//! on that same instance, under the engine's deadline and memory cap, whichever contract
//! version the plugin was built against.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::Resource;

use super::engine::EPOCH_TICK;
use super::fault::{PluginFault, classify_trap};
use super::guest_threads::Refusal;
use super::load::{Plugin, PluginPre};
use super::state::CallState;
use super::types::{
    Credentials, MapError, MapOutcome, OutputLimits, Settings, VerifyError, WebhookRequest,
    validate_map_outcome,
};
use super::{v0_1, v0_2};

/// A tenant's credentials by the tenant's name, for sources with per-tenant secrets.
pub type TenantLookup = Arc<dyn Fn(&str) -> Option<Credentials> + Send + Sync>;

/// What one call needs besides the plugin. `Debug` shows how many secrets, never their
/// values.
#[derive(Clone, Copy, Debug)]
pub struct CallInput<'a> {
    /// The delivery.
    pub request: &'a Arc<WebhookRequest>,
    /// The source's secrets, keys and signed URL; the plugin sees handles `0..n`.
    pub credentials: &'a Credentials,
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
#[derive(Clone, Default, Debug)]
pub struct OwnedCallInput {
    /// The delivery; shared, as the caller keeps it to store.
    pub request: Arc<WebhookRequest>,
    /// The source's secrets, keys and signed URL.
    pub credentials: Credentials,
    /// The source's settings.
    pub settings: Arc<Settings>,
    /// Clock override.
    pub now_unix_seconds: Option<i64>,
    /// Tags the plugin's log lines.
    pub correlation_id: String,
}

impl OwnedCallInput {
    /// Borrows this as a [`CallInput`].
    pub fn as_input(&self) -> CallInput<'_> {
        CallInput {
            request: &self.request,
            credentials: &self.credentials,
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
        /// Index into the source's secrets of the one that matched, if the scheme uses
        /// one.
        matched_secret: Option<usize>,
        /// Index into the source's public keys of the one that matched, if the scheme
        /// uses one.
        matched_key: Option<usize>,
        /// What the webhook means, or why that is unknown.
        mapped: Result<MapOutcome, MapFailure>,
    },
}

impl Plugin {
    /// Starts one webhook's call on a fresh instance. The instance serves `tenant-hint`,
    /// `verify` and `map` for this webhook only and is dropped with the returned value.
    pub fn start(
        &self,
        request: &Arc<WebhookRequest>,
        now_unix_seconds: Option<i64>,
        correlation_id: &str,
    ) -> Result<Call, PluginFault> {
        let mut store = self
            .engine
            .new_store(self.name.clone(), correlation_id, now_unix_seconds);
        store.data_mut().set_request(Arc::clone(request));
        let instance = match &self.pre {
            PluginPre::V0_1(pre) => pre.instantiate(&mut store).map(|bindings| Instance::V0_1 {
                bindings,
                request: v0_1::request_to_wit(request),
            }),
            PluginPre::V0_2(pre) => pre.instantiate(&mut store).and_then(|bindings| {
                let request = store.data_mut().table.push(v0_2::CallRequest)?;
                Ok(Instance::V0_2 { bindings, request })
            }),
        };
        match instance {
            Ok(instance) => Ok(Call {
                store,
                instance,
                body_len: request.body.len(),
                limits: self.engine.shared.limits.output,
                // Counted from the end of instantiation (host work, not the plugin's).
                deadline: Instant::now() + self.engine.shared.limits.timeout,
                trapped: false,
            }),
            Err(e) => Err(classify_trap(&e, store.data())),
        }
    }

    /// Runs one webhook whose credentials are known up front: `verify` and, if the
    /// signature holds, `map`, on one fresh instance that is dropped afterwards. (Sources
    /// with per-tenant secrets use [`start`](Self::start) and [`Call::tenant_hint`]
    /// first.) Blocking: runs guest code on the calling thread, each export for up to the
    /// engine's timeout.
    pub fn process(&self, input: &CallInput<'_>) -> Result<Processed, PluginFault> {
        let call = self.start(input.request, input.now_unix_seconds, input.correlation_id)?;
        match call.verify(input.credentials, input.settings)? {
            Err(rejected) => Ok(Processed::Rejected(rejected)),
            Ok(verified) => Ok(Processed::Verified {
                matched_secret: verified.matched_secret(),
                matched_key: verified.matched_key(),
                mapped: verified.map(input.settings),
            }),
        }
    }

    /// [`process`](Self::process) for a source whose secrets may be held per tenant: asks
    /// the plugin for the delivery's tenant first and verifies with what `tenant_credentials`
    /// gives for it, else with `input.credentials` (the source's own). Returns the outcome
    /// and the tenant whose credentials verified it, if any. Blocking, like `process`.
    pub fn process_for_tenant(
        &self,
        input: &CallInput<'_>,
        tenant_credentials: &(dyn Fn(&str) -> Option<Credentials> + Send + Sync),
    ) -> Result<(Processed, Option<String>), PluginFault> {
        let mut call = self.start(input.request, input.now_unix_seconds, input.correlation_id)?;
        let hint = call.tenant_hint(input.settings)?;
        let tenant = hint.and_then(|tenant| tenant_credentials(&tenant).map(|c| (tenant, c)));
        let (credentials, tenant) = match &tenant {
            Some((name, credentials)) => (credentials, Some(name.clone())),
            None => (input.credentials, None),
        };
        let processed = match call.verify(credentials, input.settings)? {
            Err(rejected) => Processed::Rejected(rejected),
            Ok(verified) => Processed::Verified {
                matched_secret: verified.matched_secret(),
                matched_key: verified.matched_key(),
                mapped: verified.map(input.settings),
            },
        };
        Ok((processed, tenant))
    }

    /// Runs `work` on the engine's guest threads, so async workers never run guest code:
    /// within this plugin's cap of calls in flight (queued or running), and only if a
    /// thread takes it within the queue-wait limit. Beyond either it is
    /// [`PluginFault::Busy`]; work whose caller is gone is not run.
    async fn on_guest_thread<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Plugin) -> T + Send + 'static,
    ) -> Result<T, PluginFault> {
        let limits = &self.engine.shared.limits;
        let _slot = self.calls.clone().try_acquire_owned().map_err(|_| {
            PluginFault::Busy(format!(
                "{} calls of this plugin already in flight",
                limits.max_calls_per_plugin
            ))
        })?;
        let plugin = Arc::clone(self);
        self.engine
            .shared
            .guests
            .run(limits.queue_wait, move || work(&plugin))
            .await
            .map_err(|refusal| match refusal {
                Refusal::Panicked => PluginFault::Trap("plugin host panicked".into()),
                Refusal::QueueWait => PluginFault::Busy(format!(
                    "no guest thread free within {} ms",
                    limits.queue_wait.as_millis()
                )),
            })
    }

    /// [`process_for_tenant`](Self::process_for_tenant) on the engine's guest threads.
    pub async fn process_for_tenant_async(
        self: &Arc<Self>,
        input: OwnedCallInput,
        tenant_credentials: TenantLookup,
    ) -> Result<(Processed, Option<String>), PluginFault> {
        self.on_guest_thread(move |plugin| {
            plugin.process_for_tenant(&input.as_input(), &*tenant_credentials)
        })
        .await?
    }

    /// [`process`](Self::process) on the engine's guest threads.
    pub async fn process_async(
        self: &Arc<Self>,
        input: OwnedCallInput,
    ) -> Result<Processed, PluginFault> {
        self.on_guest_thread(move |plugin| plugin.process(&input.as_input()))
            .await?
    }
}

impl Plugin {
    /// `map` alone, for a webhook whose signature this gateway checked when it arrived
    /// and stored: a replay re-maps the stored request through the plugin serving now,
    /// and the secret it was signed with may have been rotated away since. Anything not
    /// read back from storage goes through [`process`](Self::process). Blocking, like it.
    pub fn map_stored(&self, input: &CallInput<'_>) -> Result<MapOutcome, MapFailure> {
        let call = self
            .start(input.request, input.now_unix_seconds, input.correlation_id)
            .map_err(MapFailure::Fault)?;
        VerifiedCall {
            call,
            matched_secret: None,
            matched_key: None,
        }
        .map(input.settings)
    }

    /// [`map_stored`](Self::map_stored) on the engine's guest threads.
    pub async fn map_stored_async(
        self: &Arc<Self>,
        input: OwnedCallInput,
    ) -> Result<MapOutcome, MapFailure> {
        self.on_guest_thread(move |plugin| plugin.map_stored(&input.as_input()))
            .await
            .map_err(MapFailure::Fault)?
    }
}

/// The instance of one call, typed by its contract, with the request as that contract
/// passes it.
enum Instance {
    V0_1 {
        bindings: v0_1::SourcePlugin,
        request: v0_1::wit::Request,
    },
    V0_2 {
        bindings: v0_2::SourcePlugin,
        request: Resource<v0_2::CallRequest>,
    },
}

/// A plugin's `verify` answer, whatever its contract version.
struct VerifyAnswer {
    secret: Option<u32>,
    key: Option<u32>,
}

/// One webhook's instance before verification. Its exports share one deadline, the
/// engine's timeout counted from the instance's start: a webhook gets one budget, not one
/// per export.
pub struct Call {
    store: Store<CallState>,
    instance: Instance,
    body_len: usize,
    limits: OutputLimits,
    /// When the budget runs out.
    deadline: Instant,
    /// Set when a call failed: a trapped instance must not run again.
    trapped: bool,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

/// Which configured item (its index) a handle the plugin reported stands for.
fn matched_index(
    handle: Option<u32>,
    given: usize,
    what: &str,
) -> Result<Option<usize>, PluginFault> {
    match handle {
        None => Ok(None),
        Some(h) => match usize::try_from(h) {
            Ok(i) if i < given => Ok(Some(i)),
            _ => Err(PluginFault::Invalid(format!(
                "verify reported {what} handle {h}, but only {given} were given"
            ))),
        },
    }
}

impl Call {
    /// The tenant the delivery claims, read before verification to pick its secrets.
    pub fn tenant_hint(&mut self, settings: &Settings) -> Result<Option<String>, PluginFault> {
        self.ready()?;
        self.arm_deadline()?;
        let result = match &self.instance {
            Instance::V0_1 { bindings, request } => {
                bindings.call_tenant_hint(&mut self.store, request, settings)
            }
            Instance::V0_2 { bindings, request } => {
                let request = Resource::new_borrow(request.rep());
                bindings.call_tenant_hint(&mut self.store, request, settings)
            }
        };
        result.map_err(|e| {
            self.trapped = true;
            classify_trap(&e, self.store.data())
        })
    }

    /// Sets the epoch deadline to what is left of the webhook's budget; none left is a
    /// timeout without running the export.
    fn arm_deadline(&mut self) -> Result<(), PluginFault> {
        let ticks = remaining_ticks(self.deadline, Instant::now()).ok_or_else(|| {
            self.trapped = true;
            PluginFault::Timeout
        })?;
        self.store.set_epoch_deadline(ticks);
        Ok(())
    }

    fn ready(&self) -> Result<(), PluginFault> {
        if self.trapped {
            return Err(PluginFault::Trap(
                "the instance already failed for this webhook".into(),
            ));
        }
        Ok(())
    }

    /// Checks the signature with the given credentials (secret and key handles `0..n` in
    /// their order). Only a passed verification yields a [`VerifiedCall`], the one way to
    /// reach `map`.
    pub fn verify(
        mut self,
        credentials: &Credentials,
        settings: &Settings,
    ) -> Result<Result<VerifiedCall, VerifyError>, PluginFault> {
        self.ready()?;
        self.arm_deadline()?;
        self.store.data_mut().set_credentials(credentials.clone());
        let secrets = Handles::new(credentials.secrets.len());
        let keys = Handles::new(credentials.keys.len());
        let answer = match &self.instance {
            Instance::V0_1 { bindings, request } => {
                match bindings.call_verify(&mut self.store, request, &secrets, settings) {
                    Ok(Ok(v)) => Ok(VerifyAnswer {
                        secret: v.secret,
                        key: None,
                    }),
                    Ok(Err(e)) => Err(Ok(v0_1::verify_error_from_wit(e))),
                    Err(e) => Err(Err(e)),
                }
            }
            Instance::V0_2 { bindings, request } => {
                let request = Resource::new_borrow(request.rep());
                match bindings.call_verify(&mut self.store, request, &secrets, &keys, settings) {
                    Ok(Ok(v)) => Ok(VerifyAnswer {
                        secret: v.secret,
                        key: v.key,
                    }),
                    Ok(Err(e)) => Err(Ok(v0_2::verify_error_from_wit(e))),
                    Err(e) => Err(Err(e)),
                }
            }
        };
        // MACs and signatures are done: the credentials need not stay while `map` runs.
        let answer = match answer {
            Ok(answer) => answer,
            Err(Ok(refused)) => return Ok(Err(refused.sanitized(self.limits.max_error_chars))),
            Err(Err(e)) => return Err(classify_trap(&e, self.store.data())),
        };
        self.store
            .data_mut()
            .set_credentials(Credentials::default());
        let matched_secret = matched_index(answer.secret, credentials.secrets.len(), "secret")?;
        let matched_key = matched_index(answer.key, credentials.keys.len(), "key")?;
        Ok(Ok(VerifiedCall {
            call: self,
            matched_secret,
            matched_key,
        }))
    }
}

/// One webhook's instance after its signature held.
pub struct VerifiedCall {
    call: Call,
    matched_secret: Option<usize>,
    matched_key: Option<usize>,
}

impl fmt::Debug for VerifiedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCall")
            .field("matched_secret", &self.matched_secret)
            .field("matched_key", &self.matched_key)
            .finish_non_exhaustive()
    }
}

impl VerifiedCall {
    /// Index of the secret that matched, if the scheme uses one.
    pub fn matched_secret(&self) -> Option<usize> {
        self.matched_secret
    }

    /// Index of the public key that matched, if the scheme uses one.
    pub fn matched_key(&self) -> Option<usize> {
        self.matched_key
    }

    /// Maps the verified delivery; consumes the instance. What the plugin returns is
    /// checked against the contract and the output limits.
    pub fn map(mut self, settings: &Settings) -> Result<MapOutcome, MapFailure> {
        let call = &mut self.call;
        call.arm_deadline().map_err(MapFailure::Fault)?;
        let answer = match &call.instance {
            Instance::V0_1 { bindings, request } => {
                match bindings.call_map(&mut call.store, request, settings) {
                    Ok(Ok(o)) => Ok(v0_1::map_outcome_from_wit(o)),
                    Ok(Err(e)) => Err(Ok(v0_1::map_error_from_wit(e))),
                    Err(e) => Err(Err(e)),
                }
            }
            Instance::V0_2 { bindings, request } => {
                let request = Resource::new_borrow(request.rep());
                match bindings.call_map(&mut call.store, request, settings) {
                    Ok(Ok(o)) => Ok(v0_2::map_outcome_from_wit(o)),
                    Ok(Err(e)) => Err(Ok(v0_2::map_error_from_wit(e))),
                    Err(e) => Err(Err(e)),
                }
            }
        };
        match answer {
            Ok(outcome) => match validate_map_outcome(&outcome, &call.limits, call.body_len) {
                Ok(()) => Ok(outcome),
                Err(detail) => Err(MapFailure::Fault(PluginFault::Invalid(detail))),
            },
            Err(Ok(error)) => Err(MapFailure::Plugin(
                error.sanitized(call.limits.max_error_chars),
            )),
            Err(Err(e)) => Err(MapFailure::Fault(classify_trap(&e, call.store.data()))),
        }
    }
}

/// Handles `0..n`; the usual one or two secrets need no allocation.
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

/// Epoch ticks from `now` to `deadline` (rounded up), none when it has passed.
fn remaining_ticks(deadline: Instant, now: Instant) -> Option<u64> {
    let left = deadline
        .checked_duration_since(now)
        .filter(|d| !d.is_zero())?;
    let tick = EPOCH_TICK.as_nanos().max(1);
    Some(
        u64::try_from(left.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secret_values() {
        let input = OwnedCallInput {
            credentials: Credentials::with_secrets(vec![b"hunter2-secret".to_vec()]),
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
