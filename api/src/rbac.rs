//! What each Flint binary asks of the Kubernetes API, in one list per binary. The Helm chart's
//! RBAC is checked against these lists by a test, so a new API call without its permission
//! fails CI instead of a cluster.

/// One permission: API group ("" for core), resource (with `/subresource`), verbs.
pub struct Rule {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const fn rule(group: &'static str, resource: &'static str, verbs: &'static [&'static str]) -> Rule {
    Rule { group, resource, verbs }
}

/// The operator: Functions and their status, the children it owns (watched: its cache), pods
/// (watched, for why they fail), events, and its leader-election Lease.
pub const OPERATOR: &[Rule] = &[
    rule("flint.dev", "functions", &["get", "list", "watch"]),
    rule("flint.dev", "functions/status", &["patch"]),
    rule("apps", "deployments", &["get", "list", "watch", "create", "patch", "delete"]),
    rule("", "services", &["get", "list", "watch", "create", "patch", "delete"]),
    rule("", "pods", &["list", "watch"]),
    rule("events.k8s.io", "events", &["create", "patch"]),
    rule("coordination.k8s.io", "leases", &["get", "create", "patch", "update"]),
];

/// The gateway: Functions (the REST API writes them; the canary analysis writes their
/// status), endpoints, replica counts, logs, events, and the autoscaler's Lease.
pub const GATEWAY: &[Rule] = &[
    rule("flint.dev", "functions", &["get", "list", "watch", "create", "update", "delete"]),
    rule("flint.dev", "functions/status", &["patch"]),
    rule("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    rule("apps", "deployments", &["list", "watch"]),
    rule("apps", "deployments/scale", &["get", "patch"]),
    rule("", "pods", &["list"]),
    rule("", "pods/log", &["get"]),
    rule("events.k8s.io", "events", &["create", "patch"]),
    rule("coordination.k8s.io", "leases", &["get", "create", "patch", "update"]),
];
