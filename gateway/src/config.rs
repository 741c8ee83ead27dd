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

    /// Kubernetes: the gateway's own Service; its ready endpoints are the replicas that share
    /// each function's throttle (each applies its share of `rate` and `maxInFlight`). Unset:
    /// this replica applies the whole limits.
    #[arg(long, env = "FLINT_GATEWAY_SERVICE")]
    pub gateway_service: Option<String>,

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

    /// Host names the gateway answers besides IP addresses and `localhost` (repeat or
    /// comma-separate; `*.example.com` for a domain's names; `*` for any). A request naming
    /// another host is refused (403): a web page whose name is made to resolve to this
    /// machine (DNS rebinding) cannot read the gateway's answers.
    #[arg(long, env = "FLINT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

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

    /// A client connection with no request under way this long is closed (HTTP/1 keep-alive
    /// and HTTP/2 alike).
    #[arg(long, env = "FLINT_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// A new client connection that has not sent a whole request head within this long is
    /// closed, whatever protocol it speaks (or none): silent sockets cannot hold the places of
    /// --max-connections. On a kept-alive HTTP/1 connection, a request head must be whole
    /// within this long of its first bytes.
    #[arg(long, env = "FLINT_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,

    /// Open client connections at most; one more is answered 503 (`Retry-After: 1`) and closed,
    /// and the others are served as before. Keep it below the gateway's open-file limit.
    #[arg(long, env = "FLINT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// On SIGTERM, how long to keep accepting requests (answering /healthz 503) before
    /// stopping: the time a Service's other clients take to learn this replica is leaving, so
    /// that none is refused on the way out (Kubernetes: a few seconds; the chart sets 5s).
    #[arg(long, env = "FLINT_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,

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

    /// The learned idle policy trusts a function's histogram of idle times only when the
    /// coefficient of variation of its bin counts is at least this (a flat one predicts
    /// nothing). Lower trusts more histograms: fewer cold starts, more idle replicas
    /// (`scripts/bench coldstarts` shows the trade).
    #[arg(long, env = "FLINT_IDLE_CV_THRESHOLD", default_value_t = 5.0)]
    pub idle_cv_threshold: f64,

    /// Width of a bin of the learned idle policy's histograms (240 bins). A minute in
    /// production; tests and demos shrink it to watch the policy work in seconds.
    #[arg(long, env = "FLINT_IDLE_BIN", default_value = "1m", value_parser = duration)]
    pub idle_bin: Duration,

    /// Log format.
    #[arg(long, env = "FLINT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// What this process is: the gateway, or only a queue worker taking asynchronous calls
    /// (it invokes them through --gateway-url and serves /metrics and /healthz on --port).
    #[arg(long, env = "FLINT_MODE", value_enum, default_value = "gateway")]
    pub mode: Mode,

    /// NATS with JetStream, for asynchronous invocations and queue triggers: a URL
    /// (`nats://HOST:4222`), `off`, or `auto`: local mode starts its own nats-server, and on
    /// Kubernetes `auto` is `off` (the chart passes its NATS's URL).
    #[arg(long, env = "FLINT_NATS_URL", default_value = "auto")]
    pub nats_url: String,

    /// This installation's part of the NATS server: its streams, subjects and consumers are
    /// named from it (`FLINT_<PREFIX>_CALLS`, `flint.<prefix>.async.*`), so installations that
    /// share a NATS never take each other's calls. Empty: Flint's plain names (`FLINT_CALLS`).
    /// The chart sets it from its release.
    #[arg(long, env = "FLINT_NATS_PREFIX", default_value = "")]
    pub nats_prefix: String,

    /// NATS user (with --nats-password), unless the URL holds one.
    #[arg(long, env = "FLINT_NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password. Never shown: URLs in answers and logs are written without credentials.
    #[arg(long, env = "FLINT_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// Local mode: the nats-server program `--nats-url auto` starts.
    #[arg(long, env = "FLINT_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: String,

    /// Local mode: where that nats-server keeps its streams (queued calls survive a restart).
    /// Default: `<functions-dir>/.flint/nats`.
    #[arg(long, env = "FLINT_NATS_STORE_DIR")]
    pub nats_store_dir: Option<PathBuf>,

    /// Queue worker: the gateway it invokes functions through.
    #[arg(long, env = "FLINT_GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,

    /// Gateway: take asynchronous calls in this process too (`false`: leave them to queue
    /// workers). Queue triggers are always taken by the gateways.
    #[arg(long, env = "FLINT_ASYNC_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub async_worker: bool,

    /// Invocations of one function from its queue (or one trigger) in flight at once, across
    /// all workers.
    #[arg(long, env = "FLINT_ASYNC_PARALLEL", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub async_parallel: u32,

    /// Attempts at one queued call (the first included) before it goes to the dead-letter
    /// stream; only 429, 502, 503, 504 and no answer are tried again.
    #[arg(long, env = "FLINT_ASYNC_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub async_max_attempts: u32,

    /// Wait before the second attempt, doubled for each one after.
    #[arg(long, env = "FLINT_ASYNC_BACKOFF", default_value = "1s", value_parser = duration)]
    pub async_backoff: Duration,

    /// Longest wait between two attempts.
    #[arg(long, env = "FLINT_ASYNC_BACKOFF_MAX", default_value = "60s", value_parser = duration)]
    pub async_backoff_max: Duration,

    /// A call taken by a worker that then goes silent (killed, cut off) is delivered again
    /// after this long.
    #[arg(long, env = "FLINT_ASYNC_ACK_WAIT", default_value = "30s", value_parser = duration)]
    pub async_ack_wait: Duration,

    /// Longest one attempt may take (the function's own timeout answers 504 first).
    #[arg(long, env = "FLINT_ASYNC_CALL_TIMEOUT", default_value = "30m", value_parser = duration)]
    pub async_call_timeout: Duration,

    /// Where callbacks (`X-Callback-Url`) may go besides public addresses: CIDRs, addresses or
    /// host names (repeat or comma-separate). Loopback, link-local, private and other internal
    /// ranges are refused unless listed here.
    #[arg(long, env = "FLINT_CALLBACK_ALLOW", value_delimiter = ',')]
    pub callback_allow: Vec<String>,

    /// Calls the queue holds at most; one more is refused with 429 and not stored.
    #[arg(long, env = "FLINT_ASYNC_MAX_QUEUED", default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub async_max_queued: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Gateway,
    QueueWorker,
}

impl Args {
    pub fn worker_settings(&self) -> crate::queue::worker::Settings {
        crate::queue::worker::Settings {
            parallel: self.async_parallel as usize,
            max_attempts: self.async_max_attempts,
            backoff: self.async_backoff,
            backoff_max: self.async_backoff_max.max(self.async_backoff),
            ack_wait: self.async_ack_wait.max(std::time::Duration::from_secs(1)),
            call_timeout: self.async_call_timeout,
            answer_limit: (self.max_body_bytes > 0).then_some(self.max_body_bytes as usize),
        }
    }

    /// The NATS at `url`, with this installation's names and login.
    pub fn nats(&self, url: &str) -> Result<crate::queue::Nats, String> {
        let names = crate::queue::Names::new(&self.nats_prefix).map_err(|e| e.to_string())?;
        let login = match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => Some(crate::queue::Login::Password(user.clone(), password.clone())),
            (None, None) => None,
            _ => return Err("--nats-user and --nats-password go together".into()),
        };
        Ok(crate::queue::Nats::new(url, login, names, self.async_max_queued))
    }
}
