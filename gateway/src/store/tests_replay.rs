//! The replay part of the [`Store`] contract, on both backends like the rest of the suite
//! (`store::tests_replay::sqlite::<case>` and `store::tests_replay::postgres::<case>`):
//! re-mapping records, the dead-letter queue and its re-queueing, replay jobs.

use std::sync::Arc;

use super::tests::{at, entry, insert_one, on_postgres, on_sqlite, suite, webhook};
use super::*;

suite!(
    remap_adds_new_events_and_the_entry_follows_them,
    failed_or_orphan_remaps_write_only_what_they_should,
    remap_takes_dead_events_out_of_the_queue,
    dead_letter_queue_lists_and_pages_both_kinds,
    requeue_puts_dead_events_back_and_records_it,
    replay_jobs_round_trip_and_page,
    oldest_first_listing_pages_and_filters_by_plugin,
);

fn failed(source: &str, key: &str, seconds: i64) -> NewWebhook {
    let mut w = webhook(source, key, at(seconds), 0);
    w.entry.status = EntryStatus::Failed;
    w.entry.topic = None;
    w.entry.last_error = Some("unknown topic".into());
    w
}

fn new_events(base: Uuid, n: i32) -> Vec<NewEvent> {
    (0..n)
        .map(|seq| NewEvent {
            id: format!("{base}:replayed:{seq}"),
            seq,
            subject: "webhooks.shopify.order.created".into(),
            envelope: Bytes::from(format!("{{\"id\":\"{base}:replayed:{seq}\"}}")),
            body_at: None,
        })
        .collect()
}

fn remap_record(entry_id: Uuid, events: &[NewEvent], error: Option<&str>) -> ReplayRecord {
    ReplayRecord {
        id: Uuid::now_v7(),
        entry_id,
        job_id: None,
        kind: ReplayKind::Remap,
        requested_at: at(100),
        requested_by: "token:0123abcd".into(),
        plugin: Some(PluginRef {
            name: "shopify".into(),
            version: "1.2.4".into(),
            sha256: "ab".repeat(32),
        }),
        event_ids: events.iter().map(|e| e.id.clone()).collect(),
        outcome: match (error, events.is_empty()) {
            (Some(_), _) => ReplayOutcome::Failed,
            (None, true) => ReplayOutcome::NoEvents,
            (None, false) => ReplayOutcome::Queued,
        },
        error: error.map(str::to_owned),
    }
}

fn requester() -> Requester {
    Requester {
        job_id: None,
        requested_at: at(200),
        requested_by: "token:0123abcd".into(),
    }
}

async fn replays_of(store: &Arc<dyn Store>, entry_id: Uuid) -> Vec<ReplayRecord> {
    let filter = ReplayFilter {
        entry_id: Some(entry_id),
        ..ReplayFilter::default()
    };
    store
        .list_replays(&filter, None, 100)
        .await
        .expect("list_replays")
}

async fn all_dead_letters(store: &Arc<dyn Store>, filter: &DeadFilter) -> Vec<DeadLetter> {
    store
        .dead_letters(filter, None, 1000)
        .await
        .expect("dead_letters")
}

