//! The `kubernetes` provider: Functions are `Function` custom resources (the REST API creates,
//! replaces and deletes them; the operator turns them into Deployments and Services), ready
//! endpoints come from EndpointSlices, replica counts are read from Deployments and set through
//! their scale subresource, logs come from the pods.
//!
//! Functions and Deployments are cached by reflectors, EndpointSlices are watched into one
//! endpoint list per Service, so the request path never waits on the API server.

mod endpoints;
mod health;
mod replicas;
mod scope;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use flint_api::Function;
use futures::{AsyncBufReadExt, FutureExt, StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt,
        events::{Event as K8sEvent, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use crate::autoscale::{idle::IdleTimes, remember};
use replicas::Replicas;

use super::{
    CanaryTarget, Deployed, Endpoint, Endpoints, LogMessage, LogQuery, Provider, ProviderError, Route, ScaleTarget,
    Version,
};

pub const FIELD_MANAGER: &str = "flint-gateway";
/// How many times an update meeting someone else's write in between is read and made again.
const UPDATE_ATTEMPTS: u32 = 5;
const FUNCTION_LABEL: &str = "flint.dev/function";
const CANARY_SUFFIX: &str = flint_api::limits::CANARY_SUFFIX;
/// Longest a deploy waits for its Function to reach this gateway's watch.
const SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

type Key = (String, String);

/// One Service's endpoints: per slice, and the merged list routes read.
struct Channel {
    slices: BTreeMap<String, Vec<SocketAddr>>,
    tx: watch::Sender<Arc<Vec<Arc<Endpoint>>>>,
}

impl Channel {
    fn new() -> Self {
        Channel { slices: BTreeMap::new(), tx: watch::channel(Arc::new(Vec::new())).0 }
    }

    /// The merged endpoints to the request path; an endpoint that left a slice (its pod gone,
    /// terminating or not ready: the death notice on Kubernetes) is retired.
    fn publish(&self) {
        let merged = endpoints::merge(&self.slices, &self.tx.borrow());
        let same = {
            let current = self.tx.borrow();
            current.len() == merged.len() && current.iter().zip(&merged).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        if !same {
            crate::endpoint::publish(&self.tx, merged);
        }
    }
}

pub struct Kubernetes {
    client: Client,
    namespace: String,
    /// The namespaces whose functions this gateway serves (and the REST API writes).
    scope: scope::Scope,
    watches: Arc<health::Watches>,
    functions: Store<Function>,
    deployments: Store<Replicas>,
    channels: Arc<RwLock<HashMap<Key, Channel>>>,
    recorder: Recorder,
}

impl Kubernetes {
    /// Starts the caches and waits until they hold the cluster's current state.
    pub async fn start(
        client: Client,
        namespace: String,
        function_namespaces: Vec<String>,
        instance: String,
    ) -> Result<Self, String> {
        let scope = scope::Scope::new(function_namespaces);
        let watches = Arc::new(health::Watches::default());
        let (functions, writer) = reflector::store();
        let watch = scope.watch::<Function>(&client, watcher::Config::default()).modify(|f| {
            // Who wrote which field is the API server's business; it was a third of each
            // cached Function (the whole Function is read again before an update).
            f.metadata.managed_fields = None;
        });
        let stream = reflector::reflector(writer, watch);
        tokio::spawn(watches.clone().follow("Functions", stream.default_backoff()));
        let (deployments, writer) = reflector::store();
        let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=flint-operator");
        let watch = scope.watch::<Replicas>(&client, managed).modify(Replicas::slim);
        let stream = reflector::reflector(writer, watch);
        tokio::spawn(watches.clone().follow("Deployments", stream.default_backoff()));

        let channels: Arc<RwLock<HashMap<Key, Channel>>> = Default::default();
        let slices = scope.watch::<EndpointSlice>(&client, watcher::Config::default().labels(FUNCTION_LABEL));
        let (synced, slices_ready) = tokio::sync::oneshot::channel();
        tokio::spawn(watch_slices(slices.default_backoff(), channels.clone(), watches.clone(), synced));

        // Serving before the endpoints are known would turn every request into a false cold start.
        let wait = async {
            functions.wait_until_ready().await.map_err(|e| e.to_string())?;
            deployments.wait_until_ready().await.map_err(|e| e.to_string())?;
            slices_ready.await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait).await.map_err(|_| {
            format!(
                "the Function, Deployment and EndpointSlice caches did not fill within 60s (RBAC? CRD installed?): {}",
                watches.check().err().unwrap_or_default()
            )
        })??;
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
        Ok(Kubernetes {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace,
            scope,
            watches,
            functions,
            deployments,
            channels,
        })
    }

    /// Refuses namespaces this gateway does not serve functions in.
    fn served(&self, namespace: &str) -> Result<(), ProviderError> {
        if self.scope.contains(namespace) {
            Ok(())
        } else {
            Err(ProviderError::Forbidden(namespace.to_string(), self.scope.namespaces().join(", ")))
        }
    }

    fn function(&self, namespace: &str, name: &str) -> Result<Arc<Function>, ProviderError> {
        self.functions
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace}")))
    }

    /// Waits (up to `SEEN_WITHIN`) until the watch has brought a Function this gateway just
    /// created, so that a deploy answered 202 is routed at once: faas-cli users invoke right
    /// after deploying, and a 404 then would be a lie.
    async fn until_seen(&self, namespace: &str, name: &str) {
        let deadline = tokio::time::Instant::now() + SEEN_WITHIN;
        while self.function(namespace, name).is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Replicas>> {
        self.deployments.get(&ObjectRef::new(name).within(namespace))
    }

    fn endpoints(&self, namespace: &str, service: &str) -> Endpoints {
        let key = (namespace.to_string(), service.to_string());
        // Every request reads here: a shared lock, and the exclusive one only for a Service
        // seen for the first time.
        if let Some(channel) = self.channels.read().unwrap().get(&key) {
            return channel.tx.subscribe();
        }
        self.channels.write().unwrap().entry(key).or_insert_with(Channel::new).tx.subscribe()
    }

    fn object_name(name: &str, version: Version) -> String {
        match version {
            Version::Stable => name.to_string(),
            Version::Canary => format!("{name}{CANARY_SUFFIX}"),
        }
    }

    /// Wanted and ready replicas of a version's Deployment (only one the Function owns).
    fn counts(&self, f: &Function, version: Version) -> Option<(u32, u32)> {
        let (namespace, name) = (f.metadata.namespace.as_deref()?, f.metadata.name.as_deref()?);
        let d = self.deployment(namespace, &Self::object_name(name, version))?;
        d.controlled_by(f.metadata.uid.as_ref()).then(|| d.counts())
    }

    fn deployed(&self, f: Arc<Function>) -> Deployed {
        let counts: Vec<(u32, u32)> =
            [Version::Stable, Version::Canary].into_iter().filter_map(|v| self.counts(&f, v)).collect();
        Deployed {
            replicas: counts.iter().map(|c| c.0).sum(),
            available: counts.iter().map(|c| c.1).sum(),
            created_at: f.metadata.creation_timestamp.as_ref().map(|t| t.0),
            function: f,
        }
    }

    fn api(&self, namespace: &str) -> Api<Function> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Records a scaling decision as an Event on the Function.
    pub async fn record(&self, namespace: &str, name: &str, reason: &str, note: String) {
        let Ok(f) = self.function(namespace, name) else { return };
        let event = K8sEvent {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &f.object_ref(&())).await {
            tracing::warn!(function = name, error = %e, "could not record a scaling event");
        }
    }
}

/// Keeps every Service's endpoint list up to date from its EndpointSlices.
async fn watch_slices(
    events: impl futures::Stream<Item = Result<watcher::Event<EndpointSlice>, watcher::Error>>,
    channels: Arc<RwLock<HashMap<Key, Channel>>>,
    watches: Arc<health::Watches>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    futures::pin_mut!(events);
    let mut synced = Some(synced);
    // During a relist, the fresh state is gathered aside and swapped in whole at its end.
    let mut relist: Option<HashMap<Key, BTreeMap<String, Vec<SocketAddr>>>> = None;
    while let Some(event) = events.next().await {
        let event = match watches.seen("EndpointSlices", event) {
            Some(e) => e,
            None => continue,
        };
        let key = |s: &EndpointSlice| Some((s.namespace()?, endpoints::service_of(s)?.to_string()));
        match event {
            watcher::Event::Init => relist = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                if let (Some(fresh), Some(k)) = (relist.as_mut(), key(&s)) {
                    fresh.entry(k).or_default().insert(s.name_any(), endpoints::ready_addresses(&s));
                }
            }
            watcher::Event::InitDone => {
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
                let fresh = relist.take().unwrap_or_default();
                let mut channels = channels.write().unwrap();
                for (k, channel) in channels.iter_mut() {
                    channel.slices = fresh.get(k).cloned().unwrap_or_default();
                    channel.publish();
                }
                for (k, slices) in fresh.into_iter().filter(|(_, slices)| slices.values().any(|a| !a.is_empty())) {
                    channels
                        .entry(k)
                        .or_insert_with(|| Channel { slices, tx: watch::channel(Arc::new(Vec::new())).0 })
                        .publish();
                }
            }
            watcher::Event::Apply(s) => {
                let Some(k) = key(&s) else { continue };
                let addresses = endpoints::ready_addresses(&s);
                let mut channels = channels.write().unwrap();
                // A Service with no endpoint that nobody has asked for (a function at rest,
                // never called) needs no channel: one is made when a request first asks.
                if addresses.is_empty() && !channels.contains_key(&k) {
                    continue;
                }
                let channel = channels.entry(k).or_insert_with(Channel::new);
                channel.slices.insert(s.name_any(), addresses);
                channel.publish();
            }
            watcher::Event::Delete(s) => {
                let Some(k) = key(&s) else { continue };
                if let Some(channel) = channels.write().unwrap().get_mut(&k) {
                    channel.slices.remove(&s.name_any());
                    channel.publish();
                }
            }
        }
    }
}

fn backend(e: kube::Error) -> ProviderError {
    ProviderError::Backend(format!("Kubernetes API: {e}"))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Provider for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn default_namespace(&self) -> &str {
        &self.namespace
    }

    fn holds_namespace(&self, namespace: &str) -> bool {
        self.scope.contains(namespace)
    }

    fn namespaces(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        let all = self.scope.namespaces().to_vec();
        async move { Ok(all) }.boxed()
    }

    fn route(&self, namespace: &str, name: &str) -> Option<Route> {
        let f = self.function(namespace, name).ok()?;
        let canary =
            f.spec.canary.as_ref().map(|_| self.endpoints(namespace, &Self::object_name(name, Version::Canary)));
        // The effective weight (status, set by the canary analysis) wins over the spec's.
        let weight = f.status.as_ref().and_then(|s| s.canary.as_ref()).map(|c| c.weight).or(f
            .spec
            .canary
            .as_ref()
            .map(|c| c.weight));
        Some(Route {
            stable: self.endpoints(namespace, name),
            canary,
            canary_weight: weight.unwrap_or(0).clamp(0, 100) as u8,
            function: f,
        })
    }

    fn list(&self, namespace: &str) -> BoxFuture<'_, Result<Vec<Deployed>, ProviderError>> {
        let list = self.served(namespace).map(|()| {
            self.functions
                .state()
                .into_iter()
                .filter(|f| f.namespace().as_deref() == Some(namespace))
                .map(|f| self.deployed(f))
                .collect()
        });
        async move { list }.boxed()
    }

    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Deployed, ProviderError>> {
        let found = self.function(namespace, name).map(|f| self.deployed(f));
        async move { found }.boxed()
    }

    fn deploy(&self, function: Function) -> BoxFuture<'_, Result<(), ProviderError>> {
        async move {
            function.validate()?;
            let ns = function.namespace().unwrap_or_else(|| self.namespace.clone());
            self.served(&ns)?;
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match self.api(&ns).create(&params, &function).await {
                Ok(_) => {
                    self.until_seen(&ns, &function.name_any()).await;
                    Ok(())
                }
                Err(e) if is_status(&e, 409) => Err(ProviderError::AlreadyExists(function.name_any())),
                Err(e) => Err(backend(e)),
            }
        }
        .boxed()
    }

    fn update(&self, function: Function) -> BoxFuture<'_, Result<(), ProviderError>> {
        async move {
            function.validate()?;
            let ns = function.namespace().unwrap_or_else(|| self.namespace.clone());
            self.served(&ns)?;
            let api = self.api(&ns);
            let name = function.name_any();
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            // Read, merge, write back at the version read: a write by anyone in between (the
            // operator's status, most often) is a conflict, and the merge is made again on
            // what is there now.
            let mut attempts = 0;
            loop {
                let mut current = match api.get(&name).await {
                    Ok(f) => f,
                    Err(e) if is_status(&e, 404) => return Err(ProviderError::NotFound(format!("{name}.{ns}"))),
                    Err(e) => return Err(backend(e)),
                };
                // The gateway changes only what the OpenFaaS API carries; the rest of the spec stays.
                current.spec = super::openfaas_update(&current.spec, function.spec.clone());
                current.validate()?;
                match api.replace(&name, &params, &current).await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_status(&e, 409) && attempts < UPDATE_ATTEMPTS => {
                        tracing::debug!(function = %name, namespace = %ns, "written by someone else meanwhile: merging again");
                        attempts += 1;
                    }
                    Err(e) => return Err(backend(e)),
                }
            }
        }
        .boxed()
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            self.served(namespace)?;
            match self.api(namespace).delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 404) => Err(ProviderError::NotFound(format!("{name}.{namespace}"))),
                Err(e) => Err(backend(e)),
            }
        }
        .boxed()
    }

    fn scale_from_zero<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            match self.function(namespace, name).ok().and_then(|f| self.counts(&f, version)) {
                Some((0, _)) => self.scale(namespace, name, version, 1).await,
                _ => Ok(()),
            }
        }
        .boxed()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let f = self.function(namespace, name)?;
            super::check_replicas(&f, replicas)?;
            let object = Self::object_name(name, version);
            if let Some(d) = self.deployment(namespace, &object)
                && !d.controlled_by(f.metadata.uid.as_ref())
            {
                return Err(ProviderError::NotOurs(format!(
                    "Deployment {object} is not {name}'s (no controller reference to it): not scaled"
                )));
            }
            let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
            let patch = serde_json::json!({ "spec": { "replicas": replicas } });
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            deployments
                .patch_scale(&Self::object_name(name, version), &params, &Patch::Merge(&patch))
                .await
                .map_err(backend)?;
            Ok(())
        }
        .boxed()
    }

    fn scale_targets(&self) -> Vec<ScaleTarget> {
        let mut out = Vec::new();
        for f in self.functions.state() {
            for version in [Version::Stable, Version::Canary] {
                if version == Version::Canary && f.spec.canary.is_none() {
                    continue;
                }
                if let Some((replicas, ready)) = self.counts(&f, version) {
                    out.push(ScaleTarget { function: f.clone(), version, replicas, ready });
                }
            }
        }
        out
    }

    fn event<'a>(&'a self, namespace: &'a str, name: &'a str, reason: &'a str, note: String) -> BoxFuture<'a, ()> {
        self.record(namespace, name, reason, note).boxed()
    }

    fn triggers(&self) -> Vec<(String, String, Arc<Function>)> {
        self.functions
            .state()
            .into_iter()
            .filter(|f| !f.spec.triggers.is_empty())
            .map(|f| (f.namespace().unwrap_or_default(), f.name_any(), f))
            .collect()
    }

    fn canaries(&self) -> Vec<CanaryTarget> {
        self.functions
            .state()
            .into_iter()
            .filter_map(|f| {
                let canary = f.spec.canary.as_ref()?;
                let analysis = canary.analysis.clone()?;
                let status = f
                    .status
                    .as_ref()
                    .and_then(|s| s.canary.clone())
                    .unwrap_or_else(|| flint_api::CanaryStatus::initial(canary));
                Some(CanaryTarget {
                    namespace: f.namespace().unwrap_or_default(),
                    name: f.name_any(),
                    analysis,
                    status,
                })
            })
            .collect()
    }

    fn set_canary<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        status: flint_api::CanaryStatus,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            // Server-side apply of `status.canary` only, under the gateway's own field manager:
            // the operator applies the rest of the status under its own and leaves this out.
            let patch = serde_json::json!({
                "apiVersion": "flint.dev/v1alpha1",
                "kind": "Function",
                "status": { "canary": status },
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            self.api(namespace).patch_status(name, &params, &Patch::Apply(&patch)).await.map_err(backend)?;
            Ok(())
        }
        .boxed()
    }

    fn learned_idle(&self, namespace: &str, name: &str, version: Version, image: &str) -> Option<IdleTimes> {
        let f =
            self.functions.state().into_iter().find(|f| {
                f.metadata.namespace.as_deref() == Some(namespace) && f.metadata.name.as_deref() == Some(name)
            })?;
        let status = f.status.as_ref()?;
        let entry = status.idle.iter().find(|e| e.version == version.as_str())?;
        remember::from_status(entry, image)
    }

    fn remember_idle<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
        image: &'a str,
        idle: IdleTimes,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            // Server-side apply of this version's entry of `status.idle` only, under a field
            // manager of its own (an apply drops what its manager applied before and left
            // out: sharing the canary's manager would drop `status.canary`).
            let patch = serde_json::json!({
                "apiVersion": "flint.dev/v1alpha1",
                "kind": "Function",
                "status": { "idle": [remember::to_status(version, image, &idle)] },
            });
            let manager = format!("{FIELD_MANAGER}-idle-{}", version.as_str());
            let params = PatchParams::apply(&manager).force();
            self.api(namespace).patch_status(name, &params, &Patch::Apply(&patch)).await.map_err(backend)?;
            Ok(())
        }
        .boxed()
    }

    fn logs(&self, query: LogQuery) -> BoxFuture<'_, Result<BoxStream<'static, LogMessage>, ProviderError>> {
        async move {
            self.function(&query.namespace, &query.name)?;
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &query.namespace);
            let list = pods
                .list(&ListParams::default().labels(&format!("{FUNCTION_LABEL}={}", query.name)))
                .await
                .map_err(backend)?;
            let params = LogParams {
                container: Some("function".into()),
                follow: query.follow,
                tail_lines: query.tail.map(|t| t as i64),
                since_time: query.since,
                timestamps: true,
                ..Default::default()
            };
            let mut streams = Vec::new();
            for pod in list {
                let pod_name = pod.name_any();
                let lines = pods.log_stream(&pod_name, &params).await.map_err(backend)?.lines();
                let (name, namespace) = (query.name.clone(), query.namespace.clone());
                streams.push(
                    lines
                        .map_ok(move |line| {
                            let (timestamp, text) = line.split_once(' ').unwrap_or(("", line.as_str()));
                            LogMessage {
                                name: name.clone(),
                                namespace: namespace.clone(),
                                instance: pod_name.clone(),
                                timestamp: timestamp.into(),
                                text: text.into(),
                            }
                        })
                        .filter_map(|m| async move { m.ok() })
                        .boxed(),
                );
            }
            Ok(futures::stream::select_all(streams).boxed())
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }

    fn health(&self) -> Result<(), String> {
        self.watches.check()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn function(spec: &str) -> Function {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: f, namespace: ns, uid: u-f}}\nspec:\n{spec}\n"
        );
        flint_api::manifest::from_yaml(&yaml).unwrap().remove(0)
    }

    /// A Deployment as the API server sends it.
    fn deployment(name: &str, replicas: i32) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "resourceVersion": "7",
                         "labels": {"app.kubernetes.io/managed-by": "flint-operator"}, "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u-other"},
                {"apiVersion": "flint.dev/v1alpha1", "kind": "Function", "name": "f", "uid": "u-f", "controller": true}
            ], "annotations": {"deployment.kubernetes.io/revision": "1"},
            "managedFields": [{"manager": "flint-operator", "operation": "Apply", "fieldsType": "FieldsV1"}]},
            "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": [
                {"name": "function", "image": "registry.local/f:1", "args": ["--upstream", "127.0.0.1:8081"]}
            ]}}},
            "status": {"readyReplicas": replicas, "conditions": [{"type": "Available", "status": "True"}]}
        })
    }

    /// A provider over fixed caches and a mocked API server.
    fn provider(functions: Vec<Function>, deployments: Vec<Value>) -> (Kubernetes, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (fstore, mut fw) = reflector::store();
        for f in functions {
            fw.apply_watcher_event(&watcher::Event::Apply(f));
        }
        let (dstore, mut dw) = reflector::store();
        for d in deployments {
            // As the watch does: every test reads what the gateway keeps.
            let mut d: Replicas = serde_json::from_value(d).unwrap();
            d.slim();
            dw.apply_watcher_event(&watcher::Event::Apply(d));
        }
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: None };
        let k = Kubernetes {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: "ns".into(),
            scope: scope::Scope::new(vec!["ns".into()]),
            watches: Default::default(),
            functions: fstore,
            deployments: dstore,
            channels: Default::default(),
        };
        (k, handle)
    }

    #[tokio::test]
    async fn a_cached_deployment_keeps_its_owner_and_counts_and_nothing_else() {
        let (k, _api) = provider(vec![function("  image: x")], vec![deployment("f", 3)]);
        let d = k.deployment("ns", "f").unwrap();
        let kept = kube::api::ObjectMeta { name: Some("f".into()), namespace: Some("ns".into()), ..Default::default() };
        assert_eq!(d.metadata, kept);
        assert_eq!(k.counts(&function("  image: x"), Version::Stable), Some((3, 3)));
    }

    /// Answers the next call after checking it; returns its JSON body.
    async fn expect(handle: &mut Handle, method: &str, path: &str, status: u16, reply: Value) -> Value {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await.expect("a call").unwrap();
        assert_eq!((request.method().as_str(), request.uri().path()), (method, path));
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        send.send_response(
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
        );
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() }
    }

    fn scale_reply(n: u32) -> Value {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "f"}, "spec": {"replicas": n}})
    }

    #[tokio::test]
    async fn scaling_patches_the_scale_subresource_only() {
        let (k, mut api) = provider(vec![function("  image: x\n  scale: {max: 5}")], vec![deployment("f", 1)]);
        let k = Arc::new(k);
        let task = tokio::spawn({
            let k = k.clone();
            async move { k.scale("ns", "f", Version::Stable, 3).await }
        });
        let body =
            expect(&mut api, "PATCH", "/apis/apps/v1/namespaces/ns/deployments/f/scale", 200, scale_reply(3)).await;
        assert_eq!(body, json!({"spec": {"replicas": 3}}));
        task.await.unwrap().unwrap();
        let over = k.scale("ns", "f", Version::Stable, 9).await.unwrap_err();
        assert!(over.to_string().contains("spec.scale.max"), "{over}");
    }

    #[tokio::test]
    async fn a_deployment_the_function_does_not_own_is_never_scaled() {
        let mut theirs = deployment("f", 1);
        theirs["metadata"].as_object_mut().unwrap().remove("ownerReferences");
        let (k, api) = provider(vec![function("  image: x\n  scale: {max: 5}")], vec![theirs]);
        let refused = k.scale("ns", "f", Version::Stable, 3).await.unwrap_err();
        assert!(matches!(refused, ProviderError::NotOurs(_)), "{refused}");
        assert!(k.scale_targets().is_empty(), "the autoscaler must not see it either");
        drop(k);
        let mut api = api;
        assert!(api.next_request().await.is_none(), "an API call was made");
    }

    #[tokio::test]
    async fn the_rest_api_writes_functions_only_in_its_function_namespaces() {
        let (k, _api) = provider(vec![], vec![]);
        let mut f = function("  image: x");
        f.metadata.namespace = Some("kube-system".into());
        let refused = k.deploy(f).await.unwrap_err();
        assert!(matches!(refused, ProviderError::Forbidden(..)), "{refused}");
        assert!(refused.to_string().contains("--function-namespaces"), "{refused}");
        assert!(matches!(k.delete("kube-system", "f").await, Err(ProviderError::Forbidden(..))));
    }

    #[tokio::test]
    async fn the_canary_status_is_applied_under_the_gateways_field_manager() {
        let (k, mut api) = provider(vec![function("  image: x\n  canary: {image: x2, analysis: {}}")], vec![]);
        let status =
            flint_api::CanaryStatus { weight: 0, phase: flint_api::CanaryPhase::RolledBack, ..Default::default() };
        let task = tokio::spawn(async move { k.set_canary("ns", "f", status).await });
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), api.next_request()).await.unwrap().unwrap();
        assert_eq!(request.uri().path(), "/apis/flint.dev/v1alpha1/namespaces/ns/functions/f/status");
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("fieldManager=flint-gateway") && query.contains("force=true"), "{query}");
        assert_eq!(request.headers()["content-type"], "application/apply-patch+yaml");
        let body: Value = serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            body["status"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["canary"],
            "only its own field: {body}"
        );
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&function("  image: x")).unwrap()))
                .unwrap(),
        );
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn scale_from_zero_asks_once_and_only_at_zero() {
        let (k, mut api) = provider(vec![function("  image: x")], vec![deployment("f", 0)]);
        let task = tokio::spawn(async move { k.scale_from_zero("ns", "f", Version::Stable).await });
        let body =
            expect(&mut api, "PATCH", "/apis/apps/v1/namespaces/ns/deployments/f/scale", 200, scale_reply(1)).await;
        assert_eq!(body["spec"]["replicas"], 1);
        task.await.unwrap().unwrap();

        let (k, _api) = provider(vec![function("  image: x")], vec![deployment("f", 2)]);
        k.scale_from_zero("ns", "f", Version::Stable).await.unwrap();
    }

    #[tokio::test]
    async fn deploying_creates_the_function_resource() {
        let (k, mut api) = provider(vec![], vec![]);
        let f = function("  image: x");
        let sent = f.clone();
        let task = tokio::spawn(async move { k.deploy(sent).await });
        let body = expect(
            &mut api,
            "POST",
            "/apis/flint.dev/v1alpha1/namespaces/ns/functions",
            201,
            serde_json::to_value(&f).unwrap(),
        )
        .await;
        assert_eq!(body["spec"]["image"], "x");
        task.await.unwrap().unwrap();

        let (k, mut api) = provider(vec![], vec![]);
        let task = tokio::spawn(async move { k.deploy(function("  image: x")).await });
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"});
        expect(&mut api, "POST", "/apis/flint.dev/v1alpha1/namespaces/ns/functions", 409, conflict).await;
        assert!(matches!(task.await.unwrap(), Err(ProviderError::AlreadyExists(_))));
    }

    #[tokio::test]
    async fn routes_follow_endpoint_slices_and_the_effective_canary_weight() {
        let mut f = function("  image: x\n  canary: {image: y2, weight: 30}");
        f.status = Some(flint_api::FunctionStatus {
            canary: Some(flint_api::CanaryStatus { weight: 5, ..Default::default() }),
            ..Default::default()
        });
        let (k, _api) = provider(vec![f], vec![deployment("f", 1), deployment("f-canary", 1)]);
        let route = k.route("ns", "f").unwrap();
        assert_eq!(route.canary_weight, 5, "status (effective) wins over spec");
        assert!(route.stable.borrow().is_empty());
        {
            let mut channels = k.channels.write().unwrap();
            let c = channels.get_mut(&("ns".to_string(), "f".to_string())).unwrap();
            c.slices.insert("f-1".into(), vec!["10.1.0.7:8080".parse().unwrap()]);
            c.publish();
        }
        assert_eq!(route.stable.borrow()[0].addr.to_string(), "10.1.0.7:8080");
        assert!(route.canary.as_ref().unwrap().borrow().is_empty());
        let targets = k.scale_targets();
        assert_eq!(targets.len(), 2);
        assert!(k.route("ns", "nope").is_none());
    }

    fn slice(service: &str, ready: &[&str]) -> EndpointSlice {
        let endpoints: Vec<Value> =
            ready.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_service_without_endpoints_gets_a_channel_only_when_asked_for() {
        let (k, _api) = provider(vec![], vec![]);
        let (events, rx) =
            tokio::sync::mpsc::unbounded_channel::<Result<watcher::Event<EndpointSlice>, watcher::Error>>();
        let (synced, slices_ready) = tokio::sync::oneshot::channel();
        let watching = tokio::spawn(watch_slices(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            k.channels.clone(),
            k.watches.clone(),
            synced,
        ));
        let send = |e: watcher::Event<EndpointSlice>| events.send(Ok(e)).unwrap();
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(slice("at-rest", &[])));
        send(watcher::Event::InitApply(slice("running", &["10.0.0.1"])));
        send(watcher::Event::InitDone);
        slices_ready.await.unwrap();
        send(watcher::Event::Apply(slice("new-at-rest", &[])));
        let mut asked = k.endpoints("ns", "asked");
        send(watcher::Event::Apply(slice("asked", &["10.0.0.2"])));
        tokio::time::timeout(Duration::from_secs(5), asked.changed()).await.unwrap().unwrap();
        assert_eq!(asked.borrow().iter().map(|e| e.addr.to_string()).collect::<Vec<_>>(), ["10.0.0.2:8080"]);
        let mut kept: Vec<String> = k.channels.read().unwrap().keys().map(|(_, s)| s.clone()).collect();
        kept.sort();
        assert_eq!(kept, ["asked", "running"]);
        assert_eq!(k.endpoints("ns", "running").borrow().len(), 1);
        watching.abort();
    }
}
