//! The gateway calling a function like any client, through its own front door
//! (`/function/NAME.NAMESPACE/PATH`): cron triggers, asynchronous calls and queue triggers are
//! routed, scaled from zero, throttled, counted and logged as every other invocation. The
//! gateway's own worker calls its door in place; a queue worker of its own calls a gateway's
//! over HTTP.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Method, StatusCode, header::AUTHORIZATION};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

use crate::routes::Gateway;

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
    door: Door,
    /// `Authorization` header value when functions are behind basic auth.
    authorization: Option<String>,
}

/// Which gateway's front door the calls go through.
#[derive(Clone)]
enum Door {
    /// This process's: called in place, with no connection, no second parse and no loopback
    /// round trip. `peer` is the address the function sees the call come from.
    Here { gateway: Arc<Gateway>, peer: SocketAddr },
    /// Another process's (a queue worker of its own): `base` is its URL (`http://gateway:8080`).
    There { base: String, client: Box<Client<HttpConnector, Full<Bytes>>> },
}

impl SelfClient {
    /// Calls through `gateway`, the one this process serves; `ip` is its own address.
    pub fn here(gateway: Arc<Gateway>, ip: IpAddr, authorization: Option<String>) -> Self {
        SelfClient { door: Door::Here { gateway, peer: SocketAddr::new(ip, 0) }, authorization }
    }

    /// Calls the gateway at `base` over HTTP.
    pub fn there(base: String, authorization: Option<String>) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        SelfClient { door: Door::There { base, client: Box::new(client) }, authorization }
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
        let target = format!("{name}.{namespace}{slash}{path}");
        let failed = |e: &(dyn std::error::Error + 'static)| CallError::Failed(flint_http::error_chain(e));
        let request = move |uri: &str| {
            let mut req = hyper::Request::builder().method(method).uri(uri);
            *req.headers_mut().expect("a request under construction") = headers;
            req.body(Full::new(body)).map_err(|e| CallError::Failed(format!("{uri}: {e}")))
        };
        let call = async {
            let (parts, body) = match &self.door {
                Door::Here { gateway, peer } => {
                    let req = request(&format!("/function/{target}"))?;
                    // As the front door reads it: the query is the request's, not the target's.
                    let path = req.uri().path().to_string();
                    let target = path.strip_prefix("/function/").expect("made so");
                    let response = gateway.call_function(req, target, *peer).await;
                    let (parts, body) = response.into_parts();
                    let read = flint_http::body::read_at_most(body, limit).await.map_err(|e| failed(&*e))?;
                    (parts, read)
                }
                Door::There { base, client } => {
                    let response = client.request(request(&format!("{base}/function/{target}"))?).await;
                    let (parts, body) = response.map_err(|e| failed(&e))?.into_parts();
                    let read = flint_http::body::read_at_most(body, limit).await.map_err(|e| failed(&e))?;
                    (parts, read)
                }
            };
            let (body, over_limit) = if body.truncated { (Bytes::new(), true) } else { (body.bytes, false) };
            Ok(Answer { status: parts.status, headers: parts.headers, body, over_limit })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| CallError::Timeout(timeout))?
    }
}
