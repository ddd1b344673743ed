//! Fault tests: a dependency dies mid-run and nothing acknowledged is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::child::*;
use crate::support::*;

/// NATS is down from the start: ingestion goes on, events wait in the outbox, survive a
/// gateway restart, and drain once NATS is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_survives_a_nats_outage_and_a_gateway_restart() {
    let mut nats = OwnNats::reserve();
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    let mut harness = Harness::start(options.clone()).await;
    let mut accepted = Vec::new();
    for n in 0..20 {
        let reply = harness
            .post(&shopify_order(&format!(
                "outage-{n}-{}",
                uuid::Uuid::new_v4()
            )))
            .await;
        assert_eq!(
            reply.status, 200,
            "accepted while NATS is down: {:?}",
            reply.body
        );
        accepted.push(reply.json()["id"].as_str().expect("id").to_owned());
    }
    let health = harness
        .client
        .get(&harness.url("/api/v1/health"), &[])
        .await
        .expect("health")
        .json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        harness
            .client
            .get(&harness.url("/api/v1/health/ready"), &[])
            .await
            .expect("ready")
            .status,
        200
    );
    harness.stop().await;

    nats.start().await;
    let mut restarted = options;
    restarted.reuse = Some(harness.names.clone());
    let second = Harness::start(restarted).await;
    let drained = eventually(Duration::from_secs(30), || async {
        (nats.count(&second.names.stream).await >= 20).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "all 20 events published after recovery, got {}",
        nats.count(&second.names.stream).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        nats.count(&second.names.stream).await,
        20,
        "each event exactly once in the stream"
    );
    let published = eventually(Duration::from_secs(10), || async {
        let page = second
            .admin_get("/api/v1/admin/webhooks?status=published&limit=100")
            .await
            .json();
        (page["items"].as_array().map(Vec::len) == Some(20)).then_some(())
    })
    .await;
    assert!(published.is_some(), "every entry marked published");
    drop(harness);
    second.cleanup().await;
}

