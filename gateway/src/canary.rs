//! Automatic canary analysis. Every `interval`, the canary's success rate and p99 latency over
//! that interval are judged: with at least `minRequests` requests, a healthy canary gains
//! `stepWeight` (up to `maxWeight`, then `Succeeded`), an unhealthy one goes to weight 0 at once
//! (`RolledBack`) with the numbers that failed. Promotion stays a person's act.
//!
//! It runs in the gateway, beside the autoscaler and under the same Lease: the gateway sees
//! every request of both versions first-hand (the in-process window needs no Prometheus), it is
//! what applies the weight on the next request, and a rollback must not wait for another
//! component's reconcile. It writes only the Function's `status.canary`, never its spec.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use flint_api::{CanaryPhase, CanaryStatus, function::Analysis};
use futures::future::BoxFuture;
use tokio::time::Instant;

/// One canary response: when it ended, how long it took, whether it succeeded (not 5xx).
type Outcome = (Instant, Duration, bool);

/// Recent canary responses per function (`name.namespace`), for the analysis window.
#[derive(Default)]
pub struct Window(Mutex<HashMap<String, VecDeque<Outcome>>>);

const KEEP: usize = 100_000;

impl Window {
    pub fn record(&self, function: &str, took: Duration, ok: bool) {
        let now = Instant::now();
        let mut all = self.0.lock().unwrap();
        // The common case finds its queue without allocating a key.
        let q = match all.get_mut(function) {
            Some(q) => q,
            None => all.entry(function.to_string()).or_default(),
        };
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back((now, took, ok));
    }

    /// Requests, success rate (%) and p99 of the responses since `since`.
    pub fn stats(&self, function: &str, since: Instant) -> Stats {
        let mut took: Vec<Duration> = Vec::new();
        let mut ok = 0;
        {
            // Copied out under the lock; sorted after it, so requests recording meanwhile
            // never wait on a sort of up to KEEP samples.
            let all = self.0.lock().unwrap();
            for (at, d, good) in all.get(function).into_iter().flatten() {
                if *at >= since {
                    took.push(*d);
                    ok += *good as usize;
                }
            }
        }
        took.sort_unstable();
        let n = took.len();
        let p99 = if n == 0 { Duration::ZERO } else { took[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1] };
        Stats { requests: n, success_rate: if n == 0 { 100.0 } else { ok as f64 * 100.0 / n as f64 }, p99 }
    }
}

/// Where a canary's numbers come from: the gateway's own record of its responses, or
/// Prometheus (the same metrics, scraped) when one is configured.
pub trait Numbers: Send + Sync {
    /// The canary's requests, success rate and p99 over the `interval` ending now.
    fn stats<'a>(&'a self, function: &'a str, interval: Duration) -> BoxFuture<'a, Result<Stats, String>>;
}

impl Numbers for std::sync::Arc<crate::metrics::Metrics> {
    fn stats<'a>(&'a self, function: &'a str, interval: Duration) -> BoxFuture<'a, Result<Stats, String>> {
        let since = Instant::now().checked_sub(interval).unwrap_or_else(Instant::now);
        let stats = self.canary_window.stats(function, since);
        Box::pin(async move { Ok(stats) })
    }
}

