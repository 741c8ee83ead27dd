//! `many`: a gateway with thousands of functions deployed and scaled to zero, beside one with a
//! single function, in the same run: memory per deployed function, the time to answer
//! `/system/functions` and the portal's list, the gateway's CPU while nothing is called (its
//! autoscaler ticking over every function), and the latency of calls to one warm function.
//! In local mode (`run`), or on the test control plane (`kubernetes`: the operator makes every
//! function's children, the test node runs the warm function's pod).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use flint_api::Function;
use flint_testkit::{
    cluster::{Binaries, Cluster, Gateway},
    cpu_time, get,
    node::TestNode,
    rss, rss_anon, wait_for,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, PostParams};
use nix::unistd::Pid;
use serde_json::json;

use crate::{compare, release_bin, start_local, write_hello, write_idle_functions};

/// A gateway being measured.
struct Side {
    pid: Pid,
    port: u16,
    /// Its warm function, `hello`.
    url: String,
}

pub async fn run(functions: usize, duration: Duration, rounds: usize) {
    let gateway = release_bin("flint-gateway");
    let warm = "  scale: {min: 1, max: 1}\n";
    let started = Instant::now();
    let one = crate::local_function_of(&gateway, "-one", warm, &[]).await;
    let one_ready = started.elapsed();

    let dir = std::env::temp_dir().join(format!("flint-bench-{}-many", std::process::id()));
    write_hello(&dir, warm);
    write_idle_functions(&dir, functions - 1);
    let started = Instant::now();
    let many = start_local(&gateway, dir, &[]).await;
    let many_ready = started.elapsed();
    all_listed(many.port, functions).await;
    let listed = started.elapsed();

    println!("# {functions} functions deployed and scaled to zero in local mode, beside a gateway with one");
    println!(
        "ready (hello answers): one function {:.2} s, {functions} functions {:.2} s (all listed at {:.2} s)",
        one_ready.as_secs_f64(),
        many_ready.as_secs_f64(),
        listed.as_secs_f64()
    );
    let stored: Vec<String> = (0..functions - 1)
        .map(|i| std::fs::read_to_string(many.dir.join(format!("f{i:05}/function.yaml"))).unwrap())
        .collect();
    let side = |g: &crate::LocalHello| Side { pid: g.gateway.pid(), port: g.port, url: g.url.clone() };
    let parse = |text: &str| flint_api::manifest::from_yaml(text).unwrap().remove(0);
    report(functions, &side(&one), &side(&many), &stored, parse, duration, rounds).await;
}

/// The same on the test control plane: two namespaces, each with the operator and a gateway
/// (kubernetes provider); one holds `hello` alone, the other `hello` and `functions - 1`
/// Functions at `initial: 0`, whose Deployments and Services the operator has made before the
/// gateways start (as when a gateway's pod starts on a cluster in use).
pub async fn kubernetes(functions: usize, duration: Duration, rounds: usize) {
    let binaries = Binaries { gateway: release_bin("flint-gateway"), operator: release_bin("flint-operator") };
    let crd = flint_api::crd::definition();
    let Some(one) = Cluster::new("many-one", &crd, binaries.clone()).await else {
        println!("# many functions on Kubernetes: skipped (set KUBEBUILDER_ASSETS to a control plane's binaries)");
        return;
    };
    let Some(node) = TestNode::get(one.api, &release_bin("watchdog")).await else {
        println!("# many functions on Kubernetes: skipped (the test node needs root)");
        return;
    };
    let many = Cluster::new("many", &crd, binaries).await.expect("the control plane the first namespace is on");
    crate::kubernetes::hello_image(node);
    for c in [&one, &many] {
        node.serve(&c.ns.name);
        crate::kubernetes::apply(c, "hello", json!({"min": 1, "max": 1})).await;
    }

    let started = Instant::now();
    let functions_api = many.namespaced::<Function>();
    let params = PostParams { field_manager: Some("flint-bench".into()), ..Default::default() };
    futures::stream::iter(0..functions - 1)
        .for_each_concurrent(32, |i| {
            let (api, params) = (functions_api.clone(), params.clone());
            async move {
                let yaml = format!(
                    "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: f{i:05}}}\n\
                     spec: {{image: bench/idle:1, scale: {{initial: 0}}}}\n"
                );
                let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
                api.create(&params, &f).await.unwrap_or_else(|e| panic!("creating f{i:05}: {e}"));
            }
        })
        .await;
    let created = started.elapsed();
    let deployments = many.namespaced::<Deployment>();
    wait_for("the operator to make every Deployment", Duration::from_secs(1800), || async {
        // A list of thousands is work for the API server the operator is waiting on too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let listed = deployments.list_metadata(&ListParams::default()).await.ok()?;
        (listed.items.len() >= functions).then_some(())
    })
    .await;
    let deployed = started.elapsed();

    let (g_one, one_ready) = gateway(&one, 1).await;
    let (g_many, many_ready) = gateway(&many, functions).await;
    let side = |g: &Gateway| Side { pid: g.process.pid(), port: g.port, url: g.url("/function/hello") };
    println!(
        "# {functions} Functions at initial: 0 on the test control plane (one Deployment and Service each, by the operator), beside a namespace with one"
    );
    println!(
        "created in {:.1} s (32 at a time); every Deployment after {:.1} s",
        created.as_secs_f64(),
        deployed.as_secs_f64()
    );
    println!(
        "gateway start to all listed and hello answering: one function {:.2} s, {functions} functions {:.2} s",
        one_ready.as_secs_f64(),
        many_ready.as_secs_f64()
    );
    // As the gateway holds them: without managed fields (it drops them on the way into its cache).
    let mut listed = functions_api.list(&ListParams::default()).await.unwrap().items;
    listed.retain(|f| f.metadata.name.as_deref() != Some("hello"));
    let stored: Vec<String> = listed
        .into_iter()
        .map(|mut f| {
            f.metadata.managed_fields = None;
            serde_json::to_string(&f).unwrap()
        })
        .collect();
    let parse = |text: &str| serde_json::from_str(text).unwrap();
    report(functions, &side(&g_one), &side(&g_many), &stored, parse, duration, rounds).await;
}

