//! `flint-operator`: `run` reconciles Functions (see the library's docs for how);
//! `crd` prints the Function CRD (what `crds/function.yaml` and the Helm chart hold).

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::{Parser, Subcommand, ValueEnum};
use flint_operator::{cache, controller, metrics::Metrics, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Function CustomResourceDefinition as YAML (what crds/function.yaml holds).
    Crd,
    /// Reconcile Functions into Deployments and Services.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
struct RunArgs {
    /// Namespaces to watch (repeat or comma-separate); all when none.
    #[arg(long = "namespace", env = "FLINT_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// The gateway's base URL, for each Function's status.url.
    #[arg(long, env = "FLINT_GATEWAY_URL", default_value = "http://flint-gateway.flint.svc:8080")]
    gateway_url: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FLINT_TELEMETRY_ADDR", default_value = "0.0.0.0:8080")]
    telemetry_addr: SocketAddr,
    /// The Lease that elects one active operator.
    #[arg(long, env = "FLINT_LEASE_NAME", default_value = "flint-operator")]
    lease_name: String,
    /// The Lease's namespace (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long the Lease holds without renewal: a stopped leader's successor takes over after
    /// at most this long.
    #[arg(long, env = "FLINT_LEASE_DURATION", default_value = "30s", value_parser = lease_duration)]
    lease_duration: u64,
    #[arg(long, env = "FLINT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Whole seconds, at least 2 (the Lease's renewal needs a grace period within it).
fn lease_duration(s: &str) -> Result<u64, String> {
    let d = flint_api::duration::parse(s).map_err(|e| e.to_string())?;
    match d.as_secs() {
        n if n >= 2 => Ok(n),
        _ => Err(format!("{s} is too short: the lease needs at least 2s")),
    }
}

/// The client from the environment (in-cluster or KUBECONFIG), each request counted.
async fn client(metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        metrics.api_request(&req);
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&count).build())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", flint_api::crd::yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            // One TLS crypto provider for the whole process, before any client exists.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let builder = tracing_subscriber::fmt().with_env_filter(filter);
            match args.log_format {
                LogFormat::Json => builder.json().flatten_event(true).init(),
                LogFormat::Text => builder.init(),
            }
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            runtime.block_on(run(args))
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let metrics = Arc::new(Metrics::default());
    let client = match client(metrics.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client: run in a cluster or set KUBECONFIG");
            return ExitCode::FAILURE;
        }
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "flint-operator".into())
    });
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    tokio::spawn(telemetry::serve(args.telemetry_addr, metrics.clone(), ready.clone(), stop.clone()));

    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration)
        .with_grace((args.lease_duration / 6).max(1))
        .with_field_manager(flint_operator::resources::OPERATOR)
        .build()
        .await;
    let lease = match lease {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, lease = %args.lease_name, "cannot use the leader-election Lease");
            return ExitCode::FAILURE;
        }
    };
    let (mut leading, _lease_task) = lease.watch().await;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(%identity, lease = %args.lease_name, "waiting to lead");
    if leading.wait_for(|l| *l).await.is_err() {
        tracing::error!("leader election stopped");
        return ExitCode::FAILURE;
    }
    tracing::info!(%identity, namespaces = ?args.namespaces, "leading: reconciling Functions");
    let (cache, feeds) = cache::Cache::new(&args.namespaces);
    let ctx = Arc::new(controller::Context::new(client, cache, metrics, args.gateway_url, identity));
    tokio::select! {
        _ = controller::run(ctx, feeds) => {
            stop.cancel();
            ExitCode::SUCCESS
        }
        _ = leading.wait_for(|l| !*l) => {
            // Another replica leads now; restart and stand by rather than risk two writers.
            tracing::error!("lost the lease; exiting");
            ExitCode::FAILURE
        }
    }
}
