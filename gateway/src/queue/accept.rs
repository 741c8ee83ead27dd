//! `POST /async-function/NAME[.NAMESPACE][/path]`: the call (method, path, query, headers,
//! body) is stored in JetStream, and only then answered `202 Accepted` with its `X-Call-Id`.
//! A queue worker invokes it later. An unknown function is refused before anything is stored;
//! without NATS the answer is 503, never a 202 for a call that was not stored.

use std::sync::Arc;

use bytes::Bytes;
use flint_http::Body;
use http_body_util::{BodyExt, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming, header::HeaderValue};

use super::{
    Link,
    callback::Callbacks,
    message::{self, Call},
    worker::Lanes,
};
use crate::{
    invoke::{Target, call_id},
    metrics::Metrics,
    namespace::Namespaces,
    provider::Provider,
    reply,
};

pub struct Accept {
    pub provider: Arc<dyn Provider>,
    pub namespaces: Namespaces,
    pub link: Link,
    /// Largest body the gateway takes (`--max-body-bytes`); NATS's own limit applies too.
    pub max_body: Option<u64>,
    pub metrics: Arc<Metrics>,
    /// Where callbacks may go.
    pub callbacks: Arc<Callbacks>,
    /// Told of each stored call, so that a worker in this process takes a new function's calls
    /// at once rather than at its next look.
    pub lanes: Arc<Lanes>,
}

/// Room left for the message's headers within NATS's largest payload.
const HEADER_ROOM: usize = 16 * 1024;

impl Accept {
    /// `target` is what follows `/async-function/`.
    pub async fn accept(&self, req: Request<Incoming>, target: &str) -> Response<Body> {
        let Target { name, namespace, rest } = Target::parse(target);
        let namespace = self.namespaces.resolve(&*self.provider, namespace);
        if self.provider.route(namespace, name).is_none() {
            return reply::no_function(name, namespace);
        }
        let queue = match self.link.ready() {
            Ok(q) => q,
            Err(why) => return reply::retry_after(StatusCode::SERVICE_UNAVAILABLE, 5, why),
        };
        let callback = match req.headers().get("x-callback-url") {
            None => None,
            Some(value) => {
                let Ok(text) = value.to_str() else {
                    return reply::text(StatusCode::BAD_REQUEST, "X-Callback-Url is not text");
                };
                if let Err(refusal) = self.callbacks.policy().vet(text).await {
                    return reply::text(StatusCode::BAD_REQUEST, refusal.to_string());
                }
                Some(text.to_string())
            }
        };
        let nats_limit = queue.max_payload().saturating_sub(HEADER_ROOM) as u64;
        let limit = self.max_body.map_or(nats_limit, |m| m.min(nats_limit));
        let (parts, body) = req.into_parts();
        let body: Bytes = match Limited::new(body, limit as usize).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return reply::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {limit} bytes, the most an asynchronous call can hold"),
                );
            }
            Err(e) => return reply::text(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")),
        };
        // The caller's own id when it gave one, as on the synchronous path.
        let call_id = call_id(&parts.headers).to_str().unwrap_or_default().to_string();
        let path = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let call =
            Call { method: parts.method, path, headers: parts.headers, call_id: Some(call_id.clone()), callback };
        let function = format!("{name}.{namespace}");
        let subject = queue.names.calls_subject(namespace, name);
        let stored = async {
            let ack = queue.js.publish_with_headers(subject, message::encode(&call), body).await?;
            ack.await.map(|_| ())
        };
        if let Err(e) = stored.await {
            let why = flint_http::error_chain(&e);
            tracing::warn!(%function, error = %why, "asynchronous call not stored");
            return if why.contains("maximum messages") {
                reply::retry_after(
                    StatusCode::TOO_MANY_REQUESTS,
                    5,
                    format!("the asynchronous queue is full ({}); nothing was stored", queue.url),
                )
            } else {
                reply::retry_after(
                    StatusCode::SERVICE_UNAVAILABLE,
                    5,
                    format!("the call could not be stored in NATS ({}): {why}; nothing was stored", queue.url),
                )
            };
        }
        self.metrics.queue.queued.get_or_create(&crate::metrics::FunctionLabels { function_name: function }).inc();
        self.lanes.stored(namespace, name);
        let mut response = reply::empty(StatusCode::ACCEPTED);
        response.headers_mut().insert("x-call-id", HeaderValue::from_str(&call_id).expect("hex and dashes"));
        response
    }
}
