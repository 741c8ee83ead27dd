//! The operator's metrics (`/metrics` on the telemetry port): reconciles by result, errors by
//! kind, reconcile duration.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The HTTP method, or `WATCH` for a watch.
    pub method: &'static str,
}

pub struct Metrics {
    pub reconciles: Family<ResultLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub duration: Histogram,
    /// Requests the operator sent to the API server.
    pub api_requests: Family<MethodLabel, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let api_requests = Family::<MethodLabel, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "flint_operator_api_requests",
            "Requests sent to the API server, by method",
            api_requests.clone(),
        );
        registry.register("flint_operator_reconciles", "Reconciles by result", reconciles.clone());
        registry.register("flint_operator_reconcile_errors", "Failed reconciles by error kind", errors.clone());
        registry.register("flint_operator_reconcile_duration_seconds", "Time one reconcile took", duration.clone());
        Metrics { reconciles, errors, duration, api_requests, registry }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Counts one request to the API server.
    pub fn api_request<B>(&self, req: &http::Request<B>) {
        let watch = req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        let method = match *req.method() {
            _ if watch => "WATCH",
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        self.api_requests.get_or_create(&MethodLabel { method }).inc();
    }

    /// Measures one reconcile; records its duration when dropped.
    pub fn timer(&self) -> Timer<'_> {
        Timer { metrics: self, start: Instant::now() }
    }
}

pub struct Timer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.start.elapsed().as_secs_f64());
    }
}
