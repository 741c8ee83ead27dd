//! `flint-images`: Flint's container images, built without a Docker daemon and without pulling
//! anything, as ko, apko and distroless build theirs: from the release binaries and Debian's
//! packages, the same bytes for the same inputs, into an OCI image layout; pushed to and pulled
//! from OCI registries.
//!
//! - `recipe`: the images (Flint's own, the examples, stand-ins for the chart's third-party ones);
//! - `apt`: Debian packages through a private apt (resolve, fetch, read);
//! - `tree`: a file tree in memory, written as a reproducible tar;
//! - `build`: recipes to layers (a shared base, a runtime, the image's files) and images,
//!   checked by `elf` (entrypoint there, every shared library found);
//! - `oci`: layers, configs, manifests and the image layout on disk;
//! - `registry`: the OCI distribution API, push and pull.

pub mod apt;
pub mod build;
pub mod elf;
pub mod oci;
pub mod recipe;
pub mod registry;
pub mod tree;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Tool(String),
    #[error("image {0}: {1}")]
    Image(String, String),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}

impl Error {
    pub fn io(path: PathBuf, source: std::io::Error) -> Error {
        Error::Io { path, source }
    }
}
