//! Test helpers shared by the end-to-end suites of the watchdog and the gateway: they start the
//! real binaries as processes, talk to them over real sockets, and wait for conditions with a
//! deadline instead of sleeping blindly. [`kube_api`] gives the Kubernetes suites a real API
//! server (or says plainly that there is none); [`containers`] a registry and runc.

pub mod cluster;
pub mod containers;
pub mod kube_api;
pub mod netns;
pub mod node;
pub mod runtime;
pub mod scratch;

use std::{
    future::Future,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

/// The workspace's folder.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit sits in the workspace").to_path_buf()
}

/// The real `helm` (`HELM`, or where scripts/setup.sh installs it), run from the workspace.
pub fn helm() -> std::process::Command {
    let helm =
        std::env::var_os("HELM").map(std::path::PathBuf::from).unwrap_or_else(|| workspace().join(".tools/helm"));
    assert!(helm.is_file(), "{} is missing: scripts/setup.sh installs helm there (or set HELM)", helm.display());
    let mut cmd = std::process::Command::new(helm);
    cmd.current_dir(workspace());
    cmd
}

/// Starts `cmd` so that it gets `signal` when the test binary ends, however it ends (also when
/// killed). The parent-death signal fires when the *thread* that forked the child ends, so the
/// children are forked by one thread that lives as long as the process.
/// Its pid.
pub fn spawn_for_life(mut cmd: std::process::Command, signal: Signal) -> Result<u32, String> {
    type Job = (std::process::Command, Signal, std::sync::mpsc::Sender<Result<u32, String>>);
    static SPAWNER: Mutex<Option<std::sync::mpsc::Sender<Job>>> = Mutex::new(None);
    let (done, result) = std::sync::mpsc::channel();
    let job = {
        let mut spawner = SPAWNER.lock().unwrap();
        let tx = spawner.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::spawn(move || {
                let mut children = Vec::new();
                for (mut cmd, signal, done) in rx {
                    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
                    unsafe {
                        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)
                        });
                    }
                    let _ = done.send(
                        cmd.spawn()
                            .map(|c| {
                                let pid = c.id();
                                children.push(c);
                                pid
                            })
                            .map_err(|e| e.to_string()),
                    );
                }
                // The sender lives in a static: this is reached only at exit.
                loop {
                    std::thread::park();
                }
            });
            tx
        });
        cmd.stdin(Stdio::null());
        tx.send((cmd, signal, done))
    };
    job.map_err(|_| "the spawner thread is gone".to_string())?;
    result.recv().map_err(|_| "the spawner thread is gone".to_string())?
}

/// Reports the running test as skipped, with `reason`: on stderr, and in the file named by
/// `FLINT_SKIP_LOG` (`scripts/test` lists them at the end): a skipped test never reads as passed.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os("FLINT_SKIP_LOG") {
        let line = format!("{} {test}: {reason}\n", std::env::args().next().unwrap_or_default());
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = std::io::Write::write_all(&mut f, line.as_bytes());
        }
    }
}

/// A loopback port nobody listens on, kept from every other test's pick until a server binds it
/// (see `flint_http::port`).
pub fn free_port() -> u16 {
    flint_http::port::reserve().expect("a loopback port")
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP request on a fresh client; `Err` when no response came (connection refused...).
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    Caller::new().call(method, url, headers, body).await
}

/// An HTTP client that keeps its connections open between calls, as a load generator does.
#[derive(Clone)]
pub struct Caller(Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>);

impl Default for Caller {
    fn default() -> Self {
        Self::new()
    }
}

impl Caller {
    pub fn new() -> Self {
        Caller(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>())
    }

    /// One request; `Err` when no response came.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = self.0.request(req.body(Full::new(body.into())).unwrap()).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(Reply { status, headers, body })
    }
}

pub async fn get(url: &str) -> Result<Reply, String> {
    request(Method::GET, url, &[], Bytes::new()).await
}

pub async fn post(url: &str, body: impl Into<Bytes>) -> Result<Reply, String> {
    request(Method::POST, url, &[], body).await
}

