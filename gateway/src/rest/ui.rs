//! The portal's two JSON endpoints, served from the gateway's own state (no scrape of its
//! `/metrics` text): `/system/ui/functions` (the list, with the last minute's numbers) and
//! `/system/ui/series/NAME[.NAMESPACE]` (ten minutes, second by second, and the events).

use hyper::{Request, StatusCode, body::Incoming};
use serde::Serialize;

use super::{Api, Reply, error, types::FunctionStatus};
use crate::reply;

/// One row of the portal's function list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    #[serde(flatten)]
    status: FunctionStatus,
    /// Answers in the last minute, the share of them that were 5xx (%), and their p99 (ms).
    requests_last_minute: u64,
    error_rate: f64,
    p99_ms: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<Canary>,
    /// Replicas wanted and ready, per version.
    versions: Vec<VersionReplicas>,
}

#[derive(Serialize)]
struct VersionReplicas {
    version: &'static str,
    replicas: u32,
    ready: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Canary {
    image: String,
    weight: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Api {
    pub(super) async fn ui_functions(&self, req: &Request<Incoming>) -> Result<Reply, Reply> {
        let namespace = self.namespace(req);
        let all = self.provider.list(&namespace).await.map_err(error)?;
        // The analysis' state as the gateway holds it (both providers), over the Function's.
        let mut versions: std::collections::HashMap<String, Vec<VersionReplicas>> = Default::default();
        for t in self.provider.scale_targets().into_iter().filter(|t| t.namespace() == namespace) {
            let v = VersionReplicas { version: t.version.as_str(), replicas: t.replicas, ready: t.ready };
            versions.entry(t.name().to_string()).or_default().push(v);
        }
        let analysed: std::collections::HashMap<String, flint_api::CanaryStatus> = self
            .provider
            .canaries()
            .into_iter()
            .filter(|c| c.namespace == namespace)
            .map(|c| (c.name, c.status))
            .collect();
        let rows: Vec<Row> = all
            .iter()
            .map(|d| {
                let status = self.status(d);
                let label = format!("{}.{}", status.name, status.namespace);
                let (requests_last_minute, error_rate, p99_ms) =
                    self.metrics.history.get(&label).map_or((0, 0.0, None), |r| r.summary(60));
                let canary = d.function.spec.canary.as_ref().map(|c| {
                    let s = analysed
                        .get(&status.name)
                        .or_else(|| d.function.status.as_ref().and_then(|s| s.canary.as_ref()));
                    Canary {
                        image: c.image.clone(),
                        weight: s.map_or(c.weight, |s| s.weight),
                        phase: s.map(|s| format!("{:?}", s.phase)),
                        message: s.and_then(|s| s.message.clone()),
                    }
                });
                let mut versions = versions.remove(&status.name).unwrap_or_default();
                versions.sort_by_key(|v| v.version != "stable");
                Row { status, requests_last_minute, error_rate, p99_ms, canary, versions }
            })
            .collect();
        Ok(reply::json(StatusCode::OK, &rows))
    }

    pub(super) async fn ui_series(&self, req: &Request<Incoming>, name: &str) -> Result<Reply, Reply> {
        let (name, namespace) = match name.split_once('.') {
            Some((n, ns)) => (n.to_string(), self.resolve(Some(ns))),
            None => (name.to_string(), self.namespace(req)),
        };
        // Known functions only: no series for a name nobody deployed.
        self.provider.get(&namespace, &name).await.map_err(error)?;
        let series = self.metrics.history.of(&format!("{name}.{namespace}")).series();
        Ok(reply::json(StatusCode::OK, &series))
    }
}
