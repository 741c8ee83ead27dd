//! How many gateway replicas share the front door, so that a function's throttle holds across
//! all of them: each replica applies its share of `rate`, `burst` and `maxInFlight`.
//!
//! On Kubernetes the count is the number of ready endpoints of the gateway's own Service
//! (`--gateway-service`), followed by a watch on its EndpointSlices: the replicas a client can
//! reach are the ones that share its requests. A replica starting or stopping changes every
//! replica's share within the watch's delay. Sharing by count keeps the request path free of
//! any shared store (no round trip per request, nothing to fail); its cost is that a limit
//! holds exactly only when the Service spreads requests evenly, which it does over many
//! connections. Elsewhere (local mode, no Service named) there is one replica.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};

#[derive(Clone)]
pub struct Peers(Arc<AtomicUsize>);

impl Default for Peers {
    fn default() -> Self {
        Peers(Arc::new(AtomicUsize::new(1)))
    }
}

impl Peers {
    /// Gateway replicas now, this one included (at least 1).
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(1)
    }

    pub fn set(&self, n: usize) {
        let before = self.0.swap(n.max(1), Ordering::Relaxed);
        if before != n.max(1) {
            tracing::info!(replicas = n.max(1), "gateway replicas sharing the throttles");
        }
    }

    /// Follows the ready endpoints of `service` in `namespace`.
    pub fn watch(client: kube::Client, namespace: &str, service: &str) -> Peers {
        let peers = Peers::default();
        let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let events = watcher(api, config).default_backoff();
        let (p, service) = (peers.clone(), service.to_string());
        tokio::spawn(async move {
            let mut slices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut relist: Option<BTreeMap<String, BTreeSet<String>>> = None;
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => relist = Some(BTreeMap::new()),
                    Ok(watcher::Event::InitApply(s)) => {
                        relist.get_or_insert_with(BTreeMap::new).insert(key(&s), ready(&s));
                    }
                    Ok(watcher::Event::InitDone) => slices = relist.take().unwrap_or_default(),
                    Ok(watcher::Event::Apply(s)) => {
                        slices.insert(key(&s), ready(&s));
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        slices.remove(&key(&s));
                    }
                    Err(e) => {
                        tracing::warn!(%service, error = %e, "cannot watch the gateway's own endpoints; throttles keep the last share");
                        continue;
                    }
                }
                if relist.is_none() {
                    p.set(slices.values().flatten().collect::<BTreeSet<_>>().len());
                }
            }
        });
        peers
    }
}

fn key(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The ready endpoints' addresses (an endpoint with no `ready` condition is ready).
fn ready(slice: &EndpointSlice) -> BTreeSet<String> {
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.addresses.first().cloned())
        .collect()
}
