//! Functions as a cluster runs them: the examples' images (this build's, in a registry on
//! loopback) pulled by the test node and run under runc with their pods' security context,
//! volumes and limits, in the pods' network namespaces; the gateway routes to them as to any
//! pod. Needs the test control plane (KUBEBUILDER_ASSETS), root, runc and umoci: skipped, and
//! said so, elsewhere.

mod common;

use std::{io::Write, process::Stdio, time::Duration};

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

/// `kubectl apply -f examples/NAME/function.yaml` in `namespace`.
fn apply_example(api: &flint_testkit::kube_api::TestApi, namespace: &str, name: &str) {
    let manifest = flint_testkit::workspace().join("examples").join(name).join("function.yaml");
    let out = api.kubectl().expect("kubectl").args(["apply", "-n", namespace, "-f"]).arg(manifest).output().unwrap();
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
        apply_example(c.api, &c.ns.name, example);
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
    // The node recorded what a kubelet records, as `kubectl describe pod` shows it.
    let pod = pods_of(&c, "hello-python").await.into_iter().find(running).unwrap().metadata.name.unwrap();
    let events: kube::Api<k8s_openapi::api::core::v1::Event> = kube::Api::namespaced(c.api.client(), &c.ns.name);
    let reasons = wait_for("the pod's events", MINUTE, || async {
        let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={pod}"));
        let reasons: Vec<String> = events.list(&lp).await.ok()?.items.into_iter().filter_map(|e| e.reason).collect();
        (reasons.len() >= 3).then_some(reasons)
    })
    .await;
    for reason in ["Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} in {reasons:?}");
    }
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_or_would_run_as_root_is_reported_on_the_function_in_words() {
    let Some((c, _node)) = in_containers("image-faults").await else { return };
    let apply = |name: &str, image: &str| {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: {name}}}\nspec: {{image: '{image}', command: [cat], env: [{{name: mode, value: streaming}}]}}\n"
        );
        let mut kubectl = c.api.kubectl().unwrap();
        kubectl.args(["apply", "-n", &c.ns.name, "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = kubectl.stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
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
async fn the_watchdog_as_pid_1_reaps_what_a_function_leaves_behind_drains_on_sigterm_and_limits_hold() {
    let Some((c, _node)) = in_containers("pid-one").await else { return };
    let g = c.gateway("gateway-0", &[]).await;
    // Each call starts a child that outlives the handler: it becomes PID 1's, and a zombie
    // when it ends unless PID 1 reaps it.
    let yaml = format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: forks, namespace: {}}}\nspec:\n  \
         image: ghcr.io/flint-dev/examples/echo-shell:0.1.0\n  \
         command: [sh, -c, 'sleep 0.2 & case \"$Http_Query\" in slow) sleep 2;; esac; cat']\n  \
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
    // SIGTERM to PID 1 (what the node sends first on deletion): the call under way is answered.
    let slow = tokio::spawn({
        let url = g.url("/function/forks?slow");
        async move { flint_testkit::post(&url, "last").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let last = slow.await.unwrap().expect("an answer");
    assert_eq!((last.status, last.text()), (200, "last".to_string()));
    wait_for("PID 1 to exit after draining", MINUTE, || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

/// `helm` on the test API server, in `namespace`; its output.
fn helm(api: &flint_testkit::kube_api::TestApi, namespace: &str, args: &[&str]) -> String {
    let out = flint_testkit::helm()
        .args(args)
        .args(["--namespace", namespace, "--kubeconfig", api.kubeconfig.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One call's status, or why there was none, and how long it took.
type Answer = (Result<u16, String>, Duration);

/// Calls `url` from `callers` tasks until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    callers: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

impl Load {
    fn start(url: &str, callers: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let callers = (0..callers)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_string());
                tokio::spawn(async move {
                    let caller = flint_testkit::Caller::new();
                    let mut out = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = std::time::Instant::now();
                        let r =
                            tokio::time::timeout(Duration::from_secs(30), caller.call(Method::POST, &url, &[], "x"))
                                .await;
                        let r = match r {
                            Ok(Ok(r)) => Ok(r.status),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err("no answer within 30 s".to_string()),
                        };
                        out.push((r, started.elapsed()));
                    }
                    out
                })
            })
            .collect();
        Load { stop, callers }
    }

    async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for c in self.callers {
            all.extend(c.await.unwrap());
        }
        all
    }
}

/// What runs for `release` on the node: its pods' containers (runc's ids name the pods).
fn containers_of(pods: &[String]) -> Vec<String> {
    let out = std::process::Command::new("runc").args(["list", "-q"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|id| pods.iter().any(|p| id.contains(&format!("-{p}-"))))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn helm_install_brings_up_a_working_flint_from_its_images() {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
    use kube::Api;
    if let Some(why) = unavailable() {
        return skip(&why);
    }
    let Some(api) = flint_testkit::kube_api::TestApi::get().await else { return };
    let Some(node) = TestNode::get(api, &common::watchdog()).await else { return };
    let images = images().await;
    node.mirror("ghcr.io/flint-dev/", &format!("{}/", images.prefix));
    let ns = api.namespace("helm").await;
    node.serve(&ns.name);
    api.install_crd(&flint_api::crd::definition()).await;
    let release = format!("f{}", fastrand::u32(..) % 100_000);
    let prometheus = flint_testkit::Prometheus::start_on(node.ip(), &[]).await;
    let p = &images.prefix;
    let values = |tag: &str| {
        vec![
            format!("image.registry={p}"),
            format!("image.tag={tag}"),
            format!("functionNamespaces={{{}}}", ns.name),
            format!("gateway.functionNamespace={}", ns.name),
            format!("nats.image={p}/stand-ins/nats:0.1.0"),
            // Debian's Prometheus lacks Kubernetes discovery: the gateways read one on the node.
            "prometheus.enabled=false".to_string(),
            format!("prometheus.url={}", prometheus.url()),
            // The test's callback receiver is on the node's address.
            "gateway.callbackAllow={10.231.0.0/16}".to_string(),
        ]
    };
    let install = |verb: &'static str, tag: &str| {
        let mut args = vec![
            verb.to_string(),
            release.clone(),
            "charts/flint".into(),
            "--wait".into(),
            "--timeout".into(),
            "5m".into(),
        ];
        for v in values(tag) {
            args.push("--set".into());
            args.push(v);
        }
        args
    };
    let started = std::time::Instant::now();
    let args = install("install", "0.1.0");
    helm(api, &ns.name, &args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("helm install --wait: every pod ready after {:?}", started.elapsed());

    let pods: Api<Pod> = Api::namespaced(api.client(), &ns.name);
    let gateway_ips = || async {
        let lp = kube::api::ListParams::default().labels("app.kubernetes.io/name=flint-gateway");
        pods.list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(running)
            .filter_map(|p| p.status?.pod_ip)
            .collect::<Vec<_>>()
    };
    let gateway = format!("http://{}:8080", gateway_ips().await.first().expect("a gateway pod").clone());
    // In-cluster configuration: the gateway reads Functions with its ServiceAccount's token.
    let secrets: Api<Secret> = Api::namespaced(api.client(), &ns.name);
    let secret = secrets.get(&format!("{release}-basic-auth")).await.unwrap().data.unwrap();
    let login = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!(
                "{}:{}",
                String::from_utf8_lossy(&secret["basic-auth-user"].0),
                String::from_utf8_lossy(&secret["basic-auth-password"].0)
            )
        )
    );
    let call = |method: Method, path: &str, headers: Vec<(&'static str, String)>, body: &str| {
        let (url, body) = (format!("{gateway}{path}"), body.to_string());
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            flint_testkit::request(method, &url, &headers, body).await.unwrap()
        }
    };
    // The portal and the API behind the login the chart generated (a mounted Secret).
    assert_eq!(call(Method::GET, "/ui/", vec![], "").await.status, 401);
    let ui = call(Method::GET, "/ui/", vec![("authorization", login.clone())], "").await;
    assert_eq!(ui.status, 200);
    assert!(ui.headers.contains_key("content-security-policy"));

    for example in ["hello-python", "echo-shell", "greeter-canary"] {
        apply_example(api, &ns.name, example);
    }
    let answer = wait_for("hello-python to answer through the gateway pod", 3 * MINUTE, || async {
        let r = call(Method::POST, "/function/hello-python", vec![], "through the chart").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert!(answer.text().contains("through the chart"), "{}", answer.text());

    // Scale to zero (the API, as faas-cli does), then a call starts it again.
    wait_for("echo-shell to answer", 3 * MINUTE, || async {
        (call(Method::POST, "/function/echo-shell", vec![], "x").await.status == 200).then_some(())
    })
    .await;
    let scaled = call(
        Method::POST,
        "/system/scale-function/echo-shell",
        vec![("authorization", login.clone())],
        r#"{"replicas":0}"#,
    )
    .await;
    assert_eq!(scaled.status, 202, "{}", scaled.text());
    let deployments: Api<Deployment> = Api::namespaced(api.client(), &ns.name);
    wait_for("echo-shell at zero", 2 * MINUTE, || async {
        let d = deployments.get("echo-shell").await.ok()?;
        (d.status?.replicas.unwrap_or(0) == 0).then_some(())
    })
    .await;
    let cold = call(Method::POST, "/function/echo-shell", vec![], "from zero").await;
    assert_eq!(cold.status, 200, "{}", cold.text());
    assert_eq!(cold.headers.get("x-flint-cold-start").map(|v| v.to_str().unwrap()), Some("true"));

    // The canary gets its share of the calls.
    wait_for("the canary to be ready", 3 * MINUTE, || async {
        let v2 = (0..20).map(|_| call(Method::POST, "/function/greeter-canary", vec![], "hi"));
        futures::future::join_all(v2).await.iter().any(|r| r.text().starts_with("v2:")).then_some(())
    })
    .await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let r = call(Method::POST, "/function/greeter-canary", vec![], "hi").await;
        assert_eq!(r.status, 200, "{}", r.text());
        *seen.entry(r.text().split(':').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    assert!(seen.get("v1").is_some_and(|n| *n > 30) && seen.get("v2").is_some_and(|n| *n > 2), "{seen:?}");

    // An asynchronous call through the chart's NATS (its login from a Secret), called back.
    // Until the gateway's link to NATS is up, a call is refused 503 with Retry-After (never a
    // 202 for a call not stored): once, one run in four, right after the install.
    let (hooks, hook) = common::queue::Hooks::start_on(&format!("{}:0", node.ip())).await;
    let refused = std::sync::Mutex::new(Vec::new());
    let asked = std::time::Instant::now();
    wait_for("the asynchronous call to be stored", MINUTE, || async {
        let headers = vec![("x-callback-url", format!("http://{hook}/done"))];
        let r = call(Method::POST, "/async-function/echo-shell", headers, "queued").await;
        if r.status == 202 {
            return Some(());
        }
        assert!(r.status == 503 && r.headers.contains_key("retry-after"), "{}: {}", r.status, r.text());
        refused.lock().unwrap().push(r.text());
        None
    })
    .await;
    let refused = refused.into_inner().unwrap();
    eprintln!("async call stored after {:?}; refused before: {refused:?}", asked.elapsed());
    let (headers, body) = hooks.wait("/done").await;
    assert_eq!(headers["x-function-status"], "200");
    assert!(body.contains("queued"), "{body}");

    // The gateway's container killed under load: restarted by the node; meanwhile calls
    // through the Service fail fast or are answered by the other replica, and none hangs.
    let service_ip = {
        let svc: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(api.client(), &ns.name);
        svc.get(&format!("{release}-gateway")).await.unwrap().spec.unwrap().cluster_ip.unwrap()
    };
    let through_service = format!("http://{service_ip}:8080/function/hello-python");
    wait_for("the gateway's Service to answer", MINUTE, || async {
        flint_testkit::post(&through_service, "x").await.ok().filter(|r| r.status == 200)
    })
    .await;
    let load = Load::start(&through_service, 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = pods
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=flint-gateway"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(running)
        .unwrap();
    let victim_name = victim.metadata.name.clone().unwrap();
    for id in containers_of(std::slice::from_ref(&victim_name)) {
        let _ = std::process::Command::new("runc").args(["kill", &id, "KILL"]).output();
    }
    wait_for("the killed gateway to be restarted and ready", 2 * MINUTE, || async {
        let p = pods.get(&victim_name).await.ok()?;
        let s = p.status.clone()?.container_statuses?.into_iter().next()?;
        (s.restart_count >= 1 && s.ready).then_some(())
    })
    .await;
    let answers = load.stop().await;
    let slow = answers.iter().filter(|(_, took)| *took > Duration::from_secs(5)).count();
    let ok = answers.iter().filter(|(r, _)| matches!(r, Ok(200))).count();
    let mut other = std::collections::BTreeMap::new();
    for (r, _) in answers.iter().filter(|(r, _)| !matches!(r, Ok(200))) {
        *other.entry(format!("{r:?}")).or_insert(0) += 1;
    }
    eprintln!(
        "gateway killed under load: {} calls, {ok} answered 200, {slow} slower than 5 s; the others: {other:?}",
        answers.len()
    );
    assert_eq!(
        slow,
        0,
        "a call hung: {:?}",
        answers.iter().filter(|(_, t)| *t > Duration::from_secs(5)).take(3).collect::<Vec<_>>()
    );

    // An upgrade to a new tag rolls the gateway (and the operator) under load: no call fails.
    let registry = flint_images::registry::Registry::new(None);
    let layout = flint_images::oci::Layout::create(&images.layout).unwrap();
    for name in ["flint-gateway", "flint-operator"] {
        let target = flint_images::registry::Reference::parse(&format!("{p}/{name}:0.1.1")).unwrap();
        registry.push(&layout, &format!("{name}:0.1.0"), &target).await.unwrap();
    }
    let load = Load::start(&through_service, 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let args = install("upgrade", "0.1.1");
    helm(api, &ns.name, &args.iter().map(String::as_str).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = load.stop().await;
    let failed: Vec<_> = answers.iter().filter(|(r, _)| !matches!(r, Ok(200))).collect();
    eprintln!("helm upgrade under load: {} calls, {} failed", answers.len(), failed.len());
    assert!(
        failed.is_empty(),
        "{} of {} calls failed during the upgrade: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let gateway_image =
        deployments.get(&format!("{release}-gateway")).await.unwrap().spec.unwrap().template.spec.unwrap().containers
            [0]
        .image
        .clone();
    assert_eq!(gateway_image.as_deref(), Some(format!("{p}/flint-gateway:0.1.1").as_str()));

    // Uninstall (the functions deleted first, as their owner would): nothing stays on the node.
    let before: Vec<String> =
        pods.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|p| p.metadata.name).collect();
    let out = api.kubectl().unwrap().args(["delete", "functions", "--all", "-n", &ns.name, "--wait"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    helm(api, &ns.name, &["uninstall", &release, "--wait"]);
    wait_for("every pod to be gone", 3 * MINUTE, || async {
        pods.list(&Default::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    wait_for("every container to be gone", MINUTE, || async { containers_of(&before).is_empty().then_some(()) }).await;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| before.iter().any(|p| l.contains(&format!("-{p}-")))).collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    // A network namespace for each pod the node still runs (other tests'), none more.
    let all_pods: Api<Pod> = Api::all(api.client());
    let on_node = kube::api::ListParams::default().fields(&format!("spec.nodeName={}", node.name));
    wait_for("the pods' network namespaces to be gone", MINUTE, || async {
        let running = all_pods.list(&on_node).await.ok()?.items.len();
        let list = std::process::Command::new("ip").args(["netns", "list"]).output().ok()?;
        let netns = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| l.contains(&format!("flint-pod-{}-", std::process::id())))
            .count();
        (netns <= running).then_some(())
    })
    .await;
    eprintln!(
        "after uninstall: {} pods gone, and no container, mount or network namespace of theirs left",
        before.len()
    );
}
