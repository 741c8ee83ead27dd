//! Scratch folders under the temp dir, named `flint-{kind}-{pid}-{tag}` after the test binary that
//! made them. A folder is removed by its owner's `Drop`, but one can outlive its binary: a binary
//! killed outright, or a server kept in a static (statics are never dropped). Such folders hold
//! hundreds of MiB (a registry's images, a node's container root filesystems) and would fill a CI
//! disk over a few runs, so making a folder of a kind first removes the folders of that kind whose
//! binary is gone.

use std::path::{Path, PathBuf};

/// Folder `flint-{kind}-{this pid}-{tag}`, made if missing, after removing those of `kind` left by
/// binaries that are gone.
pub fn folder(kind: &str, tag: impl std::fmt::Display) -> PathBuf {
    let dir = file(kind, tag);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The same name for a file (not made), after the same removal.
pub fn file(kind: &str, tag: impl std::fmt::Display) -> PathBuf {
    sweep(kind);
    path(kind, std::process::id(), tag)
}

/// Where `folder` puts the folder of binary `pid`.
pub fn path(kind: &str, pid: u32, tag: impl std::fmt::Display) -> PathBuf {
    std::env::temp_dir().join(format!("flint-{kind}-{pid}-{tag}"))
}

/// Removes the folders and files of `kind` whose binary is gone, unmounting what is mounted
/// below them first (a killed binary's containers leave their root filesystems mounted).
fn sweep(kind: &str) {
    let prefix = format!("flint-{kind}-");
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(&prefix).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let path = entry.path();
            if path.is_dir() {
                crate::runtime::unmount_under(&path);
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}
