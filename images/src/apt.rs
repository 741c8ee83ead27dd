//! Debian packages from Debian's archive through a private apt: its own sources, package lists,
//! cache and an empty "installed" list under one folder, so what the host has installed plays
//! no part (the host may carry a newer nodejs from elsewhere; the image gets Debian's). apt
//! resolves what a list of packages needs, then fetches those exact versions, checked against
//! the archive's signed index. `dpkg-deb` reads a package's files and fields.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use crate::Error;

/// Debian 12, the release of the Debian machines Flint is built and tested on.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// Package lists older than this are fetched again.
const LISTS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A package at one version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Package {
    pub name: String,
    pub version: String,
}

impl std::fmt::Display for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.version)
    }
}

pub struct Apt {
    root: PathBuf,
}

impl Apt {
    /// A private apt under `root` (made when missing).
    pub fn new(root: &Path) -> Result<Apt, Error> {
        for dir in
            ["etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial", "var/lib/dpkg", "debs"]
        {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| Error::io(root.join(dir), e))?;
        }
        let write = |path: PathBuf, text: &str| std::fs::write(&path, text).map_err(|e| Error::io(path, e));
        write(root.join("etc/apt/sources.list"), SOURCES)?;
        write(root.join("var/lib/dpkg/status"), "")?;
        // apt reads `Dir` from wherever it runs (downloads run in the cache folder).
        let root = std::fs::canonicalize(root).map_err(|e| Error::io(root.to_path_buf(), e))?;
        Ok(Apt { root })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let root = self.root.display();
        for option in [
            format!("Dir={root}"),
            format!("Dir::State::status={root}/var/lib/dpkg/status"),
            "Dir::Etc::Trusted=/etc/apt/trusted.gpg".into(),
            "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d".into(),
            "Dir::Etc::Parts=/nonexistent".into(),
            "APT::Architecture=amd64".into(),
            "APT::Install-Recommends=false".into(),
            "Debug::NoLocking=1".into(),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd.env("LC_ALL", "C.UTF-8").env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Fetches the package lists unless they are fresh.
    pub fn update(&self) -> Result<(), Error> {
        let lists = self.root.join("var/lib/apt/lists");
        let fresh = std::fs::read_dir(&lists).ok().into_iter().flatten().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let age =
                e.metadata().and_then(|m| m.modified()).ok().and_then(|m| SystemTime::now().duration_since(m).ok());
            name.contains("_Packages") && age.is_some_and(|a| a < LISTS_KEPT)
        });
        if fresh {
            return Ok(());
        }
        run(self.command("apt-get").arg("-qq").arg("update"), "apt-get update (Debian's package lists)")?;
        Ok(())
    }

    /// Every package `packages` needs, at the version apt would install on an empty system
    /// (`pinned` ones at their pinned version).
    pub fn resolve(&self, packages: &[&str], pinned: &[Package]) -> Result<Vec<Package>, Error> {
        let mut cmd = self.command("apt-get");
        cmd.args(["install", "-s", "-qq"]);
        for p in packages {
            match pinned.iter().find(|q| q.name == *p) {
                Some(q) => cmd.arg(q.to_string()),
                None => cmd.arg(p),
            };
        }
        let out = run(&mut cmd, &format!("resolving {}", packages.join(" ")))?;
        // "Inst libc6 (2.36-9+deb12u14 Debian:12.11/stable [amd64])"
        let mut found: Vec<Package> = out
            .lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .filter_map(|l| {
                let (name, rest) = l.split_once(' ')?;
                let version = rest.strip_prefix('(')?.split_whitespace().next()?;
                Some(Package { name: name.to_string(), version: version.to_string() })
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// The `.deb` file of each package, fetched when not already here.
    pub fn fetch(&self, packages: &[Package]) -> Result<Vec<PathBuf>, Error> {
        let debs = self.root.join("debs");
        let file = |p: &Package| {
            let arch_of = |arch: &str| debs.join(format!("{}_{}_{arch}.deb", p.name, p.version.replace(':', "%3a")));
            ["amd64", "all"].into_iter().map(arch_of).find(|f| f.is_file())
        };
        let missing: Vec<String> = packages.iter().filter(|p| file(p).is_none()).map(Package::to_string).collect();
        if !missing.is_empty() {
            let mut cmd = self.command("apt-get");
            cmd.current_dir(&debs).args(["download", "-qq"]).args(&missing);
            run(&mut cmd, "apt-get download")?;
        }
        packages
            .iter()
            .map(|p| file(p).ok_or_else(|| Error::Tool(format!("apt-get download left no .deb for {p}"))))
            .collect()
    }
}

/// A package's files (its data tar).
pub fn data(deb: &Path) -> Result<Vec<u8>, Error> {
    let out = Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).output().map_err(|e| Error::io(deb.into(), e))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "dpkg-deb --fsys-tarfile {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// A package's control fields, as `dpkg-deb --field` prints them.
pub fn control(deb: &Path) -> Result<String, Error> {
    run(Command::new("dpkg-deb").arg("--field").arg(deb), "dpkg-deb --field")
}

/// Runs `cmd`; its output, or an error naming `what` with what it printed.
fn run(cmd: &mut Command, what: &str) -> Result<String, Error> {
    let out = cmd.output().map_err(|e| Error::Tool(format!("{what}: {e} (Debian's apt and dpkg are needed)")))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
