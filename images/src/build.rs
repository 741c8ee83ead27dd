//! From recipes to images: the base layer (shared by every image, so stored and pulled once),
//! a runtime layer per image that needs one, and the image's own files, each layer the same
//! bytes for the same inputs. Before an image is written, every program on its PATH and its
//! entrypoint are checked to find the shared libraries they need inside the image.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use crate::{
    Error,
    apt::{self, Apt, Package},
    elf,
    oci::{Descriptor, Image, Layer, Layout, RunConfig},
    recipe::{BASE, NOT_AT_RUN_TIME, Recipe},
    tree::{Kind, Node, Tree},
};

/// What every image says about where it comes from (OCI annotations and labels).
#[derive(Clone, Debug)]
pub struct Provenance {
    pub source: String,
    pub revision: String,
    pub version: String,
}

pub struct Builder {
    pub apt: Apt,
    /// `SOURCE_DATE_EPOCH`: every time stamp in every layer and config.
    pub epoch: u64,
    pub provenance: Provenance,
    /// Package versions to use rather than the archive's newest (a previous build's lock).
    pub pins: Vec<Package>,
    base: Option<(Tree, Vec<Package>)>,
}

/// An image written to the layout.
#[derive(Debug)]
pub struct Built {
    pub name: String,
    /// Its references in the layout (`flint-gateway:0.1.0`).
    pub references: Vec<String>,
    pub manifest: Descriptor,
    /// Compressed size of each layer (base, runtime, own files).
    pub layer_sizes: Vec<u64>,
    pub packages: Vec<Package>,
}

impl Builder {
    pub fn new(apt: Apt, epoch: u64, provenance: Provenance, pins: Vec<Package>) -> Builder {
        Builder { apt, epoch, provenance, pins, base: None }
    }

