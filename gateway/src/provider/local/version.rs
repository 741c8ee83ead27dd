//! The replicas of one version of one function, kept at the wanted count: started, reported
//! ready, restarted with backoff when they crash, and stopped newest-first (not-ready first)
//! when the count drops. A replica leaves the endpoint list before it is told to stop, so no
//! new request is sent to a replica that is going away.
//!
//! A version at zero has no supervisor: one is started when replicas are wanted, and it ends
//! once it has none left and none are wanted. Ten thousand functions at zero are ten thousand
//! counts, not ten thousand tasks.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

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

/// What every version's replicas are started with: the watchdog, and where their output goes.
pub struct Runner {
    pub watchdog: PathBuf,
    pub logs: LogHub,
}

/// Handle to a version; dropping it does not stop it, `stop()` does.
pub struct VersionSet {
    pub template: Arc<Template>,
    runner: Arc<Runner>,
    /// Made when first asked for (a request, or replicas to publish): a version never called
    /// needs none.
    endpoints: OnceLock<watch::Sender<Arc<Vec<Arc<Endpoint>>>>>,
    control: Arc<Mutex<Control>>,
}

/// The wanted count, and the supervisor keeping it while there is one.
struct Control {
    desired: u32,
    /// The next replica's number, kept from one supervisor to the next so that a replica's
    /// name in the logs (`NAME-VERSION-N`) is never used twice.
    next_id: u64,
    supervisor: Option<Running>,
}

struct Running {
    desired: watch::Sender<u32>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl VersionSet {
    pub fn start(template: Template, replicas: u32, runner: Arc<Runner>) -> Self {
        let set = VersionSet {
            template: Arc::new(template),
            runner,
            endpoints: OnceLock::new(),
            control: Arc::new(Mutex::new(Control { desired: 0, next_id: 1, supervisor: None })),
        };
        set.set_replicas(replicas);
        set
    }

    pub fn set_replicas(&self, n: u32) {
        let mut control = self.control.lock().unwrap();
        control.desired = n;
        match &control.supervisor {
            Some(running) => {
                running.desired.send_if_modified(|d| std::mem::replace(d, n) != n);
            }
            None if n > 0 => control.supervisor = Some(self.supervise(n, control.next_id)),
            None => {}
        }
    }

    fn supervise(&self, n: u32, next_id: u64) -> Running {
        let (desired, desired_rx) = watch::channel(n);
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            Supervisor {
                template: self.template.clone(),
                runner: self.runner.clone(),
                control: self.control.clone(),
                desired: desired_rx,
                endpoints: self.publisher().clone(),
                stop: stop.clone(),
                replicas: BTreeMap::new(),
                ready: BTreeMap::new(),
                next_id,
                crashes: 0,
                retry_at: None,
            }
            .run(),
        );
        Running { desired, stop, task }
    }

    pub fn replicas(&self) -> u32 {
        self.control.lock().unwrap().desired
    }

    pub fn available(&self) -> u32 {
        self.endpoints.get().map_or(0, |e| e.borrow().len() as u32)
    }

    pub fn endpoints(&self) -> Endpoints {
        self.publisher().subscribe()
    }

    fn publisher(&self) -> &watch::Sender<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.get_or_init(|| watch::channel(Arc::new(Vec::new())).0)
    }

    /// Stops every replica (each drains first) and waits for them.
    pub async fn stop(self) {
        let running = self.control.lock().unwrap().supervisor.take();
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.task.await;
        }
    }
}

struct Supervisor {
    template: Arc<Template>,
    runner: Arc<Runner>,
    control: Arc<Mutex<Control>>,
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
            if self.replicas.is_empty() && self.retry_at.is_none() && self.retire() {
                return;
            }
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

    /// Ends this supervisor if no replica is wanted (checked under the lock that starts one, so
    /// a count set meanwhile either reaches this one or starts the next).
    fn retire(&self) -> bool {
        let mut control = self.control.lock().unwrap();
        if control.desired > 0 {
            return false;
        }
        control.next_id = self.next_id;
        control.supervisor = None;
        true
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
            match replica::start(id, &self.template, &self.runner.watchdog, &self.runner.logs, events.clone()) {
                Ok(r) => {
                    self.replicas.insert(id, r);
                }
                Err(e) => {
                    tracing::error!(function = %self.template.name, version = self.template.version.as_str(), error = %e, watchdog = %self.runner.watchdog.display(), "cannot start a replica");
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
