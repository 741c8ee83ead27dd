//! The accept loop: HTTP/1.1 and HTTP/2 on one port, TCP_NODELAY, a deadline for a new
//! connection's first request, an idle timeout for both protocols, a cap on open connections,
//! and a graceful stop that lets every accepted request finish. `connection` serves one
//! connection (and parks idle HTTP/1 ones without hyper's buffers); `socket` is what lets it.
//!
//! Every connection holds a place among `max_connections`, so a connection that holds one
//! without asking anything is closed: one that has not sent a whole request head within
//! `header_timeout` of being accepted (whatever it sent: nothing, half an HTTP/1 head, the
//! first bytes of the HTTP/2 preface), and one with no request under way for `idle_timeout`
//! (an HTTP/1 connection is closed while parked; an HTTP/2 one is sent a GOAWAY, then closed
//! if the client does not go). Once it has begun, a request head must be whole within
//! `header_timeout`.

mod connection;
mod socket;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hyper::{Request, Response, body::Incoming, service::Service};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::body::Body;

/// What one listener allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A new connection must have sent a whole request head within this long, or it is closed.
    pub header_timeout: Duration,
    /// A connection with no request under way for this long is closed (on HTTP/1 a later
    /// request's head must also arrive within it).
    pub idle_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Limits {
    /// One timeout for the first request and for idleness, and room for as many connections
    /// as the process has file descriptors.
    pub fn idle(idle_timeout: Duration) -> Self {
        Limits { header_timeout: idle_timeout, idle_timeout, max_connections: Semaphore::MAX_PERMITS }
    }
}

/// What a connection beyond the cap is told before it is closed.
/// Most of a refused connection's request head read before it is answered.
const MAX_REFUSED_HEAD: usize = 16 * 1024;

const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 60\r\n\r\n\
too many open connections to this server; retry in a moment\n";

/// Serves `listener` until `stop`, then waits up to `drain` for accepted requests to finish.
/// `make` builds each connection's service from the peer's address. Returns whether every
/// connection finished within `drain`.
pub async fn serve<M, S>(
    listener: TcpListener,
    make: M,
    stop: CancellationToken,
    limits: Limits,
    drain: Duration,
) -> bool
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let protocols = Arc::new(connection::Protocols::new(limits));
    let connections = TaskTracker::new();
    let places = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let refused = Arc::new(AtomicU64::new(0));
    // Refusing takes a task for up to a second; beyond these many at once, close without a word.
    let refusing = Arc::new(Semaphore::new(256));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(place) = places.clone().try_acquire_owned() else {
                    if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(max = limits.max_connections, "open connections at the cap: refusing new ones");
                    }
                    if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse(stream).await;
                            drop(refusal);
                        });
                    }
                    continue;
                };
                let service = make(peer);
                let (protocols, refused, stop) = (protocols.clone(), refused.clone(), stop.clone());
                connections.spawn(async move {
                    connection::serve(stream, service, &protocols, &stop).await;
                    drop(place);
                    let n = refused.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        tracing::warn!(refused = n, "open connections below the cap again");
                    }
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(listener);
    connections.close();
    tokio::time::timeout(drain, connections.wait()).await.is_ok()
}

/// Tells a connection beyond the cap why it is closed, after its request head: a client takes
/// an answer that comes before its request as a broken server (hyper's: `UnexpectedMessage`),
/// and one answered at accept had, about one time in two, not written yet. Reading what the
/// client sent before closing keeps the kernel from answering it with a reset that could
/// discard the 503. A client that sends nothing is closed after a second, unanswered.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REFUSED_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(FULL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
