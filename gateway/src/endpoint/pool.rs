//! Keep-alive connections to replicas. Each endpoint keeps its own idle connections, so they
//! leave with the replica (`Endpoint::retire`); the most recently used is reused first, and one
//! idle longer than the idle timeout is closed, so an endpoint keeps about as many as its
//! recent traffic needed.
//!
//! Unlike a general-purpose client (hyper-util's pool included), a send says how it failed: a
//! request that never left (refused or timed-out connect, a pooled connection found closed)
//! comes back whole, body and all, to go to another replica; one that was written reports
//! whether the replica reset the connection, which `invoke::resend` needs to decide whether
//! the request may be sent again.

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use flint_http::Body;
use hyper::{Request, Response, client::conn::http1};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{net::TcpStream, time::Instant};

use super::Endpoint;

type Sender = http1::SendRequest<Body>;

/// An idle connection and since when it is idle.
#[derive(Debug)]
pub struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle connections kept per replica, at most.
const MAX_IDLE: usize = 256;
/// How long a pooled connection may take to become ready before another is used.
const READY_WAIT: Duration = Duration::from_millis(200);
/// How long a replica that could not be reached is skipped where others can serve.
const UNREACHABLE_FOR: Duration = Duration::from_secs(2);

pub struct Pool {
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Connections open to all replicas.
    open: Gauge,
}

/// Why a send gave no response.
pub enum Failure {
    /// The request never left: here it is, to go to another replica.
    NotSent(Box<Request<Body>>, String),
    /// The request was written, in part or whole, and no response came. `reset`: the replica's
    /// side reset the connection (ECONNRESET, EPIPE): its socket was closed with what we sent
    /// unread, so no process read the whole request.
    Written { reason: String, reset: bool },
}

impl Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, open: Gauge) -> Arc<Self> {
        Arc::new(Pool { connect_timeout, idle_timeout, open })
    }

    pub async fn send(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Failure> {
        // A pooled connection first; one that turns out closed gives the request back.
        while let Some(mut sender) = checkout(endpoint) {
            // Just after its last response a connection may need a moment to be ready again;
            // one that was closed says so here.
            if !matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.checkin_after(endpoint, sender, response)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => {
                        // Its other idle connections are likely dead too.
                        endpoint.idle.lock().unwrap().clear();
                        return Err(written(&e.into_error()));
                    }
                },
            }
        }
        let mut sender = match self.connect(endpoint).await {
            Ok(sender) => sender,
            Err(reason) => {
                endpoint.mark_unreachable(UNREACHABLE_FOR);
                return Err(Failure::NotSent(Box::new(req), reason));
            }
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok(self.checkin_after(endpoint, sender, response)),
            Err(mut e) => match e.take_message() {
                Some(back) => Err(Failure::NotSent(Box::new(back), flint_http::error_chain(e.error()))),
                None => Err(written(&e.into_error())),
            },
        }
    }

    async fn connect(&self, endpoint: &Arc<Endpoint>) -> Result<Sender, String> {
        let addr = endpoint.addr;
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("connect to {addr}: {e}")),
            Err(_) => return Err(format!("connect to {addr}: no answer in {:?}", self.connect_timeout)),
        };
        // Connecting to a loopback port nobody listens on can pick that very port as the local
        // one and connect the socket to itself (TCP simultaneous open); Go's net package guards
        // against it the same way. It is a refused connection in disguise.
        if stream.local_addr().ok() == Some(addr) {
            return Err(format!("connect to {addr}: connected to itself (nothing listens there)"));
        }
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake with {addr}: {e}"))?;
        let open = Open::new(self.open.clone());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "replica connection ended");
            }
            drop(open);
        });
        Ok(sender)
    }

    /// The response, whose body gives the connection back to the endpoint when fully read.
    fn checkin_after(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        sender: Sender,
        response: Response<hyper::body::Incoming>,
    ) -> Response<Body> {
        let (pool, endpoint) = (self.clone(), endpoint.clone());
        response.map(|body| flint_http::client::give_back_after(body, sender, move |s| pool.checkin(&endpoint, s)))
    }

    fn checkin(&self, endpoint: &Arc<Endpoint>, sender: Sender) {
        {
            let mut idle = endpoint.idle.lock().unwrap();
            // Checked under the lock `retire` takes: nothing is pooled for a replica that left.
            if endpoint.retired_at().is_some() || idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(Idle { sender, since: Instant::now() });
        }
        if !endpoint.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(endpoint), self.idle_timeout));
        }
    }
}

/// Counts a connection as open until dropped, when its task ends and its buffers are freed.
struct Open {
    gauge: Gauge,
}

