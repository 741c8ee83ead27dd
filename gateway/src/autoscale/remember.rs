//! Where learned idle times outlive the gateway: in local mode, a small JSON file per function
//! version under `<functions-dir>/.flint/idle/`, with the image they were learned on (a new
//! image starts afresh: new code may be called differently).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::idle::IdleTimes;
use crate::provider::Version;

pub struct IdleStore {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    image: String,
    idle: IdleTimes,
}

impl IdleStore {
    pub fn new(dir: PathBuf) -> Self {
        IdleStore { dir }
    }

    fn path(&self, namespace: &str, name: &str, version: Version) -> PathBuf {
        // Names and namespaces are DNS labels: safe in a file name, and `_` is in neither.
        self.dir.join(format!("{namespace}_{name}_{}.json", version.as_str()))
    }

    /// What was learned on `image`, if anything.
    pub fn load(&self, namespace: &str, name: &str, version: Version, image: &str) -> Option<IdleTimes> {
        let bytes = std::fs::read(self.path(namespace, name, version)).ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        (stored.image == image && stored.idle.bins.len() == super::idle::BINS).then_some(stored.idle)
    }

    pub fn save(&self, namespace: &str, name: &str, version: Version, image: &str, idle: &IdleTimes) {
        let stored = Stored { image: image.to_string(), idle: idle.clone() };
        let path = self.path(namespace, name, version);
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| {
            // Whole or not at all: written beside it, then renamed over it.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, serde_json::to_vec(&stored).expect("JSON"))?;
            std::fs::rename(&partial, &path)
        });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not keep the learned idle times");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_times_come_back_for_the_same_image_only() {
        let dir = std::env::temp_dir().join(format!("flint-idle-store-{}", std::process::id()));
        let store = IdleStore::new(dir.clone());
        let mut idle = IdleTimes::default();
        idle.record(std::time::Duration::from_secs(600));
        store.save("default", "shout", Version::Stable, "shout:1", &idle);
        assert_eq!(store.load("default", "shout", Version::Stable, "shout:1"), Some(idle));
        assert_eq!(store.load("default", "shout", Version::Stable, "shout:2"), None, "a new image starts afresh");
        assert_eq!(store.load("default", "shout", Version::Canary, "shout:1"), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
