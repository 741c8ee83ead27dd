//! The reconcile flow against kube-rs's mocked API service (tower-test), as kube-rs's
//! controller-rs tests it: every API call the operator makes is checked in order, by method,
//! path and body, and a missing or extra call fails the test. What the operator's watches
//! would have seen (children, pods) is put in its cache by hand.

use std::{sync::Arc, time::Duration};

use flint_api::{Function, FunctionStatus};
use flint_operator::{
    cache::{Cache, Feed},
    controller::{self, Context},
    metrics::Metrics,
    resources::{self, SPEC_HASH, Version},
    status::{self, Observed},
};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentStatus},
        core::v1::Pod,
    },
    jiff::Timestamp,
};
use kube::{Client, client::Body};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "shop";
const GATEWAY: &str = "http://gateway:8080";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/shop/deployments";
const SERVICES: &str = "/api/v1/namespaces/shop/services";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const STATUS: &str = "/apis/flint.dev/v1alpha1/namespaces/shop/functions/resize/status";

/// The mocked API server: answers the operator's calls one by one, checking each.
struct ApiServer(Handle);

impl ApiServer {
    /// Waits for the next call, checks its method and path, answers `status` with `reply`,
    /// and returns the request's JSON body (Null when none).
    async fn expect(&mut self, method: &str, path: &str, status: StatusCode, reply: Value) -> Value {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await;
        let (request, send) =
            next.unwrap_or_else(|_| panic!("expected {method} {path}, but no call came")).expect("the client is gone");
        assert_eq!(
            (request.method().as_str(), request.uri().path()),
            (method, path),
            "unexpected call (query: {:?})",
            request.uri().query()
        );
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        let response =
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap();
        send.send_response(response);
        body
    }

    /// A server-side apply by the operator's field manager (forced) to `path`; returns its body.
    async fn applied(&mut self, path: &str, reply: Value) -> Value {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await;
        let (request, send) = next.unwrap_or_else(|_| panic!("expected an apply to {path}")).unwrap();
        assert_eq!((request.method().as_str(), request.uri().path()), ("PATCH", path));
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("fieldManager=flint-operator"), "{path}: no field manager: {query}");
        assert!(query.contains("force=true"), "{path}: not forced: {query}");
        assert_eq!(request.headers()["content-type"], "application/apply-patch+yaml", "{path}: not an apply");
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        send.send_response(
            Response::builder().status(200).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
        );
        serde_json::from_slice(&bytes).unwrap()
    }

    /// A create: answers with what was sent, returns it.
    async fn created(&mut self, path: &str) -> Value {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await;
        let (request, send) = next.expect("expected a create").unwrap();
        assert_eq!((request.method().as_str(), request.uri().path()), ("POST", path));
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        send.send_response(Response::builder().status(201).body(Body::from(bytes.to_vec())).unwrap());
        serde_json::from_slice(&bytes).unwrap()
    }

    /// An event about the Function; returns its reason.
    async fn event(&mut self) -> String {
        self.said().await.0
    }

    /// An event about the Function; returns its reason and note.
    async fn said(&mut self) -> (String, String) {
        let event = self.created(EVENTS).await;
        assert_eq!(event["regarding"]["name"], "resize");
        (event["reason"].as_str().unwrap().to_string(), event["note"].as_str().unwrap_or_default().to_string())
    }

    /// Nothing more: the reconcile made no further call.
    async fn done(mut self) {
        self.nothing().await;
    }

    /// No call now.
    async fn nothing(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected extra call {} {}", request.method(), request.uri());
        }
    }
}

/// The operator's context over the mocked API, and the feed of its (empty, ready) cache.
fn context() -> (Arc<Context>, ApiServer, Feed) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (cache, mut feeds) = Cache::new(&[NS.to_string()]);
    let mut feed = feeds.remove(0);
    feed.mark_ready();
    let ctx = Context::new(client, cache, Arc::new(Metrics::default()), GATEWAY.into(), "test".into());
    (Arc::new(ctx), ApiServer(handle), feed)
}

