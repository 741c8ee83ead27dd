//! A test node: a kubelet stand-in for the test control plane, in the spirit of KWOK, except
//! that it really runs the pods. It registers a `Node` (Ready, with capacity) and keeps it
//! alive (status heartbeat and its Lease in `kube-node-lease` every 10 s, or the node lifecycle
//! controller would mark it Unknown and evict its pods), binds the Pending pods of the
//! namespaces it serves, and runs each one in the pod's own network namespace
//! ([`crate::netns`]), in one of two ways:
//!
//! - **as a container** ([`crate::runtime`]): the pod's image pulled from its registry,
//!   unpacked, run by `runc` with the pod's security context, volumes (Secret, ConfigMap,
//!   emptyDir, persistentVolumeClaim as a folder of the node, projected ServiceAccount token
//!   with `ca.crt` and `namespace`), memory limit, `KUBERNETES_SERVICE_HOST`/`PORT` reaching the
//!   test API server through the `kubernetes` Service, and the cluster's Services by name
//!   (`/etc/hosts`) and cluster IP (what kube-proxy does, in the pod's NAT table);
//! - **as a process**, for an image a test maps to a folder and env ([`TestNode::image`]): the
//!   first container's `command`/`args`, or the `watchdog` binary, with the container's env.
//!
//! It reports what a kubelet reports (`podIP`, phase, conditions, container state, with the
//! kubelet's reasons: `ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`,
//! `CrashLoopBackOff`) and its Events (`Pulled`, `Failed`, `Created`, `Started`), runs the readiness and liveness probes, stops a deleted pod with SIGTERM
//! to the container's PID 1, `terminationGracePeriodSeconds`, SIGKILL, and restarts a container
//! that exits, with the kubelet's back-off (10 s doubling to 5 min). The real
//! kube-controller-manager does the rest (ReplicaSets, StatefulSets, EndpointSlices).
//!
//! Each pod's output goes to `<logs>/<namespace>_<pod>.log` (`TestNode::logs`, in the temp
//! folder, kept after the run for a look; a later run removes those of binaries that are gone).
//!
//! Not modelled: more than one container, init containers, DNS (names are in `/etc/hosts`),
//! seccomp profiles, CPU limits.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::TryStreamExt;
use k8s_openapi::{
    api::core::v1::{Container, Node, Pod, Probe, Secret},
    apimachinery::pkg::{
        apis::meta::v1::{MicroTime, Time},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::watcher,
};
use serde_json::{Value, json};
use tokio::{process::Command, sync::watch};

use crate::{
    kube_api::{KUBERNETES_SERVICE_IP, TestApi},
    netns::{PodNetwork, ServicePort},
    runtime::{self, Runtime},
};

/// What a test says an image holds: the folder its process runs in (its WORKDIR) and its ENV.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The node of this test binary (one per control plane).
pub struct TestNode {
    pub name: String,
    /// Where the pods' output goes.
    pub logs: PathBuf,
    state: Arc<Shared>,
}

struct Shared {
    served: Mutex<HashSet<String>>,
    images: Mutex<HashMap<String, Image>>,
    network: PodNetwork,
    watchdog: PathBuf,
    logs: PathBuf,
    slots: Mutex<Slots>,
    runtime: Runtime,
    /// The node's own folder: pods' volumes and hosts files, claims' folders.
    dir: PathBuf,
    /// The API server's port (pods reach it at the node's address) and the CA they trust.
    api: Option<(u16, PathBuf)>,
    /// What every pod sees of the cluster's Services, and the pods that see it.
    services: Mutex<Services>,
}

/// The cluster's Services as pods see them: kube-proxy's rules and the names in `/etc/hosts`.
#[derive(Default)]
struct Services {
    ports: Vec<ServicePort>,
    /// `IP name name.ns name.ns.svc name.ns.svc.cluster.local` lines.
    hosts: String,
    /// Running pods: their network namespace, hosts file and its own first lines.
    pods: HashMap<String, (String, PathBuf, String)>,
}

/// Pod addresses in use, handed out round-robin as CNI's host-local IPAM does: an address
/// freed by a pod that just left is reused last, so that a gateway whose EndpointSlice view
/// still lists it does not reach another test's pod there.
struct Slots {
    used: Vec<bool>,
    last: usize,
}

static NODE: tokio::sync::OnceCell<Result<TestNode, String>> = tokio::sync::OnceCell::const_new();

const HEARTBEAT: Duration = Duration::from_secs(10);
const FIELD_MANAGER: &str = "flint-test-node";

impl TestNode {
    /// The node of this test binary, registered on first use, running the `watchdog` binary as
    /// images' entrypoint. `None` (the test recorded as skipped, with the reason) where it cannot
    /// run: not root, or an external cluster (`FLINT_TEST_KUBECONFIG`), whose own nodes run pods.
    pub async fn get(api: &TestApi, watchdog: &Path) -> Option<&'static TestNode> {
        if api.dir.is_none() {
            crate::kube_api::skip("the test node runs only with the tests' own control plane (KUBEBUILDER_ASSETS)");
            return None;
        }
        if !nix::unistd::geteuid().is_root() {
            crate::kube_api::skip("the test node needs root: it gives each pod a network namespace");
            return None;
        }
        let api_server = api.port.zip(api.ca());
        let node = NODE.get_or_init(|| start(api.config(), watchdog.to_path_buf(), api_server)).await;
        match node {
            Ok(node) => Some(node),
            Err(e) => panic!("the test node did not start: {e}"),
        }
    }

    /// Runs the pods of `namespace` from now on.
    pub fn serve(&self, namespace: &str) {
        self.state.served.lock().unwrap().insert(namespace.to_string());
    }

    /// The node's address: where pods reach what runs on the host.
    pub fn ip(&self) -> std::net::Ipv4Addr {
        self.state.network.node_ip
    }

    /// Pulls images named `from…` from `to…` instead (a registry mirror, as containerd has).
    pub fn mirror(&self, from: &str, to: &str) {
        self.state.runtime.mirror(from, to);
    }

    /// What image `name` holds.
    pub fn image(&self, name: &str, image: Image) {
        self.state.images.lock().unwrap().insert(name.to_string(), image);
    }

    /// What pod `namespace/pod`'s containers have written so far.
    pub fn log(&self, namespace: &str, pod: &str) -> String {
        std::fs::read_to_string(log_path(&self.logs, namespace, pod)).unwrap_or_default()
    }
}

