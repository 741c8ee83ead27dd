//! `flint-gateway`'s entry point: reads its configuration, starts the provider, the loops and
//! the server (the parts are described in `lib.rs`).

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::Parser;
use hyper::service::service_fn;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tokio_util::sync::CancellationToken;

use flint_gateway::{
    auth, autoscale, canary, client,
    config::{Args, LogFormat, Mode, ProviderKind},
    cron, invoke, metrics, namespace,
    provider::{Provider, kubernetes::Kubernetes, local::Local},
    queue::{self, Link, server::NatsServer, triggers::Triggers, worker::Worker},
    reply, rest, routes,
};

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process, before any Kubernetes client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    raise_fd_limit();
    let auth = if args.basic_auth {
        match auth::Credentials::read(&args.secret_mount_path) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if args.mode == Mode::QueueWorker {
        return queue_worker(args, auth).await;
    }
    let mut client = None;
    let mut local = None;
    let provider: Arc<dyn Provider> = match args.provider {
        ProviderKind::Local => match local_provider(&args).await {
            Some(p) => {
                local = Some(p.clone());
                p
            }
            None => return ExitCode::FAILURE,
        },
        ProviderKind::Kubernetes => {
            let c = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "no Kubernetes client: run in a cluster or set KUBECONFIG");
                    return ExitCode::FAILURE;
                }
            };
            client = Some(c.clone());
            if outside_cluster() {
                tracing::warn!(
                    "running outside the cluster: the gateway calls function pods by their IPs, which are \
                     usually unreachable from here; deploy it in the cluster (helm install) to invoke functions"
                );
            }
            let function_namespaces = args.function_namespaces.clone().unwrap_or_else(|| vec![args.namespace.clone()]);
            if !function_namespaces.contains(&args.namespace) {
                tracing::error!(
                    "--namespace {} must be one of --function-namespaces ({}): functions named without a namespace are looked up there",
                    args.namespace,
                    function_namespaces.join(", ")
                );
                return ExitCode::FAILURE;
            }
            match Kubernetes::start(c, args.namespace.clone(), function_namespaces, identity()).await {
                Ok(k) => Arc::new(k),
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let Some(listener) = listen(addr).await else { return ExitCode::FAILURE };
    let metrics = Arc::new(metrics::Metrics::new());
    let Some(callbacks) = callbacks(&args, &metrics) else { return ExitCode::FAILURE };
    let stop = CancellationToken::new();
    let Some((link, nats_server)) = nats(&args, &stop).await else { return ExitCode::FAILURE };
    let namespaces = namespace::Namespaces::new(&args.openfaas_namespace);
    let settings = invoke::Settings {
        cold_start_timeout: args.cold_start_timeout,
        max_waiting: args.max_waiting,
        max_body: (args.max_body_bytes > 0).then_some(args.max_body_bytes),
        connect_timeout: args.connect_timeout,
        idle_timeout: args.upstream_idle_timeout,
        namespaces: namespaces.clone(),
        peers: match (&client, &args.gateway_service) {
            (Some(client), Some(service)) => {
                flint_gateway::peers::Peers::watch(client.clone(), &args.lease_namespace, service)
            }
            _ => Default::default(),
        },
        unreachable_hint: (args.provider == ProviderKind::Kubernetes && outside_cluster()).then_some(
            "the gateway runs outside the cluster, where pod IPs are usually unreachable: run it in the cluster (helm install)",
        ),
    };
    let invoker = Arc::new(invoke::Invoker::new(provider.clone(), metrics.clone(), settings));
    let autoscaler = args.autoscale.then(|| {
        let window = args.panic_window.max(std::time::Duration::from_secs(3));
        type Sources = (Box<dyn autoscale::source::Source>, Box<dyn canary::Numbers>);
        let (source, canary_numbers): Sources = match &args.prometheus_url {
            Some(url) => (
                Box::new(autoscale::source::Prometheus::new(url.clone(), window)),
                Box::new(autoscale::source::Prometheus::new(url.clone(), window)),
            ),
            None => (Box::new(autoscale::source::InProcess::new(metrics.clone())), Box::new(metrics.clone())),
        };
        tracing::info!(source = source.name(), "autoscaler on");
        Arc::new(autoscale::Autoscaler {
            provider: provider.clone(),
            invoker: invoker.clone(),
            metrics: metrics.clone(),
            source,
            canary_numbers,
            params: autoscale::algorithm::Params {
                stable_window: args.stable_window,
                panic_window: args.panic_window,
                scale_down_delay: args.scale_down_delay,
                idle_cv_threshold: args.idle_cv_threshold,
                idle_bin: args.idle_bin,
                ..Default::default()
            },
            tick: args.autoscale_tick,
        })
    });
    let lanes = Arc::new(queue::worker::Lanes::default());
    let accept = queue::accept::Accept {
        provider: provider.clone(),
        namespaces: namespaces.clone(),
        link: link.clone(),
        max_body: (args.max_body_bytes > 0).then_some(args.max_body_bytes),
        metrics: metrics.clone(),
        callbacks: callbacks.clone(),
        lanes: lanes.clone(),
    };
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gateway = Arc::new(routes::Gateway {
        accept,
        api: rest::Api { provider: provider.clone(), metrics: metrics.clone(), namespaces, invoker: invoker.clone() },
        invoker,
        provider: provider.clone(),
        metrics: metrics.clone(),
        auth,
        auth_functions: args.auth_functions,
        hosts: flint_gateway::origin::Hosts::new(&args.allowed_hosts),
        draining: draining.clone(),
    });
    let own_ip = if args.bind.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { args.bind };
    let itself = client::SelfClient::here(
        gateway.clone(),
        own_ip,
        gateway.auth.as_ref().filter(|_| args.auth_functions).map(auth::Credentials::header_value),
    );
    let cron = Arc::new(cron::Cron { provider: provider.clone(), client: itself.clone() });
    tokio::spawn(take_queued(
        link.clone(),
        Some(provider.clone()),
        itself,
        (args.worker_settings(), args.async_worker),
        (metrics.clone(), callbacks),
        lanes,
        stop.clone(),
    ));
    tokio::spawn(forget_deleted(provider.clone(), metrics, stop.clone()));
    let loops = Loops { autoscaler, cron };
    let loops = match client.clone() {
        // Several gateway replicas: only the Lease holder runs the loops (each still scales
        // from zero on a request).
        Some(client) => tokio::spawn(lead_then(
            client,
            args.autoscaler_lease.clone(),
            args.lease_namespace.clone(),
            loops,
            stop.clone(),
        )),
        None => tokio::spawn(loops.run(stop.clone())),
    };
    print_banner(&*provider, addr).await;

    let make = {
        let gateway = gateway.clone();
        move |peer: SocketAddr| {
            let gateway = gateway.clone();
            service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
            })
        }
    };
    let serving =
        tokio::spawn(flint_http::server::serve(listener, make, stop.clone(), limits(&args), args.drain_timeout));
    until_stopped(|| reload(local.as_deref(), &args.functions_dir)).await;
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    if !args.shutdown_delay.is_zero() {
        tracing::info!(delay = ?args.shutdown_delay, "stopping: still serving while clients learn this replica is leaving");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    tracing::info!("stopping: finishing accepted requests");
    stop.cancel();
    if !serving.await.unwrap_or(false) {
        tracing::warn!(drain_timeout = ?args.drain_timeout, "requests still running after the drain timeout");
    }
    // The autoscaler keeps what it learned since its last write (bounded: it gives up itself).
    if tokio::time::timeout(std::time::Duration::from_secs(10), loops).await.is_err() {
        tracing::warn!("the autoscaler had not stopped 10 s after the requests were done");
    }
    provider.shutdown().await;
    if let Some(server) = nats_server {
        server.stop(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Every half minute: the metrics and the portal's history of functions that are no longer
/// deployed are dropped, so deleted functions leave nothing behind.
async fn forget_deleted(provider: Arc<dyn Provider>, metrics: Arc<metrics::Metrics>, stop: CancellationToken) {
    let reasons = autoscale::algorithm::Reason::ALL.map(autoscale::algorithm::Reason::as_str);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
            _ = stop.cancelled() => return,
        }
        let deployed = |function: &str| {
            function.split_once('.').is_some_and(|(name, namespace)| provider.route(namespace, name).is_some())
        };
        let forgotten = metrics.forget_absent(deployed, &reasons);
        if forgotten > 0 {
            tracing::debug!(forgotten, "forgot the metrics and history of deleted functions");
        }
    }
}

/// Returns on SIGTERM or SIGINT; runs `hangup` on each SIGHUP.
async fn until_stopped<F: Future<Output = ()>>(mut hangup: impl FnMut() -> F) {
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = terminate.recv() => return,
            _ = interrupt.recv() => return,
            _ = hup.recv() => hangup().await,
        }
    }
}

