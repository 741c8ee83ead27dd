//! What the reconciler reads of the cluster besides Functions: its own Deployments, Services
//! and their pods, kept by watches instead of fetched on every reconcile. A reconcile that
//! changes nothing then costs no API request at all, which is what lets one operator keep up
//! with thousands of Functions (a GET per child per reconcile was most of its traffic).
//!
//! Each watch selects only objects carrying the operator's `managed-by` label and keeps only
//! the fields the reconciler reads (no `managedFields`, no pod templates, no pod specs): a
//! cached child is a few hundred bytes, not the tens of kilobytes of the full object. The same
//! watches trigger reconciles: a child changed or deleted by someone else, or a pod that
//! starts failing, wakes its Function.
//!
//! The cache can lag behind the API server; the reconciler treats a miss as "probably absent"
//! and lets the API server decide (a create that meets 409 reads the object and carries on).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
};

use flint_api::Function;
use futures::{
    FutureExt, Stream,
    future::{BoxFuture, Shared},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, PodStatus, Service},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use crate::resources::{FUNCTION_LABEL, MANAGED_BY, OPERATOR};

/// The children of the Functions in one scope (a namespace, or all of them).
#[derive(Clone)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub pods: Store<Pod>,
    /// All three stores have had their first list; false when a feed ended before that.
    ready: Shared<BoxFuture<'static, bool>>,
}

/// What feeds one scope's stores: the watches `controller::run` drives.
pub struct Feed {
    pub scope: Option<String>,
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    pods: Writer<Pod>,
}

/// Every scope's stores, looked up by a Function's namespace.
#[derive(Clone)]
pub struct Cache {
    scopes: Arc<HashMap<Option<String>, Stores>>,
}

impl Cache {
    /// Empty stores for each namespace (one scope for all when `namespaces` is empty), and the
    /// feeds that fill them.
    pub fn new(namespaces: &[String]) -> (Cache, Vec<Feed>) {
        let scopes: Vec<Option<String>> =
            if namespaces.is_empty() { vec![None] } else { namespaces.iter().cloned().map(Some).collect() };
        let mut stores = HashMap::new();
        let mut feeds = Vec::new();
        for scope in scopes {
            let (deployments, deployments_writer) = reflector::store();
            let (services, services_writer) = reflector::store();
            let (pods, pods_writer) = reflector::store();
            // One shared wait, not one per reconcile: `Store::wait_until_ready` wakes only the
            // last of several tasks waiting on it at once (it polls a single oneshot receiver,
            // which keeps one waker), so reconciles started together before the first list
            // arrived waited forever but one. Seen as a standby operator that took over and
            // never reconciled a Function created while it waited for the lease.
            let (d, s, p) = (deployments.clone(), services.clone(), pods.clone());
            let ready = async move {
                let (d, s, p) = futures::join!(d.wait_until_ready(), s.wait_until_ready(), p.wait_until_ready());
                d.is_ok() && s.is_ok() && p.is_ok()
            };
            let ready = ready.boxed().shared();
            stores.insert(scope.clone(), Stores { deployments, services, pods, ready });
            feeds.push(Feed { scope, deployments: deployments_writer, services: services_writer, pods: pods_writer });
        }
        (Cache { scopes: Arc::new(stores) }, feeds)
    }

    /// The stores holding `namespace`'s children, once their first list has arrived (so that a
    /// freshly started operator does not take every child for missing).
    pub async fn ready(&self, namespace: &str) -> Option<&Stores> {
        let stores = self.scopes.get(&Some(namespace.to_string())).or_else(|| self.scopes.get(&None))?;
        // False only when a feed is gone, i.e. the controller is shutting down.
        let _ = stores.ready.clone().await;
        Some(stores)
    }
}

impl Stores {
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// The pods of Function `name` in `namespace`.
    pub fn pods_of(&self, namespace: &str, name: &str) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.labels().get(FUNCTION_LABEL).map(String::as_str) == Some(name)
        })
    }
}

impl Feed {
    /// For tests: puts `object` in the stores as if a watch had delivered it.
    pub fn insert_deployment(&mut self, mut d: Deployment) {
        trim_deployment(&mut d);
        self.deployments.apply_watcher_event(&watcher::Event::Apply(d));
    }

    pub fn insert_service(&mut self, mut s: Service) {
        trim_service(&mut s);
        self.services.apply_watcher_event(&watcher::Event::Apply(s));
    }

    pub fn insert_pod(&mut self, mut p: Pod) {
        trim_pod(&mut p);
        self.pods.apply_watcher_event(&watcher::Event::Apply(p));
    }

    /// For tests: the stores become ready (as after a watch's first, empty, list).
    pub fn mark_ready(&mut self) {
        fn ready<K: Resource<DynamicType = ()> + Clone>(w: &mut Writer<K>) {
            w.apply_watcher_event(&watcher::Event::Init);
            w.apply_watcher_event(&watcher::Event::InitDone);
        }
        ready(&mut self.deployments);
        ready(&mut self.services);
        ready(&mut self.pods);
    }

    /// The watches that fill the stores, as trigger streams for the controller: each changed
    /// child, and each pod whose waiting reasons changed.
    #[allow(clippy::type_complexity)]
    pub fn watches(
        self,
        client: &Client,
    ) -> (
        impl Stream<Item = Result<Deployment, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<Service, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    ) {
        let ours = watcher::Config::default().labels(&format!("{MANAGED_BY}={OPERATOR}"));
        let deployments = watch(api(client, &self.scope), ours.clone(), trim_deployment, self.deployments);
        let services = watch(api(client, &self.scope), ours.clone(), trim_service, self.services);
        let pods = watch(api(client, &self.scope), ours, trim_pod, self.pods)
            .predicate_filter(waiting_reasons, Default::default());
        (deployments, services, pods)
    }
}

/// The Function a pod belongs to, to wake it when the pod starts or stops failing.
pub fn function_of(pod: Pod) -> Option<ObjectRef<Function>> {
    let name = pod.labels().get(FUNCTION_LABEL)?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// The API of `K` in a scope: one namespace, or all.
pub fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    writer: Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, config).default_backoff().modify(trim).reflect(writer).touched_objects()
}

fn trim_deployment(d: &mut Deployment) {
    d.metadata.managed_fields = None;
    if let Some(spec) = d.spec.as_mut() {
        // Only the replica count is read; the template is what the spec hash stands for.
        spec.template = Default::default();
    }
}

fn trim_service(s: &mut Service) {
    s.metadata.managed_fields = None;
    s.spec = None;
    s.status = None;
}

fn trim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    p.spec = None;
    p.status = p.status.take().map(|s| PodStatus { container_statuses: s.container_statuses, ..Default::default() });
}

/// A pod changes what the operator reports only when its containers' waiting reasons change.
fn waiting_reasons(p: &Pod) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for cs in p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()) {
        cs.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref()).hash(&mut h);
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_first_list_goes_on_when_it_arrives() {
        let (cache, mut feeds) = Cache::new(&["team".to_string()]);
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.ready("team").await.is_some() })
            })
            .collect();
        // Every waiter has polled (and parked) before the list arrives.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(waiting.iter().all(|w| !w.is_finished()), "ready before the first list");
        feeds[0].mark_ready();
        for w in waiting {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(10), w).await;
            assert!(matches!(woke, Ok(Ok(true))), "a waiter was never woken: {woke:?}");
        }
    }
}
