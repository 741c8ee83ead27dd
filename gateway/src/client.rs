//! The gateway calling a function like any client, through its own front door
//! (`/function/NAME.NAMESPACE/PATH`): cron triggers, asynchronous calls and queue triggers are
//! routed, scaled from zero, throttled, counted and logged as every other invocation.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, StatusCode, header::AUTHORIZATION};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

/// What a function answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct SelfClient {
    /// Base URL of a gateway (`http://127.0.0.1:8080`).
    base: String,
    /// `Authorization` header value when functions are behind basic auth.
    authorization: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl SelfClient {
    pub fn new(base: String, authorization: Option<String>) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        SelfClient { base, authorization, client }
    }

    /// Invokes `name.namespace` at `path` (below the function, with its query) and reads the
    /// whole answer, giving up after `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub async fn invoke(
        &self,
        namespace: &str,
        name: &str,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        if let Some(auth) = self.authorization.as_deref().and_then(|a| a.parse().ok()) {
            headers.insert(AUTHORIZATION, auth);
        }
        let url = format!("{}/function/{name}.{namespace}{path}", self.base);
        self.send(method, &url, headers, body, timeout).await
    }

    /// Any request to any URL (a caller's callback), answer read whole, within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        *req.headers_mut().expect("a request under construction") = headers;
        let req = req.body(Full::new(body)).map_err(|e| CallError::Failed(format!("{url}: {e}")))?;
        let call = async {
            let response =
                self.client.request(req).await.map_err(|e| CallError::Failed(flint_http::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| CallError::Failed(flint_http::error_chain(&e)))?.to_bytes();
            Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| CallError::Timeout(timeout))?
    }
}
