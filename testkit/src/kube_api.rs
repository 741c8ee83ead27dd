//! A real Kubernetes API server for tests, the envtest way: etcd, kube-apiserver and
//! kube-controller-manager from the folder named by `KUBEBUILDER_ASSETS`, on free loopback
//! ports, one control plane per test binary (started by the first test that asks), each test in
//! its own namespace. `FLINT_TEST_KUBECONFIG` points the same tests at any cluster instead.
//!
//! Without either, [`TestApi::get`] returns `None` and records the test as skipped, with the
//! reason, in the file named by `FLINT_SKIP_LOG` (`scripts/test` prints them in its summary):
//! a skipped test must never read as a passed one.
//!
//! The control plane's processes die with the test binary ([`crate::spawn_for_life`]), so a
//! test that panics (or a binary that is killed) leaves nothing running. Their data and logs
//! are in a temporary folder, named in the failure messages; folders of earlier runs whose
//! process is gone are removed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Client, Config,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::OnceCell;

use crate::free_port;

/// What a test is given: an API server to talk to as an administrator, or as anyone.
pub struct TestApi {
    /// A kubeconfig file for tools (`kubectl`, `helm`) and for processes under test.
    pub kubeconfig: PathBuf,
    config: Config,
    /// `kubectl` from the assets folder, when there is one.
    kubectl: Option<PathBuf>,
    /// The control plane's folder (logs), when the tests started one.
    pub dir: Option<PathBuf>,
    /// The API server's port on every address of this host (pods reach it through the
    /// `kubernetes` Service's cluster IP), when the tests started it.
    pub port: Option<u16>,
}

/// The `kubernetes` Service's cluster IP: the first of `--service-cluster-ip-range`, and one of
/// the addresses the API server's certificate names.
pub const KUBERNETES_SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);

static API: OnceCell<Result<TestApi, String>> = OnceCell::const_new();

/// The field manager of what tests apply as fixtures.
const FIELD_MANAGER: &str = "flint-test";

/// Why there is no API to test against, when there is none.
fn absent() -> Option<String> {
    let has = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    (!has("KUBEBUILDER_ASSETS") && !has("FLINT_TEST_KUBECONFIG"))
        .then(|| "no Kubernetes API: set KUBEBUILDER_ASSETS (kube-apiserver, kube-controller-manager; etcd there or on PATH) or FLINT_TEST_KUBECONFIG".to_string())
}

