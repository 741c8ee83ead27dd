//! `async`: asynchronous invocations in local mode, through the nats-server local mode starts:
//! calls stored per second (202s, no worker taking them) against synchronous invocations of
//! the same function in the same run; then end to end, from the POST to the result arriving
//! at the caller's callback URL, at 1, 16 and 64 callers.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use flint_testkit::{Caller, wait_for};
use hyper::Method;
use tokio::sync::oneshot;

use crate::{local_function, median, wrk};

pub async fn run(duration: Duration, rounds: usize) {
    stored(duration, rounds).await;
    end_to_end(duration).await;
}

async fn stored(duration: Duration, rounds: usize) {
    let args = ["--nats-url", "auto", "--async-worker", "false", "--async-max-queued", "100000000"];
    let local = local_function("  scale: {min: 1, max: 1}\n", &args).await;
    let later = format!("http://127.0.0.1:{}/async-function/hello", local.port);
    wait_until_stored(&later).await;
    println!(
        "# asynchronous calls stored (202) vs. synchronous calls, {rounds} rounds x {}s, alternating",
        duration.as_secs()
    );
    println!("{:>5} {:>12} {:>10} {:>7} {:>9} {:>9} {:>7}", "conns", "target", "rps", "ratio", "p50", "p99", "errors");
    for conns in [1, 16, 64] {
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

async fn end_to_end(duration: Duration) {
    // The callback server is on loopback, which callbacks may reach only when allowed.
    let args = ["--nats-url", "auto", "--async-parallel", "64", "--callback-allow", "127.0.0.1"];
    let local = local_function("  scale: {min: 1, max: 1}\n", &args).await;
    let later = format!("http://127.0.0.1:{}/async-function/hello", local.port);
    wait_until_stored(&later).await;
    let waiting: Waiting = Arc::default();
    let hook = format!("http://{}/done", callbacks(waiting.clone()).await);
    // A refusal would otherwise show only as every call lost.
    let probe = Caller::new().call(Method::POST, &later, &[("X-Callback-Url", hook.as_str())], "hello").await.unwrap();
    assert_eq!(probe.status, 202, "a call with a callback was refused: {}", probe.text());
    println!(
        "# end to end: POST /async-function/hello -> 202 -> worker -> function -> callback, {}s per point",
        duration.as_secs()
    );
    println!("{:>5} {:>14} {:>9} {:>9} {:>7}", "conns", "completed/s", "p50", "p99", "lost");
    for conns in [1, 16, 64] {
        let until = Instant::now() + duration;
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let (later, hook, waiting) = (later.clone(), hook.clone(), waiting.clone());
                tokio::spawn(async move {
                    let caller = Caller::new();
                    let (mut took, mut lost) = (Vec::new(), Vec::new());
                    let mut n = 0u64;
                    while Instant::now() < until {
                        n += 1;
                        let id = format!("bench-{conns}-{c}-{n}");
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
        took.sort();
        let pct = |p: f64| took.get(((took.len() as f64 * p) as usize).min(took.len().saturating_sub(1))).copied();
        let us = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
        println!(
            "{conns:>5} {:>14.0} {:>7.0}us {:>7.0}us {:>7}",
            took.len() as f64 / duration.as_secs_f64(),
            us(pct(0.5)),
            us(pct(0.99)),
            lost.len()
        );
        for why in lost.iter().take(3) {
            println!("      lost {why}");
        }
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
