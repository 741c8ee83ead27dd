//! `flint-images build`: builds Flint's images into an OCI image layout (and, with `--push`,
//! pushes them to a registry); `scripts/images` runs it after building the release binaries.
//! `flint-images function NAME --code DIR --runtime R --fprocess CMD`: a function's own image,
//! the same way. See `lib.rs` for the parts.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use flint_images::{
    Error,
    apt::{Apt, Package},
    build::{Builder, Built, Provenance, lock},
    oci::Layout,
    recipe::{self, Inputs},
    registry::{Reference, Registry},
};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build Flint's images into an OCI image layout.
    Build(BuildArgs),
    /// Build a function's image from a folder of code: the watchdog, a runtime, the folder.
    Function(FunctionArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Folder of the release binaries (flint-gateway, flint-operator, watchdog).
    #[arg(long, default_value = "target/release")]
    binaries: PathBuf,
    /// The hello-rust example's release binary (without it, that example is not built).
    #[arg(long)]
    hello_rust: Option<PathBuf>,
    /// The workspace (for examples/).
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
    /// Build only these images (`flint-gateway`, `examples/hello-python`, …).
    #[arg(long)]
    only: Vec<String>,
    /// Also build the stand-in for the chart's NATS image (stand-ins/nats).
    #[arg(long)]
    stand_ins: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args)]
struct FunctionArgs {
    /// The image's name (`hello`, `team/hello`); pushed as REGISTRY/NAME:TAG.
    name: String,
    /// The function's folder: every file in it goes to /home/app, the working directory.
    #[arg(long)]
    code: PathBuf,
    /// What runs the code: python, node, shell, or binary (a compiled program; glibc only).
    #[arg(long)]
    runtime: recipe::Runtime,
    /// The watchdog's `fprocess`: the command that handles a call (`python3 handler.py`).
    #[arg(long)]
    fprocess: String,
    /// The watchdog's mode: streaming (a process per call) or http (one long-lived server).
    #[arg(long, default_value = "streaming")]
    mode: String,
    /// In http mode, where the function's server listens (`http://127.0.0.1:5000`).
    #[arg(long)]
    upstream_url: Option<String>,
    /// More environment, `KEY=VALUE`.
    #[arg(long = "env", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// The watchdog binary to put in the image.
    #[arg(long, default_value = "target/release/watchdog")]
    watchdog: PathBuf,
    #[command(flatten)]
    output: Output,
}

