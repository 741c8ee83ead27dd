//! The watchdog's entry point: configuration, the function's process, the server and the
//! shutdown sequence (the parts are described in `lib.rs`).

use std::{convert::Infallible, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use hyper::{Request, body::Incoming, service::service_fn};
use nix::sys::signal::Signal;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use flint_watchdog::{
    config::{Config, Mode},
    health::Health,
    logs,
    metrics::Metrics,
    mode::{self, Invoke},
    stack,
};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("watchdog: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let (out, _flush_on_exit) = logs::init(config.log_json, config.prefix_logs);
    // One thread: a replica is usually given at most a core, the proxy is bound by the kernel's
    // socket work, and measured here a single-threaded runtime beats work-stealing (no cross-
    // thread wake-ups) while keeping the idle footprint small. Scale out with replicas.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(config, out))
}

async fn run(config: Config, out: logs::Output) -> ExitCode {
    let bind = |port| SocketAddr::new(config.bind, port);
    let (listener, metrics_listener) =
        match tokio::try_join!(TcpListener::bind(bind(config.port)), TcpListener::bind(bind(config.metrics_port))) {
            Ok(listeners) => listeners,
            Err(e) => {
                tracing::error!(error = %e, port = config.port, metrics_port = config.metrics_port, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new());

    let (invoke, upstream) = match config.mode {
        Mode::Streaming => {
            health.set_upstream_ready();
            (
                Invoke::Streaming(mode::streaming::Fork::new(
                    config.fprocess.clone(),
                    config.content_type.as_deref(),
                    config.stderr_in_body,
                    out.clone(),
                )),
                None,
            )
        }
        Mode::Http => {
            let url = config.upstream.clone().expect("config requires upstream_url in http mode");
            let upstream = match mode::http::start(&config.fprocess, &out) {
                Ok(upstream) => upstream,
                Err(e) => {
                    tracing::error!(error = %e, fprocess = ?config.fprocess, "cannot start the function's process");
                    return ExitCode::FAILURE;
                }
            };
            let addr = match mode::http::socket_addr(&url).await {
                Ok(addr) => addr,
                Err(e) => {
                    tracing::error!(error = %e, upstream_url = %url, "cannot resolve upstream_url");
                    return ExitCode::FAILURE;
                }
            };
            let ready = health.clone();
            tokio::spawn(async move {
                mode::http::wait_accepting(addr).await;
                ready.set_upstream_ready();
                tracing::info!(upstream_url = %addr, "the function's server accepts connections; ready");
            });
            (Invoke::Http(mode::http::Proxy::new(url, addr)), Some(upstream))
        }
    };

    let stack = stack::build(&config, invoke, metrics.clone());
    let routes = {
        let health = health.clone();
        service_fn(move |req: Request<Incoming>| {
            let answer = health.respond(req.uri().path());
            let stack = stack.clone();
            async move {
                match answer {
                    Some(response) => Ok::<_, Infallible>(response),
                    None => stack.oneshot(req).await,
                }
            }
        })
    };
    let metrics_routes = service_fn(move |_req: Request<Incoming>| {
        let text = metrics.encode();
        async move {
            let mut response = hyper::Response::new(flint_http::full(text));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            Ok::<_, Infallible>(response)
        }
    });

    if std::process::id() == 1 {
        tokio::spawn(reap_orphans());
    }
    let stop = CancellationToken::new();
    let serving = tokio::spawn(flint_http::server::serve(
        listener,
        move |_| routes.clone(),
        stop.clone(),
        flint_http::server::Limits::idle(config.read_timeout),
        config.write_timeout,
    ));
    let stop_metrics = CancellationToken::new();
    tokio::spawn(flint_http::server::serve(
        metrics_listener,
        move |_| metrics_routes.clone(),
        stop_metrics.clone(),
        flint_http::server::Limits::idle(config.read_timeout),
        Duration::ZERO,
    ));
    tracing::info!(mode = ?config.mode, port = config.port, metrics_port = config.metrics_port, fprocess = ?config.fprocess, "watchdog started");

    let mut exited = upstream.as_ref().map(|u| u.exited.clone());
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let process_died = async {
        match &mut exited {
            Some(exited) => exited.wait_for(Option::is_some).await.map(|s| *s).ok().flatten(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = process_died => {
            health.set_dead();
            let description = status.map(flint_http::exit::describe).unwrap_or_else(|| "ended".into());
            tracing::error!(status = %description, "the function's process exited; the watchdog stops");
            let code = status.and_then(|s| s.code()).filter(|c| *c != 0).unwrap_or(1);
            return ExitCode::from(code.clamp(1, 255) as u8);
        }
        _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
        _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
    }

    health.set_draining();
    tokio::time::sleep(config.healthcheck_interval).await;
    stop.cancel();
    let clean = serving.await.unwrap_or(false);
    if !clean {
        tracing::warn!(write_timeout = ?config.write_timeout, "requests still running after write_timeout; stopping anyway");
    }
    stop_metrics.cancel();
    if let Some(upstream) = upstream {
        stop_process(upstream).await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGTERM to the function's process group, SIGKILL after 5 s.
async fn stop_process(mut upstream: mode::http::Upstream) {
    upstream.group.signal(Signal::SIGTERM);
    let exited = tokio::time::timeout(Duration::from_secs(5), upstream.exited.wait_for(Option::is_some)).await;
    if exited.is_err() {
        tracing::warn!("the function's process ignored SIGTERM for 5s; killing it");
    }
    // Dropping the group kills whatever is left of it.
}

/// PID 1 of a container: reaps the orphans it adopts, at each SIGCHLD and every few seconds
/// (signals that arrive together are delivered once).
async fn reap_orphans() {
    let mut children = signal(SignalKind::child()).expect("SIGCHLD handler");
    loop {
        tokio::select! {
            _ = children.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let reaped = flint_watchdog::process::reap_orphans();
        if reaped > 0 {
            tracing::debug!(reaped, "reaped orphaned processes");
        }
    }
}
