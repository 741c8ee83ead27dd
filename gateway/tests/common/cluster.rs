//! A namespace of the test Kubernetes API with the chart's identities and the operator running
//! in it, and gateways (kubernetes provider) acting as the chart's gateway ServiceAccount.

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use flint_api::Function;
use flint_testkit::{
    Spawned, free_port,
    kube_api::{TestApi, TestNamespace},
    wait_for,
};
use hyper::Method;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

pub const MINUTE: Duration = Duration::from_secs(60);

/// An autoscaler that decides every 200 ms over windows of seconds, for tests of its decisions.
pub const FAST_AUTOSCALER: [&str; 8] =
    ["--autoscale-tick", "200ms", "--stable-window", "2s", "--panic-window", "1s", "--scale-down-delay", "1s"];

/// The operator binary beside the gateway, built first if this test run has not built it.
pub fn operator_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = std::path::Path::new(super::GATEWAY).with_file_name("flint-operator");
            if !path.is_file() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .args(["build", "-p", "flint-operator", "--bin", "flint-operator"])
                    .status();
                assert!(status.unwrap().success(), "building the operator failed");
            }
            path
        })
        .clone()
}

/// A namespace with the chart's identities, the operator running in it.
pub struct Cluster {
    pub api: &'static TestApi,
    pub ns: TestNamespace,
    pub release: String,
    pub operator: Spawned,
}

impl Cluster {
    pub async fn new(prefix: &str) -> Option<Cluster> {
        let api = TestApi::get().await?;
        api.install_crd(&flint_api::crd::definition()).await;
        let ns = api.namespace(prefix).await;
        let release = format!("g{}", fastrand::u32(..) % 1_000_000);
        api.install_chart_rbac(&release, &ns.name, &[]).await;
        let operator = start_operator(api, &ns.name, &release);
        Some(Cluster { api, ns, release, operator })
    }

    /// A new operator process, as when its pod is replaced.
    pub fn restart_operator(&mut self) {
        self.operator = start_operator(self.api, &self.ns.name, &self.release);
    }

    /// A gateway process as the chart's gateway ServiceAccount; `name` is its identity.
    pub async fn gateway(&self, name: &str, args: &[&str]) -> Gateway {
        self.gateway_on(name, free_port(), args).await
    }

    pub async fn gateway_on(&self, name: &str, port: u16, args: &[&str]) -> Gateway {
        let kubeconfig = self.api.kubeconfig_as_service_account(&self.ns.name, &format!("{}-gateway", self.release));
        let port_s = port.to_string();
        let lease = format!("{}-gateway-autoscaler", self.release);
        let mut all = vec![
            "--provider",
            "kubernetes",
            "--port",
            &port_s,
            "--namespace",
            &self.ns.name,
            "--function-namespaces",
            &self.ns.name,
            "--lease-namespace",
            &self.ns.name,
            "--autoscaler-lease",
            &lease,
        ];
        all.extend_from_slice(args);
        let process = Spawned::start(
            super::GATEWAY,
            &all,
            &[("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAME", name), ("RUST_LOG", "info")],
        );
        let g = Gateway { process, port };
        let url = g.url("/healthz");
        wait_for(&format!("gateway {name} to be healthy ({})", self.api.logs()), MINUTE, || async {
            flint_testkit::get(&url).await.ok().filter(|r| r.status == 200)
        })
        .await;
        g
    }

    /// Creates Function `name` (image `ghcr.io/acme/NAME:1`) with the given `scale`.
    pub async fn create_function(&self, name: &str, scale: &str) {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: {name}, namespace: {}}}\nspec: {{image: ghcr.io/acme/{name}:1, scale: {scale}}}\n",
            self.ns.name
        );
        let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
        self.functions().create(&Default::default(), &f).await.unwrap();
    }

    pub fn functions(&self) -> Api<Function> {
        Api::namespaced(self.api.client(), &self.ns.name)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.api.client(), &self.ns.name)
    }

    pub async fn replicas(&self, name: &str) -> Option<i32> {
        self.deployments().get_opt(name).await.ok()??.spec?.replicas
    }
}

fn start_operator(api: &TestApi, namespace: &str, release: &str) -> Spawned {
    api.start_operator(&operator_binary(), namespace, release, "operator-0", free_port(), &[])
}

pub struct Gateway {
    pub process: Spawned,
    pub port: u16,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn call(&self, method: Method, path: &str, body: serde_json::Value) -> flint_testkit::Reply {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        flint_testkit::request(method, &self.url(path), &[], body).await.unwrap()
    }
}
