//! Where the autoscaler's inputs come from, behind one trait: Prometheus (PromQL over the
//! gateway's own metrics, which Prometheus scrapes) or, where no Prometheus is configured, the
//! gateway's in-process counters. Both give, per function version, the request rate, the
//! requests in flight and the requests waiting for a cold start: through Prometheus, summed
//! over every gateway replica, so the one that autoscales sees the load the others carry.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::time::Instant;

use crate::metrics::{Metrics, VersionLabels};

/// `function_name` (`name.namespace`) and version.
pub type Key = (String, &'static str);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub rps: f64,
    pub in_flight: f64,
    pub waiting: usize,
}

pub trait Source: Send + Sync {
    /// Samples for `keys`; `Err` when the source cannot be read (then nothing is known).
    fn read<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<HashMap<Key, Sample>, String>>;
    fn name(&self) -> &'static str;
}

/// The gateway's own counters: rate from the arrivals counter between two reads.
pub struct InProcess {
    metrics: Arc<Metrics>,
    last: std::sync::Mutex<LastRead>,
}

/// When the counters were last read, and each one's value then.
#[derive(Default)]
struct LastRead {
    at: Option<Instant>,
    counters: HashMap<Key, (Instant, u64)>,
}

impl InProcess {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        InProcess { metrics, last: Default::default() }
    }
}

impl Source for InProcess {
    fn name(&self) -> &'static str {
        "in-process"
    }

    fn read<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<HashMap<Key, Sample>, String>> {
        let now = Instant::now();
        let mut guard = self.last.lock().unwrap();
        let LastRead { at, counters: last } = &mut *guard;
        // A counter made since the last read was 0 then.
        let since = at.replace(now);
        // Versions no longer asked for (deleted) are not remembered.
        let asked: std::collections::HashSet<&Key> = keys.iter().collect();
        last.retain(|key, _| asked.contains(key));
        let samples = keys
            .iter()
            .map(|key| {
                // Read, not made: a version never called has no series, and gets none here.
                let labels = VersionLabels { function_name: key.0.clone(), version: key.1 };
                let in_flight = self.metrics.in_flight.get(&labels).map_or(0, |g| g.get()).max(0) as f64;
                let waiting = self.metrics.waiting.get(&labels).map_or(0, |g| g.get()).max(0) as usize;
                let rps = match self.metrics.arrivals.get(&labels).map(|c| c.get()) {
                    None => 0.0,
                    Some(total) => match last.insert(key.clone(), (now, total)).or(since.map(|t| (t, 0))) {
                        Some((then, before)) if now > then => {
                            (total - before) as f64 / now.duration_since(then).as_secs_f64()
                        }
                        _ => 0.0,
                    },
                };
                (key.clone(), Sample { rps, in_flight, waiting })
            })
            .collect();
        Box::pin(async move { Ok(samples) })
    }
}

/// The largest answer read from Prometheus: ten thousand functions' series take a few MiB.
const MAX_ANSWER: usize = 32 << 20;

/// Prometheus' HTTP query API.
pub struct Prometheus {
    base: String,
    window: Duration,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
}

impl Prometheus {
    /// `window`: the range of `rate()`, a few scrape intervals.
    pub fn new(base: String, window: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Prometheus { base: base.trim_end_matches('/').to_string(), window, client }
    }

    /// One instant query's result series; an answer larger than `MAX_ANSWER` is refused.
    async fn series(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
        let url = format!("{}/api/v1/query?{query}", self.base);
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let answer = async {
            let response =
                self.client.get(uri).await.map_err(|e| format!("{}: {}", self.base, flint_http::error_chain(&e)))?;
            let status = response.status();
            let read = flint_http::body::read_at_most(response.into_body(), MAX_ANSWER)
                .await
                .map_err(|e| format!("{}: {}", self.base, flint_http::error_chain(&e)))?;
            if read.truncated {
                return Err(format!("{} answered more than {MAX_ANSWER} bytes", self.base));
            }
            Ok((status, read.bytes))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .map_err(|_| format!("{} did not answer in 2s", self.base))??;
        if !status.is_success() {
            return Err(format!("{} answered {status}: {}", self.base, String::from_utf8_lossy(&body)));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("not Prometheus JSON: {e}"))?;
        Ok(v["data"]["result"].as_array().ok_or("no data.result in Prometheus' answer")?.clone())
    }

    /// The value of a query that yields one number (`None`: no series, e.g. nothing happened).
    pub async fn scalar(&self, promql: &str) -> Result<Option<f64>, String> {
        let series = self.series(promql).await?;
        Ok(series
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite()))
    }

    /// One instant query; the value of each series by its (function_name, version).
    async fn query(&self, promql: &str) -> Result<HashMap<(String, String), f64>, String> {
        let mut out = HashMap::new();
        for series in self.series(promql).await? {
            let name = series["metric"]["function_name"].as_str().unwrap_or_default().to_string();
            let version = series["metric"]["version"].as_str().unwrap_or_default().to_string();
            let value = series["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            out.insert((name, version), if value.is_finite() { value } else { 0.0 });
        }
        Ok(out)
    }
}

impl Source for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn read<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<HashMap<Key, Sample>, String>> {
        Box::pin(async move {
            // The gateway exports this for every function at each scrape: without it, Prometheus
            // has not scraped the gateway (yet), and silence must not read as idleness.
            if self.query("sum by (function_name, version) (label_replace(count(gateway_service_count), \"version\", \"\", \"\", \"\"))").await?.is_empty() {
                return Err(format!("{} has no samples of the gateway's metrics (is it scraping the gateway?)", self.base));
            }
            let w = self.window.as_secs().max(1);
            let rates = self
                .query(&format!("sum by (function_name, version) (rate(flint_function_arrivals_total[{w}s]))"))
                .await?;
            let in_flight = self.query("sum by (function_name, version) (flint_function_in_flight)").await?;
            let waiting = self.query("sum by (function_name, version) (flint_function_waiting)").await?;
            Ok(keys
                .iter()
                .map(|key| {
                    let k = (key.0.clone(), key.1.to_string());
                    // No series yet: never invoked since the gateway started.
                    let sample = Sample {
                        rps: rates.get(&k).copied().unwrap_or(0.0),
                        in_flight: in_flight.get(&k).copied().unwrap_or(0.0),
                        waiting: waiting.get(&k).copied().unwrap_or(0.0).max(0.0) as usize,
                    };
                    (key.clone(), sample)
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn in_process_reads_make_no_series_and_count_a_new_counters_arrivals_from_the_last_read() {
        let metrics = Arc::new(Metrics::new());
        let source = InProcess::new(metrics.clone());
        let keys = [("idle.default".to_string(), "stable"), ("busy.default".to_string(), "stable")];
        let read = || async { source.read(&keys).await.unwrap() };
        assert_eq!(read().await[&keys[0]], Sample::default());
        assert!(!metrics.encode().contains("idle.default"), "a read made series:\n{}", metrics.encode());

        // Four calls arrive between two reads, a second apart, to a version first called then.
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = metrics.version("busy.default", flint_api::Version::Stable);
        for _ in 0..4 {
            busy.arrive();
        }
        let samples = read().await;
        assert_eq!(samples[&keys[1]], Sample { rps: 4.0, in_flight: 4.0, waiting: 0 });
        assert_eq!(samples[&keys[0]], Sample::default());
        assert!(!metrics.encode().contains("idle.default"));
    }
}
