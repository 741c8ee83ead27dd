//! Queue triggers (`spec.triggers[].nats`): the installation's trigger stream (`FLINT_TRIGGERS`)
//! captures every subject its functions listen on, and each trigger has a lane (a durable consumer filtered to its
//! subject). Every gateway replica runs the same lanes on the same durable consumers, so each
//! message is taken by one replica; two functions bound to one subject each get every message.
//! The stream keeps a message until every trigger bound to its subject is done with it.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream::stream;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::worker::{Lane, Source, Worker};
use crate::provider::Provider;

const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A consumer no Function asks for is deleted after this long unasked (not at once: another
/// gateway replica may see a new Function a moment before this one does).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);
/// Messages no trigger took are dropped after this long.
const KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Triggers {
    pub provider: Arc<dyn Provider>,
    pub worker: Arc<Worker>,
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Triggers {
    pub async fn run(self, stop: CancellationToken) {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut captured: BTreeSet<String> = BTreeSet::new();
        let mut unasked: HashMap<String, Instant> = HashMap::new();
        let mut failing: Option<String> = None;
        loop {
            let wanted = self.lanes();
            let subjects = cover(wanted.iter().map(|l| l.subject.as_str()));
            if !subjects.is_empty() && subjects != captured {
                match self.capture(&subjects).await {
                    Ok(()) => {
                        tracing::info!(subjects = ?subjects, "trigger stream captures these subjects");
                        captured = subjects;
                        failing = None;
                    }
                    Err(e) => {
                        if failing.as_ref() != Some(&e) {
                            tracing::error!(error = %e, "cannot capture the triggers' subjects; their functions get no messages");
                        }
                        failing = Some(e);
                    }
                }
            }
            if failing.is_none() {
                for lane in &wanted {
                    if running.contains_key(&lane.consumer) {
                        continue;
                    }
                    tracing::info!(function = %lane.name, namespace = %lane.namespace, subject = %lane.subject, "queue trigger bound");
                    let token = stop.child_token();
                    let task = tokio::spawn(self.worker.clone().run_lane(lane.clone(), token.clone()));
                    running.insert(lane.consumer.clone(), Running { stop: token, task });
                }
            }
            let names: Vec<&str> = wanted.iter().map(|l| l.consumer.as_str()).collect();
            for gone in running.keys().filter(|c| !names.contains(&c.as_str())).cloned().collect::<Vec<_>>() {
                let lane = running.remove(&gone).expect("listed");
                lane.stop.cancel();
                let _ = lane.task.await;
                tracing::info!(consumer = %gone, "queue trigger unbound");
            }
            if !captured.is_empty() {
                self.sweep(&names, &mut unasked).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.cancelled() => break,
            }
        }
        for (_, lane) in running {
            let _ = lane.task.await;
        }
    }

    /// A lane for each `nats` trigger of each Function.
    fn lanes(&self) -> Vec<Lane> {
        let mut out = Vec::new();
        for (namespace, name, function) in self.provider.triggers() {
            for (i, trigger) in function.spec.triggers.iter().enumerate() {
                let Some(t) = &trigger.nats else { continue };
                out.push(Lane {
                    stream: self.worker.queue.names.triggers_stream(),
                    // What the trigger is goes in the name: a changed subject or path is a new
                    // consumer, starting at the messages published after it.
                    consumer: format!(
                        "trigger_{namespace}_{name}_{i}_{:08x}",
                        fnv(&format!("{}\n{}", t.subject, t.path))
                    ),
                    subject: t.subject.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: t.path.clone(),
                    source: Source::Nats,
                });
            }
        }
        out
    }

    async fn capture(&self, subjects: &BTreeSet<String>) -> Result<(), String> {
        let config = stream::Config {
            name: self.worker.queue.names.triggers_stream(),
            subjects: subjects.iter().cloned().collect(),
            retention: stream::RetentionPolicy::Interest,
            max_age: KEPT,
            ..Default::default()
        };
        self.worker.queue.ensure(config).await.map_err(|e| {
            let e = e.to_string();
            if e.contains("overlap") {
                // JetStream lets one stream (per account) capture a subject.
                format!(
                    "{e}: another stream on this NATS captures one of these subjects (another installation of \
                     Flint, with its own --nats-prefix?); bind each subject in one installation, or give each \
                     installation a NATS account of its own"
                )
            } else {
                e
            }
        })
    }

    /// Deletes trigger consumers no Function has asked for during `ORPHAN_GRACE` (a trigger
    /// removed while no gateway ran would otherwise hold its messages for a week).
    async fn sweep(&self, wanted: &[&str], unasked: &mut HashMap<String, Instant>) {
        let Ok(stream) = self.worker.queue.js.get_stream(self.worker.queue.names.triggers_stream()).await else {
            return;
        };
        let mut names = stream.consumer_names();
        let mut seen = Vec::new();
        while let Some(Ok(name)) = names.next().await {
            if name.starts_with("trigger_") && !wanted.contains(&name.as_str()) {
                seen.push(name);
            }
        }
        unasked.retain(|name, _| seen.contains(name));
        for name in seen {
            let since = *unasked.entry(name.clone()).or_insert_with(Instant::now);
            if since.elapsed() >= ORPHAN_GRACE && stream.delete_consumer(&name).await.is_ok() {
                tracing::info!(consumer = %name, "deleted a trigger consumer no Function asks for");
                unasked.remove(&name);
            }
        }
    }
}

/// The subjects a stream must capture for all of `subjects`: one each, none that another
/// already matches (a stream refuses overlapping subjects).
fn cover<'a>(subjects: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let all: BTreeSet<&str> = subjects.collect();
    all.iter().filter(|s| !all.iter().any(|o| o != *s && matches(o, s))).map(|s| s.to_string()).collect()
}

/// Whether every subject `specific` matches is matched by `general`.
fn matches(general: &str, specific: &str) -> bool {
    let (g, s): (Vec<&str>, Vec<&str>) = (general.split('.').collect(), specific.split('.').collect());
    for (i, token) in g.iter().enumerate() {
        match (*token, s.get(i)) {
            (">", Some(_)) => return true,
            (_, None) | (_, Some(&">")) => return false,
            ("*", Some(_)) => {}
            (t, Some(o)) if t == *o => {}
            _ => return false,
        }
    }
    g.len() == s.len()
}

/// FNV-1a, 32 bits: stable from one build to the next (consumer names outlive the process).
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_another_already_matches_is_not_captured_twice() {
        let got = cover(
            ["orders.*", "orders.created", "orders.created", "billing.>", "billing.eu.paid", "audit"].into_iter(),
        );
        let want: BTreeSet<String> = ["audit", "billing.>", "orders.*"].iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn wildcards_match_as_nats_reads_them() {
        assert!(matches("a.*", "a.b"));
        assert!(matches("a.*", "a.*"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(!matches("a.*", "a.>"));
        assert!(matches("a.>", "a.b.c"));
        assert!(matches("a.>", "a.*"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.b", "a.*"));
        assert!(!matches("a.b", "a.c"));
    }

    #[test]
    fn consumer_names_hash_the_same_in_every_build() {
        assert_eq!(fnv(""), 0x811c9dc5);
        assert_eq!(fnv("a"), 0xe40c292c);
    }
}
