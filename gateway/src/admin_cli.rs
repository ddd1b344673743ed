//! `hookgate replay`, `dlq`, `reload` and `secrets`: the admin API from the command line,
//! against a running gateway.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::client::{HttpClient, Reply};

/// How to reach the gateway's admin API.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8012")]
    pub url: String,
    /// Admin bearer token.
    #[arg(long, env = "HOOKGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Filters of the stored webhooks to replay.
#[derive(Args, Debug, Clone, Default)]
pub struct WebhookFilters {
    /// Only webhooks of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only webhooks in this status: accepted, published, failed, dead.
    #[arg(long)]
    pub status: Option<String>,
    /// Only webhooks of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only webhooks received at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only webhooks received before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only webhooks handled on arrival by this plugin.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only webhooks handled on arrival by this plugin version.
    #[arg(long)]
    pub plugin_version: Option<String>,
}

/// `hookgate replay`.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The webhook (entry id) to replay; or select many with the filters.
    #[arg(conflicts_with_all = ["source", "status", "tenant", "since", "until", "plugin", "plugin_version", "all"])]
    pub id: Option<String>,
    #[command(flatten)]
    pub filters: WebhookFilters,
    /// Replay every stored webhook (a bulk replay needs a filter otherwise).
    #[arg(long)]
    pub all: bool,
    /// Show what would be published, without publishing or recording anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for a bulk replay job to finish, printing its progress.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    #[command(flatten)]
    pub target: Target,
}

