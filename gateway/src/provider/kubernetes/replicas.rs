//! What the gateway keeps of a Deployment: its name, its controller, and its wanted and ready
//! replicas, read into a type of its own. A `k8s_openapi` Deployment is about 2.5 KB before it
//! holds anything (its pod spec is inline), and the gateway caches one or two per function,
//! running or not: with 2,000 functions at rest that was most of the gateway's heap. The
//! fields left out are skipped while parsing, and `slim` drops the metadata it does not read
//! (the store's key copies the uid and resource version too, for nothing here: a Deployment
//! is found by name and scaled by name).

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Resource, api::ObjectMeta};
use serde::Deserialize;

#[derive(Resource, Clone, Debug, Deserialize)]
#[resource(inherit = Deployment)]
pub struct Replicas {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Wanted,
    #[serde(default)]
    pub status: Ready,
    /// The uid of its controller (from `metadata.ownerReferences`), set by `slim`.
    #[serde(skip)]
    controller: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Wanted {
    /// Absent means 1, as the API server defaults it.
    pub replicas: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    pub ready_replicas: Option<i32>,
}

impl Replicas {
    /// Of its metadata, only what finds it (name, namespace) and who controls it.
    pub fn slim(&mut self) {
        let m = std::mem::take(&mut self.metadata);
        let mut owners = m.owner_references.into_iter().flatten();
        self.controller = owners.find(|o| o.controller == Some(true)).map(|o| o.uid);
        self.metadata = ObjectMeta { name: m.name, namespace: m.namespace, ..Default::default() };
    }

    /// Wanted and ready replicas.
    pub fn counts(&self) -> (u32, u32) {
        let want = self.spec.replicas.unwrap_or(1).max(0) as u32;
        (want, self.status.ready_replicas.unwrap_or(0).max(0) as u32)
    }

    /// Whether `uid` (a Function's) is its controller.
    pub fn controlled_by(&self, uid: Option<&String>) -> bool {
        self.controller.is_some() && self.controller.as_ref() == uid
    }
}
