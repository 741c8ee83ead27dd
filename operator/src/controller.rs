//! The reconciler: one Function at a time, make the cluster match the spec and say in the
//! Function's status what was done and what is wrong. Thin `reconcile`, fat helpers; the
//! desired objects come from `resources`, the status from `status`.
//!
//! Writes happen only when something differs: a child whose `flint.dev/spec-hash` matches the
//! desired object is left alone, the status is patched only when it changed. A Deployment is
//! created with its initial replica count and afterwards applied without `replicas`, so the
//! count the gateway set is never reset. Children and pods are read from `cache`, so a
//! reconcile that finds everything in place makes no API request.

use std::{collections::HashMap, fmt::Debug, sync::Arc, time::Duration};

use flint_api::Function;
use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{ObjectReference, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    cache::{self, Cache, Feed, Stores},
    error::{Error, Result},
    metrics::{ErrorLabel, Metrics, ResultLabel},
    resources::{self, Desired, OPERATOR, SPEC_HASH, Version},
    status::{self, Observed, PodProblem},
};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The children and pods, as the watches last saw them.
    pub cache: Cache,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Base URL of the gateway, for `status.url`.
    pub gateway_url: String,
    failures: std::sync::Mutex<HashMap<ObjectRef<Function>, u32>>,
    /// When each Function's children were last written, while that is recent (the
    /// expectations of Kubernetes' own controllers): until the watches show those writes, a
    /// child missing from the cache is not created again, and until the children's controller
    /// has seen them the status waits; each at most `SAY_AFTER_WRITES`.
    written: std::sync::Mutex<HashMap<ObjectRef<Function>, Written>>,
}

impl Context {
    pub fn new(client: Client, cache: Cache, metrics: Arc<Metrics>, gateway_url: String, instance: String) -> Self {
        let reporter = Reporter { controller: OPERATOR.into(), instance: Some(instance) };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cache,
            metrics,
            gateway_url,
            failures: Default::default(),
            written: Default::default(),
        }
    }

    fn wrote_children(&self, f: &Function, created: Vec<Version>) {
        let mut written = self.written.lock().unwrap();
        // Entries of Functions deleted meanwhile go here, so the map holds only recent writes.
        written.retain(|_, w| w.at.elapsed() < SAY_AFTER_WRITES);
        written.insert(ObjectRef::from_obj(f), Written { at: std::time::Instant::now(), created });
    }

    /// How much longer what `f`'s children were last written waits to be seen, if that was
    /// recent; and which versions' children were created then.
    fn expecting(&self, f: &Function) -> Option<(Duration, Vec<Version>)> {
        let written = self.written.lock().unwrap();
        let w = written.get(&ObjectRef::from_obj(f))?;
        Some((SAY_AFTER_WRITES.checked_sub(w.at.elapsed())?, w.created.clone()))
    }

    fn seen(&self, f: &Function) {
        self.written.lock().unwrap().remove(&ObjectRef::from_obj(f));
    }

    /// Records an event on the Function; `about` is the child it concerns, if any.
    async fn event(
        &self,
        f: &Function,
        about: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: about };
        if let Err(e) = self.recorder.publish(&event, &f.object_ref(&())).await {
            tracing::warn!(function = %f.name_any(), error = %e, "could not record an event");
        }
    }
}

/// A Function's last child writes: when, and the versions whose children were created.
struct Written {
    at: std::time::Instant,
    created: Vec<Version>,
}

/// Dispatches; the work is in the helpers.
pub async fn reconcile(f: Arc<Function>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.timer();
    let namespace = f.namespace().ok_or(Error::NoNamespace)?;
    let result = match f.validate() {
        Err(problems) => refuse(&f, &namespace, &problems, &ctx).await,
        Ok(()) => apply(&f, &namespace, &ctx).await,
    };
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabel { result: label }).inc();
    if result.is_ok() {
        ctx.failures.lock().unwrap().remove(&ObjectRef::from_obj(&*f));
    }
    result
}

