//! The front door's per-function limits (`spec.paused`, `spec.throttle`), applied before a
//! request is counted as an invocation, reaches a replica or starts one: paused → 503; over the
//! request rate (a token bucket) → 429 with the wait in `Retry-After`; over the in-flight cap →
//! wait in a bounded queue for a place, up to a deadline, then 429. A place is held until the
//! response body has been sent. Each gateway replica applies the limits to what it receives.
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
    /// By `name.namespace`; an entry is replaced when its function's throttle changes.
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
}

/// What a function's limiter holds now, for `GET /system/function/NAME`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub in_flight: usize,
    pub queued: usize,
}

impl Throttles {
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
        let mut limiters = self.limiters.lock().unwrap();
        match limiters.get(function) {
            Some(l) if l.throttle == *throttle => l.clone(),
            // New or changed: requests holding places of the old one keep them until they end,
            // so for that long the function may see both caps' worth.
            _ => {
                // Rare (a function's first throttled request, or a changed throttle): the time
                // to forget deleted functions' limiters.
                limiters.retain(|f, _| f == function || exists(f));
                let l = Arc::new(Limiter::new(throttle.clone()));
                limiters.insert(function.to_string(), l.clone());
                l
            }
        }
    }
}

struct Limiter {
    throttle: Throttle,
    bucket: Option<Mutex<Bucket>>,
    places: Option<Arc<Semaphore>>,
    queued: AtomicUsize,
}

impl Limiter {
    fn new(throttle: Throttle) -> Self {
        let bucket = throttle.rate.map(|rate| Mutex::new(Bucket::new(rate, throttle.burst.unwrap_or(rate))));
        let places = throttle.max_in_flight.map(|n| Arc::new(Semaphore::new(n.max(1) as usize)));
        Limiter { throttle, bucket, places, queued: AtomicUsize::new(0) }
    }

    async fn admit(&self) -> Result<Place, Refused> {
        if let Some(bucket) = &self.bucket {
            bucket.lock().unwrap().take(Instant::now())?;
        }
        let Some(places) = &self.places else { return Ok(None) };
        if let Ok(place) = places.clone().try_acquire_owned() {
            return Ok(Some(place));
        }
        let max_in_flight = self.throttle.max_in_flight.unwrap_or_default();
        let queue = self.throttle.queue.max(0) as usize;
        if self.queued.fetch_add(1, Ordering::AcqRel) >= queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::QueueFull { max_in_flight, queue: self.throttle.queue });
        }
        let waited = self.throttle.queue_timeout.get();
        let place = tokio::time::timeout(waited, places.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match place {
            Ok(Ok(place)) => Ok(Some(place)),
            _ => Err(Refused::QueueTimeout { max_in_flight, waited }),
        }
    }

    fn usage(&self) -> Usage {
        let in_flight = match (&self.places, self.throttle.max_in_flight) {
            (Some(places), Some(max)) => (max.max(1) as usize).saturating_sub(places.available_permits()),
            _ => 0,
        };
        Usage { in_flight, queued: self.queued.load(Ordering::Acquire) }
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
    fn new(rate: i32, burst: i32) -> Self {
        let burst = f64::from(burst.max(1));
        Bucket { rate: f64::from(rate.max(1)), burst, tokens: burst, at: Instant::now() }
    }

    fn take(&mut self, now: Instant) -> Result<(), Refused> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let retry_after = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        Err(Refused::Rate { rate: self.rate as i32, retry_after })
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
