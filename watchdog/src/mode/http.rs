//! `http` mode: the function is a long-running HTTP server (`upstream_url`); every invocation is
//! proxied to it over a pooled keep-alive connection, bodies streamed both ways.

use std::{net::SocketAddr, process::ExitStatus, sync::Arc, time::Duration};

use hyper::{Uri, body::Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{net::TcpStream, sync::watch};

use crate::{
    error::InvokeError,
    logs::Output,
    process::{self, Group},
    stack::{Req, ResFuture},
};
use http_body_util::BodyExt;

#[derive(Clone)]
pub struct Proxy(Arc<Target>);

struct Target {
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
}

impl Proxy {
    pub fn new(upstream: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Self(Arc::new(Target { client, upstream }))
    }

    pub fn call(&self, mut req: Req) -> ResFuture {
        let mut target = self.0.upstream.clone().into_parts();
        target.path_and_query = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from_parts(target).expect("upstream URL with the request's path is a URL");
        // HTTP/1.1 to the function's server whatever the caller spoke (an HTTP/2 request on an
        // HTTP/1 connection is refused, and its body could not be framed).
        *req.version_mut() = hyper::Version::HTTP_11;
        flint_http::headers::strip_hop_by_hop(req.headers_mut());
        let sent = self.0.client.request(req);
        let upstream = self.0.upstream.clone();
        Box::pin(async move {
            let mut response = sent.await.map_err(|e| InvokeError::Upstream {
                upstream: upstream.to_string(),
                reason: flint_http::error_chain(&e),
            })?;
            flint_http::headers::strip_hop_by_hop(response.headers_mut());
            Ok(response.map(|body| body.map_err(flint_http::BoxError::from).boxed_unsync()))
        })
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