async fn remap_adds_new_events_and_the_entry_follows_them(store: Arc<dyn Store>) {
    let w = failed("shopify", "k-failed", 1);
    insert_one(&store, &w).await;
    assert_eq!(
        entry(&store, w.entry.id).await.0.status,
        EntryStatus::Failed
    );

    let events = new_events(Uuid::now_v7(), 2);
    let record = remap_record(w.entry.id, &events, None);
    let remapped = Remapped {
        topic: Some("orders/create".into()),
        tenant: Some("shop-9.myshopify.com".into()),
        events: events.clone(),
        body: w.entry.body.clone(),
    };
    assert!(
        store
            .record_remap(&record, Some(&remapped))
            .await
            .expect("record_remap")
    );
    let (stored, stored_events) = entry(&store, w.entry.id).await;
    assert_eq!(
        stored.status,
        EntryStatus::Accepted,
        "follows its pending events"
    );
    assert_eq!(stored.last_error, None);
    assert_eq!(stored.topic.as_deref(), Some("orders/create"));
    assert_eq!(stored.tenant.as_deref(), Some("shop-9.myshopify.com"));
    let ids: Vec<&str> = stored_events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [events[0].id.as_str(), events[1].id.as_str()]);
    assert!(
        stored_events
            .iter()
            .all(|e| e.status == EventStatus::Pending)
    );
    assert_eq!(stored_events[1].envelope, events[1].envelope);
    // Due from the replay's time, not the webhook's arrival.
    let due = store.due_events(at(99), 100).await.expect("due");
    assert!(due.events.is_empty(), "{due:?}");
    let due = store.due_events(at(100), 100).await.expect("due");
    assert_eq!(due.events.len(), 2);
    assert!(due.events.iter().all(|e| e.created_at == at(100)));

    store
        .mark_published(&[events[0].id.clone(), events[1].id.clone()], at(101))
        .await
        .expect("publish");
    assert_eq!(
        entry(&store, w.entry.id).await.0.status,
        EntryStatus::Published
    );
    assert_eq!(replays_of(&store, w.entry.id).await, vec![record.clone()]);

    // A second replay keeps the first one's events and goes after them.
    let again = new_events(Uuid::now_v7(), 1);
    let second = remap_record(w.entry.id, &again, None);
    let remapped = Remapped {
        events: again.clone(),
        ..remapped
    };
    assert!(
        store
            .record_remap(&second, Some(&remapped))
            .await
            .expect("again")
    );
    let (stored, stored_events) = entry(&store, w.entry.id).await;
    assert_eq!(stored.status, EntryStatus::Accepted);
    assert_eq!(stored_events.len(), 3);
    assert_eq!(stored_events[2].id, again[0].id);
    assert_eq!(stored_events[2].seq, 2);
    assert_eq!(replays_of(&store, w.entry.id).await, vec![record, second]);
}

async fn failed_or_orphan_remaps_write_only_what_they_should(store: Arc<dyn Store>) {
    let w = failed("shopify", "k-still-failing", 1);
    insert_one(&store, &w).await;
    let record = remap_record(w.entry.id, &[], Some("still an unknown topic"));
    assert!(store.record_remap(&record, None).await.expect("record"));
    let (stored, events) = entry(&store, w.entry.id).await;
    assert_eq!(stored.status, EntryStatus::Failed, "stays failed");
    assert_eq!(stored.last_error.as_deref(), Some("unknown topic"));
    assert!(events.is_empty());
    assert_eq!(replays_of(&store, w.entry.id).await, vec![record]);

    // An entry deleted meanwhile: nothing written, not even the record.
    let ghost = Uuid::now_v7();
    let events = new_events(ghost, 1);
    let remapped = Remapped {
        topic: None,
        tenant: None,
        events: events.clone(),
        body: Bytes::new(),
    };
    let orphan = remap_record(ghost, &events, None);
    assert!(
        !store
            .record_remap(&orphan, Some(&remapped))
            .await
            .expect("orphan")
    );
    assert!(replays_of(&store, ghost).await.is_empty());
    assert!(
        store
            .due_events(at(1000), 100)
            .await
            .expect("due")
            .events
            .is_empty()
    );

    // Mapped to nothing: the entry is done.
    let nothing = remap_record(w.entry.id, &[], None);
    let remapped = Remapped {
        topic: Some("orders/create".into()),
        tenant: None,
        events: Vec::new(),
        body: w.entry.body.clone(),
    };
    assert!(
        store
            .record_remap(&nothing, Some(&remapped))
            .await
            .expect("none")
    );
    assert_eq!(
        entry(&store, w.entry.id).await.0.status,
        EntryStatus::Published
    );
}

