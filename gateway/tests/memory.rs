//! The gateway keeps no memory for replicas that are gone: scale cycles under load (local mode,
//! real processes) leave its resident memory where it was after the first cycles.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Dir, Gateway};
use flint_testkit::{get, wait_for};
use hyper::Method;

const CYCLES: usize = 20;
const LOAD_FOR: Duration = Duration::from_secs(3);
const CONNECTIONS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_cycles_under_load_leave_the_gateway_memory_flat() {
    let dir = Dir::new("memory");
    dir.function("cycle", "  image: x\n  command: [cat]\n  scale: {min: 0, max: 4, target: 4, zeroAfter: 1s}", &[]);
    let tuning =
        ["--autoscale-tick", "100ms", "--stable-window", "2s", "--panic-window", "1s", "--scale-down-delay", "1s"];
    let g = Arc::new(Gateway::start(&dir.0, &tuning).await);
    let replicas = |g: Arc<Gateway>| async move {
        let r = get(&g.url("/system/function/cycle")).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["replicas"].as_u64()
    };
    let mut rss = Vec::new();
    let mut peak_replicas = 0;
    for cycle in 1..=CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let (g, stop) = (g.clone(), stop.clone());
                tokio::spawn(async move {
                    let caller = flint_testkit::Caller::new();
                    let url = g.url("/function/cycle");
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = format!("{cycle}-{c}-{n}");
                        let r = caller.call(Method::POST, &url, &[], body.clone()).await.unwrap();
                        assert_eq!((r.status, r.text()), (200, body));
                    }
                })
            })
            .collect();
        // Load until the function has scaled out, and at least LOAD_FOR.
        let started = tokio::time::Instant::now();
        wait_for("the function to scale out under load", Duration::from_secs(60), || {
            let g = g.clone();
            async move { (started.elapsed() >= LOAD_FOR && replicas(g).await? > 1).then_some(()) }
        })
        .await;
        peak_replicas = peak_replicas.max(replicas(g.clone()).await.unwrap_or(0));
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        wait_for("the function to be back at zero", Duration::from_secs(60), || {
            let g = g.clone();
            async move { (replicas(g).await? == 0).then_some(()) }
        })
        .await;
        // The connections to the replicas that left close after them, and their memory is
        // free once the last one has (the allocator gives it back within a second or so).
        wait_for("the gateway's connections to the replicas to close", Duration::from_secs(60), || {
            let g = g.clone();
            async move { g.metrics().await.lines().any(|l| l == "flint_replica_connections 0").then_some(()) }
        })
        .await;
        rss.push(flint_testkit::rss(g.process.pid()));
    }
    let kib: Vec<u64> = rss.iter().map(|b| b / 1024).collect();
    println!("gateway RSS (KiB) after each of {CYCLES} scale cycles: {kib:?}");
    assert!(peak_replicas > 1, "the function never scaled out");
    // A sample moves by up to a MiB with what the allocator has not given back yet, and the
    // first cycles warm it up; a drift is what moves the middle of the last five cycles above
    // the middle of cycles 6 to 10 (a leak of 100 KiB a cycle would move it by a MiB).
    let median = |cycles: &[u64]| {
        let mut c = cycles.to_vec();
        c.sort();
        c[c.len() / 2]
    };
    let (early, late) = (median(&rss[5..10]), median(&rss[CYCLES - 5..]));
    assert!(
        late <= early + 1024 * 1024,
        "the gateway grew by {} KiB from cycles 6-10 to cycles {}-{CYCLES}: {kib:?}",
        (late - early) / 1024,
        CYCLES - 4
    );
}
