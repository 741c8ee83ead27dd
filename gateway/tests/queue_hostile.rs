//! The asynchronous path against hostile callers, callback receivers, publishers and
//! neighbours, on a real `nats-server -js`: callbacks aimed inside the platform, receivers that
//! stream without end or never answer, trigger messages that try to steer the call, NATS
//! credentials kept out of every answer and log line, two installations on one NATS, paused
//! functions, and per-function state that ends with the function.

mod common;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use common::{
    Dir, Gateway, SECS_20,
    queue::{Hooks, RECORDER, call_async, call_id, local_nats, queue_worker, recorded, recorder, sample, with_nats},
};
use flint_testkit::{Nats, get, rss, rss_anon, wait_for};
use hyper::Method;
use nix::sys::signal::Signal;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    time::Instant,
};

/// A callback receiver on loopback that answers every request 200 with a body that never ends.
/// Counts the bytes it managed to send.
async fn endless_receiver() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = conn.read(&mut head).await;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
                while conn.write_all(chunk.as_bytes()).await.is_ok() {
                    counter.fetch_add(65536, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, sent)
}

/// A callback receiver that accepts connections and never reads or answers.
async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

/// A callback receiver that answers every request with a redirect to `to`.
async fn redirecting(to: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = conn.read(&mut head).await;
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

fn callbacks(metrics: &str, outcome: &str) -> f64 {
    sample(metrics, &format!("flint_async_callbacks_total{{outcome=\"{outcome}\"}}"))
}

fn finished(metrics: &str, function: &str, source: &str) -> f64 {
    sample(
        metrics,
        &format!(
            "flint_async_finished_total{{function_name=\"{function}.default\",source=\"{source}\",outcome=\"succeeded\"}}"
        ),
    )
}

async fn wait_finished(g: &Gateway, function: &str, source: &str, n: f64, within: Duration) {
    wait_for(&format!("{n} calls of {function} to finish"), within, || async {
        (finished(&g.metrics().await, function, source) >= n).then_some(())
    })
    .await
}

const CAT: &str = "  image: x\n  command: [cat]\n  env: [{name: mode, value: streaming}]\n  scale: {min: 1}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_read_from_others_are_bounded_and_a_receiver_that_streams_without_end_costs_nothing() {
    let dir = Dir::new("async-bounded");
    dir.function("echo", CAT, &[]);
    let big = "  image: x\n  command: [sh, -c, 'head -c 5000000 /dev/zero']\n  env: [{name: mode, value: streaming}]";
    dir.function("big", big, &[]);
    let g =
        with_nats(&dir, &["--nats-url", "auto", "--callback-allow", "127.0.0.1", "--max-body-bytes", "100000"]).await;
    g.wait_available("echo", 1).await;
    let (hooks, hook) = Hooks::start().await;
    let (endless, sent) = endless_receiver().await;

    // Warm up every path first, so that what follows measures only what the receivers cost.
    call_id(&call_async(&g, "/async-function/echo", &[("X-Callback-Url", &format!("http://{hook}/warm"))], "w").await);
    hooks.wait("/warm").await;
    let pid = g.process.pid();
    let before = rss(pid);
    for i in 0..40 {
        let url = format!("http://{endless}/{i}");
        call_id(&call_async(&g, "/async-function/echo", &[("X-Callback-Url", &url)], "x").await);
    }
    let peak = AtomicU64::new(before);
    wait_for("40 callbacks to the endless receiver", Duration::from_secs(60), || async {
        peak.fetch_max(rss(pid), Ordering::Relaxed);
        (callbacks(&g.metrics().await, "delivered") >= 41.0).then_some(())
    })
    .await;
    let peak = peak.load(Ordering::Relaxed).max(rss(pid));
    eprintln!(
        "40 callbacks to a receiver streaming without end: it sent {} MiB; gateway RSS {:.1} MiB before, {:.1} MiB peak",
        sent.load(Ordering::Relaxed) >> 20,
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(peak < before + 10 * 1048576, "the gateway grew from {before} to {peak} bytes reading callbacks' answers");

    // A function's answer over --max-body-bytes reaches the callback without its body.
    call_id(&call_async(&g, "/async-function/big", &[("X-Callback-Url", &format!("http://{hook}/big"))], "").await);
    let (headers, body) = hooks.wait("/big").await;
    assert_eq!(headers["x-function-status"], "200");
    assert!(body.is_empty(), "{} bytes", body.len());
    let why = headers["x-flint-error"].to_str().unwrap();
    assert!(why.contains("over 100000 bytes"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_that_never_answer_do_not_slow_the_functions_calls() {
    let dir = Dir::new("async-black-hole");
    dir.function("echo", CAT, &[]);
    let g = with_nats(&dir, &["--nats-url", "auto", "--callback-allow", "127.0.0.1", "--async-parallel", "4"]).await;
    g.wait_available("echo", 1).await;
    let hole = format!("http://{}/result", black_hole().await);

    let mut took = Vec::new();
    for (round, callback) in [(1.0, None), (2.0, Some(hole.as_str()))] {
        let started = Instant::now();
        for _ in 0..100 {
            let headers: Vec<(&str, &str)> = callback.map(|c| vec![("X-Callback-Url", c)]).unwrap_or_default();
            call_id(&call_async(&g, "/async-function/echo", &headers, "x").await);
        }
        wait_finished(&g, "echo", "async", 100.0 * round, Duration::from_secs(60)).await;
        took.push(started.elapsed());
    }
    eprintln!("100 calls: {:?} without callbacks, {:?} with every callback hanging", took[0], took[1]);
    // Held in the lane's 4 slots for 10 s each, 100 callbacks would take 250 s.
    assert!(took[1] <= took[0] * 3 + Duration::from_secs(3), "{took:?}");
    let m = g.metrics().await;
    assert_eq!(callbacks(&m, "delivered"), 0.0);
}

/// Connections to callback receivers are kept for the next result, but however many receivers
/// callers name (hosts, or ports of one host), the gateway keeps no more than 64 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_kept_to_callback_receivers_are_capped_however_many_receivers_there_are() {
    let dir = Dir::new("async-many-receivers");
    dir.function("echo", CAT, &[]);
    let g = with_nats(&dir, &["--nats-url", "auto", "--callback-allow", "127.0.0.1"]).await;
    g.wait_available("echo", 1).await;
    let mut receivers = Vec::new();
    for _ in 0..100 {
        receivers.push(Hooks::start().await);
    }
    for (i, (_, addr)) in receivers.iter().enumerate() {
        let hook = format!("http://{addr}/r/{i}");
        call_id(&call_async(&g, "/async-function/echo", &[("X-Callback-Url", &hook)], "x").await);
    }
    for (i, (hooks, _)) in receivers.iter().enumerate() {
        hooks.wait(&format!("/r/{i}")).await;
    }
    let ports: HashSet<u16> = receivers.iter().map(|(_, addr)| addr.port()).collect();
    // Each receiver keeps its connection open: only the gateway closes one it does not keep.
    wait_for("the gateway to keep at most 64 connections to the 100 receivers", SECS_20, || async {
        let kept = open_to(&ports);
        (1..=64).contains(&kept).then_some(())
    })
    .await;
}

/// Established loopback connections whose far end is one of `ports` (the near end being the
/// gateway's, as the receivers are in this process and keep theirs open).
fn open_to(ports: &HashSet<u16>) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let far = fields.get(2).and_then(|a| a.split_once(':')).and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            far.is_some_and(|p| ports.contains(&p)) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_cannot_be_aimed_inside_the_platform_nor_redirected_there() {
    let dir = Dir::new("async-ssrf");
    dir.function("echo", CAT, &[]);
    let g = with_nats(&dir, &["--nats-url", "auto"]).await;
    g.wait_available("echo", 1).await;
    let (hooks, hook) = Hooks::start().await;
    for (url, says) in [
        (format!("http://{hook}/direct"), "127.0.0.1: loopback addresses are refused"),
        ("http://localhost:9/x".to_string(), "localhost resolves to"),
        ("http://169.254.169.254/latest/meta-data/".to_string(), "link-local addresses are refused"),
        ("http://10.1.2.3:8080/".to_string(), "private addresses are refused"),
        ("http://[::1]:8080/".to_string(), "loopback addresses are refused"),
        ("http://0.0.0.0:8080/".to_string(), "this-network"),
        ("http://100.64.0.1/".to_string(), "shared"),
        ("http://nowhere.invalid/".to_string(), "does not resolve"),
        ("https://example.com/".to_string(), "not an absolute http:// URL"),
    ] {
        let r = call_async(&g, "/async-function/echo", &[("X-Callback-Url", &url)], "x").await;
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        assert!(r.text().contains(says), "{url}: {}", r.text());
    }
    let client = local_nats(&g, &dir).await;
    let js = jetstream::new(client.clone());
    let stored = js.get_stream("FLINT_CALLS").await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(stored, 0, "nothing refused was stored");

    // A call stored some other way (a publisher with NATS access) is checked again when sent.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Flint-Method", "POST");
    headers.insert("Flint-Path", "/");
    headers.insert("Flint-Callback-Url", format!("http://{hook}/forged").as_str());
    js.publish_with_headers("flint.async.default.echo", headers, "forged".into()).await.unwrap().await.unwrap();
    wait_for("the forged call's callback to be refused", SECS_20, || async {
        (callbacks(&g.metrics().await, "refused") >= 1.0).then_some(())
    })
    .await;
    assert_eq!(finished(&g.metrics().await, "echo", "async"), 1.0);

    // Where loopback is allowed, a receiver still cannot redirect the result elsewhere.
    let g2 = with_nats(
        &dir,
        &[
            "--nats-url",
            "auto",
            "--nats-store-dir",
            dir.0.join("nats2").to_str().unwrap(),
            "--callback-allow",
            "127.0.0.1",
        ],
    )
    .await;
    g2.wait_available("echo", 1).await;
    let bounce = redirecting(&format!("http://{hook}/redirected")).await;
    call_id(&call_async(&g2, "/async-function/echo", &[("X-Callback-Url", &format!("http://{bounce}/x"))], "x").await);
    wait_for("the redirected callback to count as failed", SECS_20, || async {
        (callbacks(&g2.metrics().await, "failed") >= 1.0).then_some(())
    })
    .await;
    assert!(hooks.0.lock().unwrap().is_empty(), "nothing reached the receiver: {:?}", hooks.0.lock().unwrap());
    // The public metric says what happened, not where.
    let m = g2.metrics().await;
    let lines: Vec<&str> = m.lines().filter(|l| l.starts_with("flint_async_callbacks_total")).collect();
    assert!(lines.iter().all(|l| !l.contains("127.0.0.1") && !l.contains("url")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_credentials_appear_in_no_answer_and_no_log_line() {
    const SECRET: &str = "s3cr3t-nats-pw";
    let mut nats = Nats::start_with(&["--user", "flint", "--pass", SECRET]).await;
    let dir = Dir::new("async-creds");
    dir.function("echo", CAT, &[]);
    let in_url = format!("nats://flint:{SECRET}@127.0.0.1:{}", nats.port);
    let g = with_nats(&dir, &["--nats-url", &in_url, "--async-worker", "false"]).await;
    call_id(&call_async(&g, "/async-function/echo", &[], "stored").await);
    let by_flags =
        ["--nats-url", &nats.url(), "--nats-user", "flint", "--nats-password", SECRET, "--async-worker", "false"];
    let g2 = with_nats(&dir, &by_flags).await;
    call_id(&call_async(&g2, "/async-function/echo", &[], "stored").await);
    let wrong = format!("nats://flint:wrong-{SECRET}@127.0.0.1:{}", nats.port);
    let g3 = Gateway::start(&dir.0, &["--nats-url", &wrong]).await;
    g3.process.wait_log("cannot connect to NATS at nats://127.0.0.1", SECS_20).await;
    let worker = queue_worker(&in_url, &g, &[]);
    worker.wait_log("NATS JetStream ready", SECS_20).await;

    let mut answers = Vec::new();
    let r = call_async(&g3, "/async-function/echo", &[], "x").await;
    assert_eq!(r.status, 503);
    answers.push(r.text());
    nats.stop().await;
    for gw in [&g, &g2] {
        let r = call_async(gw, "/async-function/echo", &[], "x").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("nats://127.0.0.1:"), "{}", r.text());
        answers.push(r.text());
        answers.push(get(&gw.url("/healthz")).await.unwrap().text());
        answers.push(get(&gw.url("/metrics")).await.unwrap().text());
    }
    for text in answers.iter().chain([g.process.log(), g2.process.log(), g3.process.log(), worker.log()].iter()) {
        assert!(!text.contains(SECRET), "the NATS password was shown:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_publisher_cannot_steer_the_call() {
    let nats = Nats::start().await;
    let dir = Dir::new("async-steer");
    let files = [("recorder.py", RECORDER)];
    dir.function("orders", &recorder(&[], "  triggers:\n  - nats: {subject: orders.new, path: /orders}"), &files);
    let (hooks, hook) = Hooks::start().await;
    let g = with_nats(&dir, &["--nats-url", &nats.url(), "--callback-allow", "127.0.0.1"]).await;
    g.wait_available("orders", 1).await;
    g.process.wait_log("queue trigger bound function=orders", SECS_20).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Flint-Method", "DELETE");
    headers.insert("Flint-Path", "-prod/admin");
    headers.insert("Flint-Callback-Url", format!("http://{hook}/forged").as_str());
    headers.insert("Flint-Call-Id", "forged-id");
    headers.insert("Order-Id", "7");
    client.publish_with_headers("orders.new", headers, "order 7".into()).await.unwrap();
    client.flush().await.unwrap();
    wait_finished(&g, "orders", "nats", 1.0, SECS_20).await;
    let runs = recorded(&dir, "orders");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!((run.method.as_str(), run.path.as_str(), run.order_id.as_str()), ("POST", "/orders", "7"));
    assert_ne!(run.key, "forged-id");
    let m = g.metrics().await;
    assert_eq!(callbacks(&m, "delivered") + callbacks(&m, "refused") + callbacks(&m, "failed"), 0.0);
    assert!(hooks.0.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_installations_on_one_nats_each_run_their_own_calls_once() {
    let nats = Nats::start().await;
    let files = [("recorder.py", RECORDER)];
    let dirs = [Dir::new("install-a"), Dir::new("install-b")];
    let mut gateways = Vec::new();
    for (dir, (prefix, subject)) in dirs.iter().zip([("team-a", "a.orders"), ("team-b", "b.orders")]) {
        let trigger = format!("  triggers:\n  - nats: {{subject: {subject}}}");
        dir.function("record", &recorder(&[], &trigger), &files);
        let g = with_nats(dir, &["--nats-url", &nats.url(), "--nats-prefix", prefix]).await;
        g.wait_available("record", 1).await;
        g.process.wait_log("queue trigger bound function=record", SECS_20).await;
        gateways.push(g);
    }
    let mut ids: [HashSet<String>; 2] = Default::default();
    for i in 0..30 {
        for (n, g) in gateways.iter().enumerate() {
            ids[n].insert(call_id(&call_async(g, "/async-function/record", &[], &format!("call {i}")).await));
        }
    }
    let client = async_nats::connect(nats.url()).await.unwrap();
    for i in 0..10 {
        for subject in ["a.orders", "b.orders"] {
            client.publish(subject, format!("{subject} {i}").into()).await.unwrap();
        }
    }
    client.flush().await.unwrap();
    for (n, g) in gateways.iter().enumerate() {
        wait_finished(g, "record", "async", 30.0, Duration::from_secs(60)).await;
        wait_finished(g, "record", "nats", 10.0, Duration::from_secs(60)).await;
        let runs = recorded(&dirs[n], "record");
        let calls: Vec<_> = runs.iter().filter(|r| r.body.starts_with("call ")).collect();
        let keys: HashSet<String> = calls.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, ids[n], "installation {n} ran exactly its own calls");
        assert_eq!(calls.len(), 30, "each once");
        let subject = ["a.orders", "b.orders"][n];
        let messages: Vec<_> = runs.iter().filter(|r| !r.body.starts_with("call ")).collect();
        assert!(messages.len() == 10 && messages.iter().all(|r| r.body.starts_with(subject)), "{messages:?}");
    }
    let js = jetstream::new(client);
    for prefix in ["team-a", "team-b"] {
        let dead = js.get_stream(format!("FLINT_{prefix}_DEAD")).await.unwrap().info().await.unwrap().state.messages;
        assert_eq!(dead, 0, "{prefix} dead-lettered another installation's calls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_functions_calls_wait_in_the_queue_and_run_when_it_is_unpaused() {
    let dir = Dir::new("async-paused");
    let files = [("recorder.py", RECORDER)];
    dir.function("record", &recorder(&[], "  paused: true"), &files);
    let g = with_nats(&dir, &["--nats-url", "auto", "--async-max-attempts", "2", "--async-backoff", "100ms"]).await;
    g.wait_available("record", 1).await;
    let mut ids = HashSet::new();
    for i in 0..100 {
        ids.insert(call_id(&call_async(&g, "/async-function/record", &[], &format!("job {i}")).await));
    }
    let series = "flint_async_in_progress{function_name=\"record.default\",source=\"async\"}";
    wait_for("the lane to hold its 16 calls", SECS_20, || async {
        (sample(&g.metrics().await, series) >= 16.0).then_some(())
    })
    .await;
    // Held, several tries later (one every 2 s), and the rest untouched in the stream.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let js = jetstream::new(local_nats(&g, &dir).await);
    let count = |stream: &'static str| {
        let js = js.clone();
        async move { js.get_stream(stream).await.unwrap().info().await.unwrap().state.messages }
    };
    assert_eq!(count("FLINT_DEAD").await, 0, "a paused function's calls were dead-lettered");
    assert_eq!(count("FLINT_CALLS").await, 100);
    assert!(recorded(&dir, "record").is_empty());
    assert!(sample(&g.metrics().await, series) <= 16.0);

    dir.function("record", &recorder(&[], ""), &files);
    g.process.signal(Signal::SIGHUP);
    wait_finished(&g, "record", "async", 100.0, Duration::from_secs(60)).await;
    let runs = recorded(&dir, "record");
    assert_eq!(runs.iter().map(|r| r.key.clone()).collect::<HashSet<_>>(), ids);
    assert_eq!(runs.len(), 100, "each ran once");
    assert_eq!(count("FLINT_DEAD").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_functions_deployed_called_and_deleted_leave_no_state_behind() {
    let dir = Dir::new("async-thousand-functions");
    let g = with_nats(&dir, &["--nats-url", "auto"]).await;
    let pid = g.process.pid();
    let caller = flint_testkit::Caller::new();
    let js = jetstream::new(local_nats(&g, &dir).await);
    let consumers = || async {
        let mut names = js.get_stream("FLINT_CALLS").await.unwrap().consumer_names();
        let mut n = 0;
        while let Some(Ok(_)) = futures::StreamExt::next(&mut names).await {
            n += 1;
        }
        n
    };
    // Each function scaled from zero by an asynchronous call: a replica, a calls lane and its
    // consumer, the portal's history, metrics, logs.
    let cycle = |round: usize| {
        let (g, caller, consumers) = (&g, &caller, &consumers);
        async move {
            let names: Vec<String> = (0..1000).map(|i| format!("r{round}f{i}")).collect();
            for name in &names {
                let deploy = format!(
                    r#"{{"service":"{name}","image":"x","envProcess":"cat","labels":{{"com.openfaas.scale.min":"0"}},"envVars":{{"mode":"streaming"}}}}"#
                );
                let r = caller.call(Method::POST, &g.url("/system/functions"), &[], deploy).await.unwrap();
                assert_eq!(r.status, 202, "{}", r.text());
                call_id(
                    &caller.call(Method::POST, &g.url(&format!("/async-function/{name}")), &[], "x").await.unwrap(),
                );
            }
            // Lanes retire 15 s after they empty, and the deletes below retire the rest: the
            // consumers are counted while the calls run.
            let seen = std::cell::Cell::new(0);
            wait_for("the 1,000 calls to run", Duration::from_secs(300), || async {
                if seen.get() == 0 {
                    seen.set(consumers().await);
                }
                let m = g.metrics().await;
                names.iter().all(|f| finished(&m, f, "async") == 1.0).then_some(())
            })
            .await;
            assert!(seen.get() > 0, "the calls lanes made consumers");
            let loaded = rss_anon(pid);
            for name in &names {
                let body = format!(r#"{{"functionName":"{name}"}}"#);
                let r = caller.call(Method::DELETE, &g.url("/system/functions"), &[], body).await.unwrap();
                assert_eq!(r.status, 202, "{}", r.text());
            }
            loaded
        }
    };
    let before = rss_anon(pid);
    let mut after = Vec::new();
    for round in 0..2 {
        let loaded = cycle(round).await;
        wait_for("every consumer to be gone", Duration::from_secs(60), || async {
            (consumers().await == 0).then_some(())
        })
        .await;
        // The history is swept every 30 s; replicas stop and their connections close meanwhile.
        tokio::time::sleep(Duration::from_secs(35)).await;
        after.push(rss_anon(pid));
        eprintln!(
            "round {round}: 1,000 functions; gateway heap (RssAnon) {:.1} MiB before, {:.1} MiB loaded, {:.1} MiB after deleting them",
            before as f64 / 1048576.0,
            loaded as f64 / 1048576.0,
            after[round] as f64 / 1048576.0
        );
    }
    // What a deleted function leaves is gone: a second thousand costs nothing the first did
    // not (what the allocator keeps of the first round's peak is reused, not grown).
    assert!(
        after[1] < after[0] + 4 * 1048576,
        "the gateway kept {} bytes more after the second thousand",
        after[1] - after[0]
    );
}
