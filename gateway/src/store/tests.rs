//! One behavioural suite for the [`Store`] contract, run against both backends: SQLite in
//! a temporary file and PostgreSQL in a random schema of the test database (dropped at
//! the end, even when the case fails).

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use futures::FutureExt;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::*;

use hookgate_test_services::postgres_url as pg_url;

/// Runs `case` on a fresh, migrated SQLite store in its own temporary directory.
pub(crate) async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_sqlite_store(|store| case(store)).await;
}

/// [`on_sqlite`] for cases that also reach the backend's own tables.
async fn on_sqlite_store<F, Fut>(case: F)
where
    F: FnOnce(Arc<SqliteStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("hookgate.db").display());
    let store = SqliteStore::connect(&url).await.expect("open SQLite");
    store.migrate().await.expect("migrate SQLite");
    case(Arc::new(store)).await;
}

/// Runs `case` on a fresh, migrated PostgreSQL store in a random schema, then drops it.
pub(crate) async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_pg_store(|store| case(store)).await;
}

/// [`on_postgres`] for cases that also reach the backend's own tables.
async fn on_pg_store<F, Fut>(case: F)
where
    F: FnOnce(Arc<PgStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_pg_schema(|store| async move {
        store.migrate().await.expect("migrate PostgreSQL");
        case(store).await;
    })
    .await;
}

/// Runs `case` on a PostgreSQL store in a random schema, not yet migrated, then drops it.
async fn on_pg_schema<F, Fut>(case: F)
where
    F: FnOnce(Arc<PgStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = pg_url();
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let store = match PgStore::connect_with_schema(&url, &schema).await {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("the test run's PostgreSQL at {url} refused a connection: {e}"),
    };
    let pool = store.pool().clone();
    let outcome = AssertUnwindSafe(case(store.clone())).catch_unwind().await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await;
    pool.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("drop test schema");
}

/// Declares each case once per backend: `<module>::sqlite::<case>` and
/// `<module>::postgres::<case>`; the store's other test modules use it too.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on_sqlite(super::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on_postgres(super::$case).await;
                }
            )*
        }
    };
}
pub(crate) use suite;

suite!(
    migrate_is_idempotent_and_concurrent_safe,
    round_trip_keeps_body_bytes_and_header_order,
    duplicate_across_batches_writes_nothing,
    duplicate_within_batch_first_wins,
    outbox_transitions_and_stats,
    published_entry_needs_every_event,
    concurrent_publication_of_sibling_events_publishes_entry,
    list_filters_and_keyset_pagination,
    concurrent_batches_with_same_key_insert_once,
    body_is_stored_once_and_envelopes_read_whole,
    failed_batch_writes_nothing_and_the_store_goes_on,
    postpone_moves_the_next_attempt_without_counting_one,
    purge_removes_only_old_published_entries,
);

// ---------------------------------------------------------------------------------------
// Fixtures

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

/// A body that is not UTF-8: every byte value, NULs and an invalid sequence included.
fn binary_body(tag: &str) -> Bytes {
    let mut body: Vec<u8> = (0..=255u8).collect();
    body.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3, 0x28]);
    body.extend_from_slice(tag.as_bytes());
    Bytes::from(body)
}

