//! The images Flint ships, described once, as Dockerfiles would describe them (the Dockerfiles
//! in the repository describe the same images for people who build with Docker):
//!
//! - `flint-gateway`, `flint-operator`, `watchdog`: the release binary on the base layer
//!   (glibc, libgcc, CA certificates, time zones, `/etc/services`; no shell, no package manager),
//!   user 65532;
//! - `examples/NAME`: the watchdog, the function's runtime from Debian (python3, node, a shell)
//!   and its code, user 1000, as `examples/NAME/Dockerfile` says;
//! - a stand-in for the chart's NATS image (Debian's `nats-server`), for clusters that cannot
//!   pull from public registries (the tests). Debian's Prometheus cannot stand in for the
//!   chart's: it is built without Kubernetes service discovery.

use std::path::{Path, PathBuf};

/// One image.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// Its repository name below the registry (`flint-gateway`, `examples/hello-python`).
    pub name: String,
    /// Debian packages of its runtime layer, with what they need (the base layer's excepted).
    pub runtime: Vec<&'static str>,
    /// Files of its own layer: (from, to, mode).
    pub files: Vec<(PathBuf, String, u32)>,
    /// Directories of its own layer: (path, owner).
    pub dirs: Vec<(String, u64)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `uid:gid`.
    pub user: String,
    pub working_dir: String,
    pub ports: Vec<u16>,
    /// Built only when asked for (`--stand-ins`).
    pub stand_in: bool,
    /// Its tags, when not the build's (the greeter example's manifest names two versions).
    pub tags: Vec<String>,
}

/// The base layer's packages, taken as they are (not what they need: `ca-certificates` would
/// bring openssl and debconf, and only its certificates are wanted).
pub const BASE: &[&str] = &["libc6", "libgcc-s1", "ca-certificates", "tzdata", "netbase"];

/// Packages a runtime's dependencies bring that are only of use to install packages.
pub const NOT_AT_RUN_TIME: &[&str] = &[
    "dpkg",
    "debconf",
    "cdebconf",
    "perl",
    "perl-base",
    "perl-modules-5.36",
    "libperl5.36",
    "install-info",
    "tar",
    "debianutils",
    "readline-common",
    "mailcap",
    "libdebian-installer4",
    "libnewt0.52",
    "libslang2",
    "libtextwrap1",
    "sensible-utils",
    "init-system-helpers",
    "base-files",
];

/// Where the recipes find what they put in images.
pub struct Inputs<'a> {
    /// The release binaries (`flint-gateway`, `flint-operator`, `watchdog`).
    pub binaries: &'a Path,
    /// The workspace (for `examples/`).
    pub workspace: &'a Path,
    /// The hello-rust example's release binary.
    pub hello_rust: Option<&'a Path>,
}

const FLINT_USER: &str = "65532:65532";
const APP_USER: &str = "1000:1000";

fn base(name: &str, user: &str) -> Recipe {
    Recipe {
        name: name.to_string(),
        runtime: Vec::new(),
        files: Vec::new(),
        dirs: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: Vec::new(),
        user: user.to_string(),
        working_dir: "/home/nonroot".into(),
        ports: Vec::new(),
        stand_in: false,
        tags: Vec::new(),
    }
}

/// A Flint binary as the image's entrypoint.
fn flint(inputs: &Inputs, binary: &str, cmd: &[&str], ports: &[u16]) -> Recipe {
    let to = format!("/usr/local/bin/{binary}");
    Recipe {
        files: vec![(inputs.binaries.join(binary), to.clone(), 0o755)],
        entrypoint: vec![to],
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        ports: ports.to_vec(),
        ..base(binary, FLINT_USER)
    }
}

/// A function's language runtime: the Debian packages its image holds besides the base layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Python,
    Node,
    /// A POSIX shell (`dash` as `sh`) with coreutils.
    Shell,
    /// Nothing beyond glibc and libgcc: a compiled program.
    Binary,
}

impl Runtime {
    pub const NAMES: &str = "python, node, shell or binary";

    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Runtime::Python => &["python3-minimal", "libpython3.11-stdlib"],
            Runtime::Node => &["nodejs"],
            Runtime::Shell => &["dash", "coreutils"],
            Runtime::Binary => &[],
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "python" | "python3" => Ok(Runtime::Python),
            "node" | "nodejs" => Ok(Runtime::Node),
            "shell" | "sh" => Ok(Runtime::Shell),
            "binary" => Ok(Runtime::Binary),
            other => Err(format!("unknown runtime {other:?}: {}", Runtime::NAMES)),
        }
    }
}

