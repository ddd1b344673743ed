//! The `hookgate` command line: serve, migrate, plugins, send, reload, secrets, replay, dlq,
//! purge.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use hookgate::app::Gateway;
use hookgate::client::HttpClient;
use hookgate::config::{CliOverrides, Config, ConfigError, LogFormat};
use hookgate::reload::Trigger;
use hookgate::{plugin, sample, store};

// glibc's malloc was a seventh of the gateway's CPU under load (fragmentation
// consolidation of the many short-lived body and envelope buffers); mimalloc's
// per-thread free lists avoid that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Webhook ingestion gateway: verify, dedupe, store, map and publish to NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults when no config file and no environment).
    Serve {
        /// Config file (default: hookgate.toml in the working directory, if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding LISTEN_ADDR and the file.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Create or upgrade the storage tables, then exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect, test and export source plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Sign a sample webhook for a source with its secret and POST it to a gateway.
    Send {
        /// The source: shopify or stripe.
        source: String,
        /// Gateway base URL.
        #[arg(long, default_value = "http://127.0.0.1:8012")]
        url: String,
        /// Secret to sign with (default: SHOPIFY_WEBHOOK_SECRET / STRIPE_WEBHOOK_SECRET).
        #[arg(long)]
        secret: Option<String>,
        /// Shopify topic.
        #[arg(long, default_value = "orders/create")]
        topic: String,
        /// Payload file instead of the bundled sample.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Event id (Shopify X-Shopify-Event-Id, Stripe event id); default: a fresh one.
        /// Sending the same id twice shows duplicate detection.
        #[arg(long)]
        event_id: Option<String>,
    },
    /// Ask a running gateway to reload its configuration and plugin directory
    /// (`POST /api/v1/admin/reload`); prints the outcome. Exit code 0 when it applied (or
    /// found nothing to change, or validated with --dry-run), 1 when it was rejected.
    Reload(hookgate::admin_cli::ReloadArgs),
    /// Manage per-tenant secrets of a running gateway: add (several at once = rotation),
    /// list (ids and fingerprints only), remove.
    Secrets {
        #[command(subcommand)]
        command: hookgate::admin_cli::SecretsCommand,
    },
    /// Replay stored webhooks through the plugins serving now: one by id, or many by
    /// filter (a job); `--dry-run` shows what would be published.
    Replay(hookgate::admin_cli::ReplayArgs),
    /// List and replay the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: hookgate::admin_cli::DlqCommand,
    },
    /// Remove published webhook entries (and their events) older than the retention;
    /// failed, dead and unpublished entries are never removed.
    Purge {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Age in days past which published entries go (default: [storage] retention_days).
        #[arg(long)]
        older_than_days: Option<u64>,
        /// Count what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load a plugin component, validate its exports and print its metadata.
    Check { file: PathBuf },
    /// Run a plugin's fixtures (recorded deliveries and their expected outcome) offline.
    /// Exit code 0 when all pass, 1 when any fails or the plugin does not load, 2 when no
    /// usable fixtures are found.
    Test {
        /// The plugin file, or the name of a bundled plugin (`shopify`).
        plugin: String,
        /// The fixtures file (default: FILE.fixtures.json beside FILE.wasm, or the bundled
        /// plugin's own).
        #[arg(long)]
        fixtures: Option<PathBuf>,
    },
    /// Write the bundled plugins as .wasm files into a directory.
    Export { dir: PathBuf },
    /// Start a plugin project (the GitHub plugin of that language, renamed) that builds
    /// with its `build.sh` and passes its own fixtures as it is.
    New {
        /// The plugin's name, which is also its source's name (`acme-billing`).
        name: String,
        #[arg(long, value_enum)]
        lang: plugin::scaffold::Lang,
        /// Where to write it (default: ./NAME); must be absent or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the path of hookgate-plugin-sdk (default: the one this binary was built
        /// beside).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hookgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(
    path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> Result<Config, ConfigError> {
    Config::load_from_process_env(path.as_deref(), &CliOverrides { listen })
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, listen } => {
            let path = config;
            let config = load_config(path.clone(), listen)?;
            init_logging(config.log_format == LogFormat::Json);
            for warning in config.warnings() {
                tracing::warn!("{warning}");
            }
            let loader: hookgate::reload::ConfigLoader =
                Arc::new(move || load_config(path.clone(), listen));
            let gateway = Gateway::start_with(&config, loader).await?;
            wait_for_stop(&gateway).await;
            tracing::info!("stopping: finishing requests in flight");
            gateway.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let config = load_config(config, None)?;
            let store = store::connect(config.storage.url.expose(), &config.storage.schema).await?;
            store.migrate().await?;
            println!("storage is up to date ({})", store.kind());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins {
            command: PluginsCommand::Check { file },
        } => {
            let engine = plugin::PluginEngine::new(plugin::PluginLimits::default())?;
            match plugin::check_file(&engine, &file) {
                Ok(report) => {
                    println!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("hookgate: {}: {error}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Plugins {
            command: PluginsCommand::Test { plugin, fixtures },
        } => plugins_test(&plugin, fixtures),
        Command::Plugins {
            command:
                PluginsCommand::New {
                    name,
                    lang,
                    dir,
                    sdk,
                },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk.unwrap_or_else(plugin::scaffold::default_sdk_path);
            match plugin::scaffold::scaffold(&name, lang, &dir, &sdk) {
                Ok(files) => {
                    for file in files {
                        println!("{}", file.display());
                    }
                    println!(
                        "next: {0}/build.sh, then hookgate plugins test {0}/target/{name}.wasm --fixtures {0}/{name}.fixtures.json",
                        dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("hookgate: {error}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Plugins {
            command: PluginsCommand::Export { dir },
        } => {
            for path in plugin::export_bundled(&dir)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            source,
            url,
            secret,
            topic,
            file,
            event_id,
        } => send(&source, &url, secret, &topic, file, event_id).await,
        Command::Reload(args) => hookgate::admin_cli::reload(args).await,
        Command::Secrets { command } => hookgate::admin_cli::secrets(command).await,
        Command::Purge {
            config,
            older_than_days,
            dry_run,
        } => purge(config, older_than_days, dry_run).await,
        Command::Replay(args) => hookgate::admin_cli::replay(args).await,
        Command::Dlq { command } => hookgate::admin_cli::dlq(command).await,
    }
}

/// `purge`: what the gateway's retention task does, once, on demand.
async fn purge(
    config: Option<PathBuf>,
    older_than_days: Option<u64>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config, None)?;
    let days = older_than_days.unwrap_or(config.storage.retention_days);
    if days == 0 {
        eprintln!(
            "hookgate: no retention: pass --older-than-days N or set [storage] retention_days"
        );
        return Ok(ExitCode::from(2));
    }
    let before = hookgate::purge::cutoff(chrono::Utc::now(), days)
        .with_context(|| format!("--older-than-days {days} is out of range"))?;
    let store = store::connect(config.storage.url.expose(), &config.storage.schema).await?;
    store.migrate().await?;
    let n = hookgate::purge::purge(store.as_ref(), before, dry_run).await?;
    let when = before.format("%Y-%m-%d %H:%M:%S UTC");
    if dry_run {
        println!("{n} published entries received before {when} would be removed (dry run)");
    } else {
        println!("{n} published entries received before {when} removed");
    }
    Ok(ExitCode::SUCCESS)
}

/// `plugins test`: a plugin file (fixtures beside it) or a bundled plugin by name (its
/// shipped fixtures), unless `--fixtures` names the file.
fn plugins_test(plugin: &str, fixtures: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let usage = |message: String| {
        eprintln!("hookgate: {message}");
        Ok(ExitCode::from(2))
    };
    let file = PathBuf::from(plugin);
    // A file of that name wins over a bundled plugin.
    let bundled = plugin::bundled()
        .iter()
        .find(|(name, _)| *name == plugin && !file.exists());
    let bytes = match bundled {
        Some((_, bytes)) => bytes.to_vec(),
        None => match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                let names: Vec<_> = plugin::bundled().iter().map(|(n, _)| *n).collect();
                return usage(format!(
                    "cannot read {}: {e} (nor is it a bundled plugin: {})",
                    file.display(),
                    names.join(", ")
                ));
            }
        },
    };
    let (text, fixtures_path) = match (fixtures, bundled) {
        (None, Some((name, _))) => match plugin::bundled_fixtures(name) {
            Some(text) => (text.to_owned(), format!("the bundled {name} fixtures")),
            None => {
                return usage(format!(
                    "no fixtures bundled for {name}; pass --fixtures FILE"
                ));
            }
        },
        (given, _) => {
            let path = given.unwrap_or_else(|| file.with_extension("fixtures.json"));
            match std::fs::read_to_string(&path) {
                Ok(text) => (text, path.display().to_string()),
                Err(e) => {
                    return usage(format!(
                        "no fixtures found: cannot read {}: {e}; pass --fixtures FILE",
                        path.display()
                    ));
                }
            }
        }
    };
    let fixtures = match plugin::load_fixtures(&text) {
        Ok(fixtures) => fixtures,
        Err(error) => return usage(format!("{fixtures_path}: {error}")),
    };
    let engine = plugin::PluginEngine::new(plugin::PluginLimits::default())?;
    let loaded = match engine.load(&bytes) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("hookgate: {plugin}: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = plugin::run_fixtures(&loaded, &fixtures);
    println!("{} against {fixtures_path}", report.plugin);
    println!("{report}");
    Ok(if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn send(
    source: &str,
    url: &str,
    secret: Option<String>,
    topic: &str,
    file: Option<PathBuf>,
    event_id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let env_name = match source {
        "shopify" => "SHOPIFY_WEBHOOK_SECRET",
        "stripe" => "STRIPE_WEBHOOK_SECRET",
        other => anyhow::bail!("`send` knows how to sign for shopify and stripe, not \"{other}\""),
    };
    let secret = secret
        .or_else(|| std::env::var(env_name).ok())
        .and_then(|s| {
            s.split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .with_context(|| format!("no secret: pass --secret or set {env_name}"))?;
    let custom = match file {
        Some(path) => {
            Some(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let now = chrono::Utc::now().timestamp();
    let webhook = match source {
        "shopify" => {
            let body = custom.unwrap_or_else(|| sample::SHOPIFY_ORDER.as_bytes().to_vec());
            let event_id = event_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            sample::shopify(
                &secret,
                topic,
                "example-shop.myshopify.com",
                &event_id,
                &body,
            )
        }
        _ => {
            let body = match custom {
                Some(body) => body,
                None => {
                    let event_id = event_id
                        .unwrap_or_else(|| format!("evt_{}", uuid::Uuid::new_v4().simple()));
                    sample::stripe_event(&event_id, now)
                }
            };
            sample::stripe(&secret, now, &body)
        }
    };
    let reply = HttpClient::new()
        .post_webhook(url, &webhook)
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    println!(
        "POST {}{} -> {}",
        url.trim_end_matches('/'),
        webhook.path,
        reply.status
    );
    println!("{}", String::from_utf8_lossy(&reply.body));
    Ok(if (200..300).contains(&reply.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ctrl-C or SIGTERM stop the gateway; SIGHUP reloads it.
async fn wait_for_stop(gateway: &Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut terminate), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = terminate.recv() => return,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP received: reloading");
                    gateway.state.reloader.reload(Trigger::Signal, false).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
