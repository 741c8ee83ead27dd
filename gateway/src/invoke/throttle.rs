//! The front door's per-function limits (`spec.paused`, `spec.throttle`), applied before a
//! request is counted as an invocation, reaches a replica or starts one: paused → 503; over the
//! request rate (a token bucket) → 429 with the wait in `Retry-After`; over the in-flight cap →
//! wait in a bounded queue for a place, up to a deadline, then 429. A place is held until the
//! response body has been sent. With several gateway replicas, each applies its share of the
//! limits (`peers`): the function's `rate`, `burst` and `maxInFlight` divided by the replicas
//! (rounded up, at least 1), so that together they hold the limit.
//!
//! The bucket is written here rather than taken from `governor`: it is a dozen lines, and it
//! must run on tokio's clock so that tests can drive it with paused time.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use flint_api::{FunctionSpec, Throttle};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Why a request was not admitted; `reason()` labels the metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    Paused,
    /// Over `rate`; a token is due after this long.
    Rate {
        rate: i32,
        retry_after: Duration,
    },
    /// `maxInFlight` in flight and `queue` already waiting.
    QueueFull {
        max_in_flight: i32,
        queue: i32,
    },
    /// Waited `queueTimeout` without getting a place.
    QueueTimeout {
        max_in_flight: i32,
        waited: Duration,
    },
}

/// Every `Refused::reason()`.
pub const REASONS: [&str; 4] = ["paused", "rate", "queue_full", "queue_timeout"];

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Paused => "paused",
            Refused::Rate { .. } => "rate",
            Refused::QueueFull { .. } => "queue_full",
            Refused::QueueTimeout { .. } => "queue_timeout",
        }
    }
}

/// An admitted request's place among `maxInFlight` (none when there is no cap): freed on drop.
pub type Place = Option<OwnedSemaphorePermit>;

#[derive(Default)]
pub struct Throttles {
    /// By `name.namespace`; an entry is replaced when its function's throttle, or the number
    /// of replicas sharing it, changes.
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    peers: crate::peers::Peers,
}

/// What a function's limiter holds now, for `GET /system/function/NAME`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub in_flight: usize,
    pub queued: usize,
}

impl Throttles {
    pub fn new(peers: crate::peers::Peers) -> Self {
        Throttles { limiters: Mutex::default(), peers }
    }

    /// Admits one request to `function` (`name.namespace`) or says why not. `exists` tells
    /// which functions are still deployed, so that limiters of deleted ones are dropped.
    pub async fn admit(
        &self,
        function: &str,
        spec: &FunctionSpec,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Place, Refused> {
        if spec.paused {
            return Err(Refused::Paused);
        }
        let Some(throttle) = &spec.throttle else { return Ok(None) };
        self.limiter(function, throttle, exists).admit().await
    }

    pub fn usage(&self, function: &str) -> Usage {
        self.limiters.lock().unwrap().get(function).map(|l| l.usage()).unwrap_or_default()
    }

    fn limiter(&self, function: &str, throttle: &Throttle, exists: impl Fn(&str) -> bool) -> Arc<Limiter> {
        let share = self.peers.count();
        let mut limiters = self.limiters.lock().unwrap();
        match limiters.get(function) {
            Some(l) if l.throttle == *throttle && l.share == share => l.clone(),
            // New or changed: requests holding places of the old one keep them until they end,
            // so for that long the function may see both caps' worth.
            _ => {
                // Rare (a function's first throttled request, or a changed throttle): the time
                // to forget deleted functions' limiters.
                limiters.retain(|f, _| f == function || exists(f));
                let l = Arc::new(Limiter::new(throttle.clone(), share));
                limiters.insert(function.to_string(), l.clone());
                l
            }
        }
    }
}

struct Limiter {
    throttle: Throttle,
    /// Gateway replicas sharing the limits.
    share: usize,
    bucket: Option<Mutex<Bucket>>,
    places: Option<Arc<Semaphore>>,
    /// This replica's part of `maxInFlight`.
    cap: usize,
    queued: AtomicUsize,
}

impl Limiter {
    fn new(throttle: Throttle, share: usize) -> Self {
        let part = |n: i32| (n.max(1) as usize).div_ceil(share.max(1));
        let bucket = throttle.rate.map(|rate| {
            let burst = part(throttle.burst.unwrap_or(rate));
            Mutex::new(Bucket::new(f64::from(rate.max(1)) / share.max(1) as f64, burst as f64))
        });
        let cap = throttle.max_in_flight.map(part).unwrap_or(0);
        let places = throttle.max_in_flight.map(|_| Arc::new(Semaphore::new(cap)));
        Limiter { throttle, share, bucket, places, cap, queued: AtomicUsize::new(0) }
    }

