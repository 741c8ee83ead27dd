//! A replica as the request path sees it: where it listens, how many requests it has now (for
//! least-in-flight balancing), the keep-alive connections to it (`pool`), and whether its
//! provider still lists it.
//!
//! A provider makes an `Endpoint` when a replica becomes ready and `retire()`s it when the
//! replica leaves its set (it died, was scaled down or replaced, stopped being ready). Retiring
//! closes its idle connections at once, so the pool holds connections only to replicas that
//! are there, and it records when the replica left, so that a request that fails on it later
//! knows the replica was gone before the request was written (`invoke::resend`).

pub mod pool;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

pub use self::pool::{Failure, Pool};

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    in_flight: AtomicUsize,
    /// When the provider said the replica left.
    retired: OnceLock<Instant>,
    /// Until when (ms after `EPOCH`) the replica is skipped after it could not be reached.
    unreachable_until: AtomicU64,
    idle: Mutex<Vec<pool::Idle>>,
    /// Whether a task closes this endpoint's connections once idle too long.
    sweeping: AtomicBool,
    /// Set when its provider saw the replica's process end (local mode: the gateway is its
    /// parent); unlike leaving the set (which a draining replica does), nothing will answer.
    dead: AtomicBool,
    death: Notify,
}

/// The ready endpoints of one version, as they change.
pub type Endpoints = watch::Receiver<Arc<Vec<Arc<Endpoint>>>>;

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Endpoint {
            addr,
            in_flight: AtomicUsize::new(0),
            retired: OnceLock::new(),
            unreachable_until: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            death: Notify::new(),
        })
    }

    /// Requests on this replica now.
    pub fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request on this replica until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Load {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Load(self.clone())
    }

    /// The replica left its provider's set: no more connections are kept to it.
    pub fn retire(&self) {
        let _ = self.retired.set(Instant::now());
        drop(std::mem::take(&mut *self.idle.lock().unwrap()));
    }

    /// The replica's process ended: it leaves, and requests still waiting on it give up.
    pub fn died(&self) {
        self.retire();
        self.dead.store(true, Ordering::Release);
        self.death.notify_waiters();
    }

    /// Resolves once the replica's process has ended.
    pub async fn dead(&self) {
        let notified = self.death.notified();
        if !self.dead.load(Ordering::Acquire) {
            notified.await;
        }
    }

    /// When the replica left, if it did.
    pub fn retired_at(&self) -> Option<Instant> {
        self.retired.get().copied()
    }

    /// Skips this replica for `d` (it could not be reached) where others can serve.
    pub fn mark_unreachable(&self, d: Duration) {
        let until = millis(Instant::now() + d);
        self.unreachable_until.fetch_max(until, Ordering::Relaxed);
    }

    pub fn reachable(&self) -> bool {
        self.unreachable_until.load(Ordering::Relaxed) <= millis(Instant::now())
    }
}

/// Milliseconds since the first call, as an atomic-friendly clock.
fn millis(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_millis() as u64
}

/// One request counted on an endpoint.
#[derive(Debug)]
pub struct Load(Arc<Endpoint>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Publishes a version's new endpoint set and retires the endpoints that left it: the one way
/// both providers change what the request path sees.
pub fn publish(tx: &watch::Sender<Arc<Vec<Arc<Endpoint>>>>, next: Vec<Arc<Endpoint>>) {
    let before = tx.send_replace(Arc::new(next));
    let now = tx.borrow().clone();
    for gone in before.iter().filter(|e| !now.iter().any(|n| Arc::ptr_eq(n, e))) {
        gone.retire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishing_retires_exactly_the_endpoints_that_left() {
        let (a, b, c) = (
            Endpoint::new("127.0.0.1:1".parse().unwrap()),
            Endpoint::new("127.0.0.1:2".parse().unwrap()),
            Endpoint::new("127.0.0.1:3".parse().unwrap()),
        );
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        publish(&tx, vec![a.clone(), b.clone()]);
        publish(&tx, vec![b.clone(), c.clone()]);
        assert!(a.retired_at().is_some());
        assert!(b.retired_at().is_none() && c.retired_at().is_none());
        assert_eq!(rx.borrow().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_endpoint_is_skipped_for_a_while() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap());
        assert!(e.reachable());
        e.mark_unreachable(Duration::from_secs(2));
        assert!(!e.reachable());
        tokio::time::advance(Duration::from_millis(2001)).await;
        assert!(e.reachable());
    }

    #[tokio::test]
    async fn a_death_wakes_whoever_waits_on_the_replica() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap());
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.dead().await }
        });
        tokio::task::yield_now().await;
        e.died();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(e.retired_at().is_some());
        tokio::time::timeout(Duration::from_secs(5), e.dead()).await.expect("already dead");
    }

    #[test]
    fn the_load_guard_counts_while_it_lives() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap());
        let (one, two) = (e.begin(), e.begin());
        assert_eq!(e.load(), 2);
        drop(one);
        assert_eq!(e.load(), 1);
        drop(two);
        assert_eq!(e.load(), 0);
    }
}
