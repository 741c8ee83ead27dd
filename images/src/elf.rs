//! Before an image is written: does its entrypoint exist, and does every program on its PATH
//! find its dynamic loader and every shared library it needs inside the image? An image whose
//! entrypoint is missing, or whose binary needs a library the image lacks, fails here, naming
//! the file, instead of in a cluster as `exec format error` or `error while loading shared
//! libraries`.

use std::collections::{BTreeSet, VecDeque};

use object::{
    Endianness,
    elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH, FileHeader64, PT_INTERP},
    read::elf::{Dyn, FileHeader, ProgramHeader},
};

use crate::tree::{Kind, Node, Tree, normal};

/// Where glibc's loader looks when a program names no other place (Debian, amd64).
const LIBRARY_DIRS: &[&str] =
    &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib"];

/// `path` in the tree with every symbolic link on the way followed; the final path and node.
pub fn resolve<'a>(tree: &'a Tree, path: &str) -> Option<(String, &'a Node)> {
    let mut pending: VecDeque<String> = normal(path)?.split('/').map(str::to_string).collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        at.push(part);
        let here = at.join("/");
        let node = tree.get(&here)?;
        if let Kind::Symlink(target) = &node.kind {
            hops += 1;
            if hops > 40 {
                return None;
            }
            at.pop();
            if target.starts_with('/') {
                at.clear();
            }
            for (i, p) in target.split('/').enumerate() {
                pending.insert(i, p.to_string());
            }
        }
    }
    let path = at.join("/");
    let node = tree.get(&path)?;
    Some((path, node))
}

/// What an ELF file asks of the loader.
struct Needs {
    interpreter: Option<String>,
    libraries: Vec<String>,
    search: Vec<String>,
}

fn needs(bytes: &[u8]) -> Option<Needs> {
    let header = FileHeader64::<Endianness>::parse(bytes).ok()?;
    let endian = header.endian().ok()?;
    let mut interpreter = None;
    for segment in header.program_headers(endian, bytes).ok()? {
        if segment.p_type(endian) == PT_INTERP {
            let raw = segment.data(endian, bytes).ok()?;
            interpreter = Some(String::from_utf8_lossy(raw).trim_end_matches('\0').to_string());
        }
    }
    let sections = header.sections(endian, bytes).ok()?;
    let mut libraries = Vec::new();
    let mut search = Vec::new();
    if let Some((entries, link)) = sections.dynamic(endian, bytes).ok()? {
        let strings = sections.strings(endian, bytes, link).ok()?;
        for entry in entries {
            let tag = entry.d_tag(endian);
            if !matches!(tag, DT_NEEDED | DT_RUNPATH | DT_RPATH) {
                continue;
            }
            let Ok(name) = entry.string(endian, strings) else { continue };
            let name = String::from_utf8_lossy(name).into_owned();
            if tag == DT_NEEDED {
                libraries.push(name);
            } else {
                search.extend(name.split(':').map(str::to_string));
            }
        }
    }
    Some(Needs { interpreter, libraries, search })
}

fn is_elf(node: &Node) -> Option<&[u8]> {
    match &node.kind {
        Kind::File(bytes) if bytes.starts_with(b"\x7fELF") => Some(bytes),
        _ => None,
    }
}

