//! The Helm chart, checked with the real `helm` (scripts/setup.sh installs it into `.tools/`):
//! it lints and renders with default values and with every optional part on, every rendered
//! object parses into its Kubernetes type, a wrong value is refused with a message, the chart's
//! CRD is the generated one, and its RBAC covers what each binary asks of the API server.

use std::path::PathBuf;

use flint_api::rbac::{GATEWAY, OPERATOR, Rule};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ConfigMap, Secret, Service, ServiceAccount},
    networking::v1::{Ingress, NetworkPolicy},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde_json::Value;

fn root() -> PathBuf {
    flint_testkit::workspace()
}

fn helm(args: &[&str]) -> std::process::Output {
    flint_testkit::helm().args(args).output().unwrap()
}

const ALL_ON: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "functionNamespaces={default,shop}",
    "--set",
    "queueWorker.replicas=2",
    "--set",
    "gateway.ingress.functionsHost=fn.example.com",
    "--set",
    "gateway.ingress.portalHost=flint.example.com",
];

fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "flint", "charts/flint", "--namespace", "flint"];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn parse<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]))
}

#[test]
fn the_chart_lints_with_defaults_and_with_everything_on() {
    for extra in [&[][..], ALL_ON] {
        let mut args = vec!["lint", "charts/flint", "--strict"];
        args.extend_from_slice(extra);
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_rendered_object_parses_into_its_kubernetes_type() {
    for extra in
        [&[][..], ALL_ON, &["--set", "prometheus.enabled=false", "--set", "prometheus.url=http://prom:9090"][..]]
    {
        let docs = render(extra);
        assert!(docs.len() >= 12, "{} objects", docs.len());
        for doc in &docs {
            let locked_down = |pod: k8s_openapi::api::core::v1::PodSpec| {
                assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
                for c in pod.containers {
                    let sc = c.security_context.unwrap();
                    assert_eq!(sc.allow_privilege_escalation, Some(false));
                    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
                }
            };
            match doc["kind"].as_str().unwrap() {
                "Deployment" => locked_down(parse::<Deployment>(doc).spec.unwrap().template.spec.unwrap()),
                "StatefulSet" => locked_down(parse::<StatefulSet>(doc).spec.unwrap().template.spec.unwrap()),
                "Service" => drop(parse::<Service>(doc)),
                "ServiceAccount" => drop(parse::<ServiceAccount>(doc)),
                "ClusterRole" => drop(parse::<ClusterRole>(doc)),
                "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(doc)),
                "Role" => drop(parse::<Role>(doc)),
                "RoleBinding" => drop(parse::<RoleBinding>(doc)),
                "Secret" => drop(parse::<Secret>(doc)),
                "ConfigMap" => drop(parse::<ConfigMap>(doc)),
                "NetworkPolicy" => drop(parse::<NetworkPolicy>(doc)),
                "Ingress" => drop(parse::<Ingress>(doc)),
                "ServiceMonitor" => assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1"),
                other => panic!("the chart renders a {other} this test does not know"),
            }
        }
    }
    let on = render(ALL_ON);
    // One per function namespace, and NATS's.
    assert_eq!(on.iter().filter(|d| d["kind"] == "NetworkPolicy").count(), 3);
    let args_of = |docs: &[Value], name: &str| {
        let d = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name).unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["args"].to_string()
    };
    // NATS in the chart; queue workers take the asynchronous calls, so the gateways leave them.
    let nats = "--nats-url=nats://flint-nats.flint.svc:4222";
    assert!(on.iter().any(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "flint-nats"));
    assert!(
        args_of(&on, "flint-gateway").contains(nats) && args_of(&on, "flint-gateway").contains("--async-worker=false")
    );
    assert!(args_of(&on, "flint-queue-worker").contains(nats), "{}", args_of(&on, "flint-queue-worker"));
    assert!(args_of(&on, "flint-queue-worker").contains("--gateway-url=http://flint-gateway.flint.svc:8080"));
    let default = render(&[]);
    assert!(
        !args_of(&default, "flint-gateway").contains("--async-worker=false"),
        "no queue workers: the gateways take the calls"
    );
    let existing = render(&["--set", "nats.enabled=false", "--set", "nats.url=nats://mq:4222"]);
    assert!(!existing.iter().any(|d| d["kind"] == "StatefulSet"));
    assert!(args_of(&existing, "flint-gateway").contains("--nats-url=nats://mq:4222"));
    let none = render(&["--set", "nats.enabled=false"]);
    assert!(args_of(&none, "flint-gateway").contains("--nats-url=off"));
    assert!(on.iter().any(|d| d["kind"] == "ServiceMonitor"));
    let off = render(&["--set", "prometheus.enabled=false", "--set", "prometheus.url=http://prom:9090"]);
    assert!(!off.iter().any(|d| d["metadata"]["name"] == "flint-prometheus"));
    let gateway = off.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "flint-gateway").unwrap();
    let args = gateway["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--prometheus-url=http://prom:9090"), "{args}");
}