impl TestApi {
    /// The certificate (with its CA) the API server serves, which in-cluster clients trust
    /// (their ServiceAccount volume's `ca.crt`), when the tests started it.
    pub fn ca(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("certs/apiserver.crt"))
    }

    /// The API for this test binary, started on first use. `None` when none is configured: the
    /// calling test is recorded as skipped and should return at once. A control plane that is
    /// configured but fails to start fails the test.
    pub async fn get() -> Option<&'static TestApi> {
        if let Some(reason) = absent() {
            skip(&reason);
            return None;
        }
        let api = API.get_or_init(|| async { start().await }).await;
        match api {
            Ok(api) => Some(api),
            Err(e) => panic!("the test Kubernetes API did not start: {e}"),
        }
    }

    /// The administrator's client configuration.
    pub(crate) fn config(&self) -> Config {
        self.config.clone()
    }

    /// A client with the administrator's rights. Each test makes its own: a client belongs to
    /// the runtime that made it, and every `#[tokio::test]` has its own.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("a client from the test kubeconfig")
    }

    /// A client acting as `user` in `groups` (impersonation), so RBAC applies as it would to
    /// that user.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Client {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        Client::try_from(config).expect("an impersonating client")
    }

    /// A client acting as a ServiceAccount, with exactly the rights RBAC gives it.
    pub fn client_as_service_account(&self, namespace: &str, name: &str) -> Client {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.client_as(&user, &["system:serviceaccounts", &ns_group, "system:authenticated"])
    }

    /// A kubeconfig file acting as a ServiceAccount (for processes under test).
    pub fn kubeconfig_as_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("the test kubeconfig");
        let mut doc: serde_json::Value = serde_saphyr::from_str(&text).expect("the test kubeconfig is YAML");
        let user = format!("system:serviceaccount:{namespace}:{name}");
        for u in doc["users"].as_array_mut().into_iter().flatten() {
            u["user"]["as"] = user.clone().into();
            u["user"]["as-groups"] = serde_json::json!([
                "system:serviceaccounts",
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated"
            ]);
        }
        let path = crate::scratch::file("kubeconfig", format!("{namespace}-{name}"));
        std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
        path
    }

    /// The operator binary at `binary`, reconciling `namespace` as release `release`'s operator
    /// ServiceAccount (see [`TestApi::install_chart_rbac`]), leading through a Lease of its own
    /// in that namespace; its telemetry on `telemetry` (a loopback port).
    pub fn start_operator(
        &self,
        binary: &Path,
        namespace: &str,
        release: &str,
        identity: &str,
        telemetry: u16,
        extra: &[&str],
    ) -> crate::Spawned {
        let kubeconfig = self.kubeconfig_as_service_account(namespace, &format!("{release}-operator"));
        let lease = format!("{release}-operator");
        let telemetry = format!("127.0.0.1:{telemetry}");
        let mut args = vec![
            "run",
            "--namespace",
            namespace,
            "--lease-namespace",
            namespace,
            "--lease-name",
            &lease,
            "--telemetry-addr",
            &telemetry,
        ];
        args.extend_from_slice(extra);
        let env = [("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAME", identity), ("RUST_LOG", "info")];
        crate::Spawned::start(binary.to_str().expect("a UTF-8 path"), &args, &env)
    }

    /// A fresh namespace for one test, deleted when dropped (also when the test panics).
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = format!("{prefix}-{}", fastrand::u32(..) % 1_000_000);
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(self.client());
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        namespaces.create(&Default::default(), &ns).await.unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace { name, config: self.config.clone() }
    }

    /// Installs (server-side applies) a CustomResourceDefinition and waits until it is served.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) {
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(self.client());
        let name = crd.metadata.name.clone().expect("a named CRD");
        crds.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(crd))
            .await
            .unwrap_or_else(|e| panic!("the API server refused the CRD {name}: {e}"));
        crate::wait_for(&format!("the CRD {name} to be established"), Duration::from_secs(60), || async {
            let crd = crds.get(&name).await.ok()?;
            crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
    }

    /// Server-side applies each object (any kind the API server knows), as a test fixture.
    pub async fn apply(&self, objects: &[serde_json::Value]) {
        let client = self.client();
        let discovery = kube::Discovery::new(client.clone()).run().await.expect("API discovery");
        for object in objects {
            let obj: DynamicObject = serde_json::from_value(object.clone()).expect("a Kubernetes object");
            let gvk = obj.types.as_ref().map(|t| GroupVersionKind::try_from(t).expect("apiVersion and kind"));
            let gvk = gvk.expect("an object with apiVersion and kind");
            let (resource, caps) =
                discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("the API server has no {gvk:?}"));
            let api: kube::Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
                (kube::discovery::Scope::Namespaced, Some(ns)) => {
                    kube::Api::namespaced_with(client.clone(), ns, &resource)
                }
                (kube::discovery::Scope::Namespaced, None) => {
                    kube::Api::default_namespaced_with(client.clone(), &resource)
                }
                (kube::discovery::Scope::Cluster, _) => kube::Api::all_with(client.clone(), &resource),
            };
            let name = obj.metadata.name.clone().expect("a named object");
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&obj))
                .await
                .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
        }
    }

    /// Renders the Helm chart as release `release` in `namespace`, which is also its function
    /// namespace (with more `--set` values), and applies its ServiceAccounts and RBAC, so that a
    /// test can act as one of its components.
    pub async fn install_chart_rbac(&self, release: &str, namespace: &str, set: &[&str]) {
        let mut cmd = crate::helm();
        cmd.args(["template", release, "charts/flint", "--namespace", namespace]);
        cmd.args(["--set", &format!("functionNamespaces={{{namespace}}}")]);
        cmd.args(["--set", &format!("gateway.functionNamespace={namespace}")]);
        for value in set {
            cmd.args(["--set", value]);
        }
        let out = cmd.output().expect("running helm");
        assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("helm renders YAML");
        let rbac: Vec<serde_json::Value> = docs
            .into_iter()
            .filter(|d| {
                matches!(
                    d["kind"].as_str(),
                    Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
                )
            })
            .map(|mut d| {
                if d["kind"] != "ClusterRole"
                    && d["kind"] != "ClusterRoleBinding"
                    && d["metadata"]["namespace"].is_null()
                {
                    d["metadata"]["namespace"] = namespace.into();
                }
                d
            })
            .collect();
        assert!(rbac.len() >= 4, "the chart rendered no RBAC for {release}");
        self.apply(&rbac).await;
    }

    /// `kubectl` with this API's kubeconfig; `None` where the assets have no kubectl.
    pub fn kubectl(&self) -> Option<Command> {
        let mut cmd = Command::new(self.kubectl.as_ref()?);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Some(cmd)
    }

    /// Where to look when something went wrong.
    pub fn logs(&self) -> String {
        match &self.dir {
            Some(d) => format!("control plane logs in {}", d.display()),
            None => "(an external cluster)".into(),
        }
    }
}

/// A namespace that lives as long as the test.
pub struct TestNamespace {
    pub name: String,
    config: Config,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (name, config) = (self.name.clone(), self.config.clone());
        // Drop cannot await, and the test's runtime may be going away: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(client) = Client::try_from(config) else { return };
                let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
                let _ = namespaces.delete(&name, &Default::default()).await;
            });
        })
        .join();
    }
}

pub(crate) use crate::skip;

