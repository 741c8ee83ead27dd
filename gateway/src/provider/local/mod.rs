//! The `local` provider: functions as processes on this machine. It reads Function manifests
//! (the same YAML users `kubectl apply`) from a folder, and runs every replica as a `watchdog`
//! child process on a loopback port, with the manifest's folder as working directory.
//!
//! - `template`: a Function version → a replica's command and environment (pure);
//! - `replica`: one watchdog process, ready when its `/_/ready` says so;
//! - `version`: keeps one version at its wanted replica count, restarting crashed replicas;
//! - `logs`: replicas' output for `/system/logs`.

mod logs;
mod replica;
mod template;
mod version;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use flint_api::{Function, Invalid};
use futures::{FutureExt, future::BoxFuture, stream::BoxStream};
use k8s_openapi::jiff::Timestamp;

use self::{
    logs::LogHub,
    template::Template,
    version::{Runner, VersionSet},
};
use super::{CanaryTarget, Deployed, LogMessage, LogQuery, Provider, ProviderError, Route, ScaleTarget, Version};
use crate::autoscale::{idle::IdleTimes, remember::IdleFiles};

type Key = (String, String);

pub struct Local {
    /// The watchdog every replica runs, and the hub their output goes to.
    runner: Arc<Runner>,
    secrets_dir: PathBuf,
    /// Working directory of functions deployed through the REST API.
    default_workdir: PathBuf,
    namespace: String,
    functions: RwLock<BTreeMap<Key, Entry>>,
    /// Functions that came from manifests (a reload may remove them; API-deployed ones stay).
    from_files: std::sync::Mutex<std::collections::BTreeSet<Key>>,
    /// Learned idle times, kept beside the functions.
    idle: IdleFiles,
}

/// A deployed function and its running versions.
struct Entry {
    function: Arc<Function>,
    workdir: PathBuf,
    /// The canary's effective weight and phase (the analysis changes them).
    canary_status: std::sync::Mutex<Option<flint_api::CanaryStatus>>,
    created_at: Timestamp,
    stable: VersionSet,
    canary: Option<VersionSet>,
}

impl Entry {
    fn version(&self, v: Version) -> Option<&VersionSet> {
        match v {
            Version::Stable => Some(&self.stable),
            Version::Canary => self.canary.as_ref(),
        }
    }

    fn deployed(&self) -> Deployed {
        let sets = [Some(&self.stable), self.canary.as_ref()];
        let sets = sets.iter().flatten();
        Deployed {
            function: self.function.clone(),
            replicas: sets.clone().map(|s| s.replicas()).sum(),
            available: sets.map(|s| s.available()).sum(),
            created_at: Some(self.created_at),
        }
    }

    /// Stops every version, each replica draining first.
    async fn stop(self) {
        let canary = self.canary.map(VersionSet::stop);
        self.stable.stop().await;
        if let Some(canary) = canary {
            canary.await;
        }
    }
}

/// How much of a Function an update replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Update {
    /// What the OpenFaaS API carries (see `openfaas_update`).
    OpenFaas,
    /// Everything: the manifest is the truth.
    Whole,
}

/// Why a functions folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {error}")]
    Manifest { path: PathBuf, error: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{0} and {1} both define function {2}")]
    Duplicate(PathBuf, PathBuf, String),
}

impl Local {
    pub fn new(watchdog: PathBuf, secrets_dir: PathBuf, default_workdir: PathBuf, namespace: String) -> Self {
        Local {
            runner: Arc::new(Runner { watchdog, logs: LogHub::default() }),
            secrets_dir,
            namespace,
            functions: RwLock::new(BTreeMap::new()),
            from_files: Default::default(),
            idle: IdleFiles::new(default_workdir.join(".flint").join("idle")),
            default_workdir,
        }
    }

    /// Reads every `function.yaml` one level below `dir` (and `*.yaml` in `dir` itself) and
    /// deploys them all; refuses the whole folder, naming each bad file, if any is bad.
    pub async fn load_dir(&self, dir: &Path) -> Result<usize, Vec<LoadError>> {
        let found = self.read_dir(dir)?;
        let count = found.len();
        let mut errors = Vec::new();
        for (path, f) in found {
            let workdir = path.parent().unwrap_or(dir).to_path_buf();
            let key = self.key(&f);
            match self.insert(f, workdir) {
                Ok(()) => {
                    self.from_files.lock().unwrap().insert(key);
                }
                Err(e) => errors.push(LoadError::Manifest { path, error: e.to_string() }),
            }
        }
        if errors.is_empty() { Ok(count) } else { Err(errors) }
    }