/// The NATS asynchronous calls and queue triggers use (see `--nats-url`), and the nats-server
/// this gateway started for it, if it did; `None` when the flags make no sense.
async fn nats(args: &Args, stop: &CancellationToken) -> Option<(Link, Option<NatsServer>)> {
    let url = match args.nats_url.as_str() {
        "off" | "" => return Some((Link::off("the gateway runs with --nats-url off"), None)),
        "auto" if args.provider == ProviderKind::Kubernetes => {
            return Some((Link::off("no NATS is configured (--nats-url; the chart's nats.enabled)"), None));
        }
        url => url,
    };
    let nats = |url: &str| args.nats(url).map_err(|e| tracing::error!("{e}")).ok();
    if url != "auto" {
        return Some((connect_in_background(nats(url)?, stop), None));
    }
    let store = args.nats_store_dir.clone().unwrap_or_else(|| args.functions_dir.join(".flint").join("nats"));
    let server = match NatsServer::start(&args.nats_server, &store).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{e}");
            return Some((Link::off(e.to_string()), None));
        }
    };
    let mut config = nats(&server.url)?;
    config.login = Some(queue::Login::Password(server.login.0.clone(), server.login.1.clone()));
    match queue::Queue::connect(&config).await {
        Ok(q) => {
            let link = Link::connecting(&server.url);
            link.set(q);
            Some((link, Some(server)))
        }
        Err(e) => {
            tracing::error!("{e}");
            Some((Link::off(e.to_string()), Some(server)))
        }
    }
}