    async fn admit(&self) -> Result<Place, Refused> {
        if let Some(bucket) = &self.bucket {
            let rate = self.throttle.rate.unwrap_or_default();
            bucket.lock().unwrap().take(Instant::now()).map_err(|retry_after| Refused::Rate { rate, retry_after })?;
        }
        let Some(places) = &self.places else { return Ok(None) };
        if let Ok(place) = places.clone().try_acquire_owned() {
            return Ok(Some(place));
        }
        let max_in_flight = self.throttle.max_in_flight.unwrap_or_default();
        let queue = self.throttle.queue.max(0) as usize;
        // Given back however the wait ends: a place, the deadline, or the caller gone (its
        // connection closed or its stream reset drops this future mid-wait).
        let waiting = Waiting::enter(&self.queued);
        if waiting.ahead >= queue {
            return Err(Refused::QueueFull { max_in_flight, queue: self.throttle.queue });
        }
        let waited = self.throttle.queue_timeout.get();
        let place = tokio::time::timeout(waited, places.clone().acquire_owned()).await;
        drop(waiting);
        match place {
            Ok(Ok(place)) => Ok(Some(place)),
            _ => Err(Refused::QueueTimeout { max_in_flight, waited }),
        }
    }

    fn usage(&self) -> Usage {
        let in_flight = match &self.places {
            Some(places) => self.cap.saturating_sub(places.available_permits()),
            None => 0,
        };
        Usage { in_flight, queued: self.queued.load(Ordering::Acquire) }
    }
}

/// One place in a limiter's waiting queue, held until dropped.
struct Waiting<'a> {
    queued: &'a AtomicUsize,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(queued: &'a AtomicUsize) -> Self {
        Waiting { queued, ahead: queued.fetch_add(1, Ordering::AcqRel) }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` kept; a request takes one.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Bucket { rate, burst, tokens: burst, at: Instant::now() }
    }

    /// Takes a token, or says when the next one is due.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(throttle: Throttle) -> FunctionSpec {
        FunctionSpec { throttle: Some(throttle), ..FunctionSpec::with_image("x") }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_admits_the_burst_then_one_request_per_token() {
        let throttles = Throttles::default();
        let s = spec(Throttle { rate: Some(10), burst: Some(3), ..Throttle::default() });
        for _ in 0..3 {
            assert!(throttles.admit("f.default", &s, |_| true).await.is_ok());
        }
        match throttles.admit("f.default", &s, |_| true).await {
            Err(Refused::Rate { rate: 10, retry_after }) => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(throttles.admit("f.default", &s, |_| true).await.is_ok());
        assert!(throttles.admit("f.default", &s, |_| true).await.is_err());
        // A long quiet spell refills the bucket to its burst, no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        let admitted = futures::future::join_all((0..10).map(|_| throttles.admit("f.default", &s, |_| true))).await;
        assert_eq!(admitted.iter().filter(|r| r.is_ok()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_in_flight_cap_requests_queue_then_time_out_or_are_refused() {
        let throttles = Arc::new(Throttles::default());
        let s = spec(Throttle {
            max_in_flight: Some(2),
            queue: 1,
            queue_timeout: flint_api::Duration(Duration::from_secs(5)),
            ..Throttle::default()
        });
        let a = throttles.admit("f.default", &s, |_| true).await.unwrap();
        let _b = throttles.admit("f.default", &s, |_| true).await.unwrap();
        let (t, s2) = (throttles.clone(), s.clone());
        let queued = tokio::spawn(async move { t.admit("f.default", &s2, |_| true).await });
        tokio::task::yield_now().await;
        assert_eq!(throttles.usage("f.default"), Usage { in_flight: 2, queued: 1 });
        assert_eq!(
            throttles.admit("f.default", &s, |_| true).await.unwrap_err(),
            Refused::QueueFull { max_in_flight: 2, queue: 1 }
        );
        drop(a);
        let _c = queued.await.unwrap().expect("the queued request takes the freed place");
        let started = Instant::now();
        assert_eq!(
            throttles.admit("f.default", &s, |_| true).await.unwrap_err(),
            Refused::QueueTimeout { max_in_flight: 2, waited: Duration::from_secs(5) }
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(throttles.usage("f.default").queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_abandoned_by_its_caller_gives_its_place_in_the_queue_back() {
        let throttles = Arc::new(Throttles::default());
        let s = spec(Throttle { max_in_flight: Some(1), queue: 3, ..Throttle::default() });
        let held = throttles.admit("f.default", &s, |_| true).await.unwrap();
        for _ in 0..50 {
            // The caller goes away mid-wait: its future is dropped, not finished.
            let (t, s2) = (throttles.clone(), s.clone());
            let waiting = tokio::spawn(async move { t.admit("f.default", &s2, |_| true).await });
            tokio::task::yield_now().await;
            assert_eq!(throttles.usage("f.default").queued, 1);
            waiting.abort();
            let _ = waiting.await;
        }
        assert_eq!(throttles.usage("f.default"), Usage { in_flight: 1, queued: 0 });
        drop(held);
        assert!(throttles.admit("f.default", &s, |_| true).await.is_ok(), "the queue is not full of ghosts");
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_share_the_limits_so_that_together_they_hold_them() {
        let peers = crate::peers::Peers::default();
        let throttles = Throttles::new(peers.clone());
        let s =
            spec(Throttle { rate: Some(10), burst: Some(4), max_in_flight: Some(5), queue: 0, ..Throttle::default() });
        peers.set(2);
        // Half the burst, then half the rate: 5 a second here, 5 at the other replica.
        let admitted = futures::future::join_all((0..10).map(|_| throttles.admit("f.default", &s, |_| true))).await;
        assert_eq!(admitted.iter().filter(|r| r.is_ok()).count(), 2);
        drop(admitted);
        tokio::time::advance(Duration::from_millis(200)).await;
        let held: Vec<_> = futures::future::join_all((0..10).map(|_| throttles.admit("f.default", &s, |_| true)))
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(held.len(), 1, "a token every 200 ms");
        // maxInFlight 5 over two replicas: 3 here (rounded up, never 0).
        tokio::time::advance(Duration::from_secs(10)).await;
        let s = spec(Throttle { max_in_flight: Some(5), queue: 0, ..Throttle::default() });
        let places: Vec<_> = futures::future::join_all((0..10).map(|_| throttles.admit("f.default", &s, |_| true)))
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(places.len(), 3);
        assert_eq!(throttles.usage("f.default").in_flight, 3);
        drop(places);
        // One replica left: the whole limit is its own again.
        peers.set(1);
        let places: Vec<_> = futures::future::join_all((0..10).map(|_| throttles.admit("f.default", &s, |_| true)))
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(places.len(), 5);
    }

    #[tokio::test]
    async fn paused_refuses_everything_and_no_throttle_admits_everything() {
        let throttles = Throttles::default();
        let mut s = FunctionSpec::with_image("x");
        assert!(matches!(throttles.admit("f.default", &s, |_| true).await, Ok(None)));
        s.paused = true;
        assert_eq!(throttles.admit("f.default", &s, |_| true).await.unwrap_err(), Refused::Paused);
    }

    #[tokio::test]
    async fn a_changed_throttle_takes_effect_at_once() {
        let throttles = Throttles::default();
        let one = spec(Throttle { max_in_flight: Some(1), queue: 0, ..Throttle::default() });
        let _held = throttles.admit("f.default", &one, |_| true).await.unwrap();
        assert!(throttles.admit("f.default", &one, |_| true).await.is_err());
        let two = spec(Throttle { max_in_flight: Some(2), queue: 0, ..Throttle::default() });
        let _also = throttles.admit("f.default", &two, |_| true).await.unwrap();
        // A deleted function's limiter goes when another function's limiter is made.
        assert_eq!(throttles.usage("f.default").in_flight, 1);
        assert!(throttles.admit("g.default", &two, |f| f == "g.default").await.is_ok());
        assert_eq!(throttles.usage("f.default"), Usage::default());
    }
}
