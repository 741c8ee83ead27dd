//! What users read in `kubectl get fn` and `kubectl describe fn`: the status computed from what
//! the operator observed, as a pure function. Conditions keep their `lastTransitionTime` while
//! their status stays the same.

use flint_api::{CanaryPhase, CanaryStatus, Function, FunctionStatus, Invalid};
use k8s_openapi::{
    api::apps::v1::Deployment,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::resources::Version;

/// A pod of the function that cannot run, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct PodProblem {
    pub pod: String,
    /// The kubelet's reason: `ImagePullBackOff`, `CrashLoopBackOff`, ...
    pub reason: String,
    pub message: String,
}

/// What the operator saw of a Function's children.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub deployments: Vec<(Version, Option<Deployment>)>,
    pub pod_problems: Vec<PodProblem>,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Keeps an unchanged condition's transition time from `before`.
fn carry(mut conditions: Vec<Condition>, before: Option<&FunctionStatus>) -> Vec<Condition> {
    for c in &mut conditions {
        if let Some(old) = before.and_then(|s| s.conditions.iter().find(|o| o.type_ == c.type_))
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conditions
}

fn url(f: &Function, gateway: &str) -> String {
    format!(
        "{}/function/{}.{}",
        gateway.trim_end_matches('/'),
        f.metadata.name.as_deref().unwrap_or_default(),
        f.metadata.namespace.as_deref().unwrap_or_default()
    )
}

/// Under analysis the gateway owns the effective weight (see the gateway's `canary`), so the
/// one already in the status stays; otherwise it is the spec's.
fn canary(f: &Function) -> Option<CanaryStatus> {
    let spec = f.spec.canary.as_ref()?;
    let current = f.status.as_ref().and_then(|s| s.canary.clone());
    match current {
        Some(current)
            if spec.analysis.is_some()
                && current.phase != CanaryPhase::Static
                && current.image.as_ref() == Some(&spec.image) =>
        {
            Some(current)
        }
        _ => Some(CanaryStatus::initial(spec)),
    }
}

/// Whether the gateway's canary analysis owns `status.canary` (the operator then only reads it).
pub fn gateway_owns_canary(f: &Function) -> bool {
    f.spec.canary.as_ref().is_some_and(|c| c.analysis.is_some())
}

/// The status of a Function whose children could not be made as the spec says: another
/// object holds a child's name (`NameConflict`), or the API server refused a child
/// (`ChildRefused`: a quota, an admission webhook, missing permissions), with its message.
pub fn blocked(f: &Function, reason: &str, message: String, gateway: &str, now: Timestamp) -> FunctionStatus {
    stopped(f, reason, message, "blocked until the cause is removed", gateway, now)
}

/// The status of a Function whose spec failed `validate()`: nothing was changed in the cluster.
pub fn invalid(f: &Function, problems: &Invalid, gateway: &str, now: Timestamp) -> FunctionStatus {
    let message = format!("the spec is invalid, nothing was changed: {problems}");
    stopped(f, "InvalidSpec", message, "waiting for a valid spec", gateway, now)
}

/// Not ready, not progressing, degraded, all for `reason`; the replica counts stay as they were.
fn stopped(
    f: &Function,
    reason: &str,
    message: String,
    waiting: &str,
    gateway: &str,
    now: Timestamp,
) -> FunctionStatus {
    let generation = f.metadata.generation;
    let before = f.status.as_ref();
    FunctionStatus {
        observed_generation: generation,
        conditions: carry(
            vec![
                condition("Ready", false, reason, message.clone(), generation, now),
                condition("Progressing", false, reason, waiting.into(), generation, now),
                condition("Degraded", true, reason, message, generation, now),
            ],
            before,
        ),
        replicas: before.map_or(0, |s| s.replicas),
        ready_replicas: before.map_or(0, |s| s.ready_replicas),
        canary: before.and_then(|s| s.canary.clone()),
        url: Some(url(f, gateway)),
        // The gateway's: never written here.
        idle: Vec::new(),
    }
}

pub fn status(f: &Function, observed: &Observed, gateway: &str, now: Timestamp) -> FunctionStatus {
    let generation = f.metadata.generation;
    let (mut replicas, mut ready_replicas) = (0, 0);
    let mut not_ready = Vec::new();
    let mut rolling = Vec::new();
    let mut stuck = Vec::new();
    let mut at_zero = 0;
    for (version, d) in &observed.deployments {
        let Some(d) = d else {
            not_ready.push(format!("{} version is being created", version.as_str()));
            continue;
        };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        replicas += status.replicas.unwrap_or(0);
        ready_replicas += ready;
        if want == 0 {
            at_zero += 1;
        } else if ready == 0 {
            not_ready.push(format!("{} version has no ready replica (0/{want})", version.as_str()));
        }
        // Rolling out until every wanted replica runs the current spec and is available, as
        // the Deployment's own Progressing condition has it.
        let updated = status.updated_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        let current = status.observed_generation >= d.metadata.generation;
        if !current || updated < want || available < want {
            rolling.push(format!(
                "{} version: {updated}/{want} replicas updated, {available}/{want} available",
                version.as_str()
            ));
        }
        for c in status.conditions.iter().flatten() {
            if c.type_ == "Progressing" && c.status == "False" {
                stuck.push(format!("{} version: {}", version.as_str(), c.message.clone().unwrap_or_default()));
            }
        }
    }
    let ready = not_ready.is_empty();
    let ready_condition = if ready && at_zero == observed.deployments.len() {
        condition(
            "Ready",
            true,
            "ScaledToZero",
            "scaled to zero on purpose; the next request starts a replica".into(),
            generation,
            now,
        )
    } else if ready {
        condition("Ready", true, "Ready", format!("{ready_replicas} replica(s) ready"), generation, now)
    } else {
        condition("Ready", false, "NotReady", not_ready.join("; "), generation, now)
    };
    let progressing = if rolling.is_empty() {
        condition("Progressing", false, "Stable", "every version runs its current spec".into(), generation, now)
    } else {
        condition("Progressing", true, "RollingOut", rolling.join("; "), generation, now)
    };
    let degraded = if let Some(p) = observed.pod_problems.first() {
        let hint = match p.reason.as_str() {
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => {
                "check spec.image (and spec.canary.image) and the registry's credentials"
            }
            "CrashLoopBackOff" => "the function's process keeps exiting: read its logs (kubectl logs) ",
            "CreateContainerConfigError" if p.message.contains("runAsNonRoot") => {
                "the image runs as root: give it a numeric non-root USER (a Function's pods run as non-root)"
            }
            "CreateContainerConfigError" => "a Secret or key named in spec.env, envFrom or secrets is missing",
            _ => "see kubectl describe pod",
        };
        let mut message = format!("pod {}: {}: {}; {hint}", p.pod, p.reason, p.message);
        if observed.pod_problems.len() > 1 {
            message.push_str(&format!(" (and {} more pods)", observed.pod_problems.len() - 1));
        }
        condition("Degraded", true, &p.reason, message, generation, now)
    } else if !stuck.is_empty() {
        condition("Degraded", true, "ProgressDeadlineExceeded", stuck.join("; "), generation, now)
    } else {
        condition("Degraded", false, "Healthy", "no problem seen".into(), generation, now)
    };
    let canary = canary(f);
    let mut conditions = vec![ready_condition, progressing, degraded];
    if let Some(c) = canary.as_ref().filter(|c| c.phase != CanaryPhase::Static) {
        let healthy = c.phase != CanaryPhase::RolledBack;
        let reason = match c.phase {
            CanaryPhase::RolledBack => "RolledBack",
            CanaryPhase::Succeeded => "Succeeded",
            _ => "Progressing",
        };
        let message = c.message.clone().unwrap_or_else(|| format!("canary at {}%", c.weight));
        conditions.push(condition("CanaryHealthy", healthy, reason, message, generation, now));
    }
    FunctionStatus {
        observed_generation: generation,
        conditions: carry(conditions, f.status.as_ref()),
        replicas,
        ready_replicas,
        canary,
        url: Some(url(f, gateway)),
        // The gateway's: never written here.
        idle: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    use super::*;

    fn function() -> Function {
        let mut f = flint_api::manifest::from_yaml(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: f, namespace: ns}\nspec: {image: x}\n",
        )
        .unwrap()
        .remove(0);
        f.metadata.generation = Some(2);
        f
    }

    fn deployment(want: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: Default::default(),
            spec: Some(DeploymentSpec { replicas: Some(want), ..Default::default() }),
            status: Some(DeploymentStatus {
                replicas: Some(want),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                updated_replicas: Some(want),
                ..Default::default()
            }),
        }
    }

    fn get<'a>(s: &'a FunctionStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_when_every_version_has_a_ready_replica() {
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(2, 2)))], ..Default::default() };
        let s = status(&function(), &o, "http://gw:8080/", Timestamp::UNIX_EPOCH);
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Degraded").status, "False");
        assert_eq!((s.replicas, s.ready_replicas, s.observed_generation), (2, 2, Some(2)));
        assert_eq!(s.url.as_deref(), Some("http://gw:8080/function/f.ns"));
    }

    #[test]
    fn scaled_to_zero_on_purpose_is_ready() {
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(0, 0)))], ..Default::default() };
        let s = status(&function(), &o, "http://gw", Timestamp::UNIX_EPOCH);
        assert_eq!((get(&s, "Ready").status.as_str(), get(&s, "Ready").reason.as_str()), ("True", "ScaledToZero"));
    }

    #[test]
    fn image_pull_problems_are_degraded_with_advice() {
        let o = Observed {
            deployments: vec![(Version::Stable, Some(deployment(1, 0)))],
            pod_problems: vec![PodProblem {
                pod: "f-abc".into(),
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image \"x\"".into(),
            }],
        };
        let s = status(&function(), &o, "http://gw", Timestamp::UNIX_EPOCH);
        assert_eq!(get(&s, "Ready").status, "False");
        let d = get(&s, "Degraded");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "ImagePullBackOff"));
        assert!(d.message.contains("check spec.image"), "{}", d.message);
    }

    #[test]
    fn an_image_that_would_run_as_root_is_degraded_with_the_advice_that_fits() {
        let problem = |message: &str| Observed {
            deployments: vec![(Version::Stable, Some(deployment(1, 0)))],
            pod_problems: vec![PodProblem {
                pod: "f-abc".into(),
                reason: "CreateContainerConfigError".into(),
                message: message.into(),
            }],
        };
        let root = "container has runAsNonRoot and image will run as root (pod: \"f-abc_ns(u)\", container: function)";
        let d = get(&status(&function(), &problem(root), "http://gw", Timestamp::UNIX_EPOCH), "Degraded").clone();
        assert!(d.message.contains("non-root USER") && !d.message.contains("Secret"), "{}", d.message);
        let secret = "secret \"db\" not found";
        let d = get(&status(&function(), &problem(secret), "http://gw", Timestamp::UNIX_EPOCH), "Degraded").clone();
        assert!(d.message.contains("a Secret or key"), "{}", d.message);
    }

    #[test]
    fn a_rollout_progresses_until_its_replicas_are_available() {
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(2, 1)))], ..Default::default() };
        let p = status(&function(), &o, "http://gw", Timestamp::UNIX_EPOCH);
        let c = get(&p, "Progressing");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "RollingOut"));
        assert!(c.message.contains("2/2 replicas updated, 1/2 available"), "{}", c.message);
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(2, 2)))], ..Default::default() };
        let done = status(&function(), &o, "http://gw", Timestamp::UNIX_EPOCH);
        assert_eq!(get(&done, "Progressing").status, "False");
    }

    #[test]
    fn transition_times_stay_while_a_condition_holds() {
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(1, 1)))], ..Default::default() };
        let mut f = function();
        let first = status(&f, &o, "http://gw", Timestamp::UNIX_EPOCH);
        f.status = Some(first.clone());
        let later = Timestamp::from_second(1000).unwrap();
        assert_eq!(status(&f, &o, "http://gw", later), first, "nothing changed: same status, no write");
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(1, 0)))], ..Default::default() };
        let changed = status(&f, &o, "http://gw", later);
        assert_eq!(get(&changed, "Ready").last_transition_time, Time(later));
        assert_eq!(get(&changed, "Degraded").last_transition_time, Time(Timestamp::UNIX_EPOCH));
    }

    #[test]
    fn the_analysis_weight_is_kept_until_the_canary_image_changes() {
        let mut f = flint_api::manifest::from_yaml(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: f, namespace: ns}\n\
             spec: {image: a1, canary: {image: a2, weight: 20, analysis: {}}}\n",
        )
        .unwrap()
        .remove(0);
        let rolled_back =
            CanaryStatus { weight: 0, phase: CanaryPhase::RolledBack, message: None, image: Some("a2".into()) };
        f.status = Some(FunctionStatus { canary: Some(rolled_back.clone()), ..Default::default() });
        let o = Observed { deployments: vec![(Version::Stable, Some(deployment(1, 1)))], ..Default::default() };
        let s = status(&f, &o, "http://gw", Timestamp::UNIX_EPOCH);
        assert_eq!(s.canary, Some(rolled_back));
        let c = get(&s, "CanaryHealthy");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RolledBack"));
        f.spec.canary.as_mut().unwrap().image = "a3".into();
        let fresh = status(&f, &o, "http://gw", Timestamp::UNIX_EPOCH).canary.unwrap();
        assert_eq!((fresh.weight, fresh.phase, fresh.image.as_deref()), (20, CanaryPhase::Progressing, Some("a3")));
    }

    #[test]
    fn an_invalid_spec_says_every_problem() {
        let mut f = function();
        f.spec.scale.min = 5;
        f.spec.scale.max = 2;
        f.spec.concurrency = -1;
        let problems = f.validate().unwrap_err();
        let s = invalid(&f, &problems, "http://gw", Timestamp::UNIX_EPOCH);
        let ready = get(&s, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
        assert!(
            ready.message.contains("spec.scale.min") && ready.message.contains("spec.concurrency"),
            "{}",
            ready.message
        );
    }
}
