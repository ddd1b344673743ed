//! TEMPORARY STUB: replaced by the real backend.
use super::*;
use async_trait::async_trait;
pub struct NatsSink;
impl NatsSink {
    pub async fn connect(_u: &str, _o: &BusOptions) -> Result<Self, PublishError> {
        todo!()
    }
}
#[async_trait]
impl EventSink for NatsSink {
    async fn publish_batch(&self, _: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        todo!()
    }
    async fn ping(&self) -> Result<(), PublishError> {
        todo!()
    }
    fn kind(&self) -> &'static str {
        "nats"
    }
}