async fn remap_takes_dead_events_out_of_the_queue(store: Arc<dyn Store>) {
    let w = webhook("shopify", "k-dead", at(1), 1);
    insert_one(&store, &w).await;
    let old = w.events[0].id.clone();
    store.mark_dead(&old, "no stream").await.expect("dead");
    assert_eq!(entry(&store, w.entry.id).await.0.status, EntryStatus::Dead);
    assert_eq!(store.outbox_stats().await.expect("stats").dead, 1);

    let events = new_events(Uuid::now_v7(), 1);
    let record = remap_record(w.entry.id, &events, None);
    let remapped = Remapped {
        topic: Some("orders/create".into()),
        tenant: None,
        events: events.clone(),
        body: w.entry.body.clone(),
    };
    assert!(
        store
            .record_remap(&record, Some(&remapped))
            .await
            .expect("remap")
    );
    let (stored, stored_events) = entry(&store, w.entry.id).await;
    assert_eq!(stored.status, EntryStatus::Accepted);
    // The old event is kept, still dead, but no longer in the queue: re-queueing it would
    // publish the old mapping beside the new one.
    assert_eq!(stored_events[0].id, old);
    assert_eq!(stored_events[0].status, EventStatus::Dead);
    assert_eq!(stored_events[1].id, events[0].id);
    assert!(
        all_dead_letters(&store, &DeadFilter::default())
            .await
            .is_empty()
    );
    assert_eq!(store.outbox_stats().await.expect("stats").dead, 0);
    let page = store
        .requeue_dead(&DeadFilter::default(), None, 100, &requester())
        .await
        .expect("requeue");
    assert!(page.records.is_empty() && page.last.is_none());
}

/// Two dead events of one shopify entry, one dead stripe event, one failed webhook, one
/// published webhook.
async fn dead_letter_fixture(store: &Arc<dyn Store>) -> (NewWebhook, NewWebhook, NewWebhook) {
    let two = webhook("shopify", "k-two-dead", at(1), 2);
    let one = webhook("stripe", "k-one-dead", at(2), 1);
    let broken = failed("shopify", "k-broken", 3);
    let fine = webhook("shopify", "k-fine", at(4), 1);
    for w in [&two, &one, &broken, &fine] {
        insert_one(store, w).await;
    }
    for event in two.events.iter().chain(&one.events) {
        store.mark_dead(&event.id, "no stream").await.expect("dead");
    }
    store
        .mark_published(&[fine.events[0].id.clone()], at(5))
        .await
        .expect("published");
    (two, one, broken)
}

async fn dead_letter_queue_lists_and_pages_both_kinds(store: Arc<dyn Store>) {
    let (two, one, broken) = dead_letter_fixture(&store).await;
    let all = all_dead_letters(&store, &DeadFilter::default()).await;
    let seen: Vec<(DeadKind, Uuid, Option<String>)> = all
        .iter()
        .map(|d| (d.kind, d.entry_id, d.event_id.clone()))
        .collect();
    let mut two_events: Vec<String> = two.events.iter().map(|e| e.id.clone()).collect();
    two_events.sort();
    assert_eq!(
        seen,
        vec![
            (DeadKind::Webhook, broken.entry.id, None),
            (
                DeadKind::Event,
                one.entry.id,
                Some(one.events[0].id.clone())
            ),
            (DeadKind::Event, two.entry.id, Some(two_events[1].clone())),
            (DeadKind::Event, two.entry.id, Some(two_events[0].clone())),
        ],
        "newest first"
    );
    let dead_event = &all[1];
    assert_eq!(dead_event.source, "stripe");
    assert_eq!(dead_event.last_error.as_deref(), Some("no stream"));
    assert_eq!(dead_event.received_at, at(2));
    assert_eq!(all[0].last_error.as_deref(), Some("unknown topic"));

    // Pages of one, each after the last, give the same list.
    let mut paged = Vec::new();
    let mut after: Option<DeadCursor> = None;
    for _ in 0..10 {
        let page = store
            .dead_letters(&DeadFilter::default(), after.as_ref(), 1)
            .await
            .expect("page");
        let Some(item) = page.into_iter().next() else {
            break;
        };
        after = Some(item.cursor());
        paged.push(item);
    }
    assert_eq!(paged, all);

    let only = |filter: DeadFilter| {
        let store = store.clone();
        async move { all_dead_letters(&store, &filter).await.len() }
    };
    let webhooks = DeadFilter {
        kind: Some(DeadKind::Webhook),
        ..DeadFilter::default()
    };
    assert_eq!(only(webhooks).await, 1);
    let events = DeadFilter {
        kind: Some(DeadKind::Event),
        ..DeadFilter::default()
    };
    assert_eq!(only(events).await, 3);
    let stripe = DeadFilter {
        source: Some("stripe".into()),
        ..DeadFilter::default()
    };
    assert_eq!(only(stripe).await, 1);
    let window = DeadFilter {
        since: Some(at(2)),
        until: Some(at(3)),
        ..DeadFilter::default()
    };
    assert_eq!(only(window).await, 1);
}

