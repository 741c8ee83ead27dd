//! What the cluster should hold for a Function: pure functions from the spec to the
//! Deployment and Service of each version. The watchdog's settings are derived here the same
//! way local mode derives them (`timeout` → `exec_timeout`/`write_timeout`, `concurrency` →
//! `max_inflight`).

use std::collections::BTreeMap;

use flint_api::{EnvVar, Function, ResourceList, limits::CANARY_SUFFIX};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar as K8sEnvVar,
            EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SeccompProfile, SecretEnvSource, SecretKeySelector, SecretVolumeSource, SecurityContext, Service,
            ServicePort, ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::Resource;

pub use flint_api::Version;

pub const FUNCTION_LABEL: &str = "flint.dev/function";
pub const VERSION_LABEL: &str = "flint.dev/version";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const OPERATOR: &str = "flint-operator";
/// Hash of the desired object; equal hash, nothing to apply.
pub const SPEC_HASH: &str = "flint.dev/spec-hash";
pub const HTTP_PORT: i32 = 8080;
pub const METRICS_PORT: i32 = 8081;
/// Where `spec.secrets` are mounted: one folder per Secret, as OpenFaaS functions read them.
pub const SECRETS_PATH: &str = "/var/openfaas/secrets";
/// The watchdog's own grace after SIGTERM (its default `healthcheck_interval`).
const WATCHDOG_GRACE_SECS: i64 = 5;

/// Name of a version's Deployment and Service.
pub fn object_name(f: &Function, version: Version) -> String {
    let name = f.metadata.name.clone().unwrap_or_default();
    match version {
        Version::Stable => name,
        Version::Canary => format!("{name}{CANARY_SUFFIX}"),
    }
}

/// The versions the spec asks for.
pub fn versions(f: &Function) -> Vec<Version> {
    let mut v = vec![Version::Stable];
    if f.spec.canary.is_some() {
        v.push(Version::Canary);
    }
    v
}

fn selector(f: &Function, version: Version) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FUNCTION_LABEL.to_string(), f.metadata.name.clone().unwrap_or_default()),
        (VERSION_LABEL.to_string(), version.as_str().to_string()),
    ])
}

fn labels(f: &Function, version: Version) -> BTreeMap<String, String> {
    let mut l = selector(f, version);
    l.insert(MANAGED_BY.into(), OPERATOR.into());
    l.insert("app.kubernetes.io/name".into(), f.metadata.name.clone().unwrap_or_default());
    l
}

fn metadata(f: &Function, version: Version) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(f, version)),
        namespace: f.metadata.namespace.clone(),
        labels: Some(labels(f, version)),
        owner_references: f.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

