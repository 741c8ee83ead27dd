//! `flint-bench`: Flint's performance figures, measured as ratios within one run so that the
//! machine's speed cancels out. `scripts/bench` builds release binaries and runs it.
//!
//! - `watchdog`: direct to a fast upstream vs. through the watchdog (http mode) at 1, 16 and 64
//!   connections, alternating; the watchdog's idle RSS, time to ready, and binary size;
//!   `--baseline DIR` adds another build's watchdog to the same run;
//! - `gateway`: direct vs. nginx (the yardstick for one hop) vs. the gateway's hop on its own
//!   vs. the watchdog's vs. gateway+watchdog (local mode) at 1, 16 and 64 connections; the
//!   gateway's idle RSS; 10,000 idle keep-alive connections held by nginx, the watchdog and the
//!   gateway; `--baseline DIR` adds another build's gateway+watchdog;
//! - `coldstart`: platform overhead of a request at zero replicas; load step to scale-up;
//! - `coldstarts`: idle policies (fixed idle times, the learned one) on a synthetic trace of
//!   1,000 functions over two weeks, through the autoscaler's decision code on a simulated clock;
//! - `operator`: desired state for 1,000 Functions, and the memory of caching them; then, on a
//!   real API server when there is one, the operator reconciling them (times, memory, API
//!   requests, writes once settled);
//! - `kubernetes`: on the test node (real control plane, pods as processes): cold start split
//!   by step, and requests per second through the kubernetes provider vs. local mode;
//! - `images`: every image built from the release binaries (time, compressed sizes, layers),
//!   and on the test node a cold start as a container against the same function as a process;
//! - `soak`: minutes of mixed traffic in local mode (steady load, bursts, idle gaps to zero,
//!   a canary forward and back, SIGHUP reloads, replicas killed): errors by status, latency per
//!   phase, the gateway's memory over time;
//! - `async`: asynchronous calls stored per second vs. synchronous calls, and end to end
//!   (POST → worker → function → callback) at 1, 16 and 64 callers, with the gateway's and
//!   nats-server's CPU per result; `--baseline DIR` adds another build's end to end;
//! - `many`: a gateway with 10,000 functions deployed and scaled to zero beside one with a
//!   single function: memory per function, list times, idle CPU, a warm function's latency;
//!   in local mode, or with `--kubernetes` on the test node;
//! - `portal`: the portal's function list with 200 functions, first shown in Chromium;
//! - `profile`: perf's busiest functions in the watchdog or the gateway under load;
//! - `upstream`: the fast upstream itself (started by the watchdog as its `fprocess`).