pub(crate) fn webhook(
    source: &str,
    key: &str,
    received_at: DateTime<Utc>,
    events: i32,
) -> NewWebhook {
    let id = Uuid::now_v7();
    NewWebhook {
        entry: NewEntry {
            id,
            source: source.to_owned(),
            topic: Some("orders/create".to_owned()),
            tenant: Some("shop-1.myshopify.com".to_owned()),
            idempotency_key: key.to_owned(),
            headers: vec![
                ("x-shopify-topic".to_owned(), "orders/create".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-repeated".to_owned(), "second".to_owned()),
                ("x-repeated".to_owned(), "first".to_owned()),
            ],
            body: binary_body(key),
            received_at,
            status: EntryStatus::Accepted,
            last_error: None,
            plugin: "shopify".to_owned(),
            plugin_version: "1.2.3".to_owned(),
            plugin_sha256: "ab".repeat(32),
            correlation_id: format!("corr-{id}"),
        },
        events: (0..events)
            .map(|seq| NewEvent {
                id: format!("{id}:{seq}"),
                seq,
                subject: format!("webhooks.{source}.order.created"),
                envelope: Bytes::from(format!("{{\"id\":\"{id}:{seq}\",\"n\":{seq}}}")),
                body_at: None,
            })
            .collect(),
    }
}

fn expected_entry(w: &NewWebhook) -> StoredEntry {
    let e = &w.entry;
    StoredEntry {
        id: e.id,
        source: e.source.clone(),
        topic: e.topic.clone(),
        tenant: e.tenant.clone(),
        idempotency_key: e.idempotency_key.clone(),
        headers: e.headers.clone(),
        headers_error: None,
        body: e.body.clone(),
        received_at: e.received_at,
        status: e.status,
        attempts: 0,
        last_error: e.last_error.clone(),
        plugin: e.plugin.clone(),
        plugin_version: e.plugin_version.clone(),
        plugin_sha256: Some(e.plugin_sha256.clone()),
        correlation_id: e.correlation_id.clone(),
    }
}

/// A webhook with a JSON body (trailing newline included) whose one event carries that
/// body as its data, encoded as the pipeline encodes it.
fn webhook_with_body_as_data(key: &str) -> NewWebhook {
    let mut w = webhook("shopify", key, at(0), 0);
    w.entry.body = Bytes::from(format!("{{\"id\":820982911946154500,\"key\":\"{key}\"}}\n"));
    let id = format!("{}:0", w.entry.id);
    let encoded =
        crate::publish::envelope::encode_located(&crate::publish::envelope::EnvelopeInput {
            id: &id,
            source: "shopify",
            event_type: "order.created",
            subject: None,
            time: at(0),
            data: crate::publish::envelope::EventData::Body {
                bytes: &w.entry.body,
                content_type: Some("application/json"),
            },
            correlation_id: "corr",
            webhook_id: w.entry.id,
            tenant: None,
            plugin: "shopify@1.2.3",
        })
        .expect("encode");
    assert!(encoded.body_at.is_some(), "the body is the data");
    w.events = vec![NewEvent {
        id,
        seq: 0,
        subject: "webhooks.shopify.order.created".to_owned(),
        envelope: encoded.bytes,
        body_at: encoded.body_at,
    }];
    w
}

pub(crate) async fn insert_one(store: &Arc<dyn Store>, w: &NewWebhook) {
    let outcome = store
        .insert_batch(std::slice::from_ref(w))
        .await
        .expect("insert");
    assert_eq!(outcome, vec![InsertOutcome::Inserted]);
}

pub(crate) async fn entry(store: &Arc<dyn Store>, id: Uuid) -> (StoredEntry, Vec<StoredEvent>) {
    store
        .get_entry(id)
        .await
        .expect("get_entry")
        .expect("entry exists")
}

async fn due_ids(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Vec<String> {
    store
        .due_events(now, 1000)
        .await
        .expect("due_events")
        .events
        .into_iter()
        .map(|e| e.id)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Cases

async fn migrate_is_idempotent_and_concurrent_safe(store: Arc<dyn Store>) {
    // The harness migrated once already; again, and twice at the same time.
    store.migrate().await.expect("second migrate");
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    a.expect("concurrent migrate a");
    b.expect("concurrent migrate b");
    store.ping().await.expect("ping");
    let w = webhook("shopify", "k-migrate", at(0), 1);
    insert_one(&store, &w).await;
    store.migrate().await.expect("migrate with data");
    assert_eq!(
        store
            .find_by_key("shopify", "k-migrate")
            .await
            .expect("find"),
        Some(w.entry.id),
        "migrating again must keep the data"
    );
}

async fn round_trip_keeps_body_bytes_and_header_order(store: Arc<dyn Store>) {
    let mut w = webhook(
        "shopify",
        "k-round",
        at(0) + chrono::Duration::microseconds(123_456),
        3,
    );
    let mut unmapped = webhook("stripe", "evt_unmapped", at(5), 0);
    unmapped.entry.topic = None;
    unmapped.entry.tenant = None;
    unmapped.entry.status = EntryStatus::Failed;
    unmapped.entry.last_error = Some("unknown topic".to_owned());
    w.entry.body = Bytes::from_static(b"\x00\x01\xff\xfe{\"a\":1}\x80\x81\r\n\x00");
    let outcomes = store
        .insert_batch(&[w.clone(), unmapped.clone()])
        .await
        .expect("insert");
    assert_eq!(
        outcomes,
        vec![InsertOutcome::Inserted, InsertOutcome::Inserted]
    );

    let (stored, events) = entry(&store, w.entry.id).await;
    assert_eq!(stored, expected_entry(&w));
    assert_eq!(
        &stored.body[..],
        b"\x00\x01\xff\xfe{\"a\":1}\x80\x81\r\n\x00"
    );
    assert_eq!(
        stored.headers[2],
        ("x-repeated".to_owned(), "second".to_owned())
    );
    let expected_events: Vec<StoredEvent> = w
        .events
        .iter()
        .map(|e| StoredEvent {
            id: e.id.clone(),
            entry_id: w.entry.id,
            seq: e.seq,
            subject: e.subject.clone(),
            envelope: e.envelope.clone(),
            envelope_error: None,
            status: EventStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(w.entry.received_at),
            published_at: None,
            last_error: None,
        })
        .collect();
    assert_eq!(events, expected_events);

    let (stored, events) = entry(&store, unmapped.entry.id).await;
    assert_eq!(stored, expected_entry(&unmapped));
    assert!(events.is_empty());

    assert_eq!(
        store.find_by_key("shopify", "k-round").await.expect("find"),
        Some(w.entry.id)
    );
    assert_eq!(
        store.find_by_key("stripe", "k-round").await.expect("find"),
        None
    );
    assert!(
        store
            .get_entry(Uuid::new_v4())
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(store.insert_batch(&[]).await.expect("empty batch"), vec![]);
}

async fn duplicate_across_batches_writes_nothing(store: Arc<dyn Store>) {
    let first = webhook("shopify", "k-dup", at(0), 2);
    insert_one(&store, &first).await;

    let again = webhook("shopify", "k-dup", at(10), 3);
    let other_source = webhook("stripe", "k-dup", at(10), 1);
    let fresh = webhook("shopify", "k-fresh", at(10), 1);
    let outcomes = store
        .insert_batch(&[again.clone(), other_source.clone(), fresh.clone()])
        .await
        .expect("insert");
    assert_eq!(
        outcomes,
        vec![
            InsertOutcome::Duplicate {
                existing_id: first.entry.id
            },
            InsertOutcome::Inserted,
            InsertOutcome::Inserted,
        ]
    );
    assert!(
        store
            .get_entry(again.entry.id)
            .await
            .expect("get")
            .is_none()
    );
    let (stored, events) = entry(&store, first.entry.id).await;
    assert_eq!(
        stored.received_at, first.entry.received_at,
        "the first copy is kept"
    );
    assert_eq!(events.len(), 2);
    let due = due_ids(&store, at(100)).await;
    for e in &again.events {
        assert!(
            !due.contains(&e.id),
            "a duplicate's event {} was written",
            e.id
        );
    }
    assert_eq!(due.len(), 2 + 1 + 1);
    assert_eq!(store.outbox_stats().await.expect("stats").pending, 4);
}

async fn duplicate_within_batch_first_wins(store: Arc<dyn Store>) {
    let stored = webhook("shopify", "k-old", at(0), 1);
    insert_one(&store, &stored).await;

    let x = webhook("shopify", "k-x", at(1), 1);
    let x2 = webhook("shopify", "k-x", at(1), 2);
    let y = webhook("shopify", "k-y", at(1), 1);
    let old2 = webhook("shopify", "k-old", at(1), 1);
    let old3 = webhook("shopify", "k-old", at(1), 1);
    let x3 = webhook("shopify", "k-x", at(1), 1);
    let outcomes = store
        .insert_batch(&[
            x.clone(),
            x2.clone(),
            y.clone(),
            old2.clone(),
            old3.clone(),
            x3.clone(),
        ])
        .await
        .expect("insert");
    assert_eq!(
        outcomes,
        vec![
            InsertOutcome::Inserted,
            InsertOutcome::Duplicate {
                existing_id: x.entry.id
            },
            InsertOutcome::Inserted,
            InsertOutcome::Duplicate {
                existing_id: stored.entry.id
            },
            InsertOutcome::Duplicate {
                existing_id: stored.entry.id
            },
            InsertOutcome::Duplicate {
                existing_id: x.entry.id
            },
        ]
    );
    for dup in [&x2, &old2, &old3, &x3] {
        assert!(store.get_entry(dup.entry.id).await.expect("get").is_none());
    }
    let due: HashSet<String> = due_ids(&store, at(100)).await.into_iter().collect();
    let expected: HashSet<String> = [&stored, &x, &y]
        .iter()
        .flat_map(|w| w.events.iter().map(|e| e.id.clone()))
        .collect();
    assert_eq!(due, expected);
}

async fn outbox_transitions_and_stats(store: Arc<dyn Store>) {
    let a = webhook("shopify", "k-a", at(0), 2);
    let b = webhook("shopify", "k-b", at(1), 1);
    let mut c = webhook("shopify", "k-c", at(2), 0);
    c.entry.status = EntryStatus::Failed;
    c.entry.last_error = Some("bad json".to_owned());
    store
        .insert_batch(&[a.clone(), b.clone(), c.clone()])
        .await
        .expect("insert");
    let (a0, a1, b0) = (&a.events[0].id, &a.events[1].id, &b.events[0].id);
    assert_eq!(
        store.outbox_stats().await.expect("stats"),
        OutboxStats {
            pending: 3,
            dead: 0
        }
    );

    // Due from the moment they were received, oldest first, limited.
    assert!(due_ids(&store, at(-1)).await.is_empty());
    assert_eq!(due_ids(&store, at(0)).await, vec![a0.clone(), a1.clone()]);
    assert_eq!(
        due_ids(&store, at(1)).await,
        vec![a0.clone(), a1.clone(), b0.clone()]
    );
    let limited = store.due_events(at(5), 2).await.expect("due").events;
    assert_eq!(limited.len(), 2);
    assert_eq!(
        limited[0],
        OutboxEvent {
            id: a0.clone(),
            entry_id: a.entry.id,
            subject: a.events[0].subject.clone(),
            envelope: a.events[0].envelope.clone(),
            attempts: 0,
            created_at: a.entry.received_at,
        }
    );

    // One of two events published: the entry stays accepted.
    store
        .mark_published(std::slice::from_ref(a0), at(10))
        .await
        .expect("publish");
    let (entry_a, events_a) = entry(&store, a.entry.id).await;
    assert_eq!(entry_a.status, EntryStatus::Accepted);
    assert_eq!(events_a[0].status, EventStatus::Published);
    assert_eq!(events_a[0].published_at, Some(at(10)));
    assert_eq!(events_a[1].status, EventStatus::Pending);
    assert_eq!(due_ids(&store, at(20)).await, vec![a1.clone(), b0.clone()]);

    // A failed attempt: counted on the event and the entry, due again only later.
    store
        .mark_retry(a1, at(60), "nats: timeout")
        .await
        .expect("retry");
    let (entry_a, events_a) = entry(&store, a.entry.id).await;
    assert_eq!(entry_a.attempts, 1);
    assert_eq!(entry_a.last_error.as_deref(), Some("nats: timeout"));
    assert_eq!(events_a[1].attempts, 1);
    assert_eq!(events_a[1].next_attempt_at, Some(at(60)));
    assert_eq!(events_a[1].last_error.as_deref(), Some("nats: timeout"));
    assert_eq!(due_ids(&store, at(59)).await, vec![b0.clone()]);
    let due = store.due_events(at(60), 10).await.expect("due").events;
    assert_eq!(
        due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![b0.as_str(), a1.as_str()]
    );
    assert_eq!(due[1].attempts, 1);
    assert_eq!(
        due[1].created_at, a.entry.received_at,
        "the budget counts from receipt"
    );
    assert_eq!(
        store.outbox_stats().await.expect("stats"),
        OutboxStats {
            pending: 2,
            dead: 0
        }
    );

    // The last event published: the entry is published.
    store
        .mark_published(std::slice::from_ref(a1), at(61))
        .await
        .expect("publish");
    let (entry_a, _) = entry(&store, a.entry.id).await;
    assert_eq!(entry_a.status, EntryStatus::Published);

    // Retry budget exhausted: event and entry dead, out of the due list.
    store
        .mark_dead(b0, "retry budget exhausted")
        .await
        .expect("dead");
    let (entry_b, events_b) = entry(&store, b.entry.id).await;
    assert_eq!(entry_b.status, EntryStatus::Dead);
    assert_eq!(
        entry_b.last_error.as_deref(),
        Some("retry budget exhausted")
    );
    assert_eq!(events_b[0].status, EventStatus::Dead);
    assert!(due_ids(&store, at(1000)).await.is_empty());
    assert_eq!(
        store.outbox_stats().await.expect("stats"),
        OutboxStats {
            pending: 0,
            dead: 1
        }
    );

    // Late reports about settled events change nothing.
    store
        .mark_published(std::slice::from_ref(b0), at(70))
        .await
        .expect("publish");
    store.mark_retry(a0, at(80), "late").await.expect("retry");
    let (entry_b, events_b) = entry(&store, b.entry.id).await;
    assert_eq!(entry_b.status, EntryStatus::Dead);
    assert_eq!(events_b[0].status, EventStatus::Dead);
    let (_, events_a) = entry(&store, a.entry.id).await;
    assert_eq!(events_a[0].attempts, 0);
    assert_eq!(events_a[0].status, EventStatus::Published);
    assert_eq!(
        store.outbox_stats().await.expect("stats"),
        OutboxStats {
            pending: 0,
            dead: 1
        }
    );

    // A failed (unmapped) entry is left alone by all of it.
    let (entry_c, _) = entry(&store, c.entry.id).await;
    assert_eq!(entry_c.status, EntryStatus::Failed);
    // Unknown ids are not an error.
    store
        .mark_published(&["nope".to_owned()], at(1))
        .await
        .expect("unknown publish");
    store.mark_dead("nope", "x").await.expect("unknown dead");
    store
        .mark_published(&[], at(1))
        .await
        .expect("empty publish");
}

async fn published_entry_needs_every_event(store: Arc<dyn Store>) {
    let many = webhook("shopify", "k-many", at(0), 3);
    let single = webhook("shopify", "k-single", at(0), 1);
    store
        .insert_batch(&[many.clone(), single.clone()])
        .await
        .expect("insert");
    // One call covering two entries: only the complete one flips.
    let ids = vec![
        many.events[0].id.clone(),
        many.events[2].id.clone(),
        single.events[0].id.clone(),
    ];
    store.mark_published(&ids, at(1)).await.expect("publish");
    assert_eq!(
        entry(&store, many.entry.id).await.0.status,
        EntryStatus::Accepted
    );
    assert_eq!(
        entry(&store, single.entry.id).await.0.status,
        EntryStatus::Published
    );
    store
        .mark_published(std::slice::from_ref(&many.events[1].id), at(2))
        .await
        .expect("publish");
    let (stored, events) = entry(&store, many.entry.id).await;
    assert_eq!(stored.status, EntryStatus::Published);
    assert_eq!(
        events.iter().map(|e| e.published_at).collect::<Vec<_>>(),
        vec![Some(at(1)), Some(at(2)), Some(at(1))]
    );
    assert_eq!(store.outbox_stats().await.expect("stats").pending, 0);
}

async fn concurrent_publication_of_sibling_events_publishes_entry(store: Arc<dyn Store>) {
    // Two relays acknowledging different events of one entry at the same moment: the entry
    // must still end up published (neither may conclude "the other one is pending").
    for round in 0..10 {
        let w = webhook("shopify", &format!("k-race-{round}"), at(0), 2);
        insert_one(&store, &w).await;
        let (s1, s2) = (store.clone(), store.clone());
        let (e0, e1) = (w.events[0].id.clone(), w.events[1].id.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.mark_published(&[e0], at(1)).await }),
            tokio::spawn(async move { s2.mark_published(&[e1], at(1)).await }),
        );
        r1.expect("task").expect("publish 0");
        r2.expect("task").expect("publish 1");
        assert_eq!(
            entry(&store, w.entry.id).await.0.status,
            EntryStatus::Published,
            "round {round}"
        );
    }
}

async fn list_filters_and_keyset_pagination(store: Arc<dyn Store>) {
    // 30 entries over 2 sources, 3 tenants (one none), 3 statuses (failed, accepted with a
    // pending event, published), with runs of equal received_at so the id tie-break is
    // exercised across page boundaries.
    let mut all = Vec::new();
    for i in 0..30i64 {
        let source = if i % 2 == 0 { "shopify" } else { "stripe" };
        let failed = i % 5 == 0;
        let mut w = webhook(
            source,
            &format!("k-list-{i}"),
            at(i / 4),
            i32::from(!failed),
        );
        w.entry.tenant = match i % 3 {
            0 => Some("t1".to_owned()),
            1 => Some("t2".to_owned()),
            _ => None,
        };
        if failed {
            w.entry.status = EntryStatus::Failed;
        }
        all.push(w);
    }
    // Inserted in two batches, out of time order.
    all.reverse();
    store.insert_batch(&all[..13]).await.expect("insert");
    store.insert_batch(&all[13..]).await.expect("insert");
    // Every third entry with an event has it published.
    let published: Vec<&NewWebhook> = all
        .iter()
        .filter(|w| !w.events.is_empty())
        .step_by(3)
        .collect();
    let event_ids: Vec<String> = published.iter().map(|w| w.events[0].id.clone()).collect();
    store
        .mark_published(&event_ids, at(9))
        .await
        .expect("publish");
    let mut expected_all: Vec<StoredEntry> = all
        .iter()
        .map(|w| {
            let mut expected = expected_entry(w);
            if published.iter().any(|p| p.entry.id == w.entry.id) {
                expected.status = EntryStatus::Published;
            }
            expected
        })
        .collect();
    expected_all.sort_by_key(|e| std::cmp::Reverse((e.received_at, e.id)));

    let filters = vec![
        EntryFilter::default(),
        EntryFilter {
            source: Some("stripe".into()),
            ..Default::default()
        },
        EntryFilter {
            status: Some(EntryStatus::Failed),
            ..Default::default()
        },
        EntryFilter {
            status: Some(EntryStatus::Dead),
            ..Default::default()
        },
        EntryFilter {
            status: Some(EntryStatus::Accepted),
            ..Default::default()
        },
        EntryFilter {
            status: Some(EntryStatus::Published),
            source: Some("stripe".into()),
            ..Default::default()
        },
        EntryFilter {
            tenant: Some("t1".into()),
            ..Default::default()
        },
        EntryFilter {
            since: Some(at(3)),
            ..Default::default()
        },
        EntryFilter {
            until: Some(at(3)),
            ..Default::default()
        },
        EntryFilter {
            since: Some(at(2)),
            until: Some(at(5)),
            ..Default::default()
        },
        EntryFilter {
            source: Some("shopify".into()),
            tenant: Some("t2".into()),
            since: Some(at(1)),
            until: Some(at(7)),
            ..Default::default()
        },
        EntryFilter {
            source: Some("shopify".into()),
            status: Some(EntryStatus::Failed),
            tenant: Some("t1".into()),
            ..Default::default()
        },
    ];
    for filter in &filters {
        let expected: Vec<&StoredEntry> = expected_all
            .iter()
            .filter(|e| filter.source.as_ref().is_none_or(|s| &e.source == s))
            .filter(|e| filter.status.is_none_or(|s| e.status == s))
            .filter(|e| filter.tenant.is_none() || e.tenant == filter.tenant)
            .filter(|e| filter.since.is_none_or(|t| e.received_at >= t))
            .filter(|e| filter.until.is_none_or(|t| e.received_at < t))
            .collect();
        for page_size in [1u32, 3, 4, 50] {
            let mut got: Vec<StoredEntry> = Vec::new();
            let mut after = None;
            // Bounded: never more pages than entries + 1.
            for _ in 0..=all.len() {
                let page = store
                    .list_entries(filter, after, page_size)
                    .await
                    .expect("list");
                assert!(page.len() <= page_size as usize);
                let Some(last) = page.last() else { break };
                after = Some(Cursor {
                    received_at: last.received_at,
                    id: last.id,
                });
                let full = page.len() == page_size as usize;
                got.extend(page);
                if !full {
                    break;
                }
            }
            let got: Vec<&StoredEntry> = got.iter().collect();
            assert_eq!(got, expected, "filter {filter:?}, page size {page_size}");
        }
    }
    // The combined filters were not vacuous.
    assert_eq!(expected_all.len(), 30);
    let combined = store
        .list_entries(&filters[10], None, 100)
        .await
        .expect("list");
    assert!(!combined.is_empty());
    assert!(combined.len() < 30);
}

async fn concurrent_batches_with_same_key_insert_once(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = store.clone();
        // Two shared keys in opposite orders in alternate tasks (the pattern that could
        // deadlock), plus one key of the task's own.
        let mut batch = vec![
            webhook("shopify", "k-shared-1", at(0), 1),
            webhook("shopify", "k-shared-2", at(0), 1),
        ];
        if i % 2 == 1 {
            batch.reverse();
        }
        batch.push(webhook("shopify", &format!("k-own-{i}"), at(0), 1));
        tasks.push(tokio::spawn(async move {
            let outcome = store.insert_batch(&batch).await;
            (batch, outcome)
        }));
    }
    let mut winners: std::collections::HashMap<String, Vec<Uuid>> = Default::default();
    let mut duplicates: Vec<(String, Uuid)> = Vec::new();
    for task in tasks {
        let (batch, outcome) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("batch finished in time")
            .expect("task");
        let outcome = outcome.expect("insert_batch");
        assert_eq!(outcome.len(), batch.len());
        for (w, o) in batch.iter().zip(outcome) {
            match o {
                InsertOutcome::Inserted => winners
                    .entry(w.entry.idempotency_key.clone())
                    .or_default()
                    .push(w.entry.id),
                InsertOutcome::Duplicate { existing_id } => {
                    duplicates.push((w.entry.idempotency_key.clone(), existing_id))
                }
            }
        }
    }
    for key in ["k-shared-1", "k-shared-2"] {
        let ids = winners.get(key).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{key} inserted {} times", ids.len());
        assert_eq!(
            store.find_by_key("shopify", key).await.expect("find"),
            Some(ids[0])
        );
    }
    for i in 0..TASKS {
        assert_eq!(winners.get(&format!("k-own-{i}")).map(Vec::len), Some(1));
    }
    assert_eq!(duplicates.len(), 2 * (TASKS - 1));
    for (key, existing_id) in duplicates {
        assert_eq!(
            winners[&key],
            vec![existing_id],
            "duplicate of {key} names the winner"
        );
    }
    assert_eq!(
        store.outbox_stats().await.expect("stats").pending,
        2 + TASKS as u64,
        "only the winners' events are in the outbox"
    );
}

// ---------------------------------------------------------------------------------------
// Backend-specific behaviour

#[tokio::test]
async fn postgres_down_is_unavailable_quickly() {
    let started = Instant::now();
    let result = PgStore::connect("postgres://postgres@127.0.0.1:1/test").await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {:?}",
        result.err()
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test]
async fn postgres_rejects_unsafe_schema_names() {
    for schema in [
        "",
        "Upper",
        "a-b",
        "x; DROP TABLE y",
        "1abc",
        &"a".repeat(64),
    ] {
        let result = PgStore::connect_with_schema(&pg_url(), schema).await;
        assert!(
            matches!(result, Err(StoreError::BadUrl(_))),
            "{schema:?} was accepted"
        );
    }
}

/// Migrates a fresh PostgreSQL schema, reads `sql` there (`$1` is the schema's name), and
/// drops the schema before returning the rows, even when migrating or reading failed.
async fn rows_of_a_migrated_pg_schema<T>(sql: &'static str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let store = PgStore::connect_with_schema(&pg_url(), &schema)
        .await
        .unwrap_or_else(|e| panic!("the test run's PostgreSQL refused a connection: {e}"));
    assert_eq!(store.schema(), schema);
    let migrated = store.migrate().await;
    let rows = sqlx::query_as(sql)
        .bind(&schema)
        .fetch_all(store.pool())
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(store.pool())
    .await
    .expect("drop test schema");
    migrated.expect("migrate");
    rows.expect("read the migrated schema")
}

#[tokio::test]
async fn postgres_tables_live_in_their_schema() {
    let tables: Vec<(String,)> = rows_of_a_migrated_pg_schema(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "platform_configurations",
            "replay_jobs",
            "webhook_entries",
            "webhook_entry_records",
            "webhook_entry_states",
            "webhook_events",
            "webhook_replays"
        ]
        .map(|table| (table.to_owned(),))
    );
}