/// NATS is killed in the middle of a run and restarted: every acknowledged webhook's
/// event ends up in the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_run_loses_nothing() {
    let mut nats = OwnNats::reserve();
    nats.start().await;
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    let harness = Harness::start(options).await;
    let mut acknowledged = 0u64;
    for n in 0..30 {
        if n == 10 {
            nats.kill();
        }
        if n == 20 {
            nats.start().await;
        }
        let reply = harness
            .post(&stripe_payment(&format!(
                "evt_kill_{n}_{}",
                uuid::Uuid::new_v4().simple()
            )))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        acknowledged += 1;
    }
    let drained = eventually(Duration::from_secs(40), || async {
        (nats.count(&harness.names.stream).await >= acknowledged).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "{} of {acknowledged} events published",
        nats.count(&harness.names.stream).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(nats.count(&harness.names.stream).await, acknowledged);
    harness.cleanup().await;
}

/// Redis unreachable: ingestion goes on and storage still refuses the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_still_one_entry_per_webhook() {
    let redis = Cuttable::start(&services().redis.address).await;
    let mut options = Options::new(Backend::Production);
    options.redis_url = Some(services().redis.url_via(&redis.address()));
    let harness = Harness::start(options).await;
    redis.cut();
    let event_id = uuid::Uuid::new_v4().to_string();
    let first = harness.post(&shopify_order(&event_id)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.json()["status"], "accepted");
    let second = harness.post(&shopify_order(&event_id)).await;
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(second.json()["id"], first.json()["id"]);
    let health = harness
        .client
        .get(&harness.url("/api/v1/health"), &[])
        .await
        .expect("health")
        .json();
    assert_eq!(health["dedupe"]["status"], "down", "{health}");
    assert_eq!(
        stream_messages(&harness.names.stream, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    redis.restore();
    harness.cleanup().await;
}

/// PostgreSQL unreachable: 503 and nothing remembered, so the sender's retry gets through
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_is_503_and_the_retry_is_accepted() {
    let postgres = Cuttable::start(&services().postgres.address).await;
    let mut options = Options::new(Backend::Production);
    options.storage_url = Some(services().postgres.url_via(&postgres.address()));
    let harness = Harness::start(options).await;
    postgres.cut();
    let webhook = shopify_order(&uuid::Uuid::new_v4().to_string());
    let reply = harness.post(&webhook).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "storage_unavailable");
    let ready = harness
        .client
        .get(&harness.url("/api/v1/health/ready"), &[])
        .await
        .expect("ready");
    assert_eq!(ready.status, 503);

    postgres.restore();
    let retried = eventually(Duration::from_secs(20), || async {
        let reply = harness.post(&webhook).await;
        (reply.status == 200).then_some(reply)
    })
    .await
    .expect("the retry is accepted once storage is back");
    assert_eq!(
        retried.json()["status"],
        "accepted",
        "the failed attempt was not remembered as seen"
    );
    assert_eq!(
        stream_messages(&harness.names.stream, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    harness.cleanup().await;
}

/// A dependency of the gateway that a test stops and starts again.
enum Dependency {
    Nats(OwnNats),
    Redis(OwnRedis),
    Postgres(OwnPostgres),
}

impl Dependency {
    fn stop(&mut self) {
        match self {
            // SIGTERM: JetStream writes what it acknowledged before it exits. (A SIGKILL
            // can lose the last acknowledged messages, which would be NATS's loss, not the
            // gateway's; `nats_killed_mid_run_loses_nothing` covers the kill.)
            Dependency::Nats(nats) => nats.stop(),
            Dependency::Redis(redis) => redis.kill(),
            Dependency::Postgres(postgres) => postgres.stop(),
        }
    }

    async fn restart(&mut self) {
        match self {
            Dependency::Nats(nats) => nats.start().await,
            Dependency::Redis(redis) => redis.restart().await,
            Dependency::Postgres(postgres) => postgres.restart().await,
        }
    }
}

/// What a load around one outage showed.
struct Outage {
    keys: Vec<String>,
    webhooks: Vec<hookgate::sample::SignedWebhook>,
    outcomes: Vec<Outcome>,
    /// Answers (any status) and acknowledgements while the dependency was down.
    answered_during: usize,
    acked_during: usize,
    down_for: Duration,
    /// From the restart of the dependency to the next acknowledgement.
    next_ack_after: Duration,
    restarted_at: Instant,
    /// The longest any sender waited for an answer.
    slowest: Duration,
}

/// 16 paced senders (a bounded list of distinct webhooks, a bounded time); after 100
/// acknowledgements the dependency stops for `down`, then comes back; the senders go on
/// 2 s more. The gateway is never restarted.
async fn outage_under_load(
    harness: &Harness,
    dependency: &mut Dependency,
    down: Duration,
    tag: &str,
) -> Outage {
    let (keys, webhooks): (Vec<_>, Vec<_>) = orders(tag, 3000).into_iter().unzip();
    let mut load = Load::new(vec![harness.base.clone()], 16);
    load.pace = Duration::from_millis(50);
    load.limit = Duration::from_secs(40);
    load.request_timeout = Duration::from_secs(20);
    let running = load.start(Arc::new(webhooks.clone()));
    assert!(
        running.wait_acked(100, Duration::from_secs(30)).await,
        "100 acknowledgements before the outage"
    );
    let (answered, acked) = (
        running.answered.load(Ordering::Acquire),
        running.acked.load(Ordering::Acquire),
    );
    let stopped = Instant::now();
    dependency.stop();
    tokio::time::sleep(down).await;
    let answered_during = running.answered.load(Ordering::Acquire) - answered;
    let acked_during = running.acked.load(Ordering::Acquire) - acked;
    dependency.restart().await;
    let restarted_at = Instant::now();
    let down_for = restarted_at - stopped;
    let acked_at_restart = running.acked.load(Ordering::Acquire);
    assert!(
        running
            .wait_acked(acked_at_restart + 1, Duration::from_secs(20))
            .await,
        "acknowledgements resume after the restart, without restarting the gateway"
    );
    let next_ack_after = restarted_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop();
    let slowest = Duration::from_millis(running.slowest_ms.load(Ordering::Acquire));
    let outcomes = running.finish().await;
    Outage {
        keys,
        webhooks,
        outcomes,
        answered_during,
        acked_during,
        down_for,
        next_ack_after,
        restarted_at,
        slowest,
    }
}

/// NATS stopped and started again under load: every webhook is acknowledged meanwhile
/// (events wait in the outbox), and once it is back each stored event is in the stream
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_under_load_loses_nothing() {
    let started = Instant::now();
    let mut nats = OwnNats::reserve();
    nats.start().await;
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    let harness = Harness::start(options).await;
    let _sweeper = Sweeper::of(&harness);
    let mut dependency = Dependency::Nats(nats);
    let outage = outage_under_load(
        &harness,
        &mut dependency,
        Duration::from_secs(3),
        "nats-outage",
    )
    .await;
    let tally = Tally::of(&outage.outcomes);
    assert_eq!(
        tally.by_status.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "NATS down does not stop ingestion: {tally:?}"
    );
    assert_eq!(tally.no_answer, 0, "{tally:?}");
    assert!(outage.acked_during > 0, "acknowledged while NATS was down");
    let ledger = Ledger::of(&harness);
    let (raw, distinct, events) = assert_exactly_once(
        &ledger,
        &outage.keys,
        &outage.outcomes,
        Duration::from_secs(40),
    )
    .await;
    eprintln!(
        "NATS down {:?} under load: {} answered meanwhile, all 200 (slowest {:?}); next ack \
         {:?} after the restart; all published {:?} after it: {raw} messages, {distinct} distinct ids, \
         {events} events; {tally:?}; total {:?}",
        outage.down_for,
        outage.answered_during,
        outage.slowest,
        outage.next_ack_after,
        outage.restarted_at.elapsed(),
        started.elapsed()
    );
    harness.cleanup().await;
}

/// Redis stopped (its keys gone with it) and started again under load: ingestion goes on,
/// a duplicate sent during the outage is still recognised, one entry per webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_load_loses_nothing() {
    let started = Instant::now();
    let redis = OwnRedis::start().await;
    let mut options = Options::new(Backend::Production);
    options.redis_url = Some(redis.url());
    let harness = Harness::start(options).await;
    let _sweeper = Sweeper::of(&harness);
    let mut dependency = Dependency::Redis(redis);
    let outage = outage_under_load(
        &harness,
        &mut dependency,
        Duration::from_secs(3),
        "redis-outage",
    )
    .await;
    let tally = Tally::of(&outage.outcomes);
    assert_eq!(
        tally.by_status.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "Redis down does not stop ingestion: {tally:?}"
    );
    assert_eq!(tally.no_answer, 0, "{tally:?}");
    assert!(outage.acked_during > 0, "acknowledged while Redis was down");
    // Redis came back empty: the storage still knows every webhook.
    for n in 0..20 {
        let reply = harness.post(&outage.webhooks[n]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.json()["status"], "duplicate");
        assert_eq!(
            reply.json()["id"].as_str(),
            outage.outcomes[n].acknowledged()
        );
    }
    let ledger = Ledger::of(&harness);
    let (raw, distinct, events) = assert_exactly_once(
        &ledger,
        &outage.keys,
        &outage.outcomes,
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "Redis down {:?} under load: {} answered meanwhile, all 200 (slowest {:?}); next ack \
         {:?} after the restart; {raw} messages, {distinct} distinct ids, {events} events; {tally:?}; \
         total {:?}",
        outage.down_for,
        outage.answered_during,
        outage.slowest,
        outage.next_ack_after,
        started.elapsed()
    );
    harness.cleanup().await;
}

/// PostgreSQL stopped (a fast shutdown of a server of the test's own) and started again
/// under load: 503 `storage_unavailable` meanwhile, never a 2xx for an unstored webhook;
/// ingestion resumes by itself, and the 503s' retries are accepted, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load_loses_nothing() {
    let started = Instant::now();
    let postgres = OwnPostgres::start().await;
    let mut options = Options::new(Backend::Production);
    options.storage_url = Some(postgres.url());
    let harness = Harness::start(options).await;
    let _sweeper = Sweeper::of(&harness);
    let mut dependency = Dependency::Postgres(postgres);
    // Longer than the pool's acquire timeout (3 s): requests that wait for a connection
    // turn into 503s rather than only being delayed.
    let outage = outage_under_load(
        &harness,
        &mut dependency,
        Duration::from_secs(7),
        "pg-outage",
    )
    .await;
    let tally = Tally::of(&outage.outcomes);
    let statuses: Vec<u16> = tally.by_status.keys().copied().collect();
    assert_eq!(
        statuses,
        vec![200, 503],
        "200 or 503 only, and 503s while PostgreSQL was down: {tally:?}"
    );
    assert_eq!(
        tally.no_answer, 0,
        "a down database is a 503, not a hang: {tally:?}"
    );
    let mut refused = Vec::new();
    for (n, outcome) in outage.outcomes.iter().enumerate() {
        if let Outcome::Answered {
            status: 503, body, ..
        } = outcome
        {
            assert_eq!(body["error"], "storage_unavailable", "{body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            refused.push(n);
        }
    }
    // The senders retry what was refused.
    let resend: Vec<_> = refused
        .iter()
        .map(|n| outage.webhooks[*n].clone())
        .collect();
    let retried = Load::new(vec![harness.base.clone()], 16)
        .start(Arc::new(resend))
        .finish()
        .await;
    let mut all = outage.outcomes.clone();
    let mut stored_despite_503 = 0;
    for (n, outcome) in refused.iter().zip(retried) {
        let Outcome::Answered {
            status: 200,
            ref body,
            ..
        } = outcome
        else {
            panic!("the retry of a 503 is accepted: {outcome:?}");
        };
        if body["status"] == "duplicate" {
            stored_despite_503 += 1;
        }
        all[*n] = outcome;
    }
    let ledger = Ledger::of(&harness);
    let (raw, distinct, events) =
        assert_exactly_once(&ledger, &outage.keys, &all, Duration::from_secs(30)).await;
    eprintln!(
        "PostgreSQL down {:?} under load: {} answered meanwhile ({} of them 2xx), {} \
         503s in all ({stored_despite_503} of them stored all the same: the commit landed, \
         the answer did not); slowest answer {:?}; next ack {:?} after the restart; {raw} messages, \
         {distinct} distinct ids, {events} events; {tally:?}; total {:?}",
        outage.down_for,
        outage.answered_during,
        outage.acked_during,
        refused.len(),
        outage.slowest,
        outage.next_ack_after,
        started.elapsed()
    );
    harness.cleanup().await;
}