mod cold;
mod coldstarts;
mod idle;
mod images;
mod kubernetes;
mod many;
mod nginx;
mod operator;
mod operator_api;
mod portal;
mod profile;
mod queue;
mod soak;
mod upstream;
mod wrk;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use flint_testkit::{Spawned, cpu_times, free_port, get, rss, wait_for};
use nix::unistd::Pid;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `hello` on 127.0.0.1:PORT as fast as hyper can.
    Upstream { port: u16 },
    /// Direct vs. through the watchdog.
    Watchdog {
        /// Seconds of load per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds per connection count (the targets alternate within a round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Another build's release binaries (a folder), measured in the same run as "before".
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// Where the watchdog's or the gateway's time goes under load (perf; a build with symbols).
    Profile {
        /// watchdog or gateway
        what: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Idle policies on a synthetic trace: cold starts against wasted replica-hours.
    Coldstarts {
        #[arg(long, default_value_t = 1000)]
        functions: usize,
        #[arg(long, default_value_t = 14)]
        days: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Cold-start overhead and load-step-to-scale-up time (local mode).
    Coldstart {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// The operator's desired-state computation and cache memory for many Functions, and the
    /// operator at that scale on a real API server (KUBEBUILDER_ASSETS or FLINT_TEST_KUBECONFIG).
    Operator {
        #[arg(long, default_value_t = 1000)]
        functions: usize,
        /// Seconds to watch the settled operator for writes.
        #[arg(long, default_value_t = 60)]
        idle: u64,
    },
    /// On the test node (KUBEBUILDER_ASSETS, root): cold start by step, and requests per second
    /// through the kubernetes provider vs. local mode vs. the pod's watchdog.
    Kubernetes {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Cold starts to measure.
        #[arg(long, default_value_t = 10)]
        cold: usize,
    },
    /// Images built from the release binaries (time, sizes, layers); on the test node
    /// (KUBEBUILDER_ASSETS, root), a cold start as a container against one as a process.
    Images {
        /// Cold starts of each kind to measure.
        #[arg(long, default_value_t = 5)]
        cold: usize,
    },
    /// Minutes of mixed traffic in local mode; errors, latency per phase, memory over time.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Asynchronous calls: stored per second vs. synchronous calls, and end-to-end latency.
    Async {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Another build's release binaries (flint-gateway, watchdog), measured end to end too.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Numbers of connections (callers) measured, in order.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        callers: Vec<usize>,
    },
    /// Many functions deployed and scaled to zero on one gateway, against one: local mode, or
    /// with `--kubernetes` on the test node (KUBEBUILDER_ASSETS, root).
    Many {
        #[arg(long, default_value_t = 10_000)]
        functions: usize,
        #[arg(long)]
        kubernetes: bool,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The portal's function list in Chromium: time to first show it.
    Portal {
        #[arg(long, default_value_t = 200)]
        functions: usize,
        #[arg(long, default_value_t = 5)]
        loads: usize,
    },
    /// Direct vs. watchdog vs. gateway+watchdog, and the gateway's footprint.
    Gateway {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Idle keep-alive connections to hold.
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Another build's release binaries (a folder), measured in the same run as "before".
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
}

pub fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join(name)
}

#[tokio::main]
async fn main() {
    idle::raise_fd_limit();
    match Cli::parse().command {
        Command::Upstream { port } => upstream::serve(port).await,
        Command::Watchdog { seconds, rounds, baseline } => {
            watchdog(Duration::from_secs(seconds), rounds, baseline).await
        }
        Command::Operator { functions, idle } => {
            operator::run(functions);
            operator_api::run(functions, Duration::from_secs(idle)).await;
        }
        Command::Coldstart { rounds } => cold::run(rounds).await,
        Command::Profile { what, seconds } => profile::run(&what, Duration::from_secs(seconds)).await,
        Command::Coldstarts { functions, days, seed } => coldstarts::run(functions, days, seed),
        Command::Kubernetes { seconds, rounds, cold } => {
            kubernetes::run(Duration::from_secs(seconds), rounds, cold).await
        }
        Command::Images { cold } => images::run(cold).await,
        Command::Soak { minutes } => soak::run(Duration::from_secs(minutes * 60)).await,
        Command::Many { functions, seconds, rounds, kubernetes: false } => {
            many::run(functions, Duration::from_secs(seconds), rounds).await
        }
        Command::Many { functions, seconds, rounds, kubernetes: true } => {
            many::kubernetes(functions, Duration::from_secs(seconds), rounds).await
        }
        Command::Portal { functions, loads } => portal::run(functions, loads).await,
        Command::Async { seconds, rounds, baseline, callers } => {
            queue::run(Duration::from_secs(seconds), rounds, baseline, &callers).await
        }
        Command::Gateway { seconds, rounds, idle, baseline } => {
            gateway(Duration::from_secs(seconds), rounds, idle, baseline).await
        }
    }
}

/// The upstream behind a watchdog in http mode, both on fresh loopback ports.
pub struct Behind {
    watchdog: Spawned,
    upstream_port: u16,
    port: u16,
}

impl Behind {
    /// The watchdog as a `compare` target, its own process the hop.
    fn target(&self, label: &str) -> Target {
        target(label, format!("http://127.0.0.1:{}/", self.port)).hop([self.watchdog.pid()])
    }
}

pub async fn start_watchdog(binary: &std::path::Path) -> Behind {
    let me = std::env::current_exe().unwrap();
    let (upstream_port, port, metrics_port) = (free_port(), free_port(), free_port());
    let fprocess = format!("{} upstream {upstream_port}", me.display());
    let upstream_url = format!("http://127.0.0.1:{upstream_port}");
    let (p, m) = (port.to_string(), metrics_port.to_string());
    let watchdog = Spawned::start(
        binary.to_str().unwrap(),
        &[],
        &[
            ("mode", "http"),
            ("fprocess", &fprocess),
            ("upstream_url", &upstream_url),
            ("port", &p),
            ("metrics_port", &m),
            ("bind_address", "127.0.0.1"),
            ("exec_timeout", "30s"),
            // Idle connections held for the idle-connection figure stay open through it.
            ("read_timeout", "60s"),
            ("RUST_LOG", "warn"),
        ],
    );
    let ready = format!("http://127.0.0.1:{port}/_/ready");
    wait_for("the watchdog to be ready", Duration::from_secs(10), || async {
        get(&ready).await.ok().filter(|r| r.status == 200)
    })
    .await;
    Behind { watchdog, upstream_port, port }
}

/// One thing `compare` loads.
pub struct Target {
    label: String,
    url: String,
    /// The processes that make up the hop: their CPU time per request is shown beside its rate
    /// (on a machine that the load, the upstream and the hop share, what a hop costs is what
    /// decides its rate).
    hop: Vec<Pid>,
}

pub fn target(label: impl Into<String>, url: impl Into<String>) -> Target {
    Target { label: label.into(), url: url.into(), hop: Vec::new() }
}

impl Target {
    fn hop(mut self, pids: impl IntoIterator<Item = Pid>) -> Self {
        self.hop.extend(pids);
        self
    }
}

/// One load of one target: wrk's figures, and its hop's CPU microseconds per request (user, kernel).
struct Run {
    load: wrk::Load,
    cpu_us: Option<(f64, f64)>,
}

fn run(target: &Target, conns: usize, duration: Duration) -> Run {
    let used = || {
        target
            .hop
            .iter()
            .map(|pid| cpu_times(*pid))
            .fold((Duration::ZERO, Duration::ZERO), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let before = used();
    let load = wrk::run(&target.url, conns, duration);
    let after = used();
    let per_request = |a: Duration, b: Duration| (b - a).as_secs_f64() * 1e6 / load.requests.max(1) as f64;
    let cpu_us = (!target.hop.is_empty()).then(|| (per_request(before.0, after.0), per_request(before.1, after.1)));
    Run { load, cpu_us }
}

/// Loads every target in turn, round after round, and prints medians with ratios to the first.
fn compare(targets: &[Target], duration: Duration, rounds: usize) {
    println!(
        "# {rounds} rounds x {}s per point, targets alternating; ratio = rps / rps of {}; cpu/req = the hop's own \
         processes' CPU per request, user + kernel",
        duration.as_secs(),
        targets[0].label
    );
    println!(
        "{:>5} {:>24} {:>10} {:>7} {:>9} {:>10} {:>9} {:>7} {:>16}",
        "conns", "target", "rps", "ratio", "p50", "added p50", "p99", "errors", "cpu/req"
    );
    for conns in [1, 16, 64] {
        let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, target) in targets.iter().enumerate() {
                runs[i].push(run(target, conns, duration));
            }
        }
        let medians: Vec<(wrk::Load, String)> =
            runs.iter().map(|r| (median(&r.iter().map(|r| r.load).collect::<Vec<_>>()), median_cpu(r))).collect();
        let first = medians[0].0;
        for (target, (m, cpu)) in targets.iter().zip(&medians) {
            println!(
                "{conns:>5} {:>24} {:>10.0} {:>7.3} {:>7.0}us {:>8.0}us {:>7.0}us {:>7} {cpu:>16}",
                target.label,
                m.rps,
                m.rps / first.rps,
                m.p50_us,
                m.p50_us - first.p50_us,
                m.p99_us,
                m.errors
            );
        }
    }
}

async fn watchdog(duration: Duration, rounds: usize, baseline: Option<PathBuf>) {
    let behind = start_watchdog(&release_bin("watchdog")).await;
    let before = match &baseline {
        Some(dir) => Some(start_watchdog(&dir.join("watchdog")).await),
        None => None,
    };
    let idle_rss = rss(behind.watchdog.pid());
    println!("# watchdog benchmark");
    let mut targets = vec![target("direct", format!("http://127.0.0.1:{}/", behind.upstream_port))];
    if let Some(before) = &before {
        targets.push(before.target("watchdog (baseline)"));
    }
    targets.push(behind.target("watchdog"));
    compare(&targets, duration, rounds);
    drop((behind, before));
    let watchdog = release_bin("watchdog");
    let ready_ms = time_to_ready(&watchdog, 20).await;
    let size = std::fs::metadata(&watchdog).unwrap().len();
    println!("idle RSS: {:.2} MiB (target <= 4 MiB)", idle_rss as f64 / 1048576.0);
    println!(
        "time to ready (streaming mode, spawn -> /_/ready 200), median of 20: {:.2} ms, max {:.2} ms (target <= 10 ms)",
        ready_ms.0, ready_ms.1
    );
    println!("release binary: {:.2} MiB stripped (target <= 6 MiB)", size as f64 / 1048576.0);
}

/// A local-mode gateway over one function, `hello`, answered by the fast upstream in http mode.
pub struct LocalHello {
    pub gateway: Spawned,
    pub port: u16,
    pub url: String,
    pub dir: PathBuf,
}

impl Drop for LocalHello {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LocalHello {
    /// `hello` through the gateway as a `compare` target: the gateway and its replicas'
    /// watchdogs are the hops (each watchdog's child, the function, is not).
    pub fn target(&self, label: &str) -> Target {
        let gateway = self.gateway.pid();
        let watchdogs = flint_testkit::children(gateway).into_iter().map(Pid::from_raw);
        target(label, self.url.clone()).hop(std::iter::once(gateway).chain(watchdogs))
    }
}

pub async fn local_hello() -> LocalHello {
    local_function("  scale: {min: 1, max: 1}\n", &[]).await
}

/// A local-mode gateway (with `args`) over `hello`, whose manifest ends with `tail`.
pub async fn local_function(tail: &str, args: &[&str]) -> LocalHello {
    local_function_of(&release_bin("flint-gateway"), "", tail, args).await
}

/// `local_function` with the gateway `binary`, its functions in a folder named with `name`.
pub async fn local_function_of(binary: &std::path::Path, name: &str, tail: &str, args: &[&str]) -> LocalHello {
    let dir = std::env::temp_dir().join(format!("flint-bench-{}{name}", std::process::id()));
    write_hello(&dir, tail);
    start_local(binary, dir, args).await
}

/// A local-mode gateway `binary` (with `args`) over the functions in `dir`, one of them `hello`;
/// started once `hello` answers. `dir` is removed when it is dropped.
async fn start_local(binary: &std::path::Path, dir: PathBuf, args: &[&str]) -> LocalHello {
    let port = free_port();
    let p = port.to_string();
    // Room for the idle-connection measurement's 10,000 and more.
    let mut all = vec!["--functions-dir", dir.to_str().unwrap(), "--port", &p, "--max-connections", "1000000"];
    // NATS only where a benchmark asks for it (the soak kills the gateway's children, which
    // would include local mode's nats-server).
    if !args.contains(&"--nats-url") {
        all.extend(["--nats-url", "off"]);
    }
    all.extend_from_slice(args);
    let gateway = Spawned::start(binary.to_str().unwrap(), &all, &[("RUST_LOG", "warn")]);
    let url = format!("http://127.0.0.1:{port}/function/hello");
    wait_for("the gateway's replica to answer", Duration::from_secs(120), || async {
        get(&url).await.ok().filter(|r| r.status == 200)
    })
    .await;
    LocalHello { gateway, port, url, dir }
}

/// A "watchdog" that is the fast upstream itself, for measuring the gateway's hop on its own:
/// a local-mode gateway started with `--watchdog` this script runs it as each replica.
pub struct BareReplica {
    pub path: PathBuf,
}

impl BareReplica {
    /// Writes the script (removed when dropped).
    pub fn write() -> Self {
        let path = std::env::temp_dir().join(format!("flint-bench-{}-bare-replica", std::process::id()));
        let me = std::env::current_exe().unwrap();
        std::fs::write(&path, format!("#!/bin/sh\nexec {} upstream \"$port\"\n", me.display())).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        BareReplica { path }
    }
}

impl Drop for BareReplica {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Manifests of `count` functions `f00000`, `f00001`, ... deployed at zero (`cat`, never called,
/// so never started).
pub fn write_idle_functions(dir: &std::path::Path, count: usize) {
    for i in 0..count {
        let folder = dir.join(format!("f{i:05}"));
        std::fs::create_dir_all(&folder).unwrap();
        let manifest = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: f{i:05}}}\nspec:\n  image: bench\n  command: [cat]\n  scale: {{initial: 0}}\n"
        );
        std::fs::write(folder.join("function.yaml"), manifest).unwrap();
    }
}

/// `hello`'s manifest: the fast upstream in http mode, then `tail` (YAML under `spec:`).
pub fn write_hello(dir: &std::path::Path, tail: &str) {
    std::fs::create_dir_all(dir.join("hello")).unwrap();
    let me = std::env::current_exe().unwrap();
    std::fs::write(
        dir.join("hello/function.yaml"),
        format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: hello}}\nspec:\n  image: bench\n  \
             command: [sh, -c, 'exec {} upstream $PORT']\n  env: [{{name: mode, value: http}}]\n{tail}",
            me.display()
        ),
    )
    .unwrap();
}

async fn gateway(duration: Duration, rounds: usize, idle_conns: usize, baseline: Option<PathBuf>) {
    let behind = start_watchdog(&release_bin("watchdog")).await;
    let local = local_hello().await;
    let (gw, port) = (&local.gateway, local.port);
    let idle_rss = rss(gw.pid());
    let nginx = nginx::Nginx::start(behind.upstream_port).await;
    let bare = BareReplica::write();
    let scale = "  scale: {min: 1, max: 1}\n";
    let hop_args = ["--watchdog", bare.path.to_str().unwrap()];
    let hop = local_function_of(&release_bin("flint-gateway"), "-hop", scale, &hop_args).await;
    let before = match &baseline {
        Some(dir) => {
            let watchdog = dir.join("watchdog");
            let args = ["--watchdog", watchdog.to_str().unwrap()];
            Some(local_function_of(&dir.join("flint-gateway"), "-baseline", scale, &args).await)
        }
        None => None,
    };
    println!("# gateway benchmark");
    let mut targets = vec![target("direct", format!("http://127.0.0.1:{}/", behind.upstream_port))];
    match &nginx {
        Some(n) => targets.push(target("nginx (one hop)", format!("http://127.0.0.1:{}/", n.port)).hop([n.worker()])),
        None => println!("# nginx is not installed (Debian: nginx-light): no yardstick in this run"),
    }
    // The gateway's own hop: its replica is the upstream itself, whose CPU is not the hop's.
    targets.push(target("gateway (one hop)", hop.url.clone()).hop([hop.gateway.pid()]));
    targets.push(behind.target("watchdog (one hop)"));
    if let Some(before) = &before {
        targets.push(before.target("gateway+watchdog (base)"));
    }
    targets.push(local.target("gateway+watchdog"));
    compare(&targets, duration, rounds);
    println!(
        "gateway idle RSS (one function loaded, before load): {:.2} MiB (target <= 15 MiB)",
        idle_rss as f64 / 1048576.0
    );
    println!("# {idle_conns} idle keep-alive connections (goal <= 8 KiB each at the front door)");
    if let Some(n) = &nginx {
        println!("{}", idle::hold(n.port, "/", idle_conns, n.worker()).await.report("nginx"));
    }
    drop(nginx);
    println!("{}", idle::hold(behind.port, "/", idle_conns, behind.watchdog.pid()).await.report("watchdog"));
    println!("{}", idle::hold(port, "/healthz", idle_conns, gw.pid()).await.report("gateway"));
    if let Some(before) = &before {
        let held = idle::hold(before.port, "/healthz", idle_conns, before.gateway.pid()).await;
        println!("{}", held.report("gateway (base)"));
    }
    drop((hop, before, bare));
    drop(local);
}

/// Medians of the runs, field by field.
fn median(loads: &[wrk::Load]) -> wrk::Load {
    let pick = |f: fn(&wrk::Load) -> f64| middle(loads.iter().map(f).collect());
    wrk::Load {
        requests: loads.iter().map(|l| l.requests).sum(),
        rps: pick(|l| l.rps),
        p50_us: pick(|l| l.p50_us),
        p99_us: pick(|l| l.p99_us),
        errors: loads.iter().map(|l| l.errors).sum(),
    }
}

/// The runs' median CPU per request, "user+kernel us" (empty where the hop is not measured).
fn median_cpu(runs: &[Run]) -> String {
    let cpu: Vec<(f64, f64)> = runs.iter().filter_map(|r| r.cpu_us).collect();
    if cpu.is_empty() {
        return String::new();
    }
    let user = middle(cpu.iter().map(|c| c.0).collect());
    let kernel = middle(cpu.iter().map(|c| c.1).collect());
    format!("{user:.1}+{kernel:.1}us")
}

fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median and max milliseconds from spawning the watchdog to its first 200 on `/_/ready`.
async fn time_to_ready(watchdog: &std::path::Path, runs: usize) -> (f64, f64) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let (port, metrics) = (free_port(), free_port());
        let (p, m) = (port.to_string(), metrics.to_string());
        let started = std::time::Instant::now();
        let wd = Spawned::start(
            watchdog.to_str().unwrap(),
            &[],
            &[
                ("fprocess", "cat"),
                ("port", &p),
                ("metrics_port", &m),
                ("bind_address", "127.0.0.1"),
                ("RUST_LOG", "warn"),
            ],
        );
        let url = format!("http://127.0.0.1:{port}/_/ready");
        loop {
            if get(&url).await.is_ok_and(|r| r.status == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(wd);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}