/// Every column TOAST compresses under load uses lz4: pglz on any of them cost a share of
/// the server's CPU for every webhook (see the tuning migrations).
#[tokio::test]
async fn postgres_payload_columns_compress_with_lz4() {
    let methods: Vec<(String, String)> = rows_of_a_migrated_pg_schema(
        "SELECT a.attname::text, a.attcompression::text FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r' \
           AND a.attname IN ('body', 'headers', 'envelope') \
         ORDER BY 1",
    )
    .await;
    assert_eq!(
        methods,
        [("body", "l"), ("envelope", "l"), ("headers", "l")]
            .map(|(column, method)| (column.to_owned(), method.to_owned()))
    );
}

#[tokio::test]
async fn postgres_bad_url_is_rejected() {
    let result = PgStore::connect("postgres://user@[not-a-host/db").await;
    assert!(
        matches!(result, Err(StoreError::BadUrl(_))),
        "{:?}",
        result.err()
    );
}

/// A batch that fails half-way (its second webhook's events collide) leaves no trace of
/// any of its webhooks, and the next batch and publication go through.
async fn failed_batch_writes_nothing_and_the_store_goes_on(store: Arc<dyn Store>) {
    let fine = webhook("shopify", "k-fail-fine", at(0), 1);
    let mut broken = webhook("shopify", "k-fail-broken", at(0), 2);
    broken.events[1].seq = broken.events[0].seq;
    let result = store.insert_batch(&[fine.clone(), broken.clone()]).await;
    assert!(
        matches!(result, Err(StoreError::Internal(_))),
        "a constraint violation is a bug, not an outage: {result:?}"
    );
    for w in [&fine, &broken] {
        assert_eq!(
            store
                .find_by_key("shopify", &w.entry.idempotency_key)
                .await
                .expect("lookup"),
            None,
            "{} was partly written",
            w.entry.idempotency_key
        );
    }
    assert!(
        due_ids(&store, at(10)).await.is_empty(),
        "no event was left"
    );

    insert_one(&store, &fine).await;
    store
        .mark_published(&[fine.events[0].id.clone()], at(1))
        .await
        .expect("publish after a failed batch");
    assert_eq!(
        entry(&store, fine.entry.id).await.0.status,
        EntryStatus::Published
    );
}

