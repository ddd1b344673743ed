//! The one wasmtime engine of the process: configuration (component model, epoch
//! deadlines, pooling allocator), the epoch ticker thread and the shared linker.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::DynPollable;

use super::guest_threads::{self, GuestThreads};
use super::state::CallState;
use super::types::OutputLimits;
use super::{v0_1, v0_2};

/// How often the ticker advances the engine's epoch: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Resource limits for plugin calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock budget of one webhook's calls (tenant-hint, verify and map together),
    /// enforced to within a few epoch ticks.
    pub timeout: Duration,
    /// Linear memory one instance may hold, all its memories together.
    pub memory_bytes: usize,
    /// Instances that may be alive at once across all plugins; a call beyond it fails with
    /// [`PluginFault::Busy`](super::PluginFault::Busy) instead of waiting.
    pub max_instances: u32,
    /// Longest a call may wait for a guest thread; beyond, it is
    /// [`PluginFault::Busy`](super::PluginFault::Busy) without running.
    pub queue_wait: Duration,
    /// Calls of one plugin in flight (queued or running) at once; beyond, `Busy`: a slow
    /// plugin cannot fill the queue for every other.
    pub max_calls_per_plugin: usize,
    /// What a plugin may return for one webhook.
    pub output: OutputLimits,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            // Plugins take microseconds; a second is far beyond any honest plugin yet well
            // inside the senders' own timeouts (Shopify gives up after 5 s).
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            max_instances: 256,
            queue_wait: Duration::from_secs(2),
            max_calls_per_plugin: 256,
            output: OutputLimits::default(),
        }
    }
}

/// Errors building the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A limit is out of range.
    #[error("invalid plugin limits: {0}")]
    InvalidLimits(String),
    /// wasmtime refused the configuration (for instance, too little address space for the
    /// pooling allocator).
    #[error("cannot create the WebAssembly engine: {0}")]
    Wasmtime(String),
    /// The epoch ticker thread or the guest threads could not be started.
    #[error("cannot start the plugin threads: {0}")]
    Threads(String),
}

/// What every plugin of an engine shares; the ticker runs as long as this lives.
pub(crate) struct EngineShared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) limits: PluginLimits,
    /// Epoch ticks a call may run before it is interrupted.
    pub(crate) deadline_ticks: u64,
    /// Where every guest call runs.
    pub(crate) guests: GuestThreads,
    /// Dropping the sender tells the ticker thread to stop.
    _stop_ticker: mpsc::Sender<()>,
    /// The ticker thread's name, unique to this engine (Linux keeps 15 bytes of it).
    ticker_name: String,
}

/// The plugin engine: one per process, cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) shared: Arc<EngineShared>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.shared.limits)
            .field("ticker", &self.shared.ticker_name)
            .finish_non_exhaustive()
    }
}

/// Core instances, memories and tables one component may use. A Rust component built by
/// wasm-component-ld has about three core instances, one memory and two tables; other
/// toolchains (componentize-py, jco) use more.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

