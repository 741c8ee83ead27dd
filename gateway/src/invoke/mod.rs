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
        if let (Some(max), Some(len)) = (self.settings.max_body, content_length(&req))
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
        let mut upstream = req.map(|body| self.limit(body, over_limit.clone()));
        let timeout = route.function.spec.timeout.get() + TIMEOUT_MARGIN;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tried = Vec::new();
        let response = loop {
            let untried: Vec<_> = ready.iter().filter(|e| !tried.contains(&e.addr)).cloned().collect();
            let Some(endpoint) = pick::endpoint(&untried) else {
                observation.code = 502;
                return reply::text(
                    StatusCode::BAD_GATEWAY,
                    format!("no replica of {name}.{namespace} could be reached"),
                );
            };
            forward::prepare(&mut upstream, endpoint.addr, &path_and_query, peer, &call_id);
            observation.on(endpoint.clone());
            match tokio::time::timeout_at(deadline, self.pool.send(endpoint.addr, upstream)).await {
                Err(_) => {
                    observation.code = 504;
                    let secs = flint_api::duration::format(route.function.spec.timeout.get());
                    return reply::text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("function {name}.{namespace} timed out after {secs}"),
                    );
                }
                Ok(Ok(response)) => break response,
                Ok(Err(SendError::NotSent(back, reason))) => {
                    tracing::debug!(function = %name, replica = %endpoint.addr, %reason, "replica unreachable; trying another");
                    tried.push(endpoint.addr);
                    upstream = *back;
                    // The replica may have been replaced meanwhile: look again.
                    ready = endpoints.borrow().clone();
                }
                Ok(Err(SendError::Failed(reason))) => {
                    let (status, message) = if over_limit.load(Ordering::Relaxed) {
                        (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body is over the limit of {} bytes", self.settings.max_body.unwrap_or(0)),
                        )
                    } else {
                        (StatusCode::BAD_GATEWAY, format!("function {name}.{namespace} failed: {reason}"))
                    };
                    observation.code = status.as_u16();
                    return reply::text(status, message);
                }
            }
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

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}