/// A function image: the watchdog as entrypoint, a runtime, the function's files in
/// `/home/app` (its working directory), the watchdog's settings as env, user 1000.
pub fn function(
    name: &str,
    watchdog: &Path,
    runtime: &[&'static str],
    code: Vec<(PathBuf, String, u32)>,
    env: Vec<(String, String)>,
) -> Recipe {
    let mut files = vec![(watchdog.to_path_buf(), "/usr/local/bin/watchdog".to_string(), 0o755)];
    files.extend(code);
    Recipe {
        runtime: runtime.to_vec(),
        files,
        dirs: vec![("/home/app".into(), 0)],
        entrypoint: vec!["/usr/local/bin/watchdog".into()],
        env,
        working_dir: "/home/app".into(),
        ports: vec![8080],
        ..base(name, APP_USER)
    }
}

/// Every file below `dir` (`.git` aside), as it goes into `/home/app`: executable files stay
/// executable, the rest is read-only to the function.
pub fn folder(dir: &Path) -> std::io::Result<Vec<(PathBuf, String, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                if entry.file_name() != ".git" {
                    pending.push(path);
                }
                continue;
            }
            let relative = path.strip_prefix(dir).expect("below dir").to_string_lossy().into_owned();
            let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            out.push((path, format!("/home/app/{relative}"), mode));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// An example function: its files of `examples/NAME` and the settings its Dockerfile sets.
fn example(inputs: &Inputs, name: &str, runtime: &[&'static str], code: &[&str], env: &[(&str, &str)]) -> Recipe {
    let dir = inputs.workspace.join("examples").join(name);
    let code = code.iter().map(|file| (dir.join(file), format!("/home/app/{file}"), 0o644)).collect();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    function(&format!("examples/{name}"), &inputs.binaries.join("watchdog"), runtime, code, env)
}

/// Every image, in the order they are built.
pub fn all(inputs: &Inputs) -> Vec<Recipe> {
    let shell = Runtime::Shell.packages();
    let mut out = vec![
        flint(inputs, "flint-gateway", &[], &[8080]),
        flint(inputs, "flint-operator", &["run"], &[8080]),
        flint(inputs, "watchdog", &[], &[8080]),
        example(
            inputs,
            "hello-python",
            Runtime::Python.packages(),
            &["handler.py"],
            &[("fprocess", "python3 handler.py"), ("mode", "http"), ("upstream_url", "http://127.0.0.1:5000")],
        ),
        example(
            inputs,
            "hello-node",
            Runtime::Node.packages(),
            &["handler.js"],
            &[("fprocess", "node handler.js"), ("mode", "http"), ("upstream_url", "http://127.0.0.1:3000")],
        ),
        example(inputs, "echo-shell", shell, &["handler.sh"], &[("fprocess", "sh handler.sh"), ("mode", "streaming")]),
        example(inputs, "cron-report", shell, &["handler.sh"], &[("fprocess", "sh handler.sh"), ("mode", "streaming")]),
        Recipe {
            name: "examples/greeter".into(),
            tags: vec!["1.0.0".into(), "1.1.0".into()],
            ..example(
                inputs,
                "greeter-canary",
                shell,
                &[],
                &[("fprocess", "sh -c 'echo \"$VERSION: $(cat)\"'"), ("mode", "streaming")],
            )
        },
    ];
    if let Some(binary) = inputs.hello_rust {
        let mut rust = example(
            inputs,
            "hello-rust",
            &["dash"],
            &["run.sh"],
            &[("fprocess", "sh run.sh"), ("mode", "http"), ("upstream_url", "http://127.0.0.1:8000")],
        );
        rust.files.push((binary.to_path_buf(), "/home/app/target/release/hello-rust".into(), 0o755));
        out.push(rust);
    }
    // A stand-in for the chart's NATS image, from Debian's package.
    out.push(Recipe {
        runtime: vec!["nats-server"],
        entrypoint: vec!["/usr/sbin/nats-server".into()],
        ports: vec![4222, 8222],
        stand_in: true,
        ..base("stand-ins/nats", FLINT_USER)
    });
    out
}
