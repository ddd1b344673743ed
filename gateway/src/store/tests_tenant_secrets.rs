//! The tenant-secrets part of the [`Store`] contract, on both backends
//! (`store::tests_tenant_secrets::{sqlite,postgres}::<case>`).

use std::sync::Arc;

use super::tests::{on_postgres, on_sqlite, suite};
use super::*;

suite!(
    secrets_are_added_listed_and_removed_per_tenant,
    concurrent_additions_all_land,
);

fn sealed(fingerprint: &str) -> SealedSecret {
    SealedSecret {
        id: Uuid::now_v7(),
        fingerprint: fingerprint.to_owned(),
        created_at: Utc::now(),
        sealed: format!("sealed-{fingerprint}"),
    }
}

async fn secrets_are_added_listed_and_removed_per_tenant(store: Arc<dyn Store>) {
    assert!(store.list_tenant_secrets().await.unwrap().is_empty());
    let v0 = store.tenant_secrets_version().await.unwrap();
    let (a1, a2, b1) = (sealed("a1"), sealed("a2"), sealed("b1"));
    store
        .add_tenant_secrets("shopify", "shop-a", std::slice::from_ref(&a1))
        .await
        .unwrap();
    let v1 = store.tenant_secrets_version().await.unwrap();
    assert_ne!(v0, v1, "an addition moves the version");
    store
        .add_tenant_secrets("shopify", "shop-a", std::slice::from_ref(&a2))
        .await
        .unwrap();
    store
        .add_tenant_secrets("shopify", "shop-b", std::slice::from_ref(&b1))
        .await
        .unwrap();
    let v2 = store.tenant_secrets_version().await.unwrap();
    assert_ne!(v1, v2);

    let rows = store.list_tenant_secrets().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].source.as_str(), rows[0].tenant.as_str()),
        ("shopify", "shop-a")
    );
    assert_eq!(rows[0].secrets, vec![a1.clone(), a2.clone()]);
    assert_eq!(rows[1].secrets, vec![b1.clone()]);

    // Removing needs the right tenant: an id is not enough.
    assert!(
        !store
            .remove_tenant_secret("shopify", "shop-b", a1.id)
            .await
            .unwrap()
    );
    assert!(
        store
            .remove_tenant_secret("shopify", "shop-a", a1.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_tenant_secret("shopify", "shop-a", a1.id)
            .await
            .unwrap()
    );
    let v3 = store.tenant_secrets_version().await.unwrap();
    assert_ne!(v2, v3, "a removal moves the version");
    let rows = store.list_tenant_secrets().await.unwrap();
    assert_eq!(rows[0].secrets, vec![a2]);
    assert!(
        !store
            .remove_tenant_secret("stripe", "nobody", b1.id)
            .await
            .unwrap()
    );
}

async fn concurrent_additions_all_land(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .add_tenant_secrets("shopify", "shop-c", &[sealed(&format!("c{i}"))])
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let rows = store.list_tenant_secrets().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].secrets.len(), 8, "a concurrent addition was lost");
}
