//! The test node's container runtime, as a kubelet drives containerd: pull a pod's image from
//! its registry (as `imagePullPolicy` says; a registry mirror maps names, as containerd's
//! mirrors do), unpack it once per digest (`umoci`, whiteouts and all), and make each
//! container's OCI runtime bundle from the image's config and the pod's spec the way the kubelet
//! merges them: `command`/`args` against `Entrypoint`/`Cmd`, the image's env then the
//! container's, `workingDir`, the user (the image's, or `runAsUser`/`runAsGroup`; refused with
//! the kubelet's words under `runAsNonRoot` when it is root), `readOnlyRootFilesystem`, dropped
//! capabilities, no new privileges, a memory limit, the pod's network namespace, its hostname
//! and its volumes. `runc` runs the bundle (see `node`).
//!
//! A writable root is an overlay on the unpacked image (its changes die with the container); a
//! read-only one is the unpacked image itself, mounted read-only.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use flint_images::{
    oci::{ImageConfig, Layout},
    registry::{Reference, Registry},
};
use serde_json::{Value, json};

pub struct Runtime {
    dir: PathBuf,
    layout: Layout,
    registry: Registry,
    /// `(from, to)`: an image named `from…` is pulled as `to…`.
    mirrors: std::sync::Mutex<Vec<(String, String)>>,
    unpacking: tokio::sync::Mutex<()>,
}

/// An image on the node.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// Its name in the node's image store (the reference it was pulled by).
    pub name: String,
    pub digest: String,
    pub config: ImageConfig,
}

/// A bind mount into a container.
#[derive(Clone, Debug)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What a container runs with, after the kubelet's merge of image and pod.
#[derive(Clone, Debug)]
pub struct Spec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub read_only_root: bool,
    pub drop_all_capabilities: bool,
    pub no_new_privileges: bool,
    pub memory_limit: Option<i64>,
    pub mounts: Vec<Mount>,
    pub netns: PathBuf,
    pub hostname: String,
}

/// One container's bundle; unmounted and removed by [`Runtime::remove`].
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
    overlay: bool,
}

impl Runtime {
    pub fn new(dir: &Path, mirrors: Vec<(String, String)>) -> Result<Runtime, String> {
        let layout = Layout::create(&dir.join("images")).map_err(|e| e.to_string())?;
        Ok(Runtime {
            dir: dir.to_path_buf(),
            layout,
            registry: Registry::new(None),
            mirrors: std::sync::Mutex::new(mirrors),
            unpacking: tokio::sync::Mutex::new(()),
        })
    }

    /// Pulls images named `from…` from `to…` instead.
    pub fn mirror(&self, from: &str, to: &str) {
        self.mirrors.lock().unwrap().push((from.to_string(), to.to_string()));
    }

    fn mirrored(&self, image: &str) -> String {
        for (from, to) in self.mirrors.lock().unwrap().iter() {
            if let Some(rest) = image.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        image.to_string()
    }

    /// The image, pulled as `policy` (`Always`, `IfNotPresent`, `Never`) says; the error is the
    /// message a kubelet gives with `ErrImagePull` (or `ErrImageNeverPull`).
    pub async fn pull(&self, image: &str, policy: &str) -> Result<Pulled, (&'static str, String)> {
        let name = self.mirrored(image);
        let present = self.layout.find(&name).ok();
        let (digest, manifest) = match (policy, present) {
            ("Never", None) => {
                return Err((
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                ));
            }
            ("Never" | "IfNotPresent", Some((d, m))) => (d.digest, m),
            _ => {
                let failed =
                    |why: String| ("ErrImagePull", format!("failed to pull and unpack image \"{image}\": {why}"));
                let reference = Reference::parse(&name).map_err(failed)?;
                self.registry.pull(&reference, &self.layout, &name).await.map_err(|e| failed(e.to_string()))?
            }
        };
        let config = self.layout.blob(&manifest.config.digest).map_err(|e| ("ErrImagePull", e.to_string()))?;
        let config =
            serde_json::from_slice(&config).map_err(|e| ("ErrImagePull", format!("the image's config: {e}")))?;
        Ok(Pulled { name, digest, config })
    }

    /// The image unpacked (once per digest): `rootfs/` and umoci's `config.json`.
    async fn unpacked(&self, pulled: &Pulled) -> Result<PathBuf, String> {
        let _one = self.unpacking.lock().await;
        let dir = self.dir.join("unpacked").join(pulled.digest.trim_start_matches("sha256:"));
        if dir.join("config.json").is_file() {
            return Ok(dir);
        }
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(partial.parent().expect("under the node's folder")).map_err(|e| e.to_string())?;
        let image = format!("{}:{}", self.layout.dir.display(), pulled.name);
        let out = Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&partial)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("unpacking {}: {}", pulled.name, String::from_utf8_lossy(&out.stderr)));
        }
        std::fs::rename(&partial, &dir).map_err(|e| e.to_string())?;
        Ok(dir)
    }

    /// The bundle of container `id`: its root filesystem mounted, its `config.json` written.
    pub async fn create(&self, id: &str, pulled: &Pulled, spec: &Spec) -> Result<Bundle, String> {
        let image = self.unpacked(pulled).await?;
        let dir = self.dir.join("containers").join(id);
        let _ = umount(&dir.join("rootfs"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).map_err(|e| e.to_string())?;
        let overlay = !spec.read_only_root;
        let root = if overlay {
            for sub in ["upper", "work"] {
                std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
            }
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                image.join("rootfs").display(),
                dir.join("upper").display(),
                dir.join("work").display()
            );
            run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(dir.join("rootfs")))?;
            dir.join("rootfs")
        } else {
            image.join("rootfs")
        };
        let template: Value =
            serde_json::from_slice(&std::fs::read(image.join("config.json")).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let config = config(template, &root, id, spec);
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).expect("JSON"))
            .map_err(|e| e.to_string())?;
        Ok(Bundle { id: id.to_string(), dir, overlay })
    }

    /// Unmounts and removes a bundle (its container gone).
    pub fn remove(&self, bundle: &Bundle) {
        let _ = Command::new("runc").args(["delete", "-f", &bundle.id]).output();
        if bundle.overlay {
            let _ = umount(&bundle.dir.join("rootfs"));
        }
        let _ = std::fs::remove_dir_all(&bundle.dir);
    }
}

