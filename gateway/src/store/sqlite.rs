//! TEMPORARY STUB: replaced by the real backend.
use super::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
pub struct SqliteStore;
impl SqliteStore {
    pub async fn connect(_url: &str) -> Result<Self, StoreError> {
        todo!()
    }
}
#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        todo!()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        todo!()
    }
    async fn insert_batch(&self, _: &[NewWebhook]) -> Result<Vec<InsertOutcome>, StoreError> {
        todo!()
    }
    async fn find_by_key(&self, _: &str, _: &str) -> Result<Option<Uuid>, StoreError> {
        todo!()
    }
    async fn due_events(&self, _: DateTime<Utc>, _: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        todo!()
    }
    async fn mark_published(&self, _: &[String], _: DateTime<Utc>) -> Result<(), StoreError> {
        todo!()
    }
    async fn mark_retry(&self, _: &str, _: DateTime<Utc>, _: &str) -> Result<(), StoreError> {
        todo!()
    }
    async fn mark_dead(&self, _: &str, _: &str) -> Result<(), StoreError> {
        todo!()
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        todo!()
    }
    async fn list_entries(
        &self,
        _: &EntryFilter,
        _: Option<Cursor>,
        _: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        todo!()
    }
    async fn get_entry(
        &self,
        _: Uuid,
    ) -> Result<Option<(StoredEntry, Vec<StoredEvent>)>, StoreError> {
        todo!()
    }
}
