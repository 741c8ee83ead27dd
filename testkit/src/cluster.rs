//! A namespace of the test Kubernetes API set up as the chart sets up an installation of Flint:
//! the CRD, the chart's ServiceAccounts and RBAC, the operator running in it, and gateways
//! (kubernetes provider) acting as the chart's gateway ServiceAccount. Used by the real-API
//! tests and by the benchmarks on the test node.

use std::{path::PathBuf, time::Duration};

use hyper::Method;
use k8s_openapi::{
    NamespaceResourceScope, api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Resource};

use crate::{
    Reply, Spawned, free_port,
    kube_api::{TestApi, TestNamespace},
    wait_for,
};

pub const MINUTE: Duration = Duration::from_secs(60);

/// The binaries an installation runs.
#[derive(Clone)]
pub struct Binaries {
    pub gateway: PathBuf,
    pub operator: PathBuf,
}

pub struct Cluster {
    pub api: &'static TestApi,
    pub ns: TestNamespace,
    /// The chart release whose identities this namespace has.
    pub release: String,
    pub operator: Spawned,
    binaries: Binaries,
}

impl Cluster {
    /// A fresh namespace with `crd` installed and the operator running; `None` (the caller
    /// skipped, with the reason) without a control plane.
    pub async fn new(prefix: &str, crd: &CustomResourceDefinition, binaries: Binaries) -> Option<Cluster> {
        let api = TestApi::get().await?;
        api.install_crd(crd).await;
        let ns = api.namespace(prefix).await;
        let release = format!("g{}", fastrand::u32(..) % 1_000_000);
        api.install_chart_rbac(&release, &ns.name, &[]).await;
        let operator = start_operator(api, &ns.name, &release, &binaries);
        Some(Cluster { api, ns, release, operator, binaries })
    }

    /// A new operator process, as when its pod is replaced.
    pub fn restart_operator(&mut self) {
        self.operator = start_operator(self.api, &self.ns.name, &self.release, &self.binaries);
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
            self.binaries.gateway.to_str().expect("a UTF-8 path"),
            &all,
            &[("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAME", name), ("RUST_LOG", "info")],
        );
        let g = Gateway { process, port };
        let url = g.url("/healthz");
        wait_for(&format!("gateway {name} to be healthy ({})", self.api.logs()), MINUTE, || async {
            crate::get(&url).await.ok().filter(|r| r.status == 200)
        })
        .await;
        g
    }

    /// The objects of kind `K` in this namespace.
    pub fn namespaced<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.api.client(), &self.ns.name)
    }

    /// The replicas Deployment `name` asks for.
    pub async fn replicas(&self, name: &str) -> Option<i32> {
        self.namespaced::<Deployment>().get_opt(name).await.ok()??.spec?.replicas
    }
}

fn start_operator(api: &TestApi, namespace: &str, release: &str, binaries: &Binaries) -> Spawned {
    api.start_operator(&binaries.operator, namespace, release, "operator-0", free_port(), &[])
}

pub struct Gateway {
    pub process: Spawned,
    pub port: u16,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn call(&self, method: Method, path: &str, body: serde_json::Value) -> Reply {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        crate::request(method, &self.url(path), &[], body).await.unwrap()
    }
}