    /// Reads `dir` again (on SIGHUP): new manifests are deployed, changed ones replaced (a
    /// version whose template is unchanged keeps its replicas), removed ones deleted. Functions
    /// deployed through the REST API are left alone. A folder with a bad manifest changes nothing.
    pub async fn reload(&self, dir: &Path) -> Result<(usize, usize, usize), Vec<LoadError>> {
        let found = self.read_dir(dir)?;
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        let mut seen = std::collections::BTreeSet::new();
        let mut errors = Vec::new();
        for (path, f) in found {
            let key = self.key(&f);
            seen.insert(key.clone());
            let current = self.with_entry(&key.0, &key.1, |e| Ok(e.function.spec.clone())).ok();
            let result = match current {
                None => self.insert(f, path.parent().unwrap_or(dir).to_path_buf()).map(|_| added += 1),
                Some(spec) if spec == f.spec => Ok(()),
                Some(_) => self.replace(f, Update::Whole).map(|_| changed += 1),
            };
            match result {
                Ok(()) => {
                    self.from_files.lock().unwrap().insert(key);
                }
                Err(e) => errors.push(LoadError::Manifest { path, error: e.to_string() }),
            }
        }
        let gone: Vec<Key> = self.from_files.lock().unwrap().iter().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in gone {
            self.from_files.lock().unwrap().remove(&key);
            if self.delete(&key.0, &key.1).await.is_ok() {
                removed += 1;
            }
        }
        if errors.is_empty() { Ok((added, changed, removed)) } else { Err(errors) }
    }

