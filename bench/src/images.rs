//! Flint's images: built by `flint-images` from the release binaries (how long, each image's
//! compressed size and layers against the goals), then a cold start on the test node with the
//! example's image pulled from a registry and run under runc, against the same function as a
//! process on the same node, alternating, in one run (needs `KUBEBUILDER_ASSETS` and root).

use std::{path::Path, process::Command, time::Instant};

use flint_images::{
    oci::Layout,
    registry::{Reference, Registry},
};
use flint_testkit::{
    cluster::{Binaries, Cluster},
    containers::Registry as TestRegistry,
    node::{Image, TestNode},
    workspace,
};
use serde_json::json;

use crate::kubernetes::{Split, apply_image, cold_starts, print_steps, warm};

/// Goals for compressed sizes, MB (10^6 bytes, as registries show them).
const GOALS: &[(&str, f64)] = &[("flint-gateway", 20.0), ("flint-operator", 20.0), ("watchdog", 8.0)];

pub async fn run(cold_rounds: usize) {
    let root = workspace();
    let out = root.join("target/bench-images");
    let cached = out.join("apt/debs").read_dir().is_ok_and(|mut d| d.next().is_some());
    let mut args = vec!["build", "--binaries", "target/release", "--stand-ins", "--out", "target/bench-images"];
    let hello_rust = root.join("examples/hello-rust/target/release/hello-rust");
    if hello_rust.exists() {
        args.extend(["--hello-rust", "examples/hello-rust/target/release/hello-rust"]);
    }
    let started = Instant::now();
    let built = Command::new(crate::release_bin("flint-images")).current_dir(&root).args(&args).output().unwrap();
    let took = started.elapsed();
    assert!(built.status.success(), "flint-images: {}", String::from_utf8_lossy(&built.stderr));
    let summary: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("images.json")).unwrap()).unwrap();
    println!(
        "# images: {} built from the release binaries in {:.1} s ({})",
        summary.len(),
        took.as_secs_f64(),
        if cached { "Debian packages already in the private apt's cache" } else { "packages downloaded first" }
    );
    println!("{:<26} {:>10} {:>7} {:>8}", "image", "compressed", "layers", "goal");
    for image in &summary {
        let name = image["name"].as_str().unwrap_or_default();
        let mb = image["compressed"].as_f64().unwrap_or_default() / 1e6;
        let goal = GOALS.iter().find(|(n, _)| *n == name).map(|(_, g)| format!("≤ {g:.0} MB")).unwrap_or_default();
        println!("{name:<26} {mb:>7.1} MB {:>7} {goal:>8}", image["layers"].as_array().map_or(0, Vec::len));
    }
    containers_against_processes(&out.join("oci"), cold_rounds).await;
}

/// The echo-shell example cold-started as a container (its image pulled and unpacked the first
/// time) and as a process, alternating, on one test node.
async fn containers_against_processes(layout: &Path, rounds: usize) {
    if let Some(why) = flint_testkit::containers::unavailable() {
        println!("# containers on the test node: skipped ({why})");
        return;
    }
    let binaries =
        Binaries { gateway: crate::release_bin("flint-gateway"), operator: crate::release_bin("flint-operator") };
    let Some(c) = Cluster::new("bench-images", &flint_api::crd::definition(), binaries).await else {
        println!("# containers on the test node: skipped (set KUBEBUILDER_ASSETS to a control plane's binaries)");
        return;
    };
    let Some(node) = TestNode::get(c.api, &crate::release_bin("watchdog")).await else {
        println!("# containers on the test node: skipped (the test node needs root)");
        return;
    };
    node.serve(&c.ns.name);
    let registry = TestRegistry::start().await;
    let prefix = format!("127.0.0.1:{}/flint-dev", registry.port);
    let layout = Layout::create(layout).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("examples/echo-shell:{version}");
    Registry::new(None).push(&layout, &image, &Reference::parse(&format!("{prefix}/{image}")).unwrap()).await.unwrap();
    node.mirror("ghcr.io/flint-dev/", &format!("{prefix}/"));
    let example = workspace().join("examples/echo-shell");
    let env = [("fprocess", "sh handler.sh"), ("mode", "streaming")].map(|(k, v)| (k.to_string(), v.to_string()));
    node.image("bench/echo-shell:1", Image { dir: example, env: env.to_vec() });
    let g = c.gateway("bench-gateway", &["--autoscale", "false"]).await;
    let zero = json!({"min": 0, "max": 1});
    apply_image(&c, "as-container", &format!("ghcr.io/flint-dev/{image}"), zero.clone()).await;
    apply_image(&c, "as-process", "bench/echo-shell:1", zero).await;

    // The first start pulls the image from the registry and unpacks it; later ones find it.
    let first = cold_starts(&c, &g, "as-container", 1).await;
    let (mut containers, mut processes): (Vec<Split>, Vec<Split>) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        containers.extend(cold_starts(&c, &g, "as-container", 1).await);
        processes.extend(cold_starts(&c, &g, "as-process", 1).await);
    }
    println!("# cold start on the test node, echo-shell: ms from the request, as the API server showed each step");
    println!("## as a container, first start (image pulled from the registry and unpacked)");
    print_steps(&first);
    println!("## as a container, image present ({rounds} rounds, alternating with the process)");
    print_steps(&containers);
    println!("## as a process ({rounds} rounds)");
    print_steps(&processes);
    println!(
        "same request warm: container {:.1} ms, process {:.1} ms",
        warm(&g, "as-container").await,
        warm(&g, "as-process").await
    );
}