async fn requeue_puts_dead_events_back_and_records_it(store: Arc<dyn Store>) {
    let (two, one, broken) = dead_letter_fixture(&store).await;
    // One event by id: its entry keeps its other dead event, so it stays dead.
    let first = two.events[0].id.clone();
    let by_id = DeadFilter {
        event_id: Some(first.clone()),
        ..DeadFilter::default()
    };
    let page = store
        .requeue_dead(&by_id, None, 1, &requester())
        .await
        .expect("requeue one");
    assert_eq!(page.records.len(), 1);
    let record = &page.records[0];
    assert_eq!(record.entry_id, two.entry.id);
    assert_eq!(record.event_ids, vec![first.clone()]);
    assert_eq!(record.kind, ReplayKind::Requeue);
    assert_eq!(record.outcome, ReplayOutcome::Requeued);
    let (stored, events) = entry(&store, two.entry.id).await;
    assert_eq!(
        stored.status,
        EntryStatus::Dead,
        "its other event is still dead"
    );
    let requeued = events.iter().find(|e| e.id == first).expect("event");
    assert_eq!(requeued.status, EventStatus::Pending);
    assert_eq!(requeued.attempts, 0);
    assert_eq!(requeued.next_attempt_at, Some(at(200)));
    // The same id again: it is no longer dead.
    let again = store
        .requeue_dead(&by_id, None, 1, &requester())
        .await
        .expect("requeue again");
    assert!(again.records.is_empty());

    // The rest, a page of one at a time, oldest first.
    let mut taken = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store
            .requeue_dead(&DeadFilter::default(), after.as_ref(), 1, &requester())
            .await
            .expect("requeue page");
        let Some(last) = page.last else {
            break;
        };
        after = Some(last);
        taken.extend(page.records.into_iter().flat_map(|r| r.event_ids));
    }
    assert_eq!(
        taken,
        vec![two.events[1].id.clone(), one.events[0].id.clone()]
    );
    for w in [&two, &one] {
        assert_eq!(
            entry(&store, w.entry.id).await.0.status,
            EntryStatus::Accepted
        );
        assert_eq!(
            replays_of(&store, w.entry.id).await.len(),
            if w.entry.id == two.entry.id { 2 } else { 1 }
        );
    }
    assert_eq!(store.outbox_stats().await.expect("stats").dead, 0);
    // Only the failed webhook is left in the queue: re-queueing does not re-map.
    let left = all_dead_letters(&store, &DeadFilter::default()).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry_id, broken.entry.id);
    // Due again, with the budget counting from the re-queue.
    let due = store.due_events(at(200), 100).await.expect("due");
    assert_eq!(due.events.len(), 3);
    assert!(
        due.events
            .iter()
            .all(|e| e.attempts == 0 && e.created_at == at(200))
    );
}

