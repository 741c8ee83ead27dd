//! Network namespaces for a test node's pods. The API server refuses loopback addresses in
//! EndpointSlices, so pods need addresses of their own; and pods of one function all listen on
//! the same port (and their processes on the same loopback ports), so each pod gets a network
//! namespace of its own, as a container runtime gives it: an `eth0` with the pod's address,
//! paired (veth) with a host-side link that has a /32 route to it, the way Calico wires pods.
//! Pod addresses come from a private /24 (10.231.N.0/24, N free on this host); `.1` is the
//! node's address, the source of everything the host sends to a pod. Only the host reaches the
//! pods; nothing is routed anywhere else.
//!
//! Needs root. The namespaces are deleted when the test binary ends however it ends: a guardian
//! process, whose parent-death signal fires when the binary exits, deletes them; namespaces of
//! binaries that are gone (a guardian killed too) are deleted by the next one to start.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
};

const PREFIX: &str = "flint-pod-";

/// This test binary's pod network.
pub struct PodNetwork {
    /// The node's address: where the host's traffic to pods comes from.
    pub node_ip: Ipv4Addr,
    subnet: [u8; 3],
    pid: u32,
}

impl PodNetwork {
    /// Claims a /24 for this binary's pods, or says why it cannot.
    pub fn create() -> Result<PodNetwork, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the test node needs root: it gives each pod a network namespace".into());
        }
        remove_stale();
        let pid = std::process::id();
        let used = format!("{}{}", ip(&["-o", "-4", "addr", "show"])?, ip(&["-4", "route", "show"])?);
        let n = (0..=255u8)
            .map(|i| ((pid as usize + i as usize) % 256) as u8)
            .find(|n| !used.contains(&format!("10.231.{n}.")))
            .ok_or("every 10.231.N.0/24 is in use on this host")?;
        // From here on the guardian deletes whatever this binary creates.
        crate::spawn_for_life(guardian(pid), nix::sys::signal::Signal::SIGTERM)?;
        Ok(PodNetwork { node_ip: Ipv4Addr::new(10, 231, n, 1), subnet: [10, 231, n], pid })
    }

    /// How many pods can have an address at once.
    pub const ADDRESSES: u8 = 240;

    /// A namespace for pod number `slot` (below [`Self::ADDRESSES`]), with its address.
    pub fn pod(&self, slot: u8) -> Result<PodNetns, String> {
        let [a, b, c] = self.subnet;
        let addr = Ipv4Addr::new(a, b, c, 10 + slot);
        let name = format!("{PREFIX}{}-{slot}", self.pid);
        let host = format!("fp{}h{slot}", self.pid);
        // A namespace left by a pod of this binary whose clean-up failed.
        let _ = ip(&["netns", "delete", &name]);
        let ns = PodNetns { name, addr };
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/32", self.node_ip), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        ip(&["route", "add", &format!("{addr}/32"), "dev", &host, "src", &self.node_ip.to_string()])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", &format!("{}/32", self.node_ip), "dev", "eth0"])?;
        Ok(ns)
    }
}

/// One pod's network namespace; deleted (with its links and route) when dropped.
pub struct PodNetns {
    pub name: String,
    pub addr: Ipv4Addr,
}

impl PodNetns {
    /// The file that names the namespace, for `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// `sh` that waits for SIGTERM (its parent-death signal), then deletes the binary's namespaces.
fn guardian(pid: u32) -> Command {
    let script = format!(
        "trap 'kill $!; for n in $(ip netns list | grep -o \"^{PREFIX}{pid}-[0-9]*\"); do ip netns delete $n; done; exit 0' TERM; \
         sleep infinity & wait"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// Namespaces of test binaries that are gone.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name.strip_prefix(PREFIX).and_then(|p| p.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
