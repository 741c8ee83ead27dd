//! Functions as a cluster runs them: the examples' images (this build's, in a registry on
//! loopback) pulled by the test node and run under runc with their pods' security context,
//! volumes and limits, in the pods' network namespaces; the gateway routes to them as to any
//! pod. Needs the test control plane (KUBEBUILDER_ASSETS), root, runc and umoci: skipped, and
//! said so, elsewhere.

mod common;

use std::time::Duration;

use common::{
    cluster::{on_node, pods_of},
    images::images,
};
use flint_testkit::{
    cluster::{Cluster, Gateway, MINUTE},
    containers::unavailable,
    node::TestNode,
    skip, wait_for,
};
use hyper::Method;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// A namespace on the test node with this build's images to pull.
async fn in_containers(prefix: &str) -> Option<(Cluster, &'static TestNode)> {
    if let Some(why) = unavailable() {
        skip(&why);
        return None;
    }
    let (c, node) = on_node(prefix).await?;
    let images = images().await;
    node.mirror("ghcr.io/flint-dev/", &format!("{}/", images.prefix));
    Some((c, node))
}

/// `kubectl apply -f examples/NAME/function.yaml` in the test's namespace.
fn apply_example(c: &Cluster, name: &str) {
    let manifest = flint_testkit::workspace().join("examples").join(name).join("function.yaml");
    let out = c.api.kubectl().expect("kubectl").args(["apply", "-n", &c.ns.name, "-f"]).arg(manifest).output().unwrap();
    assert!(out.status.success(), "kubectl apply {name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The pid, on the host, of the container of `function`'s running pod.
async fn container_pid(c: &Cluster, function: &str) -> Option<i32> {
    let pod = pods_of(c, function).await.into_iter().find(running)?;
    let name = pod.metadata.name?;
    let list = std::process::Command::new("runc").args(["list", "-f", "json"]).output().ok()?;
    let all: serde_json::Value = serde_json::from_slice(&list.stdout).ok()?;
    all.as_array()?
        .iter()
        .find(|c| c["id"].as_str().is_some_and(|id| id.contains(&format!("-{name}-"))) && c["status"] == "running")?["pid"]
        .as_i64()
        .map(|p| p as i32)
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.ready))
}

async fn answers(g: &Gateway, path: &str, body: &str) -> (u16, String) {
    let r = g.call(Method::POST, path, json!(body)).await;
    (r.status, r.text())
}

#[tokio::test]
async fn the_examples_run_from_their_images_in_containers_and_answer_through_the_gateway() {
    let Some((c, _node)) = in_containers("images").await else { return };
    let g = c.gateway("gateway-0", &[]).await;
    for example in ["hello-python", "echo-shell", "hello-node", "hello-rust"] {
        apply_example(&c, example);
    }
    for (function, expect) in [
        ("hello-python", "Hello from Python"),
        ("echo-shell", "from a container"),
        ("hello-node", "node"),
        ("hello-rust", "rust"),
    ] {
        let (status, body) = wait_for(&format!("{function} to answer"), 2 * MINUTE, || async {
            let (status, body) = answers(&g, &format!("/function/{function}"), "from a container").await;
            (status == 200).then_some((status, body))
        })
        .await;
        assert_eq!(status, 200);
        assert!(body.to_lowercase().contains(&expect.to_lowercase()), "{function}: {body}");
    }
    // The watchdog is its container's PID 1, as the image's user (1000), on the pod's address.
    let pid = container_pid(&c, "hello-python").await.expect("a running container");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(field("NSpid:").split_whitespace().last() == Some("1"), "{}", field("NSpid:"));
    assert_eq!(field("Uid:").split_whitespace().nth(1), Some("1000"), "{status}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "watchdog");
    // No capabilities, no new privileges (the operator's pod security).
    assert_eq!(field("CapEff:").split_whitespace().nth(1), Some("0000000000000000"), "{status}");
    assert_eq!(field("NoNewPrivs:").split_whitespace().nth(1), Some("1"), "{status}");
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_or_would_run_as_root_is_reported_on_the_function_in_words() {
    let Some((c, _node)) = in_containers("image-faults").await else { return };
    let apply = |name: &str, image: &str| {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: {name}}}\nspec: {{image: '{image}', command: [cat], env: [{{name: mode, value: streaming}}]}}\n"
        );
        let path = std::env::temp_dir().join(format!("flint-{}-{name}.yaml", c.ns.name));
        std::fs::write(&path, yaml).unwrap();
        let out = c.api.kubectl().unwrap().args(["apply", "-n", &c.ns.name, "-f"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    apply("missing", "ghcr.io/flint-dev/examples/nothing-here:0.1.0");
    apply("rooted", "ghcr.io/flint-dev/tests/as-root:0.1.0");
    let functions = common::cluster::functions(&c);
    let degraded = |name: &'static str| {
        let functions = functions.clone();
        async move {
            let f = functions.get(name).await.ok()?;
            let conditions = f.status?.conditions;
            let d = conditions.into_iter().find(|c| c.type_ == "Degraded" && c.status == "True")?;
            Some(format!("{}: {}", d.reason, d.message))
        }
    };
    let missing = wait_for("the missing image on the Function", 2 * MINUTE, || degraded("missing")).await;
    assert!(missing.contains("ImagePullBackOff") || missing.contains("ErrImagePull"), "{missing}");
    assert!(missing.contains("manifest unknown"), "the registry's reason is said: {missing}");
    let rooted = wait_for("the root image on the Function", 2 * MINUTE, || degraded("rooted")).await;
    assert!(rooted.contains("CreateContainerConfigError") && rooted.contains("runAsNonRoot"), "{rooted}");
    assert!(rooted.contains("non-root USER"), "the hint fits the reason: {rooted}");
}

#[tokio::test]
async fn the_watchdog_as_pid_1_reaps_what_a_function_leaves_behind_and_limits_hold() {
    let Some((c, _node)) = in_containers("pid-one").await else { return };
    let g = c.gateway("gateway-0", &[]).await;
    // Each call starts a child that outlives the handler: it becomes PID 1's, and a zombie
    // when it ends unless PID 1 reaps it.
    let yaml = format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: forks, namespace: {}}}\nspec:\n  \
         image: ghcr.io/flint-dev/examples/echo-shell:0.1.0\n  command: [sh, -c, 'sleep 0.2 & cat']\n  \
         env: [{{name: mode, value: streaming}}]\n  scale: {{min: 1, max: 1}}\n  resources: {{limits: {{memory: 96Mi}}}}\n",
        c.ns.name
    );
    let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
    common::cluster::functions(&c)
        .patch("forks", &kube::api::PatchParams::apply("flint-test").force(), &kube::api::Patch::Apply(&f))
        .await
        .unwrap();
    wait_for("forks to answer", 2 * MINUTE, || async {
        (answers(&g, "/function/forks", "x").await.0 == 200).then_some(())
    })
    .await;
    for i in 0..20 {
        assert_eq!(answers(&g, "/function/forks", &format!("call {i}")).await, (200, format!("\"call {i}\"")));
    }
    let pid = container_pid(&c, "forks").await.expect("running");
    let zombies = || {
        let mut n = 0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
                n += 1;
            }
        }
        n
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(zombies(), 0, "PID 1 left its adopted children unreaped");
    // The pod's memory limit is the container's cgroup's.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory =
        cgroup.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())).expect("a memory cgroup");
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
}
