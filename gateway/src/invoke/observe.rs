//! One invocation's record: metrics under OpenFaaS's and Flint's names and one log line with
//! function, version, status, duration and cold-start flag, written when the response body is
//! done (or dropped), so a streamed response counts for its whole length.

use std::{sync::Arc, time::Instant};

use flint_http::body::Watch;

use crate::{
    endpoint::Load,
    metrics::{CodeLabels, FunctionLabels, Metrics, VersionCodeLabels, VersionLabels},
    provider::Version,
};

pub struct Observation {
    pub metrics: Arc<Metrics>,
    pub function: String,
    pub version: Version,
    pub start: Instant,
    pub cold_start: bool,
    pub code: u16,
    /// The replica this went to, whose in-flight count it holds.
    pub load: Option<Load>,
}

impl Observation {
    /// Starts counting a request in flight for `function` (`name.namespace`).
    pub fn begin(metrics: Arc<Metrics>, function: String, version: Version) -> Self {
        metrics.started.get_or_create(&FunctionLabels { function_name: function.clone() }).inc();
        let labels = VersionLabels { function_name: function.clone(), version: version.as_str() };
        // Arrivals are the autoscaler's request rate (`metric: rps`) and its sign of activity.
        metrics.arrivals.get_or_create(&labels).inc();
        metrics.in_flight.get_or_create(&labels).inc();
        Observation { metrics, function, version, start: Instant::now(), cold_start: false, code: 499, load: None }
    }

    /// The request now goes to this replica (and no longer counts on the one before).
    pub fn on(&mut self, load: Load) {
        self.load = Some(load);
    }
}

impl Watch for Observation {}

impl Drop for Observation {
    fn drop(&mut self) {
        self.load = None;
        let m = &self.metrics;
        let elapsed = self.start.elapsed();
        let code = self.code.to_string();
        let version = self.version.as_str();
        let labels = CodeLabels { function_name: self.function.clone(), code: code.clone() };
        m.invocations.get_or_create(&labels).inc();
        m.count_invocation(&self.function);
        m.seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        let labels = VersionCodeLabels { function_name: self.function.clone(), version, code };
        m.version_requests.get_or_create(&labels).inc();
        m.version_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        m.in_flight.get_or_create(&VersionLabels { function_name: self.function.clone(), version }).dec();
        if self.version == Version::Canary {
            m.canary_window.record(&self.function, elapsed, self.code < 500);
        }
        tracing::info!(
            function = %self.function,
            version,
            status = self.code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            cold_start = self.cold_start,
            "invocation"
        );
    }
}
