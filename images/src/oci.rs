//! OCI images: layers (a tree as a gzipped tar, with both digests), image configs, manifests,
//! and the OCI image layout they are written to and read from (`oci-layout`, `index.json`,
//! `blobs/sha256/…`), as the OCI image specification describes them.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::tree::Tree;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// What registries and runtimes that predate OCI call the same things.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The annotation an image layout names an image by (`flint-gateway:0.1.0`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:` and 64 hex digits.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// A layer: its gzipped tar (the blob) and the digest of the tar itself (the config's diff id).
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    /// Said in the image config's history.
    pub created_by: String,
}

impl Layer {
    /// `tree` as a layer; the same tree and `mtime` give the same bytes.
    pub fn of(tree: &Tree, mtime: u64, created_by: &str) -> std::io::Result<Layer> {
        let mut tar = Vec::new();
        tree.write_tar(&mut tar, mtime)?;
        let diff_id = digest(&tar);
        // No file name and no time in the gzip header: the same tar, the same blob.
        let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)?;
        Ok(Layer { blob: gz.finish()?, diff_id, created_by: created_by.to_string() })
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: LAYER.into(),
            digest: digest(&self.blob),
            size: self.blob.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// What the runtime is told to run (the image config's `config`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub created: String,
    pub created_by: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// An image ready to be written: its layers, config and manifest annotations.
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: RunConfig,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, from `SOURCE_DATE_EPOCH`.
    pub created: String,
}

/// JSON as every blob of ours is written: compact, fields in declaration order, so that the
/// same value is the same bytes.
pub fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("OCI types serialize")
}

/// An OCI image layout on disk.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Opens `dir` as a layout, making an empty one if there is none.
    pub fn create(dir: &Path) -> std::io::Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        if !dir.join("oci-layout").is_file() {
            std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !dir.join("index.json").is_file() {
            let empty = Index { schema_version: 2, media_type: INDEX.into(), manifests: Vec::new() };
            std::fs::write(dir.join("index.json"), json(&empty))?;
        }
        Ok(Layout { dir: dir.to_path_buf() })
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `bytes` (once: blobs are named by their content); its digest.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let d = digest(bytes);
        let path = self.blob_path(&d);
        if !path.is_file() {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, bytes)?;
            std::fs::rename(&partial, &path)?;
        }
        Ok(d)
    }

    /// A blob, checked against its digest.
    pub fn blob(&self, digest: &str) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(digest))?;
        if self::digest(&bytes) != digest {
            return Err(std::io::Error::other(format!("blob {digest} in {} is corrupt", self.dir.display())));
        }
        Ok(bytes)
    }

    pub fn index(&self) -> std::io::Result<Index> {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json"))?).map_err(std::io::Error::other)
    }

    /// Writes `image` and names it `reference` (`flint-gateway:0.1.0`) in the index, replacing
    /// an image of that name; its manifest's descriptor.
    pub fn write(&self, image: &Image, reference: &str) -> std::io::Result<Descriptor> {
        let mut history = Vec::new();
        let mut layers = Vec::new();
        for layer in &image.layers {
            self.put(&layer.blob)?;
            layers.push(layer.descriptor());
            history.push(History { created: image.created.clone(), created_by: layer.created_by.clone() });
        }
        let config = ImageConfig {
            created: image.created.clone(),
            architecture: "amd64".into(),
            os: "linux".into(),
            config: image.config.clone(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            history,
        };
        let config_bytes = json(&config);
        let config = Descriptor {
            media_type: CONFIG.into(),
            digest: self.put(&config_bytes)?,
            size: config_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST.into(),
            config,
            layers,
            annotations: image.annotations.clone(),
        };
        let bytes = json(&manifest);
        let descriptor = Descriptor {
            media_type: MANIFEST.into(),
            digest: self.put(&bytes)?,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        self.name(descriptor.clone(), reference)?;
        Ok(descriptor)
    }

    /// Names the manifest `descriptor` (its blob stored) `reference` in the index, replacing
    /// whatever had that name.
    pub fn name(&self, mut descriptor: Descriptor, reference: &str) -> std::io::Result<()> {
        let mut index = self.index()?;
        index.manifests.retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(reference));
        descriptor.annotations.insert(REF_NAME.into(), reference.to_string());
        descriptor.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into() });
        index.manifests.push(descriptor);
        index.manifests.sort_by(|a, b| a.annotations.get(REF_NAME).cmp(&b.annotations.get(REF_NAME)));
        let partial = self.dir.join("index.json.partial");
        std::fs::write(&partial, json(&index))?;
        std::fs::rename(partial, self.dir.join("index.json"))
    }

    /// The manifest named `reference` in the index.
    pub fn find(&self, reference: &str) -> std::io::Result<(Descriptor, Manifest)> {
        let index = self.index()?;
        let descriptor = index
            .manifests
            .into_iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(reference))
            .ok_or_else(|| std::io::Error::other(format!("no image {reference} in {}", self.dir.display())))?;
        let manifest = serde_json::from_slice(&self.blob(&descriptor.digest)?).map_err(std::io::Error::other)?;
        Ok((descriptor, manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_of_the_same_tree_is_the_same_blob_and_its_diff_id_is_the_tars_digest() {
        let mut t = Tree::default();
        t.file("etc/hello", "hi", 0o644);
        let (a, b) = (Layer::of(&t, 1, "x").unwrap(), Layer::of(&t, 1, "x").unwrap());
        assert_eq!(a.blob, b.blob);
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(a.blob.as_slice()), &mut tar).unwrap();
        assert_eq!(a.diff_id, digest(&tar));
        assert_ne!(Layer::of(&t, 2, "x").unwrap().blob, a.blob, "the time stamp is in the layer");
    }

    #[test]
    fn an_image_written_twice_has_one_digest_and_its_name_in_the_index() {
        let dir = std::env::temp_dir().join(format!("flint-oci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout::create(&dir).unwrap();
        let mut t = Tree::default();
        t.file("usr/local/bin/x", "#!", 0o755);
        let image = || Image {
            layers: vec![Layer::of(&t, 1, "x").unwrap()],
            config: RunConfig {
                entrypoint: vec!["/usr/local/bin/x".into()],
                user: "65532:65532".into(),
                ..Default::default()
            },
            annotations: BTreeMap::new(),
            created: "2023-11-14T22:13:20Z".into(),
        };
        let a = layout.write(&image(), "x:1").unwrap();
        let b = layout.write(&image(), "x:1").unwrap();
        assert_eq!(a, b);
        let (found, manifest) = layout.find("x:1").unwrap();
        assert_eq!(found.digest, a.digest);
        assert_eq!(manifest.layers.len(), 1);
        assert_eq!(layout.index().unwrap().manifests.len(), 1, "the name was replaced, not added");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