async fn body_is_stored_once_and_envelopes_read_whole(store: Arc<dyn Store>) {
    let w = webhook_with_body_as_data("k-once");
    let plain = webhook("shopify", "k-plain", at(0), 1);
    store
        .insert_batch(&[w.clone(), plain.clone()])
        .await
        .expect("insert");
    let (_, events) = entry(&store, w.entry.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].envelope, w.events[0].envelope, "admin view");
    let (_, events) = entry(&store, plain.entry.id).await;
    assert_eq!(events[0].envelope, plain.events[0].envelope, "stored whole");
    let due = store.due_events(at(10), 1000).await.expect("due").events;
    assert_eq!(due.len(), 2);
    for event in due {
        let expected = if event.entry_id == w.entry.id {
            &w.events[0].envelope
        } else {
            &plain.events[0].envelope
        };
        assert_eq!(&event.envelope, expected, "sweep of {}", event.id);
    }
}

#[tokio::test]
async fn sqlite_stores_a_body_that_is_the_data_once() {
    let store = SqliteStore::connect("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    let w = webhook_with_body_as_data("k-size");
    store
        .insert_batch(std::slice::from_ref(&w))
        .await
        .expect("insert");
    let (stored, body_at): (Vec<u8>, Option<i64>) =
        sqlx::query_as("SELECT envelope, body_at FROM webhook_events")
            .fetch_one(store.pool())
            .await
            .expect("row");
    let body = crate::publish::envelope::embedded_body(&w.entry.body);
    assert_eq!(stored.len(), w.events[0].envelope.len() - body.len());
    assert!(!stored.windows(body.len()).any(|window| window == body));
    assert_eq!(body_at, w.events[0].body_at.map(|at| at as i64));
}

/// A mapped webhook's way through the outbox writes no state row: its status follows from
/// its events. Only a failed entry and one whose publication was retried get one.
async fn state_rows_after_the_outbox(store: Arc<dyn Store>) -> Vec<Uuid> {
    let published = webhook("shopify", "k-state-published", at(0), 2);
    let pending = webhook("shopify", "k-state-pending", at(0), 1);
    let retried = webhook("shopify", "k-state-retried", at(0), 1);
    let mut failed = webhook("shopify", "k-state-failed", at(0), 0);
    failed.entry.status = EntryStatus::Failed;
    failed.entry.last_error = Some("unsupported topic".into());
    store
        .insert_batch(&[
            published.clone(),
            pending.clone(),
            retried.clone(),
            failed.clone(),
        ])
        .await
        .expect("insert");
    let mut ids: Vec<String> = published.events.iter().map(|e| e.id.clone()).collect();
    ids.push(retried.events[0].id.clone());
    store
        .mark_retry(&retried.events[0].id, at(1), "bus down")
        .await
        .expect("retry");
    store.mark_published(&ids, at(2)).await.expect("publish");
    let statuses = [
        (&published, EntryStatus::Published, 0, None),
        (&pending, EntryStatus::Accepted, 0, None),
        (&retried, EntryStatus::Published, 1, Some("bus down")),
        (&failed, EntryStatus::Failed, 0, Some("unsupported topic")),
    ];
    for (w, status, attempts, last_error) in statuses {
        let (stored, _) = entry(&store, w.entry.id).await;
        assert_eq!(
            (stored.status, stored.attempts, stored.last_error.as_deref()),
            (status, attempts, last_error),
            "{}",
            w.entry.idempotency_key
        );
    }
    let mut expected = vec![retried.entry.id, failed.entry.id];
    expected.sort();
    expected
}

/// The ids of the entries that have a state row, in id order, on either backend's pool.
async fn state_row_ids<DB>(pool: &sqlx::Pool<DB>) -> Vec<Uuid>
where
    DB: sqlx::Database,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    Uuid: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    sqlx::query_scalar::<DB, Uuid>("SELECT id FROM webhook_entry_states ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("states")
}

#[tokio::test]
async fn sqlite_writes_state_rows_only_where_events_do_not_tell() {
    on_sqlite_store(|store| async move {
        let expected = state_rows_after_the_outbox(store.clone()).await;
        assert_eq!(state_row_ids(store.pool()).await, expected);
    })
    .await;
}

#[tokio::test]
async fn postgres_writes_state_rows_only_where_events_do_not_tell() {
    on_pg_store(|store| async move {
        let expected = state_rows_after_the_outbox(store.clone()).await;
        assert_eq!(state_row_ids(store.pool()).await, expected);
    })
    .await;
}

/// A database migrated before the entries' state moved to a table of its own keeps every
/// entry and event, and they go on through the outbox.
#[tokio::test]
async fn sqlite_entries_stored_before_the_state_split_survive_it() {
    use sqlx::Connection;

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let mut conn =
            sqlite_migrated_with(&url, migrations_before_split(super::migrations::SQLITE)).await;
        for (key, status) in [("k-old-accepted", "accepted"), ("k-old-failed", "failed")] {
            let id = Uuid::now_v7();
            sqlx::query(OLD_ENTRY)
                .bind(id)
                .bind(key)
                .bind(&binary_body(key)[..])
                .bind(at(0).timestamp_micros())
                .bind(status)
                .execute(&mut conn)
                .await
                .expect("old entry");
            sqlx::query(OLD_EVENT)
                .bind(format!("{key}:0"))
                .bind(id)
                .bind(at(0).timestamp_micros())
                .execute(&mut conn)
                .await
                .expect("old event");
        }
        conn.close().await.expect("close");
    }

    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("reopen"));
    store.migrate().await.expect("the split migration");
    old_entries_go_on_after_the_split(store).await;
}