async fn replay_jobs_round_trip_and_page(store: Arc<dyn Store>) {
    let mut jobs = Vec::new();
    for n in 0..3 {
        let job = ReplayJob {
            id: Uuid::now_v7(),
            kind: if n == 1 {
                JobKind::Dlq
            } else {
                JobKind::Webhooks
            },
            filter: format!("{{\"source\":\"s{n}\"}}"),
            requested_by: "token:0123abcd".into(),
            status: JobStatus::Queued,
            progress: JobProgress::default(),
            created_at: at(n),
            updated_at: at(n),
            finished_at: None,
            error: None,
        };
        store.save_replay_job(&job).await.expect("insert job");
        jobs.push(job);
    }
    assert_eq!(
        store.get_replay_job(jobs[0].id).await.expect("get"),
        Some(jobs[0].clone())
    );
    jobs[0].status = JobStatus::Completed;
    jobs[0].progress = JobProgress {
        processed: 7,
        replayed: 5,
        failed: 2,
        events: 9,
    };
    jobs[0].updated_at = at(50);
    jobs[0].finished_at = Some(at(50));
    jobs[0].error = Some("nothing really".into());
    store.save_replay_job(&jobs[0]).await.expect("update job");
    assert_eq!(
        store.get_replay_job(jobs[0].id).await.expect("get"),
        Some(jobs[0].clone())
    );
    assert_eq!(
        store.get_replay_job(Uuid::now_v7()).await.expect("get"),
        None
    );

    let first = store.list_replay_jobs(None, 2).await.expect("list");
    assert_eq!(
        first,
        vec![jobs[2].clone(), jobs[1].clone()],
        "newest first"
    );
    let rest = store
        .list_replay_jobs(Some(jobs[1].id), 2)
        .await
        .expect("list");
    assert_eq!(rest, vec![jobs[0].clone()]);

    // Records of a job are listed by job.
    let w = failed("shopify", "k-job", 1);
    insert_one(&store, &w).await;
    let mut record = remap_record(w.entry.id, &[], Some("nope"));
    record.job_id = Some(jobs[0].id);
    assert!(store.record_remap(&record, None).await.expect("record"));
    let by_job = ReplayFilter {
        job_id: Some(jobs[0].id),
        ..ReplayFilter::default()
    };
    assert_eq!(
        store.list_replays(&by_job, None, 10).await.expect("by job"),
        vec![record]
    );
    let other = ReplayFilter {
        job_id: Some(jobs[1].id),
        ..ReplayFilter::default()
    };
    assert!(
        store
            .list_replays(&other, None, 10)
            .await
            .expect("other")
            .is_empty()
    );
}

async fn oldest_first_listing_pages_and_filters_by_plugin(store: Arc<dyn Store>) {
    let mut stored = Vec::new();
    for n in 0..5 {
        let mut w = webhook("shopify", &format!("k-order-{n}"), at(n), 1);
        w.entry.plugin_version = if n % 2 == 0 { "1.2.3" } else { "1.2.4" }.into();
        insert_one(&store, &w).await;
        stored.push(w.entry.id);
    }
    let mut other = webhook("stripe", "k-other-plugin", at(9), 1);
    other.entry.plugin = "stripe".into();
    other.entry.plugin_version = "7.0.0".into();
    insert_one(&store, &other).await;

    let walk = |filter: EntryFilter| {
        let store = store.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = None;
            for _ in 0..20 {
                let page = store
                    .list_entries_oldest_first(&filter, after, 2)
                    .await
                    .expect("page");
                let Some(last) = page.last() else {
                    break;
                };
                after = Some(Cursor {
                    received_at: last.received_at,
                    id: last.id,
                });
                seen.extend(page.iter().map(|e| e.id));
            }
            seen
        }
    };
    let shopify = EntryFilter {
        source: Some("shopify".into()),
        ..EntryFilter::default()
    };
    assert_eq!(
        walk(shopify).await,
        stored,
        "oldest first, no gap, no repeat"
    );
    let old_version = EntryFilter {
        plugin_version: Some("1.2.3".into()),
        ..EntryFilter::default()
    };
    assert_eq!(
        walk(old_version).await,
        vec![stored[0], stored[2], stored[4]]
    );
    let by_plugin = EntryFilter {
        plugin: Some("stripe".into()),
        ..EntryFilter::default()
    };
    assert_eq!(walk(by_plugin).await, vec![other.entry.id]);
    // The newest-first listing takes the same filters.
    let newest = store
        .list_entries(
            &EntryFilter {
                plugin_version: Some("1.2.4".into()),
                ..EntryFilter::default()
            },
            None,
            10,
        )
        .await
        .expect("list");
    let ids: Vec<Uuid> = newest.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![stored[3], stored[1]]);
}
