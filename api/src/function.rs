//! The `Function` custom resource (`flint.dev/v1alpha1`). The doc comments on these types become
//! the CRD's descriptions, which is what `kubectl explain function.spec` prints: write them for
//! the person deploying a function.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{duration::Duration, limits::*};

/// A function: a container image whose watchdog serves HTTP invocations through the Flint
/// gateway, scaled between zero and `scale.max` replicas from live request metrics.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Each `printcolumn(...)` repeats `type_` and `json_path` by design; the lint reads them as one list.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "flint.dev",
    version = "v1alpha1",
    kind = "Function",
    plural = "functions",
    singular = "function",
    shortname = "fn",
    namespaced,
    doc = "A Flint function: an image served over HTTP by the Flint gateway, scaled from zero to N.",
    status = "FunctionStatus",
    derive = "PartialEq",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Canary",
        type_ = "integer",
        description = "Effective share of traffic sent to the canary, in percent",
        json_path = ".status.canary.weight"
    ),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    /// Container image holding the function and the Flint watchdog, e.g.
    /// `ghcr.io/acme/resize:1.4.2`. The watchdog is the image's entrypoint.
    #[schemars(length(min = 1, max = MAX_IMAGE_LEN), pattern(IMAGE_PATTERN))]
    pub image: String,

    /// The function's own process, started by the watchdog (sets the watchdog's `fprocess`).
    /// When absent, the image's `fprocess` environment variable is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LIST))]
    pub command: Option<Vec<String>>,

    /// Arguments appended to `command` (or to the image's `fprocess`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LIST))]
    pub args: Option<Vec<String>>,

    /// Environment variables for the function's process (at most 128): each a literal `value`
    /// or a `valueFrom` reference to a key of a Secret. Names are unique (a list keyed by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// Secrets whose every key becomes an environment variable of the function's process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub env_from: Vec<EnvFromSource>,

    /// Names of Secrets in the Function's namespace to mount read-only, each at
    /// `/var/openfaas/secrets/<secret-name>/<key>` (the path OpenFaaS functions read). Unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), extend("x-kubernetes-list-type" = "set"))]
    pub secrets: Vec<SecretName>,

    /// Labels added to the function's pods (at most 64). Values: at most 63 alphanumerics, `-`,
    /// `_`, `.`. Keys: qualified names (optional DNS prefix and `/`, then at most 63
    /// alphanumerics, `-`, `_`, `.`), checked by the operator, which reports a bad key as
    /// `Ready=False, InvalidSpec`; keys under `flint.dev/` are reserved for Flint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_LABELS,
        "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}
    ))]
    #[x_kube(validation = Rule::new(reserved_keys_rule()).message("spec.labels: keys under flint.dev/ are reserved for Flint"))]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to the function's pods (at most 64). Keys: qualified names, checked by
    /// the operator (`Ready=False, InvalidSpec`); keys under `flint.dev/` are reserved for Flint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_LABELS))]
    #[x_kube(validation = Rule::new(reserved_keys_rule()).message("spec.annotations: keys under flint.dev/ are reserved for Flint"))]
    pub annotations: BTreeMap<String, String>,

    /// CPU and memory for each replica's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Mount the container's root filesystem read-only. `/tmp` stays writable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,

    /// The ServiceAccount the function's pods run as. Default: the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub service_account_name: Option<String>,

    /// Longest time one invocation may run, e.g. `30s`, `5m`. A longer invocation is answered
    /// 504 and its process is stopped.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new(POSITIVE_DURATION_RULE).message("spec.timeout: must be greater than 0s"))]
    pub timeout: Duration,

    /// Hard limit of invocations in flight in one replica; more are answered 429.
    /// 0 means no limit.
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_CONCURRENCY))]
    pub concurrency: i32,

    /// How many replicas run, and when.
    #[serde(default)]
    pub scale: Scale,

    /// Stop serving the function at once without deleting it: the gateway answers every
    /// invocation 503, saying so, until this is false again. Idle replicas scale to zero as usual.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// Limits the gateway applies to the function's requests before they reach a replica (or
    /// start one): a request rate and a cap on invocations in flight. Each gateway replica
    /// applies them to the requests it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,

    /// A second version that receives a share of the traffic. Remove it to send everything to
    /// the stable version again; promote it by copying its image to `spec.image` and removing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,

    /// Events that invoke the function without an HTTP caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub triggers: Vec<Trigger>,
}

/// An environment variable of the function's process.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))").message("spec.env: set value or valueFrom, not both"))]
pub struct EnvVar {
    /// Variable name: letters, digits, `_`, `-`, `.`, not starting with a digit.
    #[schemars(length(min = 1, max = 253), pattern(ENV_NAME_PATTERN))]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value from instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// A source for an environment variable's value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the Function's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: SecretName,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: String,
    /// Start the function even when the Secret or key does not exist.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// All keys of a Secret as environment variables.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// The Secret to read.
    pub secret_ref: SecretRef,
}