/// A gateway for `c`'s namespace, and how long it took to list `functions` and answer `hello`.
async fn gateway(c: &Cluster, functions: usize) -> (Gateway, Duration) {
    let started = Instant::now();
    let g = c.gateway(&format!("{}-gateway-0", c.ns.name), &[]).await;
    all_listed(g.port, functions).await;
    let url = g.url("/function/hello");
    wait_for("hello to answer through the gateway", Duration::from_secs(120), || async {
        get(&url).await.ok().filter(|r| r.status == 200)
    })
    .await;
    (g, started.elapsed())
}

async fn all_listed(port: u16, functions: usize) {
    let list = format!("http://127.0.0.1:{port}/system/functions");
    wait_for("the gateway to list every function", Duration::from_secs(300), || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = get(&list).await.ok()?;
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&r.body).ok()?;
        (listed.len() == functions).then_some(())
    })
    .await;
}

/// The figures, `many` (with `functions`) against `one`. `stored` is every idle function as its
/// provider stores it, which `parse` reads: the Function's own size is measured by holding them
/// all in this process.
async fn report(
    functions: usize,
    one: &Side,
    many: &Side,
    stored: &[String],
    parse: impl Fn(&str) -> Function,
    duration: Duration,
    rounds: usize,
) {
    // Past the first autoscaler ticks and the first lists' allocations.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let memory = |s: &Side| (rss(s.pid), rss_anon(s.pid));
    let ((one_rss, one_anon), (many_rss, many_anon)) = (memory(one), memory(many));
    let per = |a: u64, b: u64| (b as f64 - a as f64) / (functions - 1) as f64;
    println!(
        "RSS: one function {:.1} MiB, {functions} functions {:.1} MiB: {:.0} bytes per function ({:.0} bytes anonymous; goal <= 2 KB beyond the Function itself)",
        one_rss as f64 / 1048576.0,
        many_rss as f64 / 1048576.0,
        per(one_rss, many_rss),
        per(one_anon, many_anon)
    );
    let me = Pid::this();
    let before = rss_anon(me);
    let held: Vec<Arc<Function>> = stored.iter().map(|text| Arc::new(parse(text))).collect();
    let object = (rss_anon(me) as f64 - before as f64) / held.len() as f64;
    drop(held);
    println!(
        "a Function held in memory: about {object:.0} bytes (as many parsed in this process); beyond it: {:.0} bytes per function",
        per(one_rss, many_rss) - object
    );
    let rest = get(&format!("http://127.0.0.1:{}/system/function/f00000", many.port)).await.map(|r| r.body.len());
    println!(
        "a Function: as stored {} bytes, its REST form {} bytes",
        stored[0].len(),
        rest.map(|b| b.to_string()).unwrap_or_else(|e| e)
    );

    for (what, path) in [("/system/functions", "/system/functions"), ("portal list", "/system/ui/functions")] {
        let (a, b) = (answer_times(one.port, path).await, answer_times(many.port, path).await);
        println!(
            "{what}: one function p50 {:.1} ms; {functions} functions p50 {:.1} ms, max {:.1} ms, {:.0} KiB (goal <= 100 ms)",
            a.p50_ms,
            b.p50_ms,
            b.max_ms,
            b.bytes as f64 / 1024.0
        );
    }

    let window = Duration::from_secs(20);
    let (a, b) = (cpu_time(one.pid), cpu_time(many.pid));
    tokio::time::sleep(window).await;
    let share = |before: Duration, pid: Pid| 100.0 * (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64();
    println!(
        "CPU while nothing is called, over {}s: one function {:.2}% of a core, {functions} functions {:.2}% (goal <= 5%)",
        window.as_secs(),
        share(a, one.pid),
        share(b, many.pid)
    );
    // Memory that grows per tick per function would show here.
    println!(
        "RSS after those {}s: {functions} functions {:.1} MiB (was {:.1} MiB)",
        window.as_secs(),
        rss(many.pid) as f64 / 1048576.0,
        many_rss as f64 / 1048576.0
    );

    let one_label = "hello, one function";
    let many_label = format!("hello, {functions} functions");
    compare(
        &[crate::target(one_label, one.url.clone()), crate::target(many_label, many.url.clone())],
        duration,
        rounds,
    );
}

struct Answers {
    p50_ms: f64,
    max_ms: f64,
    bytes: usize,
}

/// 21 GETs of `path`, one after another, each timed to its whole body.
async fn answer_times(port: u16, path: &str) -> Answers {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..21 {
        let started = Instant::now();
        let r = get(&url).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", String::from_utf8_lossy(&r.body));
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes = r.body.len();
    }
    times.sort_by(f64::total_cmp);
    Answers { p50_ms: times[times.len() / 2], max_ms: times[times.len() - 1], bytes }
}
