//! The operator's own HTTP endpoints: `/metrics`, `/healthz` (the process serves), `/readyz`
//! (it is leading and reconciling, or standing by as a healthy follower).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let make = move |_| {
        let (metrics, ready) = (metrics.clone(), ready.clone());
        service_fn(move |req: Request<Incoming>| {
            let (metrics, ready) = (metrics.clone(), ready.clone());
            async move {
                let (status, body) = match req.uri().path() {
                    "/metrics" => (StatusCode::OK, metrics.encode()),
                    "/healthz" => (StatusCode::OK, "OK\n".into()),
                    "/readyz" if ready.load(Ordering::Relaxed) => (StatusCode::OK, "OK\n".into()),
                    "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into()),
                    _ => (StatusCode::NOT_FOUND, "not found\n".into()),
                };
                let mut response = Response::new(flint_http::full(body));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        })
    };
    let limits = flint_http::server::Limits::idle(Duration::from_secs(10));
    flint_http::server::serve(listener, make, stop, limits, Duration::from_secs(1)).await;
    Ok(())
}
