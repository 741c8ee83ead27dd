//! A file tree held in memory and written as a tar that is the same, byte for byte, every time
//! it holds the same files: entries in path order, every time stamp the build's
//! `SOURCE_DATE_EPOCH`, owners and modes as given, no user or group names, no host details.

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
};

/// What is at a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// Another path of the tree (without a leading `/`).
    Hardlink(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// Paths without a leading `/` (`usr/bin/python3`), the root excluded.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// `usr/bin/x` from `/usr/bin/x`, `./usr/bin/x` or `usr/bin/x/`; `None` for the root itself, or
/// for a path that leaves it (`..`).
pub fn normal(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normal(path)?)
    }

    pub fn paths(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Puts `node` at `path`, making the directories above it (0755, root) that are missing.
    pub fn put(&mut self, path: &str, node: Node) {
        let Some(path) = normal(path) else { return };
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            self.nodes.entry(parent.to_string()).or_insert(Node { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0 });
            at += i + 1;
        }
        // A directory already there keeps what is below it; anything else is replaced.
        if node.kind == Kind::Dir && self.nodes.get(&path).is_some_and(|n| n.kind == Kind::Dir) {
            self.nodes.insert(path, node);
            return;
        }
        let below = format!("{path}/");
        let gone: Vec<String> =
            self.nodes.range(below.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&below)).cloned().collect();
        if node.kind != Kind::Dir {
            for k in gone {
                self.nodes.remove(&k);
            }
        }
        self.nodes.insert(path, node);
    }

    pub fn dir(&mut self, path: &str, mode: u32, owner: u64) {
        self.put(path, Node { kind: Kind::Dir, mode, uid: owner, gid: owner });
    }

    pub fn file(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        self.put(path, Node { kind: Kind::File(bytes.into()), mode, uid: 0, gid: 0 });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.put(path, Node { kind: Kind::Symlink(target.to_string()), mode: 0o777, uid: 0, gid: 0 });
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) {
        let Some(path) = normal(path) else { return };
        let below = format!("{path}/");
        let gone: Vec<String> = self
            .nodes
            .range(path.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| **k == path || k.starts_with(&below))
            .cloned()
            .collect();
        for k in gone {
            self.nodes.remove(&k);
        }
    }

    /// Adds every entry of a tar archive (a Debian package's data) for which `keep` says yes.
    pub fn add_tar(&mut self, archive: impl Read, keep: impl Fn(&str) -> bool) -> io::Result<()> {
        let mut archive = tar::Archive::new(archive);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normal(&raw) else { continue };
            if !keep(&path) {
                continue;
            }
            let header = entry.header();
            let (mode, uid, gid) = (header.mode()?, header.uid()?, header.gid()?);
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .ok_or_else(|| io::Error::other(format!("{path}: a link without a target")))
            };
            let kind = match header.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link()?),
                tar::EntryType::Link => Kind::Hardlink(normal(&link()?).unwrap_or_default()),
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut bytes = Vec::with_capacity(header.size()? as usize);
                    entry.read_to_end(&mut bytes)?;
                    Kind::File(bytes)
                }
                // Devices, fifos: nothing an image needs.
                _ => continue,
            };
            self.put(&path, Node { kind, mode, uid, gid });
        }
        Ok(())
    }

    /// Writes the tree as a tar: entries in path order (a directory before what it holds),
    /// every time stamp `mtime`.
    pub fn write_tar(&self, out: impl Write, mtime: u64) -> io::Result<()> {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        for (path, node) in &self.nodes {
            let mut header = tar::Header::new_gnu();
            header.set_mode(node.mode);
            header.set_uid(node.uid);
            header.set_gid(node.gid);
            header.set_mtime(mtime);
            match &node.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), io::empty())?;
                }
                Kind::File(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    builder.append_data(&mut header, path, bytes.as_slice())?;
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
                Kind::Hardlink(target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        builder.into_inner()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normal_and_never_leave_the_root() {
        assert_eq!(normal("./usr/bin/x").as_deref(), Some("usr/bin/x"));
        assert_eq!(normal("/usr//bin/x/").as_deref(), Some("usr/bin/x"));
        assert_eq!(normal("./"), None);
        assert_eq!(normal("usr/../../etc/passwd"), None);
    }

    #[test]
    fn the_same_files_make_the_same_tar_and_parents_come_first() {
        let build = |order: &[&str]| {
            let mut t = Tree::default();
            for p in order {
                t.file(p, p.as_bytes().to_vec(), 0o644);
            }
            t.symlink("bin/sh", "dash");
            let mut out = Vec::new();
            t.write_tar(&mut out, 1_700_000_000).unwrap();
            out
        };
        let a = build(&["usr/bin/b", "usr/bin/a", "etc/passwd"]);
        let b = build(&["etc/passwd", "usr/bin/a", "usr/bin/b"]);
        assert_eq!(a, b);
        let mut archive = tar::Archive::new(a.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["bin/", "bin/sh", "etc/", "etc/passwd", "usr/", "usr/bin/", "usr/bin/a", "usr/bin/b"]);
    }

    #[test]
    fn a_file_replaces_a_directory_and_removing_takes_what_is_below() {
        let mut t = Tree::default();
        t.file("a/b/c", "x", 0o644);
        t.file("a/b", "y", 0o644);
        assert!(t.get("a/b/c").is_none());
        t.file("d/e", "z", 0o644);
        t.remove("d");
        assert!(t.get("d").is_none() && t.get("d/e").is_none() && t.get("a/b").is_some());
    }
}
