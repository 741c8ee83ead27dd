//! Asynchronous calls on a real `nats-server -js`: functions that record every call they get,
//! a callback receiver, and the streams read back.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use flint_testkit::{Reply, Spawned, free_port, request, wait_for};
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Method};

use super::{Dir, GATEWAY, Gateway, SECS_20};

/// A function's own HTTP server (watchdog http mode) that appends each call to `calls.log`
/// (call id or body, attempt, method, path, `Order-Id`, body) and answers `FAIL_STATUS` to the
/// first `FAIL_TIMES` attempts of each call (-1: always), then 200 `attempt N: BODY`.
pub const RECORDER: &str = r#"
import http.server, os, threading, time
fails = int(os.environ.get("FAIL_TIMES", "0"))
status = int(os.environ.get("FAIL_STATUS", "503"))
delay = float(os.environ.get("DELAY", "0"))
seen, lock = {}, threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        key = self.headers.get("x-call-id") or body
        with lock:
            seen[key] = seen.get(key, 0) + 1
            attempt = seen[key]
            with open("calls.log", "a") as f:
                f.write("\t".join([key, str(attempt), self.command, self.path, self.headers.get("order-id", ""), body]) + "\n")
        if delay:
            time.sleep(delay)
        code = status if fails < 0 or attempt <= fails else 200
        out = f"attempt {attempt}: {body}".encode()
        self.send_response(code)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_PUT = do_GET = do_POST
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A recording function's manifest body: `env` as `NAME: value` pairs, `more` appended.
pub fn recorder(env: &[(&str, &str)], more: &str) -> String {
    let mut env_list = String::from("[{name: mode, value: http}, {name: upstream_url, value: 'http://127.0.0.1:5000'}");
    for (k, v) in env {
        env_list.push_str(&format!(", {{name: {k}, value: '{v}'}}"));
    }
    format!("  image: x\n  command: [python3, recorder.py]\n  env: {env_list}]\n  scale: {{min: 1, max: 1}}\n{more}")
}

/// One line of a `calls.log`.
#[derive(Debug)]
pub struct Recorded {
    pub key: String,
    pub attempt: u32,
    pub method: String,
    pub path: String,
    pub order_id: String,
    pub body: String,
}

pub fn recorded(dir: &Dir, function: &str) -> Vec<Recorded> {
    let text = std::fs::read_to_string(dir.0.join(function).join("calls.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(6, '\t').collect();
            (f.len() == 6).then(|| Recorded {
                key: f[0].into(),
                attempt: f[1].parse().unwrap(),
                method: f[2].into(),
                path: f[3].into(),
                order_id: f[4].into(),
                body: f[5].into(),
            })
        })
        .collect()
}

/// The value of one series in a metrics text; 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

pub async fn call_async(g: &Gateway, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(Method::POST, &g.url(path), headers, body.to_string()).await.unwrap()
}

pub fn call_id(r: &Reply) -> String {
    assert_eq!(r.status, 202, "{}", r.text());
    r.headers["x-call-id"].to_str().unwrap().to_string()
}

/// Requests a test's callback URL received: (path, headers, body); and how many connections
/// it accepted.
#[derive(Clone, Default)]
pub struct Hooks(pub Arc<Mutex<Vec<(String, HeaderMap, String)>>>, pub Arc<AtomicUsize>);

impl Hooks {
    /// Listens on a loopback port; answers every request 200.
    pub async fn start() -> (Hooks, SocketAddr) {
        Self::start_on("127.0.0.1:0").await
    }

    /// The same on `addr` (the test node's address, for pods to reach).
    pub async fn start_on(addr: &str) -> (Hooks, SocketAddr) {
        Self::serve(addr, true).await
    }

    /// Listens on a loopback port; answers every request 200 and closes its connection.
    pub async fn start_closing() -> (Hooks, SocketAddr) {
        Self::serve("127.0.0.1:0", false).await
    }

    async fn serve(addr: &str, keep_alive: bool) -> (Hooks, SocketAddr) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hooks = Hooks::default();
        let seen = hooks.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                seen.1.fetch_add(1, Ordering::Relaxed);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let text = String::from_utf8_lossy(&body).to_string();
                            seen.0.lock().unwrap().push((parts.uri.path().to_string(), parts.headers, text));
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::new())))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        (hooks, addr)
    }

    pub async fn wait(&self, path: &str) -> (HeaderMap, String) {
        wait_for(&format!("a callback at {path}"), Duration::from_secs(60), || async {
            self.0.lock().unwrap().iter().find(|(p, _, _)| p == path).map(|(_, h, b)| (h.clone(), b.clone()))
        })
        .await
    }
}

/// A client of the nats-server local mode started (its address from the gateway's log, its
/// login from the file only the gateway's user can read); a client without it is refused.
pub async fn local_nats(g: &Gateway, dir: &Dir) -> async_nats::Client {
    let log = g.process.log();
    let line = log.lines().find(|l| l.contains("started nats-server with JetStream")).expect("local mode started NATS");
    let url = line.split("url=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(async_nats::connect(&url).await.is_err(), "local mode's NATS lets anyone in");
    let conf = std::fs::read_to_string(dir.0.join(".flint/nats/flint-login.conf")).unwrap();
    let value = |key: &str| {
        let value = conf.lines().find_map(|l| l.trim().strip_prefix(key)).unwrap().trim();
        value.trim_matches('"').to_string()
    };
    let (user, password) = (value("user:"), value("password:"));
    async_nats::ConnectOptions::with_user_and_password(user, password).connect(&url).await.unwrap()
}

/// Every message in a stream, read from the start by a throwaway consumer.
pub async fn read_stream(
    client: async_nats::Client,
    stream: &str,
    at_least: usize,
) -> Vec<async_nats::jetstream::Message> {
    let js = jetstream::new(client);
    let consumer: jetstream::consumer::PullConsumer =
        js.get_stream(stream).await.unwrap().create_consumer(pull::Config::default()).await.unwrap();
    let mut out = Vec::new();
    let mut batch = consumer.fetch().max_messages(1000).expires(Duration::from_secs(2)).messages().await.unwrap();
    while let Some(Ok(m)) = batch.next().await {
        out.push(m);
    }
    assert!(out.len() >= at_least, "{} messages in {stream}, expected at least {at_least}", out.len());
    out
}

pub fn header(m: &async_nats::jetstream::Message, name: &str) -> String {
    m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string()).unwrap_or_default()
}

/// A gateway with NATS at `--nats-url` (in `args`), once it is connected (a gateway serves
/// before, and answers asynchronous calls 503 until then).
pub async fn with_nats(dir: &Dir, args: &[&str]) -> Gateway {
    let g = Gateway::start(&dir.0, args).await;
    g.process.wait_log("NATS JetStream ready", SECS_20).await;
    g
}

pub fn queue_worker(nats: &str, gateway: &Gateway, args: &[&str]) -> Spawned {
    let port = free_port().to_string();
    let gateway_url = gateway.url("");
    let mut all = vec!["--mode", "queue-worker", "--nats-url", nats, "--gateway-url", &gateway_url, "--port", &port];
    all.extend_from_slice(args);
    Spawned::start(GATEWAY, &all, &[("RUST_LOG", "info")])
}
