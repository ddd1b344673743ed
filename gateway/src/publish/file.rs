//! TEMPORARY STUB: replaced by the real backend.
use super::*;
use async_trait::async_trait;
pub struct FileSink;
impl FileSink {
    pub async fn open(_p: &std::path::Path) -> Result<Self, PublishError> {
        todo!()
    }
}
#[async_trait]
impl EventSink for FileSink {
    async fn publish_batch(&self, _: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        todo!()
    }
    async fn ping(&self) -> Result<(), PublishError> {
        todo!()
    }
    fn kind(&self) -> &'static str {
        "file"
    }
}