/// Retries with exponential backoff per Function: 1 s, 2 s, 4 s ... up to 5 minutes.
pub fn error_policy(f: Arc<Function>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&ErrorLabel { error: error.metric_label() }).inc();
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(ObjectRef::from_obj(&*f)).or_insert(0);
    *n += 1;
    let delay = Duration::from_secs(1 << (*n - 1).min(8)).min(Duration::from_secs(300));
    tracing::warn!(function = %f.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// An invalid spec changes nothing in the cluster; the status says every problem.
async fn refuse(f: &Function, namespace: &str, problems: &flint_api::Invalid, ctx: &Context) -> Result<Action> {
    let status = status::invalid(f, problems, &ctx.gateway_url, Timestamp::now());
    if f.status.as_ref() != Some(&status) {
        patch_status(f, namespace, &status, ctx).await?;
        ctx.event(f, None, EventType::Warning, "InvalidSpec", "Validate", problems.to_string()).await;
    }
    Ok(Action::await_change())
}

async fn apply(f: &Function, namespace: &str, ctx: &Context) -> Result<Action> {
    match apply_children(f, namespace, ctx).await {
        Err(e @ (Error::NameConflict { .. } | Error::ChildRefused { .. })) => {
            // Said on the Function, where its author looks, and retried with backoff.
            let reason = if matches!(e, Error::NameConflict { .. }) { "NameConflict" } else { "ChildRefused" };
            let status = status::blocked(f, reason, e.to_string(), &ctx.gateway_url, Timestamp::now());
            if f.status.as_ref() != Some(&status) {
                patch_status(f, namespace, &status, ctx).await?;
                ctx.event(f, None, EventType::Warning, reason, "Reconcile", e.to_string()).await;
            }
            Err(e)
        }
        other => other,
    }
}

async fn apply_children(f: &Function, namespace: &str, ctx: &Context) -> Result<Action> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = ctx.cache.ready(namespace).await.ok_or(Error::NotWatched)?;
    let wanted = resources::versions(f);
    let expecting = ctx.expecting(f);
    if let Some((wait, created)) = &expecting {
        let missing = created.iter().filter(|v| wanted.contains(v)).any(|&v| {
            let name = resources::object_name(f, v);
            cached.deployment(namespace, &name).is_none() || cached.service(namespace, &name).is_none()
        });
        if missing {
            // The watch's echo of one create woke this before the other's: creating it again
            // would meet 409 and a read. Its echo wakes this again. (A version wanted since,
            // such as a canary just added, is not waited for.)
            return Ok(Action::requeue(*wait));
        }
    }
    let mut observed = Observed::default();
    let mut done = Done { first: f.status.as_ref().is_none_or(|s| s.observed_generation.is_none()), ..Done::default() };
    let mut created = Vec::new();
    let written = async {
        for version in [Version::Stable, Version::Canary] {
            let name = resources::object_name(f, version);
            if wanted.contains(&version) {
                let (d, s) = (cached.deployment(namespace, &name), cached.service(namespace, &name));
                if d.is_none() || s.is_none() {
                    created.push(version);
                }
                let d = ensure(&deployments, d, resources::desired_deployment(f, version), f, &mut done).await?;
                ensure(&services, s, resources::desired_service(f, version), f, &mut done).await?;
                observed.deployments.push((version, Some(d)));
            } else {
                remove(&deployments, cached.deployment(namespace, &name), f, &mut done).await?;
                remove(&services, cached.service(namespace, &name), f, &mut done).await?;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    // What was written is said once, whether or not all of it could be.
    let wrote = !done.is_empty();
    done.publish(f, ctx).await;
    written?;
    if wrote {
        // Nothing new to say yet: the children's controller has not seen them. Their status
        // changing wakes this again (a Service has none: the resync below says it then).
        ctx.wrote_children(f, created);
        return Ok(Action::requeue(SAY_AFTER_WRITES));
    }
    // Woken by the watch's echo of those writes, before their controller has seen them: a
    // status now would say "being rolled out" only to be written again a moment later.
    let unseen = observed.deployments.iter().any(|(_, d)| {
        d.as_ref().is_none_or(|d| d.status.as_ref().and_then(|s| s.observed_generation) < d.metadata.generation)
    });
    match expecting {
        Some((wait, _)) if unseen => return Ok(Action::requeue(wait)),
        Some(_) => ctx.seen(f),
        None => {}
    }
    if observed.deployments.iter().any(|(_, d)| !fully_ready(d.as_ref())) {
        observed.pod_problems = pod_problems(f, namespace, cached);
    }
    let status = status::status(f, &observed, &ctx.gateway_url, Timestamp::now());
    if f.status.as_ref() != Some(&status) {
        patch_status(f, namespace, &status, ctx).await?;
    }
    // Children and pods wake us when they change; this is only a periodic resync.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// After writing children, the status waits for what their controller makes of them; at the
/// latest this long.
const SAY_AFTER_WRITES: Duration = Duration::from_secs(10);

/// The child writes of one reconcile, said in one Event: each one its own Event was a write
/// per child on top of the child itself. A new Function's children are said by its status
/// alone: an Event for what `kubectl apply` plainly asked for was a third more API writes in a
/// burst of new Functions. A child made again (deleted by someone, a canary added), changed or
/// removed is news, and gets its Event.
#[derive(Default)]
struct Done {
    /// The Function was never reconciled before (its status has no observed generation).
    first: bool,
    wrote: bool,
    /// The reason of each write said (`Created`, `Updated`, `Deleted`), the first child
    /// written, and what was done, in words.
    reasons: Vec<&'static str>,
    about: Option<ObjectReference>,
    notes: Vec<String>,
}

impl Done {
    fn add(&mut self, reason: &'static str, about: ObjectReference, note: String) {
        self.wrote = true;
        if self.first && reason == "Created" {
            return;
        }
        self.reasons.push(reason);
        self.about.get_or_insert(about);
        self.notes.push(note);
    }

    fn is_empty(&self) -> bool {
        !self.wrote
    }

    async fn publish(self, f: &Function, ctx: &Context) {
        let Some(&first) = self.reasons.first() else { return };
        let reason = if self.reasons.iter().all(|r| *r == first) { first } else { "Reconciled" };
        ctx.event(f, self.about, EventType::Normal, reason, "Reconcile", self.notes.join("; ")).await;
    }
}

fn fully_ready(d: Option<&Deployment>) -> bool {
    let Some(d) = d else { return false };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= want
}

/// Creates the object, or applies it when its spec hash differs; returns it as it now is.
/// `cached` is what the watch last saw; a miss is confirmed by the API server (a create that
/// meets 409 reads the object: the watch may lag behind a create of our own).
async fn ensure<K>(
    api: &Api<K>,
    cached: Option<Arc<K>>,
    desired: Desired<K>,
    f: &Function,
    done: &mut Done,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.create.name_any();
    let kind = K::kind(&());
    let refused = |e: kube::Error| match e {
        kube::Error::Api(status) if status.code != 409 => {
            Error::ChildRefused { kind: kind.to_string(), name: name.clone(), message: status.message }
        }
        e => Error::Kube(e),
    };
    let existing = match cached {
        Some(existing) => (*existing).clone(),
        None => {
            let params = PostParams { field_manager: Some(OPERATOR.into()), ..Default::default() };
            match api.create(&params, &desired.create).await {
                Ok(created) => {
                    done.add("Created", created.object_ref(&()), format!("created {kind} {name}"));
                    return Ok(created);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await?,
                Err(e) => return Err(refused(e)),
            }
        }
    };
    if !owned_by(&existing, f) {
        return Err(Error::NameConflict { kind: kind.to_string(), name, owner: owner_of(&existing) });
    }
    if existing.annotations().get(SPEC_HASH) == Some(&desired.hash) {
        return Ok(existing);
    }
    let params = PatchParams::apply(OPERATOR).force();
    let updated = api.patch(&name, &params, &Patch::Apply(&desired.apply)).await.map_err(refused)?;
    done.add("Updated", updated.object_ref(&()), format!("updated {kind} {name} to the current spec"));
    Ok(updated)
}

/// Whether `object` is this Function's child: its controller is this very Function (by uid, so
/// a Function deleted and created again under the same name does not inherit a stranger's).
fn owned_by<K: Resource>(object: &K, f: &Function) -> bool {
    object.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == f.metadata.uid.as_ref())
}

/// Who owns `object`, in words, for a conflict message.
fn owner_of<K: Resource>(object: &K) -> String {
    match object.owner_references().iter().find(|o| o.controller == Some(true)) {
        Some(o) => format!("it belongs to {} {}", o.kind, o.name),
        None => "it has no owner".into(),
    }
}

/// Deletes a child the spec no longer wants (a removed canary), if it is there and ours.
async fn remove<K>(api: &Api<K>, cached: Option<Arc<K>>, f: &Function, done: &mut Done) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(existing) = cached.filter(|k| owned_by(&**k, f)) else { return Ok(()) };
    let name = existing.name_any();
    match api.delete(&name, &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        other => other?,
    };
    let kind = K::kind(&());
    done.add("Deleted", existing.object_ref(&()), format!("deleted {kind} {name}: no longer in the spec"));
    Ok(())
}

const POD_PROBLEMS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Pods of the Function that cannot run, and why.
fn pod_problems(f: &Function, namespace: &str, cached: &Stores) -> Vec<PodProblem> {
    let mut problems = Vec::new();
    for pod in cached.pods_of(namespace, &f.name_any()) {
        for cs in pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()) {
            if let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
                && let Some(reason) = waiting.reason.as_deref().filter(|r| POD_PROBLEMS.contains(r))
            {
                problems.push(PodProblem {
                    pod: pod.name_any(),
                    reason: reason.into(),
                    message: waiting.message.clone().unwrap_or_default(),
                });
            }
        }
    }
    problems.sort_by(|a, b| a.pod.cmp(&b.pod));
    problems
}

/// Server-side applies the operator's part of the status under its own field manager. Under
/// canary analysis `status.canary` is the gateway's (its own manager writes it) and is left out,
/// so a reconcile working from a cache can never write an old weight over a rollback.
async fn patch_status(f: &Function, namespace: &str, status: &flint_api::FunctionStatus, ctx: &Context) -> Result<()> {
    let api: Api<Function> = Api::namespaced(ctx.client.clone(), namespace);
    let mut ours = status.clone();
    if status::gateway_owns_canary(f) {
        ours.canary = None;
    }
    let patch = serde_json::json!({
        "apiVersion": "flint.dev/v1alpha1",
        "kind": "Function",
        "status": ours,
    });
    api.patch_status(&f.name_any(), &PatchParams::apply(OPERATOR).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// How many Functions are reconciled at once: enough to keep the API server busy, few enough
/// that a burst of thousands of Functions does not open thousands of connections.
const CONCURRENCY: u16 = 32;

/// Runs one controller per feed (a namespace, or all) until the stream ends (a shutdown
/// signal). Functions are watched whole; children and pods through the cache's watches.
pub async fn run(ctx: Arc<Context>, feeds: Vec<Feed>) {
    let controllers = feeds.into_iter().map(|feed| {
        let functions: Api<Function> = cache::api(&ctx.client, &feed.scope);
        let (deployments, services, pods) = feed.watches(&ctx.client);
        Controller::new(functions, watcher::Config::default())
            .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
            .owns_stream(deployments)
            .owns_stream(services)
            .watches_stream(pods, cache::function_of)
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reconcile loop");
                }
            })
    });
    futures::future::join_all(controllers).await;
}
