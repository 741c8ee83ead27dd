//! The request path: `/function/NAME[.NAMESPACE][/sub/path]` → pick a version (canary by
//! weight, or forced by header) → a ready replica (least in flight of two) → the watchdog.
//! A version with no ready replica is scaled from zero and the request held until one is
//! ready. A request that never left (refused connection, closed pooled connection) is sent to
//! another replica.

mod cold;
mod forward;
mod observe;
mod pick;
mod pool;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use flint_http::{Body, BoxError, body::watched};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming, header::CONTENT_LENGTH};

use self::{
    cold::{ColdStarts, Wait},
    observe::Observation,
    pool::{Pool, SendError},
};
use crate::{
    metrics::{Metrics, VersionLabels},
    provider::{Provider, Version},
    reply,
};

pub struct Settings {
    /// Longest a request waits for a replica when its version is at zero.
    pub cold_start_timeout: Duration,
    /// Requests that may wait for one version at once; more get 429.
    pub max_waiting: usize,
    /// Largest request body; `None`: no limit.
    pub max_body: Option<u64>,
}

pub struct Invoker {
    provider: Arc<dyn Provider>,
    metrics: Arc<Metrics>,
    pool: Arc<Pool>,
    cold: ColdStarts,
    settings: Settings,
}

/// Extra time the gateway gives a replica beyond the function's timeout: the watchdog answers
/// 504 itself at the timeout; this only catches a replica that stopped answering at all.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

impl Invoker {
    pub fn new(provider: Arc<dyn Provider>, metrics: Arc<Metrics>, settings: Settings) -> Self {
        Invoker { provider, metrics, pool: Arc::new(Pool::default()), cold: ColdStarts::default(), settings }
    }

    /// Requests waiting for a replica of this version now.
    pub fn waiting(&self, namespace: &str, name: &str, version: Version) -> usize {
        self.cold.waiting(namespace, name, version)
    }

    /// `target` is what follows `/function/`: `NAME[.NAMESPACE][/rest]`.
    pub async fn invoke(&self, req: Request<Incoming>, target: &str, peer: SocketAddr) -> Response<Body> {
        let (function, rest) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        let (name, namespace) = function.split_once('.').unwrap_or((function, self.provider.default_namespace()));
        let Some(route) = self.provider.route(namespace, name) else {
            return reply::text(
                StatusCode::NOT_FOUND,
                format!("function {name}.{namespace} not found (GET /system/functions lists what is deployed)"),
            );
        };
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        if let (Some(max), Some(len)) = (self.settings.max_body, body_length(req.headers()))
            && len > max
        {
            return reply::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {len} bytes is over the limit of {max} bytes"),
            );
        }

        let version = pick::version(&route, req.headers());
        let endpoints = match version {
            Version::Stable => route.stable.clone(),
            Version::Canary => route.canary.clone().expect("pick chooses canary only when there is one"),
        };
        let label = format!("{name}.{namespace}");
        let mut observation = Observation::begin(self.metrics.clone(), label.clone(), version);
        let mut ready = endpoints.borrow().clone();
        if ready.is_empty() {
            observation.cold_start = true;
            let waited = self
                .cold
                .wait(
                    &*self.provider,
                    (namespace, name, version),
                    endpoints.clone(),
                    self.settings.max_waiting,
                    self.settings.cold_start_timeout,
                )
                .await;
            let labels = VersionLabels { function_name: label, version: version.as_str() };
            self.metrics.cold_starts.get_or_create(&labels).inc();
            self.metrics.cold_start_seconds.get_or_create(&labels).observe(observation.start.elapsed().as_secs_f64());
            ready = match waited {
                Wait::Ready(ready) => ready,
                Wait::Full => {
                    observation.code = 429;
                    return reply::retry_after(
                        StatusCode::TOO_MANY_REQUESTS,
                        1,
                        format!("too many requests are waiting for {name}.{namespace} to start; retry shortly"),
                    );
                }
                Wait::TimedOut => {
                    observation.code = 503;
                    let secs = self.settings.cold_start_timeout.as_secs_f64();
                    return reply::retry_after(
                        StatusCode::SERVICE_UNAVAILABLE,
                        1,
                        format!("function {name}.{namespace} did not become ready in {secs}s"),
                    );
                }
            };
        }

