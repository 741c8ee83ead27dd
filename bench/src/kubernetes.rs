//! Flint on Kubernetes, on the test node (`flint_testkit::node`: pods run as processes in
//! network namespaces, on the tests' own control plane; needs `KUBEBUILDER_ASSETS` and root):
//! - a request at zero replicas until its answer, split by what the API server shows: the
//!   gateway's scale call (Deployment at 1), the pod created, its container started (the node's
//!   `Started` Event), ready, and the answer;
//! - requests per second through the gateway's kubernetes provider against local mode and
//!   against the pod's watchdog called directly, the same function in the same run.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use flint_testkit::{
    cluster::{Binaries, Cluster, Gateway, MINUTE},
    node::{Image, TestNode},
    post, wait_for,
};
use futures::StreamExt;
use hyper::Method;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, Pod},
};
use kube::{api::ListParams, runtime::watcher};
use serde_json::json;
use tokio::time::Instant;

/// The fast upstream's port inside each pod (the watchdog listens on the pod's 8080).
const UPSTREAM_PORT: u16 = 9000;

pub async fn run(duration: Duration, rounds: usize, cold_rounds: usize) {
    let binaries =
        Binaries { gateway: crate::release_bin("flint-gateway"), operator: crate::release_bin("flint-operator") };
    let Some(c) = Cluster::new("bench", &flint_api::crd::definition(), binaries).await else {
        println!("# Kubernetes on the test node: skipped (set KUBEBUILDER_ASSETS to a control plane's binaries)");
        return;
    };
    let Some(node) = TestNode::get(c.api, &crate::release_bin("watchdog")).await else {
        println!("# Kubernetes on the test node: skipped (the test node needs root)");
        return;
    };
    node.serve(&c.ns.name);
    hello_image(node);
    let g = c.gateway("bench-gateway", &["--autoscale", "false"]).await;
    apply(&c, "cold", json!({"min": 0, "max": 1})).await;
    apply(&c, "hello", json!({"min": 1, "max": 1})).await;

    println!(
        "# cold start on Kubernetes (test node, pods as processes), {cold_rounds} rounds: ms from the request, as the API server showed each step"
    );
    print_steps(&cold_starts(&c, &g, "cold", cold_rounds).await);
    println!("same request warm: {:.1} ms", warm(&g, "cold").await);

    let pod = wait_for("hello's pod to be ready", MINUTE, || async { ready_pods(&c, "hello").await.pop() }).await;
    let pod_ip = pod.status.and_then(|s| s.pod_ip).unwrap();
    let through_k8s = g.url("/function/hello");
    wait_for("hello to answer through the gateway", MINUTE, || async {
        post(&through_k8s, "").await.ok().filter(|r| r.status == 200)
    })
    .await;
    let local = crate::local_hello().await;
    println!("# requests per second, the same function (fast upstream, http mode) in one run");
    crate::compare(
        &[
            local.target("local gateway+watchdog"),
            crate::target("k8s gateway+pod", through_k8s),
            crate::target("pod watchdog direct", format!("http://{pod_ip}:8080/")),
        ],
        duration,
        rounds,
    );
}

/// `bench/hello:1` on `node`: the fast upstream behind the watchdog in http mode.
pub fn hello_image(node: &TestNode) {
    let me = std::env::current_exe().unwrap();
    let env = [
        ("mode", "http".to_string()),
        ("fprocess", format!("{} upstream {UPSTREAM_PORT}", me.display())),
        ("upstream_url", format!("http://127.0.0.1:{UPSTREAM_PORT}")),
        ("RUST_LOG", "warn".to_string()),
    ];
    let image = Image { dir: std::env::temp_dir(), env: env.map(|(k, v)| (k.to_string(), v)).to_vec() };
    node.image("bench/hello:1", image);
}

pub async fn apply(c: &Cluster, name: &str, scale: serde_json::Value) {
    apply_image(c, name, "bench/hello:1", scale).await;
}

pub async fn apply_image(c: &Cluster, name: &str, image: &str, scale: serde_json::Value) {
    c.api
        .apply(&[json!({"apiVersion": "flint.dev/v1alpha1", "kind": "Function",
                        "metadata": {"name": name, "namespace": c.ns.name},
                        "spec": {"image": image, "scale": scale}})])
        .await;
}

async fn ready_pods(c: &Cluster, function: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("flint.dev/function={function}"));
    let pods = c.namespaced::<Pod>().list(&lp).await.map(|l| l.items).unwrap_or_default();
    pods.into_iter().filter(is_ready).collect()
}

