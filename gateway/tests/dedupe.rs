//! The Redis dedupe backend against a real Redis (the test run's, see
//! `hookgate-test-services`): round trip, `NX`, TTL, and behaviour while Redis is down.
//!
//! Each test uses its own random key namespace and deletes its keys at the end; keys also
//! carry a TTL, so a failed test leaves nothing behind for long.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
use futures::FutureExt;
use hookgate::dedupe::redis::RedisDedupe;
use hookgate::dedupe::{Dedupe, DedupeError, Remembered, cache_key};
use tokio::net::TcpStream;
use uuid::Uuid;

#[path = "common/tcp_relay.rs"]
mod tcp_relay;
use tcp_relay::Relay;

use hookgate_test_services::redis_url;

fn redis_addr() -> SocketAddr {
    hookgate_test_services::services().redis.socket_addr()
}

/// Fails the test, with a clear message, when the test Redis is not running.
async fn require_redis() {
    let addr = redis_addr();
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("Redis at {addr} is unreachable ({e}); these tests need it running"),
        Err(_) => panic!("Redis at {addr} did not accept a connection within 2 s"),
    }
}

/// A plain client for checking and cleaning up behind the backend under test.
async fn admin() -> fred::clients::Client {
    let config = Config::from_url(&redis_url()).expect("valid test Redis URL");
    let client = Builder::from_config(config).build().expect("client");
    tokio::time::timeout(Duration::from_secs(5), client.init())
        .await
        .expect("admin client connects in time")
        .expect("admin client connects");
    client
}