    /// Every Function in `dir`'s manifests, or every problem found.
    fn read_dir(&self, dir: &Path) -> Result<Vec<(PathBuf, Function)>, Vec<LoadError>> {
        let mut found: Vec<(PathBuf, Function)> = Vec::new();
        let mut errors = Vec::new();
        for path in manifests(dir).map_err(|e| vec![e])? {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(error) => {
                    errors.push(LoadError::Io { path, error });
                    continue;
                }
            };
            match flint_api::manifest::from_yaml(&text) {
                Ok(functions) => found.extend(functions.into_iter().map(|f| (path.clone(), f))),
                Err(e) => errors.push(LoadError::Manifest { path, error: e.to_string() }),
            }
        }
        let mut seen: BTreeMap<Key, PathBuf> = BTreeMap::new();
        for (path, f) in &found {
            let key = self.key(f);
            if let Some(first) = seen.insert(key.clone(), path.clone()) {
                errors.push(LoadError::Duplicate(first, path.clone(), key.1));
            }
        }
        if errors.is_empty() { Ok(found) } else { Err(errors) }
    }

    fn key(&self, f: &Function) -> Key {
        let ns = f.metadata.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| self.namespace.clone());
        (ns, f.metadata.name.clone().unwrap_or_default())
    }

    fn templates(&self, f: &Function, workdir: &Path) -> Result<(Template, Option<Template>), Invalid> {
        let stable = Template::new(f, Version::Stable, workdir, &self.secrets_dir);
        let canary = f.spec.canary.as_ref().map(|_| Template::new(f, Version::Canary, workdir, &self.secrets_dir));
        match (stable, canary.transpose()) {
            (Ok(s), Ok(c)) => Ok((s, c)),
            (s, c) => Err(Invalid(s.err().into_iter().chain(c.err()).flat_map(|i| i.0).collect())),
        }
    }

    /// Whether functions can run here: local mode runs each replica as a watchdog process.
    fn runnable(&self) -> Result<(), ProviderError> {
        if self.runner.watchdog.is_file() {
            return Ok(());
        }
        Err(ProviderError::Backend(format!(
            "local mode runs functions with the watchdog, and there is none at {}: build it (cargo build --bins) or pass --watchdog",
            self.runner.watchdog.display()
        )))
    }

    fn insert(&self, mut f: Function, workdir: PathBuf) -> Result<(), ProviderError> {
        f.validate()?;
        self.runnable()?;
        let key = self.key(&f);
        f.metadata.namespace = Some(key.0.clone());
        let (stable, canary) = self.templates(&f, &workdir)?;
        let mut functions = self.functions.write().unwrap();
        if functions.contains_key(&key) {
            return Err(ProviderError::AlreadyExists(key.1));
        }
        // As the operator does: `scale.initial`, else max(min, 1) so a new function answers at once.
        let initial = f.spec.scale.initial_replicas() as u32;
        let entry = Entry {
            stable: VersionSet::start(stable, initial, self.runner.clone()),
            canary: canary.map(|t| VersionSet::start(t, initial, self.runner.clone())),
            canary_status: std::sync::Mutex::new(f.spec.canary.as_ref().map(flint_api::CanaryStatus::initial)),
            function: Arc::new(f),
            workdir,
            created_at: Timestamp::now(),
        };
        functions.insert(key, entry);
        Ok(())
    }

    /// `look` at a function, under the read lock.
    fn with_entry<T>(
        &self,
        namespace: &str,
        name: &str,
        look: impl FnOnce(&Entry) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let functions = self.functions.read().unwrap();
        let entry = functions
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace}")))?;
        look(entry)
    }

    fn replace(&self, mut f: Function, how: Update) -> Result<(), ProviderError> {
        self.runnable()?;
        let key = self.key(&f);
        f.metadata.namespace = Some(key.0.clone());
        if how == Update::OpenFaas {
            let current = self.with_entry(&key.0, &key.1, |e| Ok(e.function.spec.clone()))?;
            f.spec = super::openfaas_update(&current, f.spec);
        }
        f.validate()?;
        let workdir = self.with_entry(&key.0, &key.1, |e| Ok(e.workdir.clone()))?;
        let (stable, canary) = self.templates(&f, &workdir)?;
        let scale = &f.spec.scale;
        let clamp = |n: u32| n.clamp(scale.min.max(0) as u32, scale.max as u32);
        // A version whose template is unchanged keeps its replicas; a changed one is started
        // beside the old, which is stopped once the new one serves.
        let keep = |t: &Template, old: Option<&VersionSet>| old.is_some_and(|o| *o.template == *t);
        let start = |t: Template, like: Option<&VersionSet>| {
            let n = like.map(VersionSet::replicas).unwrap_or(scale.initial_replicas() as u32);
            VersionSet::start(t, clamp(n).max(1), self.runner.clone())
        };
        let mut functions = self.functions.write().unwrap();
        let Some(current) = functions.remove(&key) else {
            return Err(ProviderError::NotFound(format!("{}.{}", key.1, key.0)));
        };
        let mut retired = Vec::new();
        let new_stable = if keep(&stable, Some(&current.stable)) {
            current.stable
        } else {
            let fresh = start(stable, Some(&current.stable));
            retired.push(current.stable);
            fresh
        };
        let new_canary = match (canary, current.canary) {
            (Some(t), Some(old)) if keep(&t, Some(&old)) => Some(old),
            (Some(t), old) => {
                let fresh = start(t, old.as_ref());
                retired.extend(old);
                Some(fresh)
            }
            (None, old) => {
                retired.extend(old);
                None
            }
        };
        for set in [Some(&new_stable), new_canary.as_ref()].into_iter().flatten() {
            set.set_replicas(clamp(set.replicas()));
        }
        let waits: Vec<_> =
            [Some(&new_stable), new_canary.as_ref()].into_iter().flatten().map(|s| s.endpoints()).collect();
        // A changed canary starts its analysis over; an unchanged one keeps its state.
        let canary_status = if f.spec.canary == current.function.spec.canary {
            current.canary_status.into_inner().unwrap()
        } else {
            f.spec.canary.as_ref().map(flint_api::CanaryStatus::initial)
        };
        functions.insert(
            key,
            Entry {
                canary_status: std::sync::Mutex::new(canary_status),
                function: Arc::new(f),
                workdir: current.workdir,
                created_at: current.created_at,
                stable: new_stable,
                canary: new_canary,
            },
        );
        drop(functions);
        if !retired.is_empty() {
            tokio::spawn(async move {
                // Requests routed meanwhile wait for the new replicas like a cold start.
                for mut e in waits {
                    let _ = tokio::time::timeout(Duration::from_secs(60), e.wait_for(|e| !e.is_empty())).await;
                }
                futures::future::join_all(retired.into_iter().map(VersionSet::stop)).await;
            });
        }
        Ok(())
    }
}