impl Numbers for crate::autoscale::source::Prometheus {
    fn stats<'a>(&'a self, function: &'a str, interval: Duration) -> BoxFuture<'a, Result<Stats, String>> {
        Box::pin(async move {
            let w = interval.as_secs().max(2);
            let sel = format!("function_name=\"{function}\",version=\"canary\"");
            let total = self
                .scalar(&format!("sum(increase(flint_function_requests_total{{{sel}}}[{w}s]))"))
                .await?
                .unwrap_or(0.0);
            let ok = self
                .scalar(&format!("sum(increase(flint_function_requests_total{{{sel},code!~\"5..\"}}[{w}s]))"))
                .await?
                .unwrap_or(0.0);
            let p99 = self
                .scalar(&format!(
                    "histogram_quantile(0.99, sum by (le) (rate(flint_function_seconds_bucket{{{sel}}}[{w}s])))"
                ))
                .await?
                .unwrap_or(0.0);
            Ok(Stats {
                requests: total.round() as usize,
                success_rate: if total > 0.0 { ok * 100.0 / total } else { 100.0 },
                p99: Duration::from_secs_f64(p99.max(0.0)),
            })
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub requests: usize,
    pub success_rate: f64,
    pub p99: Duration,
}

/// The next canary status after one check; `None`: too few requests to judge, no change.
pub fn judge(a: &Analysis, current: &CanaryStatus, s: Stats) -> Option<CanaryStatus> {
    if current.phase != CanaryPhase::Progressing || s.requests < a.min_requests.max(0) as usize {
        return None;
    }
    let numbers = format!(
        "success rate {:.2}% (minimum {}%), p99 {} (maximum {}), {} requests",
        s.success_rate,
        a.min_success_rate,
        flint_api::duration::format(s.p99),
        flint_api::duration::format(a.max_p99_latency.get()),
        s.requests
    );
    if s.success_rate < a.min_success_rate || s.p99 > a.max_p99_latency.get() {
        return Some(CanaryStatus {
            weight: 0,
            phase: CanaryPhase::RolledBack,
            message: Some(format!("rolled back: {numbers}")),
            image: current.image.clone(),
        });
    }
    let weight = (current.weight + a.step_weight).min(a.max_weight);
    let phase = if weight >= a.max_weight { CanaryPhase::Succeeded } else { CanaryPhase::Progressing };
    Some(CanaryStatus { weight, phase, message: Some(format!("healthy: {numbers}")), image: current.image.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis() -> Analysis {
        Analysis { step_weight: 20, max_weight: 50, min_success_rate: 99.0, min_requests: 10, ..Default::default() }
    }

    fn progressing(weight: i32) -> CanaryStatus {
        CanaryStatus { weight, phase: CanaryPhase::Progressing, message: None, image: None }
    }

    fn stats(requests: usize, success_rate: f64, p99_ms: u64) -> Stats {
        Stats { requests, success_rate, p99: Duration::from_millis(p99_ms) }
    }

    #[test]
    fn healthy_canaries_step_up_to_the_maximum() {
        let a = analysis();
        let s = judge(&a, &progressing(10), stats(100, 100.0, 20)).unwrap();
        assert_eq!((s.weight, s.phase), (30, CanaryPhase::Progressing));
        let s = judge(&a, &s, stats(100, 99.5, 20)).unwrap();
        assert_eq!((s.weight, s.phase), (50, CanaryPhase::Succeeded));
        assert_eq!(judge(&a, &s, stats(100, 100.0, 20)), None, "done: no more steps");
    }

    #[test]
    fn failing_canaries_roll_back_at_once_saying_which_numbers_failed() {
        let a = analysis();
        let s = judge(&a, &progressing(30), stats(100, 80.0, 20)).unwrap();
        assert_eq!((s.weight, s.phase), (0, CanaryPhase::RolledBack));
        assert!(s.message.as_ref().unwrap().contains("success rate 80.00% (minimum 99%)"), "{s:?}");
        let slow = judge(&a, &progressing(30), stats(100, 100.0, 900)).unwrap();
        assert_eq!(slow.phase, CanaryPhase::RolledBack);
        assert!(slow.message.unwrap().contains("p99 900ms (maximum 500ms)"));
    }

    #[test]
    fn too_few_requests_change_nothing() {
        assert_eq!(judge(&analysis(), &progressing(10), stats(3, 0.0, 5000)), None);
    }

    #[test]
    fn the_window_reports_rate_and_p99() {
        let w = Window::default();
        let start = Instant::now();
        for i in 0..100u64 {
            w.record("f.ns", Duration::from_millis(i + 1), i % 10 != 0);
        }
        let s = w.stats("f.ns", start);
        assert_eq!(s.requests, 100);
        assert_eq!(s.success_rate, 90.0);
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(w.stats("other.ns", start).requests, 0);
    }
}
