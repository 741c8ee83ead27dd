//! The watchdog binary end to end: real processes (a shell `cat`, a Python HTTP server), real
//! sockets, real signals.

use std::time::Duration;

use flint_testkit::{Spawned, alive, children, free_port, get, peak_rss, post, request, wait_for};
use hyper::Method;
use nix::sys::signal::Signal;

const WATCHDOG: &str = env!("CARGO_BIN_EXE_watchdog");
const SECS_10: Duration = Duration::from_secs(10);

struct Watchdog {
    process: Spawned,
    port: u16,
    metrics_port: u16,
}

impl Watchdog {
    /// Starts the watchdog on free loopback ports and waits until it answers `/_/health`.
    async fn start(env: &[(&str, &str)]) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let (p, m) = (port.to_string(), metrics_port.to_string());
        let mut all = vec![("port", p.as_str()), ("metrics_port", m.as_str()), ("bind_address", "127.0.0.1")];
        all.extend_from_slice(env);
        let process = Spawned::start(WATCHDOG, &[], &all);
        let w = Watchdog { process, port, metrics_port };
        let url = w.url("/_/health");
        wait_for("the watchdog to listen", SECS_10, || async { get(&url).await.ok() }).await;
        w
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self) {
        let url = self.url("/_/ready");
        wait_for("readiness", SECS_10, || async { get(&url).await.ok().filter(|r| r.status == 200) }).await;
    }

    async fn metrics(&self) -> String {
        get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await.unwrap().text()
    }
}

fn echo_server() -> (String, String) {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/echo_server.py");
    (format!("python3 {script} {port}"), format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn streaming_echoes_bodies_small_and_large_without_buffering_them() {
    let w = Watchdog::start(&[("fprocess", "cat")]).await;
    let reply = post(&w.url("/"), "hello").await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));

    // 200 MB through `cat` and back: the watchdog must stream, not hold the body.
    let big: Vec<u8> = (0..200 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let before = peak_rss(w.process.pid());
    let reply = post(&w.url("/big"), big.clone()).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body == big, "the echoed body differs ({} bytes back)", reply.body.len());
    let growth = peak_rss(w.process.pid()) - before;
    assert!(growth < 64 * 1024 * 1024, "peak RSS grew by {} MiB for a 200 MiB body", growth >> 20);
}

#[tokio::test]
async fn streaming_passes_request_metadata_as_cgi_variables() {
    let w = Watchdog::start(&[(
        "fprocess",
        r#"sh -c 'echo "$Http_Method|$Http_Path|$Http_Query|$Http_X_Custom|$Http_Content_Type"'"#,
    )])
    .await;
    let reply =
        request(Method::PUT, &w.url("/a/b?x=1&y=2"), &[("x-custom", "yes"), ("content-type", "text/plain")], "body")
            .await
            .unwrap();
    assert_eq!(reply.text().trim(), "PUT|/a/b|x=1&y=2|yes|text/plain");
}

#[tokio::test]
async fn streaming_failure_is_500_with_stderr_logged_not_returned() {
    let w = Watchdog::start(&[("fprocess", "sh -c 'echo secret-detail >&2; exit 3'")]).await;
    let reply = post(&w.url("/"), "").await.unwrap();
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("exited with status 3"), "{}", reply.text());
    assert!(!reply.text().contains("secret-detail"), "stderr leaked into the body: {}", reply.text());
    w.process.wait_log("stderr: secret-detail", SECS_10).await;

    let w = Watchdog::start(&[("fprocess", "sh -c 'echo the-reason >&2; exit 3'"), ("stderr_in_body", "true")]).await;
    let reply = post(&w.url("/"), "").await.unwrap();
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("the-reason"), "{}", reply.text());
}