impl Open {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Open { gauge }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The most recently used open connection, so that the least used ones age out.
fn checkout(endpoint: &Endpoint) -> Option<Sender> {
    let mut idle = endpoint.idle.lock().unwrap();
    while let Some(Idle { sender, .. }) = idle.pop() {
        if !sender.is_closed() {
            return Some(sender);
        }
    }
    None
}

/// Closes an endpoint's connections once idle for `timeout`, until the endpoint is gone.
async fn sweep(endpoint: Weak<Endpoint>, timeout: Duration) {
    loop {
        tokio::time::sleep((timeout / 2).max(Duration::from_millis(100))).await;
        let Some(endpoint) = endpoint.upgrade() else { return };
        if endpoint.retired_at().is_some() {
            return;
        }
        let now = Instant::now();
        endpoint.idle.lock().unwrap().retain(|i| now.duration_since(i.since) < timeout && !i.sender.is_closed());
    }
}

fn written(e: &hyper::Error) -> Failure {
    Failure::Written { reason: flint_http::error_chain(e), reset: was_reset(e) }
}

/// Whether the connection was reset under the request (the peer's socket closed with data
/// unread: ECONNRESET, or EPIPE once its FIN was seen).
fn was_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
        {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::{BodyExt, Full};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A replica that answers `n` requests per connection with 200 "ok", counting connections.
    async fn replica() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::from_static(b"ok"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, accepted)
    }

    fn request() -> Request<Body> {
        Request::post("/").body(flint_http::full("x")).unwrap()
    }

    async fn read_all(r: Response<Body>) -> bytes::Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn connections_are_reused_and_leave_with_a_retired_endpoint() {
        let (addr, accepted) = replica().await;
        let open = Gauge::default();
        let pool = Pool::new(Duration::from_secs(1), Duration::from_secs(30), open.clone());
        let e = Endpoint::new(addr);
        for _ in 0..5 {
            assert_eq!(read_all(pool.send(&e, request()).await.ok().unwrap()).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1, "one connection, reused");
        assert_eq!(e.idle.lock().unwrap().len(), 1);
        assert_eq!(open.get(), 1, "the open connection is counted");
        e.retire();
        assert!(e.idle.lock().unwrap().is_empty(), "retiring closes idle connections");
        // A response finishing after the retirement does not pool its connection.
        let r = pool.send(&e, request()).await.ok().unwrap();
        read_all(r).await;
        assert!(e.idle.lock().unwrap().is_empty());
        flint_testkit::wait_for("the connections to be counted closed", Duration::from_secs(10), || async {
            (open.get() == 0).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (addr, _) = replica().await;
        let pool = Pool::new(Duration::from_secs(1), Duration::from_millis(300), Gauge::default());
        let e = Endpoint::new(addr);
        let responses = futures::future::join_all((0..4).map(|_| pool.send(&e, request()))).await;
        for r in responses {
            read_all(r.ok().unwrap()).await;
        }
        assert_eq!(e.idle.lock().unwrap().len(), 4);
        flint_testkit::wait_for("idle connections to close", Duration::from_secs(10), || async {
            e.idle.lock().unwrap().is_empty().then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn a_refused_connection_gives_the_request_back_and_skips_the_replica() {
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let pool = Pool::new(Duration::from_secs(1), Duration::from_secs(30), Gauge::default());
        let e = Endpoint::new(addr);
        match pool.send(&e, request()).await {
            Err(Failure::NotSent(back, reason)) => {
                assert_eq!(back.method(), hyper::Method::POST);
                assert!(reason.contains("refused"), "{reason}");
            }
            _ => panic!("expected the request back"),
        }
        assert!(!e.reachable());
    }

    #[tokio::test]
    async fn a_replica_that_never_answers_the_connect_is_given_up_after_the_connect_timeout() {
        // A listener whose accept queue is full drops further connection attempts silently, as
        // a pod behind a dropping network does.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => queued.push(s),
                _ => break,
            }
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        let pool = Pool::new(Duration::from_millis(200), Duration::from_secs(30), Gauge::default());
        let e = Endpoint::new(addr);
        match pool.send(&e, request()).await {
            Err(Failure::NotSent(_, reason)) => assert!(reason.contains("no answer in 200ms"), "{reason}"),
            _ => panic!("expected the request back"),
        }
        assert!(!e.reachable(), "a silent replica is skipped for a while");
        drop(listener);
    }

    #[tokio::test]
    async fn a_replica_that_reads_nothing_and_closes_resets_the_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, waits for the request to arrive, then closes without reading it: the kernel
        // answers with a reset, as for a replica killed with the request in its socket.
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 1];
            assert_eq!(stream.peek(&mut first).await.unwrap(), 1, "the request arrived");
            drop(stream);
        });
        let pool = Pool::new(Duration::from_secs(1), Duration::from_secs(30), Gauge::default());
        match pool.send(&Endpoint::new(addr), request()).await {
            Err(Failure::Written { reset, reason }) => assert!(reset, "{reason}"),
            _ => panic!("expected a written, reset request"),
        }
    }

    #[tokio::test]
    async fn a_replica_that_reads_the_request_then_closes_is_not_a_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\nx") {
                let n = stream.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            stream.shutdown().await.unwrap();
        });
        let pool = Pool::new(Duration::from_secs(1), Duration::from_secs(30), Gauge::default());
        match pool.send(&Endpoint::new(addr), request()).await {
            Err(Failure::Written { reset, reason }) => assert!(!reset, "{reason}"),
            _ => panic!("expected a written request without a reset"),
        }
    }
}
