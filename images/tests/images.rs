//! Flint's images, built here without a Docker daemon: the same inputs give the same digests
//! twice in a row; every example manifest names an image that is built; images go to a real
//! registry (Debian's docker-registry on loopback) and come back by tag and by digest; and they
//! run under runc as a cluster would run them: the hello-python function image answers an
//! invocation, the gateway image starts in local mode on a read-only root as user 65532, and
//! `flint-images function` makes a folder of code into a function image that answers.
//!
//! The images are built from this workspace's debug binaries (the release ones are
//! `scripts/images`'s); Debian packages come through the builder's private apt, cached in
//! `target/images-test/apt`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use flint_images::{
    apt::Apt,
    build::{Builder, Provenance},
    oci::Layout,
    recipe::{self, Inputs},
    registry::{Reference, Registry},
};
use flint_testkit::{
    containers::{Bundle, Registry as TestRegistry, unavailable},
    free_port, get, post, skip, wait_for, workspace,
};

/// Builds what the images hold: the three binaries (debug) and the hello-rust example.
fn inputs() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = workspace();
        let ok = Command::new(&cargo)
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "-p",
                "flint-gateway",
                "-p",
                "flint-operator",
                "-p",
                "flint-watchdog",
                "--bins",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building the binaries failed");
        let ok = Command::new(&cargo)
            .current_dir(root.join("examples/hello-rust"))
            .args(["build", "--release", "--locked", "--quiet"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building the hello-rust example failed");
        (root.join("target/debug"), root.join("examples/hello-rust/target/release/hello-rust"))
    })
}

/// Held by whoever uses the private apt in `target/images-test/apt`.
static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds every image (stand-ins included) into a fresh layout under `out`; name → digest.
/// One build at a time: they share the private apt's lists and package cache.
fn build_all(out: &Path) -> BTreeMap<String, String> {
    let _turn = APT.lock().unwrap_or_else(|e| e.into_inner());
    let (binaries, hello_rust) = inputs();
    let root = workspace();
    let apt = Apt::new(&root.join("target/images-test/apt")).unwrap();
    apt.update().unwrap();
    let provenance =
        Provenance { source: "https://example.test/flint".into(), revision: "test".into(), version: "0.1.0".into() };
    let mut builder = Builder::new(apt, 1_700_000_000, provenance, Vec::new());
    let _ = std::fs::remove_dir_all(out);
    let layout = Layout::create(out).unwrap();
    let inputs = Inputs { binaries, workspace: &root, hello_rust: Some(hello_rust) };
    let mut digests = BTreeMap::new();
    for r in recipe::all(&inputs) {
        let built = builder.build(&r, "0.1.0", &layout).unwrap_or_else(|e| panic!("{}: {e}", r.name));
        for reference in built.references {
            digests.insert(reference, built.manifest.digest.clone());
        }
    }
    digests
}

fn scratch(name: &str) -> PathBuf {
    workspace().join("target/images-test").join(name)
}

/// One layout of every image, built once for the tests that run them.
fn layout() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch("run");
        build_all(&dir);
        dir
    })
}

#[test]
fn every_image_builds_twice_to_the_same_digests_and_every_example_manifest_names_one() {
    let first = build_all(&scratch("first"));
    let second = build_all(&scratch("second"));
    assert_eq!(first, second, "two builds of the same inputs differ");
    for image in ["flint-gateway", "flint-operator", "watchdog", "stand-ins/nats"] {
        assert!(first.contains_key(&format!("{image}:0.1.0")), "{image} was not built: {first:?}");
    }
    // What `kubectl apply -f examples/*/function.yaml` asks a cluster to pull.
    for entry in std::fs::read_dir(workspace().join("examples")).unwrap().flatten() {
        let manifest = entry.path().join("function.yaml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        for function in flint_api::manifest::from_yaml(&text).unwrap() {
            let images = std::iter::once(function.spec.image.clone()).chain(function.spec.canary.map(|c| c.image));
            for image in images {
                let name = image.strip_prefix("ghcr.io/flint-dev/").unwrap_or_else(|| panic!("{image}"));
                assert!(first.contains_key(name), "{} names {image}, which is not built", manifest.display());
            }
        }
    }
}