/// Checks `entrypoint` and the programs on the image's `PATH` (from `env`).
pub fn check(tree: &Tree, entrypoint: &[String], env: &[(String, String)]) -> Result<(), String> {
    let mut programs: Vec<String> = Vec::new();
    if let Some(first) = entrypoint.first() {
        let found = if first.starts_with('/') {
            resolve(tree, first)
        } else {
            path_dirs(env).iter().find_map(|d| resolve(tree, &format!("{d}/{first}")))
        };
        let Some((path, node)) = found else { return Err(format!("its entrypoint {first} is not in the image")) };
        match &node.kind {
            Kind::File(bytes) if node.mode & 0o111 != 0 => {
                if let Some(script) = bytes.strip_prefix(b"#!") {
                    let line =
                        String::from_utf8_lossy(script.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned();
                    let interpreter = line.split_whitespace().next().unwrap_or_default().to_string();
                    if resolve(tree, &interpreter).is_none() {
                        return Err(format!(
                            "its entrypoint {first} is a script for {interpreter}, which is not in the image"
                        ));
                    }
                }
            }
            _ => return Err(format!("its entrypoint {first} is not an executable file")),
        }
        programs.push(path);
    }
    for dir in path_dirs(env) {
        let Some(dir) = normal(&dir) else { continue };
        let prefix = format!("{dir}/");
        for (path, node) in tree.paths() {
            if path.starts_with(&prefix) && !path[prefix.len()..].contains('/') && node.mode & 0o111 != 0 {
                programs.push(path.clone());
            }
        }
    }
    let mut checked = BTreeSet::new();
    let mut queue: VecDeque<(String, String)> = programs.into_iter().map(|p| (p.clone(), p)).collect();
    while let Some((path, wanted_by)) = queue.pop_front() {
        let Some((real, node)) = resolve(tree, &path) else { continue };
        if !checked.insert(real.clone()) {
            continue;
        }
        let Some(bytes) = is_elf(node) else { continue };
        let Some(needs) = needs(bytes) else { continue };
        if let Some(interpreter) = &needs.interpreter
            && resolve(tree, interpreter).is_none()
        {
            return Err(format!("/{real} (for {wanted_by}) needs the loader {interpreter}, which is not in the image"));
        }
        let origin = real.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        for library in needs.libraries {
            let dirs = needs
                .search
                .iter()
                .map(|s| s.replace("$ORIGIN", &format!("/{origin}")).replace("${ORIGIN}", &format!("/{origin}")))
                .chain(LIBRARY_DIRS.iter().map(|d| d.to_string()));
            let found = dirs.map(|d| format!("{d}/{library}")).find(|p| resolve(tree, p).is_some());
            match found {
                Some(p) => queue.push_back((p, wanted_by.clone())),
                None => return Err(format!("/{real} (for {wanted_by}) needs {library}, which is not in the image")),
            }
        }
    }
    Ok(())
}

fn path_dirs(env: &[(String, String)]) -> Vec<String> {
    env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.split(':').map(str::to_string).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_inside_the_tree_only() {
        let mut t = Tree::default();
        t.file("lib/x86_64-linux-gnu/libc.so.6", "x", 0o755);
        t.symlink("lib64/ld.so", "/lib/x86_64-linux-gnu/libc.so.6");
        t.symlink("usr/lib/rel", "../../lib/x86_64-linux-gnu/libc.so.6");
        t.symlink("loop/a", "b");
        t.symlink("loop/b", "a");
        assert_eq!(resolve(&t, "/lib64/ld.so").unwrap().0, "lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(resolve(&t, "usr/lib/rel").unwrap().0, "lib/x86_64-linux-gnu/libc.so.6");
        assert!(resolve(&t, "loop/a").is_none());
        assert!(resolve(&t, "/nowhere").is_none());
    }

    #[test]
    fn a_missing_entrypoint_or_library_is_named() {
        let env = vec![("PATH".to_string(), "/usr/bin".to_string())];
        let mut t = Tree::default();
        assert!(
            check(&t, &["/usr/local/bin/x".into()], &env).unwrap_err().contains("/usr/local/bin/x is not in the image")
        );
        t.file("usr/local/bin/x", "#!/bin/sh\n", 0o755);
        assert!(
            check(&t, &["/usr/local/bin/x".into()], &env).unwrap_err().contains("/bin/sh, which is not in the image")
        );
        // This very test binary needs glibc, which this tree lacks.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        t.file("usr/local/bin/x", me, 0o755);
        let e = check(&t, &["/usr/local/bin/x".into()], &env).unwrap_err();
        assert!(e.contains("which is not in the image"), "{e}");
    }
}