    fn created(&self) -> String {
        chrono::DateTime::from_timestamp(self.epoch as i64, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// The base layer's tree: glibc, libgcc, CA certificates, time zones and `/etc/services`,
    /// the users, and nothing to install or run anything else with.
    fn base(&mut self) -> Result<(Tree, Vec<Package>), Error> {
        if let Some(base) = &self.base {
            return Ok(base.clone());
        }
        let packages: Vec<Package> =
            self.apt.resolve(BASE, &self.pins)?.into_iter().filter(|p| BASE.contains(&p.name.as_str())).collect();
        let mut tree = Tree::default();
        for (p, deb) in packages.iter().zip(self.apt.fetch(&packages)?) {
            let certificates_only = p.name == "ca-certificates";
            add_package(&mut tree, p, &deb, |path| {
                !certificates_only || path.starts_with("usr/share/ca-certificates/") || path.ends_with("/copyright")
            })?;
        }
        // What update-ca-certificates would make: every certificate in one file, in name order.
        let mut bundle = Vec::new();
        for (path, node) in tree.paths() {
            if let (true, Kind::File(pem)) =
                (path.starts_with("usr/share/ca-certificates/") && path.ends_with(".crt"), &node.kind)
            {
                bundle.extend_from_slice(pem);
                if !pem.ends_with(b"\n") {
                    bundle.push(b'\n');
                }
            }
        }
        tree.remove("usr/share/ca-certificates");
        tree.file("etc/ssl/certs/ca-certificates.crt", bundle, 0o644);
        tree.file(
            "etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
             app:x:1000:1000:app:/home/app:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            0o644,
        );
        tree.file("etc/group", "root:x:0:\nnobody:x:65534:\napp:x:1000:\nnonroot:x:65532:\n", 0o644);
        tree.file(
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
            0o644,
        );
        tree.file(
            "etc/os-release",
            "PRETTY_NAME=\"Flint's base (Debian GNU/Linux 12 packages)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n\
             VERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n",
            0o644,
        );
        tree.dir("tmp", 0o1777, 0);
        tree.dir("root", 0o700, 0);
        tree.dir("home/nonroot", 0o700, 65532);
        tree.dir("home/app", 0o755, 1000);
        self.base = Some((tree, packages));
        Ok(self.base.clone().expect("just made"))
    }

    /// The runtime layer's tree: what the recipe's packages need, less the base layer and
    /// what only installs packages.
    fn runtime(&mut self, recipe: &Recipe, base: &[Package]) -> Result<(Tree, Vec<Package>), Error> {
        if recipe.runtime.is_empty() {
            return Ok((Tree::default(), Vec::new()));
        }
        let packages: Vec<Package> = self
            .apt
            .resolve(&recipe.runtime, &self.pins)?
            .into_iter()
            .filter(|p| !NOT_AT_RUN_TIME.contains(&p.name.as_str()) && !base.iter().any(|b| b.name == p.name))
            .collect();
        let mut tree = Tree::default();
        for (p, deb) in packages.iter().zip(self.apt.fetch(&packages)?) {
            add_package(&mut tree, p, &deb, |_| true)?;
        }
        Ok((tree, packages))
    }

    /// Builds `recipe` and writes it to `layout` as `NAME:TAG` for each of its tags (`tag`
    /// when it names none).
    pub fn build(&mut self, recipe: &Recipe, tag: &str, layout: &Layout) -> Result<Built, Error> {
        let (base, base_packages) = self.base()?;
        let (runtime, runtime_packages) = self.runtime(recipe, &base_packages)?;
        let mut own = Tree::default();
        for (dir, owner) in &recipe.dirs {
            own.dir(dir, 0o755, *owner);
        }
        for (from, to, mode) in &recipe.files {
            let bytes = std::fs::read(from).map_err(|e| Error::io(from.clone(), e))?;
            own.file(to, bytes, *mode);
        }
        let mut whole = base.clone();
        for (path, node) in runtime.paths().chain(own.paths()) {
            whole.put(path, node.clone());
        }
        let env = self.env(recipe);
        elf::check(&whole, &recipe.entrypoint, &env).map_err(|e| Error::Image(recipe.name.clone(), e))?;

        let layer = |tree: &Tree, what: String| {
            Layer::of(tree, self.epoch, &what).map_err(|e| Error::io(layout.dir.clone(), e))
        };
        let mut layers = vec![layer(&base, describe("base", &base_packages))?];
        if !runtime.is_empty() {
            layers.push(layer(&runtime, describe("runtime", &runtime_packages))?);
        }
        if !own.is_empty() {
            let files: Vec<&str> = recipe.files.iter().map(|(_, to, _)| to.as_str()).collect();
            layers.push(layer(&own, format!("files: {}", files.join(" ")))?);
        }
        let labels = self.labels(recipe);
        let config = RunConfig {
            user: recipe.user.clone(),
            entrypoint: recipe.entrypoint.clone(),
            cmd: recipe.cmd.clone(),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            working_dir: recipe.working_dir.clone(),
            labels: labels.clone(),
            exposed_ports: recipe.ports.iter().map(|p| (format!("{p}/tcp"), serde_json::json!({}))).collect(),
            stop_signal: "SIGTERM".into(),
        };
        let image = Image { layers, config, annotations: labels, created: self.created() };
        let tags = if recipe.tags.is_empty() { vec![tag.to_string()] } else { recipe.tags.clone() };
        let mut manifest = None;
        let mut references = Vec::new();
        for tag in tags {
            let reference = format!("{}:{tag}", recipe.name);
            manifest = Some(layout.write(&image, &reference).map_err(|e| Error::io(layout.dir.clone(), e))?);
            references.push(reference);
        }
        let mut packages = base_packages;
        packages.extend(runtime_packages);
        Ok(Built {
            name: recipe.name.clone(),
            references,
            manifest: manifest.expect("at least one tag"),
            layer_sizes: image.layers.iter().map(|l| l.blob.len() as u64).collect(),
            packages,
        })
    }

    fn env(&self, recipe: &Recipe) -> Vec<(String, String)> {
        let mut env =
            vec![("PATH".to_string(), "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin".to_string())];
        env.extend(recipe.env.iter().cloned());
        env
    }

    fn labels(&self, recipe: &Recipe) -> BTreeMap<String, String> {
        let p = &self.provenance;
        [
            ("org.opencontainers.image.title", recipe.name.as_str()),
            ("org.opencontainers.image.source", p.source.as_str()),
            ("org.opencontainers.image.revision", p.revision.as_str()),
            ("org.opencontainers.image.version", p.version.as_str()),
            ("org.opencontainers.image.licenses", "Apache-2.0"),
            ("org.opencontainers.image.created", self.created().as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// A layer's history line: what it holds.
fn describe(kind: &str, packages: &[Package]) -> String {
    let names: Vec<String> = packages.iter().map(Package::to_string).collect();
    format!("{kind}: Debian packages {}", names.join(" "))
}

/// Adds a package's files to `tree` (what `keep` keeps, and none of its manuals, translations
/// or documentation but its copyright), and records it where scanners look for the packages of
/// an image without a package database (`/var/lib/dpkg/status.d/NAME`, as distroless does).
fn add_package(tree: &mut Tree, package: &Package, deb: &Path, keep: impl Fn(&str) -> bool) -> Result<(), Error> {
    let data = apt::data(deb)?;
    let wanted = |path: &str| {
        let docs = path.starts_with("usr/share/doc/") && !path.ends_with("/copyright") && path.matches('/').count() > 3
            || ["usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/share/locale/", "usr/share/bug/"]
                .iter()
                .any(|p| path.starts_with(p));
        !docs && keep(path)
    };
    tree.add_tar(data.as_slice(), wanted).map_err(|e| Error::io(deb.to_path_buf(), e))?;
    let mut control = apt::control(deb)?;
    control.push_str("Status: install ok installed\n");
    tree.put(
        &format!("var/lib/dpkg/status.d/{}", package.name),
        Node { kind: Kind::File(control.into_bytes()), mode: 0o644, uid: 0, gid: 0 },
    );
    Ok(())
}

/// The packages of every image, one `name=version` a line: what `--lock` takes to build the
/// same images again.
pub fn lock(built: &[Built]) -> String {
    let all: BTreeSet<String> = built.iter().flat_map(|b| b.packages.iter().map(Package::to_string)).collect();
    all.into_iter().map(|p| p + "\n").collect()
}
