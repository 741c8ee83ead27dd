//! The gateway calling a function like any client, through its own front door
//! (`/function/NAME.NAMESPACE/PATH`): cron triggers, asynchronous calls and queue triggers are
//! routed, scaled from zero, throttled, counted and logged as every other invocation.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Method, StatusCode, header::AUTHORIZATION};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

/// What a function answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, read up to the caller's limit.
    pub body: Bytes,
    /// The body was longer than the limit: `body` is empty, the rest was not read.
    pub over_limit: bool,
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

    /// Invokes `name.namespace` at `path` (below the function, with its query; joined after a
    /// `/` whatever it starts with, so it can never name another function) and reads at most
    /// `limit` bytes of the answer, giving up after `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub async fn invoke(
        &self,
        namespace: &str,
        name: &str,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Bytes,
        (timeout, limit): (Duration, usize),
    ) -> Result<Answer, CallError> {
        if let Some(auth) = self.authorization.as_deref().and_then(|a| a.parse().ok()) {
            headers.insert(AUTHORIZATION, auth);
        }
        let slash = if path.starts_with('/') { "" } else { "/" };
        let url = format!("{}/function/{name}.{namespace}{slash}{path}", self.base);
        let mut req = hyper::Request::builder().method(method).uri(&url);
        *req.headers_mut().expect("a request under construction") = headers;
        let req = req.body(Full::new(body)).map_err(|e| CallError::Failed(format!("{url}: {e}")))?;
        let call = async {
            let response =
                self.client.request(req).await.map_err(|e| CallError::Failed(flint_http::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let read = flint_http::body::read_at_most(body, limit)
                .await
                .map_err(|e| CallError::Failed(flint_http::error_chain(&e)))?;
            let (body, over_limit) = if read.truncated { (Bytes::new(), true) } else { (read.bytes, false) };
            Ok(Answer { status: parts.status, headers: parts.headers, body, over_limit })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| CallError::Timeout(timeout))?
    }
}
