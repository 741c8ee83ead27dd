//! The accept loop: HTTP/1.1 and HTTP/2 on one port, TCP_NODELAY, a deadline for request
//! headers, and a graceful stop that lets every accepted request finish.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use hyper::{Request, Response, body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;

/// Serves `listener` until `stop`, then waits up to `drain` for accepted requests to finish.
/// `make` builds each connection's service from the peer's address. Returns whether every
/// connection finished within `drain`.
pub async fn serve<M, S>(
    listener: TcpListener,
    make: M,
    stop: CancellationToken,
    read_timeout: Duration,
    drain: Duration,
) -> bool
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
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
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), make(peer));
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(listener);
    tokio::time::timeout(drain, graceful.shutdown()).await.is_ok()
}
