//! The replicas of one version of one function, kept at the wanted count: started, reported
//! ready, restarted with backoff when they crash, and stopped newest-first (not-ready first)
//! when the count drops. A replica leaves the endpoint list before it is told to stop, so no
//! new request is sent to a replica that is going away.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    logs::LogHub,
    replica::{self, Event, Replica},
    template::Template,
};
use crate::provider::{Endpoint, Endpoints};

/// Handle to a running version; dropping it does not stop it, `stop()` does.
pub struct VersionSet {
    pub template: Template,
    desired: watch::Sender<u32>,
    endpoints: Endpoints,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl VersionSet {
    pub fn start(template: Template, replicas: u32, watchdog: PathBuf, logs: LogHub) -> Self {
        let (desired, desired_rx) = watch::channel(replicas);
        let (endpoints_tx, endpoints) = watch::channel(Arc::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            Supervisor {
                template: template.clone(),
                watchdog,
                logs,
                desired: desired_rx,
                endpoints: endpoints_tx,
                stop: stop.clone(),
                replicas: BTreeMap::new(),
                ready: BTreeMap::new(),
                next_id: 1,
                crashes: 0,
                retry_at: None,
            }
            .run(),
        );
        VersionSet { template, desired, endpoints, stop, task }
    }

    pub fn set_replicas(&self, n: u32) {
        self.desired.send_if_modified(|d| std::mem::replace(d, n) != n);
    }

    pub fn replicas(&self) -> u32 {
        *self.desired.borrow()
    }

    pub fn available(&self) -> u32 {
        self.endpoints.borrow().len() as u32
    }

    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    /// Stops every replica (each drains first) and waits for them.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

struct Supervisor {
    template: Template,
    watchdog: PathBuf,
    logs: LogHub,
    desired: watch::Receiver<u32>,
    endpoints: watch::Sender<Arc<Vec<Arc<Endpoint>>>>,
    stop: CancellationToken,
    replicas: BTreeMap<u64, Replica>,
    ready: BTreeMap<u64, Arc<Endpoint>>,
    next_id: u64,
    /// Crashes since a replica was last ready; sets the restart backoff.
    crashes: u32,
    retry_at: Option<Instant>,
}

impl Supervisor {
    async fn run(mut self) {
        let (events_tx, mut events) = mpsc::channel(64);
        loop {
            self.reconcile(&events_tx);
            let retry = self.retry_at;
            tokio::select! {
                changed = self.desired.changed() => if changed.is_err() { break },
                Some(event) = events.recv() => self.on_event(event),
                _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => self.retry_at = None,
                _ = self.stop.cancelled() => break,
            }
        }
        self.ready.clear();
        self.publish();
        let grace = self.grace();
        futures::future::join_all(std::mem::take(&mut self.replicas).into_values().map(|r| r.stop(grace))).await;
    }

    /// Time a stopping replica gets: its longest invocation plus the watchdog's own grace.
    fn grace(&self) -> Duration {
        self.template.timeout + Duration::from_secs(2)
    }

    fn reconcile(&mut self, events: &mpsc::Sender<Event>) {
        let want = *self.desired.borrow() as usize;
        while self.replicas.len() < want && self.retry_at.is_none() {
            let id = self.next_id;
            self.next_id += 1;
            match replica::start(id, &self.template, &self.watchdog, &self.logs, events.clone()) {
                Ok(r) => {
                    self.replicas.insert(id, r);
                }
                Err(e) => {
                    tracing::error!(function = %self.template.name, version = self.template.version.as_str(), error = %e, watchdog = %self.watchdog.display(), "cannot start a replica");
                    self.backoff();
                }
            }
        }
        while self.replicas.len() > want {
            // Newest first, preferring ones that are not serving yet.
            let id = *self
                .replicas
                .keys()
                .rev()
                .find(|id| !self.ready.contains_key(id))
                .or_else(|| self.replicas.keys().next_back())
                .expect("more replicas than wanted means at least one");
            let replica = self.replicas.remove(&id).expect("id came from the map");
            if self.ready.remove(&id).is_some() {
                self.publish();
            }
            tokio::spawn(replica.stop(self.grace()));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Ready(id, endpoint) if self.replicas.contains_key(&id) => {
                tracing::debug!(function = %self.template.name, replica = id, addr = %endpoint.addr, "replica ready");
                self.crashes = 0;
                self.ready.insert(id, endpoint);
                self.publish();
            }
            Event::Ready(..) => {}
            Event::Exited(id, how) => {
                let Some(replica) = self.replicas.remove(&id) else {
                    return; // one we stopped
                };
                if let Some(endpoint) = self.ready.remove(&id) {
                    endpoint.died();
                    self.publish();
                }
                tracing::warn!(function = %self.template.name, version = self.template.version.as_str(), replica = id, addr = %replica.addr, "replica {how}; restarting");
                self.backoff();
            }
        }
    }

    fn backoff(&mut self) {
        let delay = Duration::from_millis(100) * 2u32.saturating_pow(self.crashes.min(7));
        self.crashes += 1;
        self.retry_at = Some(Instant::now() + delay.min(Duration::from_secs(10)));
    }

    /// The ready replicas to the request path; one that left is retired at once (its pooled
    /// connections closed), before the next request picks a replica.
    fn publish(&self) {
        crate::endpoint::publish(&self.endpoints, self.ready.values().cloned().collect());
    }
}