#[tokio::test]
async fn images_go_to_a_registry_and_come_back_by_tag_and_by_digest() {
    let layout = Layout::create(layout()).unwrap();
    let registry = TestRegistry::start().await;
    let client = Registry::new(None);
    let mut pushed = BTreeMap::new();
    for name in ["flint-gateway:0.1.0", "examples/hello-python:0.1.0", "watchdog:0.1.0"] {
        let target = Reference::parse(&format!("{}/flint-dev/{name}", registry.host())).unwrap();
        pushed.insert(name, client.push(&layout, name, &target).await.unwrap());
    }
    let pulled_dir = scratch("pulled");
    let _ = std::fs::remove_dir_all(&pulled_dir);
    let pulled = Layout::create(&pulled_dir).unwrap();
    for (name, digest) in &pushed {
        let by_tag = Reference::parse(&format!("{}/flint-dev/{name}", registry.host())).unwrap();
        let (got, manifest) = client.pull(&by_tag, &pulled, name).await.unwrap();
        assert_eq!(&got, digest, "{name} by tag");
        let repository = name.rsplit_once(':').unwrap().0;
        let by_digest = Reference::parse(&format!("{}/flint-dev/{repository}@{digest}", registry.host())).unwrap();
        let (again, _) = client.pull(&by_digest, &pulled, name).await.unwrap();
        assert_eq!(&again, digest, "{name} by digest");
        for layer in &manifest.layers {
            assert_eq!(pulled.blob(&layer.digest).unwrap(), layout.blob(&layer.digest).unwrap());
        }
    }
    // The base layer is one blob, stored once and shared.
    let base = |name: &str| layout.find(name).unwrap().1.layers[0].digest.clone();
    assert_eq!(base("flint-gateway:0.1.0"), base("examples/hello-python:0.1.0"));
    // What a kubelet would say for an image that is not there.
    let missing = Reference::parse(&format!("{}/flint-dev/flint-gateway:9.9.9", registry.host())).unwrap();
    let e = client.pull(&missing, &pulled, "x").await.unwrap_err().to_string();
    assert!(e.contains("manifest unknown"), "{e}");
    let nowhere = Reference::parse(&format!("127.0.0.1:{}/flint-dev/x:1", free_port())).unwrap();
    let e = client.pull(&nowhere, &pulled, "x").await.unwrap_err().to_string();
    assert!(e.contains("cannot reach the registry"), "{e}");
}