fn connect_in_background(nats: queue::Nats, stop: &CancellationToken) -> Link {
    let link = Link::connecting(&nats.shown());
    let (l, stop) = (link.clone(), stop.clone());
    tokio::spawn(async move {
        if let Some(q) = queue::connect_patiently(&nats, &stop).await {
            l.set(q);
        }
    });
    link
}

/// Where callbacks may go (`--callback-allow`), and their sender.
fn callbacks(args: &Args, metrics: &Arc<metrics::Metrics>) -> Option<Arc<queue::callback::Callbacks>> {
    match queue::callback::Policy::parse(&args.callback_allow) {
        Ok(policy) => Some(Arc::new(queue::callback::Callbacks::new(policy, metrics.clone()))),
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    }
}

/// Once NATS is there: the asynchronous calls' lanes (unless `--async-worker false`) and, in a
/// gateway (`provider`), the queue triggers' lanes.
async fn take_queued(
    link: Link,
    provider: Option<Arc<dyn Provider>>,
    client: client::SelfClient,
    (settings, take_calls): (queue::worker::Settings, bool),
    (metrics, callbacks): (Arc<metrics::Metrics>, Arc<queue::callback::Callbacks>),
    lanes: Arc<queue::worker::Lanes>,
    stop: CancellationToken,
) {
    let queue = tokio::select! {
        q = link.wait() => match q { Some(q) => q, None => return },
        _ = stop.cancelled() => return,
    };
    let worker = Arc::new(Worker { queue, client, settings, metrics, callbacks });
    let calls = take_calls.then(|| tokio::spawn(worker.clone().run_calls(lanes, stop.clone())));
    if let Some(provider) = provider {
        Triggers { provider, worker }.run(stop).await;
    }
    if let Some(calls) = calls {
        let _ = calls.await;
    }
}

