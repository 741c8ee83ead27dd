//! Whether the gateway's watches of the API server work. A watch that fails keeps retrying
//! with backoff (kube-runtime's), but meanwhile the gateway routes from a cache that ages: each
//! error is logged, and `/healthz` fails, naming the watch and its error, until the watch
//! delivers again, so that a liveness probe or a person notices.

use std::{collections::BTreeMap, sync::Mutex};

use futures::{Stream, StreamExt};
use tokio::time::Instant;

#[derive(Default)]
pub struct Watches(Mutex<BTreeMap<&'static str, Failing>>);

/// A watch that is failing: since when, how often, and its last error.
struct Failing {
    since: Instant,
    errors: u64,
    last: String,
}

impl Watches {
    /// The event, or `None` after recording (and logging) the error.
    pub fn seen<T, E: std::fmt::Display>(&self, watch: &'static str, event: Result<T, E>) -> Option<T> {
        let mut failing = self.0.lock().unwrap();
        match event {
            Ok(event) => {
                if let Some(f) = failing.remove(watch) {
                    tracing::info!(watch, errors = f.errors, "watch recovered");
                }
                Some(event)
            }
            Err(e) => {
                tracing::warn!(watch, error = %e, "watch failed; retrying with backoff");
                let f = failing.entry(watch).or_insert_with(|| Failing {
                    since: Instant::now(),
                    errors: 0,
                    last: String::new(),
                });
                f.errors += 1;
                f.last = e.to_string();
                None
            }
        }
    }

    /// Drives a reflector's stream, recording its health.
    pub async fn follow<T, E: std::fmt::Display>(
        self: std::sync::Arc<Self>,
        watch: &'static str,
        events: impl Stream<Item = Result<T, E>>,
    ) {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            self.seen(watch, event);
        }
    }

    /// `Err` naming every failing watch.
    pub fn check(&self) -> Result<(), String> {
        let failing = self.0.lock().unwrap();
        if failing.is_empty() {
            return Ok(());
        }
        let all: Vec<String> = failing
            .iter()
            .map(|(w, f)| {
                format!("{w} watch failing for {:.0?} ({} errors), last: {}", f.since.elapsed(), f.errors, f.last)
            })
            .collect();
        Err(all.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_watch_is_reported_until_it_delivers_again() {
        let w = Watches::default();
        assert!(w.check().is_ok());
        assert_eq!(w.seen::<(), _>("EndpointSlices", Err("403 Forbidden")), None);
        assert_eq!(w.seen::<(), _>("EndpointSlices", Err("403 Forbidden")), None);
        let why = w.check().unwrap_err();
        assert!(
            why.contains("EndpointSlices watch failing") && why.contains("2 errors") && why.contains("403"),
            "{why}"
        );
        assert_eq!(w.seen::<u8, &str>("EndpointSlices", Ok(1)), Some(1));
        assert!(w.check().is_ok());
    }
}