/// The same on PostgreSQL, which split its entries the same way later.
#[tokio::test]
async fn postgres_entries_stored_before_the_state_split_survive_it() {
    on_pg_schema(|store| async move {
        pg_migrated_with(&store, migrations_before_split(super::migrations::POSTGRES)).await;
        for (key, status) in [("k-old-accepted", "accepted"), ("k-old-failed", "failed")] {
            let id = Uuid::now_v7();
            sqlx::query(OLD_ENTRY)
                .bind(id)
                .bind(key)
                .bind(&binary_body(key)[..])
                .bind(at(0))
                .bind(status)
                .execute(store.pool())
                .await
                .expect("old entry");
            sqlx::query(OLD_EVENT)
                .bind(format!("{key}:0"))
                .bind(id)
                .bind(at(0))
                .execute(store.pool())
                .await
                .expect("old event");
        }
        store.migrate().await.expect("the split migration");
        old_entries_go_on_after_the_split(store).await;
    })
    .await;
}

/// An entry and its event as the schema before the state split held them, in SQL both
/// backends take (SQLite reads `$N` as the N-th parameter too).
const OLD_ENTRY: &str = "INSERT INTO webhook_entries (id, source, topic, tenant, \
        idempotency_key, headers, body, received_at, status, attempts, last_error, plugin, \
        plugin_version, correlation_id) \
     VALUES ($1, 'shopify', 'orders/create', 'shop', $2, '[[\"a\",\"b\"]]', $3, $4, $5, 2, \
        'boom', 'shopify', '1.0.0', 'corr')";
const OLD_EVENT: &str = "INSERT INTO webhook_events (id, entry_id, seq, subject, envelope, \
        next_attempt_at, created_at) VALUES ($1, $2, 0, 's', '{}', $3, $3)";

