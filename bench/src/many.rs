//! `many`: a local-mode gateway with thousands of functions deployed and scaled to zero, beside one
//! with a single function, in the same run: memory per deployed function, the time to answer
//! `/system/functions` and the portal's list, the gateway's CPU while nothing is called (its
//! autoscaler ticking over every function), and the latency of calls to one warm function.

use std::time::{Duration, Instant};

use flint_testkit::{cpu_time, get, rss, rss_anon, wait_for};
use nix::unistd::Pid;

use crate::{LocalHello, compare, release_bin, start_local, write_hello, write_idle_functions};

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
    let list = format!("http://127.0.0.1:{}/system/functions", many.port);
    wait_for("the gateway to list every function", Duration::from_secs(120), || async {
        let r = get(&list).await.ok()?;
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&r.body).ok()?;
        (listed.len() == functions).then_some(())
    })
    .await;
    let listed = started.elapsed();
    // Past the first autoscaler ticks and the first lists' allocations.
    tokio::time::sleep(Duration::from_secs(5)).await;

    println!("# {functions} functions deployed and scaled to zero in local mode, beside a gateway with one");
    println!(
        "ready (hello answers): one function {:.2} s, {functions} functions {:.2} s (all listed at {:.2} s)",
        one_ready.as_secs_f64(),
        many_ready.as_secs_f64(),
        listed.as_secs_f64()
    );
    let memory = |g: &LocalHello| (rss(g.gateway.pid()), rss_anon(g.gateway.pid()));
    let ((one_rss, one_anon), (many_rss, many_anon)) = (memory(&one), memory(&many));
    let per = |a: u64, b: u64| (b as f64 - a as f64) / (functions - 1) as f64;
    println!(
        "RSS: one function {:.1} MiB, {functions} functions {:.1} MiB: {:.0} bytes per function ({:.0} bytes anonymous; goal <= 2 KB beyond the Function itself)",
        one_rss as f64 / 1048576.0,
        many_rss as f64 / 1048576.0,
        per(one_rss, many_rss),
        per(one_anon, many_anon)
    );
    // The goal is counted beyond the Function itself: the same manifests, parsed and held here.
    let me = Pid::this();
    let before = rss_anon(me);
    let held: Vec<std::sync::Arc<flint_api::Function>> = (0..functions - 1)
        .map(|i| std::fs::read_to_string(many.dir.join(format!("f{i:05}/function.yaml"))).unwrap())
        .flat_map(|text| flint_api::manifest::from_yaml(&text).unwrap())
        .map(std::sync::Arc::new)
        .collect();
    let object = (rss_anon(me) as f64 - before as f64) / held.len() as f64;
    drop(held);
    println!(
        "a Function held in memory: about {object:.0} bytes (as many parsed in this process); beyond it: {:.0} bytes per function",
        per(one_rss, many_rss) - object
    );
    let manifest = std::fs::metadata(many.dir.join("f00000/function.yaml")).map(|m| m.len()).unwrap_or(0);
    let object = get(&format!("http://127.0.0.1:{}/system/function/f00000", many.port)).await.map(|r| r.body.len());
    println!(
        "a Function: its manifest {manifest} bytes, its REST form {} bytes",
        object.map(|b| b.to_string()).unwrap_or_else(|e| e)
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
    let (a, b) = (cpu_time(one.gateway.pid()), cpu_time(many.gateway.pid()));
    tokio::time::sleep(window).await;
    let share = |before: Duration, pid: Pid| 100.0 * (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64();
    println!(
        "CPU while nothing is called, over {}s: one function {:.2}% of a core, {functions} functions {:.2}% (goal <= 5%)",
        window.as_secs(),
        share(a, one.gateway.pid()),
        share(b, many.gateway.pid())
    );
    // Memory that grows per tick per function would show here.
    println!(
        "RSS after those {}s: {functions} functions {:.1} MiB (was {:.1} MiB)",
        window.as_secs(),
        rss(many.gateway.pid()) as f64 / 1048576.0,
        many_rss as f64 / 1048576.0
    );

    let one_label = "hello, one function";
    let many_label = format!("hello, {functions} functions");
    compare(&[(one_label, one.url.clone()), (&many_label, many.url.clone())], duration, rounds);
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
