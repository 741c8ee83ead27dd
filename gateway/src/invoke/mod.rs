//! The request path: `/function/NAME[.NAMESPACE][/sub/path]` → pick a version (canary by
//! weight, or forced by header) → a ready replica (least in flight of two) → the watchdog.
//! A version with no ready replica is scaled from zero and the request held until one is
//! ready. A replica that fails a request without answering is handled by one rule (`resend`):
//! what never left or never ran goes to another replica; what may have run goes again only if
//! it is idempotent.

mod cold;
mod error;
mod forward;
mod observe;
mod payload;
mod pick;
pub mod resend;
pub mod throttle;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use flint_http::{Body, body::watched};
use hyper::{Request, Response};
use tokio::time::Instant;

use self::{
    cold::{ColdStarts, Wait},
    observe::Observation,
    payload::Payload,
};
pub use self::{
    error::{InvokeError, THROTTLED},
    forward::call_id,
};
use crate::{
    endpoint::{Endpoint, Endpoints, Failure, Pool},
    metrics::{Metrics, VersionLabels},
    provider::{Provider, Route, Version},
    reply,
};

pub struct Settings {
    /// Longest a request waits for a replica when its version is at zero.
    pub cold_start_timeout: Duration,
    /// Requests that may wait for one version at once; more get 429.
    pub max_waiting: usize,
    /// Largest request body; `None`: no limit.
    pub max_body: Option<u64>,
    /// Longest a connection to a replica may take to open before another replica is tried.
    pub connect_timeout: Duration,
    /// Connections to a replica idle this long are closed.
    pub idle_timeout: Duration,
    /// Said when no replica could be reached and the likely cause is known (the gateway runs
    /// outside the cluster whose pods it calls).
    pub unreachable_hint: Option<&'static str>,
    /// How a `.NAMESPACE` in the path is read.
    pub namespaces: crate::namespace::Namespaces,
    /// The gateway replicas sharing each function's throttle.
    pub peers: crate::peers::Peers,
}

pub struct Invoker {
    provider: Arc<dyn Provider>,
    metrics: Arc<Metrics>,
    pool: Arc<Pool>,
    cold: ColdStarts,
    throttles: throttle::Throttles,
    settings: Settings,
}

/// How long a request still waits on a replica after its process was seen to end.
const DEATH_GRACE: Duration = Duration::from_secs(1);

/// Extra time the gateway gives a replica beyond the function's timeout: the watchdog answers
/// 504 itself at the timeout; this only catches a replica that stopped answering at all.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

impl Invoker {
    pub fn new(provider: Arc<dyn Provider>, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let pool = Pool::new(settings.connect_timeout, settings.idle_timeout, metrics.replica_connections.clone());
        let throttles = throttle::Throttles::new(settings.peers.clone());
        Invoker { provider, metrics, pool, cold: ColdStarts::default(), throttles, settings }
    }

    /// Requests waiting for a replica of this version now.
    pub fn waiting(&self, namespace: &str, name: &str, version: Version) -> usize {
        self.cold.waiting(namespace, name, version)
    }

    /// What a function's throttle holds now (`name.namespace`).
    pub fn throttle_usage(&self, function: &str) -> throttle::Usage {
        self.throttles.usage(function)
    }