/// A process started by a test, its output captured, killed when dropped.
pub struct Spawned {
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Spawned {
    /// Starts `program` with exactly `env` added to the test's environment.
    pub fn start(program: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().unwrap(), log.clone()),
            capture(child.stderr.take().unwrap(), log.clone()),
        ];
        Spawned { child, log, readers }
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("still running") as i32)
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// Waits for it to exit and for its output to be read to the end, failing the test after
    /// `timeout`.
    pub async fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("still running after {timeout:?}; log:\n{}", self.log()),
        };
        for reader in self.readers.drain(..) {
            // Output pipes close when the process (and whatever inherited them) is gone.
            let _ = tokio::time::timeout(timeout, reader).await;
        }
        status
    }

    /// Waits until its output contains `text`.
    pub async fn wait_log(&self, text: &str, timeout: Duration) {
        wait_for(&format!("{text:?} in the log"), timeout, || async { self.log().contains(text).then_some(()) }).await
    }
}

fn capture(reader: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<String>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    })
}

/// The fields of `/proc/PID/stat` after the command (which may hold spaces and parentheses),
/// from field 3 (the state) on; none if there is no such process.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(String::from).collect())
}

/// Pids of the live (not zombie) direct children of `parent`.
pub fn children(parent: Pid) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(fields) = stat_fields(pid) else { continue };
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent.as_raw()) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// CPU time process `pid` has used so far, user and system.
pub fn cpu_time(pid: Pid) -> Duration {
    let (user, system) = cpu_times(pid);
    user + system
}

/// CPU time process `pid` has used so far: (in user space, in the kernel).
pub fn cpu_times(pid: Pid) -> (Duration, Duration) {
    let fields = stat_fields(pid.as_raw()).unwrap_or_else(|| panic!("no process {pid}"));
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let time = |i: usize| Duration::from_secs_f64(fields[i].parse::<u64>().unwrap() as f64 / per_second as f64);
    (time(11), time(12))
}

/// Peak resident memory of a process, in bytes (VmHWM).
pub fn peak_rss(pid: Pid) -> u64 {
    rss_field(pid, "VmHWM:")
}

/// Resident memory of a process now, in bytes (VmRSS).
pub fn rss(pid: Pid) -> u64 {
    rss_field(pid, "VmRSS:")
}

/// Anonymous resident memory of a process now, in bytes (RssAnon): its heap and stacks, not
/// the pages of its program file, which grow as code runs for the first time.
pub fn rss_anon(pid: Pid) -> u64 {
    rss_field(pid, "RssAnon:")
}

fn rss_field(pid: Pid, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

pub const SIGTERM: Signal = Signal::SIGTERM;

/// A real Prometheus (Debian's `prometheus`, installed by scripts/setup.sh) on a loopback port,
/// scraping `targets` every second; stopped and its data removed when dropped.
pub struct Prometheus {
    pub process: Spawned,
    pub port: u16,
    dir: std::path::PathBuf,
    ip: std::net::Ipv4Addr,
}

impl Prometheus {
    pub async fn start(targets: &[String]) -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST, targets).await
    }

    /// The same listening on `ip` (a test node's address, for pods to reach).
    pub async fn start_on(ip: std::net::Ipv4Addr, targets: &[String]) -> Self {
        let port = free_port();
        let dir = scratch::folder("prometheus", port);
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: flint\n  static_configs:\n  - targets: [{list}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let process = Spawned::start(
            "prometheus",
            &[
                &format!("--config.file={}", dir.join("prometheus.yml").display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={ip}:{port}"),
            ],
            &[],
        );
        let p = Prometheus { process, port, dir, ip };
        let ready = format!("{}/-/ready", p.url());
        wait_for("Prometheus to be ready", Duration::from_secs(30), || async {
            get(&ready).await.ok().filter(|r| r.status == 200)
        })
        .await;
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real NATS server with JetStream (Debian's `nats-server`, installed by scripts/setup.sh) on
/// a loopback port, its store in a scratch folder; stopped and its data removed when dropped.
pub struct Nats {
    pub process: Spawned,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Nats {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The same with more of nats-server's flags (`--user`, `--pass`, ...).
    pub async fn start_with(args: &[&str]) -> Self {
        let port = free_port();
        let dir = scratch::folder("nats", port);
        let port_s = port.to_string();
        let store = dir.to_str().unwrap().to_string();
        let mut all = vec!["-js", "-a", "127.0.0.1", "-p", &port_s, "-sd", &store];
        all.extend_from_slice(args);
        let process = Spawned::start("nats-server", &all, &[]);
        let n = Nats { process, port, dir };
        n.process.wait_log("Server is ready", Duration::from_secs(20)).await;
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (the store goes when it is dropped).
    pub async fn stop(&mut self) {
        self.process.signal(SIGTERM);
        self.process.exit(Duration::from_secs(20)).await;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
