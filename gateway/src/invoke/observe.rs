//! One invocation's record: metrics under OpenFaaS's and Flint's names and one log line with
//! function, version, status, duration and cold-start flag, written when the response body is
//! done (or dropped), so a streamed response counts for its whole length.

use std::{sync::Arc, time::Instant};

use flint_http::body::Watch;

use crate::{endpoint::Load, metrics::VersionMetrics, provider::Version};

pub struct Observation {
    pub metrics: Arc<VersionMetrics>,
    /// Where canary outcomes go, for the canary analysis.
    canary_window: Option<Arc<crate::canary::Window>>,
    pub start: Instant,
    pub cold_start: bool,
    pub code: u16,
    /// The replica this went to, whose in-flight count it holds.
    pub load: Option<Load>,
    /// Its place among the function's `throttle.maxInFlight`, held until the response is sent.
    pub place: super::throttle::Place,
}

impl Observation {
    /// Starts counting a request in flight; arrivals are also the autoscaler's request rate
    /// (`metric: rps`) and its sign of activity.
    pub fn begin(metrics: &crate::metrics::Metrics, function: &str, version: Version) -> Self {
        let handles = metrics.version(function, version);
        handles.arrive();
        let canary_window = (version == Version::Canary).then(|| metrics.canary_window.clone());
        Observation {
            metrics: handles,
            canary_window,
            start: Instant::now(),
            cold_start: false,
            code: 499,
            load: None,
            place: None,
        }
    }

    /// `name.namespace`.
    pub fn function(&self) -> &str {
        &self.metrics.function
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
        self.place = None;
        let elapsed = self.start.elapsed();
        self.metrics.finish(self.code, elapsed);
        self.metrics.recent.answered(self.code, elapsed, self.cold_start);
        if let Some(window) = &self.canary_window {
            window.record(&self.metrics.function, elapsed, self.code < 500);
        }
        tracing::info!(
            function = %self.metrics.function,
            version = self.metrics.version.as_str(),
            status = self.code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            cold_start = self.cold_start,
            "invocation"
        );
    }
}