async fn start() -> Result<TestApi, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(path) = std::env::var_os("FLINT_TEST_KUBECONFIG").filter(|p| !p.is_empty()) {
        let kubeconfig = PathBuf::from(path);
        let config = load(&kubeconfig).await?;
        return Ok(TestApi { kubeconfig, config, kubectl: which("kubectl"), dir: None, port: None });
    }
    let assets = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS").expect("checked by absent()"));
    for bin in ["kube-apiserver", "kube-controller-manager"] {
        if !assets.join(bin).is_file() {
            return Err(format!("{} has no {bin}", assets.display()));
        }
    }
    // etcd from the assets, as setup-envtest ships it, or Debian's etcd-server.
    let etcd = Some(assets.join("etcd"))
        .filter(|e| e.is_file())
        .or_else(|| which("etcd"))
        .ok_or_else(|| format!("no etcd in {} nor on PATH (Debian: apt-get install etcd-server)", assets.display()))?;
    let dir = crate::scratch::folder("control-plane", "etc");
    let plane = Plane::new(&assets, etcd, &dir)?;
    plane.start_etcd()?;
    plane.start_apiserver()?;
    let config = load(&plane.kubeconfig).await?;
    wait_ready(&config, &dir).await?;
    plane.start_controller_manager()?;
    let kubectl = Some(assets.join("kubectl")).filter(|k| k.is_file());
    Ok(TestApi { kubeconfig: plane.kubeconfig.clone(), config, kubectl, dir: Some(dir), port: Some(plane.api_port) })
}

async fn load(kubeconfig: &Path) -> Result<Config, String> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(|e| e.to_string())
}

async fn wait_ready(config: &Config, dir: &Path) -> Result<(), String> {
    let client = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
        if let Ok(text) = client.request_text(req).await
            && text.trim() == "ok"
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("kube-apiserver not ready after 90s (logs in {})", dir.display()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// The control plane's files and the thread that starts its processes.
struct Plane {
    assets: PathBuf,
    etcd: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    etcd_port: u16,
    api_port: u16,
}

/// The token of the tests' administrator (a member of system:masters).
const ADMIN_TOKEN: &str = "flint-test-admin";

impl Plane {
    fn new(assets: &Path, etcd: PathBuf, dir: &Path) -> Result<Self, String> {
        // The ServiceAccount token signing key (ECDSA P-256); its PEM holds both halves.
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        write(&dir.join("sa.key"), &key.serialize_pem())?;
        write(&dir.join("sa.pub"), &key.public_key_pem())?;
        write(&dir.join("tokens.csv"), &format!("{ADMIN_TOKEN},admin,admin,system:masters\n"))?;
        let api_port = free_port();
        let kubeconfig = dir.join("kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    \
                 insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: test\n  \
                 context: {{cluster: test, user: admin}}\ncurrent-context: test\n"
            ),
        )?;
        Ok(Plane {
            assets: assets.to_path_buf(),
            etcd,
            dir: dir.to_path_buf(),
            kubeconfig,
            etcd_port: free_port(),
            api_port,
        })
    }

    fn start_etcd(&self) -> Result<(), String> {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", free_port());
        self.run(
            &self.etcd,
            &[
                "--data-dir",
                &self.path("etcd"),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("default={peer}"),
            ],
        )
    }

    fn start_apiserver(&self) -> Result<(), String> {
        self.run(
            &self.assets.join("kube-apiserver"),
            &[
                &format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
                &format!("--cert-dir={}", self.path("certs")),
                &format!("--secure-port={}", self.api_port),
                // Every address of this host (it is in no network but the test's own), so that
                // a test node's pods reach it, on the bridge, as in-cluster clients do.
                "--bind-address=0.0.0.0",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/16",
                "--service-account-issuer=https://kubernetes.default.svc",
                &format!("--service-account-key-file={}", self.path("sa.pub")),
                &format!("--service-account-signing-key-file={}", self.path("sa.key")),
                &format!("--token-auth-file={}", self.path("tokens.csv")),
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
            ],
        )
    }

    fn start_controller_manager(&self) -> Result<(), String> {
        let kubeconfig = self.kubeconfig.display().to_string();
        self.run(
            &self.assets.join("kube-controller-manager"),
            &[
                &format!("--kubeconfig={kubeconfig}"),
                &format!("--authentication-kubeconfig={kubeconfig}"),
                &format!("--authorization-kubeconfig={kubeconfig}"),
                "--leader-elect=false",
                // Its client defaults (20 requests/s) would make it, not the code under test,
                // the slowest part of any test or benchmark with many Deployments.
                "--kube-api-qps=1000",
                "--kube-api-burst=2000",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                &format!("--service-account-private-key-file={}", self.path("sa.key")),
                &format!("--root-ca-file={}", self.path("certs/apiserver.crt")),
                "--use-service-account-credentials=false",
            ],
        )
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// Starts `program`, its output in `<dir>/<name>.log`.
    fn run(&self, program: &Path, args: &[&str]) -> Result<(), String> {
        let bin = program.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let log = std::fs::File::create(self.dir.join(format!("{bin}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
        crate::spawn_for_life(cmd, nix::sys::signal::Signal::SIGKILL).map(drop).map_err(|e| format!("{bin}: {e}"))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