/// A SQLite file at `url` with `files` applied and nothing else: a database as an older
/// gateway left it, open to write its rows.
async fn sqlite_migrated_with(
    url: &str,
    files: &'static [(&'static str, &'static str)],
) -> sqlx::SqliteConnection {
    use sqlx::Connection;

    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
        .expect("url")
        .create_if_missing(true)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    super::migrations::migrator(files)
        .expect("migrator")
        .run_direct(None, &mut conn, false)
        .await
        .expect("older migrations");
    conn
}

/// `store`'s schema with `files` applied and nothing else.
async fn pg_migrated_with(store: &PgStore, files: &'static [(&'static str, &'static str)]) {
    let mut old = super::migrations::migrator(files).expect("migrator");
    old.create_schema(format!("\"{}\"", store.schema()));
    old.run(store.pool()).await.expect("older migrations");
}

/// The migrations of `files` that come before the entries' state split.
fn migrations_before_split(
    files: &'static [(&'static str, &'static str)],
) -> &'static [(&'static str, &'static str)] {
    migrations_before(files, "entry_state_apart")
}

/// The migrations of `files` that come before the one whose name contains `name`.
fn migrations_before(
    files: &'static [(&'static str, &'static str)],
    name: &str,
) -> &'static [(&'static str, &'static str)] {
    let at = files
        .iter()
        .position(|(file, _)| file.contains(name))
        .unwrap_or_else(|| panic!("a migration named {name} is listed"));
    &files[..at]
}

/// Entries as the split schema held them, one state row each, in SQL both backends take:
/// (key, entry status, event status).
const SPLIT_ENTRIES: [(&str, &str, &str); 3] = [
    ("k-split-published", "published", "published"),
    ("k-split-accepted", "accepted", "pending"),
    ("k-split-dead", "dead", "dead"),
];
const SPLIT_RECORD: &str = "INSERT INTO webhook_entry_records (id, source, topic, tenant, \
        idempotency_key, headers, body, received_at, plugin, plugin_version, correlation_id) \
     VALUES ($1, 'shopify', 'orders/create', 'shop', $2, '[]', $3, $4, 'shopify', '1.0.0', \
        'corr')";
const SPLIT_STATE: &str = "INSERT INTO webhook_entry_states (id, status, attempts, \
        last_error, received_at) VALUES ($1, $2, 0, NULL, $3)";
const SPLIT_EVENT_STATUS: &str = "UPDATE webhook_events SET status = $2, next_attempt_at = \
        NULL WHERE entry_id = $1";

/// Writes [`SPLIT_ENTRIES`] through `conn`, received at `received_at` as the backend
/// stores a time.
async fn insert_split_entries<DB, T>(conn: &mut DB::Connection, received_at: T)
where
    DB: sqlx::Database,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    T: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB> + Copy + Send + 'static,
    Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for (key, status, event_status) in SPLIT_ENTRIES {
        let id = Uuid::now_v7();
        let body = binary_body(key);
        sqlx::query::<DB>(SPLIT_RECORD)
            .bind(id)
            .bind(key)
            .bind(&body[..])
            .bind(received_at)
            .execute(&mut *conn)
            .await
            .expect("record");
        sqlx::query::<DB>(SPLIT_STATE)
            .bind(id)
            .bind(status)
            .bind(received_at)
            .execute(&mut *conn)
            .await
            .expect("state");
        sqlx::query::<DB>(OLD_EVENT)
            .bind(format!("{key}:0"))
            .bind(id)
            .bind(received_at)
            .execute(&mut *conn)
            .await
            .expect("event");
        sqlx::query::<DB>(SPLIT_EVENT_STATUS)
            .bind(id)
            .bind(event_status)
            .execute(&mut *conn)
            .await
            .expect("event status");
    }
}

/// After the migration that derives entry status from events, the entries stored with a
/// state row each keep their status; only the dead one keeps its row.
async fn split_entries_keep_their_status(store: Arc<dyn Store>) {
    let listed = store
        .list_entries(&EntryFilter::default(), None, 10)
        .await
        .expect("list");
    let mut statuses: Vec<(String, EntryStatus)> = listed
        .iter()
        .map(|e| (e.idempotency_key.clone(), e.status))
        .collect();
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        statuses,
        [
            ("k-split-accepted".to_owned(), EntryStatus::Accepted),
            ("k-split-dead".to_owned(), EntryStatus::Dead),
            ("k-split-published".to_owned(), EntryStatus::Published),
        ]
    );
    let accepted = store
        .list_entries(
            &EntryFilter {
                status: Some(EntryStatus::Accepted),
                ..EntryFilter::default()
            },
            None,
            10,
        )
        .await
        .expect("list accepted");
    assert_eq!(accepted.len(), 1);
    store
        .mark_published(&["k-split-accepted:0".to_owned()], at(1))
        .await
        .expect("publish");
    assert_eq!(
        entry(&store, accepted[0].id).await.0.status,
        EntryStatus::Published
    );
}

#[tokio::test]
async fn sqlite_entries_stored_with_a_state_row_each_survive_its_removal() {
    use sqlx::Connection;

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("split.db").display());
    {
        let mut conn = sqlite_migrated_with(
            &url,
            migrations_before(super::migrations::SQLITE, "entry_status_derived"),
        )
        .await;
        insert_split_entries::<sqlx::Sqlite, _>(&mut conn, at(0).timestamp_micros()).await;
        conn.close().await.expect("close");
    }
    let store = Arc::new(SqliteStore::connect(&url).await.expect("reopen"));
    store.migrate().await.expect("the migration");
    assert_eq!(
        state_row_ids(store.pool()).await.len(),
        1,
        "only the dead entry keeps a state row"
    );
    split_entries_keep_their_status(store).await;
}

#[tokio::test]
async fn postgres_entries_stored_with_a_state_row_each_survive_its_removal() {
    on_pg_schema(|store| async move {
        pg_migrated_with(
            &store,
            migrations_before(super::migrations::POSTGRES, "entry_status_derived"),
        )
        .await;
        let mut conn = store.pool().acquire().await.expect("connection");
        insert_split_entries::<sqlx::Postgres, _>(&mut conn, at(0)).await;
        drop(conn);
        store.migrate().await.expect("the migration");
        assert_eq!(
            state_row_ids(store.pool()).await.len(),
            1,
            "only the dead entry keeps a state row"
        );
        split_entries_keep_their_status(store).await;
    })
    .await;
}

