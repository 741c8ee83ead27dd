//! `http` mode: the function is a long-running HTTP server (`upstream_url`); every invocation is
//! proxied to it over a keep-alive connection, bodies streamed both ways.
//!
//! The connections are kept here (`flint_http::client::Idle`), over hyper's own HTTP/1 client
//! connections: the one server needs no general-purpose pool (hyper-util's keys, locks and
//! checkout futures were a tenth of the watchdog's work per request). An idle connection is
//! reused most recent first; one the server closed is skipped; one idle longer than
//! `IDLE_TIMEOUT` is closed when it is next seen.

use std::{net::SocketAddr, process::ExitStatus, sync::Arc, time::Duration};

use flint_http::client::{Idle, give_back_after};
use hyper::{
    Uri,
    body::Incoming,
    client::conn::http1::{self, SendRequest},
    header::{HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::watch};

use crate::{
    error::InvokeError,
    logs::Output,
    process::{self, Group},
    stack::{Req, ResFuture},
};

/// Connections to the function's server idle this long are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone)]
pub struct Proxy(Arc<Target>);

struct Target {
    upstream: Uri,
    addr: SocketAddr,
    /// The Host a request without one is sent with.
    host: HeaderValue,
    /// The function's own callers bound how many.
    idle: Idle<(), Incoming>,
}

impl Proxy {
    /// A proxy to `upstream`, whose address is `addr`.
    pub fn new(upstream: Uri, addr: SocketAddr) -> Self {
        let host = upstream.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let host = host.unwrap_or_else(|| HeaderValue::from_str(&addr.to_string()).expect("an address"));
        Self(Arc::new(Target { upstream, addr, host, idle: Idle::new(usize::MAX, IDLE_TIMEOUT) }))
    }

    pub fn call(&self, mut req: Req) -> ResFuture {
        // Origin form: the path and query only, as a client sends them to a server.
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
        // HTTP/1.1 to the function's server whatever the caller spoke (an HTTP/2 request on an
        // HTTP/1 connection is refused, and its body could not be framed).
        *req.version_mut() = hyper::Version::HTTP_11;
        flint_http::headers::strip_hop_by_hop(req.headers_mut());
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.0.host.clone());
        }
        let target = self.0.clone();
        Box::pin(async move {
            let failed = |reason: String| InvokeError::Upstream { upstream: target.upstream.to_string(), reason };
            let sent = target.idle.send(&(), req, || target.connect()).await;
            let (mut response, sender, _) = sent.map_err(|(_, e)| failed(flint_http::error_chain(&*e)))?;
            flint_http::headers::strip_hop_by_hop(response.headers_mut());
            let pool = target.clone();
            Ok(response.map(|body| give_back_after(body, sender, move |s| pool.idle.checkin((), s))))
        })
    }
}

impl Target {
    async fn connect(&self) -> Result<SendRequest<Incoming>, String> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| flint_http::error_chain(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection to the function's server ended");
            }
        });
        Ok(sender)
    }
}

/// The function's server process.
pub struct Upstream {
    pub group: Group,
    /// Becomes `Some` when the process has exited.
    pub exited: watch::Receiver<Option<ExitStatus>>,
}

/// Starts `argv` as the function's server, forwarding its output.
pub fn start(argv: &[String], out: &Output) -> std::io::Result<Upstream> {
    let mut child = process::command(argv).spawn()?;
    let group = Group::of(&child).expect("a just-spawned child has a pid");
    process::forward(child.stdout.take().unwrap(), "stdout", out.clone(), None);
    process::forward(child.stderr.take().unwrap(), "stderr", out.clone(), None);
    let (tx, exited) = watch::channel(None);
    tokio::spawn(async move {
        let status = child.wait().await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not wait for the function's process");
            std::os::unix::process::ExitStatusExt::from_raw(1 << 8)
        });
        let _ = tx.send(Some(status));
    });
    Ok(Upstream { group, exited })
}

/// Waits until `addr` accepts connections, polling quickly at first: readiness latency is part
/// of every cold start.
pub async fn wait_accepting(addr: SocketAddr) {
    let mut pause = Duration::from_millis(1);
    while TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The socket address of an http:// URL (resolving a host name once).
pub async fn socket_addr(uri: &Uri) -> std::io::Result<SocketAddr> {
    let host = uri.host().unwrap_or("127.0.0.1");
    let port = uri.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address")))
}