/// Where images go, and what makes them the same bytes twice.
#[derive(clap::Args)]
struct Output {
    /// Where the OCI image layout goes (and the private apt's cache, in `apt/` beside it).
    #[arg(long, default_value = "target/images")]
    out: PathBuf,
    /// The images' tag (examples whose manifests name other tags keep theirs).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// Debian package versions to build with (a previous build's packages.lock).
    #[arg(long)]
    lock: Option<PathBuf>,
    /// Time stamp of every file and config (default: SOURCE_DATE_EPOCH, else the commit's time).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    epoch: Option<u64>,
    /// Push every image to this registry and path (`127.0.0.1:5000/flint-dev`, `ghcr.io/you`);
    /// a login comes from FLINT_REGISTRY_USER and FLINT_REGISTRY_PASSWORD.
    #[arg(long)]
    push: Option<String>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let done = match Cli::parse().command {
        Command::Build(args) => runtime.block_on(build(args)),
        Command::Function(args) => runtime.block_on(function(args)),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flint-images: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn build(args: BuildArgs) -> Result<(), Error> {
    let inputs =
        Inputs { binaries: &args.binaries, workspace: &args.workspace, hello_rust: args.hello_rust.as_deref() };
    let recipes: Vec<_> = recipe::all(&inputs)
        .into_iter()
        .filter(|r| if args.only.is_empty() { !r.stand_in || args.stand_ins } else { args.only.contains(&r.name) })
        .collect();
    produce(&args.output, &args.workspace, &recipes).await
}

async fn function(args: FunctionArgs) -> Result<(), Error> {
    let code = recipe::folder(&args.code).map_err(|e| Error::io(args.code.clone(), e))?;
    if code.is_empty() {
        return Err(Error::Tool(format!("{} holds no file", args.code.display())));
    }
    let mut env = vec![("fprocess".to_string(), args.fprocess), ("mode".to_string(), args.mode)];
    env.extend(args.upstream_url.map(|u| ("upstream_url".to_string(), u)));
    env.extend(args.env);
    let recipe = recipe::function(&args.name, &args.watchdog, args.runtime.packages(), code, env);
    produce(&args.output, &args.code, &[recipe]).await
}

/// Builds `recipes` into the layout, writes the package lock and summary, pushes if asked;
/// provenance from the git checkout `source` is in (if any).
async fn produce(output: &Output, source: &std::path::Path, recipes: &[recipe::Recipe]) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let git = |git_args: &[&str]| {
        std::process::Command::new("git")
            .args(git_args)
            .current_dir(source)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let epoch = output.epoch.or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|t| t.parse().ok())).unwrap_or(0);
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let revision =
        git(&["rev-parse", "HEAD"]).map(|r| if dirty { format!("{r}-dirty") } else { r }).unwrap_or_default();
    let provenance = Provenance {
        source: std::env::var("FLINT_IMAGE_SOURCE").unwrap_or_else(|_| "https://github.com/flint-dev/flint".into()),
        revision,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let pins = match &output.lock {
        Some(path) => read_lock(path)?,
        None => Vec::new(),
    };
    let apt = Apt::new(&output.out.join("apt"))?;
    apt.update()?;
    let mut builder = Builder::new(apt, epoch, provenance, pins);
    let layout = Layout::create(&output.out.join("oci")).map_err(|e| Error::io(output.out.join("oci"), e))?;
    let mut built: Vec<Built> = Vec::new();
    for r in recipes {
        let b = builder.build(r, &output.tag, &layout)?;
        let sizes: Vec<String> = b.layer_sizes.iter().map(|s| format!("{:.1}", *s as f64 / 1048576.0)).collect();
        let total: u64 = b.layer_sizes.iter().sum();
        println!(
            "{:<28} {}  {:>6.1} MiB in {} layers ({} MiB)",
            b.references.join(" "),
            &b.manifest.digest[..19],
            total as f64 / 1048576.0,
            b.layer_sizes.len(),
            sizes.join(" + ")
        );
        built.push(b);
    }
    let lock_path = output.out.join("packages.lock");
    std::fs::write(&lock_path, lock(&built)).map_err(|e| Error::io(lock_path.clone(), e))?;
    let summary: Vec<serde_json::Value> = built
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name, "references": b.references, "digest": b.manifest.digest,
                "layers": b.layer_sizes, "compressed": b.layer_sizes.iter().sum::<u64>(),
            })
        })
        .collect();
    let summary_path = output.out.join("images.json");
    std::fs::write(&summary_path, serde_json::to_vec_pretty(&summary).expect("JSON"))
        .map_err(|e| Error::io(summary_path, e))?;
    eprintln!(
        "built {} images in {:.1}s into {} (packages in {})",
        built.len(),
        started.elapsed().as_secs_f64(),
        layout.dir.display(),
        lock_path.display()
    );
    if let Some(prefix) = &output.push {
        let login = std::env::var("FLINT_REGISTRY_USER").ok().zip(std::env::var("FLINT_REGISTRY_PASSWORD").ok());
        let registry = Registry::new(login);
        for b in &built {
            for reference in &b.references {
                let target =
                    Reference::parse(&format!("{}/{reference}", prefix.trim_end_matches('/'))).map_err(Error::Tool)?;
                let digest = registry.push(&layout, reference, &target).await?;
                println!("pushed {target}@{digest}");
            }
        }
    }
    Ok(())
}

/// `name=version` lines.
fn read_lock(path: &std::path::Path) -> Result<Vec<Package>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_path_buf(), e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, version) = l
                .trim()
                .split_once('=')
                .ok_or_else(|| Error::Tool(format!("{}: {l:?} is not NAME=VERSION", path.display())))?;
            Ok(Package { name: name.into(), version: version.into() })
        })
        .collect()
}