/// Two entries stored before the split (one accepted with a pending event, one failed,
/// both with two attempts and an error) are all there after it, and go on as any other.
async fn old_entries_go_on_after_the_split(store: Arc<dyn Store>) {
    let listed = store
        .list_entries(&EntryFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    for old in &listed {
        assert_eq!(old.body, binary_body(&old.idempotency_key));
        assert_eq!(old.headers, vec![("a".to_owned(), "b".to_owned())]);
        assert_eq!((old.attempts, old.last_error.as_deref()), (2, Some("boom")));
        assert_eq!(old.received_at, at(0));
    }
    let accepted = listed
        .iter()
        .find(|e| e.idempotency_key == "k-old-accepted")
        .expect("accepted entry");
    assert_eq!(accepted.status, EntryStatus::Accepted);
    let failed = listed
        .iter()
        .find(|e| e.idempotency_key == "k-old-failed")
        .expect("failed entry");
    assert_eq!(failed.status, EntryStatus::Failed);
    assert_eq!(
        store
            .find_by_key("shopify", "k-old-accepted")
            .await
            .expect("key"),
        Some(accepted.id),
        "the unique key came along"
    );
    store
        .mark_published(&["k-old-accepted:0".to_owned()], at(1))
        .await
        .expect("publish an old event");
    let (entry, events) = store
        .get_entry(accepted.id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(entry.status, EntryStatus::Published);
    assert_eq!(events[0].status, EventStatus::Published);
    let twin = webhook("shopify", "k-old-accepted", at(2), 1);
    assert_eq!(
        store.insert_batch(&[twin]).await.expect("insert"),
        vec![InsertOutcome::Duplicate {
            existing_id: accepted.id
        }]
    );
}

/// Nothing after the insert rewrites an entry's record (the row that holds its body): a
/// trigger that refuses any update of it lets every outbox transition through.
#[tokio::test]
async fn sqlite_outbox_transitions_leave_entry_records_alone() {
    let store = SqliteStore::connect("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    sqlx::query(
        "CREATE TRIGGER records_are_written_once BEFORE UPDATE ON webhook_entry_records \
         BEGIN SELECT RAISE(ABORT, 'an entry record was rewritten'); END",
    )
    .execute(store.pool())
    .await
    .expect("trigger");
    outbox_transitions_through(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_outbox_transitions_leave_entry_records_alone() {
    on_pg_store(|store| async move {
        sqlx::raw_sql(
            "CREATE FUNCTION refuse_record_update() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'an entry record was rewritten'; END $$; \
             CREATE TRIGGER records_are_written_once BEFORE UPDATE ON webhook_entry_records \
             FOR EACH ROW EXECUTE FUNCTION refuse_record_update();",
        )
        .execute(store.pool())
        .await
        .expect("trigger");
        outbox_transitions_through(store).await;
    })
    .await;
}

/// Publishes one entry's events and retries then dead-letters another's.
async fn outbox_transitions_through(store: Arc<dyn Store>) {
    let published = webhook("shopify", "k-rec-published", at(0), 2);
    let retried = webhook("shopify", "k-rec-dead", at(0), 1);
    store
        .insert_batch(&[published.clone(), retried.clone()])
        .await
        .expect("insert");
    let event_ids: Vec<String> = published.events.iter().map(|e| e.id.clone()).collect();
    store
        .mark_published(&event_ids, at(1))
        .await
        .expect("publish");
    store
        .mark_retry(&retried.events[0].id, at(5), "bus down")
        .await
        .expect("retry");
    store
        .mark_dead(&retried.events[0].id, "budget spent")
        .await
        .expect("dead");
    assert_eq!(
        entry(&store, published.entry.id).await.0.status,
        EntryStatus::Published
    );
    let (dead, _) = entry(&store, retried.entry.id).await;
    assert_eq!(
        (dead.status, dead.attempts, dead.last_error.as_deref()),
        (EntryStatus::Dead, 1, Some("budget spent"))
    );
}

/// Each admin listing reads in order from an index, with no sort of the whole matching
/// set, except `accepted`, which starts from the pending events (the backlog) and sorts
/// those: walking every entry in order for the few unpublished ones would read the table.
#[tokio::test]
async fn sqlite_listings_read_in_index_order() {
    let store = SqliteStore::connect("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    let filters = [
        EntryFilter::default(),
        EntryFilter {
            status: Some(EntryStatus::Failed),
            ..EntryFilter::default()
        },
        EntryFilter {
            status: Some(EntryStatus::Published),
            ..EntryFilter::default()
        },
        EntryFilter {
            source: Some("shopify".into()),
            ..EntryFilter::default()
        },
        EntryFilter {
            tenant: Some("shop".into()),
            ..EntryFilter::default()
        },
    ];
    for filter in filters {
        let plan = store.explain_listing(&filter).await.expect("explain");
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{filter:?} sorts: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN s")),
            "{filter:?} scans the states: {plan:?}"
        );
    }
    let accepted = EntryFilter {
        status: Some(EntryStatus::Accepted),
        ..EntryFilter::default()
    };
    let plan = store.explain_listing(&accepted).await.expect("explain");
    assert!(
        plan.iter()
            .any(|step| step.contains("webhook_events_due_idx")),
        "accepted entries come from the pending events: {plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN r")),
        "accepted entries are not found by reading every record: {plan:?}"
    );
}

#[tokio::test]
async fn sqlite_creates_directories_and_is_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/deeper/hookgate.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::connect(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    assert!(path.exists(), "database file created");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(journal, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(synchronous, 2, "synchronous=FULL");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(foreign_keys, 1);

    // Survives closing and reopening.
    let w = webhook("shopify", "k-durable", at(0), 1);
    store
        .insert_batch(std::slice::from_ref(&w))
        .await
        .expect("insert");
    store.pool().close().await;
    let reopened = SqliteStore::connect(&url).await.expect("reopen");
    reopened.migrate().await.expect("migrate again");
    let (stored, events) = reopened
        .get_entry(w.entry.id)
        .await
        .expect("get")
        .expect("entry survived");
    assert_eq!(stored, expected_entry(&w));
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn sqlite_two_stores_on_one_file_migrate_concurrently() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let a = SqliteStore::connect(&url).await.expect("open a");
    let b = SqliteStore::connect(&url).await.expect("open b");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("migrate a");
    rb.expect("migrate b");
    let w = webhook("shopify", "k-shared-file", at(0), 1);
    a.insert_batch(std::slice::from_ref(&w))
        .await
        .expect("insert");
    assert_eq!(
        b.find_by_key("shopify", "k-shared-file")
            .await
            .expect("find"),
        Some(w.entry.id)
    );
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = SqliteStore::connect("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    let w = webhook("shopify", "k-mem", at(0), 2);
    store
        .insert_batch(std::slice::from_ref(&w))
        .await
        .expect("insert");
    assert_eq!(
        store.due_events(at(0), 10).await.expect("due").events.len(),
        2
    );
}

#[tokio::test]
async fn connect_picks_backend_from_url() {
    assert!(matches!(
        super::connect("mysql://x", "hookgate").await.err(),
        Some(StoreError::BadUrl(_))
    ));
    let store = super::connect("sqlite::memory:", "hookgate")
        .await
        .expect("sqlite url");
    store.migrate().await.expect("migrate");
    store.ping().await.expect("ping");
}

/// Two due events, the second stored so that no envelope can be made of it (its body
/// offset past the envelope's end); `corrupt` does that to the event with the given id.
async fn an_unreadable_event_is_set_apart<C, Fut>(store: Arc<dyn Store>, corrupt: C)
where
    C: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let good = webhook_with_body_as_data("k-good");
    let bad = webhook_with_body_as_data("k-bad");
    store
        .insert_batch(&[good.clone(), bad.clone()])
        .await
        .expect("insert");
    corrupt(bad.events[0].id.clone()).await;
    let due = store
        .due_events(at(10), 1000)
        .await
        .expect("one bad row must not fail the sweep");
    assert_eq!(
        due.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![good.events[0].id.as_str()]
    );
    assert_eq!(due.unreadable.len(), 1);
    let unreadable = &due.unreadable[0];
    assert_eq!(unreadable.id, bad.events[0].id);
    assert_eq!(unreadable.entry_id, Some(bad.entry.id));
    assert!(
        unreadable.reason.contains("past its end"),
        "{}",
        unreadable.reason
    );

    // The admin view still shows the entry, with the reason in place of the envelope.
    let (_, events) = entry(&store, bad.entry.id).await;
    assert!(events[0].envelope.is_empty());
    let error = events[0].envelope_error.as_deref().unwrap_or_default();
    assert!(error.contains("past its end"), "{error}");
    let (_, events) = entry(&store, good.entry.id).await;
    assert_eq!(events[0].envelope, good.events[0].envelope);
    assert_eq!(events[0].envelope_error, None);
}

const CORRUPT_BODY_AT: &str = "UPDATE webhook_events SET body_at = 1000000 WHERE id = $1";

/// Two entries, the second's headers made unreadable by `corrupt`: both are still listed
/// and shown, the second with the reason in place of its headers.
async fn an_entry_with_unreadable_headers_is_still_shown<C, Fut>(store: Arc<dyn Store>, corrupt: C)
where
    C: FnOnce(Uuid) -> Fut,
    Fut: Future<Output = ()>,
{
    let good = webhook("shopify", "k-headers-good", at(0), 1);
    let bad = webhook("shopify", "k-headers-bad", at(1), 1);
    store
        .insert_batch(&[good.clone(), bad.clone()])
        .await
        .expect("insert");
    corrupt(bad.entry.id).await;
    let listed = store
        .list_entries(&EntryFilter::default(), None, 10)
        .await
        .expect("one bad row must not fail the listing");
    assert_eq!(
        listed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![bad.entry.id, good.entry.id]
    );
    let (shown, events) = entry(&store, bad.entry.id).await;
    assert!(shown.headers.is_empty());
    let error = shown.headers_error.unwrap_or_default();
    assert!(error.contains("headers cannot be read"), "{error}");
    assert_eq!(events.len(), 1, "its events are shown");
    let (shown, _) = entry(&store, good.entry.id).await;
    assert_eq!(shown, expected_entry(&good));
}

const CORRUPT_HEADERS: &str = "UPDATE webhook_entry_records SET headers = '[[' WHERE id = $1";

/// A corrupted-row case on one backend: `$case` with a closure that runs `$corrupt` (SQL
/// both backends take) on the row with the given id, through the backend's pool.
macro_rules! corrupted_row_case {
    ($name:ident, $on_store:ident, $case:ident, $corrupt:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $on_store(|store| async move {
                let pool = store.pool().clone();
                $case(store, |id| async move {
                    sqlx::query($corrupt)
                        .bind(id)
                        .execute(&pool)
                        .await
                        .expect("corrupt the row");
                })
                .await;
            })
            .await;
        }
    };
}

corrupted_row_case!(
    sqlite_sets_an_unreadable_event_apart,
    on_sqlite_store,
    an_unreadable_event_is_set_apart,
    CORRUPT_BODY_AT
);
corrupted_row_case!(
    postgres_sets_an_unreadable_event_apart,
    on_pg_store,
    an_unreadable_event_is_set_apart,
    CORRUPT_BODY_AT
);
corrupted_row_case!(
    sqlite_shows_an_entry_with_unreadable_headers,
    on_sqlite_store,
    an_entry_with_unreadable_headers_is_still_shown,
    CORRUPT_HEADERS
);
corrupted_row_case!(
    postgres_shows_an_entry_with_unreadable_headers,
    on_pg_store,
    an_entry_with_unreadable_headers_is_still_shown,
    CORRUPT_HEADERS
);

/// Postponed events (their breaker open, the bus down) come due later, with no attempt
/// counted; an error given replaces `last_error`, none keeps it; a published event is left
/// alone.
async fn postpone_moves_the_next_attempt_without_counting_one(store: Arc<dyn Store>) {
    let w = webhook("shopify", "k-postpone", at(0), 3);
    insert_one(&store, &w).await;
    let (e0, e1, e2) = (&w.events[0].id, &w.events[1].id, &w.events[2].id);
    store
        .mark_retry(e1, at(5), "nats: timeout")
        .await
        .expect("retry");
    store
        .mark_published(std::slice::from_ref(e2), at(1))
        .await
        .expect("publish");
    store
        .postpone(
            &[(e0.clone(), at(100)), (e2.clone(), at(100))],
            Some("nats is not connected"),
        )
        .await
        .expect("postpone with an error");
    store
        .postpone(&[(e1.clone(), at(200))], None)
        .await
        .expect("postpone without one");
    store
        .postpone(&[], None)
        .await
        .expect("nothing to postpone");

    assert!(due_ids(&store, at(99)).await.is_empty());
    assert_eq!(due_ids(&store, at(100)).await, vec![e0.clone()]);
    assert_eq!(due_ids(&store, at(200)).await, vec![e0.clone(), e1.clone()]);
    let (_, events) = entry(&store, w.entry.id).await;
    assert_eq!(events[0].attempts, 0, "postponing is no attempt");
    assert_eq!(events[0].next_attempt_at, Some(at(100)));
    assert_eq!(
        events[0].last_error.as_deref(),
        Some("nats is not connected")
    );
    assert_eq!(events[1].attempts, 1);
    assert_eq!(
        events[1].last_error.as_deref(),
        Some("nats: timeout"),
        "kept"
    );
    assert_eq!(events[2].status, EventStatus::Published);
    assert_eq!(
        events[2].next_attempt_at, None,
        "a published event is left alone"
    );
}

/// Only entries received before the cut-off whose events are all published go, with their
/// events, oldest first and at most `limit` at a time; failed, dead and unpublished ones
/// stay whatever their age.
async fn purge_removes_only_old_published_entries(store: Arc<dyn Store>) {
    let published = webhook("shopify", "k-published", at(0), 2);
    let retried = webhook("shopify", "k-retried-then-published", at(1), 1);
    let partly = webhook("shopify", "k-partly", at(2), 2);
    let pending = webhook("shopify", "k-pending", at(3), 1);
    let mut failed = webhook("shopify", "k-failed", at(4), 0);
    failed.entry.status = EntryStatus::Failed;
    failed.entry.last_error = Some("bad json".to_owned());
    let dead = webhook("shopify", "k-dead", at(5), 1);
    let recent = webhook("shopify", "k-recent", at(7200), 1);
    let all = [
        &published, &retried, &partly, &pending, &failed, &dead, &recent,
    ];
    store
        .insert_batch(&all.iter().map(|w| (*w).clone()).collect::<Vec<_>>())
        .await
        .expect("insert");
    store
        .mark_retry(&retried.events[0].id, at(10), "nats: timeout")
        .await
        .expect("retry");
    let to_publish: Vec<String> = [&published, &retried, &recent]
        .iter()
        .flat_map(|w| w.events.iter().map(|e| e.id.clone()))
        .chain([partly.events[0].id.clone()])
        .collect();
    store
        .mark_published(&to_publish, at(20))
        .await
        .expect("publish");
    store
        .mark_dead(&dead.events[0].id, "bus rejected the event")
        .await
        .expect("dead");
    let before = at(3600);

    assert_eq!(store.count_purgeable(before).await.expect("count"), 2);
    assert_eq!(
        crate::purge::purge(store.as_ref(), before, true)
            .await
            .expect("dry run"),
        2
    );
    assert!(
        store
            .get_entry(published.entry.id)
            .await
            .expect("get")
            .is_some(),
        "a dry run deletes nothing"
    );
    assert_eq!(
        store.purge_published(before, 1).await.expect("purge"),
        1,
        "at most the limit"
    );
    assert!(
        store
            .get_entry(published.entry.id)
            .await
            .expect("get")
            .is_none(),
        "the oldest goes first"
    );
    assert_eq!(
        crate::purge::purge(store.as_ref(), before, false)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(store.purge_published(before, 100).await.expect("again"), 0);
    assert_eq!(store.count_purgeable(before).await.expect("count"), 0);

    for gone in [&published, &retried] {
        assert!(store.get_entry(gone.entry.id).await.expect("get").is_none());
        // Their key is free again: the storage no longer remembers them.
        assert_eq!(
            store
                .find_by_key(&gone.entry.source, &gone.entry.idempotency_key)
                .await
                .expect("find"),
            None
        );
    }
    for kept in [&partly, &pending, &failed, &dead, &recent] {
        let (entry, events) = entry(&store, kept.entry.id).await;
        assert_eq!(events.len(), kept.events.len(), "{}", entry.idempotency_key);
    }
    assert_eq!(
        store.outbox_stats().await.expect("stats"),
        OutboxStats {
            pending: 2,
            dead: 1
        },
        "no event of a kept entry went"
    );
    // A later cut-off takes the recent one too, and still none of the others.
    assert_eq!(
        store.purge_published(at(10_000), 100).await.expect("purge"),
        1
    );
    assert!(
        store
            .get_entry(recent.entry.id)
            .await
            .expect("get")
            .is_none()
    );
}
