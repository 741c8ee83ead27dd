//! The namespaces a gateway serves functions in (`--function-namespaces`, the chart's
//! `functionNamespaces`, the same list the operator reconciles): the gateway watches, routes,
//! lists, scales, fires and analyses functions there only. A Function elsewhere belongs to no
//! operator of this installation, or to another installation of Flint, whose gateway acts on it;
//! two gateways each firing its cron triggers would run every tick twice.

use std::sync::Arc;

use futures::{Stream, TryStreamExt, future};
use kube::{Api, Client, Resource, ResourceExt, runtime::watcher};
use serde::de::DeserializeOwned;

#[derive(Clone)]
pub struct Scope {
    namespaces: Arc<[String]>,
}

impl Scope {
    pub fn new(mut namespaces: Vec<String>) -> Scope {
        namespaces.sort();
        namespaces.dedup();
        Scope { namespaces: namespaces.into() }
    }

    pub fn contains(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
    }

    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// A watch of `K` in these namespaces. One namespace is watched alone. Several share one
    /// cluster-wide watch whose objects elsewhere are dropped: a store is fed by one watch (its
    /// relist replaces the whole store), so a watch per namespace would need a store each.
    pub fn watch<K>(
        &self,
        client: &Client,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let api = match &*self.namespaces {
            [one] => Api::namespaced(client.clone(), one),
            _ => Api::all(client.clone()),
        };
        let scope = self.clone();
        watcher(api, config).try_filter(move |event| future::ready(scope.keeps(event)))
    }

    fn keeps<K: Resource>(&self, event: &watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
                self.contains(&o.namespace().unwrap_or_default())
            }
            watcher::Event::Init | watcher::Event::InitDone => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::ObjectMeta;

    use super::*;

    fn in_ns(ns: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta { name: Some("f".into()), namespace: Some(ns.into()), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_keeps_objects_of_its_namespaces_and_every_relist_marker() {
        let s = Scope::new(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(s.namespaces(), ["a", "b"]);
        for keep in [
            watcher::Event::Apply(in_ns("a")),
            watcher::Event::Delete(in_ns("b")),
            watcher::Event::InitApply(in_ns("a")),
            watcher::Event::Init,
            watcher::Event::InitDone,
        ] {
            assert!(s.keeps(&keep), "{keep:?}");
        }
        for drop in [
            watcher::Event::Apply(in_ns("c")),
            watcher::Event::Delete(in_ns("c")),
            watcher::Event::InitApply(in_ns("ab")),
        ] {
            assert!(!s.keeps(&drop), "{drop:?}");
        }
    }
}