#[tokio::test]
async fn the_hello_python_image_answers_an_invocation_under_runc() {
    if let Some(why) = unavailable() {
        return skip(&why);
    }
    let mut bundle = Bundle::unpack(layout(), "examples/hello-python:0.1.0").unwrap();
    assert_eq!(bundle.config["process"]["user"]["uid"], 1000);
    assert_eq!(bundle.config["process"]["cwd"], "/home/app");
    let port = free_port();
    bundle.host_network().env("port", &port.to_string());
    bundle.config["root"]["readonly"] = true.into();
    let container = bundle.run(&format!("flint-test-py-{}", std::process::id()));
    let url = format!("http://127.0.0.1:{port}/");
    let answer = wait_for("the function to answer", Duration::from_secs(30), || async {
        post(&url, "from a test").await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert!(answer.text().contains("\"body\": \"from a test\""), "{}", answer.text());
    // SIGTERM to the container: the watchdog drains and the container ends.
    container.signal("TERM");
    wait_for("the container to end", Duration::from_secs(30), || async { container.pid().is_none().then_some(()) })
        .await;
}

#[tokio::test]
async fn the_gateway_image_starts_in_local_mode_on_a_read_only_root_as_65532() {
    if let Some(why) = unavailable() {
        return skip(&why);
    }
    let mut bundle = Bundle::unpack(layout(), "flint-gateway:0.1.0").unwrap();
    let functions = scratch("empty-functions");
    std::fs::create_dir_all(&functions).unwrap();
    let port = free_port();
    bundle.host_network().bind(&functions, "/functions", true);
    bundle.config["root"]["readonly"] = true.into();
    let args = ["/usr/local/bin/flint-gateway", "--functions-dir", "/functions", "--nats-url", "off", "--port"];
    let mut args: Vec<serde_json::Value> = args.iter().map(|a| (*a).into()).collect();
    args.push(port.to_string().into());
    bundle.config["process"]["args"] = args.into();
    let container = bundle.run(&format!("flint-test-gw-{}", std::process::id()));
    let health = format!("http://127.0.0.1:{port}/healthz");
    wait_for("the gateway to answer", Duration::from_secs(30), || async {
        get(&health).await.ok().filter(|r| r.status == 200)
    })
    .await;
    let list = get(&format!("http://127.0.0.1:{port}/system/functions")).await.unwrap();
    assert_eq!((list.status, list.text()), (200, "[]".to_string()));
    let pid = container.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(uid, "65532", "{status}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "flint-gateway");
    container.signal("TERM");
    // PID 1 of its container, it takes SIGTERM and stops as it does anywhere else.
    container.process.wait_log("INFO flint_gateway: stopped", Duration::from_secs(30)).await;
    wait_for("the container to end", Duration::from_secs(30), || async { container.pid().is_none().then_some(()) })
        .await;
}

#[tokio::test]
async fn a_folder_of_code_becomes_a_function_image_that_answers_under_runc() {
    if let Some(why) = unavailable() {
        return skip(&why);
    }
    let code = scratch("shout-code");
    let _ = std::fs::remove_dir_all(&code);
    std::fs::create_dir_all(code.join("words")).unwrap();
    std::fs::write(code.join("words/greeting"), "hello").unwrap();
    std::fs::write(
        code.join("handler.py"),
        "import sys\nprint(open('words/greeting').read(), sys.stdin.read().upper(), end='')\n",
    )
    .unwrap();
    let flint_images = |args: &[&str]| {
        let _turn = APT.lock().unwrap_or_else(|e| e.into_inner());
        Command::new(env!("CARGO_BIN_EXE_flint-images")).current_dir(workspace()).args(args).output().unwrap()
    };
    let watchdog = inputs().0.join("watchdog");
    let mut args = vec!["function", "team/shout", "--code", code.to_str().unwrap(), "--fprocess", "python3 handler.py"];
    args.extend(["--watchdog", watchdog.to_str().unwrap(), "--out", "target/images-test", "--tag", "1.2.3"]);
    // A runtime it does not know is refused, naming the ones it does.
    let wrong = flint_images(&[&args[..], &["--runtime", "cobol"]].concat());
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("python, node, shell or binary"));
    let built = flint_images(&[&args[..], &["--runtime", "python", "--epoch", "1700000000"]].concat());
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    assert!(String::from_utf8_lossy(&built.stdout).contains("team/shout:1.2.3"));

    let mut bundle = Bundle::unpack(&scratch("oci"), "team/shout:1.2.3").unwrap();
    assert_eq!(bundle.config["process"]["user"]["uid"], 1000);
    let port = free_port();
    bundle.host_network().env("port", &port.to_string());
    bundle.config["root"]["readonly"] = true.into();
    let container = bundle.run(&format!("flint-test-fn-{}", std::process::id()));
    let url = format!("http://127.0.0.1:{port}/");
    let answer = wait_for("the function to answer", Duration::from_secs(30), || async {
        post(&url, "from a folder").await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(answer.text(), "hello FROM A FOLDER");
    container.signal("TERM");
    wait_for("the container to end", Duration::from_secs(30), || async { container.pid().is_none().then_some(()) })
        .await;
}
