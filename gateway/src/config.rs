//! Flags, each also settable from the environment (OpenFaaS's names where an OpenFaaS user
//! would look for them: `basic_auth`, `secret_mount_path`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// Functions as watchdog processes on this machine, read from --functions-dir.
    Local,
    /// Functions as Function resources in a Kubernetes cluster. Run the gateway in the cluster:
    /// it calls pods by their IPs (with a KUBECONFIG from outside, the REST API works but
    /// invocations cannot reach the pods).
    Kubernetes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    flint_api::duration::parse(s).map_err(|e| e.to_string())
}

/// The Flint gateway: routes /function/NAME to ready replicas and serves the OpenFaaS REST API.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Where functions run.
    #[arg(long, env = "FLINT_PROVIDER", value_enum, default_value = "local")]
    pub provider: ProviderKind,

    /// Local mode: the folder of Function manifests (each `*/function.yaml`, and `*.yaml`).
    #[arg(long, env = "FLINT_FUNCTIONS_DIR", default_value = "examples")]
    pub functions_dir: PathBuf,

    /// Local mode: the watchdog binary. Default: `watchdog` beside this binary.
    #[arg(long, env = "FLINT_WATCHDOG")]
    pub watchdog: Option<PathBuf>,

    /// Local mode: secrets, one folder per Secret holding one file per key.
    /// Default: `<functions-dir>/.secrets`.
    #[arg(long, env = "FLINT_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// The namespace OpenFaaS clients name when their user names none (faas-cli calls
    /// `/function/NAME.openfaas-fn`): read as --namespace unless functions live in a namespace
    /// of that name. Empty: no alias.
    #[arg(long, env = "FLINT_OPENFAAS_NAMESPACE", default_value = "openfaas-fn")]
    pub openfaas_namespace: String,

    /// Kubernetes: the namespaces whose functions this gateway serves — routes, lists, scales,
    /// fires and analyses — and the REST API deploys, changes and deletes (repeat or
    /// comma-separate; default: --namespace only). A function namespace may mount
    /// its Secrets into functions, so a holder of the API's password must not reach others.
    #[arg(long, env = "FLINT_FUNCTION_NAMESPACES", value_delimiter = ',')]
    pub function_namespaces: Option<Vec<String>>,

    /// Kubernetes: the Lease that elects the one gateway replica running the autoscaler.
    #[arg(long, env = "FLINT_AUTOSCALER_LEASE", default_value = "flint-gateway-autoscaler")]
    pub autoscaler_lease: String,

    /// Kubernetes: the namespace of that Lease (the gateway's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Namespace of functions named without one.
    #[arg(long, env = "FLINT_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Address to listen on.
    #[arg(long, env = "FLINT_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Port to listen on.
    #[arg(long, env = "port", default_value_t = 8080)]
    pub port: u16,

    /// Require basic auth on /system/* (credentials from --secret-mount-path).
    #[arg(long, env = "basic_auth", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub basic_auth: bool,

    /// Folder holding `basic-auth-user` and `basic-auth-password`.
    #[arg(long, env = "secret_mount_path", default_value = "/var/openfaas/secrets")]
    pub secret_mount_path: PathBuf,

    /// Require basic auth on /function/* too.
    #[arg(long, env = "FLINT_AUTH_FUNCTIONS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auth_functions: bool,

    /// Largest invocation request body in bytes (413 beyond); 0: no limit.
    #[arg(long, env = "FLINT_MAX_BODY_BYTES", default_value_t = 0)]
    pub max_body_bytes: u64,

    /// Longest a request waits for a function at zero replicas to start (then 503).
    #[arg(long, env = "FLINT_COLD_START_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub cold_start_timeout: Duration,

    /// Longest a connection to a replica may take to open; then another replica is tried and
    /// the silent one is skipped for a moment.
    #[arg(long, env = "FLINT_CONNECT_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Keep-alive connections to a replica idle this long are closed.
    #[arg(long, env = "FLINT_UPSTREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub upstream_idle_timeout: Duration,

    /// Requests that may wait for one function version to start; more get 429.
    #[arg(long, env = "FLINT_MAX_WAITING", default_value_t = 1000)]
    pub max_waiting: usize,

    /// A client's keep-alive connection with no request under way this long is closed; a
    /// request's headers must also arrive within it.
    #[arg(long, env = "FLINT_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Open client connections at most; one more is answered 503 (`Retry-After: 1`) and closed,
    /// and the others are served as before. Keep it below the gateway's open-file limit.
    #[arg(long, env = "FLINT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// How long accepted requests may take to finish when the gateway stops.
    #[arg(long, env = "FLINT_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Run the autoscaler (scale each function between scale.min and scale.max) and, with it,
    /// the canary analysis: with `false`, canary weights stay as written.
    #[arg(long, env = "FLINT_AUTOSCALE", default_value_t = true, action = clap::ArgAction::Set)]
    pub autoscale: bool,

    /// Prometheus to read request metrics from (it must scrape this gateway's /metrics).
    /// Without it, the autoscaler reads the gateway's in-process counters.
    #[arg(long, env = "FLINT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// How often the autoscaler decides.
    #[arg(long, env = "FLINT_AUTOSCALE_TICK", default_value = "1s", value_parser = duration)]
    pub autoscale_tick: Duration,

    /// The autoscaler's averaging window for steady load.
    #[arg(long, env = "FLINT_STABLE_WINDOW", default_value = "60s", value_parser = duration)]
    pub stable_window: Duration,

    /// The autoscaler's short window for bursts.
    #[arg(long, env = "FLINT_PANIC_WINDOW", default_value = "6s", value_parser = duration)]
    pub panic_window: Duration,

    /// How long lower replica counts must be asked for before scaling down.
    #[arg(long, env = "FLINT_SCALE_DOWN_DELAY", default_value = "30s", value_parser = duration)]
    pub scale_down_delay: Duration,

    /// Log format.
    #[arg(long, env = "FLINT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