/// `--mode queue-worker`: takes asynchronous calls from NATS and invokes them through the
/// gateway at `--gateway-url`; serves `/healthz` (503 until NATS is there) and `/metrics`.
async fn queue_worker(args: Args, auth: Option<auth::Credentials>) -> ExitCode {
    let url = match args.nats_url.as_str() {
        "auto" | "off" | "" => {
            tracing::error!("a queue worker needs --nats-url (the NATS the gateway stores calls in)");
            return ExitCode::FAILURE;
        }
        url => url.to_string(),
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let Some(listener) = listen(addr).await else { return ExitCode::FAILURE };
    let stop = CancellationToken::new();
    let metrics = Arc::new(metrics::Metrics::new());
    let Some(callbacks) = callbacks(&args, &metrics) else { return ExitCode::FAILURE };
    let Ok(nats) = args.nats(&url).map_err(|e| tracing::error!("{e}")) else { return ExitCode::FAILURE };
    let shown = nats.shown();
    let link = connect_in_background(nats, &stop);
    // Functions behind basic auth: the worker calls them with the gateway's credentials.
    let client = client::SelfClient::there(
        args.gateway_url.trim_end_matches('/').to_string(),
        auth.as_ref().map(auth::Credentials::header_value),
    );
    let working = tokio::spawn(take_queued(
        link.clone(),
        None,
        client,
        (args.worker_settings(), true),
        (metrics.clone(), callbacks),
        Arc::default(),
        stop.clone(),
    ));
    tracing::info!(%addr, nats = %shown, gateway = %args.gateway_url, "queue worker");
    let make = move |_peer: SocketAddr| {
        let (link, metrics) = (link.clone(), metrics.clone());
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let response = match req.uri().path() {
                "/healthz" => match link.ready() {
                    Ok(_) => reply::text(hyper::StatusCode::OK, "OK"),
                    Err(why) => reply::text(hyper::StatusCode::SERVICE_UNAVAILABLE, why),
                },
                "/metrics" => reply::text(hyper::StatusCode::OK, metrics.encode()),
                path => reply::text(
                    hyper::StatusCode::NOT_FOUND,
                    format!("no route for {path}: a queue worker serves /healthz and /metrics"),
                ),
            };
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let serving =
        tokio::spawn(flint_http::server::serve(listener, make, stop.clone(), limits(&args), args.drain_timeout));
    until_stopped(|| async { tracing::info!("SIGHUP: nothing to reload in a queue worker") }).await;
    tracing::info!("stopping");
    stop.cancel();
    let _ = serving.await;
    let _ = working.await;
    ExitCode::SUCCESS
}

async fn listen(addr: SocketAddr) -> Option<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| tracing::error!(%addr, error = %e, "cannot listen")).ok()
}

fn limits(args: &Args) -> flint_http::server::Limits {
    flint_http::server::Limits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
    }
}

/// Whether this process runs outside a Kubernetes pod (no in-cluster service address).
fn outside_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
}

/// This replica's name in Leases and Events.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "flint-gateway".into())
}

/// The loops one gateway replica runs for all: the autoscaler (with the canary analysis) and
/// the cron triggers.
struct Loops {
    autoscaler: Option<Arc<autoscale::Autoscaler>>,
    cron: Arc<cron::Cron>,
}

impl Loops {
    async fn run(self, stop: CancellationToken) {
        let autoscaler = self.autoscaler.map(|a| tokio::spawn(a.run_shared(stop.clone())));
        self.cron.run(stop).await;
        if let Some(a) = autoscaler {
            let _ = a.await;
        }
    }
}

