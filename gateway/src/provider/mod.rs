//! Where functions live. The gateway asks a provider what is deployed, where each version's
//! ready replicas are, and to change replica counts; it never cares whether the replicas are
//! pods (the `kubernetes` provider) or watchdog processes on this machine (`local`).

pub mod kubernetes;
pub mod local;

use std::sync::Arc;

pub use flint_api::Version;
use flint_api::{Function, Invalid};

use crate::autoscale::idle::IdleTimes;
use futures::{future::BoxFuture, stream::BoxStream};
use serde::Serialize;

pub use crate::endpoint::{Endpoint, Endpoints};

/// What the request path needs to route to a function, taken once per request.
#[derive(Clone)]
pub struct Route {
    pub function: Arc<Function>,
    pub stable: Endpoints,
    pub canary: Option<Endpoints>,
    /// Percentage of requests for the canary now (the effective weight).
    pub canary_weight: u8,
}

/// A deployed function and its replica counts (all versions).
#[derive(Clone, Debug)]
pub struct Deployed {
    pub function: Arc<Function>,
    pub replicas: u32,
    pub available: u32,
    pub created_at: Option<k8s_openapi::jiff::Timestamp>,
}

/// A version the autoscaler looks after: its bounds and its replicas now.
#[derive(Clone, Debug)]
pub struct ScaleTarget {
    /// Shared with the provider, not copied: the autoscaler reads every function every tick.
    pub function: Arc<Function>,
    pub version: Version,
    pub replicas: u32,
    pub ready: u32,
}

impl ScaleTarget {
    pub fn namespace(&self) -> &str {
        self.function.metadata.namespace.as_deref().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.function.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn scale(&self) -> &flint_api::Scale {
        &self.function.spec.scale
    }

    /// The version's image: what its learned idle times are about.
    pub fn image(&self) -> &str {
        match (self.version, &self.function.spec.canary) {
            (Version::Canary, Some(c)) => &c.image,
            _ => &self.function.spec.image,
        }
    }
}

/// A canary the analysis judges.
#[derive(Clone, Debug)]
pub struct CanaryTarget {
    pub namespace: String,
    pub name: String,
    pub analysis: flint_api::function::Analysis,
    pub status: flint_api::CanaryStatus,
}

/// One line of a function's log, in OpenFaaS's shape.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LogMessage {
    pub name: String,
    pub namespace: String,
    pub instance: String,
    pub timestamp: String,
    pub text: String,
}

#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub name: String,
    pub namespace: String,
    pub tail: Option<usize>,
    pub follow: bool,
    pub since: Option<k8s_openapi::jiff::Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("function {0} not found")]
    NotFound(String),
    #[error("function {0} already exists; use PUT /system/functions to update it")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// What the provider's backend said: the Kubernetes API, or local mode's machine.
    #[error("{0}")]
    Backend(String),
    /// The namespace does not hold functions (see `--function-namespaces`).
    #[error("namespace {0} holds no functions of this gateway: it serves functions in {1} (--function-namespaces)")]
    Forbidden(String, String),
    /// A Deployment of the function's name is not the function's (its operator refused it too).
    #[error("{0}")]
    NotOurs(String),
}

/// An update through the OpenFaaS API replaces what that API carries and keeps what it does
/// not know (canary, triggers, timeout, concurrency, paused, throttle, and of `scale` all but
/// min, max and target), so `faas-cli deploy` never undoes a canary, a cron trigger, a
/// scheduled minimum, an idle policy or a throttle set in the Function.
pub fn openfaas_update(current: &flint_api::FunctionSpec, new: flint_api::FunctionSpec) -> flint_api::FunctionSpec {
    flint_api::FunctionSpec {
        canary: current.canary.clone(),
        triggers: current.triggers.clone(),
        timeout: current.timeout,
        concurrency: current.concurrency,
        paused: current.paused,
        throttle: current.throttle.clone(),
        env_from: current.env_from.clone(),
        service_account_name: current.service_account_name.clone(),
        scale: flint_api::Scale {
            metric: current.scale.metric,
            zero_after: current.scale.zero_after,
            // Only a new Function's start: dropped rather than refuse a new min or max.
            initial: current.scale.initial.filter(|i| (new.scale.min..=new.scale.max).contains(i)),
            idle: current.scale.idle.clone(),
            schedule: current.scale.schedule.clone(),
            ..new.scale
        },
        ..new
    }
}