    /// `target` is what follows `/function/`: `NAME[.NAMESPACE][/rest]`.
    /// `B`: a front-door request's body, or a stored or scheduled call's (`client`).
    pub async fn invoke<B>(&self, req: Request<B>, target: &str, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<flint_http::BoxError>,
    {
        let Target { name, namespace, rest } = Target::parse(target);
        let namespace = self.settings.namespaces.resolve(&*self.provider, namespace);
        let Some(route) = self.provider.route(namespace, name) else {
            return reply::no_function(name, namespace);
        };
        let function = format!("{name}.{namespace}");
        let arrived = std::time::Instant::now();
        let exists = |f: &str| f.split_once('.').is_some_and(|(n, ns)| self.provider.route(ns, n).is_some());
        let place = match self.throttles.admit(&function, &route.function.spec, exists).await {
            Ok(place) => place,
            // Not an invocation: counted by reason only, so that neither the autoscaler nor the
            // canary analysis reads a refusal as the function's traffic or its failure.
            Err(why) => {
                self.metrics.throttled(&function, why.reason());
                return InvokeError::Throttled(function, why).into_response();
            }
        };
        let version = pick::version(&route, req.headers());
        let mut observation = Observation::begin(&self.metrics, &function, version);
        // The wait for a place is part of what the caller saw.
        observation.start = arrived;
        observation.place = place;
        let call = Call { namespace, name, version, rest, peer };
        match self.forward(req, &route, &call, &mut observation).await {
            Ok(mut response) => {
                observation.code = response.status().as_u16();
                flint_http::headers::strip_hop_by_hop(response.headers_mut());
                if observation.cold_start {
                    // Said to the caller (and the portal's invoke form): this one waited for a start.
                    response
                        .headers_mut()
                        .insert("x-flint-cold-start", hyper::header::HeaderValue::from_static("true"));
                }
                response.map(|body| watched(body, observation))
            }
            Err(e) => {
                observation.code = e.status().as_u16();
                e.into_response()
            }
        }
    }

    async fn forward<B>(
        &self,
        req: Request<B>,
        route: &Route,
        call: &Call<'_>,
        observation: &mut Observation,
    ) -> Result<Response<Body>, InvokeError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<flint_http::BoxError>,
    {
        let handles = observation.metrics.clone();
        let function = &handles.function;
        if let (Some(max), Some(len)) = (self.settings.max_body, payload::declared_length(req.headers()))
            && len > max
        {
            return Err(InvokeError::DeclaredTooLarge(len, max));
        }
        let mut endpoints = match call.version {
            Version::Stable => route.stable.clone(),
            Version::Canary => route.canary.clone().expect("pick chooses canary only when there is one"),
        };
        if endpoints.borrow().is_empty() {
            observation.cold_start = true;
            self.cold_start(call, endpoints.clone(), observation).await?;
        }
        let call_id = forward::call_id(req.headers());
        let (parts, body) = req.into_parts();
        let idempotent = resend::idempotent(&parts.method, &parts.headers);
        let over = Arc::new(AtomicBool::new(false));
        let mut payload = Payload::read(body, self.settings.max_body, over.clone()).await.map_err(|e| match e {
            payload::ReadError::TooLarge(max) => InvokeError::TooLarge(max),
            payload::ReadError::Failed(why) => InvokeError::BadBody(why),
        })?;
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{}?{q}", call.rest),
            None => call.rest.to_string(),
        };
        let timeout = route.function.spec.timeout.get();
        let deadline = Instant::now() + timeout + TIMEOUT_MARGIN;
        // Waiting for another replica when every known one failed is bounded like a cold start.
        let replaced_by = Instant::now() + self.settings.cold_start_timeout.min(timeout + TIMEOUT_MARGIN);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut given_back: Option<Request<Body>> = None;
        let mut resent = 0;
        let mut last_failure = String::from("no replica was ready");
        loop {
            let Some(endpoint) = next_endpoint(&mut endpoints, &tried, replaced_by).await else {
                if let Some(hint) = self.settings.unreachable_hint {
                    last_failure.push_str("; ");
                    last_failure.push_str(hint);
                }
                return Err(InvokeError::Unreachable(function.clone(), last_failure));
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
            forward::prepare(&mut upstream, endpoint.addr, &path_and_query, call.peer, &call_id);
            observation.on(endpoint.begin());
            let written_at = Instant::now();
            let sent = tokio::select! {
                sent = tokio::time::timeout_at(deadline, self.pool.send(&endpoint, upstream)) => sent,
                // A replica whose process ended never answers: whatever still holds the
                // connection open (it normally closes within milliseconds), stop waiting on it.
                _ = async { endpoint.dead().await; tokio::time::sleep(DEATH_GRACE).await } => {
                    let reason = "the replica's process ended with the request on it".to_string();
                    Ok(Err(Failure::Written { reason, reset: false }))
                }
            };
            match sent {
                Ok(Ok(mut response)) => {
                    response.headers_mut().insert(forward::CALL_ID, call_id);
                    return Ok(response);
                }
                Err(_) => {
                    tracing::debug!(function = %function, replica = %endpoint.addr, call_id = ?call_id, "no answer before the deadline");
                    return Err(InvokeError::Timeout(function.clone(), flint_api::duration::format(timeout)));
                }
                Ok(Err(Failure::NotSent(back, reason))) => {
                    tracing::debug!(function = %function, replica = %endpoint.addr, call_id = ?call_id, %reason, "not sent; trying another replica");
                    given_back = Some(*back);
                    last_failure = reason;
                }
                Ok(Err(Failure::Written { reason, reset })) => {
                    if over.load(Ordering::Relaxed) {
                        return Err(InvokeError::TooLarge(self.settings.max_body.unwrap_or(0)));
                    }
                    let written = resend::Written { endpoint: &endpoint, at: written_at, reset, idempotent };
                    let again = resend::why_again(&written);
                    match again {
                        Some(why) if payload.replayable() && resent < resend::MAX_RESENDS => {
                            tracing::debug!(function = %function, replica = %endpoint.addr, call_id = ?call_id, %reason, why, "sending the request to another replica");
                            resent += 1;
                            last_failure = reason;
                        }
                        None if payload.replayable() => {
                            tracing::debug!(function = %function, replica = %endpoint.addr, call_id = ?call_id, %reason, "failed; not sent again");
                            return Err(InvokeError::FailedUnderway(function.clone(), reason));
                        }
                        _ => return Err(InvokeError::Failed(function.clone(), reason)),
                    }
                }
            }
            tried.push(endpoint.addr);
        }
    }

    /// Holds the request until its version has a ready replica.
    async fn cold_start(
        &self,
        call: &Call<'_>,
        endpoints: Endpoints,
        observation: &Observation,
    ) -> Result<(), InvokeError> {
        let key = (call.namespace, call.name, call.version);
        let timeout = self.settings.cold_start_timeout;
        let labels =
            VersionLabels { function_name: observation.function().to_string(), version: call.version.as_str() };
        // Exported so that the gateway replica that autoscales sees requests waiting here.
        let waiting = WaitingGauge::enter(self.metrics.waiting.get_or_create(&labels).clone());
        let waited = self.cold.wait(&*self.provider, key, endpoints, self.settings.max_waiting, timeout).await;
        drop(waiting);
        self.metrics.cold_starts.get_or_create(&labels).inc();
        self.metrics.cold_start_seconds.get_or_create(&labels).observe(observation.start.elapsed().as_secs_f64());
        match waited {
            Wait::Ready => Ok(()),
            Wait::Full => Err(InvokeError::TooManyWaiting(observation.function().to_string())),
            Wait::TimedOut => {
                Err(InvokeError::NotReady(observation.function().to_string(), flint_api::duration::format(timeout)))
            }
        }
    }
}

/// One request counted in `flint_function_waiting` while it waits (also if it is dropped).
struct WaitingGauge(prometheus_client::metrics::gauge::Gauge);

impl WaitingGauge {
    fn enter(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        WaitingGauge(gauge)
    }
}

impl Drop for WaitingGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What follows `/function/`: `NAME[.NAMESPACE][/rest]`.
#[derive(Debug, PartialEq)]
pub struct Target<'a> {
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    /// The path below the function, `/` at least.
    pub rest: &'a str,
}