/// umoci's config with the pod's settings: what the runtime runs.
fn config(mut c: Value, root: &Path, id: &str, spec: &Spec) -> Value {
    c["root"] = json!({"path": root, "readonly": spec.read_only_root});
    c["hostname"] = spec.hostname.clone().into();
    let p = &mut c["process"];
    p["terminal"] = false.into();
    p["args"] = spec.args.clone().into();
    p["env"] = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().into();
    p["cwd"] = spec.cwd.clone().into();
    p["user"] = json!({"uid": spec.uid, "gid": spec.gid});
    p["noNewPrivileges"] = spec.no_new_privileges.into();
    if spec.drop_all_capabilities {
        p["capabilities"] = json!({"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []});
    }
    let namespaces = c["linux"]["namespaces"].as_array_mut().expect("umoci writes namespaces");
    namespaces.retain(|n| n["type"] != "network");
    namespaces.push(json!({"type": "network", "path": spec.netns}));
    c["linux"]["cgroupsPath"] = format!("/flint-test/{id}").into();
    if let Some(limit) = spec.memory_limit {
        c["linux"]["resources"]["memory"] = json!({"limit": limit});
    }
    let mounts = c["mounts"].as_array_mut().expect("umoci writes mounts");
    for m in &spec.mounts {
        mounts.retain(|existing| existing["destination"] != m.destination.as_str());
        let mut options = vec!["rbind", "nosuid", "nodev"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": options}));
    }
    c
}

/// Lazily unmounts every mount below `dir`.
pub(crate) fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split(' ').nth(1)).map(Path::new) {
        if point.starts_with(dir) {
            let _ = run(Command::new("umount").arg("-l").arg(point));
        }
    }
}

fn umount(path: &Path) -> Result<(), String> {
    run(Command::new("umount").arg(path))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The image's `User` as the kubelet reads it: a uid (and gid), a name it cannot check, or root.
pub fn image_user(config: &ImageConfig) -> Result<(u32, u32), String> {
    let user = config.config.user.as_str();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let uid = u.parse::<u32>().map_err(|_| u.to_string())?;
    let gid = if g.is_empty() { uid } else { g.parse::<u32>().map_err(|_| g.to_string())? };
    Ok((uid, gid))
}

/// `command`/`args` against the image's `Entrypoint`/`Cmd`, as the kubelet merges them.
pub fn argv(config: &ImageConfig, command: &[String], args: &[String]) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => config.config.entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => config.config.entrypoint.iter().chain(&config.config.cmd).cloned().collect(),
    }
}

/// The image's env as pairs.
pub fn image_env(config: &ImageConfig) -> BTreeMap<String, String> {
    config.config.env.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str], user: &str) -> ImageConfig {
        serde_json::from_value(json!({
            "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "User": user, "Env": ["PATH=/bin", "A=1"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    #[test]
    fn command_and_args_merge_with_the_image_as_the_kubelet_merges_them() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let img = image(&["/bin/gw"], &["--port", "8080"], "65532:65532");
        assert_eq!(argv(&img, &[], &[]), s(&["/bin/gw", "--port", "8080"]));
        assert_eq!(argv(&img, &[], &s(&["run"])), s(&["/bin/gw", "run"]));
        assert_eq!(argv(&img, &s(&["sh", "-c"]), &s(&["x"])), s(&["sh", "-c", "x"]));
        assert_eq!(argv(&img, &s(&["sh"]), &[]), s(&["sh"]));
        assert_eq!(image_user(&img), Ok((65532, 65532)));
        assert_eq!(image_user(&image(&[], &[], "")), Ok((0, 0)));
        assert_eq!(image_user(&image(&[], &[], "1000")), Ok((1000, 1000)));
        assert_eq!(image_user(&image(&[], &[], "nonroot")), Err("nonroot".into()));
        assert_eq!(image_env(&img)["A"], "1");
    }
}