fn log_path(logs: &Path, namespace: &str, pod: &str) -> PathBuf {
    logs.join(format!("{namespace}_{pod}.log"))
}

/// The folder of test binary `pid`'s node: its pods' logs, volumes and container bundles.
pub(crate) fn node_dir(pid: u32) -> PathBuf {
    crate::scratch::path("test-node", pid, "pods")
}

async fn start(config: kube::Config, watchdog: PathBuf, api: Option<(u16, PathBuf)>) -> Result<TestNode, String> {
    let network = PodNetwork::create()?;
    let logs = crate::scratch::folder("test-node", "pods");
    let dir = logs.join("node");
    let name = format!("flint-test-node-{}", std::process::id());
    let state = Arc::new(Shared {
        served: Mutex::default(),
        images: Mutex::default(),
        network,
        watchdog,
        logs: logs.clone(),
        slots: Mutex::new(Slots { used: vec![false; PodNetwork::ADDRESSES as usize], last: 0 }),
        runtime: Runtime::new(&dir.join("runtime"), Vec::new())?,
        dir,
        api,
        services: Mutex::default(),
    });
    let (registered, result) = tokio::sync::oneshot::channel();
    let (node, shared) = (name.clone(), state.clone());
    // Its own thread and runtime: it outlives every test (each has its own runtime), and the
    // pods' processes are forked from this one thread, whose end is the binary's end
    // (their parent-death signal).
    std::thread::Builder::new()
        .name("test-node".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let client = match Client::try_from(config) {
                    Ok(c) => c,
                    Err(e) => return drop(registered.send(Err(e.to_string()))),
                };
                let kubelet = Kubelet { client, node, state: shared };
                if let Err(e) = kubelet.register().await {
                    return drop(registered.send(Err(e)));
                }
                let _ = registered.send(Ok(()));
                tokio::join!(kubelet.heartbeat(), kubelet.run_pods(), kubelet.follow_services());
            })
        })
        .map_err(|e| e.to_string())?;
    result.await.map_err(|_| "the test node's thread ended".to_string())??;
    Ok(TestNode { name, logs, state })
}

#[derive(Clone)]
struct Kubelet {
    client: Client,
    node: String,
    state: Arc<Shared>,
}