#[test]
fn a_wrong_value_is_refused_with_a_message() {
    let out = helm(&["template", "flint", "charts/flint", "--set", "gateway.replicas=zero"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway/replicas"), "{err}");
    let out = helm(&["template", "flint", "charts/flint", "--set", "gateway.coldStartTimeout=soon"]);
    assert!(!out.status.success(), "a bad duration passed");
    // Two gateways without a Prometheus would each autoscale on half the traffic.
    let out = helm(&["template", "flint", "charts/flint", "--set", "prometheus.enabled=false"]);
    assert!(!out.status.success(), "two gateway replicas without Prometheus passed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("prometheus/url"));
    let one = helm(&[
        "template",
        "flint",
        "charts/flint",
        "--set",
        "prometheus.enabled=false",
        "--set",
        "gateway.replicas=1",
    ]);
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    // Queue workers with no NATS to take calls from.
    let out =
        helm(&["template", "flint", "charts/flint", "--set", "nats.enabled=false", "--set", "queueWorker.replicas=1"]);
    assert!(!out.status.success(), "queue workers without NATS passed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nats/url"));
    // Go's own forms only: a Kubernetes quantity would leave nats-server without a limit.
    let out = helm(&["template", "flint", "charts/flint", "--set", "nats.goMemLimit=450Mi"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nats/goMemLimit"), "a Kubernetes quantity passed");
    // The default namespace must be one the gateway may write functions in.
    let out = helm(&["template", "flint", "charts/flint", "--set", "gateway.functionNamespace=elsewhere"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be one of functionNamespaces"));
}

#[test]
fn the_chart_carries_the_generated_crd() {
    let chart = std::fs::read_to_string(root().join("charts/flint/crds/function.yaml")).unwrap();
    let generated = std::fs::read_to_string(root().join("crds/function.yaml")).unwrap();
    assert!(chart == generated, "charts/flint/crds/function.yaml differs from crds/function.yaml: copy it over");
}

/// Whether `rules` grant `want`.
fn covers(rules: &[PolicyRule], want: &Rule) -> bool {
    want.verbs.iter().all(|verb| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == want.group)
                && r.resources.iter().flatten().any(|res| res == want.resource)
                && r.verbs.iter().any(|v| v == verb || v == "*")
        })
    })
}

#[test]
fn the_rbac_covers_every_call_each_binary_makes() {
    let docs = render(&[]);
    let rules_of = |component: &str| -> Vec<PolicyRule> {
        docs.iter()
            .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
            .filter(|d| d["metadata"]["name"].as_str().unwrap().starts_with(&format!("flint-{component}")))
            .flat_map(|d| serde_json::from_value::<Vec<PolicyRule>>(d["rules"].clone()).unwrap())
            .collect()
    };
    for (component, wanted) in [("operator", OPERATOR), ("gateway", GATEWAY)] {
        let rules = rules_of(component);
        for want in wanted {
            assert!(
                covers(&rules, want),
                "the {component}'s RBAC lacks {:?} {} {:?}",
                want.group,
                want.resource,
                want.verbs
            );
        }
    }
}

#[test]
fn an_existing_basic_auth_secret_replaces_the_generated_one() {
    let docs = render(&["--set", "gateway.basicAuthSecret=gitops-auth"]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "flint-basic-auth"),
        "the chart still generates a password"
    );
    let gateway = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "flint-gateway").unwrap();
    let volumes = gateway["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "gitops-auth"), "{volumes:?}");
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn container(doc: &Value) -> &Value {
    &doc["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn nats_asks_for_a_login_that_only_flints_gateway_and_queue_workers_hold_and_only_they_reach_it() {
    let docs = render(ALL_ON);
    let secret = find(&docs, "Secret", "flint-nats-auth");
    assert!(secret["data"]["password"].as_str().is_some_and(|p| p.len() >= 40), "{secret}");
    let conf = find(&docs, "ConfigMap", "flint-nats")["data"]["nats.conf"].as_str().unwrap().to_string();
    assert!(conf.contains("user: $NATS_USER") && conf.contains("password: $NATS_PASSWORD"), "{conf}");
    let nats = container(find(&docs, "StatefulSet", "flint-nats"));
    assert!(nats["args"].to_string().contains("--config=/etc/nats/nats.conf"));
    assert!(nats["env"].to_string().contains("flint-nats-auth"));
    let env =
        |name: &str| nats["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
    assert_eq!((env("GOGC"), env("GOMEMLIMIT")), (Some("400".into()), Some("450MiB".into())));
    // Who holds the login: the gateway and the queue workers, nothing else.
    for doc in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let holds = container(doc)["env"].to_string().contains("flint-nats-auth");
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert_eq!(holds, matches!(name, "flint-gateway" | "flint-queue-worker"), "{name}");
    }
    let policy = find(&docs, "NetworkPolicy", "flint-nats");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "flint-nats");
    let from = policy["spec"]["ingress"][0]["from"].to_string();
    assert!(
        from.contains("flint-gateway") && from.contains("flint-queue-worker") && !from.contains("flint.dev/function"),
        "{from}"
    );
    // An existing NATS's login comes from its own Secret.
    let existing = render(&[
        "--set",
        "nats.enabled=false",
        "--set",
        "nats.url=nats://mq:4222",
        "--set",
        "nats.existingSecret=mq-login",
    ]);
    assert!(container(find(&existing, "Deployment", "flint-gateway"))["env"].to_string().contains("mq-login"));
    assert!(!existing.iter().any(|d| d["metadata"]["name"] == "flint-nats-auth"));
}

#[test]
fn the_gateway_is_told_its_installation_its_names_and_where_callbacks_may_go() {
    let docs = render(
        &ALL_ON
            .iter()
            .copied()
            .chain([
                "--set",
                "gateway.callbackAllow={10.0.0.0/8,hooks.internal}",
                "--set",
                "gateway.allowedHosts={api.example.com}",
            ])
            .collect::<Vec<_>>(),
    );
    let args = container(find(&docs, "Deployment", "flint-gateway"))["args"].to_string();
    for want in [
        "--nats-prefix=flint-flint",
        "--gateway-service=flint-gateway",
        "--allowed-hosts=flint-gateway,flint-gateway.flint,flint-gateway.flint.svc,flint-gateway.flint.svc.cluster.local,fn.example.com,flint.example.com,api.example.com",
        "--callback-allow=10.0.0.0/8,hooks.internal",
    ] {
        assert!(args.contains(want), "{want} not in {args}");
    }
    let worker = container(find(&docs, "Deployment", "flint-queue-worker"))["args"].to_string();
    assert!(worker.contains("--nats-prefix=flint-flint") && worker.contains("--callback-allow=10.0.0.0/8"), "{worker}");
    // Functions on one host name, the portal and the API on another.
    let paths = |name: &str| {
        let i = find(&docs, "Ingress", name);
        let rule = &i["spec"]["rules"][0];
        let paths: Vec<String> =
            rule["http"]["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap().to_string()).collect();
        (rule["host"].as_str().unwrap().to_string(), paths)
    };
    assert_eq!(
        paths("flint-functions"),
        ("fn.example.com".to_string(), vec!["/function/".to_string(), "/async-function/".to_string()])
    );
    assert_eq!(
        paths("flint-portal"),
        ("flint.example.com".to_string(), vec!["/ui/".to_string(), "/system/".to_string()])
    );
    assert!(!render(&[]).iter().any(|d| d["kind"] == "Ingress"));
    let out = helm(&["template", "flint", "charts/flint", "--set", "gateway.allowedHosts={bad host}"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("allowedHosts"));
}

#[test]
fn images_come_from_the_registry_and_tag_given_or_are_pinned_by_digest() {
    let docs = render(&["--set", "image.registry=registry.example.com/team", "--set", "image.tag=1.2.3"]);
    assert_eq!(
        container(find(&docs, "Deployment", "flint-gateway"))["image"],
        "registry.example.com/team/flint-gateway:1.2.3"
    );
    assert_eq!(
        container(find(&docs, "Deployment", "flint-operator"))["image"],
        "registry.example.com/team/flint-operator:1.2.3"
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = render(&["--set", &format!("image.digests.flint-gateway={digest}")]);
    assert_eq!(
        container(find(&docs, "Deployment", "flint-gateway"))["image"],
        format!("ghcr.io/flint-dev/flint-gateway@{digest}")
    );
    let operator = container(find(&docs, "Deployment", "flint-operator"))["image"].as_str().unwrap().to_string();
    assert!(operator.starts_with("ghcr.io/flint-dev/flint-operator:"), "{operator}");
    let out = helm(&["template", "flint", "charts/flint", "--set", "image.digests.flint-gateway=latest"]);
    assert!(!out.status.success(), "a digest that is not one passed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("digests"), "{}", String::from_utf8_lossy(&out.stderr));
}
