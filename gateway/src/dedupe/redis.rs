//! Redis dedupe backend (fred): `SET key <entry id> NX EX <ttl>` / `GET key`.
//!
//! Redis is only a shortcut in front of the storage's unique key, so it must never hold
//! ingestion up: the client connects and reconnects in the background, and while Redis
//! is down every call fails fast with `Unavailable` instead of queuing until it returns.
//!
//! A batch is one command or one pipeline: `MGET` for the lookups, the `SET`s written
//! together and answered together. Sent one by one, the two commands of every webhook
//! cost over a fifth of the production path's throughput (BENCHMARKS.md): each is a trip
//! through fred's router, a timer, a wake-up of its caller, and a read and a write on both
//! sides of the socket.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Error as FredError, Expiration, KeysInterface, Options,
    ReconnectPolicy, SetOptions, Value,
};
use uuid::Uuid;

use super::{Dedupe, DedupeError, Remembered};

/// How long one call may take before it counts as Redis being unavailable.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

/// The `redis://` dedupe backend. Cheap to share: fred pipelines concurrent commands over
/// one connection, so calls are never serialized here.
pub struct RedisDedupe {
    client: Client,
    /// Applied to every command: fail fast when disconnected, bounded wait otherwise.
    options: Options,
    /// The connection task; aborted on drop so a replaced backend (config reload) stops
    /// reconnecting to its Redis.
    task: fred::types::ConnectHandle,
}

impl Drop for RedisDedupe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisDedupe {
    /// Connects with the default command timeout (250 ms). Succeeds even when Redis is
    /// unreachable: the connection is made, and remade, in the background.
    pub async fn connect(url: &str) -> Result<Self, DedupeError> {
        Self::connect_with_timeout(url, DEFAULT_COMMAND_TIMEOUT).await
    }

    /// Like [`RedisDedupe::connect`], with the time one command may take before it fails
    /// with `Unavailable`.
    pub async fn connect_with_timeout(
        url: &str,
        command_timeout: Duration,
    ) -> Result<Self, DedupeError> {
        let mut config = Config::from_url(url).map_err(|e| DedupeError::BadUrl(e.to_string()))?;
        // Retry the first connection like any later one, so start-up does not depend on
        // Redis being up.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|perf| perf.default_command_timeout = command_timeout)
            .with_connection_config(|conn| {
                conn.connection_timeout = Duration::from_secs(2);
                conn.internal_command_timeout = Duration::from_secs(2);
            })
            // Retry forever (0), from 100 ms doubling up to 2 s between attempts.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(|e| DedupeError::BadUrl(e.to_string()))?;
        let task = client.connect();
        // Give a reachable Redis the chance to be ready for the first request, without
        // delaying start-up by more than one command timeout when it is not.
        let _ = tokio::time::timeout(command_timeout, client.wait_for_connect()).await;

        let options = Options {
            timeout: Some(command_timeout),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        Ok(Self {
            client,
            options,
            task,
        })
    }
}

fn unavailable(err: FredError) -> DedupeError {
    DedupeError::Unavailable(err.to_string())
}

#[async_trait]
impl Dedupe for RedisDedupe {
    async fn lookup_many(&self, keys: &[&str]) -> Result<Vec<Option<Uuid>>, DedupeError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self
            .client
            .with_options(&self.options)
            .mget(keys.to_vec())
            .await
            .map_err(unavailable)?;
        if values.len() != keys.len() {
            return Err(DedupeError::Unavailable(format!(
                "redis answered {} values for {} keys",
                values.len(),
                keys.len()
            )));
        }
        Ok(keys
            .iter()
            .zip(values)
            .map(|(key, value)| match value.map(|v| Uuid::parse_str(&v)) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(e)) => {
                    // Not ours (or corrupted): treat as unseen, the storage's unique key
                    // still decides whether it is a duplicate.
                    tracing::warn!(key, error = %e, "dedupe cache value is not a uuid, ignored");
                    None
                }
            })
            .collect())
    }

    async fn remember_many(&self, items: &[Remembered<'_>]) -> Result<(), DedupeError> {
        if items.is_empty() {
            return Ok(());
        }
        let pipeline = self.client.with_options(&self.options).pipeline();
        for item in items {
            // `EX 0` is an error in Redis: a sub-second TTL rounds up to one second.
            let secs = item.ttl.as_secs_f64().ceil().clamp(1.0, i64::MAX as f64) as i64;
            // Only buffered here; everything goes out with `try_all`.
            let _: () = pipeline
                .set(
                    item.key,
                    item.entry_id.to_string(),
                    Some(Expiration::EX(secs)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(unavailable)?;
        }
        // `SET NX` on a key already set answers nil, not an error: only a failed command
        // (or the pipeline as a whole) is one.
        match pipeline
            .try_all::<Value>()
            .await
            .into_iter()
            .find_map(Result::err)
        {
            Some(error) => Err(unavailable(error)),
            None => Ok(()),
        }
    }

    async fn ping(&self) -> Result<(), DedupeError> {
        let _: Value = self
            .client
            .with_options(&self.options)
            .ping(None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
