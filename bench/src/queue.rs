//! `async`: asynchronous invocations in local mode, through the nats-server local mode starts:
//! calls stored per second (202s, no worker taking them) against synchronous invocations of
//! the same function in the same run; then end to end, from the POST to the result arriving
//! at the caller's callback URL, at 1, 16 and 64 callers, with the gateway's and nats-server's
//! CPU per result and how long a call waits in the stream before the worker takes it (and
//! another build's beside it, `--baseline DIR`).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use flint_testkit::{Caller, wait_for};
use hyper::Method;
use tokio::sync::oneshot;

use nix::unistd::Pid;

use crate::{LocalHello, local_function, median, wrk};

/// `baseline`: another build's release binaries, measured end to end in the same run.
/// `callers`: the numbers of connections measured.
pub async fn run(duration: Duration, rounds: usize, baseline: Option<PathBuf>, callers: &[usize]) {
    stored(duration, rounds, callers).await;
    end_to_end(duration, rounds, baseline, callers).await;
}

async fn stored(duration: Duration, rounds: usize, callers: &[usize]) {
    let args = ["--nats-url", "auto", "--async-worker", "false", "--async-max-queued", "100000000"];
    let local = local_function("  scale: {min: 1, max: 1}\n", &args).await;
    let later = format!("http://127.0.0.1:{}/async-function/hello", local.port);
    wait_until_stored(&later).await;
    println!(
        "# asynchronous calls stored (202) vs. synchronous calls, {rounds} rounds x {}s, alternating",
        duration.as_secs()
    );
    println!("{:>5} {:>12} {:>10} {:>7} {:>9} {:>9} {:>7}", "conns", "target", "rps", "ratio", "p50", "p99", "errors");
    for &conns in callers {
        let (mut sync, mut stored) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            sync.push(wrk::post(&local.url, conns, duration, "hello"));
            stored.push(wrk::post(&later, conns, duration, "hello"));
        }
        let (sync, stored) = (median(&sync), median(&stored));
        for (label, m) in [("sync", sync), ("async 202", stored)] {
            println!(
                "{conns:>5} {label:>12} {:>10.0} {:>7.3} {:>7.0}us {:>7.0}us {:>7}",
                m.rps,
                m.rps / sync.rps,
                m.p50_us,
                m.p99_us,
                m.errors
            );
        }
    }
}

async fn wait_until_stored(url: &str) {
    wait_for("local mode's NATS to take calls", Duration::from_secs(30), || async {
        let r = flint_testkit::post(url, "warm-up").await.ok()?;
        (r.status == 202).then_some(())
    })
    .await;
}

/// Callbacks awaited, by call id.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

/// One build's gateway taking calls end to end.
struct Build {
    label: &'static str,
    local: LocalHello,
    later: String,
}

impl Build {
    /// This build's gateway, or the one in `baseline` (with its watchdog).
    async fn start(label: &'static str, baseline: Option<&Path>, hook: &str) -> Build {
        // The callback server is on loopback, which callbacks may reach only when allowed.
        let mut args = vec!["--nats-url", "auto", "--async-parallel", "64", "--callback-allow", "127.0.0.1"];
        let (gateway, watchdog) = match baseline {
            Some(dir) => (dir.join("flint-gateway"), dir.join("watchdog").to_string_lossy().into_owned()),
            None => (crate::release_bin("flint-gateway"), String::new()),
        };
        if baseline.is_some() {
            args.extend(["--watchdog", &watchdog]);
        }
        let name = if baseline.is_some() { "-baseline" } else { "" };
        let local = crate::local_function_of(&gateway, name, "  scale: {min: 1, max: 1}\n", &args).await;
        let later = format!("http://127.0.0.1:{}/async-function/hello", local.port);
        wait_until_stored(&later).await;
        // A refusal would otherwise show only as every call lost.
        let probe = Caller::new().call(Method::POST, &later, &[("X-Callback-Url", hook)], "hello").await.unwrap();
        assert_eq!(probe.status, 202, "a call with a callback was refused: {}", probe.text());
        Build { label, local, later }
    }

