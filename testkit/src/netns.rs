//! Network namespaces for a test node's pods. The API server refuses loopback addresses in
//! EndpointSlices, so pods need addresses of their own; and pods of one function all listen on
//! the same port (and their processes on the same loopback ports), so each pod gets a network
//! namespace of its own, as a container runtime gives it, wired the way the bridge CNI plugin
//! wires pods: an `eth0` with the pod's address, paired (veth) with a link on a bridge that
//! holds the node's address. Pod addresses come from a private /24 (10.231.N.0/24, N free on
//! this host); `.1`, on the bridge, is the node's. Pods reach each other and the node on the
//! bridge, and nothing else: the host forwards nothing, so no pod reaches any other address.
//!
//! What kube-proxy does for a pod (a Service's cluster IP and port to one of its endpoints) is
//! a NAT table in the pod's namespace, replaced whole when the Services change
//! ([`PodNetns::set_services`]).
//!
//! Needs root. The namespaces and the bridge are deleted when the test binary ends however it
//! ends: a guardian process, whose parent-death signal fires when the binary exits, deletes
//! them; those of binaries that are gone (a guardian killed too) are deleted by the next one.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
};

const PREFIX: &str = "flint-pod-";
/// Bridges are named `fbrPID` (link names have at most 15 characters).
const BRIDGE: &str = "fbr";

/// This test binary's pod network.
pub struct PodNetwork {
    /// The node's address, on the bridge: where the host's traffic to pods comes from, and
    /// where pods reach the node.
    pub node_ip: Ipv4Addr,
    subnet: [u8; 3],
    pid: u32,
    bridge: String,
}

/// A Service port as kube-proxy sees it: traffic to `cluster_ip:port` goes to one of `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub to: Vec<(Ipv4Addr, u16)>,
}

impl PodNetwork {
    /// Claims a /24 and a bridge for this binary's pods, or says why it cannot.
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
        let node_ip = Ipv4Addr::new(10, 231, n, 1);
        let bridge = format!("{BRIDGE}{pid}");
        let _ = ip(&["link", "delete", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{node_ip}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(PodNetwork { node_ip, subnet: [10, 231, n], pid, bridge })
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
        let _ = ip(&["link", "delete", &host]);
        let ns = PodNetns { name, addr };
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        ip(&["link", "set", &host, "master", &self.bridge])?;
        ip(&["link", "set", &host, "up"])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        // Cluster IPs are reached through the NAT table; the route only has to exist.
        ns.ip(&["route", "add", "default", "via", &self.node_ip.to_string()])?;
        Ok(ns)
    }
}

/// One pod's network namespace; deleted (with its links) when dropped.
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

    pub fn set_services(&self, services: &[ServicePort]) -> Result<(), String> {
        set_services(&self.name, services)
    }
}

/// Replaces the NAT table of the pod namespace `name` with one rule set per Service port: a
/// connection to the cluster IP and port goes to one of its endpoints, picked at random (as
/// kube-proxy's iptables mode does); a port with no endpoint is refused.
pub fn set_services(name: &str, services: &[ServicePort]) -> Result<(), String> {
    let mut table = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n");
    let mut filter = String::from("*filter\n:OUTPUT ACCEPT [0:0]\n");
    for s in services.iter().filter(|s| s.to.is_empty()) {
        filter.push_str(&format!("-A OUTPUT {} -j REJECT --reject-with tcp-reset\n", matching(s)));
    }
    dnat(&mut table, "OUTPUT", services);
    filter.push_str("COMMIT\n");
    let mut restore = Command::new("ip");
    restore.args(["netns", "exec", name, "iptables-restore"]);
    iptables_restore(restore, &format!("{table}{filter}")).map_err(|e| format!("in {name}: {e}"))
}

