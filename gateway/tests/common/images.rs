//! This build's images in a registry: every image of `flint-images` (the stand-ins included),
//! built from the workspace's debug binaries into an OCI layout once per test binary, and
//! pushed to a `docker-registry` on loopback that lives as long as the binary. A test node set
//! to pull `ghcr.io/flint-dev/…` from there (a mirror) runs the examples' manifests unchanged.

use std::{path::PathBuf, sync::OnceLock};

use flint_images::{
    apt::Apt,
    build::{Builder, Provenance},
    oci::Layout,
    recipe::{self, Inputs},
    registry::{Reference, Registry},
};
use flint_testkit::{containers::Registry as TestRegistry, workspace};
use tokio::sync::OnceCell;

pub struct Images {
    pub registry: TestRegistry,
    /// `127.0.0.1:PORT/flint-dev`: where `ghcr.io/flint-dev` is mirrored.
    pub prefix: String,
    pub layout: PathBuf,
}

static IMAGES: OnceCell<Images> = OnceCell::const_new();

/// The operator's binary beside the gateway's, built by the tests that start an operator.
fn binaries() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = std::process::Command::new(&cargo)
                .current_dir(workspace())
                .args(["build", "-p", "flint-gateway", "-p", "flint-operator", "-p", "flint-watchdog", "--bins"])
                .status()
                .unwrap()
                .success();
            assert!(ok, "building the binaries failed");
            let ok = std::process::Command::new(&cargo)
                .current_dir(workspace().join("examples/hello-rust"))
                .args(["build", "--release", "--locked", "--quiet"])
                .status()
                .unwrap()
                .success();
            assert!(ok, "building the hello-rust example failed");
            std::path::Path::new(super::GATEWAY).parent().unwrap().to_path_buf()
        })
        .clone()
}

/// Every image, built and pushed once.
pub async fn images() -> &'static Images {
    IMAGES
        .get_or_init(|| async {
            let dir = workspace().join("target/containers-test");
            let layout_dir = dir.join("oci");
            let bin = binaries();
            let root = workspace();
            let built = tokio::task::spawn_blocking({
                let (layout_dir, dir) = (layout_dir.clone(), dir.clone());
                move || {
                    let apt = Apt::new(&dir.join("apt")).unwrap();
                    apt.update().unwrap();
                    let provenance = Provenance {
                        source: "https://example.test/flint".into(),
                        revision: "test".into(),
                        version: "0.1.0".into(),
                    };
                    let mut builder = Builder::new(apt, 1_700_000_000, provenance, Vec::new());
                    let _ = std::fs::remove_dir_all(&layout_dir);
                    let layout = Layout::create(&layout_dir).unwrap();
                    let hello_rust = root.join("examples/hello-rust/target/release/hello-rust");
                    let inputs = Inputs { binaries: &bin, workspace: &root, hello_rust: Some(&hello_rust) };
                    let mut references = Vec::new();
                    let mut recipes = recipe::all(&inputs);
                    // An image that runs as root, for runAsNonRoot to refuse.
                    let shell = recipes.iter().find(|r| r.name == "examples/echo-shell").expect("echo-shell").clone();
                    recipes.push(recipe::Recipe { name: "tests/as-root".into(), user: String::new(), ..shell });
                    for r in recipes {
                        let b = builder.build(&r, "0.1.0", &layout).unwrap_or_else(|e| panic!("{}: {e}", r.name));
                        references.extend(b.references);
                    }
                    references
                }
            })
            .await
            .unwrap();
            let registry = TestRegistry::start().await;
            let prefix = format!("{}/flint-dev", registry.host());
            let layout = Layout::create(&layout_dir).unwrap();
            let client = Registry::new(None);
            for reference in built {
                let target = Reference::parse(&format!("{prefix}/{reference}")).unwrap();
                client.push(&layout, &reference, &target).await.unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
            }
            Images { registry, prefix, layout: layout_dir }
        })
        .await
}
