//! Starting the real gateway (local mode) over a folder of manifests, for end-to-end tests.

#![allow(dead_code)] // each test file uses a different part

pub mod cluster;
pub mod images;
pub mod queue;

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use flint_testkit::{Reply, Spawned, free_port, get, request, wait_for};
use hyper::Method;

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_flint-gateway");
pub const SECS_20: Duration = Duration::from_secs(20);

/// The watchdog binary beside the gateway, built first if this test run has not built it.
pub fn watchdog() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = Path::new(GATEWAY).with_file_name("watchdog");
            if !path.is_file() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut cmd = std::process::Command::new(cargo);
                cmd.args(["build", "-p", "flint-watchdog", "--bin", "watchdog"]);
                if Path::new(GATEWAY).parent().is_some_and(|p| p.ends_with("release")) {
                    cmd.arg("--release");
                }
                assert!(cmd.status().unwrap().success(), "building the watchdog failed");
            }
            path
        })
        .clone()
}

/// A scratch folder of manifests, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("flint-{tag}-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `NAME/function.yaml` (and whatever `files` the function needs beside it).
    pub fn function(&self, name: &str, spec: &str, files: &[(&str, &str)]) -> &Self {
        let folder = self.0.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let manifest =
            format!("apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n{spec}\n");
        std::fs::write(folder.join("function.yaml"), manifest).unwrap();
        for (file, text) in files {
            std::fs::write(folder.join(file), text).unwrap();
        }
        self
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Gateway {
    pub process: Spawned,
    pub port: u16,
}

impl Gateway {
    /// Starts the gateway over `dir` and waits until it answers `/healthz`.
    pub async fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_on(dir, free_port(), args).await
    }

    /// The same on a given port (for a Prometheus configured to scrape it).
    pub async fn start_on(dir: &Path, port: u16, args: &[&str]) -> Self {
        // FLINT_TEST_GATEWAY_LOG (a RUST_LOG filter) shows more of what the gateway did, when chasing a failure.
        let filter = std::env::var("FLINT_TEST_GATEWAY_LOG").unwrap_or_else(|_| "info".into());
        Self::start_logging(dir, port, args, &filter).await
    }

    /// The same with a RUST_LOG filter of the test's choosing.
    pub async fn start_logging(dir: &Path, port: u16, args: &[&str], filter: &str) -> Self {
        let watchdog = watchdog();
        let mut all = vec!["--functions-dir", dir.to_str().unwrap(), "--watchdog", watchdog.to_str().unwrap()];
        let port_s = port.to_string();
        all.extend(["--port", &port_s]);
        // Only the tests of asynchronous calls need NATS (they say so); the others count the
        // gateway's children, which would include local mode's nats-server.
        if !args.contains(&"--nats-url") {
            all.extend(["--nats-url", "off"]);
        }
        all.extend_from_slice(args);
        let process = Spawned::start(GATEWAY, &all, &[("RUST_LOG", filter)]);
        let g = Gateway { process, port };
        let url = g.url("/healthz");
        wait_for("the gateway to listen", SECS_20, || async { get(&url).await.ok() }).await;
        g
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        request(method, &self.url(path), headers, body.to_string()).await.unwrap()
    }

    /// Waits until the function lists `available` ready replicas.
    pub async fn wait_available(&self, name: &str, available: u64) {
        let url = self.url(&format!("/system/function/{name}"));
        wait_for(&format!("{name} to have {available} ready replicas"), SECS_20, || async {
            let r = get(&url).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            (v["availableReplicas"].as_u64() == Some(available) && v["replicas"].as_u64() == Some(available))
                .then_some(())
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        get(&self.url("/metrics")).await.unwrap().text()
    }

    /// Waits until the gateway holds no connection open (its start-up check's, a probe's), so
    /// that a test filling its connection places finds none freed later under it.
    pub async fn wait_no_connections(&self) {
        wait_for("no connection to the gateway left open", SECS_20, || async {
            (held_open(self.port) == 0).then_some(())
        })
        .await
    }
}

/// Connections to `port` on loopback the server still holds open (established, or closed by
/// the client but not yet by the server), from the kernel's table.
fn held_open(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && matches!(fields.get(3), Some(&"01") | Some(&"08"))
        })
        .count()
}
