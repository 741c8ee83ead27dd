//! Scale-from-zero and scale-up timing in local mode:
//! - time to first byte of a request at zero replicas (a trivial streaming function), against
//!   the same request warm and the bare cost of starting a process: the platform's cold-start
//!   overhead;
//! - time from a load step to the autoscaler's scale-up, with in-process metrics and with a
//!   real Prometheus scraping every second.

use std::time::{Duration, Instant};

use flint_testkit::{Prometheus, Spawned, free_port, get, post, request, wait_for};
use hyper::Method;

struct Local {
    _gateway: Spawned,
    base: String,
    dir: std::path::PathBuf,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(tag: &str, manifest: &str, port: u16, extra: &[&str]) -> Local {
    let dir = std::env::temp_dir().join(format!("flint-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("f")).unwrap();
    std::fs::write(dir.join("f/function.yaml"), manifest).unwrap();
    let p = port.to_string();
    let mut args = vec!["--functions-dir", dir.to_str().unwrap(), "--port", &p];
    args.extend_from_slice(extra);
    let gateway = Spawned::start(super::release_bin("flint-gateway").to_str().unwrap(), &args, &[("RUST_LOG", "warn")]);
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}/healthz");
    wait_for("the gateway", Duration::from_secs(20), || async { get(&health).await.ok() }).await;
    Local { _gateway: gateway, base, dir }
}

async fn replicas(base: &str) -> (u64, u64) {
    let r = get(&format!("{base}/system/function/f")).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (v["replicas"].as_u64().unwrap_or(0), v["availableReplicas"].as_u64().unwrap_or(0))
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[((ms.len() as f64) * 0.99).ceil() as usize - 1])
}

pub async fn run(rounds: usize) {
    let manifest = "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\nspec:\n  image: bench\n  command: [cat]\n  \
                    scale: {min: 0, max: 4, target: 2, zeroAfter: 1h}\n";
    let local = start("cold", manifest, free_port(), &["--autoscale", "false"]).await;
    let url = format!("{}/function/f", local.base);
    wait_for("a warm replica", Duration::from_secs(20), || async {
        post(&url, "x").await.ok().filter(|r| r.status == 200)
    })
    .await;
    let mut warm = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(post(&url, "x").await.unwrap().status, 200);
        warm.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut cold = Vec::new();
    for _ in 0..rounds {
        request(Method::POST, &format!("{}/system/scale-function/f", local.base), &[], r#"{"replicas":0}"#)
            .await
            .unwrap();
        wait_for("zero replicas", Duration::from_secs(20), || async {
            (replicas(&local.base).await == (0, 0)).then_some(())
        })
        .await;
        let t = Instant::now();
        let r = post(&url, "x").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        cold.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut spawn = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        std::process::Command::new("cat").stdin(std::process::Stdio::null()).status().unwrap();
        spawn.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let ((cold50, cold99), (warm50, _), (spawn50, _)) = (stats(cold), stats(warm), stats(spawn));
    println!("# cold start, local mode, trivial function (cat), {rounds} rounds");
    println!("request at zero replicas: median {cold50:.2} ms, p99 {cold99:.2} ms");
    println!("same request warm:        median {warm50:.2} ms; starting the function's process alone: {spawn50:.2} ms");
    println!(
        "platform cold-start overhead (cold - warm - process start): median {:.2} ms (target <= 20 ms)",
        cold50 - warm50 - spawn50
    );
    drop(local);

    let busy = "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\nspec:\n  image: bench\n  \
                command: [sh, -c, 'sleep 0.2; cat']\n  scale: {min: 1, max: 10, target: 2, zeroAfter: 1h}\n";
    let fast = ["--stable-window", "10s", "--panic-window", "2s", "--autoscale-tick", "500ms"];
    let local = start("step", busy, free_port(), &fast).await;
    println!("load step -> scale-up, in-process metrics: {:.2} s (target <= 2 s)", step(&local.base).await);
    drop(local);

    let port = free_port();
    let prometheus = Prometheus::start(&[format!("127.0.0.1:{port}")]).await;
    let url = prometheus.url();
    let mut args = fast.to_vec();
    args.extend(["--prometheus-url", &url]);
    let local = start("step-prom", busy, port, &args).await;
    // Let Prometheus scrape the idle gateway first, as it would have in production.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "load step -> scale-up, Prometheus (1 s scrape): {:.2} s (target <= scrape interval + 2 s = 3 s)",
        step(&local.base).await
    );
}

/// Seconds from starting 8 callers to the replica count rising above 1.
async fn step(base: &str) -> f64 {
    wait_for("one ready replica", Duration::from_secs(20), || async { (replicas(base).await.1 == 1).then_some(()) })
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop) = (format!("{base}/function/f"), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = post(&url, "x").await;
                }
            })
        })
        .collect();
    wait_for("a scale-up", Duration::from_secs(30), || async { (replicas(base).await.0 > 1).then_some(()) }).await;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    secs
}
