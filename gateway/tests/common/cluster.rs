//! An installation of Flint in a namespace of the test Kubernetes API
//! (`flint_testkit::cluster`) with this build's gateway and operator, and Functions in it.

use std::{path::PathBuf, sync::OnceLock};

use flint_api::Function;
use flint_testkit::{
    cluster::{Binaries, Cluster},
    node::TestNode,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};

/// An autoscaler that decides every 200 ms over windows of seconds, for tests of its decisions.
pub const FAST_AUTOSCALER: [&str; 8] =
    ["--autoscale-tick", "200ms", "--stable-window", "2s", "--panic-window", "1s", "--scale-down-delay", "1s"];

/// The operator binary beside the gateway, built first if this test run has not built it.
fn operator_binary() -> PathBuf {
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

/// A namespace with the chart's identities, the operator running in it; `None` (skipped)
/// without a control plane.
pub async fn cluster(prefix: &str) -> Option<Cluster> {
    let binaries = Binaries { gateway: super::GATEWAY.into(), operator: operator_binary() };
    Cluster::new(prefix, &flint_api::crd::definition(), binaries).await
}

pub fn functions(c: &Cluster) -> Api<Function> {
    c.namespaced()
}

/// Creates Function `name` (image `ghcr.io/acme/NAME:1`) with the given `scale`.
pub async fn create_function(c: &Cluster, name: &str, scale: &str) {
    let yaml = format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: {name}, namespace: {}}}\nspec: {{image: ghcr.io/acme/{name}:1, scale: {scale}}}\n",
        c.ns.name
    );
    let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
    functions(c).create(&Default::default(), &f).await.unwrap();
}

/// A namespace served by the test node, with the operator running in it.
pub async fn on_node(prefix: &str) -> Option<(Cluster, &'static TestNode)> {
    let c = cluster(prefix).await?;
    let node = TestNode::get(c.api, &super::watchdog()).await?;
    node.serve(&c.ns.name);
    Some((c, node))
}

/// Applies a Function with this spec (YAML, indented by two).
pub async fn apply_function(c: &Cluster, name: &str, spec: &str) {
    let yaml = format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n{spec}\n",
        c.ns.name
    );
    let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
    functions(c)
        .patch(name, &PatchParams::apply("flint-test").force(), &Patch::Apply(&f))
        .await
        .unwrap_or_else(|e| panic!("applying Function {name}: {e}"));
}

pub fn pods(c: &Cluster) -> Api<Pod> {
    Api::namespaced(c.api.client(), &c.ns.name)
}

pub async fn pods_of(c: &Cluster, function: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("flint.dev/function={function}"));
    pods(c).list(&lp).await.map(|l| l.items).unwrap_or_default()
}
