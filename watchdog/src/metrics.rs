//! Metrics (served on `metrics_port` at `/metrics`) and the one log line per invocation, both
//! written when the response body is done, so they count what the caller really got.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use flint_http::body::{Watch, watched};
use futures::future::BoxFuture;
use hyper::Method;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tower::{Layer, Service};

use crate::{
    error::InvokeError,
    stack::{Req, Res, ResFuture},
};

/// Methods as a fixed label set: a client cannot grow our series with made-up methods.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    PATCH,
    OPTIONS,
    OTHER,
}

impl From<&Method> for MethodLabel {
    fn from(m: &Method) -> Self {
        match *m {
            Method::GET => Self::GET,
            Method::HEAD => Self::HEAD,
            Method::POST => Self::POST,
            Method::PUT => Self::PUT,
            Method::DELETE => Self::DELETE,
            Method::PATCH => Self::PATCH,
            Method::OPTIONS => Self::OPTIONS,
            _ => Self::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub code: u16,
    pub method: MethodLabel,
}

pub struct Metrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    in_flight: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let requests = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        let in_flight = Gauge::default();
        let mut registry = Registry::default();
        registry.register("http_requests", "Invocations by status code and method", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Invocation duration, to the end of the response body",
            duration.clone(),
        );
        registry.register("http_requests_in_flight", "Invocations in flight", in_flight.clone());
        Self { requests, duration, in_flight, registry }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[derive(Clone)]
pub struct ObserveLayer(Arc<Metrics>);

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self(metrics)
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Req> for Observe<S>
where
    S: Service<Req, Response = Res, Future = ResFuture, Error = InvokeError>,
{
    type Response = Res;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Res, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every service below is always ready; see `stack`.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let metrics = self.metrics.clone();
        metrics.in_flight.inc();
        let mut observation = Observation {
            metrics,
            method: req.method().clone(),
            // Shares the request's bytes: nothing is copied for a line that may not be written.
            uri: req.uri().clone(),
            start: Instant::now(),
            // Until a response exists, the caller is the one who went away (nginx's 499).
            code: 499,
            bytes: 0,
            cut_short: false,
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    if error.status().is_server_error() {
                        tracing::warn!(method = %observation.method, path = %observation.uri.path(), %error, "invocation failed");
                    }
                    error.into_response()
                }
            };
            observation.code = response.status().as_u16();
            Ok(response.map(|body| watched(body, observation)))
        })
    }
}

/// One invocation, recorded when its response body is done or dropped.
struct Observation {
    metrics: Arc<Metrics>,
    method: Method,
    uri: hyper::Uri,
    start: Instant,
    code: u16,
    bytes: u64,
    cut_short: bool,
}

impl Watch for Observation {
    fn on_data(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }
    fn on_error(&mut self) {
        self.cut_short = true;
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let labels = Labels { code: self.code, method: (&self.method).into() };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
        tracing::info!(
            method = %self.method,
            path = %self.uri.path(),
            status = self.code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            bytes = self.bytes,
            cut_short = self.cut_short,
            "invocation"
        );
    }
}
