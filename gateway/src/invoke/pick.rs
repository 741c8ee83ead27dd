//! Which version and which replica a request goes to.

use std::sync::Arc;

use hyper::HeaderMap;

use crate::{
    endpoint::Endpoint,
    provider::{Route, Version},
};

/// Header that forces a version (`stable` or `canary`).
pub const VERSION_HEADER: &str = "x-flint-version";

/// The version for this request: forced by header; else, for a caller identified by the
/// canary's sticky header or cookie, the version its identity hashes to; else canary with the
/// route's weight, drawn per request.
pub fn version(route: &Route, headers: &HeaderMap) -> Version {
    let Some(canary) = route.canary.as_ref().and(route.function.spec.canary.as_ref()) else {
        return Version::Stable;
    };
    match headers.get(VERSION_HEADER).map(|v| v.as_bytes()) {
        Some(b"canary") => return Version::Canary,
        Some(b"stable") => return Version::Stable,
        _ => {}
    }
    let slot = match canary.sticky.as_ref().and_then(|s| caller(s, headers)) {
        Some(identity) => (fnv1a(identity) % 100) as u8,
        None => spread(),
    };
    if slot < route.canary_weight { Version::Canary } else { Version::Stable }
}

/// A slot in 0..100 for the next request: the golden-ratio (Weyl) sequence, which is uniform like
/// a random draw but low-discrepancy, so any run of requests splits within a fraction of a point
/// of the weight (2,000 random draws at 50 % stray by more than 3 points about 1 run in 400).
fn spread() -> u8 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fraction = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ((fraction * 100) >> 32) as u8
}

/// The caller's identity for stickiness: the named header's or cookie's value.
fn caller<'a>(sticky: &flint_api::function::Sticky, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    if let Some(name) = &sticky.header {
        return headers.get(name.as_str()).map(|v| v.as_bytes());
    }
    let name = sticky.cookie.as_deref()?;
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_bytes())
}

/// A fixed hash (FNV-1a), so a caller lands on the same version in every gateway replica.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// The less loaded of two replicas drawn at random (power of two choices): nearly as good as
/// the least loaded of all, without looking at all of them. A replica that could not be reached
/// a moment ago is drawn only when no other is left.
pub fn endpoint(endpoints: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
    if endpoints.iter().all(|e| e.reachable()) {
        return least_loaded_of_two(endpoints);
    }
    let reachable: Vec<_> = endpoints.iter().filter(|e| e.reachable()).cloned().collect();
    least_loaded_of_two(if reachable.is_empty() { endpoints } else { &reachable })
}

fn least_loaded_of_two(endpoints: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
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
    use hyper::header::HeaderValue;
    use tokio::sync::watch;

    use super::*;

    fn route(weight: u8, sticky: &str) -> Route {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: f}}\nspec:\n  image: x\n  canary: {{image: x2, weight: {weight}{sticky}}}\n"
        );
        let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
        let endpoints = watch::channel(Arc::new(Vec::new())).1;
        Route { function: Arc::new(f), stable: endpoints.clone(), canary: Some(endpoints), canary_weight: weight }
    }

    fn share(route: &Route, headers: impl Fn(usize) -> HeaderMap, n: usize) -> f64 {
        (0..n).filter(|i| version(route, &headers(*i)) == Version::Canary).count() as f64 * 100.0 / n as f64
    }

    #[test]
    fn the_split_follows_the_weight_and_zero_and_hundred_are_exact() {
        for weight in [10, 50, 90] {
            let got = share(&route(weight, ""), |_| HeaderMap::new(), 20_000);
            assert!((got - weight as f64).abs() < 0.5, "weight {weight}: {got}%");
        }
        assert_eq!(share(&route(0, ""), |_| HeaderMap::new(), 5000), 0.0);
        assert_eq!(share(&route(100, ""), |_| HeaderMap::new(), 5000), 100.0);
    }

    #[test]
    fn the_version_header_forces_a_version() {
        let r = route(0, "");
        let mut h = HeaderMap::new();
        h.insert(VERSION_HEADER, HeaderValue::from_static("canary"));
        assert_eq!(version(&r, &h), Version::Canary);
        let r = route(100, "");
        h.insert(VERSION_HEADER, HeaderValue::from_static("stable"));
        assert_eq!(version(&r, &h), Version::Stable);
    }

    #[test]
    fn sticky_callers_stay_on_one_version_and_callers_split_by_weight() {
        let by_header = route(30, ", sticky: {header: X-User}");
        let by_cookie = route(30, ", sticky: {cookie: session}");
        let header = |i: usize| {
            let mut h = HeaderMap::new();
            h.insert("x-user", HeaderValue::from_str(&format!("user-{i}")).unwrap());
            h
        };
        let cookie = |i: usize| {
            let mut h = HeaderMap::new();
            h.insert("cookie", HeaderValue::from_str(&format!("theme=dark; session=s{i}")).unwrap());
            h
        };
        for i in 0..200 {
            let first = version(&by_header, &header(i));
            assert!((0..20).all(|_| version(&by_header, &header(i)) == first), "user-{i} switched versions");
            let first = version(&by_cookie, &cookie(i));
            assert!((0..20).all(|_| version(&by_cookie, &cookie(i)) == first), "session s{i} switched versions");
        }
        let users = share(&by_header, header, 10_000);
        assert!((users - 30.0).abs() < 3.0, "{users}% of users on the canary");
    }

    #[test]
    fn prefers_the_less_loaded_replica() {
        let busy = Endpoint::new("127.0.0.1:1".parse().unwrap());
        let _load: Vec<_> = (0..10).map(|_| busy.begin()).collect();
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

    #[tokio::test]
    async fn an_unreachable_replica_is_drawn_only_when_none_other_is_left() {
        let down = Endpoint::new("127.0.0.1:1".parse().unwrap());
        down.mark_unreachable(std::time::Duration::from_secs(60));
        let up = Endpoint::new("127.0.0.1:2".parse().unwrap());
        let both = [down.clone(), up.clone()];
        for _ in 0..100 {
            assert_eq!(endpoint(&both).unwrap().addr, up.addr);
        }
        assert_eq!(endpoint(std::slice::from_ref(&down)).unwrap().addr, down.addr);
    }
}