fn is_ready(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// When each step of a cold start was first seen, from the request's start.
#[derive(Default)]
struct Steps {
    scaled: Option<Duration>,
    created: Option<Duration>,
    pulled: Option<Duration>,
    started: Option<Duration>,
    ready: Option<Duration>,
}

/// Watches the function's Deployment, pods and their Events from `t0`, noting each step when
/// first seen. Returns once the watches have listed what exists (so nothing later is missed),
/// with the watching tasks to abort when done.
async fn observe(c: &Cluster, function: &str, t0: Instant) -> (Arc<Mutex<Steps>>, [tokio::task::JoinHandle<()>; 3]) {
    let steps = Arc::new(Mutex::new(Steps::default()));
    let fields = format!("metadata.name={function}");
    let labels = format!("flint.dev/function={function}");
    let deployments = watcher(c.namespaced::<Deployment>(), watcher::Config::default().fields(&fields));
    let pods = watcher(c.namespaced::<Pod>(), watcher::Config::default().labels(&labels));
    let events = watcher(c.namespaced::<Event>(), watcher::Config::default());
    let (synced_d, synced_d_rx) = tokio::sync::oneshot::channel();
    let (synced_p, synced_p_rx) = tokio::sync::oneshot::channel();
    let (synced_e, synced_e_rx) = tokio::sync::oneshot::channel();
    let d = tokio::spawn(follow(deployments, synced_d, steps.clone(), move |d: &Deployment, s: &mut Steps| {
        if d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0 {
            s.scaled.get_or_insert(t0.elapsed());
        }
    }));
    let p = tokio::spawn(follow(pods, synced_p, steps.clone(), move |p: &Pod, s: &mut Steps| {
        s.created.get_or_insert(t0.elapsed());
        if is_ready(p) {
            s.ready.get_or_insert(t0.elapsed());
        }
    }));
    // Only Events that arrive after the listing: those listed are earlier rounds'.
    let pod_prefix = format!("{function}-");
    let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let e = tokio::spawn(follow(events, synced_e, steps.clone(), {
        let listed = listed.clone();
        move |e: &Event, s: &mut Steps| {
            if !listed.load(std::sync::atomic::Ordering::Relaxed)
                || !e.involved_object.name.as_deref().is_some_and(|n| n.starts_with(&pod_prefix))
            {
                return;
            }
            match e.reason.as_deref() {
                Some("Pulled") => s.pulled.get_or_insert(t0.elapsed()),
                Some("Started") => s.started.get_or_insert(t0.elapsed()),
                _ => return,
            };
        }
    }));
    let _ = synced_d_rx.await;
    let _ = synced_p_rx.await;
    let _ = synced_e_rx.await;
    listed.store(true, std::sync::atomic::Ordering::Relaxed);
    (steps, [d, p, e])
}

async fn follow<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    synced: tokio::sync::oneshot::Sender<()>,
    steps: Arc<Mutex<Steps>>,
    note: impl Fn(&K, &mut Steps),
) {
    futures::pin_mut!(events);
    let mut synced = Some(synced);
    while let Some(Ok(event)) = events.next().await {
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => note(&o, &mut steps.lock().unwrap()),
            watcher::Event::InitDone => {
                if let Some(s) = synced.take() {
                    let _ = s.send(());
                }
            }
            _ => {}
        }
    }
}

/// The steps of a cold start, in ms from the request: scaled, pod created, image pulled or
/// present (NaN when the pod runs as a process), container started, ready, answered.
pub type Split = [f64; 6];

pub const STEPS: [&str; 6] =
    ["Deployment scaled to 1", "pod created", "image present", "container started", "pod ready", "answer (first byte)"];

/// `rounds` cold starts of `function`: scaled to zero, then one request.
pub async fn cold_starts(c: &Cluster, g: &Gateway, function: &str, rounds: usize) -> Vec<Split> {
    let url = g.url(&format!("/function/{function}"));
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let mut rows = Vec::new();
    for _ in 0..rounds {
        let r = g.call(Method::POST, &format!("/system/scale-function/{function}"), json!({"replicas": 0})).await;
        assert_eq!(r.status, 202, "{}", r.text());
        wait_for(&format!("no pod of {function}"), MINUTE, || async {
            let lp = ListParams::default().labels(&format!("flint.dev/function={function}"));
            let pods = c.namespaced::<Pod>().list(&lp).await.ok()?;
            (pods.items.is_empty() && c.replicas(function).await == Some(0)).then_some(())
        })
        .await;
        let t0 = Instant::now();
        let (steps, watching) = observe(c, function, t0).await;
        let t0_request = t0.elapsed();
        let r = post(&url, "").await.unwrap();
        let answered = t0.elapsed() - t0_request;
        assert_eq!(r.status, 200, "{}", r.text());
        // The bench's own watches may trail the gateway's view by a moment.
        wait_for("every step seen", Duration::from_secs(5), || async {
            let s = steps.lock().unwrap();
            (s.scaled.is_some() && s.created.is_some() && s.started.is_some() && s.ready.is_some()).then_some(())
        })
        .await;
        watching.iter().for_each(|w| w.abort());
        let s = steps.lock().unwrap();
        let since = |d: Option<Duration>| d.map(|d| d.saturating_sub(t0_request));
        rows.push([
            ms(since(s.scaled)),
            ms(since(s.created)),
            ms(since(s.pulled)),
            ms(since(s.started)),
            ms(since(s.ready)),
            ms(Some(answered)),
        ]);
    }
    rows
}

/// Median and max of each step.
pub fn print_steps(rows: &[Split]) {
    println!("{:>22} {:>8} {:>8}", "step", "median", "max");
    for (i, name) in STEPS.iter().enumerate() {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i]).filter(|v| !v.is_nan()).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        println!("{name:>22} {:>8.0} {:>8.0}", v[v.len() / 2], v[v.len() - 1]);
    }
}

/// One request to a warm `function`, in ms.
pub async fn warm(g: &Gateway, function: &str) -> f64 {
    let t = Instant::now();
    assert_eq!(post(&g.url(&format!("/function/{function}")), "").await.unwrap().status, 200);
    t.elapsed().as_secs_f64() * 1e3
}
