//! Crash proofs: the real binary SIGKILLed in the middle of a concurrent load, alone or as
//! one of several instances sharing a schema, a dedupe namespace and a stream. Nothing
//! acknowledged is lost and every stored event reaches JetStream exactly once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::child::*;
use crate::support::*;

/// One gateway, 500 distinct webhooks over 48 connections, SIGKILL after 150 answers;
/// restarted on the same config, it publishes what the dead one left, and the webhooks
/// that got no answer are accepted on their re-send, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_nothing_acknowledged_and_publishes_once() {
    const WEBHOOKS: usize = 500;
    const KILL_AFTER: usize = 150;
    let started = Instant::now();
    let scratch = Scratch::production(Options::new(Backend::Production));
    let mut gateway = ChildGateway::start(&scratch.config(), &scratch.log("gateway")).await;
    let (keys, webhooks): (Vec<_>, Vec<_>) = orders("crash", WEBHOOKS).into_iter().unzip();
    let webhooks = Arc::new(webhooks);

    let mut load = Load::new(vec![gateway.base.clone()], 48);
    load.limit = Duration::from_secs(40);
    load.request_timeout = Duration::from_secs(10);
    let load_began = Instant::now();
    let running = load.start(webhooks.clone());
    assert!(
        running
            .wait_acked(KILL_AFTER, Duration::from_secs(40))
            .await,
        "{KILL_AFTER} acknowledgements before the kill:\n{}",
        tail(&gateway.log, 20)
    );
    let pid = gateway.pid();
    gateway.kill();
    let killed_after = load_began.elapsed();
    let acked_at_kill = running.acked.load(Ordering::Acquire);
    running.stop();
    let outcomes = running.finish().await;
    let before = Tally::of(&outcomes);
    assert_eq!(
        before.by_status.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every answer before the kill is 200: {before:?}"
    );
    let unanswered: Vec<usize> = (0..WEBHOOKS)
        .filter(|n| outcomes[*n].acknowledged().is_none())
        .collect();
    let in_flight = unanswered
        .iter()
        .filter(|n| matches!(outcomes[**n], Outcome::NoAnswer(_)))
        .count();
    let pending_at_kill = scratch
        .ledger
        .events()
        .await
        .iter()
        .filter(|(_, _, status)| status == "pending")
        .count();

    let restart_began = Instant::now();
    gateway.restart().await;
    let restart_took = restart_began.elapsed();
    let (raw, distinct, events) =
        assert_exactly_once(&scratch.ledger, &keys, &outcomes, Duration::from_secs(30)).await;
    let drained_in = restart_began.elapsed();
    // What the dead process left: stored, but never answered. Read only now: a COMMIT it
    // sent just before dying still lands after the kill.
    let entries = scratch.ledger.entries().await;
    let stored_unanswered = unanswered
        .iter()
        .filter(|n| entries.contains_key(&keys[**n]))
        .count();

    // The senders' retries of everything unanswered (and never sent).
    let resend: Vec<_> = unanswered.iter().map(|n| webhooks[*n].clone()).collect();
    let mut retry = Load::new(vec![gateway.base.clone()], 16);
    retry.limit = Duration::from_secs(30);
    let retried = retry.start(Arc::new(resend)).finish().await;
    let mut all = outcomes.clone();
    let mut duplicates = 0;
    for (n, outcome) in unanswered.iter().zip(&retried) {
        let id = outcome
            .acknowledged()
            .unwrap_or_else(|| panic!("the re-send of {} is accepted: {outcome:?}", keys[*n]));
        let Outcome::Answered { body, .. } = outcome else {
            unreachable!("acknowledged, hence answered")
        };
        // Stored without an answer: a duplicate naming that entry; otherwise new.
        if let Some(stored) = entries.get(&keys[*n]) {
            assert_eq!(body["status"], "duplicate", "{body}");
            assert_eq!(id, stored.as_str(), "the re-send names the stored entry");
            duplicates += 1;
        } else {
            assert_eq!(body["status"], "accepted", "{body}");
        }
        all[*n] = outcome.clone();
    }
    let (raw_final, distinct_final, events_final) =
        assert_exactly_once(&scratch.ledger, &keys, &all, Duration::from_secs(30)).await;
    assert_eq!(
        scratch.ledger.entries().await.len(),
        WEBHOOKS,
        "one entry per webhook"
    );
    eprintln!(
        "sigkill (pid {pid}) {:?} into the load: {acked_at_kill} acknowledged at the kill, \
         {} in the end before it, {in_flight} without an answer, {} never sent, \
         {stored_unanswered} stored but unanswered, {pending_at_kill} events pending; \
         restart ready in {restart_took:?}, drained {drained_in:?} after the restart: \
         {raw} messages, {distinct} distinct ids, {events} stored events; re-sent {} \
         ({duplicates} duplicates of stored entries): {raw_final} messages, \
         {distinct_final} distinct ids, {events_final} events; total {:?}",
        killed_after,
        before.acked,
        before.unsent,
        unanswered.len(),
        started.elapsed()
    );
    gateway.terminate(Duration::from_secs(10));
}

