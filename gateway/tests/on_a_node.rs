//! Invocations end to end on Kubernetes: a Function applied to the real API server, the
//! operator's Deployment, the real controller-manager's ReplicaSets and EndpointSlices, pods run
//! as processes by the test node (`flint_testkit::node`, each in a network namespace of its
//! own), and the gateway's kubernetes provider routing, scaling and splitting across them.
//! Skipped, and reported by `scripts/test`, without a control plane or without root.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use common::cluster::{FAST_AUTOSCALER, apply_function, functions, on_node, pods, pods_of};
use flint_testkit::cluster::{Cluster, Gateway, MINUTE};
use flint_testkit::{
    Caller,
    node::{Image, TestNode},
    wait_for,
};
use hyper::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use serde_json::json;

/// An image whose process prints what `script` prints, in streaming mode (a process per request).
fn shell_image(node: &TestNode, image: &str, script: &str) {
    let dir = flint_testkit::scratch::folder("image", image.replace(['/', ':'], "_"));
    std::fs::write(dir.join("handler.sh"), script).unwrap();
    let env = [("fprocess", "sh handler.sh"), ("mode", "streaming")];
    node.image(image, Image { dir, env: env.map(|(k, v)| (k.to_string(), v.to_string())).to_vec() });
}

/// A call's status and body, or why it got none.
type Answer = Result<(u16, String), String>;

/// Load on `path` from `connections` callers until stopped: each answer's status and body.
struct Load {
    stop: Arc<AtomicBool>,
    /// Answers so far, of every caller.
    answered: Arc<AtomicUsize>,
    callers: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

impl Load {
    fn start(g: &Gateway, method: Method, path: &str, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let callers = (0..connections)
            .map(|_| {
                let (stop, answered, url, method) = (stop.clone(), answered.clone(), g.url(path), method.clone());
                tokio::spawn(async move {
                    let caller = Caller::new();
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let r = caller.call(method.clone(), &url, &[], "x").await;
                        answers.push(r.map(|r| (r.status, r.text())));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    answers
                })
            })
            .collect();
        Load { stop, answered, callers }
    }

    /// Waits until `n` more answers have come (the load has flowed for a while).
    async fn flow(&self, n: usize) {
        let until = self.answered.load(Ordering::Relaxed) + n;
        wait_for(&format!("{n} more answers"), MINUTE, || async {
            (self.answered.load(Ordering::Relaxed) >= until).then_some(())
        })
        .await;
    }

    async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for c in self.callers {
            all.extend(c.await.unwrap());
        }
        all
    }
}