#[tokio::test]
async fn timeout_is_504_and_kills_the_whole_process_group() {
    let dir = std::env::temp_dir().join(format!("flint-wd-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.join("pids");
    // The function starts a grandchild and waits: both must be gone after the timeout.
    let fprocess = format!("sh -c 'sleep 60 & echo $$ $! > {}; wait'", pids.display());
    let w = Watchdog::start(&[("fprocess", &fprocess), ("exec_timeout", "1s")]).await;
    let reply = post(&w.url("/"), "").await.unwrap();
    assert_eq!(reply.status, 504);
    assert!(reply.text().contains("timed out after 1s"), "{}", reply.text());
    let pids: Vec<i32> =
        std::fs::read_to_string(&pids).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    wait_for("the function's processes to be gone", SECS_10, || async {
        pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn max_inflight_refuses_the_excess_at_once_with_retry_after() {
    let w = Watchdog::start(&[("fprocess", "sh -c 'sleep 1; echo done'"), ("max_inflight", "2")]).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = w.url("/");
            tokio::spawn(async move { post(&url, "").await })
        })
        .collect();
    // Wait until both are in flight, then a third must be refused.
    wait_for("two invocations in flight", SECS_10, || async {
        w.metrics().await.contains("http_requests_in_flight 2").then_some(())
    })
    .await;
    let refused = post(&w.url("/"), "").await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "1");
    // Refused at once, not queued behind them: the two are still running.
    assert!(w.metrics().await.contains("http_requests_in_flight 2"), "the 429 waited for the others");
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status, 200);
    }
    let metrics = w.metrics().await;
    assert!(metrics.contains(r#"http_requests_total{code="429",method="POST"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"http_requests_total{code="200",method="POST"} 2"#), "{metrics}");
}

#[tokio::test]
async fn http_mode_proxies_method_path_query_headers_and_bodies() {
    let (fprocess, upstream) = echo_server();
    let w = Watchdog::start(&[("mode", "http"), ("fprocess", &fprocess), ("upstream_url", &upstream)]).await;
    w.wait_ready().await;
    let reply = request(
        Method::POST,
        &w.url("/fn/x?q=1"),
        &[("x-custom", "v"), ("connection", "keep-alive, x-hop"), ("x-hop", "drop-me")],
        "payload",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/fn/x?q=1");
    assert_eq!(seen["body"], "payload");
    assert_eq!(seen["headers"]["x-custom"], "v");
    assert!(seen["headers"].get("x-hop").is_none(), "a header named in Connection was forwarded: {seen}");

    let big: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let reply = post(&w.url("/echo"), big.clone()).await.unwrap();
    assert!(reply.status == 200 && reply.body == big, "large body did not round-trip");
}

#[tokio::test]
async fn http_mode_survives_the_functions_server_closing_its_connections() {
    // The function's server closes connections idle for 0.2 s, and after `/close`.
    let (fprocess, upstream) = echo_server();
    let fprocess = format!("{fprocess} 0.2");
    let w = Watchdog::start(&[("mode", "http"), ("fprocess", &fprocess), ("upstream_url", &upstream)]).await;
    w.wait_ready().await;
    let calls = || async {
        let urls: Vec<String> = (0..8).map(|i| w.url(&format!("/{i}"))).collect();
        let replies = futures::future::join_all(urls.iter().map(|url| get(url))).await;
        for reply in replies {
            let reply = reply.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    };
    calls().await;
    // Every connection the watchdog keeps is closed by the server meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    calls().await;
    for _ in 0..5 {
        let reply = get(&w.url("/close")).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(seen["path"], "/close");
    }
    calls().await;
}

#[tokio::test]
async fn http_mode_is_ready_only_once_the_upstream_accepts() {
    let (fprocess, upstream) = echo_server();
    let delayed = format!("sh -c 'sleep 1; exec {fprocess}'");
    let w = Watchdog::start(&[("mode", "http"), ("fprocess", &delayed), ("upstream_url", &upstream)]).await;
    let early = get(&w.url("/_/ready")).await.unwrap();
    assert_eq!(early.status, 503, "ready before the upstream listens");
    assert!(early.text().contains("not accepting"), "{}", early.text());
    w.wait_ready().await;
    assert_eq!(get(&w.url("/anything")).await.unwrap().status, 200);
}

#[tokio::test]
async fn http_mode_timeout_is_504() {
    let (fprocess, upstream) = echo_server();
    let w = Watchdog::start(&[
        ("mode", "http"),
        ("fprocess", &fprocess),
        ("upstream_url", &upstream),
        ("exec_timeout", "500ms"),
    ])
    .await;
    w.wait_ready().await;
    let reply = get(&w.url("/sleep?s=3")).await.unwrap();
    assert_eq!(reply.status, 504);
    assert!(reply.text().contains("timed out after 500ms"), "{}", reply.text());
}

#[tokio::test]
async fn http_mode_exits_with_the_process_status_when_the_process_dies() {
    let mut w = Watchdog::start(&[
        ("mode", "http"),
        ("fprocess", "sh -c 'sleep 0.3; exit 3'"),
        ("upstream_url", "http://127.0.0.1:9"),
    ])
    .await;
    let status = w.process.exit(SECS_10).await;
    assert_eq!(status.code(), Some(3));
    assert!(w.process.log().contains("exited with status 3"), "{}", w.process.log());
}

#[tokio::test]
async fn the_function_dies_with_a_watchdog_killed_outright() {
    let (fprocess, upstream) = echo_server();
    let w = Watchdog::start(&[("mode", "http"), ("fprocess", &fprocess), ("upstream_url", &upstream)]).await;
    w.wait_ready().await;
    let function = children(w.process.pid());
    assert_eq!(function.len(), 1, "the watchdog's children: {function:?}");
    w.process.signal(Signal::SIGKILL);
    wait_for("the function's process to die with its watchdog", SECS_10, || async {
        (!alive(function[0])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_fails_readiness_at_once_and_completes_every_accepted_request() {
    let mut w = Watchdog::start(&[
        ("fprocess", "sh -c 'sleep 1; echo done'"),
        ("healthcheck_interval", "300ms"),
        ("write_timeout", "10s"),
    ])
    .await;
    let inflight: Vec<_> = (0..8)
        .map(|_| {
            let url = w.url("/");
            tokio::spawn(async move { post(&url, "").await })
        })
        .collect();
    wait_for("eight invocations in flight", SECS_10, || async {
        w.metrics().await.contains("http_requests_in_flight 8").then_some(())
    })
    .await;
    w.process.signal(Signal::SIGTERM);
    let ready = wait_for("readiness to fail", SECS_10, || async {
        get(&w.url("/_/ready")).await.ok().filter(|r| r.status == 503)
    })
    .await;
    assert!(ready.text().contains("shutting down"));
    // During the grace period new requests are still served.
    assert_eq!(post(&w.url("/"), "").await.unwrap().text(), "done\n");
    for r in inflight {
        let r = r.await.unwrap().expect("an accepted request was lost");
        assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    }
    let status = w.process.exit(SECS_10).await;
    assert_eq!(status.code(), Some(0), "{}", w.process.log());
}

#[tokio::test]
async fn bad_configuration_exits_at_once_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "fprocess: is required"),
        (&[("fprocess", "cat"), ("mode", "turbo")], "mode: unknown mode \"turbo\"; accepted: http, streaming"),
        (&[("fprocess", "cat"), ("exec_timeout", "soon")], "exec_timeout: invalid duration \"soon\""),
        (&[("fprocess", "cat"), ("mode", "http")], "upstream_url: is required in http mode"),
    ];
    for (env, message) in cases {
        let mut p = Spawned::start(WATCHDOG, &[], env);
        let status = p.exit(SECS_10).await;
        assert_eq!(status.code(), Some(2), "{env:?}");
        p.wait_log(message, SECS_10).await;
    }
}

#[tokio::test]
async fn metrics_count_requests_by_code_and_method_with_a_histogram() {
    let w = Watchdog::start(&[("fprocess", "cat")]).await;
    for _ in 0..3 {
        post(&w.url("/"), "x").await.unwrap();
    }
    get(&w.url("/")).await.unwrap();
    let m = w.metrics().await;
    assert!(m.contains(r#"http_requests_total{code="200",method="POST"} 3"#), "{m}");
    assert!(m.contains(r#"http_requests_total{code="200",method="GET"} 1"#), "{m}");
    assert!(m.contains(r#"http_request_duration_seconds_count{code="200",method="POST"} 3"#), "{m}");
    assert!(m.contains("http_requests_in_flight 0"), "{m}");
    w.process.wait_log("status=200", SECS_10).await;
}