/// `*/function.yaml` and `*.yaml` in `dir`, sorted.
fn manifests(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |error| LoadError::Io { path: dir.to_path_buf(), error };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            let manifest = path.join("function.yaml");
            if manifest.is_file() {
                out.push(manifest);
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

impl Provider for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn default_namespace(&self) -> &str {
        &self.namespace
    }

    fn holds_namespace(&self, namespace: &str) -> bool {
        namespace == self.namespace || self.functions.read().unwrap().keys().any(|(ns, _)| ns == namespace)
    }

    fn namespaces(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        let mut all: Vec<String> = self.functions.read().unwrap().keys().map(|(ns, _)| ns.clone()).collect();
        all.push(self.namespace.clone());
        all.sort();
        all.dedup();
        async move { Ok(all) }.boxed()
    }

    fn route(&self, namespace: &str, name: &str) -> Option<Route> {
        self.with_entry(namespace, name, |entry| {
            let canary_weight =
                entry.canary_status.lock().unwrap().as_ref().map_or(0, |c| c.weight.clamp(0, 100) as u8);
            Ok(Route {
                function: entry.function.clone(),
                stable: entry.stable.endpoints(),
                canary: entry.canary.as_ref().map(VersionSet::endpoints),
                canary_weight,
            })
        })
        .ok()
    }

    fn list(&self, namespace: &str) -> BoxFuture<'_, Result<Vec<Deployed>, ProviderError>> {
        let list = self
            .functions
            .read()
            .unwrap()
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, e)| e.deployed())
            .collect();
        async move { Ok(list) }.boxed()
    }

    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Deployed, ProviderError>> {
        let found = self.with_entry(namespace, name, |e| Ok(e.deployed()));
        async move { found }.boxed()
    }

    fn deploy(&self, function: Function) -> BoxFuture<'_, Result<(), ProviderError>> {
        let done = self.insert(function, self.default_workdir.clone());
        async move { done }.boxed()
    }

    fn update(&self, function: Function) -> BoxFuture<'_, Result<(), ProviderError>> {
        let done = self.replace(function, Update::OpenFaas);
        async move { done }.boxed()
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        let removed = self.functions.write().unwrap().remove(&(namespace.to_string(), name.to_string()));
        async move {
            let entry = removed.ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace}")))?;
            let (logs, namespace, name) = (self.runner.logs.clone(), namespace.to_string(), name.to_string());
            logs.forget(&namespace, &name);
            tokio::spawn(async move {
                entry.stop().await;
                // What its replicas wrote while they stopped.
                logs.forget(&namespace, &name);
            });
            Ok(())
        }
        .boxed()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let done = self.with_entry(namespace, name, |entry| {
            super::check_replicas(&entry.function, replicas)?;
            let set = entry
                .version(version)
                .ok_or_else(|| ProviderError::NotFound(format!("{name}.{namespace} ({})", version.as_str())))?;
            set.set_replicas(replicas);
            Ok(())
        });
        async move { done }.boxed()
    }

    fn scale_from_zero<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let done = self.with_entry(namespace, name, |entry| {
            if let Some(set) = entry.version(version)
                && set.replicas() == 0
            {
                set.set_replicas(1);
            }
            Ok(())
        });
        async move { done }.boxed()
    }

    fn scale_targets(&self) -> Vec<ScaleTarget> {
        let functions = self.functions.read().unwrap();
        let mut out = Vec::new();
        for entry in functions.values() {
            for version in [Version::Stable, Version::Canary] {
                if let Some(set) = entry.version(version) {
                    out.push(ScaleTarget {
                        function: entry.function.clone(),
                        version,
                        replicas: set.replicas(),
                        ready: set.available(),
                    });
                }
            }
        }
        out
    }

    fn triggers(&self) -> Vec<(String, String, Arc<Function>)> {
        let functions = self.functions.read().unwrap();
        functions
            .iter()
            .filter(|(_, e)| !e.function.spec.triggers.is_empty())
            .map(|((ns, name), e)| (ns.clone(), name.clone(), e.function.clone()))
            .collect()
    }

    fn canaries(&self) -> Vec<CanaryTarget> {
        let functions = self.functions.read().unwrap();
        functions
            .iter()
            .filter_map(|((namespace, name), e)| {
                let analysis = e.function.spec.canary.as_ref()?.analysis.clone()?;
                let status = e.canary_status.lock().unwrap().clone()?;
                Some(CanaryTarget { namespace: namespace.clone(), name: name.clone(), analysis, status })
            })
            .collect()
    }

    fn set_canary<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        status: flint_api::CanaryStatus,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let done = self.with_entry(namespace, name, |e| {
            *e.canary_status.lock().unwrap() = Some(status);
            Ok(())
        });
        async move { done }.boxed()
    }

    fn learned_idle(&self, namespace: &str, name: &str, version: Version, image: &str) -> Option<IdleTimes> {
        self.idle.load(namespace, name, version, image)
    }

    fn remember_idle<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
        image: &'a str,
        idle: IdleTimes,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let kept = self
            .idle
            .save(namespace, name, version, image, &idle)
            .map_err(|e| ProviderError::Backend(format!("keeping the learned idle times: {e}")));
        async move { kept }.boxed()
    }

    fn logs(&self, query: LogQuery) -> BoxFuture<'_, Result<BoxStream<'static, LogMessage>, ProviderError>> {
        let found = self.with_entry(&query.namespace, &query.name, |_| Ok(self.runner.logs.query(&query)));
        async move { found }.boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let all: Vec<Entry> = std::mem::take(&mut *self.functions.write().unwrap()).into_values().collect();
        async move {
            futures::future::join_all(all.into_iter().map(Entry::stop)).await;
        }
        .boxed()
    }
}
