//! Ready endpoints from EndpointSlices: only endpoints that are ready and not terminating get
//! new requests, on the slice's `http` port. Each address keeps its `Endpoint` (and so its
//! in-flight count) across slice updates.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::provider::Endpoint;

/// The Service a slice belongs to (its `kubernetes.io/service-name` label).
pub fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.labels.as_ref()?.get("kubernetes.io/service-name").map(String::as_str)
}

/// The ready, non-terminating addresses of one slice on its `http` port.
pub fn ready_addresses(slice: &EndpointSlice) -> Vec<SocketAddr> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            // Unknown readiness counts as ready (the API's own rule); terminating never does.
            c.and_then(|c| c.ready).unwrap_or(true) && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The endpoints of a Service from all its slices, reusing the `Endpoint`s already known.
pub fn merge(slices: &BTreeMap<String, Vec<SocketAddr>>, known: &[Arc<Endpoint>]) -> Vec<Arc<Endpoint>> {
    let known: HashMap<SocketAddr, &Arc<Endpoint>> = known.iter().map(|e| (e.addr, e)).collect();
    let mut addrs: Vec<SocketAddr> = slices.values().flatten().copied().collect();
    addrs.sort();
    addrs.dedup();
    addrs.into_iter().map(|a| known.get(&a).map(|e| (*e).clone()).unwrap_or_else(|| Endpoint::new(a))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_ready_non_terminating_endpoints_on_the_http_port() {
        let s = slice(serde_json::json!({
            "metadata": {"name": "f-abc", "labels": {"kubernetes.io/service-name": "f"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 8081}, {"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}},
                {"addresses": ["10.0.0.4"]},
            ],
        }));
        assert_eq!(service_of(&s), Some("f"));
        let ready: Vec<String> = ready_addresses(&s).iter().map(|a| a.to_string()).collect();
        assert_eq!(ready, ["10.0.0.1:8080", "10.0.0.4:8080"]);
    }

    #[test]
    fn known_endpoints_keep_their_in_flight_counts() {
        let a: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        let old = Endpoint::new(a);
        let _load = [old.begin(), old.begin(), old.begin()];
        let slices = BTreeMap::from([("s1".to_string(), vec![a]), ("s2".to_string(), vec![b, a])]);
        let merged = merge(&slices, &[old]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.iter().find(|e| e.addr == a).unwrap().load(), 3);
        assert_eq!(merged.iter().find(|e| e.addr == b).unwrap().load(), 0);
    }
}
