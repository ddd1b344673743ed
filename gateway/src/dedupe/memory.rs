//! TEMPORARY STUB: replaced by the real backend.
use super::*;
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;
pub struct MemoryDedupe;
impl MemoryDedupe {
    pub fn new() -> Self {
        Self
    }
}
#[async_trait]
impl Dedupe for MemoryDedupe {
    async fn lookup(&self, _: &str) -> Result<Option<Uuid>, DedupeError> {
        todo!()
    }
    async fn remember(&self, _: &str, _: Uuid, _: Duration) -> Result<(), DedupeError> {
        todo!()
    }
    async fn ping(&self) -> Result<(), DedupeError> {
        todo!()
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
}