/// A Secret by name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: SecretName,
}

/// A Secret's name (a DNS-1123 subdomain).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct SecretName(#[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))] pub String);

/// Compute resources of one replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(limit_rule("cpu")).message("spec.resources.limits.cpu: must be >= spec.resources.requests.cpu"),
    validation = Rule::new(limit_rule("memory")).message("spec.resources.limits.memory: must be >= spec.resources.requests.memory")
)]
pub struct Resources {
    /// What the scheduler reserves for each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
    /// The most each replica may use; at least the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
}

/// CPU and memory amounts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceList {
    /// CPU in cores, e.g. `100m` (a tenth of a core) or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_QUANTITY_LEN), pattern(crate::quantity::PATTERN))]
    pub cpu: Option<String>,
    /// Memory in bytes, e.g. `128Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_QUANTITY_LEN), pattern(crate::quantity::PATTERN))]
    pub memory: Option<String>,
}

/// Scaling bounds and the signal the autoscaler follows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("spec.scale.min: must be <= spec.scale.max"))]
#[x_kube(validation = Rule::new("!has(self.schedule) || self.schedule.all(s, s.min <= self.max)").message("spec.scale.schedule[].min: must be <= spec.scale.max"))]
#[x_kube(validation = Rule::new("!has(self.initial) || (self.initial >= self.min && self.initial <= self.max)").message("spec.scale.initial: must be between spec.scale.min and spec.scale.max"))]
pub struct Scale {
    /// Fewest replicas. 0 lets an idle function scale to zero; the first request then waits
    /// for a replica to start (a cold start).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub min: i32,
    /// Replicas a new Function starts with, before the autoscaler's first look. Default
    /// max(min, 1), so that a new function answers at once. 0 deploys a `min: 0` function
    /// already at zero: nothing runs until its first request, for the many functions that are
    /// rarely called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub initial: Option<i32>,
    /// Most replicas.
    #[serde(default = "default_max")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max: i32,
    /// What `target` counts: `concurrency` (invocations in flight) or `rps` (requests per second).
    #[serde(default)]
    pub metric: ScaleMetric,
    /// How much of `metric` one replica should carry; replicas = ceil(observed / target).
    #[serde(default = "default_target")]
    #[schemars(range(min = 1, max = MAX_TARGET))]
    pub target: i32,
    /// Idle time (no request at all) after which a function with `min: 0` scales to zero.
    #[serde(default = "default_zero_after")]
    #[x_kube(validation = Rule::new(POSITIVE_DURATION_RULE).message("spec.scale.zeroAfter: must be greater than 0s"))]
    pub zero_after: Duration,
    /// How an idle function (`min: 0`) goes to zero and comes back: `fixed` (the default) after
    /// `zeroAfter`; `learned` from its own idle times, with a replica brought back ahead of
    /// the call they predict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    /// Minimums held on a schedule, for load known in advance (office hours, a nightly batch):
    /// from each time `cron` names, at least `min` replicas for `for`. Where several hold at
    /// once, the highest wins; `min` and the autoscaler's own count still apply on top.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SCHEDULES))]
    pub schedule: Vec<ScheduledMin>,
}

/// A minimum held from each time a cron expression names, for a while.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledMin {
    /// When the minimum starts: five fields (minute hour day-of-month month day-of-week), six
    /// with seconds first, or a macro such as `@daily`, read in `timeZone`. A replica takes a
    /// moment to start: to have it ready at 9:00, start at 8:55.
    #[schemars(length(max = MAX_CRON_LEN), pattern(CRON_PATTERN))]
    pub cron: String,
    /// Replicas held meanwhile.
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub min: i32,
    /// How long the minimum holds from each start, e.g. `8h`.
    #[serde(rename = "for")]
    #[x_kube(validation = Rule::new(POSITIVE_DURATION_RULE).message("spec.scale.schedule[].for: must be greater than 0s"))]
    pub lasting: Duration,
    /// IANA time zone `cron` is read in, e.g. `Europe/Berlin` (daylight saving time included).
    /// Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_TIME_ZONE_LEN), pattern(TIME_ZONE_PATTERN))]
    pub time_zone: Option<String>,
}

/// The idle policy of a function that scales to zero.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Idle {
    pub policy: IdlePolicy,
    /// With `learned`: the longest a replica is kept up around one predicted call (pre-warmed
    /// ahead of it, kept after it), e.g. `1h`. Default `4h`.
    #[serde(default = "default_max_keep_alive")]
    #[x_kube(validation = Rule::new(POSITIVE_DURATION_RULE).message("spec.scale.idle.maxKeepAlive: must be greater than 0s"))]
    pub max_keep_alive: Duration,
}

