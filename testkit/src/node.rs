//! A test node: a kubelet stand-in for the test control plane, in the spirit of KWOK, except
//! that it really runs the pods. It registers a `Node` (Ready, with capacity) and keeps it
//! alive (status heartbeat and its Lease in `kube-node-lease` every 10 s, or the node lifecycle
//! controller would mark it Unknown and evict its pods), binds the Pending pods of the
//! namespaces it serves, and runs each one: the first container's `command`/`args`, or the
//! image's entrypoint (the `watchdog` binary), with the container's env and the env of the
//! image (a test maps image names to a folder and env: [`TestNode::image`]), in the pod's own
//! network namespace ([`crate::netns`]). It reports what a kubelet reports (`podIP`, phase,
//! conditions, container state), runs the readiness and liveness probes, stops a deleted pod
//! with SIGTERM, `terminationGracePeriodSeconds`, SIGKILL, and restarts a container that exits,
//! with the kubelet's back-off (10 s doubling to 5 min, `CrashLoopBackOff`). The real
//! kube-controller-manager does the rest (ReplicaSets, EndpointSlices).
//!
//! Each pod's output goes to `<logs>/<namespace>_<pod>.log` (`TestNode::logs`, in the temp
//! folder, kept after the run for a look; a later run removes those of binaries that are gone).
//!
//! Not modelled: more than one container, volumes (Secrets are not mounted), resource limits,
//! user and security settings; a pod whose container needs them still runs.

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

use crate::{kube_api::TestApi, netns::PodNetwork};

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
        let node = NODE.get_or_init(|| start(api.config(), watchdog.to_path_buf())).await;
        match node {
            Ok(node) => Some(node),
            Err(e) => panic!("the test node did not start: {e}"),
        }
    }

    /// Runs the pods of `namespace` from now on.
    pub fn serve(&self, namespace: &str) {
        self.state.served.lock().unwrap().insert(namespace.to_string());
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

/// The pods' log folder of this binary, after removing those of binaries that are gone.
fn logs_dir() -> Result<PathBuf, String> {
    const PREFIX: &str = "flint-test-node-";
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(PREFIX).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

async fn start(config: kube::Config, watchdog: PathBuf) -> Result<TestNode, String> {
    let network = PodNetwork::create()?;
    let logs = logs_dir()?;
    let name = format!("flint-test-node-{}", std::process::id());
    let state = Arc::new(Shared {
        served: Mutex::default(),
        images: Mutex::default(),
        network,
        watchdog,
        logs: logs.clone(),
        slots: Mutex::new(Slots { used: vec![false; PodNetwork::ADDRESSES as usize], last: 0 }),
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
                tokio::join!(kubelet.heartbeat(), kubelet.run_pods());
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
                let netns = run.netns;
                let _ = tokio::task::spawn_blocking(move || drop(netns)).await;
                finish_deletion(&api, &pod).await;
            }
            Err(e) => eprintln!("test node: network for pod {ns}/{}: {e}", pod.metadata.name.as_deref().unwrap_or("")),
        }
        self.state.slots.lock().unwrap().used[slot as usize] = false;
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
            self.report().await;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = deleted(&mut stopped) => return,
            }
        }
    }

    /// The image's entrypoint (or the container's command) in the pod's network namespace.
    async fn spawn(&self) -> Result<tokio::process::Child, (&'static str, String)> {
        let image_name = self.container.image.clone().unwrap_or_default();
        let image = self.image.clone().ok_or_else(|| {
            ("ErrImagePull", format!("the test node has no image {image_name:?} (TestNode::image maps it)"))
        })?;
        let env = self.env(&image).await.map_err(|e| ("CreateContainerConfigError", e))?;
        let mut argv: Vec<String> = self.container.command.clone().unwrap_or_default();
        argv.extend(self.container.args.clone().unwrap_or_default());
        let program = if argv.is_empty() { self.watchdog.display().to_string() } else { argv.remove(0) };
        let mut cmd = Command::new(&program);
        cmd.args(&argv).env_clear().envs(env).current_dir(&image.dir);
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&self.logs, &ns, &self.name()))
            .map_err(|e| ("RunContainerError", format!("opening the pod's log: {e}")))?;
        let log_too = log.try_clone().map_err(|e| ("RunContainerError", e.to_string()))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_too);
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

    /// The container's environment: the image's, then the container's (values, Secret keys,
    /// the pod's own fields), as a container runtime builds it.
    async fn env(&self, image: &Image) -> Result<BTreeMap<String, String>, String> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".into(), image.dir.display().to_string());
        env.insert("HOSTNAME".into(), self.name());
        env.extend(image.env.iter().cloned());
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

    /// SIGTERM, then SIGKILL after `grace`; its exit code (128 + signal when killed).
    async fn terminate(&self, child: &mut tokio::process::Child, grace: Duration) -> i32 {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        use std::os::unix::process::ExitStatusExt;
        status.map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))).unwrap_or(137)
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