    /// The gateway's `flint_async_queue_age_seconds` (stored to taken) so far: sum, count.
    async fn queue_age(&self) -> (f64, f64) {
        let metrics =
            flint_testkit::get(&format!("http://127.0.0.1:{}/metrics", self.local.port)).await.unwrap().text();
        let value = |name: &str| {
            metrics
                .lines()
                .filter(|l| l.starts_with(name) && l.contains("function_name=\"hello.default\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (value("flint_async_queue_age_seconds_sum{"), value("flint_async_queue_age_seconds_count{"))
    }

    /// The processes a result's CPU is counted in: the gateway, local mode's nats-server, the
    /// function's watchdog and the function (the gateway's children and grandchild).
    fn processes(&self) -> [Pid; 4] {
        let child_named = |parent: Pid, comm: &str| {
            let pid = flint_testkit::children(parent)
                .into_iter()
                .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == comm)
                .unwrap_or_else(|| panic!("no {comm} under process {parent}"));
            Pid::from_raw(pid)
        };
        let gateway = self.local.gateway.pid();
        let watchdog = child_named(gateway, "watchdog");
        let function = *flint_testkit::children(watchdog).first().expect("the watchdog runs the function");
        [gateway, child_named(gateway, "nats-server"), watchdog, Pid::from_raw(function)]
    }
}

/// One build at one number of callers.
struct Point {
    completed_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    lost: Vec<String>,
    /// CPU per completed call, user + kernel microseconds: the gateway's, nats-server's, the
    /// watchdog's and the function's together, this bench's own (callers and callback receiver).
    cpu_us: [f64; 4],
    /// Mean time from stored to taken by the worker.
    taken_us: f64,
}

async fn end_to_end(duration: Duration, rounds: usize, baseline: Option<PathBuf>, callers: &[usize]) {
    let waiting: Waiting = Arc::default();
    let hook = format!("http://{}/done", callbacks(waiting.clone()).await);
    let mut builds = vec![Build::start("flint", None, &hook).await];
    if let Some(dir) = &baseline {
        builds.push(Build::start("baseline", Some(dir), &hook).await);
    }
    println!(
        "# end to end: POST /async-function/hello -> 202 -> worker -> function -> callback, median of {rounds} \
         rounds x {}s, builds alternating; CPU per completed call (user+kernel)",
        duration.as_secs()
    );
    println!(
        "{:>5} {:>9} {:>12} {:>9} {:>9} {:>6} {:>11} {:>12} {:>10} {:>14} {:>10}",
        "conns",
        "build",
        "completed/s",
        "p50",
        "p99",
        "lost",
        "taken after",
        "gateway cpu",
        "nats cpu",
        "watchdog+fn",
        "bench cpu"
    );
    for &conns in callers {
        let mut points: Vec<Vec<Point>> = builds.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (build, points) in builds.iter().zip(&mut points) {
                points.push(measure(build, &hook, &waiting, conns, duration).await);
            }
        }
        for (build, mut points) in builds.iter().zip(points) {
            points.sort_by(|a, b| a.completed_per_s.total_cmp(&b.completed_per_s));
            let lost: usize = points.iter().map(|p| p.lost.len()).sum();
            let m = &points[points.len() / 2];
            println!(
                "{conns:>5} {:>9} {:>12.0} {:>7.0}us {:>7.0}us {:>6} {:>9.0}us {:>10.1}us {:>8.1}us {:>12.1}us {:>8.1}us",
                build.label,
                m.completed_per_s,
                m.p50_us,
                m.p99_us,
                lost,
                m.taken_us,
                m.cpu_us[0],
                m.cpu_us[1],
                m.cpu_us[2],
                m.cpu_us[3]
            );
            for why in points.iter().flat_map(|p| &p.lost).take(3) {
                println!("      lost {why}");
            }
        }
    }
}

/// `conns` callers for `duration`, each POSTing a call and waiting for its callback before the
/// next.
async fn measure(build: &Build, hook: &str, waiting: &Waiting, conns: usize, duration: Duration) -> Point {
    let [gateway, nats, watchdog, function] = build.processes();
    let cpu = || {
        [vec![gateway], vec![nats], vec![watchdog, function], vec![nix::unistd::getpid()]]
            .map(|pids| pids.into_iter().map(flint_testkit::cpu_time).sum::<Duration>())
    };
    let cpu_before = cpu();
    let age_before = build.queue_age().await;
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (later, hook, waiting, label) = (build.later.clone(), hook.to_string(), waiting.clone(), build.label);
            tokio::spawn(async move {
                let caller = Caller::new();
                let (mut took, mut lost) = (Vec::new(), Vec::new());
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let id = format!("bench-{label}-{conns}-{c}-{n}");
                    let (tx, rx) = oneshot::channel();
                    waiting.lock().unwrap().insert(id.clone(), tx);
                    let start = Instant::now();
                    let headers = [("X-Callback-Url", hook.as_str()), ("X-Call-Id", id.as_str())];
                    let accepted = caller.call(Method::POST, &later, &headers, "hello").await;
                    match &accepted {
                        Ok(r) if r.status == 202 => {}
                        Ok(r) => {
                            lost.push(format!("{id}: {} {}", r.status, r.text()));
                            continue;
                        }
                        Err(e) => {
                            lost.push(format!("{id}: {e}"));
                            continue;
                        }
                    }
                    match tokio::time::timeout(Duration::from_secs(30), rx).await {
                        Ok(Ok(at)) => took.push(at - start),
                        _ => lost.push(format!("{id}: accepted, no callback within 30 s")),
                    }
                }
                (took, lost)
            })
        })
        .collect();
    let (mut took, mut lost) = (Vec::new(), Vec::new());
    for t in tasks {
        let (t, l) = t.await.unwrap();
        took.extend(t);
        lost.extend(l);
    }
    let cpu_after = cpu();
    let age_after = build.queue_age().await;
    took.sort();
    let pct = |p: f64| took.get(((took.len() as f64 * p) as usize).min(took.len().saturating_sub(1))).copied();
    let us = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
    let per_call = |i: usize| (cpu_after[i] - cpu_before[i]).as_secs_f64() * 1e6 / took.len().max(1) as f64;
    Point {
        completed_per_s: took.len() as f64 / duration.as_secs_f64(),
        p50_us: us(pct(0.5)),
        p99_us: us(pct(0.99)),
        lost,
        cpu_us: [per_call(0), per_call(1), per_call(2), per_call(3)],
        taken_us: (age_after.0 - age_before.0) * 1e6 / (age_after.1 - age_before.1).max(1.0),
    }
}

/// A callback URL's server on loopback: each result's arrival time goes to its waiter.
async fn callbacks(waiting: Waiting) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let at = Instant::now();
                    let id = req.headers().get("x-call-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                    if let Some(tx) = id.and_then(|id| waiting.lock().unwrap().remove(&id)) {
                        let _ = tx.send(at);
                    }
                    async { Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::new()))) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}
