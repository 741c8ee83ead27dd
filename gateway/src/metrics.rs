//! The gateway's metrics, under OpenFaaS's names so existing dashboards work
//! (`gateway_function_invocation_total`, `gateway_functions_seconds`,
//! `gateway_function_invocation_started`, `gateway_service_count`), plus Flint's own per version.
//! Label values come from deployed functions only: a request for an unknown name is refused
//! before it could add a series.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use flint_api::Version;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub function_name: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub function_name: String,
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    pub function_name: String,
    pub version: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AvoidedLabels {
    pub function_name: String,
    pub version: &'static str,
    /// `pre_warm` (the learned idle policy) or `scheduled` (a scheduled minimum).
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub function_name: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionCodeLabels {
    pub function_name: String,
    pub version: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub function_name: String,
    /// `async` (an `/async-function/` call) or `nats` (a queue trigger's message).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub function_name: String,
    pub source: &'static str,
    /// `succeeded` (a 2xx) or `dead_lettered`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// `delivered` (the callback URL answered 2xx) or `failed`.
    pub outcome: &'static str,
}

/// Asynchronous calls and queue-trigger messages, from stored to done.
pub struct QueueMetrics {
    /// Calls stored in JetStream (answered 202).
    pub queued: Family<FunctionLabels, Counter>,
    /// Calls waiting in the stream, as last seen by a worker.
    pub pending: Family<FunctionLabels, Gauge>,
    pub in_progress: Family<QueueLabels, Gauge>,
    pub finished: Family<OutcomeLabels, Counter>,
    /// Attempts that will be made again after a back-off.
    pub retried: Family<QueueLabels, Counter>,
    /// From stored to the first attempt.
    pub age: Family<QueueLabels, Histogram>,
    pub callbacks: Family<CallbackLabels, Counter>,
}

pub struct Metrics {
    pub queue: QueueMetrics,
    pub invocations: Family<CodeLabels, Counter>,
    pub seconds: Family<CodeLabels, Histogram>,
    /// A counter by meaning; a gauge on the wire so that the sample keeps OpenFaaS's name
    /// (OpenMetrics would rename a counter's sample to `..._total`).
    pub started: Family<FunctionLabels, Gauge>,
    pub service_count: Family<FunctionLabels, Gauge>,
    pub in_flight: Family<VersionLabels, Gauge>,
    /// Requests waiting for a version to scale from zero, by version.
    pub waiting: Family<VersionLabels, Gauge>,
    /// Requests arrived, by version: the autoscaler's request rate.
    pub arrivals: Family<VersionLabels, Counter>,
    pub desired_replicas: Family<VersionLabels, Gauge>,
    pub actual_replicas: Family<VersionLabels, Gauge>,
    pub scaling: Family<ScalingLabels, Counter>,
    pub version_requests: Family<VersionCodeLabels, Counter>,
    pub version_seconds: Family<VersionCodeLabels, Histogram>,
    pub cold_starts: Family<VersionLabels, Counter>,
    pub cold_start_seconds: Family<VersionLabels, Histogram>,
    /// Replicas brought up ahead of a predicted call; those the call came to; and first calls
    /// after a quiet spell that found a replica ready that only the policy or a schedule kept.
    pub pre_warms: Family<VersionLabels, Counter>,
    pub pre_warms_used: Family<VersionLabels, Counter>,
    pub cold_starts_avoided: Family<AvoidedLabels, Counter>,
    /// The canary's effective weight.
    pub canary_weight: Family<FunctionLabels, Gauge>,
    /// Requests refused by a function's `paused` or `throttle`, by reason.
    throttled: Family<ReasonLabels, Counter>,
    /// Open keep-alive connections to replicas, all functions together.
    pub replica_connections: Gauge,
    /// Recent canary responses, for the canary analysis.
    pub canary_window: Arc<crate::canary::Window>,
    /// Each function's last minutes, second by second, for the portal.
    pub history: crate::history::History,
    /// Each function version's handles, looked up by label once rather than per request.
    versions: RwLock<HashMap<String, [Option<Arc<VersionMetrics>>; 2]>>,
    registry: Registry,
}

/// The metrics one function version writes on every request, as handles: a request touches
/// no family map and allocates no label, and takes one read lock (its code's handles).
pub struct VersionMetrics {
    pub function: String,
    pub version: Version,
    /// The function's recent seconds (both versions share them).
    pub recent: Arc<crate::history::Recent>,
    started: Gauge,
    arrivals: Counter,
    in_flight: Gauge,
    /// Invocations finished, for `invocationCount` in the REST API.
    finished: Counter,
    /// Per status code; a handful per version.
    codes: RwLock<Vec<(u16, Arc<CodeMetrics>)>>,
    families: Families,
}

struct CodeMetrics {
    invocations: Counter,
    seconds: Histogram,
    version_requests: Counter,
    version_seconds: Histogram,
}

/// The families a version's code handles come from.
#[derive(Clone)]
struct Families {
    invocations: Family<CodeLabels, Counter>,
    seconds: Family<CodeLabels, Histogram>,
    version_requests: Family<VersionCodeLabels, Counter>,
    version_seconds: Family<VersionCodeLabels, Histogram>,
}

impl VersionMetrics {
    /// A request arrived (and is in flight until `finish`).
    pub fn arrive(&self) {
        self.started.inc();
        self.arrivals.inc();
        self.in_flight.inc();
    }

    /// The request ended with `code` after `took`.
    pub fn finish(&self, code: u16, took: std::time::Duration) {
        let handles = self.code(code);
        let secs = took.as_secs_f64();
        handles.invocations.inc();
        handles.seconds.observe(secs);
        handles.version_requests.inc();
        handles.version_seconds.observe(secs);
        self.finished.inc();
        self.in_flight.dec();
    }

    fn code(&self, code: u16) -> Arc<CodeMetrics> {
        if let Some((_, h)) = self.codes.read().unwrap().iter().find(|(c, _)| *c == code) {
            return h.clone();
        }
        let f = &self.families;
        let (function, version) = (self.function.clone(), self.version.as_str());
        let labels = CodeLabels { function_name: function.clone(), code: code.to_string() };
        let version_labels = VersionCodeLabels { function_name: function, version, code: code.to_string() };
        let handles = Arc::new(CodeMetrics {
            invocations: f.invocations.get_or_create(&labels).clone(),
            seconds: f.seconds.get_or_create(&labels).clone(),
            version_requests: f.version_requests.get_or_create(&version_labels).clone(),
            version_seconds: f.version_seconds.get_or_create(&version_labels).clone(),
        });
        let mut codes = self.codes.write().unwrap();
        if let Some((_, h)) = codes.iter().find(|(c, _)| *c == code) {
            return h.clone();
        }
        codes.push((code, handles.clone()));
        handles
    }
}

fn age_buckets() -> Histogram {
    Histogram::new([0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0])
}

fn latency_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            queue: QueueMetrics {
                queued: Family::default(),
                pending: Family::default(),
                in_progress: Family::default(),
                finished: Family::default(),
                retried: Family::default(),
                age: Family::new_with_constructor(age_buckets),
                callbacks: Family::default(),
            },
            invocations: Family::default(),
            seconds: Family::new_with_constructor(latency_buckets),
            started: Family::default(),
            service_count: Family::default(),
            in_flight: Family::default(),
            arrivals: Family::default(),
            waiting: Family::default(),
            desired_replicas: Family::default(),
            actual_replicas: Family::default(),
            scaling: Family::default(),
            version_requests: Family::default(),
            version_seconds: Family::new_with_constructor(latency_buckets),
            cold_starts: Family::default(),
            cold_start_seconds: Family::new_with_constructor(latency_buckets),
            pre_warms: Family::default(),
            pre_warms_used: Family::default(),
            cold_starts_avoided: Family::default(),
            canary_weight: Family::default(),
            throttled: Family::default(),
            replica_connections: Gauge::default(),
            canary_window: Default::default(),
            history: Default::default(),
            versions: Default::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "gateway_function_invocation",
            "Invocations by function and status code",
            m.invocations.clone(),
        );
        registry.register(
            "gateway_functions_seconds",
            "Invocation duration by function and status code",
            m.seconds.clone(),
        );
        registry.register("gateway_function_invocation_started", "Invocations started", m.started.clone());
        registry.register("flint_function_arrivals", "Requests arrived by function and version", m.arrivals.clone());
        registry.register(
            "flint_function_waiting",
            "Requests waiting for a version to scale from zero",
            m.waiting.clone(),
        );
        registry.register(
            "flint_function_throttled",
            "Requests refused before reaching the function, by reason (paused, rate, queue_full, queue_timeout)",
            m.throttled.clone(),
        );
        registry.register(
            "flint_canary_weight",
            "Share of requests sent to the canary, in percent",
            m.canary_weight.clone(),
        );
        registry.register(
            "flint_autoscaler_desired_replicas",
            "Replicas the autoscaler wants",
            m.desired_replicas.clone(),
        );
        registry.register("flint_autoscaler_actual_replicas", "Replicas there are", m.actual_replicas.clone());
        registry.register(
            "flint_autoscaler_scaling_events",
            "Replica changes the autoscaler made, by reason",
            m.scaling.clone(),
        );
        registry.register(
            "flint_replica_connections",
            "Open connections from the gateway to function replicas",
            m.replica_connections.clone(),
        );
        registry.register("gateway_service_count", "Replicas of each function", m.service_count.clone());
        registry.register(
            "flint_function_in_flight",
            "Invocations in flight by function and version",
            m.in_flight.clone(),
        );
        registry.register(
            "flint_function_requests",
            "Invocations by function, version and status code",
            m.version_requests.clone(),
        );
        registry.register(
            "flint_function_seconds",
            "Invocation duration by function, version and status code",
            m.version_seconds.clone(),
        );
        registry.register(
            "flint_cold_starts",
            "Requests that waited for a version to scale from zero",
            m.cold_starts.clone(),
        );
        registry.register(
            "flint_cold_start_seconds",
            "Time requests waited for a replica at a cold start",
            m.cold_start_seconds.clone(),
        );
        registry.register(
            "flint_pre_warms",
            "Replicas the learned idle policy brought up ahead of a predicted call",
            m.pre_warms.clone(),
        );
        registry.register(
            "flint_pre_warms_used",
            "Pre-warmed replicas whose predicted call came while they were up",
            m.pre_warms_used.clone(),
        );
        registry.register(
            "flint_cold_starts_avoided",
            "First calls after a quiet spell that found a replica ready that only the pre-warm or a scheduled minimum kept",
            m.cold_starts_avoided.clone(),
        );
        let q = &m.queue;
        registry.register(
            "flint_async_queued",
            "Asynchronous calls stored in JetStream (answered 202)",
            q.queued.clone(),
        );
        registry.register("flint_async_pending", "Asynchronous calls waiting in the stream", q.pending.clone());
        registry.register(
            "flint_async_in_progress",
            "Asynchronous calls and trigger messages being invoked now",
            q.in_progress.clone(),
        );
        registry.register(
            "flint_async_finished",
            "Asynchronous calls and trigger messages done, by outcome (succeeded, dead_lettered)",
            q.finished.clone(),
        );
        registry.register("flint_async_retried", "Attempts to be made again after a back-off", q.retried.clone());
        registry.register("flint_async_queue_age_seconds", "Time from stored to the first attempt", q.age.clone());
        registry.register("flint_async_callbacks", "Callbacks by outcome (delivered, failed)", q.callbacks.clone());
        Metrics { registry, ..m }
    }

    /// A request to `function` refused by its `paused` or `throttle`, for `reason`.
    pub fn throttled(&self, function: &str, reason: &'static str) {
        self.throttled.get_or_create(&ReasonLabels { function_name: function.to_string(), reason }).inc();
    }

    /// The handles of `function` (`name.namespace`) at `version`, made on first use.
    pub fn version(&self, function: &str, version: Version) -> Arc<VersionMetrics> {
        let slot = version as usize;
        if let Some(found) = self.versions.read().unwrap().get(function).and_then(|v| v[slot].clone()) {
            return found;
        }
        let labels = VersionLabels { function_name: function.to_string(), version: version.as_str() };
        let made = Arc::new(VersionMetrics {
            function: function.to_string(),
            version,
            recent: self.history.of(function),
            started: self.started.get_or_create(&FunctionLabels { function_name: function.to_string() }).clone(),
            arrivals: self.arrivals.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            finished: Counter::default(),
            codes: Default::default(),
            families: Families {
                invocations: self.invocations.clone(),
                seconds: self.seconds.clone(),
                version_requests: self.version_requests.clone(),
                version_seconds: self.version_seconds.clone(),
            },
        });
        let mut versions = self.versions.write().unwrap();
        versions.entry(function.to_string()).or_default()[slot].get_or_insert(made).clone()
    }

    /// Drops every series, handle and second of history of the functions `deployed` says are
    /// gone (a deleted function leaves nothing behind); how many it dropped. `scaling_reasons`:
    /// every reason the autoscaler labels its scaling events with.
    pub fn forget_absent(&self, deployed: impl Fn(&str) -> bool, scaling_reasons: &[&'static str]) -> usize {
        let mut gone: std::collections::BTreeSet<String> =
            self.versions.read().unwrap().keys().filter(|f| !deployed(f)).cloned().collect();
        // Functions with a history (the autoscaler's or the portal's) but no invocation too.
        gone.extend(self.history.functions().into_iter().filter(|f| !deployed(f)));
        if gone.is_empty() {
            return 0;
        }
        self.history.retain(|f| !gone.contains(f));
        let removed: Vec<Arc<VersionMetrics>> = {
            let mut versions = self.versions.write().unwrap();
            gone.iter().filter_map(|f| versions.remove(f)).flatten().flatten().collect()
        };
        for v in removed {
            for (code, _) in v.codes.read().unwrap().iter() {
                let (function_name, code) = (v.function.clone(), code.to_string());
                let labels = CodeLabels { function_name: function_name.clone(), code: code.clone() };
                self.invocations.remove(&labels);
                self.seconds.remove(&labels);
                let labels = VersionCodeLabels { function_name, version: v.version.as_str(), code };
                self.version_requests.remove(&labels);
                self.version_seconds.remove(&labels);
            }
        }
        for function in &gone {
            let one = FunctionLabels { function_name: function.clone() };
            for family in [&self.started, &self.service_count, &self.canary_weight, &self.queue.pending] {
                family.remove(&one);
            }
            self.queue.queued.remove(&one);
            for version in [Version::Stable, Version::Canary] {
                let labels = VersionLabels { function_name: function.clone(), version: version.as_str() };
                for family in [&self.in_flight, &self.waiting, &self.desired_replicas, &self.actual_replicas] {
                    family.remove(&labels);
                }
                self.arrivals.remove(&labels);
                self.cold_starts.remove(&labels);
                self.cold_start_seconds.remove(&labels);
                self.pre_warms.remove(&labels);
                self.pre_warms_used.remove(&labels);
                for by in ["pre_warm", "scheduled"] {
                    self.cold_starts_avoided.remove(&AvoidedLabels {
                        function_name: function.clone(),
                        version: version.as_str(),
                        by,
                    });
                }
                for reason in scaling_reasons {
                    self.scaling.remove(&ScalingLabels {
                        function_name: function.clone(),
                        version: version.as_str(),
                        reason,
                    });
                }
            }
            for reason in crate::invoke::throttle::REASONS {
                self.throttled.remove(&ReasonLabels { function_name: function.clone(), reason });
            }
            for source in ["async", "nats"] {
                let labels = QueueLabels { function_name: function.clone(), source };
                self.queue.in_progress.remove(&labels);
                self.queue.retried.remove(&labels);
                self.queue.age.remove(&labels);
                for outcome in ["succeeded", "dead_lettered"] {
                    self.queue.finished.remove(&OutcomeLabels { function_name: function.clone(), source, outcome });
                }
            }
        }
        gone.len()
    }

    /// Invocations of `function` (`name.namespace`) finished, all versions.
    pub fn invocation_count(&self, function: &str) -> u64 {
        let versions = self.versions.read().unwrap();
        versions.get(function).into_iter().flatten().flatten().map(|v| v.finished.get()).sum()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_functions_series_and_history_are_forgotten_and_the_others_kept() {
        let m = Metrics::new();
        for f in ["gone.default", "kept.default"] {
            for version in [Version::Stable, Version::Canary] {
                let v = m.version(f, version);
                v.arrive();
                v.finish(200, std::time::Duration::from_millis(3));
                v.arrive();
                v.finish(502, std::time::Duration::from_millis(3));
                let labels = VersionLabels { function_name: f.to_string(), version: version.as_str() };
                m.cold_starts.get_or_create(&labels).inc();
                m.desired_replicas.get_or_create(&labels).set(2);
                let scaled =
                    ScalingLabels { function_name: f.to_string(), version: version.as_str(), reason: "scale_up" };
                m.scaling.get_or_create(&scaled).inc();
            }
            m.throttled(f, "rate");
            let one = FunctionLabels { function_name: f.to_string() };
            m.queue.queued.get_or_create(&one).inc();
            let q = OutcomeLabels { function_name: f.to_string(), source: "async", outcome: "succeeded" };
            m.queue.finished.get_or_create(&q).inc();
            m.history.of(f).answered(200, std::time::Duration::from_millis(3), false);
        }
        m.history.of("idle.default").replicas(0, 1, 1);

        assert_eq!(m.forget_absent(|f| f == "kept.default", &["scale_up"]), 2);
        let text = m.encode();
        assert!(!text.contains("gone.default") && !text.contains("idle.default"), "{text}");
        assert!(text.contains("kept.default"));
        assert_eq!(m.history.functions(), ["kept.default"]);
        assert_eq!(m.invocation_count("kept.default"), 4);
        assert_eq!(m.invocation_count("gone.default"), 0);
        assert_eq!(m.forget_absent(|f| f == "kept.default", &["scale_up"]), 0);
    }
}
