//! The accept loop: HTTP/1.1 and HTTP/2 on one port, TCP_NODELAY, an idle timeout, a cap on
//! open connections, and a graceful stop that lets every accepted request finish.

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
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

use crate::body::Body;

/// What one listener allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// An HTTP/1 connection with no request under way for this long is closed (its request
    /// headers must also arrive within it).
    pub idle_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Limits {
    /// An idle timeout and room for as many connections as the process has file descriptors.
    pub fn idle(idle_timeout: Duration) -> Self {
        Limits { idle_timeout, max_connections: Semaphore::MAX_PERMITS }
    }
}

/// What a connection beyond the cap is told before it is closed.
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
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper arms the header timeout as soon as it waits for a request, so it is the idle timeout.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    let graceful = GracefulShutdown::new();
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
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), make(peer));
                let connection = graceful.watch(connection.into_owned());
                let refused = refused.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
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
    tokio::time::timeout(drain, graceful.shutdown()).await.is_ok()
}

/// Tells a connection beyond the cap why it is closed. Reading what the client sent before
/// closing keeps the kernel from answering it with a reset that could discard the 503.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(FULL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