pub fn deployment(f: &Function, version: Version) -> Deployment {
    let spec = &f.spec;
    let image = match (version, &spec.canary) {
        (Version::Canary, Some(c)) => c.image.clone(),
        _ => spec.image.clone(),
    };
    let mut pod_labels = spec.labels.clone();
    pod_labels.extend(labels(f, version));
    let mut pod_annotations = spec.annotations.clone();
    pod_annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for secret in &spec.secrets {
        let volume = format!("secret-{}", secret.0.replace('.', "-"));
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret.0.clone()), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{SECRETS_PATH}/{}", secret.0),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if spec.read_only_root_filesystem {
        volumes.push(Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() });
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let timeout_secs = spec.timeout.get().as_secs_f64().ceil() as i64;
    let container = Container {
        name: "function".into(),
        image: Some(image),
        env: Some(env(f, version)),
        env_from: (!spec.env_from.is_empty()).then(|| {
            spec.env_from
                .iter()
                .map(|e| EnvFromSource {
                    secret_ref: Some(SecretEnvSource { name: e.secret_ref.name.0.clone(), optional: None }),
                    ..Default::default()
                })
                .collect()
        }),
        ports: Some(vec![
            ContainerPort { name: Some("http".into()), container_port: HTTP_PORT, ..Default::default() },
            ContainerPort { name: Some("metrics".into()), container_port: METRICS_PORT, ..Default::default() },
        ]),
        // Probed every second (the kubelet's least): a pod at zero is cold-started, and its
        // first probe usually comes before the watchdog listens, so the period is what the
        // caller waits beyond the start.
        readiness_probe: Some(probe("/_/ready", 1, 1)),
        liveness_probe: Some(probe("/_/health", 10, 3)),
        resources: spec.resources.as_ref().map(|r| ResourceRequirements {
            requests: r.requests.as_ref().map(quantities),
            limits: r.limits.as_ref().map(quantities),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            read_only_root_filesystem: Some(spec.read_only_root_filesystem),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    Deployment {
        metadata: metadata(f, version),
        spec: Some(DeploymentSpec {
            // Only a new Deployment's count: the gateway owns it after that.
            replicas: Some(spec.scale.initial_replicas()),
            selector: LabelSelector { match_labels: Some(selector(f, version)), ..Default::default() },
            // A new replica must be ready before an old one goes: no request meets no replica.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: spec.service_account_name.clone(),
                    automount_service_account_token: Some(spec.service_account_name.is_some()),
                    // The longest invocation, the watchdog's grace for endpoint removal, slack.
                    termination_grace_period_seconds: Some(timeout_secs + WATCHDOG_GRACE_SECS + 5),
                    // Function images run as a non-root user (their Dockerfile's numeric USER); the
                    // kubelet refuses to start one that would run as root.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Settings the watchdog reads, derived from the spec; they replace same-named user variables.
fn watchdog_env(f: &Function) -> Vec<(String, String)> {
    let spec = &f.spec;
    let timeout = flint_api::duration::format(spec.timeout.get());
    let mut env = vec![
        ("exec_timeout".to_string(), timeout.clone()),
        ("write_timeout".to_string(), timeout),
        ("max_inflight".to_string(), spec.concurrency.to_string()),
    ];
    if let Some(command) = &spec.command {
        let argv: Vec<&str> = command.iter().chain(spec.args.iter().flatten()).map(String::as_str).collect();
        env.push(("fprocess".into(), shlex::try_join(argv).unwrap_or_default()));
    }
    env
}

fn env(f: &Function, version: Version) -> Vec<K8sEnvVar> {
    let mut vars: Vec<EnvVar> = f.spec.env.clone();
    if let (Version::Canary, Some(canary)) = (version, &f.spec.canary) {
        for over in &canary.env {
            match vars.iter_mut().find(|v| v.name == over.name) {
                Some(v) => *v = over.clone(),
                None => vars.push(over.clone()),
            }
        }
    }
    let derived = watchdog_env(f);
    vars.retain(|v| !derived.iter().any(|(name, _)| *name == v.name));
    let mut out: Vec<K8sEnvVar> = vars
        .into_iter()
        .map(|v| K8sEnvVar {
            name: v.name,
            value: v.value,
            value_from: v.value_from.map(|from| EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: from.secret_key_ref.name.0,
                    key: from.secret_key_ref.key,
                    optional: from.secret_key_ref.optional.then_some(true),
                }),
                ..Default::default()
            }),
        })
        .collect();
    out.extend(derived.into_iter().map(|(name, value)| K8sEnvVar { name, value: Some(value), value_from: None }));
    out
}

fn quantities(r: &ResourceList) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        out.insert("cpu".into(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &r.memory {
        out.insert("memory".into(), Quantity(memory.clone()));
    }
    out
}

pub fn service(f: &Function, version: Version) -> Service {
    Service {
        metadata: metadata(f, version),
        spec: Some(ServiceSpec {
            selector: Some(selector(f, version)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: HTTP_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".into())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A child object as the operator wants it: `create` is what a new one starts as, `apply` what
/// later applies send (without fields set only at creation), both carrying the hash of `apply`.
pub struct Desired<K> {
    pub create: K,
    pub apply: K,
    pub hash: String,
}

impl<K: Resource + serde::Serialize + Clone> Desired<K> {
    /// `strip` removes from `create` what only creation sets.
    fn new(create: K, strip: impl FnOnce(&mut K)) -> Self {
        let mut apply = create.clone();
        strip(&mut apply);
        let hash = spec_hash(&apply);
        let mut create = create;
        for object in [&mut create, &mut apply] {
            object.meta_mut().annotations.get_or_insert_with(Default::default).insert(SPEC_HASH.into(), hash.clone());
        }
        Desired { create, apply, hash }
    }
}

/// The Deployment of a version; its replica count is set at creation only.
pub fn desired_deployment(f: &Function, version: Version) -> Desired<Deployment> {
    Desired::new(deployment(f, version), |d| {
        if let Some(spec) = d.spec.as_mut() {
            spec.replicas = None;
        }
    })
}

pub fn desired_service(f: &Function, version: Version) -> Desired<Service> {
    Desired::new(service(f, version), |_| {})
}

/// A stable hash of an object's JSON (FNV-1a), stored in [`SPEC_HASH`]: equal hash, same
/// desired object, nothing to write.
pub fn spec_hash(value: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(value).expect("Kubernetes objects serialize");
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3));
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(spec: &str) -> Function {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: resize, namespace: shop, uid: u-1}}\nspec:\n{spec}\n"
        );
        flint_api::manifest::from_yaml(&yaml).unwrap().remove(0)
    }

    fn container(d: &Deployment) -> &Container {
        &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, K8sEnvVar> {
        container(d).env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect()
    }

    #[test]
    fn every_spec_field_lands_where_it_should() {
        let f = function(
            "  image: acme/resize:1\n  command: [python3, index.py]\n  args: [--fast]\n  timeout: 1m\n  concurrency: 4\n  \
             env: [{name: A, value: '1'}, {name: exec_timeout, value: '999s'}, {name: T, valueFrom: {secretKeyRef: {name: tok, key: k}}}]\n  \
             envFrom: [{secretRef: {name: bulk}}]\n  secrets: [s3, db.creds]\n  labels: {team: img}\n  annotations: {note: hi}\n  \
             resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}\n  readOnlyRootFilesystem: true\n  \
             serviceAccountName: resizer\n  scale: {min: 3, max: 9}",
        );
        let d = deployment(&f, Version::Stable);
        assert_eq!(d.metadata.name.as_deref(), Some("resize"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Function", "resize", Some(true)));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let meta = spec.template.metadata.as_ref().unwrap();
        assert_eq!(meta.labels.as_ref().unwrap()["team"], "img");
        assert_eq!(meta.labels.as_ref().unwrap()[VERSION_LABEL], "stable");
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "hi");
        assert_eq!(meta.annotations.as_ref().unwrap()["prometheus.io/port"], "8081");
        assert_eq!(pod.service_account_name.as_deref(), Some("resizer"));
        assert_eq!(pod.termination_grace_period_seconds, Some(70));
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("acme/resize:1"));
        let env = env_of(&d);
        assert_eq!(env["fprocess"].value.as_deref(), Some("python3 index.py --fast"));
        assert_eq!(env["exec_timeout"].value.as_deref(), Some("1m"), "the spec's timeout wins over a user variable");
        assert_eq!(env["write_timeout"].value.as_deref(), Some("1m"));
        assert_eq!(env["max_inflight"].value.as_deref(), Some("4"));
        assert_eq!(env["A"].value.as_deref(), Some("1"));
        assert_eq!(env["T"].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().key, "k");
        assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "bulk");
        let mounts = c.volume_mounts.as_ref().unwrap();
        let paths: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(paths, ["/var/openfaas/secrets/s3", "/var/openfaas/secrets/db.creds", "/tmp"]);
        assert!(mounts[..2].iter().all(|m| m.read_only == Some(true)));
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "100m");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "128Mi");
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/_/ready"));
        assert_eq!(c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/_/health"));
    }

    #[test]
    fn containers_are_hardened() {
        let d = deployment(&function("  image: x"), Version::Stable);
        let sc = container(&d).security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(sc.read_only_root_filesystem, Some(false));
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(pod.volumes.is_none());
    }

    #[test]
    fn defaults_start_one_replica_with_the_default_timeout() {
        let f = function("  image: x");
        let d = deployment(&f, Version::Stable);
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(env_of(&d)["exec_timeout"].value.as_deref(), Some("30s"));
        assert!(!env_of(&d).contains_key("fprocess"), "no command: the image's fprocess applies");
        assert_eq!(versions(&f), [Version::Stable]);
    }

    #[test]
    fn a_function_deployed_at_zero_starts_no_replica_and_min_raises_the_start() {
        let replicas = |scale: &str| {
            deployment(&function(&format!("  image: x\n  scale: {scale}")), Version::Stable).spec.unwrap().replicas
        };
        assert_eq!(replicas("{initial: 0}"), Some(0));
        assert_eq!(replicas("{min: 3, initial: 4}"), Some(4));
        assert_eq!(replicas("{min: 3}"), Some(3));
    }

    #[test]
    fn a_canary_gets_its_own_image_env_names_and_labels() {
        let f = function(
            "  image: acme/r:1\n  env: [{name: V, value: '1'}, {name: K, value: keep}]\n  canary: {image: acme/r:2, weight: 10, env: [{name: V, value: '2'}]}",
        );
        assert_eq!(versions(&f), [Version::Stable, Version::Canary]);
        let d = deployment(&f, Version::Canary);
        assert_eq!(d.metadata.name.as_deref(), Some("resize-canary"));
        assert_eq!(container(&d).image.as_deref(), Some("acme/r:2"));
        let env = env_of(&d);
        assert_eq!((env["V"].value.as_deref(), env["K"].value.as_deref()), (Some("2"), Some("keep")));
        let selector = d.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
        assert_eq!(selector[VERSION_LABEL], "canary");
        let s = service(&f, Version::Canary);
        assert_eq!(s.metadata.name.as_deref(), Some("resize-canary"));
        assert_eq!(s.spec.unwrap().selector.unwrap()[VERSION_LABEL], "canary");
        assert_eq!(env_of(&deployment(&f, Version::Stable))["V"].value.as_deref(), Some("1"));
    }

    #[test]
    fn rollouts_never_remove_a_replica_before_its_successor_is_ready() {
        let d = deployment(&function("  image: x"), Version::Stable);
        let ru = d.spec.unwrap().strategy.unwrap().rolling_update.unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    }

    #[test]
    fn the_hash_changes_with_the_spec_only() {
        let a = deployment(&function("  image: x"), Version::Stable);
        let b = deployment(&function("  image: x"), Version::Stable);
        let c = deployment(&function("  image: z"), Version::Stable);
        assert_eq!(spec_hash(&a), spec_hash(&b));
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }
}