/// The stable Deployment (running `replicas`, all ready) and Service, both current, as the
/// watches saw them.
fn stable_in_place(feed: &mut Feed, f: &Function, replicas: i32) {
    feed.insert_deployment(running(f, Version::Stable, replicas));
    feed.insert_service(resources::desired_service(f, Version::Stable).create);
}

fn function(spec: &str) -> Function {
    let yaml = format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: resize, namespace: {NS}, uid: u-1, generation: 3}}\nspec:\n{spec}\n"
    );
    flint_api::manifest::from_yaml(&yaml).unwrap().remove(0)
}

/// A Deployment as the API server would return it: our desired object, `replicas` as the
/// gateway left it, all of them ready.
fn running(f: &Function, version: Version, replicas: i32) -> Deployment {
    let mut d = resources::desired_deployment(f, version).create;
    d.spec.as_mut().unwrap().replicas = Some(replicas);
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ..Default::default()
    });
    d
}

fn value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

async fn run(f: Function, ctx: Arc<Context>) -> tokio::task::JoinHandle<kube::runtime::controller::Action> {
    tokio::spawn(async move { controller::reconcile(Arc::new(f), ctx).await.expect("reconcile succeeds") })
}

#[tokio::test]
async fn a_new_function_gets_a_deployment_a_service_and_a_status_once_there_is_something_to_say() {
    let (ctx, mut api, mut feed) = context();
    let f = function("  image: acme/resize:1\n  scale: {min: 2, max: 5}");
    let task = run(f.clone(), ctx.clone()).await;

    // Nothing in the cache: created without looking first.
    let d = api.created(DEPLOYMENTS).await;
    assert_eq!(d["spec"]["replicas"], 2, "created with max(scale.min, 1)");
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert!(d["metadata"]["annotations"][SPEC_HASH].is_string());
    let s = api.created(SERVICES).await;
    assert_eq!(s["spec"]["selector"]["flint.dev/version"], "stable");
    // No Event (the status says it), and no status yet: nothing is known of the Deployment's pods.
    let finished = tokio::time::timeout(Duration::from_secs(5), task).await.expect("no status write was waited on");
    assert_eq!(
        finished.unwrap(),
        kube::runtime::controller::Action::requeue(Duration::from_secs(10)),
        "said at the latest a little later"
    );
    api.nothing().await;

    // The watch's echoes of the creates wake it, the Deployment's before the Service's and both
    // before the Deployment's controller has seen it: the Service is not created again (409
    // and a read), nothing is said yet, and only the rest of the 10 s is waited at the latest.
    let mut unseen = resources::desired_deployment(&f, Version::Stable).create;
    unseen.metadata.generation = Some(1);
    feed.insert_deployment(unseen);
    for echo in ["the Deployment's", "the Service's"] {
        if echo == "the Service's" {
            feed.insert_service(resources::desired_service(&f, Version::Stable).create);
        }
        let task = run(f.clone(), ctx.clone()).await;
        api.nothing().await;
        let woken = task.await.unwrap();
        let whole = kube::runtime::controller::Action::requeue(Duration::from_secs(10));
        assert_ne!(woken, whole, "after {echo} echo: the whole 10 s again");
        assert_ne!(woken, kube::runtime::controller::Action::await_change(), "after {echo} echo");
    }

    // The Deployment's controller has spoken (its status woke the operator): now it is said.
    stable_in_place(&mut feed, &f, 2);
    let task = run(f.clone(), ctx).await;
    let patch = api.applied(STATUS, value(&f)).await;
    let status: FunctionStatus = serde_json::from_value(patch["status"].clone()).unwrap();
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.url.as_deref(), Some("http://gateway:8080/function/resize.shop"));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), status.ready_replicas), ("True", 2));
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_canary_added_right_after_the_function_is_created_at_once() {
    let (ctx, mut api, mut feed) = context();
    let f = function("  image: acme/resize:1");
    let task = run(f.clone(), ctx.clone()).await;
    api.created(DEPLOYMENTS).await;
    api.created(SERVICES).await;
    task.await.unwrap();
    // Both echoes came; the Deployment's controller has not seen it yet. The canary is added:
    // what the operator expects to see is the stable version's, so the canary's children are
    // not held back behind it.
    let mut unseen = resources::desired_deployment(&f, Version::Stable).create;
    unseen.metadata.generation = Some(1);
    feed.insert_deployment(unseen);
    feed.insert_service(resources::desired_service(&f, Version::Stable).create);
    let with = function("  image: acme/resize:1\n  canary: {image: acme/resize:2, weight: 10}");
    let task = run(with, ctx).await;
    assert_eq!(api.created(DEPLOYMENTS).await["metadata"]["name"], "resize-canary");
    assert_eq!(api.created(SERVICES).await["metadata"]["name"], "resize-canary");
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_child_the_cache_has_not_seen_yet_is_read_not_created_twice() {
    let (ctx, mut api, mut feed) = context();
    let f = function("  image: acme/resize:1");
    feed.insert_service(resources::desired_service(&f, Version::Stable).create);
    let task = run(f.clone(), ctx).await;

    // The watch lags behind the create of a previous reconcile: the API server says 409.
    let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "already exists"});
    api.expect("POST", DEPLOYMENTS, StatusCode::CONFLICT, exists).await;
    api.expect("GET", &format!("{DEPLOYMENTS}/resize"), StatusCode::OK, value(&running(&f, Version::Stable, 1))).await;
    // Ours and current: no write, no event; only the status.
    let patch = api.applied(STATUS, value(&f)).await;
    assert_eq!(patch["status"]["readyReplicas"], 1);
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn an_update_applies_without_replicas_so_the_gateways_count_stays() {
    let (ctx, mut api, mut feed) = context();
    let old = function("  image: acme/resize:1");
    let f = function("  image: acme/resize:2");
    // The gateway scaled the old Deployment to 7.
    stable_in_place(&mut feed, &old, 7);
    let task = run(f.clone(), ctx).await;

    let applied = api.applied(&format!("{DEPLOYMENTS}/resize"), value(&running(&f, Version::Stable, 7))).await;
    assert!(applied["spec"].get("replicas").is_none(), "an update must not carry replicas: {applied}");
    assert_eq!(applied["spec"]["template"]["spec"]["containers"][0]["image"], "acme/resize:2");
    // The Service did not change: no write. The status waits for the rollout to be seen.
    assert_eq!(api.event().await, "Updated");
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn an_unchanged_function_makes_no_api_request() {
    let (ctx, api, mut feed) = context();
    let mut f = function("  image: acme/resize:1");
    let observed =
        Observed { deployments: vec![(Version::Stable, Some(running(&f, Version::Stable, 3)))], ..Default::default() };
    f.status = Some(status::status(&f, &observed, GATEWAY, Timestamp::UNIX_EPOCH));
    stable_in_place(&mut feed, &f, 3);
    let task = run(f.clone(), ctx).await;

    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_canary_is_created_beside_the_stable_version() {
    let (ctx, mut api, mut feed) = context();
    let mut f = function("  image: acme/resize:1\n  canary: {image: acme/resize:2, weight: 10}");
    // Reconciled before (the canary is added to a running Function): its new children are news.
    f.status = Some(FunctionStatus { observed_generation: Some(2), ..Default::default() });
    stable_in_place(&mut feed, &f, 1);
    let task = run(f.clone(), ctx).await;

    let d = api.created(DEPLOYMENTS).await;
    assert_eq!(d["metadata"]["name"], "resize-canary");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "acme/resize:2");
    assert_eq!(api.created(SERVICES).await["metadata"]["name"], "resize-canary");
    let (reason, note) = api.said().await;
    assert_eq!(
        (reason.as_str(), note.as_str()),
        ("Created", "created Deployment resize-canary; created Service resize-canary")
    );
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_removed_canary_is_deleted() {
    let (ctx, mut api, mut feed) = context();
    let with = function("  image: acme/resize:1\n  canary: {image: acme/resize:2, weight: 10}");
    let f = function("  image: acme/resize:1");
    stable_in_place(&mut feed, &f, 1);
    feed.insert_deployment(running(&with, Version::Canary, 1));
    feed.insert_service(resources::desired_service(&with, Version::Canary).create);
    let task = run(f.clone(), ctx).await;

    api.expect(
        "DELETE",
        &format!("{DEPLOYMENTS}/resize-canary"),
        StatusCode::OK,
        value(&running(&with, Version::Canary, 1)),
    )
    .await;
    api.expect(
        "DELETE",
        &format!("{SERVICES}/resize-canary"),
        StatusCode::OK,
        value(&resources::desired_service(&with, Version::Canary).create),
    )
    .await;
    assert_eq!(api.event().await, "Deleted");
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_pod_that_cannot_pull_its_image_shows_in_the_status() {
    let (ctx, mut api, mut feed) = context();
    let f = function("  image: acme/resize:404");
    let mut d = running(&f, Version::Stable, 1);
    (d.status.as_mut().unwrap().ready_replicas, d.status.as_mut().unwrap().available_replicas) = (Some(0), Some(0));
    feed.insert_deployment(d);
    feed.insert_service(resources::desired_service(&f, Version::Stable).create);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "resize-7d9-x1", "namespace": NS, "labels": {"flint.dev/function": "resize"}},
        "status": {"containerStatuses": [{"name": "function", "image": "acme/resize:404", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}
    }))
    .unwrap();
    feed.insert_pod(pod);
    let task = run(f.clone(), ctx).await;

    let patch = api.applied(STATUS, value(&f)).await;
    let degraded =
        patch["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap().clone();
    assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("ImagePullBackOff")));
    assert!(degraded["message"].as_str().unwrap().contains("resize-7d9-x1"), "{degraded}");
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_changes_nothing_and_says_why() {
    let (ctx, mut api, _feed) = context();
    let mut f = function("  image: acme/resize:1");
    f.spec.scale.min = 4;
    f.spec.scale.max = 2;
    let task = run(f.clone(), ctx).await;

    let patch = api.applied(STATUS, value(&f)).await;
    let ready =
        patch["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
    assert!(ready["message"].as_str().unwrap().contains("spec.scale.min: must be <= spec.scale.max (4 > 2)"));
    let event = api.created(EVENTS).await;
    assert_eq!((event["reason"].as_str(), event["type"].as_str()), (Some("InvalidSpec"), Some("Warning")));
    api.done().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_failed_reconcile_backs_off_exponentially() {
    let (ctx, _api, _feed) = context();
    let f = Arc::new(function("  image: x"));
    let error = flint_operator::error::Error::NoNamespace;
    let delays: Vec<_> = (0..4).map(|_| controller::error_policy(f.clone(), &error, ctx.clone())).collect();
    let expected: Vec<_> =
        [1, 2, 4, 8].iter().map(|s| kube::runtime::controller::Action::requeue(Duration::from_secs(*s))).collect();
    assert_eq!(delays, expected);
    assert!(ctx.metrics.encode().contains(r#"flint_operator_reconcile_errors_total{error="no_namespace"} 4"#));
}

#[tokio::test]
async fn a_deployment_of_the_same_name_that_is_not_ours_is_left_alone_and_reported() {
    let (ctx, mut api, _feed) = context();
    let f = function("  image: acme/resize:1");
    let task = tokio::spawn({
        let f = f.clone();
        async move { controller::reconcile(Arc::new(f), ctx).await }
    });
    // Someone else's Deployment named like the Function (not in the cache: the watch sees only
    // the operator's own): the create meets it, and it has no ownerRef to this Function's uid.
    let mut theirs = running(&f, Version::Stable, 1);
    theirs.metadata.owner_references = None;
    let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "already exists"});
    api.expect("POST", DEPLOYMENTS, StatusCode::CONFLICT, exists).await;
    api.expect("GET", &format!("{DEPLOYMENTS}/resize"), StatusCode::OK, value(&theirs)).await;
    let patch = api.applied(STATUS, value(&f)).await;
    let ready =
        patch["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("NameConflict")));
    assert!(ready["message"].as_str().unwrap().contains("Deployment resize already exists"), "{ready}");
    let event = api.created(EVENTS).await;
    assert_eq!((event["reason"].as_str(), event["type"].as_str()), (Some("NameConflict"), Some("Warning")));
    api.done().await;
    assert!(task.await.unwrap().is_err(), "a conflict is retried with backoff");
}
