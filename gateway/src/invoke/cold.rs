//! Scale from zero on the request path. A request for a version with no ready replica asks
//! for one scale-up (the first such request does; the rest wait with it), and waits for a
//! ready replica up to a deadline. Waiting requests are bounded per version.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use crate::{
    endpoint::Endpoints,
    provider::{Provider, Version},
};

type Key = (String, String, Version);

#[derive(Default)]
pub struct ColdStarts {
    waiting: Mutex<HashMap<Key, usize>>,
}

pub enum Wait {
    Ready,
    /// More requests are waiting than allowed.
    Full,
    /// No replica became ready in time.
    TimedOut,
}

impl ColdStarts {
    pub async fn wait(
        &self,
        provider: &dyn Provider,
        (namespace, name, version): (&str, &str, Version),
        mut endpoints: Endpoints,
        limit: usize,
        deadline: Duration,
    ) -> Wait {
        let key = (namespace.to_string(), name.to_string(), version);
        let first = {
            let mut waiting = self.waiting.lock().unwrap();
            let n = waiting.entry(key.clone()).or_insert(0);
            if *n >= limit {
                return Wait::Full;
            }
            *n += 1;
            *n == 1
        };
        let _leave = Leave(self, key);
        if first && let Err(e) = provider.scale_from_zero(namespace, name, version).await {
            tracing::warn!(function = name, namespace, version = version.as_str(), error = %e, "scale from zero failed");
        }
        match tokio::time::timeout(deadline, endpoints.wait_for(|e| !e.is_empty())).await {
            Ok(Ok(_)) => Wait::Ready,
            _ => Wait::TimedOut,
        }
    }
}

impl ColdStarts {
    /// Requests waiting now for this version: the autoscaler never takes it to zero then.
    pub fn waiting(&self, namespace: &str, name: &str, version: Version) -> usize {
        let key = (namespace.to_string(), name.to_string(), version);
        self.waiting.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
}

struct Leave<'a>(&'a ColdStarts, Key);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut waiting = self.0.waiting.lock().unwrap();
        if let Some(n) = waiting.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.1);
            }
        }
    }
}