/// `hookgate dlq ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum DlqCommand {
    /// List dead events and webhooks stored as failed, newest first.
    List {
        #[command(flatten)]
        filters: DlqFilters,
        /// Only `event` (dead events) or `webhook` (stored as failed).
        #[arg(long)]
        kind: Option<String>,
        /// Items per page.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a page (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Re-queue dead events so the relay publishes them again: one, by filter, or all.
    Replay {
        /// The dead event to re-queue.
        #[arg(long, conflicts_with_all = ["source", "tenant", "since", "until", "all"])]
        event_id: Option<String>,
        #[command(flatten)]
        filters: DlqFilters,
        /// Re-queue the whole dead-letter queue.
        #[arg(long)]
        all: bool,
        /// Wait for the job to finish, printing its progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// `hookgate reload`.
#[derive(Args, Debug, Clone)]
pub struct ReloadArgs {
    /// Validate and show what would change (and what the candidate makes of recent
    /// webhooks), without swapping.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `hookgate secrets ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum SecretsCommand {
    /// Add secrets for a tenant of a source; with no --secret, one per line from stdin (so
    /// they stay out of the shell history). Several = rotation.
    Add {
        #[arg(long)]
        source: String,
        #[arg(long)]
        tenant: String,
        #[arg(long = "secret")]
        secrets: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List tenant secrets: id, fingerprint, created, matches, last matched.
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove one secret by id.
    Remove {
        #[arg(long)]
        source: String,
        #[arg(long)]
        tenant: String,
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct DlqFilters {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only webhooks received at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only webhooks received before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

struct Admin {
    client: HttpClient,
    base: String,
    token: String,
}

impl Admin {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let token = target
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .context("no admin token: pass --token or set HOOKGATE_ADMIN_TOKEN")?;
        Ok(Self {
            client: HttpClient::new(),
            base: target.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(&self, method: http::Method, path: &str) -> anyhow::Result<Reply> {
        self.call_with(method, path, None).await
    }

    /// [`call`](Self::call) with a JSON body.
    async fn call_with(
        &self,
        method: http::Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![("authorization".into(), format!("Bearer {}", self.token))];
        if json.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let body = json.map(|j| j.to_string().into_bytes()).unwrap_or_default();
        self.client
            .send(method, &url, &headers, body)
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))
    }
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| {
            value.map(|v| {
                format!(
                    "{key}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
        })
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

/// An error answer as one line on stderr: what the API said, never the token.
fn refused(reply: &Reply) -> ExitCode {
    let body = reply.json();
    match (body["error"].as_str(), body["message"].as_str()) {
        (Some(code), Some(message)) => {
            eprintln!(
                "hookgate: the gateway answered {} {code}: {message}",
                reply.status
            )
        }
        _ => eprintln!(
            "hookgate: the gateway answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ),
    }
    ExitCode::FAILURE
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `hookgate reload`: prints the outcome; exit 0 when it applied (or found nothing to
/// change, or validated), 1 when it was rejected or refused.
pub async fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.target)?;
    let path = format!(
        "/api/v1/admin/reload{}",
        query(&[("dry_run", args.dry_run.then_some("true"))])
    );
    let reply = admin.call(http::Method::POST, &path).await?;
    match reply.status {
        200 => {
            println!("{}", pretty(&reply.json()));
            Ok(ExitCode::SUCCESS)
        }
        422 => {
            println!("{}", pretty(&reply.json()));
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(refused(&reply)),
    }
}

/// `hookgate secrets`: prints the API's answer; exit 1 when it refused.
pub async fn secrets(command: SecretsCommand) -> anyhow::Result<ExitCode> {
    let segment = |text: &str| {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let reply = match command {
        SecretsCommand::Add {
            source,
            tenant,
            mut secrets,
            target,
        } => {
            if secrets.is_empty() {
                secrets = std::io::read_to_string(std::io::stdin())
                    .context("reading secrets from stdin")?
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            if secrets.is_empty() {
                eprintln!("hookgate: no secret given: pass --secret or one per line on stdin");
                return Ok(ExitCode::from(2));
            }
            let admin = Admin::new(&target)?;
            let body =
                serde_json::json!({ "source": source, "tenant": tenant, "secrets": secrets });
            admin
                .call_with(http::Method::POST, "/api/v1/admin/secrets", Some(&body))
                .await?
        }
        SecretsCommand::List {
            source,
            tenant,
            target,
        } => {
            let admin = Admin::new(&target)?;
            let path = format!(
                "/api/v1/admin/secrets{}",
                query(&[("source", source.as_deref()), ("tenant", tenant.as_deref())])
            );
            admin.call(http::Method::GET, &path).await?
        }
        SecretsCommand::Remove {
            source,
            tenant,
            id,
            target,
        } => {
            let admin = Admin::new(&target)?;
            let path = format!(
                "/api/v1/admin/secrets/{}/{}/{}",
                segment(&source),
                segment(&tenant),
                segment(&id)
            );
            admin.call(http::Method::DELETE, &path).await?
        }
    };
    if (200..300).contains(&reply.status) {
        println!("{}", pretty(&reply.json()));
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(refused(&reply))
    }
}

/// `hookgate replay`: exit 0 when everything selected was replayed (or, dry, shown), 1
/// when the gateway refused, a webhook still fails to map or the job did not complete.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.target)?;
    let dry = args.dry_run.then_some("true");
    if let Some(id) = &args.id {
        let Ok(id) = uuid::Uuid::parse_str(id) else {
            eprintln!("hookgate: {id:?} is not a webhook id (a UUID, as the admin API lists them)");
            return Ok(ExitCode::from(2));
        };
        let path = format!(
            "/api/v1/admin/webhooks/{id}/replay{}",
            query(&[("dry_run", dry)])
        );
        let reply = admin.call(http::Method::POST, &path).await?;
        let body = reply.json();
        if reply.status == 422 {
            println!("{}", pretty(&body["replay"]));
            return Ok(refused(&reply));
        }
        if reply.status != 200 {
            return Ok(refused(&reply));
        }
        println!("{}", pretty(&body));
        let failed = body["webhook"]["outcome"] == "failed";
        return Ok(if failed {
            eprintln!("hookgate: the current plugin cannot map this webhook (dry run)");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let f = &args.filters;
    let all = args.all.then_some("true");
    let path = format!(
        "/api/v1/admin/webhooks/replay{}",
        query(&[
            ("source", f.source.as_deref()),
            ("status", f.status.as_deref()),
            ("tenant", f.tenant.as_deref()),
            ("since", f.since.as_deref()),
            ("until", f.until.as_deref()),
            ("plugin", f.plugin.as_deref()),
            ("plugin_version", f.plugin_version.as_deref()),
            ("all", all),
            ("dry_run", dry),
        ])
    );
    let reply = admin.call(http::Method::POST, &path).await?;
    if !(200..300).contains(&reply.status) {
        return Ok(refused(&reply));
    }
    let body = reply.json();
    println!("{}", pretty(&body));
    if args.dry_run {
        if body["next_cursor"].is_string() {
            eprintln!("hookgate: more webhooks match than one dry-run page shows");
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(&admin, &body["job"], args.wait, args.timeout).await
}

/// `hookgate dlq list|replay`.
pub async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List {
            filters,
            kind,
            limit,
            cursor,
            json,
            target,
        } => {
            let admin = Admin::new(&target)?;
            let limit = limit.to_string();
            let path = format!(
                "/api/v1/admin/dlq{}",
                query(&[
                    ("source", filters.source.as_deref()),
                    ("tenant", filters.tenant.as_deref()),
                    ("since", filters.since.as_deref()),
                    ("until", filters.until.as_deref()),
                    ("kind", kind.as_deref()),
                    ("limit", Some(&limit)),
                    ("cursor", cursor.as_deref()),
                ])
            );
            let reply = admin.call(http::Method::GET, &path).await?;
            if reply.status != 200 {
                return Ok(refused(&reply));
            }
            let body = reply.json();
            if json {
                println!("{}", pretty(&body));
                return Ok(ExitCode::SUCCESS);
            }
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("the dead-letter queue is empty");
            }
            for item in &items {
                println!(
                    "{:<8} webhook {}  event {}  {}  {}  attempts {}  {}",
                    item["kind"].as_str().unwrap_or("?"),
                    item["webhook_id"].as_str().unwrap_or("?"),
                    item["event_id"].as_str().unwrap_or("-"),
                    item["source"].as_str().unwrap_or("?"),
                    item["received_at"].as_str().unwrap_or("?"),
                    item["attempts"],
                    item["last_error"].as_str().unwrap_or(""),
                );
            }
            if let Some(next) = body["next_cursor"].as_str() {
                println!("more: --cursor {next}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            event_id,
            filters,
            all,
            wait,
            timeout,
            target,
        } => {
            let admin = Admin::new(&target)?;
            let path = format!(
                "/api/v1/admin/dlq/replay{}",
                query(&[
                    ("event_id", event_id.as_deref()),
                    ("source", filters.source.as_deref()),
                    ("tenant", filters.tenant.as_deref()),
                    ("since", filters.since.as_deref()),
                    ("until", filters.until.as_deref()),
                    ("all", all.then_some("true")),
                ])
            );
            let reply = admin.call(http::Method::POST, &path).await?;
            if !(200..300).contains(&reply.status) {
                return Ok(refused(&reply));
            }
            let body = reply.json();
            println!("{}", pretty(&body));
            if event_id.is_some() {
                return Ok(ExitCode::SUCCESS);
            }
            follow(&admin, &body["job"], wait, timeout).await
        }
    }
}

/// With `wait`, polls a job until it finishes (or `timeout_secs` pass), a progress line on
/// stderr each time it moves; exit 0 only when it completed with no failure.
async fn follow(
    admin: &Admin,
    job: &serde_json::Value,
    wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<ExitCode> {
    let id = job["id"]
        .as_str()
        .context("the gateway's answer names no job")?
        .to_owned();
    if !wait {
        eprintln!(
            "hookgate: replay job {id} started; follow it with GET /api/v1/admin/replays/{id}"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut shown = String::new();
    loop {
        let reply = admin
            .call(
                http::Method::GET,
                &format!("/api/v1/admin/replays/{id}?limit=1"),
            )
            .await?;
        if reply.status != 200 {
            return Ok(refused(&reply));
        }
        let body = reply.json();
        let status = body["status"].as_str().unwrap_or("?").to_owned();
        let progress = &body["progress"];
        let line = format!(
            "job {id}: {status}, {} processed, {} replayed, {} failed, {} events",
            progress["processed"], progress["replayed"], progress["failed"], progress["events"]
        );
        if line != shown {
            eprintln!("{line}");
            shown = line;
        }
        match status.as_str() {
            "completed" if progress["failed"] == 0 => return Ok(ExitCode::SUCCESS),
            "completed" => {
                eprintln!(
                    "hookgate: some webhooks still cannot be mapped; their records say why: \
                     GET /api/v1/admin/replays/{id}"
                );
                return Ok(ExitCode::FAILURE);
            }
            "failed" | "interrupted" => {
                eprintln!(
                    "hookgate: the job did not complete: {}",
                    body["error"].as_str().unwrap_or(&status)
                );
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
        if Instant::now() > deadline {
            eprintln!("hookgate: gave up waiting after {timeout_secs} s; the job goes on");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