impl<'a> Target<'a> {
    pub fn parse(target: &'a str) -> Self {
        let (function, rest) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        let (name, namespace) = function.split_once('.').map_or((function, None), |(n, ns)| (n, Some(ns)));
        Target { name, namespace, rest }
    }
}

/// What one invocation asked for.
struct Call<'a> {
    namespace: &'a str,
    name: &'a str,
    version: Version,
    /// The path below the function (`/` at least).
    rest: &'a str,
    peer: SocketAddr,
}

/// A ready replica not tried yet for this request; when every one known was tried, waits until
/// `until` for the set to change (a crashed replica replaced, a new one ready).
async fn next_endpoint(endpoints: &mut Endpoints, tried: &[SocketAddr], until: Instant) -> Option<Arc<Endpoint>> {
    loop {
        {
            let ready = endpoints.borrow_and_update();
            let found = if tried.is_empty() {
                pick::endpoint(&ready)
            } else {
                let untried: Vec<_> = ready.iter().filter(|e| !tried.contains(&e.addr)).cloned().collect();
                pick::endpoint(&untried)
            };
            if found.is_some() {
                return found;
            }
        }
        if !matches!(tokio::time::timeout_at(until, endpoints.changed()).await, Ok(Ok(()))) {
            return None;
        }
    }
}