/// Runs `body` with a fresh key namespace, then deletes the keys it used, even if it
/// panicked.
async fn with_keys<F, Fut>(body: F)
where
    F: FnOnce(Keys) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    require_redis().await;
    let keys = Keys {
        source: format!("test-{}", Uuid::new_v4().simple()),
        used: Arc::new(Mutex::new(Vec::new())),
    };
    let used = keys.used.clone();
    let outcome = std::panic::AssertUnwindSafe(body(keys))
        .catch_unwind()
        .await;
    let used: Vec<String> = used.lock().map(|v| v.clone()).unwrap_or_default();
    if !used.is_empty() {
        let client = admin().await;
        let _: i64 = client.del(used).await.unwrap_or(0);
        let _ = client.quit().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

struct Keys {
    source: String,
    used: Arc<Mutex<Vec<String>>>,
}

impl Keys {
    fn key(&self, name: &str) -> String {
        let key = cache_key("dedupe-tests", &self.source, name);
        if let Ok(mut used) = self.used.lock() {
            used.push(key.clone());
        }
        key
    }
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn remember_then_lookup_round_trips() {
    with_keys(|keys| async move {
        let d = RedisDedupe::connect(&redis_url()).await.expect("connect");
        let key = keys.key("orders/create:1");
        assert_eq!(d.lookup(&key).await.expect("lookup"), None);
        let id = Uuid::now_v7();
        d.remember(&key, id, TTL).await.expect("remember");
        assert_eq!(d.lookup(&key).await.expect("lookup"), Some(id));
        assert_eq!(
            d.lookup(&keys.key("orders/create:2"))
                .await
                .expect("lookup"),
            None
        );
        d.ping().await.expect("ping");
        assert_eq!(d.kind(), "redis");

        // Stored as the plain uuid text with the TTL asked for.
        let admin = admin().await;
        let raw: Option<String> = admin.get(&key).await.expect("get");
        assert_eq!(raw, Some(id.to_string()));
        let ttl: i64 = admin.ttl(&key).await.expect("ttl");
        assert!((50..=60).contains(&ttl), "ttl {ttl}");
    })
    .await;
}

/// A batch is one MGET and one pipeline: each key gets its own answer, in order, and each
/// remembered key its own TTL; a key already set keeps its first value.
#[tokio::test]
async fn batches_answer_each_key_in_order() {
    with_keys(|keys| async move {
        let d = RedisDedupe::connect(&redis_url()).await.expect("connect");
        let (a, b, c) = (keys.key("a"), keys.key("b"), keys.key("c"));
        let (first, second, third) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(d.lookup_many(&[]).await.expect("empty lookup"), vec![]);
        d.remember_many(&[]).await.expect("empty remember");
        d.remember(&b, first, TTL).await.expect("remember b");
        d.remember_many(&[
            Remembered {
                key: &a,
                entry_id: second,
                ttl: Duration::from_secs(30),
            },
            Remembered {
                key: &b,
                entry_id: third,
                ttl: TTL,
            },
        ])
        .await
        .expect("remember many");
        assert_eq!(
            d.lookup_many(&[&c, &b, &a]).await.expect("lookup many"),
            vec![None, Some(first), Some(second)]
        );
        let admin = admin().await;
        let ttl: i64 = admin.ttl(&a).await.expect("ttl");
        assert!((20..=30).contains(&ttl), "ttl {ttl}");
    })
    .await;
}

#[tokio::test]
async fn remember_keeps_the_first_value() {
    with_keys(|keys| async move {
        let d = RedisDedupe::connect(&redis_url()).await.expect("connect");
        let key = keys.key("evt");
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        d.remember(&key, first, TTL).await.expect("remember");
        d.remember(&key, second, TTL).await.expect("remember again");
        assert_eq!(d.lookup(&key).await.expect("lookup"), Some(first));
    })
    .await;
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    with_keys(|keys| async move {
        let d = RedisDedupe::connect(&redis_url()).await.expect("connect");
        let key = keys.key("short");
        let id = Uuid::new_v4();
        let start = Instant::now();
        d.remember(&key, id, Duration::from_secs(1))
            .await
            .expect("remember");
        assert_eq!(d.lookup(&key).await.expect("lookup"), Some(id));
        let mut gone_after = None;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if d.lookup(&key).await.expect("lookup").is_none() {
                gone_after = Some(start.elapsed());
                break;
            }
        }
        let gone_after = gone_after.expect("entry still present 4 s after a 1 s TTL");
        assert!(
            gone_after >= Duration::from_millis(900),
            "expired too early: {gone_after:?}"
        );
        // Once expired, the key can be remembered anew.
        let next = Uuid::new_v4();
        d.remember(&key, next, TTL).await.expect("remember");
        assert_eq!(d.lookup(&key).await.expect("lookup"), Some(next));
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_calls_share_one_client() {
    with_keys(|keys| async move {
        let d = Arc::new(RedisDedupe::connect(&redis_url()).await.expect("connect"));
        let n = 500;
        let entries: Vec<(String, Uuid)> = (0..n)
            .map(|i| (keys.key(&format!("c{i}")), Uuid::new_v4()))
            .collect();
        let start = Instant::now();
        let tasks: Vec<_> = entries
            .iter()
            .cloned()
            .map(|(key, id)| {
                let d = d.clone();
                tokio::spawn(async move {
                    d.remember(&key, id, TTL).await?;
                    d.lookup(&key).await
                })
            })
            .collect();
        for (task, (_, id)) in tasks.into_iter().zip(&entries) {
            let got = task.await.expect("join").expect("call");
            assert_eq!(got, Some(*id));
        }
        // Bounded, so a client that stalls under concurrent use fails the test.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn unreachable_redis_connects_and_then_fails_fast() {
    let start = Instant::now();
    let d = tokio::time::timeout(
        Duration::from_secs(2),
        RedisDedupe::connect("redis://127.0.0.1:1"),
    )
    .await
    .expect("connect returns promptly")
    .expect("connect succeeds while Redis is down");
    assert!(start.elapsed() < Duration::from_secs(2));

    let start = Instant::now();
    let looked = d.lookup("hookgate:dedupe:test:x").await;
    let remembered = d
        .remember("hookgate:dedupe:test:x", Uuid::new_v4(), TTL)
        .await;
    let pinged = d.ping().await;
    let elapsed = start.elapsed();
    assert!(
        matches!(looked, Err(DedupeError::Unavailable(_))),
        "{looked:?}"
    );
    assert!(
        matches!(remembered, Err(DedupeError::Unavailable(_))),
        "{remembered:?}"
    );
    assert!(
        matches!(pinged, Err(DedupeError::Unavailable(_))),
        "{pinged:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn bad_url_is_refused() {
    let err = RedisDedupe::connect("redis://[not-a-host")
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, DedupeError::BadUrl(_)), "{err:?}");
}

#[tokio::test]
async fn recovers_by_itself_when_redis_returns() {
    with_keys(|keys| async move {
        let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), redis_addr()).await;
        let addr = relay.addr;
        let d = RedisDedupe::connect(&format!("redis://{addr}"))
            .await
            .expect("connect");
        let key = keys.key("k");
        let id = Uuid::new_v4();
        d.remember(&key, id, TTL).await.expect("remember while up");

        relay.stop().await;
        // The client notices the closed connection within a few tries; every call while
        // down fails quickly instead of queuing.
        let mut down = false;
        for _ in 0..30 {
            let start = Instant::now();
            let r = d.lookup(&key).await;
            assert!(start.elapsed() < Duration::from_secs(1), "slow failure");
            if matches!(r, Err(DedupeError::Unavailable(_))) {
                down = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(down, "calls kept succeeding with Redis unreachable");

        let relay = Relay::start(addr, redis_addr()).await;
        let mut back = None;
        for _ in 0..100 {
            if let Ok(v) = d.lookup(&key).await {
                back = Some(v);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            back,
            Some(Some(id)),
            "did not recover within 10 s of Redis returning"
        );
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dropping_the_backend_closes_its_connection() {
    require_redis().await;
    let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), redis_addr()).await;
    let d = RedisDedupe::connect(&format!("redis://{}", relay.addr))
        .await
        .expect("connect");
    d.ping().await.expect("ping");
    assert!(
        relay.open_connections() >= 1,
        "no relayed connection while in use"
    );
    drop(d);
    assert!(
        relay.all_closed_within(Duration::from_millis(2500)).await,
        "connection still open 2.5 s after drop"
    );
    relay.stop().await;
}