/// The same Service rules for the host (what kube-proxy gives a node's own processes): a
/// chain of this binary's own in the host's NAT table, reached only for the service range, so
/// that a test reaches a Service by its cluster IP as a client in the cluster does.
pub fn set_host_services(services: &[ServicePort]) -> Result<(), String> {
    let chain = host_chain(std::process::id());
    let mut table = format!("*nat\n:{chain} - [0:0]\n");
    dnat(&mut table, &chain, services);
    let mut restore = Command::new("iptables-restore");
    restore.arg("--noflush");
    iptables_restore(restore, &table).map_err(|e| format!("on the host: {e}"))?;
    let jump = ["-t", "nat", "-C", "OUTPUT", "-d", "10.0.0.0/16", "-j", &chain];
    if !Command::new("iptables").args(jump).output().is_ok_and(|o| o.status.success()) {
        let mut add = jump;
        add[2] = "-A";
        let out = Command::new("iptables").args(add).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("iptables: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

fn matching(s: &ServicePort) -> String {
    format!("-d {}/32 -p tcp --dport {}", s.cluster_ip, s.port)
}

/// Appends to `chain` each Service port's DNAT to one of its endpoints, picked at random (the
/// n-th of k rules matches with probability 1/(k-n), so each endpoint gets 1/k), and commits.
fn dnat(table: &mut String, chain: &str, services: &[ServicePort]) {
    for s in services {
        for (i, (ip, port)) in s.to.iter().enumerate() {
            let left = s.to.len() - i;
            let pick = if left > 1 {
                format!("-m statistic --mode random --probability {:.5} ", 1.0 / left as f64)
            } else {
                String::new()
            };
            table.push_str(&format!("-A {chain} {} {pick}-j DNAT --to-destination {ip}:{port}\n", matching(s)));
        }
    }
    table.push_str("COMMIT\n");
}

/// Feeds `rules` to an `iptables-restore` command.
fn iptables_restore(mut command: Command, rules: &str) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    child.stdin.take().expect("piped").write_all(rules.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn host_chain(pid: u32) -> String {
    format!("FLINT-SVC-{pid}")
}

/// Removes a binary's host chain (and the jump to it).
fn remove_host_chain(pid: u32) {
    let chain = host_chain(pid);
    let _ = Command::new("iptables").args(["-t", "nat", "-D", "OUTPUT", "-d", "10.0.0.0/16", "-j", &chain]).output();
    let _ = Command::new("iptables").args(["-t", "nat", "-F", &chain]).output();
    let _ = Command::new("iptables").args(["-t", "nat", "-X", &chain]).output();
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// `sh` that waits for SIGTERM (its parent-death signal), then deletes the binary's
/// containers (and unmounts their root filesystems), namespaces, bridge and host chain.
fn guardian(pid: u32) -> Command {
    let node = crate::node::node_dir(pid).display().to_string();
    let script = format!(
        "trap 'kill $!; for c in $(runc list -q 2>/dev/null | grep \"^flint-{pid}-\"); do runc delete -f $c; done; \
         for m in $(cut -d\" \" -f2 /proc/mounts | grep \"^{node}/\"); do umount -l $m; done; \
         for n in $(ip netns list | grep -o \"^{PREFIX}{pid}-[0-9]*\"); do ip netns delete $n; done; \
         ip link delete {BRIDGE}{pid} 2>/dev/null; iptables -t nat -D OUTPUT -d 10.0.0.0/16 -j FLINT-SVC-{pid} 2>/dev/null; \
         iptables -t nat -F FLINT-SVC-{pid} 2>/dev/null; iptables -t nat -X FLINT-SVC-{pid} 2>/dev/null; exit 0' TERM; \
         sleep infinity & wait"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// Containers, namespaces and bridges of test binaries that are gone.
fn remove_stale() {
    let gone = |pid: Option<u32>| pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
    if let Ok(out) = Command::new("runc").args(["list", "-q"]).output() {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let pid = id.strip_prefix("flint-").and_then(|p| p.split('-').next()).and_then(|p| p.parse().ok());
            if gone(pid) {
                let _ = Command::new("runc").args(["delete", "-f", id]).output();
            }
        }
    }
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if gone(name.strip_prefix(PREFIX).and_then(|p| p.split('-').next()).and_then(|p| p.parse().ok())) {
                let _ = ip(&["netns", "delete", name]);
            }
        }
    }
    if let Ok(out) = Command::new("iptables").args(["-t", "nat", "-S"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(pid) = line.strip_prefix("-N FLINT-SVC-").and_then(|p| p.parse().ok())
                && gone(Some(pid))
            {
                remove_host_chain(pid);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for name in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            if gone(name.strip_prefix(BRIDGE).and_then(|p| p.parse().ok())) {
                let _ = ip(&["link", "delete", name]);
            }
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