/// `fixed`: to zero after `zeroAfter`. `learned`: from the function's idle times.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    #[default]
    Fixed,
    Learned,
}

/// The signal the autoscaler follows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMetric {
    /// Invocations in flight per replica.
    #[default]
    Concurrency,
    /// Requests per second per replica.
    Rps,
}

/// Limits on a function's requests, applied by the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.burst) || has(self.rate)").message("spec.throttle.burst: needs spec.throttle.rate"))]
pub struct Throttle {
    /// Requests per second admitted; more are answered 429 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_RATE))]
    pub rate: Option<i32>,
    /// Requests admitted at once above `rate` after a quiet spell (a token bucket's size).
    /// Default: `rate`, one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_RATE))]
    pub burst: Option<i32>,
    /// Invocations in flight at once, all replicas together; more wait in a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_CONCURRENCY))]
    pub max_in_flight: Option<i32>,
    /// Requests that may wait for one of `maxInFlight`'s places; more are answered 429 at once.
    #[serde(default = "default_queue")]
    #[schemars(range(min = 0, max = MAX_QUEUE))]
    pub queue: i32,
    /// Longest a request waits in that queue before it is answered 429, e.g. `5s`.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: Duration,
}

/// A canary version of the function that receives a share of the traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.analysis) || self.weight <= self.analysis.maxWeight").message("spec.canary.weight: must be <= spec.canary.analysis.maxWeight"))]
pub struct Canary {
    /// The canary's image.
    #[schemars(length(min = 1, max = MAX_IMAGE_LEN), pattern(IMAGE_PATTERN))]
    pub image: String,
    /// Environment variables of the canary that differ from `spec.env` (same name: replaced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// Percentage of requests sent to the canary (0-100). With `analysis`, the starting weight.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
    /// Judge the canary from its metrics: widen its share while it is healthy, roll it back
    /// to 0 % as soon as it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Keep each caller on one version: the value of this request header or cookie is hashed
    /// to a version (with the same weight). Requests without it are split one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
}

/// What identifies a caller for sticky canary routing: a header or a cookie, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.header) != has(self.cookie)").message("spec.canary.sticky: set header or cookie, not both"))]
pub struct Sticky {
    /// A request header's name, e.g. `X-User-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(TOKEN_PATTERN))]
    pub header: Option<String>,
    /// A cookie's name, e.g. `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(TOKEN_PATTERN))]
    pub cookie: Option<String>,
}

/// Automatic canary analysis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxWeight >= self.stepWeight").message("spec.canary.analysis.maxWeight: must be >= spec.canary.analysis.stepWeight"))]
pub struct Analysis {
    /// How often the canary is judged.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new(POSITIVE_DURATION_RULE).message("spec.canary.analysis.interval: must be greater than 0s"))]
    pub interval: Duration,
    /// Percentage points added to the canary's weight after each passed check.
    #[serde(default = "default_step_weight")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: i32,
    /// The weight at which the analysis stops widening (phase `Succeeded`).
    #[serde(default = "default_max_weight")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: i32,
    /// Lowest acceptable share of non-5xx responses, in percent.
    #[serde(default = "default_min_success_rate")]
    #[schemars(range(min = 0, max = 100))]
    pub min_success_rate: f64,
    /// Highest acceptable 99th percentile latency, e.g. `500ms`.
    #[serde(default = "default_max_p99")]
    #[x_kube(validation = Rule::new(POSITIVE_DURATION_RULE).message("spec.canary.analysis.maxP99Latency: must be greater than 0s"))]
    pub max_p99_latency: Duration,
    /// Fewest canary requests in an interval for a check to count; fewer: no step, no rollback.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub min_requests: i32,
}

/// Something that invokes the function: exactly one of `cron` or `nats`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cron) != has(self.nats)").message("spec.triggers[]: set exactly one of cron or nats"))]
pub struct Trigger {
    /// Invoke on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronTrigger>,
    /// Invoke once for each message published on a NATS subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsTrigger>,
}

/// A queue trigger: each message on `subject` is `POST`ed to `path` (body = the message, its
/// headers carried), acknowledged only after a 2xx, retried and dead-lettered like an
/// asynchronous call. One gateway replica takes each message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatsTrigger {
    /// NATS subject, e.g. `orders.created` or `orders.*`; `flint.` subjects are Flint's own.
    #[schemars(length(min = 1, max = MAX_SUBJECT_LEN), pattern(SUBJECT_PATTERN))]
    #[x_kube(validation = Rule::new("self.split('.')[0] != 'flint'").message("spec.triggers[].nats.subject: subjects under flint. are Flint's own"))]
    pub subject: String,
    /// Path below the function to invoke, e.g. `/` or `/orders`.
    #[serde(default = "default_path")]
    #[schemars(length(max = MAX_PATH_LEN), pattern(PATH_PATTERN))]
    pub path: String,
}