/// Memory kept resident per slot between instances: the guest's stack and the heap a
/// webhook usually touches.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(limits: PluginLimits) -> Result<Self, EngineError> {
        if limits.timeout.is_zero() {
            return Err(EngineError::InvalidLimits(
                "timeout must be above zero".into(),
            ));
        }
        if limits.max_instances == 0 {
            return Err(EngineError::InvalidLimits(
                "max_instances must be at least 1".into(),
            ));
        }
        if limits.memory_bytes < (1 << 16) {
            return Err(EngineError::InvalidLimits(
                "memory_bytes must be at least one WebAssembly page (65536)".into(),
            ));
        }

        let mut pool = PoolingAllocationConfig::new();
        let n = limits.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            // Plugins run synchronously: no fiber stacks needed.
            .total_stacks(0)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(limits.memory_bytes)
            // A fresh instance per webhook reuses a slot each time; copying back only the
            // pages the last instance dirtied (PAGEMAP_SCAN, Linux 6.7+) and keeping them
            // resident spares each webhook its page faults, hundreds for a Python plugin
            // (the vendored wasmtime completes the scan past 32 dirty runs). But the scan
            // only resets dirty pages that are present: one swapped out would keep the
            // last webhook's bytes for the next instance in the slot (the other half of
            // wasmtime PR #14357). So the scan is used only where nothing can be swapped
            // out.
            .pagemap_scan(pagemap_scan_setting(&read_proc_swaps()))
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES.min(limits.memory_bytes))
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| EngineError::Wasmtime(one_line(&e)))?;

        let mut linker = Linker::new(&engine);
        // A wit-bindgen guest built with std imports WASI p2 interfaces; they are linked
        // but the context behind them grants nothing (see `CallState`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EngineError::Wasmtime(one_line(&e)))?;
        // Every contract version at once: their interfaces are versioned names, so a
        // component finds the ones it was built against.
        v0_1::SourcePlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| EngineError::Wasmtime(one_line(&e)))?;
        v0_2::SourcePlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| EngineError::Wasmtime(one_line(&e)))?;
        forbid_waiting(&mut linker).map_err(|e| EngineError::Wasmtime(one_line(&e)))?;

        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        // Numbered, so that one engine's ticker can be told from another's in `/proc`.
        static ENGINES: AtomicU32 = AtomicU32::new(0);
        let ticker_name = format!("hg-epoch-{}", ENGINES.fetch_add(1, Ordering::Relaxed));
        thread::Builder::new()
            .name(ticker_name.clone())
            .spawn(move || {
                // Ends when every sender is gone, i.e. when the engine is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| EngineError::Threads(e.to_string()))?;
        let guests = GuestThreads::start(guest_threads::default_count())
            .map_err(|e| EngineError::Threads(e.to_string()))?;

        let tick = EPOCH_TICK.as_nanos().max(1);
        let deadline_ticks = u64::try_from(limits.timeout.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1);

        Ok(Self {
            shared: Arc::new(EngineShared {
                engine,
                linker,
                limits,
                deadline_ticks,
                guests,
                _stop_ticker: stop,
                ticker_name,
            }),
        })
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &PluginLimits {
        &self.shared.limits
    }
}

/// Whether a slot may be reset by scanning for dirty pages: only when the host has no
/// active swap device (`/proc/swaps` lists none), since a swapped-out dirty page escapes the
/// scan. Where that cannot be read, the memset-and-decommit reset, which is always correct.
/// Read once, when the engine is built: swap turned on later is noticed at the next start.
fn pagemap_scan_setting(proc_swaps: &Option<String>) -> Enabled {
    let swap_active = match proc_swaps {
        // The first line is the column header.
        Some(table) => table.lines().skip(1).any(|line| !line.trim().is_empty()),
        None => true,
    };
    if swap_active {
        tracing::info!(
            "swap is active (or /proc/swaps unreadable): plugin memory is reset without PAGEMAP_SCAN"
        );
        Enabled::No
    } else {
        Enabled::Auto
    }
}

fn read_proc_swaps() -> Option<String> {
    std::fs::read_to_string("/proc/swaps").ok()
}

/// Replaces WASI's clock subscriptions with traps. Waiting happens in host code, where
/// the epoch deadline cannot interrupt it: a plugin that sleeps would hold its thread for
/// as long as it asked. A source plugin has nothing to wait for.
fn forbid_waiting(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clocks = linker.instance(MONOTONIC_CLOCK)?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clocks.func_wrap(
            name,
            |_store, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(wasmtime::format_err!(
                    "plugins may not sleep or wait (wasi:clocks/monotonic-clock subscriptions are refused)"
                ))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The monotonic-clock interface as wasmtime-wasi 48 names it; guests importing an older
/// 0.2.x resolve to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Renders an error and its causes on one line, for logs and operator messages.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Whether a thread of this process has this name (truncated to 15 bytes by Linux).
    fn thread_named(name: &str) -> bool {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return false;
        };
        let name = &name[..name.len().min(15)];
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .any(|comm| comm.trim_end() == name)
    }

    /// A memory section of one 32-bit memory of `pages` WebAssembly pages (64 KiB each).
    fn one_memory(pages: u64) -> wasm_encoder::MemorySection {
        let mut section = wasm_encoder::MemorySection::new();
        section.memory(wasm_encoder::MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        section
    }

    /// A component that instantiates each of `modules` once, with no imports.
    fn component_instantiating(modules: &[wasm_encoder::Module]) -> Vec<u8> {
        let mut component = wasm_encoder::Component::new();
        let mut instances = wasm_encoder::InstanceSection::new();
        for (index, module) in (0..).zip(modules) {
            component.section(&wasm_encoder::ModuleSection(module));
            instances.instantiate(index, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
        }
        component.section(&instances);
        component.finish()
    }

    /// A component of `memories` core modules, each defining one memory of `mib` MiB.
    fn component_with_memories(memories: u32, mib: u64) -> Vec<u8> {
        let modules: Vec<_> = (0..memories)
            .map(|_| {
                let mut module = wasm_encoder::Module::new();
                module.section(&one_memory(mib * 16));
                module
            })
            .collect();
        component_instantiating(&modules)
    }

    #[test]
    fn the_memory_cap_holds_for_all_memories_of_an_instance_together() {
        let engine = PluginEngine::new(PluginLimits {
            max_instances: 2,
            memory_bytes: 64 << 20,
            ..PluginLimits::default()
        })
        .unwrap();
        let instantiate = |memories, mib| {
            let bytes = component_with_memories(memories, mib);
            let component =
                wasmtime::component::Component::new(&engine.shared.engine, &bytes).unwrap();
            let mut store = engine.new_store("memories".into(), "test", None);
            let result = engine.shared.linker.instantiate(&mut store, &component);
            (result.is_ok(), store.data().memory_exhausted())
        };
        // Each memory is under the 64 MiB cap; only their sum tells the cases apart.
        assert_eq!(instantiate(2, 24), (true, false), "48 MiB in two memories");
        assert_eq!(instantiate(2, 40), (false, true), "80 MiB in two memories");
        assert_eq!(
            instantiate(3, 24),
            (false, true),
            "72 MiB in three memories"
        );
    }

    /// Host pages the guest of `component_dirtying_pages` writes, each its own dirty run:
    /// several times the 32 regions wasmtime 48's scan reports in one go.
    const SCATTERED_PAGES: u32 = 128;
    const IMAGE_BYTE: i32 = 0x5a;

    /// A component whose start function checks that every other host page of its memory
    /// still holds the memory image's byte, trapping if not (a stale page from the last
    /// instance in the slot), and then overwrites each of them.
    fn component_dirtying_pages() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ConstExpr, DataSection, Function, FunctionSection, Instruction, MemArg,
            Module, StartSection, TypeSection,
        };
        const STRIDE: u32 = 8192;
        let offsets = (0..SCATTERED_PAGES).map(|page| page * STRIDE);
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        functions.function(0);
        let byte = MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        };
        let mut start = Function::new([]);
        for offset in offsets.clone() {
            let address = Instruction::I32Const(offset as i32);
            start
                .instruction(&address)
                .instruction(&Instruction::I32Load8U(byte))
                .instruction(&Instruction::I32Const(IMAGE_BYTE))
                .instruction(&Instruction::I32Ne)
                .instruction(&Instruction::If(wasm_encoder::BlockType::Empty))
                .instruction(&Instruction::Unreachable)
                .instruction(&Instruction::End)
                .instruction(&address)
                .instruction(&Instruction::I32Const(!IMAGE_BYTE))
                .instruction(&Instruction::I32Store8(byte));
        }
        start.instruction(&Instruction::End);
        let mut code = CodeSection::new();
        code.function(&start);
        let mut data = DataSection::new();
        for offset in offsets {
            data.active(0, &ConstExpr::i32_const(offset as i32), [IMAGE_BYTE as u8]);
        }
        let mut module = Module::new();
        module
            .section(&types)
            .section(&functions)
            .section(&one_memory(
                u64::from(SCATTERED_PAGES * STRIDE).div_ceil(1 << 16),
            ))
            .section(&StartSection { function_index: 0 })
            .section(&code)
            .section(&data);
        component_instantiating(&[module])
    }

    /// Minor page faults of the calling thread so far (field 10 of its `stat`).
    fn thread_minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name, in parentheses, may hold spaces: count fields after it.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(7).unwrap().parse().unwrap()
    }

    #[test]
    fn a_slot_reused_by_fresh_instances_is_reset_to_the_image_in_place() {
        let engine = PluginEngine::new(PluginLimits {
            max_instances: 1,
            ..PluginLimits::default()
        })
        .unwrap();
        let component =
            wasmtime::component::Component::new(&engine.shared.engine, component_dirtying_pages())
                .unwrap();
        let instantiate = || {
            let mut store = engine.new_store("scattered".into(), "test", None);
            engine
                .shared
                .linker
                .instantiate(&mut store, &component)
                .map(drop)
        };
        const WARM_UP: u32 = 5;
        const MEASURED: u32 = 100;
        for _ in 0..WARM_UP {
            instantiate().expect("a fresh instance sees the image, not the last one's writes");
        }
        let faults_before = thread_minor_faults();
        for _ in 0..MEASURED {
            instantiate().expect("a fresh instance sees the image, not the last one's writes");
        }
        let faults = thread_minor_faults() - faults_before;
        // Every dirtied page is copied back from the image and stays mapped, however many
        // runs the pages form, so an instance takes no fault on them. (wasmtime 48's scan
        // alone stops after 32 runs and decommits the rest: 96 faults an instance here.)
        assert!(
            faults < u64::from(MEASURED) * 8,
            "{faults} minor faults in {MEASURED} instances dirtying {SCATTERED_PAGES} pages each"
        );
    }

    #[test]
    fn pagemap_scan_only_without_swap() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(matches!(
            pagemap_scan_setting(&Some(header.to_owned())),
            Enabled::Auto
        ));
        let with_swap = format!("{header}/dev/zram0  partition\t8388604\t0\t100\n");
        assert!(matches!(
            pagemap_scan_setting(&Some(with_swap)),
            Enabled::No
        ));
        assert!(matches!(pagemap_scan_setting(&None), Enabled::No));
    }

    #[test]
    fn ticker_stops_when_the_engine_is_dropped() {
        let engine = PluginEngine::new(PluginLimits {
            max_instances: 2,
            ..PluginLimits::default()
        })
        .unwrap();
        let ticker = engine.shared.ticker_name.clone();
        // The thread names itself once it runs: wait for that, within bounds.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !thread_named(&ticker) && Instant::now() < deadline {
            thread::sleep(EPOCH_TICK);
        }
        assert!(thread_named(&ticker), "{ticker} never started");
        drop(engine);
        let deadline = Instant::now() + Duration::from_secs(2);
        while thread_named(&ticker) && Instant::now() < deadline {
            thread::sleep(EPOCH_TICK);
        }
        assert!(!thread_named(&ticker), "{ticker} still running");
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let bad = [
            PluginLimits {
                timeout: Duration::ZERO,
                ..PluginLimits::default()
            },
            PluginLimits {
                max_instances: 0,
                ..PluginLimits::default()
            },
            PluginLimits {
                memory_bytes: 1000,
                ..PluginLimits::default()
            },
        ];
        for limits in bad {
            assert!(matches!(
                PluginEngine::new(limits),
                Err(EngineError::InvalidLimits(_))
            ));
        }
    }
}
