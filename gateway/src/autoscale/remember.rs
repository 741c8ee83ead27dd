//! Where learned idle times outlive the gateway: in local mode, a small JSON file per function
//! version under `<functions-dir>/.flint/idle/`; on Kubernetes, the Function's
//! `status.idle` (the shape below). Either way with the image they were learned on: a new
//! image starts afresh, since new code may be called differently.

use std::path::PathBuf;

use flint_api::LearnedIdle;
use serde::{Deserialize, Serialize};

use super::idle::{BINS, IdleTimes};
use crate::provider::Version;

/// Local mode's files.
pub struct IdleFiles {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    image: String,
    idle: IdleTimes,
}

impl IdleFiles {
    pub fn new(dir: PathBuf) -> Self {
        IdleFiles { dir }
    }

    fn path(&self, namespace: &str, name: &str, version: Version) -> PathBuf {
        // Names and namespaces are DNS labels: safe in a file name, and `_` is in neither.
        self.dir.join(format!("{namespace}_{name}_{}.json", version.as_str()))
    }

    /// What was learned on `image`, if anything.
    pub fn load(&self, namespace: &str, name: &str, version: Version, image: &str) -> Option<IdleTimes> {
        let bytes = std::fs::read(self.path(namespace, name, version)).ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        (stored.image == image && [0, BINS].contains(&stored.idle.bins.len())).then_some(stored.idle)
    }

    pub fn save(
        &self,
        namespace: &str,
        name: &str,
        version: Version,
        image: &str,
        idle: &IdleTimes,
    ) -> std::io::Result<()> {
        let stored = Stored { image: image.to_string(), idle: idle.clone() };
        let path = self.path(namespace, name, version);
        std::fs::create_dir_all(&self.dir)?;
        // Whole or not at all: written beside it, then renamed over it.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, serde_json::to_vec(&stored).expect("JSON"))?;
        std::fs::rename(&partial, &path)
    }
}

/// The status entry for a version's idle times.
pub fn to_status(version: Version, image: &str, idle: &IdleTimes) -> LearnedIdle {
    let counts: Vec<String> =
        idle.bins.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| format!("{i}:{c}")).collect();
    LearnedIdle {
        version: version.as_str().to_string(),
        image: image.to_string(),
        bin_ms: idle.bin_ms as i64,
        counts: counts.join(" "),
        longer: idle.longer as i64,
        recent_long: idle.recent_long.iter().map(|&b| b as i64).collect(),
    }
}

/// Idle times from a status entry, when it is about `image` and reads whole.
pub fn from_status(entry: &LearnedIdle, image: &str) -> Option<IdleTimes> {
    if entry.image != image || entry.bin_ms <= 0 {
        return None;
    }
    let mut idle = IdleTimes::with_bin(std::time::Duration::from_millis(entry.bin_ms as u64));
    for pair in entry.counts.split_whitespace() {
        let (bin, count) = pair.split_once(':')?;
        let (bin, count): (usize, u32) = (bin.parse().ok()?, count.parse().ok()?);
        *idle.bins_mut().get_mut(bin)? = count;
    }
    idle.longer = u32::try_from(entry.longer).ok()?;
    idle.recent_long = entry.recent_long.iter().map(|&b| u32::try_from(b).ok()).collect::<Option<_>>()?;
    Some(idle)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn learned() -> IdleTimes {
        let mut idle = IdleTimes::default();
        for m in [3, 3, 20, 20, 20, 300] {
            idle.record(Duration::from_secs(m * 60));
        }
        idle
    }

    #[test]
    fn idle_times_come_back_from_a_file_for_the_same_image_only() {
        let dir = std::env::temp_dir().join(format!("flint-idle-files-{}", std::process::id()));
        let files = IdleFiles::new(dir.clone());
        files.save("default", "shout", Version::Stable, "shout:1", &learned()).unwrap();
        assert_eq!(files.load("default", "shout", Version::Stable, "shout:1"), Some(learned()));
        assert_eq!(files.load("default", "shout", Version::Stable, "shout:2"), None, "a new image starts afresh");
        assert_eq!(files.load("default", "shout", Version::Canary, "shout:1"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn idle_times_read_back_from_a_status_entry_as_they_were_written() {
        let entry = to_status(Version::Canary, "shout:2", &learned());
        assert_eq!((entry.version.as_str(), entry.counts.as_str(), entry.longer), ("canary", "3:2 20:3", 1));
        assert_eq!(from_status(&entry, "shout:2"), Some(learned()));
        assert_eq!(from_status(&entry, "shout:3"), None);
        let garbled = LearnedIdle { counts: "3:2 999:1".into(), ..entry };
        assert_eq!(from_status(&garbled, "shout:2"), None, "a bin beyond the histogram is refused");
    }
}