/// A scheduled invocation: `POST` to `path` with `body`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CronTrigger {
    /// Cron expression, five fields (minute hour day-of-month month day-of-week) or six with
    /// seconds first, or a macro such as `@hourly`. Evaluated in UTC.
    #[schemars(length(max = MAX_CRON_LEN), pattern(CRON_PATTERN))]
    pub schedule: String,
    /// Path below the function to invoke, e.g. `/` or `/cleanup`.
    #[serde(default = "default_path")]
    #[schemars(length(max = MAX_PATH_LEN), pattern(PATH_PATTERN))]
    pub path: String,
    /// Request body sent with each invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// What Flint observed and did.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` (and `CanaryHealthy` with an analysis), each with a
    /// reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas of all versions.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas of all versions that are ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The canary as routed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Where to invoke the function through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What the gateway learned of each version's idle times (`scale.idle.policy: learned`),
    /// kept here so that it outlives a gateway's restart and a change of the autoscaling
    /// gateway. Written by the gateway, one field manager per version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["version"]))]
    pub idle: Vec<LearnedIdle>,
}

/// A version's learned idle times: a histogram of quiet spells between calls.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LearnedIdle {
    /// `stable` or `canary`.
    pub version: String,
    /// The image they were learned on: a new image starts afresh.
    pub image: String,
    /// Width of a bin, in milliseconds.
    pub bin_ms: i64,
    /// Spells per bin, the non-empty bins only, as `BIN:COUNT` separated by spaces.
    #[serde(default)]
    pub counts: String,
    /// Spells longer than the last bin.
    #[serde(default)]
    pub longer: i64,
    /// The last of those, in bins, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_long: Vec<i64>,
}

/// The canary as routed now.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Effective percentage of requests the gateway sends to the canary.
    pub weight: i32,
    /// Where the canary stands.
    pub phase: CanaryPhase,
    /// Why, in words: the numbers of the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The canary image this status judges; a new image starts the analysis over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Where a canary stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CanaryPhase {
    /// Fixed weight, no analysis.
    #[default]
    Static,
    /// Under analysis, weight widening.
    Progressing,
    /// Reached `maxWeight`; waiting for the user to promote it.
    Succeeded,
    /// Failed a check; weight 0.
    RolledBack,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max() -> i32 {
    20
}
fn default_target() -> i32 {
    10
}
fn default_zero_after() -> Duration {
    Duration::from_secs(300)
}
fn default_max_keep_alive() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_step_weight() -> i32 {
    10
}
fn default_max_weight() -> i32 {
    50
}
fn default_min_success_rate() -> f64 {
    99.0
}
fn default_max_p99() -> Duration {
    Duration::from_millis(500)
}
fn default_min_requests() -> i32 {
    20
}
fn default_queue() -> i32 {
    100
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_path() -> String {
    "/".into()
}

impl Scale {
    /// Replicas a new Function starts with: `initial`, else max(min, 1).
    pub fn initial_replicas(&self) -> i32 {
        self.initial.unwrap_or(self.min.max(1))
    }
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            min: 0,
            initial: None,
            max: default_max(),
            metric: ScaleMetric::default(),
            target: default_target(),
            zero_after: default_zero_after(),
            idle: None,
            schedule: Vec::new(),
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            rate: None,
            burst: None,
            max_in_flight: None,
            queue: default_queue(),
            queue_timeout: default_queue_timeout(),
        }
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            step_weight: default_step_weight(),
            max_weight: default_max_weight(),
            min_success_rate: default_min_success_rate(),
            max_p99_latency: default_max_p99(),
            min_requests: default_min_requests(),
        }
    }
}

impl CanaryStatus {
    /// The status a canary starts with: its spec weight, under analysis or fixed.
    pub fn initial(canary: &Canary) -> Self {
        let phase = if canary.analysis.is_some() { CanaryPhase::Progressing } else { CanaryPhase::Static };
        CanaryStatus { weight: canary.weight, phase, message: None, image: Some(canary.image.clone()) }
    }
}

impl FunctionSpec {
    /// A spec with the given image and every other field at its default.
    pub fn with_image(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            command: None,
            args: None,
            env: vec![],
            env_from: vec![],
            secrets: vec![],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            resources: None,
            read_only_root_filesystem: false,
            service_account_name: None,
            timeout: default_timeout(),
            concurrency: 0,
            scale: Scale::default(),
            paused: false,
            throttle: None,
            canary: None,
            triggers: vec![],
        }
    }
}
