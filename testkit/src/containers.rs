//! Real containers for tests: Debian's `docker-registry` (the CNCF distribution registry) on a
//! loopback port, and OCI runtime bundles unpacked from an image layout by `umoci` and run by
//! `runc` as root. Both are stopped and removed when dropped, and die with the test binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::{Spawned, free_port, get, wait_for};

/// Why containers cannot run here, if they cannot (not root, or runc or umoci missing).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("containers need root (runc runs OCI bundles as root here)".into());
    }
    for tool in ["runc", "umoci"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed (scripts/setup.sh installs Debian's)"));
        }
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// A registry on loopback, its storage in a scratch folder; it dies with the test binary
/// (it may live in a static), or when dropped.
pub struct Registry {
    pid: u32,
    pub port: u16,
    dir: PathBuf,
}

impl Registry {
    pub async fn start() -> Registry {
        let port = free_port();
        let dir = crate::scratch::folder("registry", port);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(dir.join("config.yml"));
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        let pid = crate::spawn_for_life(cmd, nix::sys::signal::Signal::SIGKILL).expect("docker-registry starts");
        let r = Registry { pid, port, dir };
        let url = format!("http://127.0.0.1:{port}/v2/");
        wait_for("the registry to answer", Duration::from_secs(20), || async {
            get(&url).await.ok().filter(|r| r.status == 200)
        })
        .await;
        r
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An OCI runtime bundle: the image's root filesystem and the runtime config umoci wrote from
/// the image's config, for the test to change before running it.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// Unpacks image `reference` of the layout at `layout` into a fresh folder.
    pub fn unpack(layout: &Path, reference: &str) -> Result<Bundle, String> {
        let dir = crate::scratch::file("bundle", fastrand::u32(..));
        let image = format!("{}:{reference}", layout.display());
        let out =
            Command::new("umoci").args(["unpack", "--image", &image]).arg(&dir).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("umoci unpack {image}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(Bundle { dir, config })
    }

    /// The container shares the host's network (it listens on the host's loopback).
    pub fn host_network(&mut self) -> &mut Self {
        if let Some(ns) = self.config["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        self
    }

    pub fn env(&mut self, name: &str, value: &str) -> &mut Self {
        let env = self.config["process"]["env"].as_array_mut().expect("umoci writes an env");
        env.retain(|e| !e.as_str().unwrap_or_default().starts_with(&format!("{name}=")));
        env.push(Value::from(format!("{name}={value}")));
        self
    }

    /// A host folder at `target` in the container.
    pub fn bind(&mut self, source: &Path, target: &str, read_only: bool) -> &mut Self {
        let mut options = vec!["rbind"];
        if read_only {
            options.push("ro");
        }
        let mounts = self.config["mounts"].as_array_mut().expect("umoci writes mounts");
        mounts.push(serde_json::json!({"destination": target, "type": "bind", "source": source, "options": options}));
        self
    }

    /// Runs it with `runc` as container `id` (not in a terminal; its output is captured).
    pub fn run(&mut self, id: &str) -> Container {
        self.config["process"]["terminal"] = Value::Bool(false);
        std::fs::write(self.dir.join("config.json"), serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
        let _ = Command::new("runc").args(["delete", "-f", id]).output();
        let process = Spawned::start("runc", &["run", "--bundle", self.dir.to_str().unwrap(), id], &[]);
        Container { id: id.to_string(), process, dir: self.dir.clone() }
    }
}

/// A container `runc run` runs; killed and removed (with its bundle) when dropped.
pub struct Container {
    pub id: String,
    /// `runc run`, which stays as long as the container and forwards its output.
    pub process: Spawned,
    dir: PathBuf,
}

impl Container {
    /// Its first process's pid (on the host), once it has one.
    pub fn pid(&self) -> Option<i32> {
        let out = Command::new("runc").args(["state", &self.id]).output().ok()?;
        let state: Value = serde_json::from_slice(&out.stdout).ok()?;
        state["pid"].as_i64().filter(|p| *p > 0).map(|p| p as i32)
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("runc").args(["kill", &self.id, signal]).output();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["kill", &self.id, "KILL"]).output();
        let _ = Command::new("runc").args(["delete", "-f", &self.id]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