impl Kubelet {
    async fn register(&self) -> Result<(), String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH,
            "node.kubernetes.io/instance-type": "flint-test-node"}}});
        nodes
            .patch(&self.node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&node))
            .await
            .map_err(|e| format!("registering Node {}: {e}", self.node))?;
        self.beat(&now()).await
    }

    /// Node status and Lease, every [`HEARTBEAT`].
    async fn heartbeat(&self) {
        let since = now();
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = self.beat(&since).await {
                eprintln!("test node: heartbeat failed: {e}");
            }
        }
    }

    async fn beat(&self, since: &Value) -> Result<(), String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let condition = |type_: &str, status: &str, reason: &str| json!({"type": type_, "status": status, "reason": reason, "lastHeartbeatTime": now(), "lastTransitionTime": since});
        let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": PodNetwork::ADDRESSES.to_string()});
        let node_ip = self.state.network.node_ip.to_string();
        let status = json!({"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [{"type": "InternalIP", "address": node_ip}, {"type": "Hostname", "address": self.node}],
            "nodeInfo": {"machineID": "flint-test", "systemUUID": "flint-test", "bootID": "flint-test",
                "kernelVersion": "", "osImage": "flint test node", "containerRuntimeVersion": "flint-test://1",
                "kubeletVersion": "v1.36.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH},
        }});
        nodes
            .patch_status(&self.node, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| format!("Node status: {e}"))?;
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                     "renewTime": serde_json::to_value(MicroTime(Timestamp::now())).unwrap()}});
        leases
            .patch(&self.node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&lease))
            .await
            .map_err(|e| format!("node Lease: {e}"))?;
        Ok(())
    }

    /// Watches every pod; binds and runs those of the served namespaces.
    async fn run_pods(&self) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut running: HashMap<String, watch::Sender<Option<Duration>>> = HashMap::new();
        let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
        loop {
            let event = match events.try_next().await {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("test node: pod watch: {e}");
                    continue;
                }
            };
            match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => self.seen(pod, &mut running),
                watcher::Event::Delete(pod) => {
                    if let Some(stop) = running.remove(&uid(&pod)) {
                        let _ = stop.send(Some(Duration::ZERO));
                    }
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            running.retain(|_, stop| !stop.is_closed());
        }
    }

    fn seen(&self, pod: Pod, running: &mut HashMap<String, watch::Sender<Option<Duration>>>) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if !self.state.served.lock().unwrap().contains(&ns) {
            return;
        }
        let spec = pod.spec.as_ref();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match spec.and_then(|s| s.node_name.as_deref()) {
            None if !deleting => {
                let k = self.clone();
                tokio::spawn(async move { k.bind(&pod).await });
            }
            Some(n) if n == self.node => {
                let id = uid(&pod);
                if deleting {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
                    match running.get(&id) {
                        Some(stop) => {
                            let _ = stop.send(Some(Duration::from_secs(grace)));
                        }
                        // Never started here: nothing to stop, the deletion is ours to finish.
                        None => {
                            let api = self.pods(&ns);
                            tokio::spawn(async move { finish_deletion(&api, &pod).await });
                        }
                    }
                } else if !running.contains_key(&id) && !finished(&pod) {
                    let (stop, stopped) = watch::channel(None);
                    running.insert(id, stop);
                    let k = self.clone();
                    tokio::spawn(async move { k.run_pod(pod, stopped).await });
                }
            }
            _ => {}
        }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// What the scheduler would do: this node is the only one.
    async fn bind(&self, pod: &Pod) {
        let (name, ns) =
            (pod.metadata.name.clone().unwrap_or_default(), pod.metadata.namespace.clone().unwrap_or_default());
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                              "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}});
        let body = serde_json::to_vec(&binding).unwrap();
        let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        // A conflict is a pod already bound (an event seen twice): nothing to do.
        if let Err(e) = self.client.request_text(request).await
            && !e.to_string().contains("409")
        {
            eprintln!("test node: binding {ns}/{name}: {e}");
        }
    }

    async fn run_pod(&self, pod: Pod, stopped: watch::Receiver<Option<Duration>>) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api = self.pods(&ns);
        let Some(slot) = self.claim_slot() else {
            eprintln!("test node: no address left for pod {ns}/{}", pod.metadata.name.as_deref().unwrap_or(""));
            return;
        };
        let network = {
            let state = self.state.clone();
            tokio::task::spawn_blocking(move || state.network.pod(slot)).await.unwrap()
        };
        match network {
            Ok(netns) => {
                let mut run = PodRun::new(self, &pod, api.clone(), netns);
                run.supervise(stopped).await;
                run.clean_up();
                let netns = run.netns;
                let _ = tokio::task::spawn_blocking(move || drop(netns)).await;
                finish_deletion(&api, &pod).await;
            }
            Err(e) => eprintln!("test node: network for pod {ns}/{}: {e}", pod.metadata.name.as_deref().unwrap_or("")),
        }
        self.state.slots.lock().unwrap().used[slot as usize] = false;
    }

    /// What kube-proxy and cluster DNS give pods: every half second, the Services of the
    /// served namespaces (and `kubernetes`, the API server) with their ready endpoints, into
    /// every running pod's NAT table and hosts file when they change.
    async fn follow_services(&self) {
        let mut last: Option<(Vec<ServicePort>, String)> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = match self.services().await {
                Ok(now) => now,
                Err(e) => {
                    eprintln!("test node: reading Services: {e}");
                    continue;
                }
            };
            if last.as_ref() == Some(&now) {
                continue;
            }
            if let Err(e) = crate::netns::set_host_services(&now.0) {
                eprintln!("test node: services on the host: {e}");
            }
            let mut services = self.state.services.lock().unwrap();
            (services.ports, services.hosts) = now.clone();
            for (netns, hosts, own) in services.pods.values() {
                let _ = std::fs::write(hosts, format!("{own}{}", services.hosts));
                if let Err(e) = crate::netns::set_services(netns, &services.ports) {
                    eprintln!("test node: services in {netns}: {e}");
                }
            }
            last = Some(now);
        }
    }

    async fn services(&self) -> Result<(Vec<ServicePort>, String), kube::Error> {
        use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
        let mut ports = Vec::new();
        let mut hosts = String::new();
        if let Some((port, _)) = &self.state.api {
            ports.push(ServicePort {
                cluster_ip: KUBERNETES_SERVICE_IP,
                port: 443,
                to: vec![(self.state.network.node_ip, *port)],
            });
            hosts.push_str(&format!(
                "{KUBERNETES_SERVICE_IP} kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local\n"
            ));
        }
        let served: Vec<String> = self.state.served.lock().unwrap().iter().cloned().collect();
        for ns in served {
            let lp = kube::api::ListParams::default();
            let services = Api::<Service>::namespaced(self.client.clone(), &ns).list(&lp).await?;
            let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), &ns).list(&lp).await?;
            for svc in services {
                let name = svc.metadata.name.clone().unwrap_or_default();
                let spec = svc.spec.unwrap_or_default();
                let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else { continue };
                hosts.push_str(&format!("{ip} {name} {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local\n"));
                let mine: Vec<&EndpointSlice> = slices
                    .items
                    .iter()
                    .filter(|s| {
                        s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) == Some(&name)
                    })
                    .collect();
                for p in spec.ports.iter().flatten() {
                    let mut to = Vec::new();
                    for slice in &mine {
                        let port = slice.ports.iter().flatten().find(|sp| sp.name == p.name).and_then(|sp| sp.port);
                        let Some(port) = port else { continue };
                        for e in &slice.endpoints {
                            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                                continue;
                            }
                            if let Some(addr) = e.addresses.first().and_then(|a| a.parse().ok()) {
                                to.push((addr, port as u16));
                            }
                        }
                    }
                    to.sort();
                    ports.push(ServicePort { cluster_ip: ip, port: p.port as u16, to });
                }
            }
        }
        ports.sort_by_key(|p| (p.cluster_ip, p.port));
        Ok((ports, hosts))
    }

    fn claim_slot(&self) -> Option<u8> {
        let mut slots = self.state.slots.lock().unwrap();
        let n = slots.used.len();
        let slot = (1..=n).map(|i| (slots.last + i) % n).find(|&s| !slots.used[s])?;
        slots.used[slot] = true;
        slots.last = slot;
        Some(slot as u8)
    }
}