/// Runs the loops while this replica holds the Lease, and stops them when the Lease is lost.
async fn lead_then(client: kube::Client, lease: String, namespace: String, loops: Loops, stop: CancellationToken) {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &lease)
        .with_namespace(&namespace)
        .with_identity(identity())
        .build()
        .await;
    let manager = match manager {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, %lease, "cannot use the autoscaler's Lease: this replica will not autoscale");
            return;
        }
    };
    let (mut leading, _task) = manager.watch().await;
    loop {
        tokio::select! {
            held = leading.wait_for(|l| *l) => if held.is_err() { return },
            _ = stop.cancelled() => return,
        }
        tracing::info!(%lease, "holding the Lease: autoscaling and firing cron triggers");
        let term = stop.child_token();
        let running =
            tokio::spawn(Loops { autoscaler: loops.autoscaler.clone(), cron: loops.cron.clone() }.run(term.clone()));
        tokio::select! {
            _ = leading.wait_for(|l| !*l) => tracing::warn!(%lease, "lost the Lease: no longer autoscaling or firing cron triggers"),
            _ = stop.cancelled() => {}
        }
        term.cancel();
        let _ = running.await;
    }
}

/// SIGHUP in local mode: read the functions folder again.
async fn reload(local: Option<&Local>, dir: &std::path::Path) {
    let Some(local) = local else {
        tracing::info!("SIGHUP: nothing to reload outside local mode");
        return;
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    match local.reload(&dir).await {
        Ok((added, changed, removed)) => {
            tracing::info!(added, changed, removed, dir = %dir.display(), "reloaded the functions folder")
        }
        Err(errors) => {
            for e in errors {
                tracing::error!("{e}");
            }
            tracing::error!("reload refused: fix the manifests above; nothing was changed");
        }
    }
}

async fn local_provider(args: &Args) -> Option<Arc<Local>> {
    let watchdog = args.watchdog.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.parent().map(|d| d.join("watchdog")).unwrap_or_else(|| PathBuf::from("watchdog"))
    });
    if !watchdog.is_file() {
        // A gateway with no functions to run needs none (its container image has none).
        tracing::warn!(watchdog = %watchdog.display(), "the watchdog binary is not there: functions cannot run here (build it with cargo build --bins, or pass --watchdog)");
    }
    let dir = &args.functions_dir;
    let secrets = args.secrets_dir.clone().unwrap_or_else(|| dir.join(".secrets"));
    let workdir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let local = Local::new(watchdog, secrets, workdir.clone(), args.namespace.clone());
    match local.load_dir(&workdir).await {
        Ok(n) => tracing::info!(functions = n, dir = %workdir.display(), "local mode"),
        Err(errors) => {
            for e in errors {
                tracing::error!("{e}");
            }
            tracing::error!(dir = %dir.display(), "refusing to start: fix the manifests above");
            return None;
        }
    }
    Some(Arc::new(local))
}

/// Every client connection and every pooled replica connection is a file descriptor: take the
/// whole hard limit rather than refuse connections at the default soft one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// What a newcomer can curl, printed once at start.
async fn print_banner(provider: &dyn Provider, addr: SocketAddr) {
    let base = format!("http://{addr}");
    let mut lines = vec![format!("Flint gateway ({} provider) listening on {base}", provider.name())];
    let ns = provider.default_namespace().to_string();
    // A few to try, not a screenful per function on a gateway with thousands.
    const SHOWN: usize = 10;
    let deployed = provider.list(&ns).await.unwrap_or_default();
    for d in deployed.iter().take(SHOWN) {
        let name = d.function.metadata.name.clone().unwrap_or_default();
        lines.push(format!("  curl -d 'hello' {base}/function/{name}"));
    }
    if deployed.len() > SHOWN {
        lines.push(format!("  ... and {} more", deployed.len() - SHOWN));
    }
    lines.push(format!("  curl {base}/system/functions"));
    println!("{}", lines.join("\n"));
}