/// Two instances behind a round-robin balancer that retries a request without an answer
/// on the other; one loses its NATS connection, goes on accepting, and is SIGKILLed: the
/// survivor's relay publishes what the dead one stored. The dead one stays dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_the_survivor_publishes_its_outbox() {
    instances_with_one_killed(2, false).await;
}

/// Three instances, one SIGKILLed mid-run and restarted while the load goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_and_restarted_publish_once() {
    instances_with_one_killed(3, true).await;
}

async fn instances_with_one_killed(count: usize, restart: bool) {
    const WEBHOOKS: usize = 600;
    let started = Instant::now();
    let scratch = Scratch::production(Options::new(Backend::Production));
    // The victim reaches NATS through a relay the test cuts before the kill, so that it
    // surely holds stored, unpublished events when it dies.
    let nats = Cuttable::start(&services().nats.address).await;
    let mut victim_options = Options::new(Backend::Production);
    victim_options.nats_url = Some(services().nats.url_via(&nats.address()));
    let victim_config = scratch.variant("victim", &victim_options);
    let mut instances = Vec::new();
    // The others first: they create the stream.
    for n in 1..count {
        instances.push(
            ChildGateway::start(&scratch.config(), &scratch.log(&format!("gateway-{n}"))).await,
        );
    }
    instances.insert(
        0,
        ChildGateway::start(&victim_config, &scratch.log("gateway-0")).await,
    );
    let (keys, webhooks): (Vec<_>, Vec<_>) = orders("multi", WEBHOOKS).into_iter().unzip();
    let mut load = Load::new(instances.iter().map(|i| i.base.clone()).collect(), 48);
    load.limit = Duration::from_secs(50);
    load.request_timeout = Duration::from_secs(10);
    load.failover = true;
    // Paced (about 100 a second) so that the load outlasts the kill and the restart.
    load.pace = Duration::from_millis(450);
    let running = load.start(Arc::new(webhooks));
    assert!(
        running.wait_acked(200, Duration::from_secs(40)).await,
        "200 acknowledgements before the cut"
    );
    nats.cut();
    let cut_at = Instant::now();
    assert!(
        running.wait_acked(300, Duration::from_secs(40)).await,
        "300 acknowledgements before the kill"
    );
    let acked_at_kill = running.acked.load(Ordering::Acquire);
    instances[0].kill();
    let killed_at = Instant::now();
    let cut_for = killed_at - cut_at;
    // Pending at the kill: published by nobody yet, or published but not yet recorded.
    let pending_at_kill: Vec<(String, String)> = scratch
        .ledger
        .events()
        .await
        .into_iter()
        .filter(|(_, _, status)| status == "pending")
        .map(|(id, entry, _)| (id, entry))
        .collect();
    let mut restarted = None;
    if restart {
        tokio::time::sleep(Duration::from_millis(500)).await;
        nats.restore();
        let began = Instant::now();
        instances[0].restart().await;
        let acked = running.acked.load(Ordering::Acquire);
        assert!(
            acked < WEBHOOKS,
            "the load still runs when the victim is back"
        );
        restarted = Some((began.elapsed(), acked));
    }
    let outcomes = running.finish().await;
    let tally = Tally::of(&outcomes);
    assert_eq!(
        tally.by_status.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "the survivors answer everything with 200: {tally:?}"
    );
    assert_eq!(
        tally.no_answer, 0,
        "a request the victim did not answer was answered by another instance"
    );
    assert_eq!(tally.unsent, 0, "the load ran to its end: {tally:?}");
    let by_victim = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Answered { target: 0, .. }))
        .count();
    // The pending events of webhooks the victim itself acknowledged: its leftovers, which
    // only another instance (or its own restart) can publish.
    let victim_entries: std::collections::HashSet<&str> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Answered { target: 0, .. }))
        .filter_map(Outcome::acknowledged)
        .collect();
    let left_by_victim = pending_at_kill
        .iter()
        .filter(|(_, entry)| victim_entries.contains(entry.as_str()))
        .count();
    assert!(
        left_by_victim > 0,
        "the victim, cut from NATS, died holding stored unpublished events ({} pending in all)",
        pending_at_kill.len()
    );
    let (raw, distinct, events) =
        assert_exactly_once(&scratch.ledger, &keys, &outcomes, Duration::from_secs(30)).await;
    let drained_in = killed_at.elapsed();
    assert_eq!(
        scratch.ledger.entries().await.len(),
        WEBHOOKS,
        "one entry per webhook"
    );
    assert_eq!(distinct, WEBHOOKS, "one event per webhook, each once");
    eprintln!(
        "{count} instances: victim cut from NATS {cut_for:?} then SIGKILLed at \
         {acked_at_kill} acknowledged (it answered {by_victim}); {} events pending at the \
         kill, {left_by_victim} of them the victim's own; restarted (ready in, acknowledged \
         by then): {restarted:?}; all published {drained_in:?} after the kill: {raw} \
         messages, {distinct} distinct ids, {events} stored events; {tally:?}; total {:?}",
        pending_at_kill.len(),
        started.elapsed()
    );
    for instance in &mut instances {
        instance.terminate(Duration::from_secs(10));
    }
}