/// What the kubelet does once a deleted pod's containers are gone: removes the object.
async fn finish_deletion(api: &Api<Pod>, pod: &Pod) {
    if pod.metadata.deletion_timestamp.is_none() {
        // The process ended because the pod object is gone, or it is still wanted: either way
        // there is nothing to delete unless a deletion was asked for.
        match api.get_opt(pod.metadata.name.as_deref().unwrap_or_default()).await {
            Ok(Some(p)) if p.metadata.uid == pod.metadata.uid && p.metadata.deletion_timestamp.is_some() => {}
            _ => return,
        }
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    let _ = api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await;
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap()
}

/// One pod on the node: its container's life, as its status shows it.
struct PodRun {
    api: Api<Pod>,
    /// The node's name (the source of its Events).
    node: String,
    pod: Pod,
    container: Container,
    netns: crate::netns::PodNetns,
    node_ip: String,
    watchdog: PathBuf,
    logs: PathBuf,
    image: Option<Image>,
    client: Client,
    started: Value,
    restarts: u32,
    /// The container's `state` and `lastState`, as the API shows them.
    state: Value,
    last_state: Value,
    ready: bool,
    ready_since: Value,
    pid: Option<u32>,
    state_shared: Arc<Shared>,
    /// The pod's volumes on the node (their folder, and whether they are read-only), made at
    /// its first container start.
    volumes: Option<BTreeMap<String, (PathBuf, bool)>>,
    /// The container runc runs now, when the pod runs as a container.
    bundle: Option<runtime::Bundle>,
}

/// Why a container stopped running.
enum Ended {
    /// The pod is being deleted, with this grace.
    Stop(Duration),
    Exited,
    LivenessFailed,
}

impl PodRun {
    fn new(k: &Kubelet, pod: &Pod, api: Api<Pod>, netns: crate::netns::PodNetns) -> Self {
        let container = pod.spec.as_ref().map(|s| s.containers[0].clone()).unwrap_or_default();
        let image = k.state.images.lock().unwrap().get(container.image.as_deref().unwrap_or("")).cloned();
        PodRun {
            api,
            node: k.node.clone(),
            pod: pod.clone(),
            container,
            netns,
            node_ip: k.state.network.node_ip.to_string(),
            watchdog: k.state.watchdog.clone(),
            logs: k.state.logs.clone(),
            image,
            client: k.client.clone(),
            started: now(),
            restarts: 0,
            state: json!({"waiting": {"reason": "ContainerCreating"}}),
            last_state: json!({}),
            ready: false,
            ready_since: now(),
            pid: None,
            state_shared: k.state.clone(),
            volumes: None,
            bundle: None,
        }
    }

    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    /// Starts the container, restarts it when it ends, until the pod is deleted.
    async fn supervise(&mut self, mut stopped: watch::Receiver<Option<Duration>>) {
        let mut failures = 0u32;
        loop {
            match self.spawn().await {
                Ok(mut child) => {
                    self.pid = child.id();
                    self.event("Normal", "Started", &format!("Started container {}", self.container.name));
                    self.state = json!({"running": {"startedAt": now()}});
                    self.report().await;
                    let ended = self.watch(&mut child, &mut stopped).await;
                    let grace = match ended {
                        Ended::Stop(grace) => grace,
                        Ended::LivenessFailed => self.grace(),
                        Ended::Exited => Duration::ZERO,
                    };
                    let code = self.terminate(&mut child, grace).await;
                    if let Ended::Stop(_) = ended {
                        return;
                    }
                    let reason = if code == 0 { "Completed" } else { "Error" };
                    self.last_state = json!({"terminated": {"exitCode": code, "reason": reason,
                        "startedAt": self.state["running"]["startedAt"], "finishedAt": now()}});
                    self.restarts += 1;
                    self.set_ready(false);
                    self.state = json!({"waiting": {"reason": "CrashLoopBackOff"}});
                }
                Err((reason, message)) => self.state = json!({"waiting": {"reason": reason, "message": message}}),
            }
            self.pid = None;
            // The kubelet's back-off: again at once, then 10 s doubling up to 5 min.
            let backoff = match failures {
                0 => Duration::ZERO,
                n => Duration::from_secs((10u64 << (n - 1).min(5)).min(300)),
            };
            failures += 1;
            if self.state["waiting"]["reason"] == "CrashLoopBackOff" {
                self.state["waiting"]["message"] =
                    format!("back-off {backoff:?} restarting failed container {}", self.container.name).into();
            }
            if self.state["waiting"]["reason"] == "ErrImagePull" {
                // Said as it happened, then as the kubelet says it while it waits to try again.
                self.report().await;
                let why = self.state["waiting"]["message"].as_str().unwrap_or_default().to_string();
                let image = self.container.image.clone().unwrap_or_default();
                self.state = json!({"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{image}\": {why}")}});
            }
            self.report().await;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = deleted(&mut stopped) => return,
            }
        }
    }

    /// The container: from its image in a container, or as a process for an image the test
    /// mapped to a folder.
    async fn spawn(&mut self) -> Result<tokio::process::Child, (&'static str, String)> {
        match self.image.clone() {
            Some(image) => self.spawn_process(&image).await,
            None => self.spawn_container().await,
        }
    }

    /// The image's entrypoint (or the container's command) in the pod's network namespace.
    async fn spawn_process(&self, image: &Image) -> Result<tokio::process::Child, (&'static str, String)> {
        let mut base = BTreeMap::new();
        base.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        base.insert("HOME".into(), image.dir.display().to_string());
        base.insert("HOSTNAME".into(), self.name());
        base.extend(image.env.iter().cloned());
        let env = self.env(base).await.map_err(|e| ("CreateContainerConfigError", e))?;
        let mut argv: Vec<String> = self.container.command.clone().unwrap_or_default();
        argv.extend(self.container.args.clone().unwrap_or_default());
        let program = if argv.is_empty() { self.watchdog.display().to_string() } else { argv.remove(0) };
        let mut cmd = Command::new(&program);
        cmd.args(&argv).env_clear().envs(env).current_dir(&image.dir);
        self.output_to_log(&mut cmd)?;
        let netns = std::fs::File::open(self.netns.path()).map_err(|e| ("RunContainerError", e.to_string()))?;
        // SAFETY: setns and prctl are plain system calls on the child being set up.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        cmd.spawn().map_err(|e| ("RunContainerError", format!("starting {program}: {e}")))
    }

    fn output_to_log(&self, cmd: &mut Command) -> Result<(), (&'static str, String)> {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&self.logs, &ns, &self.name()))
            .map_err(|e| ("RunContainerError", format!("opening the pod's log: {e}")))?;
        let log_too = log.try_clone().map_err(|e| ("RunContainerError", e.to_string()))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_too);
        Ok(())
    }

    /// The pod's image, pulled and run by runc with what the pod's spec says.
    async fn spawn_container(&mut self) -> Result<tokio::process::Child, (&'static str, String)> {
        let image = self.container.image.clone().unwrap_or_default();
        let policy = self.container.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into());
        let pulling = std::time::Instant::now();
        let pulled = match self.state_shared.runtime.pull(&image, &policy).await {
            Ok(p) => p,
            Err((reason, why)) => {
                self.event("Warning", "Failed", &format!("Failed to pull image \"{image}\": {why}"));
                return Err((reason, why));
            }
        };
        let took = pulling.elapsed();
        let pulled_message = if took < Duration::from_millis(50) {
            format!("Container image \"{image}\" already present on machine")
        } else {
            format!("Successfully pulled image \"{image}\" in {:.3}s", took.as_secs_f64())
        };
        self.event("Normal", "Pulled", &pulled_message);
        let config = |e: String| ("CreateContainerConfigError", e);
        let volumes = self.volumes().await.map_err(config)?;
        let (uid, gid) = self.user(&pulled.config).map_err(config)?;
        let mut base = runtime::image_env(&pulled.config);
        base.insert("HOSTNAME".into(), self.name());
        if self.state_shared.api.is_some() {
            let ip = KUBERNETES_SERVICE_IP.to_string();
            base.insert("KUBERNETES_SERVICE_HOST".into(), ip.clone());
            base.insert("KUBERNETES_SERVICE_PORT".into(), "443".into());
            base.insert("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into());
            base.insert("KUBERNETES_PORT".into(), format!("tcp://{ip}:443"));
        }
        let env = self.env(base).await.map_err(config)?;
        let security = self.container.security_context.clone().unwrap_or_default();
        let mut mounts = Vec::new();
        for m in self.container.volume_mounts.iter().flatten() {
            let (source, read_only) = volumes
                .get(&m.name)
                .cloned()
                .ok_or_else(|| config(format!("volumeMount {} names no volume of the pod", m.name)))?;
            let source = match m.sub_path.as_deref().filter(|p| !p.is_empty()) {
                Some(sub) => source.join(sub),
                None => source,
            };
            mounts.push(runtime::Mount {
                source,
                destination: m.mount_path.clone(),
                read_only: read_only || m.read_only == Some(true),
            });
        }
        let hosts = self.hosts_file();
        mounts.push(runtime::Mount { source: hosts, destination: "/etc/hosts".into(), read_only: true });
        let memory_limit = self
            .container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| memory_bytes(&q.0));
        let spec = runtime::Spec {
            args: runtime::argv(
                &pulled.config,
                self.container.command.as_deref().unwrap_or_default(),
                self.container.args.as_deref().unwrap_or_default(),
            ),
            env: env.into_iter().collect(),
            cwd: self
                .container
                .working_dir
                .clone()
                .or_else(|| Some(pulled.config.config.working_dir.clone()).filter(|d| !d.is_empty()))
                .unwrap_or_else(|| "/".into()),
            uid,
            gid,
            read_only_root: security.read_only_root_filesystem == Some(true),
            drop_all_capabilities: security
                .capabilities
                .and_then(|c| c.drop)
                .is_some_and(|d| d.iter().any(|c| c == "ALL")),
            no_new_privileges: security.allow_privilege_escalation == Some(false),
            memory_limit,
            mounts,
            netns: self.netns.path(),
            hostname: self.name(),
        };
        let id = format!("flint-{}-{}-{}", std::process::id(), self.name(), self.restarts);
        let bundle =
            self.state_shared.runtime.create(&id, &pulled, &spec).await.map_err(|e| ("CreateContainerError", e))?;
        let mut cmd = Command::new("runc");
        cmd.args(["run", "--bundle"]).arg(&bundle.dir).arg(&id);
        self.output_to_log(&mut cmd)?;
        // SAFETY: prctl is a plain system call on the child being set up.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| ("RunContainerError", format!("runc: {e}")))?;
        self.bundle = Some(bundle);
        self.event("Normal", "Created", &format!("Created container {}", self.container.name));
        Ok(child)
    }

    /// The container's user: the pod's `runAsUser`/`runAsGroup`, else the image's; refused,
    /// in the kubelet's words, under `runAsNonRoot` when it is root or cannot be told.
    fn user(&self, image: &flint_images::oci::ImageConfig) -> Result<(u32, u32), String> {
        let pod = self.pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
        let own = self.container.security_context.clone().unwrap_or_default();
        let run_as_user = own.run_as_user.or(pod.run_as_user);
        let run_as_group = own.run_as_group.or(pod.run_as_group);
        let non_root = own.run_as_non_root.or(pod.run_as_non_root) == Some(true);
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let who = format!("pod: \"{}_{ns}({})\", container: {}", self.name(), uid(&self.pod), self.container.name);
        let (uid, gid) = match (run_as_user, runtime::image_user(image)) {
            (Some(u), image) => {
                (u as u32, run_as_group.map(|g| g as u32).unwrap_or_else(|| image.map_or(0, |(_, g)| g)))
            }
            (None, Ok((u, g))) => (u, run_as_group.map(|g| g as u32).unwrap_or(g)),
            (None, Err(name)) if non_root => {
                return Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root ({who})"
                ));
            }
            (None, Err(name)) => {
                return Err(format!(
                    "the test node cannot run an image whose user is a name ({name}); give it a number"
                ));
            }
        };
        if non_root && uid == 0 {
            return Err(format!("container has runAsNonRoot and image will run as root ({who})"));
        }
        Ok((uid, gid))
    }

    /// The pod's volumes, made on the node once (a kubelet's volume manager): Secrets and
    /// ConfigMaps as files, projected ServiceAccount tokens (a TokenRequest bound to the pod),
    /// the CA and the namespace, emptyDirs, and claims as folders of the node that outlive the
    /// pod. Writable ones belong to the pod's `fsGroup`, as the kubelet makes them.
    async fn volumes(&mut self) -> Result<BTreeMap<String, (PathBuf, bool)>, String> {
        if let Some(v) = &self.volumes {
            return Ok(v.clone());
        }
        use k8s_openapi::api::core::v1::ConfigMap;
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group).map(|g| g as u32);
        let root = self.state_shared.dir.join("pods").join(uid(&self.pod)).join("volumes");
        let mut out = BTreeMap::new();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        for v in spec.volumes.iter().flatten() {
            let dir = root.join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let mode = |m: Option<i32>| m.map(|m| m as u32).unwrap_or(0o644);
            if let Some(secret) = &v.secret {
                let name = secret.secret_name.clone().unwrap_or_default();
                let data = match secrets.get_opt(&name).await.map_err(|e| e.to_string())? {
                    Some(s) => s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
                    None if secret.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("secret \"{name}\" not found")),
                };
                let items: Vec<(String, String)> =
                    secret.items.iter().flatten().map(|i| (i.key.clone(), i.path.clone())).collect();
                write_keys(&dir, &data, &items, mode(secret.default_mode))?;
                out.insert(v.name.clone(), (dir, true));
            } else if let Some(map) = &v.config_map {
                let data = match maps.get_opt(&map.name).await.map_err(|e| e.to_string())? {
                    Some(m) => config_map_data(m),
                    None if map.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("configmap \"{}\" not found", map.name)),
                };
                let items: Vec<(String, String)> =
                    map.items.iter().flatten().map(|i| (i.key.clone(), i.path.clone())).collect();
                write_keys(&dir, &data, &items, mode(map.default_mode))?;
                out.insert(v.name.clone(), (dir, true));
            } else if let Some(projected) = &v.projected {
                for source in projected.sources.iter().flatten() {
                    if let Some(token) = &source.service_account_token {
                        let account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
                        let t = self
                            .token(&ns, &account, token.expiration_seconds.unwrap_or(3607), token.audience.clone())
                            .await?;
                        write_file(&dir.join(&token.path), t.as_bytes(), 0o644)?;
                    }
                    if let Some(map) = &source.config_map {
                        let data = maps
                            .get(&map.name)
                            .await
                            .map(config_map_data)
                            .map_err(|e| format!("configmap {}: {e}", map.name))?;
                        let items: Vec<(String, String)> =
                            map.items.iter().flatten().map(|i| (i.key.clone(), i.path.clone())).collect();
                        write_keys(&dir, &data, &items, mode(projected.default_mode))?;
                    }
                    if let Some(secret) = &source.secret {
                        let data =
                            secrets.get(&secret.name).await.map_err(|e| format!("secret {}: {e}", secret.name))?;
                        let data = data.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                        let items: Vec<(String, String)> =
                            secret.items.iter().flatten().map(|i| (i.key.clone(), i.path.clone())).collect();
                        write_keys(&dir, &data, &items, mode(projected.default_mode))?;
                    }
                    for item in source.downward_api.iter().flat_map(|d| d.items.iter().flatten()) {
                        let value = match item.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                            Some("metadata.namespace") => ns.clone(),
                            Some("metadata.name") => self.name(),
                            other => return Err(format!("the test node cannot project {other:?}")),
                        };
                        write_file(&dir.join(&item.path), value.as_bytes(), 0o644)?;
                    }
                }
                out.insert(v.name.clone(), (dir, true));
            } else if v.empty_dir.is_some() {
                owned_by(&dir, fs_group)?;
                out.insert(v.name.clone(), (dir, false));
            } else if let Some(claim) = &v.persistent_volume_claim {
                let _ = std::fs::remove_dir_all(&dir);
                let dir = self.state_shared.dir.join("claims").join(&ns).join(&claim.claim_name);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                owned_by(&dir, fs_group)?;
                out.insert(v.name.clone(), (dir, claim.read_only == Some(true)));
            } else {
                return Err(format!(
                    "volume {}: the test node mounts Secrets, ConfigMaps, projected, emptyDir and claims only",
                    v.name
                ));
            }
        }
        self.volumes = Some(out.clone());
        Ok(out)
    }

    /// A ServiceAccount token bound to the pod (what the kubelet asks the API server for).
    async fn token(&self, ns: &str, account: &str, seconds: i64, audience: Option<String>) -> Result<String, String> {
        let mut spec = json!({"expirationSeconds": seconds.max(600),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name(), "uid": uid(&self.pod)}});
        if let Some(a) = audience {
            spec["audiences"] = json!([a]);
        }
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let request = http::Request::post(format!("/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let answer: Value =
            self.client.request(request).await.map_err(|e| format!("a token for {ns}/{account}: {e}"))?;
        answer["status"]["token"].as_str().map(str::to_string).ok_or_else(|| format!("no token for {ns}/{account}"))
    }

    /// The pod's `/etc/hosts`: its own name, and the cluster's Services (kept current).
    fn hosts_file(&self) -> PathBuf {
        let path = self.state_shared.dir.join("pods").join(uid(&self.pod)).join("hosts");
        let _ = std::fs::create_dir_all(path.parent().expect("a folder"));
        let own = format!("127.0.0.1 localhost\n::1 localhost\n{} {}\n", self.netns.addr, self.name());
        let mut services = self.state_shared.services.lock().unwrap();
        let _ = std::fs::write(&path, format!("{own}{}", services.hosts));
        if let Err(e) = crate::netns::set_services(&self.netns.name, &services.ports) {
            eprintln!("test node: services for pod {}: {e}", self.name());
        }
        services.pods.insert(uid(&self.pod), (self.netns.name.clone(), path.clone(), own));
        path
    }

    /// The container's environment: `env` (the image's, and what the node adds), then the
    /// container's (values, Secret keys, the pod's own fields), as a container runtime builds it.
    async fn env(&self, mut env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = |name: String| {
            let secrets = secrets.clone();
            async move {
                secrets
                    .get(&name)
                    .await
                    .map_err(|e| format!("secret {name:?}: {e}"))
                    .map(|s| s.data.unwrap_or_default())
            }
        };
        for from in self.container.env_from.iter().flatten() {
            if let Some(r) = &from.secret_ref {
                for (k, v) in secret(r.name.clone()).await? {
                    env.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
            }
        }
        for var in self.container.env.iter().flatten() {
            let value = match (&var.value, var.value_from.as_ref()) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    if let Some(key) = &from.secret_key_ref {
                        let data = secret(key.name.clone()).await?;
                        match data.get(&key.key) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if key.optional == Some(true) => continue,
                            None => return Err(format!("couldn't find key {} in Secret {ns}/{}", key.key, key.name)),
                        }
                    } else if let Some(field) = &from.field_ref {
                        match field.field_path.as_str() {
                            "metadata.name" => self.name(),
                            "metadata.namespace" => ns.clone(),
                            "status.podIP" => self.netns.addr.to_string(),
                            "spec.nodeName" => {
                                self.pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
                            }
                            other => return Err(format!("the test node cannot resolve fieldRef {other}")),
                        }
                    } else {
                        return Err(format!("the test node cannot resolve env {}", var.name));
                    }
                }
                (None, None) => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env)
    }

    /// Runs the probes until the container ends or the pod is deleted.
    async fn watch(
        &mut self,
        child: &mut tokio::process::Child,
        stopped: &mut watch::Receiver<Option<Duration>>,
    ) -> Ended {
        let readiness = self.container.readiness_probe.clone();
        let liveness = self.container.liveness_probe.clone();
        let start = tokio::time::Instant::now();
        // The kubelet probes readiness as soon as it sees the container running, then every period.
        let mut next_ready = start;
        let mut next_live = start + delay(liveness.as_ref()) + period(liveness.as_ref());
        let (mut ready_fails, mut live_fails) = (0, 0);
        if readiness.is_none() {
            self.set_ready(true);
            self.report().await;
        }
        loop {
            tokio::select! {
                _ = child.wait() => return Ended::Exited,
                grace = deleted(stopped) => return Ended::Stop(grace),
                _ = tokio::time::sleep_until(next_ready), if readiness.is_some() => {
                    let probe = readiness.as_ref().unwrap();
                    next_ready = tokio::time::Instant::now() + period(Some(probe));
                    let ok = self.probe(probe).await;
                    ready_fails = if ok { 0 } else { ready_fails + 1 };
                    let threshold = probe.failure_threshold.unwrap_or(3).max(1);
                    let ready = if ok { true } else if ready_fails >= threshold { false } else { self.ready };
                    if ready != self.ready {
                        self.set_ready(ready);
                        self.report().await;
                    }
                }
                _ = tokio::time::sleep_until(next_live), if liveness.is_some() => {
                    let probe = liveness.as_ref().unwrap();
                    next_live = tokio::time::Instant::now() + period(Some(probe));
                    live_fails = if self.probe(probe).await { 0 } else { live_fails + 1 };
                    if live_fails >= probe.failure_threshold.unwrap_or(3).max(1) {
                        return Ended::LivenessFailed;
                    }
                }
            }
        }
    }

    /// An HTTP GET probe: any answer from 200 to 399 within the probe's timeout.
    async fn probe(&self, probe: &Probe) -> bool {
        let Some(get) = &probe.http_get else { return true };
        let port = match &get.port {
            IntOrString::Int(p) => *p,
            IntOrString::String(name) => {
                let ports = self.container.ports.iter().flatten();
                match ports.into_iter().find(|p| p.name.as_deref() == Some(name)) {
                    Some(p) => p.container_port,
                    None => return false,
                }
            }
        };
        let addr = SocketAddr::new(IpAddr::V4(self.netns.addr), port as u16);
        let url = format!("http://{addr}{}", get.path.as_deref().unwrap_or("/"));
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        matches!(tokio::time::timeout(timeout, crate::get(&url)).await, Ok(Ok(r)) if (200..400).contains(&r.status))
    }

    /// SIGTERM to the container's first process (runc passes it on), then SIGKILL after
    /// `grace`; its exit code (128 + signal when killed). A container's bundle goes with it.
    async fn terminate(&mut self, child: &mut tokio::process::Child, grace: Duration) -> i32 {
        let (container, pid) = (self.bundle.as_ref().map(|b| b.id.clone()), child.id());
        let signal = |signal: nix::sys::signal::Signal| match (&container, pid) {
            (Some(id), _) => {
                let _ = std::process::Command::new("runc").args(["kill", id, signal.as_str()]).output();
            }
            (None, Some(pid)) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
            (None, None) => {}
        };
        signal(nix::sys::signal::Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                signal(nix::sys::signal::Signal::SIGKILL);
                let _ = child.start_kill();
                child.wait().await
            }
        };
        if let Some(bundle) = self.bundle.take() {
            self.state_shared.runtime.remove(&bundle);
        }
        use std::os::unix::process::ExitStatusExt;
        status.map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))).unwrap_or(137)
    }

    /// What the pod leaves on the node once it is gone: its volumes and its place in the
    /// Services' followers (claims stay).
    fn clean_up(&mut self) {
        self.state_shared.services.lock().unwrap().pods.remove(&uid(&self.pod));
        let _ = std::fs::remove_dir_all(self.state_shared.dir.join("pods").join(uid(&self.pod)));
    }

    fn grace(&self) -> Duration {
        let secs = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn set_ready(&mut self, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            self.ready_since = now();
        }
    }

    /// An Event about the pod's container, as the kubelet records them (`Pulled`, `Created`,
    /// `Started`, `Failed`), sent without waiting: as the kubelet's event broadcaster does,
    /// the container does not wait for the API server.
    fn event(&self, type_: &str, reason: &str, message: &str) {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let now = now();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{:016x}", self.name(), fastrand::u64(..)), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": self.name(),
                "uid": self.pod.metadata.uid, "fieldPath": format!("spec.containers{{{}}}", self.container.name)},
            "type": type_, "reason": reason, "message": message, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
        });
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            let event = serde_json::from_value(event).expect("an Event");
            match events.create(&Default::default(), &event).await {
                // The pod's namespace going away at the end of a test takes its events along.
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("being terminated") => {}
                Err(e) => eprintln!("test node: an event: {e}"),
                Ok(_) => {}
            }
        });
    }

    /// Writes the pod's status as the kubelet does.
    async fn report(&self) {
        let ready = if self.ready { "True" } else { "False" };
        let condition = |type_: &str, status: &str, since: &Value| json!({"type": type_, "status": status, "lastTransitionTime": since});
        let running = self.state.get("running").is_some();
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": self.netns.addr.to_string(), "podIPs": [{"ip": self.netns.addr.to_string()}],
            "startTime": self.started,
            "conditions": [
                condition("PodScheduled", "True", &self.started),
                condition("Initialized", "True", &self.started),
                condition("ContainersReady", ready, &self.ready_since),
                condition("Ready", ready, &self.ready_since),
            ],
            "containerStatuses": [{
                "name": self.container.name, "image": self.container.image, "imageID": self.container.image,
                "containerID": self.pid.map(|p| format!("flint-test://{p}")),
                "ready": self.ready, "started": running, "restartCount": self.restarts,
                "state": self.state, "lastState": self.last_state,
            }],
        }});
        if let Err(e) = self.api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&status)).await {
            // A pod deleted meanwhile has no status to write.
            if !e.to_string().contains("404") {
                eprintln!("test node: status of pod {}: {e}", self.name());
            }
        }
    }
}

