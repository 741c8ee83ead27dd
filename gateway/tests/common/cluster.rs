//! An installation of Flint in a namespace of the test Kubernetes API
//! (`flint_testkit::cluster`) with this build's gateway and operator, and Functions in it.

use std::{path::PathBuf, sync::OnceLock};

use flint_api::Function;
use flint_testkit::cluster::{Binaries, Cluster};
use kube::Api;

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