/// Refuses a replica count above the function's `scale.max` (any provider, any caller).
pub fn check_replicas(f: &Function, replicas: u32) -> Result<(), ProviderError> {
    let max = f.spec.scale.max.max(0) as u32;
    if replicas > max {
        let name = f.metadata.name.as_deref().unwrap_or_default();
        return Err(ProviderError::Invalid(Invalid(vec![flint_api::FieldError {
            field: "replicas".into(),
            message: format!("{replicas} is more than spec.scale.max ({max}) of {name}"),
        }])));
    }
    Ok(())
}

pub trait Provider: Send + Sync + 'static {
    /// The provider's name for `/system/info` (`local`, `kubernetes`).
    fn name(&self) -> &'static str;
    fn default_namespace(&self) -> &str;
    /// Whether functions of this gateway can live in `namespace` (a request naming it means it).
    fn holds_namespace(&self, namespace: &str) -> bool;
    fn namespaces(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>>;
    /// What the request path needs; `None` when no such function exists.
    fn route(&self, namespace: &str, name: &str) -> Option<Route>;
    fn list(&self, namespace: &str) -> BoxFuture<'_, Result<Vec<Deployed>, ProviderError>>;
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Deployed, ProviderError>>;
    fn deploy(&self, function: Function) -> BoxFuture<'_, Result<(), ProviderError>>;
    /// Applies an OpenFaaS update (see [`openfaas_update`]).
    fn update(&self, function: Function) -> BoxFuture<'_, Result<(), ProviderError>>;
    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// One replica for a version at zero; nothing when it already has replicas (wanted or
    /// starting). The request path calls it once per cold start.
    fn scale_from_zero<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Sets the replica count of one version.
    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Every version of every function, for the autoscaler.
    fn scale_targets(&self) -> Vec<ScaleTarget>;
    /// Makes a control-loop decision visible where users look (an Event on the Function on
    /// Kubernetes; local mode has the log line only).
    fn event<'a>(&'a self, _namespace: &'a str, _name: &'a str, _reason: &'a str, _note: String) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// What was learned of a version's idle times (the learned idle policy) and kept where
    /// this provider keeps state; `None` when nothing is kept for `image`.
    fn learned_idle(&self, namespace: &str, name: &str, version: Version, image: &str) -> Option<IdleTimes>;
    /// Keeps it there, so that it outlives this gateway (or its Lease).
    fn remember_idle<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        version: Version,
        image: &'a str,
        idle: IdleTimes,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Functions with triggers: (namespace, name, function).
    fn triggers(&self) -> Vec<(String, String, Arc<Function>)>;
    /// Canaries under analysis, with their effective status.
    fn canaries(&self) -> Vec<CanaryTarget>;
    /// Sets a canary's effective status (weight, phase, why).
    fn set_canary<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        status: flint_api::CanaryStatus,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    fn logs(&self, query: LogQuery) -> BoxFuture<'_, Result<BoxStream<'static, LogMessage>, ProviderError>>;
    /// Stops what the provider started (local replicas); nothing for Kubernetes.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    /// Whether the provider sees what it should (on Kubernetes: every watch is working); the
    /// reason when not, for `/healthz`.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_openfaas_update_keeps_what_the_openfaas_api_does_not_carry() {
        let current = flint_api::manifest::from_yaml(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\nspec:\n  image: a:1\n  timeout: 2m\n  \
             canary: {image: a:2, weight: 10}\n  triggers: [{cron: {schedule: '@hourly'}}]\n  \
             scale: {metric: rps, max: 5, initial: 0, idle: {policy: learned}, schedule: [{cron: '0 9 * * *', min: 1, for: 8h}]}\n",
        )
        .unwrap()
        .remove(0)
        .spec;
        let mut new = flint_api::FunctionSpec::with_image("b:1");
        new.scale.max = 9;
        let merged = super::openfaas_update(&current, new);
        assert_eq!(merged.image, "b:1");
        assert_eq!(merged.scale.max, 9);
        assert_eq!(merged.scale.metric, flint_api::ScaleMetric::Rps);
        assert_eq!(
            (&merged.scale.initial, &merged.scale.idle, &merged.scale.schedule),
            (&current.scale.initial, &current.scale.idle, &current.scale.schedule)
        );
        let mut raised = flint_api::FunctionSpec::with_image("b:1");
        raised.scale.min = 1;
        assert_eq!(super::openfaas_update(&current, raised).scale.initial, None, "0 no longer fits min 1");
        assert_eq!(merged.canary, current.canary);
        assert_eq!(merged.triggers, current.triggers);
        assert_eq!(merged.timeout, current.timeout);
    }
}
