//! Start-up: turns a validated configuration into the running gateway — backends chosen
//! from their URLs, plugins loaded, sources bound, relay and HTTP server started — and
//! stops it gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, HttpLimits, State};
use crate::ingest::Pipeline;
use crate::ingest::batch::BatchWriter;
use crate::metrics::Metrics;
use crate::plugin::{OutputLimits, PluginEngine, PluginLimits};
use crate::publish::relay::{Relay, RelayConfig};
use crate::publish::{self, BusOptions};
use crate::reload::watch::FileWatch;
use crate::reload::{ConfigLoader, Reloader, candidate};
use crate::secrets::{SecretsKey, TenantSecrets};
use crate::{dedupe, store};

/// Webhooks per storage transaction at most.
const MAX_BATCH: usize = 256;
/// Storage transactions in flight at once. SQLite has one write lock: a second writer
/// would only wait for it in the busy handler's sleeps.
fn storage_writers(kind: &str) -> usize {
    if kind == "sqlite" { 1 } else { 2 }
}

/// A running gateway.
pub struct Gateway {
    pub local_addr: SocketAddr,
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    relay: tokio::task::JoinHandle<()>,
    _watch: Option<FileWatch>,
}

impl Gateway {
    /// Connects everything the configuration names and starts serving. A reload reads
    /// the same file again with the process environment.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let file = config.file().map(std::path::Path::to_path_buf);
        let same = config.clone();
        let loader: ConfigLoader = Arc::new(move || match &file {
            Some(file) => Config::load_from_process_env(Some(file), &Default::default()),
            None => Ok(same.clone()),
        });
        Self::start_with(config, loader).await
    }

    /// [`Gateway::start`], with `loader` reading the configuration again on reload.
    pub async fn start_with(config: &Config, loader: ConfigLoader) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let store = store::connect(config.storage.url.expose(), &config.storage.schema)
            .await
            .context("storage")?;
        store.migrate().await.context("storage migrations")?;
        let secrets_key = config
            .secrets_key
            .as_ref()
            .map(|key| SecretsKey::parse(key.expose()))
            .transpose()
            .context("secrets_key")?;
        let tenant_secrets = Arc::new(
            TenantSecrets::load(secrets_key, store.clone())
                .await
                .context("tenant secrets")?,
        );
        for (name, source) in config.enabled_sources() {
            if source.tenant_secrets && !tenant_secrets.has_tenants(name) {
                tracing::warn!(
                    source = name,
                    "tenant_secrets is set but no tenant has secrets yet: add them with `hookgate secrets add`"
                );
            }
        }
        let dedupe = dedupe::connect(config.dedupe.url.expose())
            .await
            .context("dedupe")?;
        let sink = publish::connect(
            config.bus.url.expose(),
            &BusOptions {
                stream: config.bus.stream.clone(),
                subject_prefix: config.bus.subject_prefix.clone(),
                create_stream: config.bus.create_stream,
                duplicate_window: config.bus.duplicate_window(),
            },
        )
        .await
        .context("bus")?;

        let engine = PluginEngine::new(PluginLimits {
            timeout: config.plugins.timeout(),
            memory_bytes: usize::try_from(config.plugins.memory_bytes()).unwrap_or(usize::MAX),
            // One slot per request the gateway admits, up to tokio's blocking-pool size
            // (plugin calls run there): an admitted request never finds the pool full.
            max_instances: u32::try_from(config.http.max_concurrency.min(512)).unwrap_or(512),
            queue_wait: config.plugins.queue_wait(),
            max_calls_per_plugin: usize::try_from(config.plugins.max_concurrent_calls)
                .unwrap_or(usize::MAX),
            output: OutputLimits {
                max_events: usize::try_from(config.plugins.max_events).unwrap_or(usize::MAX),
                max_event_bytes: config.plugins.max_event_bytes(),
                max_error_chars: usize::try_from(config.plugins.max_error_chars)
                    .unwrap_or(usize::MAX),
            },
        })
        .context("plugin engine")?;
        let plugins = {
            let engine = engine.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || candidate::load_plugins(&engine, &config, None))
                .await
                .context("loading plugins")?
        };
        for error in plugins.errors() {
            tracing::error!(%error, "plugin failed to load");
        }
        let sources = candidate::bind_sources(config, &plugins)?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        watch_bus_payload_limit(
            sink.clone(),
            config.max_payload_bytes(),
            shutdown_rx.clone(),
        );
        let (relay_handle, relay) = Relay::start(
            store.clone(),
            sink.clone(),
            metrics.clone(),
            RelayConfig {
                retry_max_age: config.bus.retry_max_age(),
                retry_max_attempts: config.bus.retry_max_attempts,
                breaker: config.bus.breaker(),
                ..RelayConfig::default()
            },
            shutdown_rx.clone(),
        );
        let breakers = relay_handle.breakers();
        if config.storage.retention_days > 0 {
            // Detached: it ends with the shutdown signal, and a purge cut short by a stop
            // leaves nothing half-done (each chunk is one statement).
            drop(crate::purge::start(
                store.clone(),
                metrics.clone(),
                config.storage.retention_days,
                shutdown_rx.clone(),
            ));
        }
        let writer = BatchWriter::start(
            store.clone(),
            dedupe.clone(),
            metrics.clone(),
            MAX_BATCH,
            storage_writers(store.kind()),
        );
        let pipeline = Arc::new(Pipeline::new(
            sources,
            plugins,
            writer,
            relay_handle,
            metrics.clone(),
            config.bus.subject_prefix.clone(),
            config.dedupe_namespace(),
            tenant_secrets.clone(),
        ));
        let limits = HttpLimits::from_config(config);
        let reloader = Arc::new(Reloader::new(
            engine,
            pipeline.clone(),
            metrics.clone(),
            store.clone(),
            loader,
            config.clone(),
        ));
        let watch = if config.plugins.watch {
            FileWatch::start(
                reloader.clone(),
                config.file(),
                &config.plugins.dir,
                shutdown_rx.clone(),
            )
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot watch the config file and plugin directory; reload with SIGHUP or the admin API");
                None
            })
        } else {
            None
        };
        let _refresh = tenant_secrets.spawn_refresh(shutdown_rx.clone());
        let state = Arc::new(State {
            tenant_secrets,
            pipeline,
            reloader,
            store,
            dedupe,
            sink,
            metrics,
            admin_token: config.admin_token.as_ref().map(|t| t.expose().to_owned()),
            budget: http::budget::Budget::new(
                limits.max_concurrency,
                limits.source_share_percent,
                limits.client_share_percent,
            ),
            limits,
            breakers,
        });
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let server = tokio::spawn(http::server::serve(listener, state.clone(), shutdown_rx));
        tracing::info!(%local_addr, sources = ?state.pipeline.sources().keys().collect::<Vec<_>>(), "hookgate listening");
        Ok(Self {
            local_addr,
            state,
            shutdown,
            server,
            relay,
            _watch: watch,
        })
    }

    /// Stops accepting, lets requests in flight finish, then lets the relay publish what
    /// it holds. Whatever is left stays in the outbox for the next start.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.relay.await;
    }
}

/// Warns when the bus would refuse the events of webhooks the gateway accepts: checked once
/// the bus is connected (at start, or when NATS comes up later, for up to an hour), and
/// given up at shutdown so a stopped gateway holds no connection.
fn watch_bus_payload_limit(
    sink: Arc<dyn publish::EventSink>,
    max_body_bytes: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    if sink.kind() != "nats" {
        return;
    }
    tokio::spawn(async move {
        for _ in 0..720 {
            if let Some(bus_max) = sink.max_message_bytes() {
                if let Some(warning) = publish::payload_limit_warning(max_body_bytes, bus_max) {
                    tracing::warn!("{warning}");
                }
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}
