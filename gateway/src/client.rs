//! A minimal HTTP/1.1 client for `hookgate send`, the load generator and the tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::sample::SignedWebhook;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `method` to `base` + `path` with the headers and body given.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut request = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = self
            .inner
            .request(request.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn post_webhook(&self, base: &str, webhook: &SignedWebhook) -> anyhow::Result<Reply> {
        let url = format!("{}{}", base.trim_end_matches('/'), webhook.path);
        self.send(
            http::Method::POST,
            &url,
            &webhook.headers,
            webhook.body.clone(),
        )
        .await
    }

    pub async fn get(&self, url: &str, headers: &[(String, String)]) -> anyhow::Result<Reply> {
        self.send(http::Method::GET, url, headers, Vec::new()).await
    }
}