/// Waits until the pod is deleted; the grace it has.
async fn deleted(stopped: &mut watch::Receiver<Option<Duration>>) -> Duration {
    let grace = stopped.wait_for(Option::is_some).await.map(|g| g.unwrap_or_default());
    grace.unwrap_or_default()
}

fn period(probe: Option<&Probe>) -> Duration {
    Duration::from_secs(probe.and_then(|p| p.period_seconds).unwrap_or(10).max(1) as u64)
}

fn delay(probe: Option<&Probe>) -> Duration {
    Duration::from_secs(probe.and_then(|p| p.initial_delay_seconds).unwrap_or(0).max(0) as u64)
}

/// A quantity of memory (`512Mi`, `1G`, `2000000`) in bytes.
fn memory_bytes(q: &str) -> Option<i64> {
    let split = q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: f64 = n.parse().ok()?;
    let factor = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        _ => return None,
    };
    Some((n * factor) as i64)
}

fn config_map_data(m: k8s_openapi::api::core::v1::ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        m.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    out.extend(m.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    out
}

/// Every key (or the `items` asked for, key to path) as a file of `dir`.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[(String, String)],
    mode: u32,
) -> Result<(), String> {
    if items.is_empty() {
        for (key, value) in data {
            write_file(&dir.join(key), value, mode)?;
        }
    }
    for (key, path) in items {
        let value = data.get(key).ok_or_else(|| format!("key {key} is not there"))?;
        write_file(&dir.join(path), value, mode)?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// A writable volume: the pod's `fsGroup` owns it (setgid, group-writable), or anyone may write.
fn owned_by(dir: &Path, group: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(dir, None, Some(g)).map_err(|e| e.to_string())?;
            0o2775
        }
        None => 0o777,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}
