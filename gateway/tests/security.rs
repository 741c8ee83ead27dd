//! The front door against hostile clients and hostile web pages (local mode, real sockets):
//! connections that hold a place without asking, waits abandoned mid-queue, pages that try to
//! deploy through the developer's browser or read answers by rebinding a name, and functions
//! that try to get the gateway's own credential.

mod common;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{Dir, Gateway, SECS_20};
use flint_testkit::{Caller, get, request, wait_for};
use http_body_util::{BodyExt, Empty};
use hyper::Method;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// Whether the gateway closes `conn` within `within` (reads until the end, discarding).
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_that_send_no_request_head_are_closed_and_never_lock_clients_out() {
    let dir = Dir::new("silent");
    // The header timeout must outlast filling the places and asking once: 1 s did not, once, on
    // a machine busy building (the first silent connection was already closed: 200, not 503).
    let g =
        Gateway::start(&dir.0, &["--max-connections", "20", "--header-timeout", "3s", "--idle-timeout", "30s"]).await;
    // Let the start-up check's connection go (a place freed while filling would let the
    // check below in), then fill every place with clients that never finish asking: silent,
    // the first byte of the HTTP/2 preface, half an HTTP/1 head.
    g.wait_no_connections().await;
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
        match i % 3 {
            0 => {}
            1 => c.write_all(b"P").await.unwrap(),
            _ => c.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n").await.unwrap(),
        }
        silent.push(c);
    }
    let filled = Instant::now();
    let health = g.url("/healthz");
    let ask = || async {
        let asked = request(Method::GET, &health, &[], Bytes::new());
        tokio::time::timeout(Duration::from_secs(2), asked).await.ok()?.ok()
    };
    let refused = ask().await.expect("an answer");
    assert_eq!(refused.status, 503, "every place is taken: {}", refused.text());

    // An ordinary client is served within the header timeout and a second.
    let served = wait_for("an ordinary request to be served", Duration::from_secs(10), || async {
        (ask().await?.status == 200).then(|| filled.elapsed())
    })
    .await;
    assert!(served <= Duration::from_secs(4), "served {served:?} after the places were filled; at most 3 s + 1 s");
    for (i, c) in silent.iter_mut().enumerate() {
        assert!(closed_within(c, Duration::from_secs(5)).await, "silent connection {i} is still open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_http2_connection_is_closed_but_not_while_a_request_is_under_way() {
    let dir = Dir::new("h2-idle");
    dir.function(
        "slow",
        "  image: x\n  command: [sh, -c, 'sleep 2; cat']\n  env: [{name: mode, value: streaming}]",
        &[],
    );
    let g = Gateway::start(&dir.0, &["--idle-timeout", "1s", "--header-timeout", "1s"]).await;
    g.wait_available("slow", 1).await;

    let stream = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    // A request that takes longer than the idle timeout is not cut off.
    let req = hyper::Request::post(g.url("/function/slow"))
        .body(http_body_util::Full::new(Bytes::from_static(b"still here")))
        .unwrap();
    let started = Instant::now();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"still here");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Then, with nothing under way, the gateway ends the connection.
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the gateway closed the idle HTTP/2 connection within 10 s")
        .unwrap()
        .ok();
    let after = idle.elapsed();
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waits_abandoned_in_a_throttle_queue_give_their_places_back() {
    let dir = Dir::new("abandon");
    let spec = "  image: x\n  command: [sh, -c, 'sleep 3; cat']\n  env: [{name: mode, value: streaming}]\n  \
                scale: {min: 1}\n  throttle: {maxInFlight: 1, queue: 300, queueTimeout: 60s}";
    dir.function("one", spec, &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("one", 1).await;
    let queued = || async {
        let r = get(&g.url("/system/function/one")).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["throttle"]["queued"].as_u64().unwrap()
    };
    // One call holds the only place for 3 s.
    let holder = tokio::spawn({
        let url = g.url("/function/one");
        async move { request(Method::POST, &url, &[], "held").await.unwrap() }
    });
    wait_for("the holder to take the place", SECS_20, || async {
        let r = get(&g.url("/system/function/one")).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        (v["throttle"]["inFlight"].as_u64() == Some(1)).then_some(())
    })
    .await;

    // 150 HTTP/1 callers queue, then hang up.
    let mut conns = Vec::new();
    for _ in 0..150 {
        let mut c = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
        c.write_all(b"POST /function/one HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1\r\n\r\nx").await.unwrap();
        conns.push(c);
    }
    // 50 HTTP/2 streams on one connection queue, then are reset.
    let stream = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let streams: Vec<_> = (0..50)
        .map(|_| {
            let mut sender = sender.clone();
            let req = hyper::Request::post(g.url("/function/one")).body(Empty::<Bytes>::new()).unwrap();
            tokio::spawn(async move { sender.send_request(req).await })
        })
        .collect();
    wait_for("200 waits in the queue", SECS_20, || async { (queued().await == 200).then_some(()) }).await;
    drop(conns);
    for s in streams {
        s.abort();
    }
    wait_for("every abandoned wait to give its place back", SECS_20, || async { (queued().await == 0).then_some(()) })
        .await;
    assert_eq!(holder.await.unwrap().status, 200);
    let r = request(Method::POST, &g.url("/function/one"), &[], "after").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "after".to_string()), "the queue is not full of ghosts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_page_can_neither_deploy_through_the_browser_nor_read_answers_by_rebinding_a_name() {
    let dir = Dir::new("browser");
    dir.function("hello", "  image: x\n  command: [cat]\n  env: [{name: mode, value: streaming}]", &[]);
    let g = Gateway::start(&dir.0, &["--allowed-hosts", "gateway.example.test"]).await;
    let own = format!("http://127.0.0.1:{}", g.port);
    // What `<form enctype="text/plain" method=post action=http://127.0.0.1:8080/system/functions>`
    // on another site sends: a body that parses as JSON, and the browser's own headers.
    let attack = r#"{"service":"pwned","image":"x","envProcess":"id","x":"="}"#;
    let forms: [&[(&str, &str)]; 4] = [
        &[("content-type", "text/plain"), ("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")],
        &[("content-type", "text/plain"), ("origin", "http://evil.example")],
        &[("content-type", "text/plain"), ("origin", "null")],
        &[("content-type", "text/plain"), ("sec-fetch-site", "same-site")],
    ];
    for headers in forms {
        let r = request(Method::POST, &g.url("/system/functions"), headers, attack).await.unwrap();
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
        assert!(r.text().contains("is refused"), "{}", r.text());
    }
    let r =
        request(Method::DELETE, &g.url("/system/functions"), forms[0], r#"{"functionName":"hello"}"#).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let list = get(&g.url("/system/functions")).await.unwrap().text();
    assert!(!list.contains("pwned") && list.contains("hello"), "{list}");

    // A page at a name made to resolve to 127.0.0.1 reads nothing.
    for path in ["/system/functions", "/function/hello", "/ui/", "/healthz"] {
        let r = request(Method::GET, &g.url(path), &[("host", "rebind.evil.example")], Bytes::new()).await.unwrap();
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(r.text().contains("--allowed-hosts") && !r.text().contains("hello\n"), "{path}: {}", r.text());
    }
    for host in ["gateway.example.test:8080", "localhost", "127.0.0.1:1"] {
        let r = request(Method::GET, &g.url("/system/functions"), &[("host", host)], Bytes::new()).await.unwrap();
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }

    // curl (with or without a content type), faas-cli (Go's client) and the portal still write.
    let deploy = |name: &str| format!(r#"{{"service":"{name}","image":"x","envProcess":"cat"}}"#);
    let clients: [(&str, &[(&str, &str)]); 4] = [
        ("curl-plain", &[("user-agent", "curl/7.88.1")]),
        ("curl-json", &[("user-agent", "curl/7.88.1"), ("content-type", "application/json")]),
        ("faas-cli", &[("user-agent", "Go-http-client/1.1"), ("content-type", "application/json")]),
        (
            "portal",
            &[("origin", own.as_str()), ("sec-fetch-site", "same-origin"), ("content-type", "application/json")],
        ),
    ];
    for (name, headers) in clients {
        let r = request(Method::POST, &g.url("/system/functions"), headers, deploy(name)).await.unwrap();
        assert_eq!(r.status, 202, "{name}: {}", r.text());
    }
    let r = request(Method::POST, &g.url("/function/hello"), &[("origin", "http://any.example")], "hi").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "hi".to_string()), "invoking a function from a page is its own business");
}

const ECHO_AUTH: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/challenge":
            self.send_response(401)
            self.send_header("www-authenticate", os.environ["CHALLENGE"])
            self.send_header("content-length", "0")
            self.end_headers()
            return
        out = ("auth=" + (self.headers.get("authorization") or "")).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateways_credential_never_reaches_a_function_and_the_portal_keeps_to_itself() {
    let dir = Dir::new("credential");
    let function = |challenge: &str| {
        format!(
            "  image: x\n  command: [python3, echo.py]\n  env: [{{name: mode, value: http}}, \
             {{name: upstream_url, value: 'http://127.0.0.1:5000'}}, {{name: CHALLENGE, value: '{challenge}'}}]"
        )
    };
    dir.function("mimic", &function("Basic realm=\"Flint gateway\""), &[("echo.py", ECHO_AUTH)]);
    dir.function("own", &function("Basic realm=\"my app\""), &[("echo.py", ECHO_AUTH)]);
    let secrets = dir.0.join(".auth");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("basic-auth-user"), "admin").unwrap();
    std::fs::write(secrets.join("basic-auth-password"), "s3cret-pw").unwrap();
    let admin = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:s3cret-pw"));
    let g = Gateway::start(&dir.0, &["--basic-auth", "--secret-mount-path", secrets.to_str().unwrap()]).await;
    let caller = Caller::new();
    for f in ["mimic", "own"] {
        // The API needs the login; the functions do not.
        wait_for(&format!("{f} to answer"), SECS_20, || async {
            let r = caller.call(Method::GET, &g.url(&format!("/function/{f}/whoami")), &[], Bytes::new()).await.ok()?;
            (r.status == 200).then_some(())
        })
        .await;
    }
    let call = |path: String, auth: Option<String>| {
        let caller = caller.clone();
        async move {
            let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
            caller.call(Method::GET, &path, &headers, Bytes::new()).await.unwrap()
        }
    };

    // A browser that logged in to the portal sends the login to functions too: it is dropped.
    let r = call(g.url("/function/own/whoami"), Some(admin.clone())).await;
    assert_eq!((r.status, r.text()), (200, "auth=".to_string()));
    // A function's own credentials from its callers pass.
    let r = call(g.url("/function/own/whoami"), Some("Bearer app-token".into())).await;
    assert_eq!(r.text(), "auth=Bearer app-token");
    let other = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:hers"));
    assert_eq!(call(g.url("/function/own/whoami"), Some(other.clone())).await.text(), format!("auth={other}"));

    // A function cannot ask the browser for the gateway's login; its own challenge passes.
    let r = call(g.url("/function/mimic/challenge"), None).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_none(), "{:?}", r.headers);
    let r = call(g.url("/function/own/challenge"), None).await;
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"my app\"");

    // The portal: its own files only, never framed, no guessing of types, no referrer.
    let r = call(g.url("/ui/"), Some(admin.clone())).await;
    assert_eq!(r.status, 200);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    let r = call(g.url("/system/functions"), Some(admin)).await;
    assert_eq!(
        (r.status, &r.headers["x-content-type-options"]),
        (200, &"nosniff".parse::<hyper::header::HeaderValue>().unwrap())
    );
}