/// The answers that were not a 200, with how many of each.
fn failures(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        let key = match a {
            Ok((200, _)) => continue,
            Ok((status, body)) => format!("{status} {body}"),
            Err(e) => e.clone(),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn a_function_applied_with_kubectl_answers_through_the_gateway() {
    let Some((c, node)) = on_node("apply").await else { return };
    let example = flint_testkit::workspace().join("examples/echo-shell");
    // What the example's Dockerfile puts in its image.
    let env = [("fprocess", "sh handler.sh"), ("mode", "streaming")].map(|(k, v)| (k.to_string(), v.to_string()));
    node.image("ghcr.io/flint-dev/examples/echo-shell:0.1.0", Image { dir: example.clone(), env: env.to_vec() });
    let mut kubectl = c.api.kubectl().expect("kubectl in KUBEBUILDER_ASSETS");
    let out = kubectl.args(["apply", "-n", &c.ns.name, "-f"]).arg(example.join("function.yaml")).output().unwrap();
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));

    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s"]).await;
    let r = g.call(Method::POST, "/function/echo-shell/hello?x=1", json!("hi")).await;
    assert_eq!((r.status, r.text()), (200, "POST /hello?x=1\n\"hi\"".to_string()), "{:?}", r.headers);

    // The portal's view of it, through the kubernetes provider.
    assert_eq!(g.call(Method::GET, "/ui/", json!(null)).await.status, 200);
    let list: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/ui/functions", json!(null)).await.body).unwrap();
    let row =
        list.as_array().unwrap().iter().find(|f| f["name"] == "echo-shell").expect("echo-shell in the portal's list");
    assert_eq!(
        (row["namespace"].as_str(), row["requestsLastMinute"].as_u64()),
        (Some(c.ns.name.as_str()), Some(1)),
        "{row}"
    );
    let series: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/ui/series/echo-shell", json!(null)).await.body).unwrap();
    let ok: u64 = series["ok"].as_array().unwrap().iter().filter_map(|v| v.as_u64()).sum();
    assert_eq!(ok, 1, "the portal's series counts the answer");

    // The pod the answer came from, as a kubelet reports it.
    let pod = pods_of(&c, "echo-shell").await.remove(0);
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.pod_ip.as_deref().unwrap_or("").starts_with("10.231."), "{:?}", status.pod_ip);
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some(node.name.as_str()));
    let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");

    // Paused with kubectl: refused at once, shown by `kubectl get`, served again when unpaused.
    let patch = |paused: bool| {
        let mut kubectl = c.api.kubectl().unwrap();
        let body = format!("{{\"spec\":{{\"paused\":{paused}}}}}");
        let out = kubectl.args(["patch", "fn", "echo-shell", "-n", &c.ns.name, "--type", "merge", "-p", &body]);
        let out = out.output().unwrap();
        assert!(out.status.success(), "kubectl patch: {}", String::from_utf8_lossy(&out.stderr));
    };
    patch(true);
    let refused = flint_testkit::wait_for("the gateway to see the pause", MINUTE, || async {
        let r = g.call(Method::POST, "/function/echo-shell", json!("hi")).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(refused.text().contains("is paused (spec.paused)"), "{}", refused.text());
    let out = c.api.kubectl().unwrap().args(["get", "fn", "echo-shell", "-n", &c.ns.name]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("PAUSED") && table.contains("true"), "{table}");
    patch(false);
    flint_testkit::wait_for("the gateway to serve it again", MINUTE, || async {
        (g.call(Method::POST, "/function/echo-shell", json!("hi")).await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn functions_deployed_through_the_rest_api_answer_and_go() {
    let Some((c, node)) = on_node("rest").await else { return };
    node.image("ghcr.io/acme/cat:1", Image { dir: std::env::temp_dir(), env: vec![] });
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s"]).await;
    // What faas-cli deploy sends.
    let deploy = json!({"service": "cat", "image": "ghcr.io/acme/cat:1", "envProcess": "cat",
                        "envVars": {"mode": "streaming"}});
    let r = g.call(Method::POST, "/system/functions", deploy).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = g.call(Method::POST, "/function/cat", json!({"n": 1})).await;
    assert_eq!((r.status, r.text()), (200, r#"{"n":1}"#.to_string()));
    // What faas-cli invoke and describe send when the user names no namespace.
    let r = g.call(Method::POST, "/function/cat.openfaas-fn", json!({"n": 2})).await;
    assert_eq!((r.status, r.text()), (200, r#"{"n":2}"#.to_string()));
    let r = g.call(Method::GET, "/system/function/cat?namespace=openfaas-fn", json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r =
        g.call(Method::DELETE, "/system/functions", json!({"functionName": "cat", "namespace": "openfaas-fn"})).await;
    assert!(r.status == 202 || r.status == 200, "{} {}", r.status, r.text());
    wait_for("the pod to be gone", MINUTE, || async { pods_of(&c, "cat").await.is_empty().then_some(()) }).await;
    let r = g.call(Method::POST, "/function/cat", json!("late")).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn a_hundred_requests_at_zero_start_one_pod_and_all_get_answers() {
    let Some((c, node)) = on_node("cold").await else { return };
    shell_image(node, "ghcr.io/acme/cold:1", "cat\n");
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s", "--autoscale", "false"]).await;
    apply_function(&c, "cold", "  image: ghcr.io/acme/cold:1\n  concurrency: 200\n  scale: {min: 0}").await;
    wait_for("the first pod", MINUTE, || async { (pods_of(&c, "cold").await.len() == 1).then_some(()) }).await;
    let r = g.call(Method::POST, "/system/scale-function/cold", json!({"replicas": 0})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("no pod", MINUTE, || async { pods_of(&c, "cold").await.is_empty().then_some(()) }).await;

    let calls: Vec<_> = (0..100)
        .map(|i| {
            let url = g.url("/function/cold");
            tokio::spawn(async move { flint_testkit::post(&url, format!("call {i}")).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.unwrap().unwrap();
        assert_eq!((r.status, r.text()), (200, format!("call {i}")));
    }
    let pods = pods_of(&c, "cold").await;
    assert_eq!(pods.len(), 1, "one scale-up from zero, one pod");
    assert_eq!(c.replicas("cold").await, Some(1));
}

#[tokio::test]
async fn a_burst_scales_out_spreads_over_the_new_pods_and_idles_back_to_zero() {
    let Some((c, node)) = on_node("burst").await else { return };
    // Each answer names the pod it came from.
    shell_image(node, "ghcr.io/acme/who:1", "sleep 0.05\necho \"$HOSTNAME\"\n");
    let g = c.gateway("gateway-0", &[&FAST_AUTOSCALER[..], &["--cold-start-timeout", "60s"]].concat()).await;
    apply_function(
        &c,
        "who",
        "  image: ghcr.io/acme/who:1\n  scale: {min: 0, max: 4, metric: concurrency, target: 2, zeroAfter: 3s}",
    )
    .await;
    let load = Load::start(&g, Method::GET, "/function/who", 16);
    wait_for("the burst to scale the Deployment out", MINUTE, || async {
        (c.replicas("who").await? >= 3).then_some(())
    })
    .await;
    wait_for("three pods to be ready", MINUTE, || async {
        let ready = pods_of(&c, "who").await.into_iter().filter(is_ready).count();
        (ready >= 3).then_some(())
    })
    .await;
    // Requests from now on spread over the pods.
    let first = load.stop().await;
    assert_eq!(failures(&first), BTreeMap::new(), "failed requests while scaling out");
    let load = Load::start(&g, Method::GET, "/function/who", 16);
    load.flow(200).await;
    let answers = load.stop().await;
    assert_eq!(failures(&answers), BTreeMap::new());
    let served: BTreeSet<String> = answers.iter().flatten().map(|(_, body)| body.trim().to_string()).collect();
    assert!(served.len() >= 3, "answers came from {served:?}");
    for pod in &served {
        assert!(pod.starts_with("who-"), "{pod}");
    }
    // Idle: back to zero, and the pods go.
    wait_for("scale to zero", MINUTE, || async { (c.replicas("who").await? == 0).then_some(()) }).await;
    wait_for("no pod left", MINUTE, || async { pods_of(&c, "who").await.is_empty().then_some(()) }).await;
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test]
async fn a_rolling_update_under_load_fails_no_request() {
    let Some((c, node)) = on_node("roll").await else { return };
    shell_image(node, "ghcr.io/acme/roll:1", "echo v1\n");
    shell_image(node, "ghcr.io/acme/roll:2", "echo v2\n");
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s", "--autoscale", "false"]).await;
    apply_function(&c, "roll", "  image: ghcr.io/acme/roll:1\n  scale: {min: 2, max: 2}").await;
    wait_for("two ready pods", MINUTE, || async {
        (pods_of(&c, "roll").await.iter().filter(|p| is_ready(p)).count() == 2).then_some(())
    })
    .await;
    let load = Load::start(&g, Method::POST, "/function/roll", 8);
    load.flow(40).await;
    apply_function(&c, "roll", "  image: ghcr.io/acme/roll:2\n  scale: {min: 2, max: 2}").await;
    wait_for("the rollout to finish (only v2 pods, both ready)", MINUTE, || async {
        let pods = pods_of(&c, "roll").await;
        let images: Vec<_> = pods.iter().map(|p| p.spec.as_ref()?.containers[0].image.clone()).collect();
        let done = pods.len() == 2
            && pods.iter().all(is_ready)
            && images.iter().all(|i| i.as_deref() == Some("ghcr.io/acme/roll:2"));
        done.then_some(())
    })
    .await;
    load.flow(40).await;
    let answers = load.stop().await;
    assert_eq!(failures(&answers), BTreeMap::new(), "of {} requests", answers.len());
    let versions: BTreeSet<&str> = answers.iter().flatten().map(|(_, b)| b.trim()).collect();
    assert_eq!(versions, BTreeSet::from(["v1", "v2"]), "both versions answered during the rollout");
}

/// Three ready pods of `steady`.
async fn three_ready(c: &Cluster) -> Option<Vec<Pod>> {
    let pods = pods_of(c, "steady").await;
    (pods.len() == 3 && pods.iter().all(is_ready)).then_some(pods)
}

/// GETs and POSTs on `steady` while one of its pods is deleted with `params`, until its
/// replacement is ready: their answers.
async fn delete_under_load(c: &Cluster, g: &Gateway, params: DeleteParams) -> (Vec<Answer>, Vec<Answer>) {
    let victim = wait_for("three ready pods", MINUTE, || three_ready(c)).await.remove(0).metadata.name.unwrap();
    let gets = Load::start(g, Method::GET, "/function/steady", 8);
    let posts = Load::start(g, Method::POST, "/function/steady", 8);
    posts.flow(40).await;
    pods(c).delete(&victim, &params).await.unwrap();
    wait_for("the replacement to be ready", MINUTE, || async {
        let pods = three_ready(c).await?;
        (!pods.iter().any(|p| p.metadata.name.as_deref() == Some(victim.as_str()))).then_some(())
    })
    .await;
    (gets.stop().await, posts.stop().await)
}

#[tokio::test]
async fn a_pod_deleted_under_load_fails_no_request_and_a_killed_one_only_posts_it_had_begun() {
    let Some((c, node)) = on_node("delete").await else { return };
    shell_image(node, "ghcr.io/acme/steady:1", "sleep 0.02\necho \"$HOSTNAME\"\n");
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s", "--autoscale", "false"]).await;
    apply_function(&c, "steady", "  image: ghcr.io/acme/steady:1\n  scale: {min: 3, max: 3}").await;

    // A deletion as kubectl makes it: the pod drains (its endpoint is withdrawn while the
    // watchdog still serves), so no request of any method may fail.
    let (gets, posts) = delete_under_load(&c, &g, DeleteParams::default()).await;
    assert_eq!(failures(&gets), BTreeMap::new(), "GET, of {} requests", gets.len());
    assert_eq!(failures(&posts), BTreeMap::new(), "POST, of {} requests", posts.len());

    // Deleted with no grace: its processes are killed at once, as on a node failure. A GET
    // is sent again elsewhere; a POST the pod had begun is not (it may have run), and says so.
    let (gets, posts) =
        delete_under_load(&c, &g, DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    assert_eq!(failures(&gets), BTreeMap::new(), "GET, of {} requests", gets.len());
    let failed_posts: usize = failures(&posts).values().sum();
    for failure in failures(&posts).keys() {
        assert!(failure.starts_with("502 ") && failure.contains("not sent again"), "{failure}");
    }
    // At most one request per caller was in flight on the killed pod.
    assert!(failed_posts <= 8, "{failed_posts} of {} POSTs failed: {:?}", posts.len(), failures(&posts));
    println!("killed pod: {failed_posts} of {} POSTs failed, 0 of {} GETs", posts.len(), gets.len());
}

/// A function whose canary (image `:2`) answers `canary` or fails, beside a stable `stable`.
async fn canary_function(c: &Cluster, node: &TestNode, name: &str, canary_fails: bool, canary: &str) {
    shell_image(node, &format!("ghcr.io/acme/{name}:1"), "echo stable\n");
    let script = if canary_fails { "echo broken >&2\nexit 1\n" } else { "echo canary\n" };
    shell_image(node, &format!("ghcr.io/acme/{name}:2"), script);
    let spec = format!(
        "  image: ghcr.io/acme/{name}:1\n  scale: {{min: 1, max: 1}}\n  canary: {{image: ghcr.io/acme/{name}:2, {canary}}}"
    );
    apply_function(c, name, &spec).await;
    wait_for("a ready stable and canary pod", MINUTE, || async {
        let pods = pods_of(c, name).await;
        (pods.len() == 2 && pods.iter().all(is_ready)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_canary_on_kubernetes_gets_its_weight_of_the_requests() {
    let Some((c, node)) = on_node("split").await else { return };
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s", "--autoscale", "false"]).await;
    canary_function(&c, node, "split", false, "weight: 30").await;
    let (mut stable, mut canary) = (0, 0);
    let caller = Caller::new();
    for _ in 0..600 {
        let r = caller.call(Method::GET, &g.url("/function/split"), &[], "").await.unwrap();
        match (r.status, r.text().trim()) {
            (200, "stable") => stable += 1,
            (200, "canary") => canary += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let share = canary as f64 / 600.0;
    assert!((0.24..=0.36).contains(&share), "canary share {share:.3} ({canary} canary, {stable} stable) for weight 30");
}

#[tokio::test]
async fn a_failing_canary_on_kubernetes_is_rolled_back_and_its_status_says_why() {
    let Some((c, node)) = on_node("rollback").await else { return };
    // The analysis runs with the autoscaler (min = max keeps the pods as they are).
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "60s", "--autoscale-tick", "200ms"]).await;
    let analysis =
        "weight: 20, analysis: {interval: 1s, stepWeight: 10, maxWeight: 50, minSuccessRate: 99, minRequests: 5}";
    canary_function(&c, node, "risky", true, analysis).await;
    let load = Load::start(&g, Method::GET, "/function/risky", 4);
    let rolled_back = wait_for("the canary to be rolled back", 2 * MINUTE, || async {
        let f = functions(&c).get("risky").await.ok()?;
        let status = f.status?;
        let canary = status.canary.clone()?;
        let healthy = status.conditions.iter().find(|c| c.type_ == "CanaryHealthy")?.clone();
        (canary.phase == flint_api::CanaryPhase::RolledBack && healthy.status == "False").then_some((canary, healthy))
    });
    let Ok(rolled_back) = tokio::time::timeout(MINUTE, rolled_back).await else {
        let f = functions(&c).get("risky").await.unwrap();
        panic!("no rollback in a minute; status: {:?}\ngateway:\n{}", f.status, g.process.log());
    };
    // The split has followed the status: every request now reaches the stable pods.
    let settled = load.stop().await;
    let after = Load::start(&g, Method::GET, "/function/risky", 4);
    after.flow(100).await;
    let after = after.stop().await;
    assert_eq!(failures(&after), BTreeMap::new(), "requests still reach the rolled-back canary");
    let (canary, healthy) = rolled_back;
    assert_eq!(canary.weight, 0);
    let message = canary.message.unwrap_or_default();
    assert!(message.contains("success rate") && message.contains("minimum 99%"), "{message}");
    assert!(healthy.message.contains("success rate"), "{healthy:?}");
    // Only the canary's answers failed: each a 500 from its process, and no more than its share.
    let failed = failures(&settled);
    for f in failed.keys() {
        assert!(f.starts_with("500 "), "a request failed otherwise than at the canary: {f}");
    }
    let failed: usize = failed.values().sum();
    assert!(failed as f64 <= settled.len() as f64 * 0.25 + 3.0, "{failed} of {} requests failed", settled.len());
}

#[tokio::test]
async fn requests_keep_being_answered_while_the_operator_and_a_gateway_restart() {
    let Some((mut c, node)) = on_node("restart").await else { return };
    shell_image(node, "ghcr.io/acme/keep:1", "echo kept\n");
    let args = ["--cold-start-timeout", "60s"];
    let g0_port = flint_testkit::free_port();
    let mut g0 = c.gateway_on("gateway-0", g0_port, &args).await;
    let g1 = c.gateway("gateway-1", &args).await;
    apply_function(&c, "keep", "  image: ghcr.io/acme/keep:1\n  scale: {min: 2, max: 4}").await;
    wait_for("two ready pods", MINUTE, || async {
        (pods_of(&c, "keep").await.iter().filter(|p| is_ready(p)).count() == 2).then_some(())
    })
    .await;
    let load = Load::start(&g1, Method::POST, "/function/keep", 8);

    // The operator dies and a new one takes over; the gateway that may hold the autoscaler's
    // Lease dies and comes back.
    c.operator.signal(nix::sys::signal::Signal::SIGKILL);
    g0.process.signal(nix::sys::signal::Signal::SIGKILL);
    g0.process.exit(MINUTE).await;
    c.restart_operator();
    g0 = c.gateway_on("gateway-0", g0_port, &args).await;
    // The new operator acts on changes: a higher minimum gets its pod.
    apply_function(&c, "keep", "  image: ghcr.io/acme/keep:1\n  scale: {min: 3, max: 4}").await;
    wait_for("three ready pods", MINUTE, || async {
        (pods_of(&c, "keep").await.iter().filter(|p| is_ready(p)).count() == 3).then_some(())
    })
    .await;
    let answers = load.stop().await;
    assert_eq!(failures(&answers), BTreeMap::new(), "of {} requests", answers.len());
    let r = g0.call(Method::POST, "/function/keep", json!(null)).await;
    assert_eq!((r.status, r.text()), (200, "kept\n".to_string()));
}

#[tokio::test]
async fn a_cron_trigger_fires_once_per_tick_with_two_gateways() {
    let Some((c, node)) = on_node("cron").await else { return };
    // Each call appends the scheduled time it is for to a file of the image's folder.
    let dir = std::env::temp_dir().join(format!("flint-cron-{}", c.ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("handler.sh"), "echo \"$Http_X_Flint_Cron_Time\" >> ticks\n").unwrap();
    let env = [("fprocess", "sh handler.sh"), ("mode", "streaming")].map(|(k, v)| (k.to_string(), v.to_string()));
    node.image("ghcr.io/acme/tick:1", Image { dir: dir.clone(), env: env.to_vec() });
    let gateways = [c.gateway("gateway-0", &[]).await, c.gateway("gateway-1", &[]).await];
    apply_function(
        &c,
        "tick",
        "  image: ghcr.io/acme/tick:1\n  scale: {min: 1, max: 1}\n  triggers: [{cron: {schedule: '*/2 * * * * *'}}]",
    )
    .await;
    let ticks = || std::fs::read_to_string(dir.join("ticks")).unwrap_or_default();
    wait_for("ten ticks", MINUTE, || async { (ticks().lines().count() >= 10).then_some(()) }).await;
    let fired: Vec<usize> = gateways.iter().map(|g| g.process.log().matches("cron trigger fired").count()).collect();
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = ticks()
        .lines()
        .map(|l| chrono::DateTime::parse_from_rfc3339(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{}", ticks())))
        .collect();
    let distinct: BTreeSet<_> = times.iter().collect();
    assert_eq!(distinct.len(), times.len(), "a tick ran more than once: {}\nfired by each gateway: {fired:?}", ticks());
    // Every two seconds, none missed.
    let gaps: BTreeSet<i64> =
        distinct.iter().zip(distinct.iter().skip(1)).map(|(a, b)| (**b - **a).num_seconds()).collect();
    assert_eq!(gaps, BTreeSet::from([2]), "{}", ticks());
    // Only the Lease holder fires.
    assert!(fired.contains(&0), "both gateways fired: {fired:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn queue_triggers_and_async_calls_on_kubernetes_run_each_message_once_with_two_gateways() {
    let Some((c, node)) = on_node("queue").await else { return };
    let nats = flint_testkit::Nats::start().await;
    // Each call appends its body as one line (one write: calls run side by side) to a file of
    // the image's folder.
    let dir = std::env::temp_dir().join(format!("flint-queue-{}", c.ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("handler.sh"), "body=$(cat); printf '%s\\n' \"$body\" >> received\n").unwrap();
    let env = [("fprocess", "sh handler.sh"), ("mode", "streaming")].map(|(k, v)| (k.to_string(), v.to_string()));
    node.image("ghcr.io/acme/orders:1", Image { dir: dir.clone(), env: env.to_vec() });
    let url = nats.url();
    let gateways =
        [c.gateway("gateway-0", &["--nats-url", &url]).await, c.gateway("gateway-1", &["--nats-url", &url]).await];
    apply_function(
        &c,
        "orders",
        "  image: ghcr.io/acme/orders:1\n  scale: {min: 1, max: 1}\n  triggers: [{nats: {subject: orders.k8s}}]",
    )
    .await;
    for g in &gateways {
        g.process.wait_log("queue trigger bound function=orders", MINUTE).await;
    }
    let client = async_nats::connect(&url).await.unwrap();
    for i in 0..50 {
        client.publish("orders.k8s", format!("order {i}").into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let r = gateways[1].call(Method::POST, "/async-function/orders", json!("async order")).await;
    assert_eq!(r.status, 202, "{}", r.text());

    let received = || std::fs::read_to_string(dir.join("received")).unwrap_or_default();
    wait_for("51 calls", MINUTE, || async { (received().lines().count() >= 51).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let lines: Vec<String> = received().lines().map(str::to_string).collect();
    let distinct: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), 51, "each message once, by one of the two gateways:\n{}", received());
    assert_eq!(distinct.len(), 51, "{}", received());
    assert!(lines.contains(&"\"async order\"".to_string()), "{lines:?}");
    let took: Vec<usize> = gateways.iter().map(|g| g.process.log().matches("queued call done").count()).collect();
    assert_eq!(took.iter().sum::<usize>(), 51, "taken by each gateway: {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_throttle_holds_across_two_gateways_that_share_it() {
    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
    let Some((c, node)) = on_node("throttle-shared").await else { return };
    shell_image(node, "ghcr.io/acme/limited:1", "cat\n");
    // The gateways' own Service with both replicas ready, as the controller-manager lists the
    // endpoints of the chart's gateway pods (these gateways run as processes of the test).
    let service = format!("{}-gateway", c.release);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": service},
        "spec": {"ports": [{"name": "http", "port": 8080}]}
    }))
    .unwrap();
    c.namespaced::<Service>().create(&Default::default(), &svc).await.unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-x1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.231.250.1"], "conditions": {"ready": true}},
            {"addresses": ["10.231.250.2"], "conditions": {"ready": true}},
            {"addresses": ["10.231.250.3"], "conditions": {"ready": false}}
        ],
        "ports": [{"name": "http", "port": 8080}]
    }))
    .unwrap();
    c.namespaced::<EndpointSlice>().create(&Default::default(), &slice).await.unwrap();
    let args = ["--gateway-service", service.as_str()];
    let gateways = [c.gateway("gateway-0", &args).await, c.gateway("gateway-1", &args).await];
    for g in &gateways {
        g.process.wait_log("gateway replicas sharing the throttles replicas=2", MINUTE).await;
    }
    apply_function(
        &c,
        "limited",
        "  image: ghcr.io/acme/limited:1\n  scale: {min: 1, max: 1}\n  throttle: {rate: 10, burst: 4}",
    )
    .await;
    wait_for("the function to answer", MINUTE, || async {
        let r = gateways[0].call(Method::POST, "/function/limited", json!("x")).await;
        (r.status == 200).then_some(())
    })
    .await;
    // Both buckets full again (each refills at 5 a second, up to 2).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    let loads: Vec<Load> = gateways.iter().map(|g| Load::start(g, Method::POST, "/function/limited", 4)).collect();
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let mut admitted = Vec::new();
    for load in loads {
        let answers = load.stop().await;
        assert!(
            answers.iter().all(|a| matches!(a, Ok((200 | 429, _)))),
            "{:?}",
            answers.iter().find(|a| !matches!(a, Ok((200 | 429, _))))
        );
        admitted.push(answers.iter().filter(|a| matches!(a, Ok((200, _)))).count());
    }
    // 10 a second for 10 s across both, plus the two halves of the burst.
    let (total, expected) = (admitted.iter().sum::<usize>(), 10 * 10 + 4);
    eprintln!("rate 10/s across two gateways for 10 s: {admitted:?} admitted ({total}; expected {expected})");
    assert!(
        (expected * 9 / 10..=expected * 11 / 10).contains(&total),
        "{total} admitted by two gateways ({admitted:?}); the function's rate allows {expected} ± 10 %"
    );
    assert!(admitted.iter().all(|&n| n >= 40), "each gateway admitted its share: {admitted:?}");
}

/// The learned idle policy on Kubernetes (its bins shrunk to 2 s: a function called every 5 s is
/// pre-warmed 3.6 s after a call, leaving its pod over a second to start however busy the
/// machine is): the function goes to zero between calls through its Deployment, yet each call after the
/// learning finds a pod pre-warmed for it; what was learned is in the Function's status, and a
/// gateway that takes over the Lease starts from it.
#[tokio::test]
async fn learned_idle_times_drive_the_deployment_and_outlive_the_gateway_in_the_functions_status() {
    let Some((c, node)) = on_node("learned-idle").await else { return };
    shell_image(node, "ghcr.io/acme/rhythm:1", "echo tick");
    apply_function(
        &c,
        "rhythm",
        "  image: ghcr.io/acme/rhythm:1\n  scale: {min: 0, max: 1, zeroAfter: 2s, idle: {policy: learned}}",
    )
    .await;
    let mut args = FAST_AUTOSCALER.to_vec();
    args.extend(["--idle-bin", "2s", "--cold-start-timeout", "60s"]);
    // Calls every 5 s; whether each met a cold start.
    let rhythm = |url: String, rounds: usize| async move {
        let mut cold = Vec::new();
        for _ in 0..rounds {
            let started = tokio::time::Instant::now();
            let r = flint_testkit::post(&url, "x").await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            cold.push(r.headers.get("x-flint-cold-start").is_some());
            tokio::time::sleep_until(started + std::time::Duration::from_secs(5)).await;
        }
        cold
    };
    let g = c.gateway("gateway-0", &args).await;
    wait_for("gateway-0 to hold the Lease", MINUTE, || async {
        g.process.log().contains("holding the Lease").then_some(())
    })
    .await;
    let cold = rhythm(g.url("/function/rhythm"), 15).await;
    assert_eq!(cold[12..], [false; 3], "cold starts per call: {cold:?}");
    let log = g.process.log();
    assert!(log.contains("reason=\"pre_warm\"") && log.contains("reason=\"to_zero\""), "no pre-warm after zero: {log}");
    // Kept at most every 30 s: the spells learned last show within a minute.
    let kept = wait_for("the learned idle times in the Function's status", MINUTE, || async {
        let f = functions(&c).get("rhythm").await.ok()?;
        let entry = f.status?.idle.into_iter().find(|e| e.version == "stable")?;
        let spells: u64 =
            entry.counts.split_whitespace().filter_map(|p| p.split_once(':')?.1.parse::<u64>().ok()).sum();
        (spells >= 14).then_some(entry)
    })
    .await;
    assert_eq!((kept.image.as_str(), kept.bin_ms), ("ghcr.io/acme/rhythm:1", 2000));
    drop(g);

    // Another gateway takes the Lease and starts from the status: warm from its second call.
    let g = c.gateway("gateway-1", &args).await;
    wait_for("gateway-1 to hold the Lease", MINUTE, || async {
        g.process.log().contains("holding the Lease").then_some(())
    })
    .await;
    let cold = rhythm(g.url("/function/rhythm"), 3).await;
    assert_eq!(cold[1..], [false; 2], "after the handover, cold starts per call: {cold:?}\n{}", g.process.log());
}
