//! Which version and which replica a request goes to.

use std::sync::Arc;

use hyper::HeaderMap;

use crate::provider::{Endpoint, Route, Version};

/// Header that forces a version (`stable` or `canary`).
pub const VERSION_HEADER: &str = "x-flint-version";

/// The version for this request: forced by header, else canary with the route's weight.
pub fn version(route: &Route, headers: &HeaderMap) -> Version {
    if route.canary.is_none() {
        return Version::Stable;
    }
    match headers.get(VERSION_HEADER).map(|v| v.as_bytes()) {
        Some(b"canary") => return Version::Canary,
        Some(b"stable") => return Version::Stable,
        _ => {}
    }
    if fastrand::u8(0..100) < route.canary_weight { Version::Canary } else { Version::Stable }
}

/// The less loaded of two replicas drawn at random (power of two choices): nearly as good as
/// the least loaded of all, without looking at all of them.
pub fn endpoint(endpoints: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
    match endpoints.len() {
        0 => None,
        1 => Some(endpoints[0].clone()),
        n => {
            let a = fastrand::usize(0..n);
            let b = (a + 1 + fastrand::usize(0..n - 1)) % n;
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            Some(if eb.load() < ea.load() { eb.clone() } else { ea.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn prefers_the_less_loaded_replica() {
        let busy = Endpoint::new("127.0.0.1:1".parse().unwrap());
        busy.in_flight.store(10, Ordering::Relaxed);
        let idle = Endpoint::new("127.0.0.1:2".parse().unwrap());
        let both = [busy, idle.clone()];
        for _ in 0..100 {
            assert_eq!(endpoint(&both).unwrap().addr, idle.addr);
        }
        assert!(endpoint(&[]).is_none());
    }

    #[test]
    fn spreads_over_equally_loaded_replicas() {
        let all: Vec<_> = (1..=4).map(|p| Endpoint::new(format!("127.0.0.1:{p}").parse().unwrap())).collect();
        let mut hits = [0; 4];
        for _ in 0..4000 {
            let e = endpoint(&all).unwrap();
            hits[e.addr.port() as usize - 1] += 1;
        }
        assert!(hits.iter().all(|h| *h > 700), "{hits:?}");
    }
}
