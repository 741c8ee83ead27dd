//! Asynchronous invocations and queue triggers end to end: a real `nats-server -js` on loopback
//! (the test's own, or the one local mode starts), the real gateway and queue workers, and
//! functions as real processes that record every call they get.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use common::{
    Dir, Gateway, SECS_20,
    queue::{
        Hooks, RECORDER, call_async, call_id, header, local_nats, queue_worker, read_stream, recorded, recorder,
        sample, with_nats,
    },
};
use flint_testkit::{Nats, alive, children, free_port, get, rss, wait_for};
use hyper::{HeaderMap, Method};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_calls_all_run_at_least_once_though_the_worker_is_killed_midway() {
    let nats = Nats::start().await;
    let dir = Dir::new("async-thousand");
    dir.function("record", &recorder(&[("DELAY", "0.01")], ""), &[("recorder.py", RECORDER)]);
    let g = with_nats(&dir, &["--nats-url", &nats.url(), "--async-worker", "false"]).await;
    g.wait_available("record", 1).await;
    let worker_args = ["--async-parallel", "8", "--async-ack-wait", "2s"];
    let mut first = queue_worker(&nats.url(), &g, &worker_args);

    let ids = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..16)
        .map(|t| {
            let (url, ids) = (g.url("/async-function/record"), ids.clone());
            tokio::spawn(async move {
                let caller = flint_testkit::Caller::new();
                for i in 0..1000 / 16 + 1 {
                    let n = i * 16 + t;
                    if n >= 1000 {
                        break;
                    }
                    let r = caller.call(Method::POST, &url, &[], format!("job-{n}")).await.unwrap();
                    ids.lock().unwrap().push(call_id(&r));
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let ids: HashSet<String> = ids.lock().unwrap().iter().cloned().collect();
    assert_eq!(ids.len(), 1000, "1000 calls, 1000 distinct call ids");

    wait_for("the first worker to run 300 calls", Duration::from_secs(60), || async {
        (recorded(&dir, "record").len() >= 300).then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.exit(SECS_20).await;
    let at_kill = recorded(&dir, "record").len();
    assert!(at_kill < 1000, "the worker was killed mid-way ({at_kill} calls had run)");
    let _second = queue_worker(&nats.url(), &g, &worker_args);

    wait_for("every call to have run", Duration::from_secs(120), || async {
        let seen: HashSet<String> = recorded(&dir, "record").into_iter().map(|r| r.key).collect();
        ids.is_subset(&seen).then_some(())
    })
    .await;
    let runs = recorded(&dir, "record");
    let seen: HashSet<&str> = runs.iter().map(|r| r.key.as_str()).collect();
    assert!(seen.iter().all(|k| ids.contains(*k)), "only the calls made ran");
    let duplicates = runs.len() - seen.len();
    eprintln!("1000 calls: {} runs, {duplicates} duplicates; worker killed after {at_kill} runs", runs.len());
    // Only a call taken but not acknowledged when the worker died can run twice: at most the
    // parallel limit of them.
    assert!(duplicates <= 8, "{duplicates} calls ran twice; at most 8 (the parallel limit) may");
    assert!(runs.iter().all(|r| r.method == "POST" && r.path == "/" && r.body.starts_with("job-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_is_retried_one_that_keeps_failing_is_dead_lettered_and_callbacks_say_how_it_ended() {
    let dir = Dir::new("async-retry");
    let files = [("recorder.py", RECORDER)];
    dir.function("flaky", &recorder(&[("FAIL_TIMES", "2"), ("FAIL_STATUS", "503")], ""), &files);
    dir.function("broken", &recorder(&[("FAIL_TIMES", "-1"), ("FAIL_STATUS", "502")], ""), &files);
    dir.function("wrong", &recorder(&[("FAIL_TIMES", "-1"), ("FAIL_STATUS", "400")], ""), &files);
    let (hooks, addr) = Hooks::start().await;
    // Local mode starts its own nats-server.
    let args = ["--nats-url", "auto", "--async-max-attempts", "3", "--async-backoff", "300ms"];
    // The test's callback receiver is on loopback, where callbacks may go only when allowed.
    let g = with_nats(&dir, &[&args[..], &["--callback-allow", "127.0.0.1"]].concat()).await;
    let nats_pid = children(g.process.pid())
        .into_iter()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == "nats-server")
        .expect("local mode runs nats-server as the gateway's child");
    for f in ["flaky", "broken", "wrong"] {
        g.wait_available(f, 1).await;
    }
    let mut ids = HashMap::new();
    for f in ["flaky", "broken", "wrong"] {
        let hook = format!("http://{addr}/{f}");
        let r =
            call_async(&g, &format!("/async-function/{f}/jobs?n=1"), &[("X-Callback-Url", &hook)], &format!("{f}-job"))
                .await;
        ids.insert(f, call_id(&r));
    }

    let check = |headers: &HeaderMap, f: &str, status: &str| {
        assert_eq!(headers["x-call-id"].to_str().unwrap(), ids[f]);
        assert_eq!(headers["x-function-name"].to_str().unwrap(), format!("{f}.default"));
        assert_eq!(headers["x-function-status"].to_str().unwrap(), status, "{f}");
        let secs: f64 = headers["x-duration-seconds"].to_str().unwrap().parse().unwrap();
        assert!(secs > 0.0 && secs < 10.0, "{f} took {secs}s");
    };
    let (headers, body) = hooks.wait("/flaky").await;
    check(&headers, "flaky", "200");
    assert_eq!(body, "attempt 3: flaky-job", "two 503s, then the answer");
    let (headers, body) = hooks.wait("/broken").await;
    check(&headers, "broken", "502");
    assert_eq!(body, "attempt 3: broken-job", "three attempts, then the dead-letter stream");
    let (headers, body) = hooks.wait("/wrong").await;
    check(&headers, "wrong", "400");
    assert_eq!(body, "attempt 1: wrong-job", "a 400 is the function's final word: not tried again");

    let runs = recorded(&dir, "flaky");
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(runs.iter().all(|r| r.key == ids["flaky"] && r.path == "/jobs?n=1" && r.method == "POST"), "{runs:?}");

    // A callback counts as delivered once its receiver has answered, which may be after the
    // receiver (this test) has read it.
    let metrics = wait_for("the three callbacks counted as delivered", SECS_20, || async {
        let metrics = g.metrics().await;
        (sample(&metrics, "flint_async_callbacks_total{outcome=\"delivered\"}") == 3.0).then_some(metrics)
    })
    .await;
    let series = |name: &str, f: &str, extra: &str| {
        sample(&metrics, &format!("{name}{{function_name=\"{f}.default\",source=\"async\"{extra}}}"))
    };
    assert_eq!(series("flint_async_retried_total", "flaky", ""), 2.0);
    assert_eq!(series("flint_async_retried_total", "broken", ""), 2.0);
    assert_eq!(series("flint_async_retried_total", "wrong", ""), 0.0);
    assert_eq!(series("flint_async_finished_total", "flaky", ",outcome=\"succeeded\""), 1.0);
    assert_eq!(series("flint_async_finished_total", "broken", ",outcome=\"dead_lettered\""), 1.0);
    assert_eq!(series("flint_async_finished_total", "wrong", ",outcome=\"dead_lettered\""), 1.0);

    let dead = read_stream(local_nats(&g, &dir).await, "FLINT_DEAD", 2).await;
    let letter = |f: &str| {
        dead.iter().find(|m| header(m, "Flint-Call-Id") == ids[f]).unwrap_or_else(|| panic!("{f} in FLINT_DEAD"))
    };
    let broken = letter("broken");
    assert_eq!(broken.subject.as_str(), "flint.dead.default.broken");
    assert_eq!(header(broken, "Flint-Attempts"), "3");
    assert_eq!(header(broken, "Flint-Last-Status"), "502");
    assert_eq!(header(broken, "Flint-Subject"), "flint.async.default.broken");
    assert_eq!(header(broken, "Flint-Path"), "/jobs?n=1");
    assert_eq!(&broken.payload[..], b"broken-job");
    assert_eq!(header(letter("wrong"), "Flint-Attempts"), "1");
    assert_eq!(dead.len(), 2, "nothing else was dead-lettered");

    // The gateway's nats-server stops with it.
    g.process.signal(Signal::SIGTERM);
    let mut g = g;
    g.process.exit(SECS_20).await;
    wait_for("local mode's nats-server to stop with the gateway", SECS_20, || async {
        (!alive(nats_pid)).then_some(())
    })
    .await;
}

/// Results for one receiver go over connections the gateway keeps (making a connection per
/// result was about a fifth of the gateway's CPU for an asynchronous call); a receiver that
/// closes each connection after answering still gets every result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_to_one_receiver_reuse_connections_and_one_that_closes_them_gets_every_result() {
    let dir = Dir::new("async-kept");
    dir.function("echo", "  image: x\n  command: [cat]", &[]);
    let (kept, kept_addr) = Hooks::start().await;
    let (closing, closing_addr) = Hooks::start_closing().await;
    let g = with_nats(&dir, &["--nats-url", "auto", "--callback-allow", "127.0.0.1"]).await;
    g.wait_available("echo", 1).await;
    for (hooks, addr, tag) in [(&kept, kept_addr, "kept"), (&closing, closing_addr, "closed")] {
        for i in 0..10 {
            let hook = format!("http://{addr}/{tag}/{i}");
            call_id(&call_async(&g, "/async-function/echo", &[("X-Callback-Url", &hook)], &format!("{tag} {i}")).await);
            let (_, body) = hooks.wait(&format!("/{tag}/{i}")).await;
            assert_eq!(body, format!("{tag} {i}"));
        }
    }
    // One after another, each well within the 2 s a connection is kept idle.
    let made = kept.1.load(std::sync::atomic::Ordering::Relaxed);
    assert!(made <= 3, "10 results one after another took {made} connections");
    assert_eq!(closing.1.load(std::sync::atomic::Ordering::Relaxed), 10, "one connection per result it closed");
    wait_for("20 callbacks counted as delivered", SECS_20, || async {
        let metrics = g.metrics().await;
        (sample(&metrics, "flint_async_callbacks_total{outcome=\"delivered\"}") == 20.0).then_some(())
    })
    .await;
    assert_eq!(kept.0.lock().unwrap().len() + closing.0.lock().unwrap().len(), 20, "a result came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_stored_while_no_worker_runs_survive_a_gateway_restart_faas_cli_paths_included() {
    let dir = Dir::new("async-restart");
    dir.function("record", &recorder(&[], ""), &[("recorder.py", RECORDER)]);
    let mut g = with_nats(&dir, &["--nats-url", "auto", "--async-worker", "false"]).await;
    let mut ids = HashSet::new();
    // What `faas-cli invoke --async record` sends: POST /async-function/record.openfaas-fn.
    for path in ["/async-function/record", "/async-function/record.default", "/async-function/record.openfaas-fn"] {
        ids.insert(call_id(&call_async(&g, path, &[], path).await));
    }
    assert_eq!(ids.len(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(recorded(&dir, "record").is_empty(), "no worker took them");
    g.process.signal(Signal::SIGTERM);
    g.process.exit(SECS_20).await;

    let g = with_nats(&dir, &["--nats-url", "auto"]).await;
    wait_for("the stored calls to run after the restart", Duration::from_secs(60), || async {
        (recorded(&dir, "record").len() >= 3).then_some(())
    })
    .await;
    let runs = recorded(&dir, "record");
    assert_eq!(runs.iter().map(|r| r.key.clone()).collect::<HashSet<_>>(), ids);
    assert_eq!(runs.len(), 3, "each ran once: {runs:?}");
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_async_calls_get_clear_errors_and_nothing_is_stored() {
    let mut nats = Nats::start().await;
    let dir = Dir::new("async-bad");
    dir.function("echo", "  image: x\n  command: [cat]", &[]);
    let g = with_nats(&dir, &["--nats-url", &nats.url(), "--async-worker", "false", "--max-body-bytes", "1000"]).await;
    let r = call_async(&g, "/async-function/nope", &[], "x").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("function nope.default not found"), "{}", r.text());
    let r = call_async(&g, "/async-function/echo", &[], &"x".repeat(2000)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("over 1000 bytes"), "{}", r.text());
    // Without --max-body-bytes, NATS's own limit (1 MiB by default) less room for the headers.
    let unlimited = with_nats(&dir, &["--nats-url", &nats.url(), "--async-worker", "false"]).await;
    let r = call_async(&unlimited, "/async-function/echo", &[], &"x".repeat(1 << 20)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains(&format!("over {} bytes", (1 << 20) - 16 * 1024)), "{}", r.text());
    drop(unlimited);
    let r = call_async(&g, "/async-function/echo", &[("X-Callback-Url", "/relative")], "x").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("X-Callback-Url"), "{}", r.text());

    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stored = || async { js.get_stream("FLINT_CALLS").await.unwrap().info().await.unwrap().state.messages };
    assert_eq!(stored().await, 0, "nothing refused was stored");
    call_id(&call_async(&g, "/async-function/echo", &[], "kept").await);
    assert_eq!(stored().await, 1, "a 202 means stored");

    nats.stop().await;
    let r = call_async(&g, "/async-function/echo", &[], "lost").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("could not be stored in NATS") && r.text().contains("nothing was stored"),
        "{}",
        r.text()
    );
    assert!(r.headers.contains_key("retry-after"));

    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let g2 = Gateway::start(&dir.0, &["--nats-url", &nowhere]).await;
    let r = call_async(&g2, "/async-function/echo", &[], "x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("connecting to NATS at"), "{}", r.text());
    let g3 = Gateway::start(&dir.0, &["--nats-url", "off"]).await;
    let r = call_async(&g3, "/async-function/echo", &[], "x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("asynchronous invocations are off"), "{}", r.text());
    // The synchronous path does not need NATS.
    assert_eq!(get(&g3.url("/healthz")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_on_a_subject_invoke_the_bound_functions_and_a_slow_one_gets_back_pressure_not_memory() {
    let nats = Nats::start().await;
    let dir = Dir::new("async-triggers");
    let files = [("recorder.py", RECORDER)];
    dir.function("orders", &recorder(&[], "  triggers:\n  - nats: {subject: orders.created, path: /new}"), &files);
    dir.function("audit", &recorder(&[], "  triggers:\n  - nats: {subject: 'orders.*'}"), &files);
    dir.function("slow", &recorder(&[("DELAY", "0.05")], "  triggers:\n  - nats: {subject: jobs.slow}"), &files);
    let g = with_nats(&dir, &["--nats-url", &nats.url(), "--async-parallel", "4"]).await;
    for f in ["orders", "audit", "slow"] {
        g.wait_available(f, 1).await;
        g.process.wait_log(&format!("queue trigger bound function={f}"), SECS_20).await;
    }
    let client = async_nats::connect(nats.url()).await.unwrap();
    for i in 0..20 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Order-Id", i.to_string().as_str());
        client.publish_with_headers("orders.created", headers, format!("order {i}").into()).await.unwrap();
    }
    client.flush().await.unwrap();
    wait_for("both functions to get the 20 orders", Duration::from_secs(30), || async {
        (recorded(&dir, "orders").len() >= 20 && recorded(&dir, "audit").len() >= 20).then_some(())
    })
    .await;
    for (f, path) in [("orders", "/new"), ("audit", "/")] {
        let runs = recorded(&dir, f);
        assert_eq!(runs.len(), 20, "{f}: each message once");
        let bodies: HashSet<String> = runs.iter().map(|r| r.body.clone()).collect();
        assert_eq!(bodies, (0..20).map(|i| format!("order {i}")).collect::<HashSet<_>>(), "{f}");
        assert!(runs.iter().all(|r| r.path == path && r.method == "POST"), "{f}: {runs:?}");
        assert!(
            runs.iter().all(|r| r.body == format!("order {}", r.order_id)),
            "{f}: the message's headers are carried"
        );
    }

    // 10,000 messages for a function that takes 50 ms each, 4 at a time.
    let pid = g.process.pid();
    let before = rss(pid);
    let js = jetstream::new(client.clone());
    let mut acks = Vec::new();
    for i in 0..10_000 {
        acks.push(js.publish("jobs.slow", format!("job {i}").into()).await.unwrap());
        if acks.len() == 500 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let mut peak = before;
    let mut most_in_progress = 0.0f64;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss(pid));
        let m = g.metrics().await;
        most_in_progress =
            most_in_progress.max(sample(&m, "flint_async_in_progress{function_name=\"slow.default\",source=\"nats\"}"));
    }
    let waiting = js.get_stream("FLINT_TRIGGERS").await.unwrap().info().await.unwrap().state.messages;
    eprintln!(
        "10,000 messages queued: gateway RSS {:.1} MiB before, {:.1} MiB peak; {waiting} still in the stream; at most {most_in_progress} in progress",
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(waiting > 5_000, "the messages wait in the stream ({waiting} there)");
    assert!(most_in_progress <= 4.0, "{most_in_progress} in progress; the limit is 4");
    assert!(
        peak < before + 24 * 1048576,
        "the gateway grew from {before} to {peak} bytes holding a queue it should not hold"
    );
}