        let call_id = forward::call_id(req.headers());
        let over_limit = Arc::new(AtomicBool::new(false));
        let (parts, body) = req.into_parts();
        // A small body is read first so that the request can be sent again if a replica dies
        // under it; a large one streams through and is sent once.
        let mut payload = match body_length(&parts.headers) {
            Some(len) if len <= REPLAY_LIMIT => match Limited::new(body, REPLAY_LIMIT as usize).collect().await {
                Ok(collected) => Payload::Replayable(collected.to_bytes()),
                Err(e) => {
                    observation.code = 400;
                    return reply::text(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"));
                }
            },
            _ => Payload::Streaming(Some(self.limit(body, over_limit.clone()))),
        };
        let deadline = tokio::time::Instant::now() + route.function.spec.timeout.get() + TIMEOUT_MARGIN;
        let mut tried = Vec::new();
        let mut given_back: Option<Request<Body>> = None;
        let mut resent = 0;
        let response = loop {
            let untried: Vec<_> = ready.iter().filter(|e| !tried.contains(&e.addr)).cloned().collect();
            let Some(endpoint) = pick::endpoint(&untried) else {
                observation.code = 502;
                return reply::text(
                    StatusCode::BAD_GATEWAY,
                    format!("no replica of {name}.{namespace} could be reached"),
                );
            };
            let mut upstream = match (given_back.take(), &mut payload) {
                (Some(back), _) => back,
                (None, Payload::Replayable(bytes)) => {
                    Request::from_parts(parts.clone(), flint_http::full(bytes.clone()))
                }
                (None, Payload::Streaming(body)) => Request::from_parts(
                    parts.clone(),
                    body.take().expect("a streamed body is sent again only when given back"),
                ),
            };
            forward::prepare(&mut upstream, endpoint.addr, &path_and_query, peer, &call_id);
            observation.on(endpoint.clone());
            let failure = match tokio::time::timeout_at(deadline, self.pool.send(endpoint.addr, upstream)).await {
                Ok(Ok(response)) => break response,
                Err(_) => {
                    observation.code = 504;
                    let limit = flint_api::duration::format(route.function.spec.timeout.get());
                    return reply::text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("function {name}.{namespace} timed out after {limit}"),
                    );
                }
                Ok(Err(SendError::NotSent(back, reason))) => {
                    given_back = Some(*back);
                    reason
                }
                Ok(Err(SendError::Failed { reason, reused })) => {
                    let replayable = matches!(payload, Payload::Replayable(_));
                    if !(reused && replayable && resent < MAX_RESENDS) {
                        let (status, message) = if over_limit.load(Ordering::Relaxed) {
                            let max = self.settings.max_body.unwrap_or(0);
                            (StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {max} bytes"))
                        } else {
                            (StatusCode::BAD_GATEWAY, format!("function {name}.{namespace} failed: {reason}"))
                        };
                        observation.code = status.as_u16();
                        return reply::text(status, message);
                    }
                    resent += 1;
                    reason
                }
            };
            tracing::debug!(function = %name, replica = %endpoint.addr, reason = %failure, "replica unreachable; trying another");
            tried.push(endpoint.addr);
            // The replica may have been replaced meanwhile: look again.
            ready = endpoints.borrow().clone();
        };
        let mut response = response;
        flint_http::headers::strip_hop_by_hop(response.headers_mut());
        response.headers_mut().insert(forward::CALL_ID, call_id);
        observation.code = response.status().as_u16();
        response.map(|body| watched(body, observation))
    }

    fn limit(&self, body: Incoming, over: Arc<AtomicBool>) -> Body {
        match self.settings.max_body {
            None => body.map_err(BoxError::from).boxed_unsync(),
            Some(max) => Limited::new(body, max as usize)
                .map_err(move |e| {
                    if e.is::<LengthLimitError>() {
                        over.store(true, Ordering::Relaxed);
                    }
                    e
                })
                .boxed_unsync(),
        }
    }
}

/// The request body, read whole when small enough to send again.
enum Payload {
    Replayable(bytes::Bytes),
    Streaming(Option<Body>),
}

/// Bodies up to this size are read before sending, so they can be sent again.
const REPLAY_LIMIT: u64 = 64 * 1024;
/// Times a replayable request is sent again after its replica failed under it.
const MAX_RESENDS: usize = 2;

/// The body's length when known up front: its Content-Length, or 0 for a request with
/// neither Content-Length nor Transfer-Encoding (which has no body).
fn body_length(headers: &hyper::HeaderMap) -> Option<u64> {
    match headers.get(CONTENT_LENGTH) {
        Some(len) => len.to_str().ok()?.parse().ok(),
        None if headers.contains_key(hyper::header::TRANSFER_ENCODING) => None,
        None => Some(0),
    }
}
