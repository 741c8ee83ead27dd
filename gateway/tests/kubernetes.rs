//! The gateway's kubernetes provider against a real API server (`flint_testkit::kube_api`;
//! skipped, and reported by `scripts/test`, without one). The gateway and the operator run as
//! processes, each as the chart's ServiceAccount with the chart's RBAC. No kubelet runs here,
//! so pods never start: what is checked is what the gateway asks of the API server.

mod common;

use std::time::Duration;

use common::cluster::{FAST_AUTOSCALER, cluster, create_function, functions};
use flint_testkit::cluster::MINUTE;
use flint_testkit::{free_port, wait_for};
use hyper::Method;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn the_openfaas_rest_api_manages_function_resources() {
    let Some(c) = cluster("rest").await else { return };
    let g = c.gateway("gateway-0", &[]).await;
    let ns = c.ns.name.clone();

    // Deploy (faas-cli deploy), as OpenFaaS JSON.
    let deploy = json!({"service": "echo", "image": "ghcr.io/acme/echo:1", "envProcess": "cat",
                        "labels": {"com.openfaas.scale.max": "4"}});
    let r = g.call(Method::POST, "/system/functions", deploy).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let f = functions(&c).get("echo").await.unwrap();
    assert_eq!((f.spec.image.as_str(), f.spec.scale.max), ("ghcr.io/acme/echo:1", 4));
    wait_for("the operator's Deployment", MINUTE, || async { c.replicas("echo").await }).await;

    // Listed, with the replica count the Deployment has.
    let r = g.call(Method::GET, &format!("/system/functions?namespace={ns}"), serde_json::Value::Null).await;
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list[0]["name"], "echo", "{list}");

    // Flint-only fields set by kubectl survive a faas-cli update.
    let flint_only = json!({"spec": {"timeout": "2m", "concurrency": 3, "scale": {"metric": "rps", "zeroAfter": "10m"},
                                      "triggers": [{"cron": {"schedule": "@hourly"}}]}});
    functions(&c).patch("echo", &PatchParams::default(), &Patch::Merge(&flint_only)).await.unwrap();
    let update = json!({"service": "echo", "image": "ghcr.io/acme/echo:2", "envProcess": "cat"});
    let r = g.call(Method::PUT, "/system/functions", update).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let f = functions(&c).get("echo").await.unwrap();
    assert_eq!(f.spec.image, "ghcr.io/acme/echo:2");
    assert_eq!(flint_api::duration::format(f.spec.timeout.get()), "2m");
    assert_eq!((f.spec.concurrency, f.spec.scale.metric), (3, flint_api::ScaleMetric::Rps));
    assert_eq!(flint_api::duration::format(f.spec.scale.zero_after.get()), "10m");
    assert_eq!(f.spec.triggers.len(), 1);

    // Scale through the Deployment's scale subresource.
    let r = g.call(Method::POST, "/system/scale-function/echo", json!({"replicas": 3})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("3 replicas", MINUTE, || async { (c.replicas("echo").await? == 3).then_some(()) }).await;

    // Other namespaces are refused, naming the rule.
    let elsewhere = json!({"service": "x", "image": "x:1", "namespace": "kube-system"});
    let r = g.call(Method::POST, "/system/functions", elsewhere).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("--function-namespaces"), "{}", r.text());

    // Delete.
    let r = g.call(Method::DELETE, "/system/functions", json!({"functionName": "echo"})).await;
    assert!(r.status == 202 || r.status == 200, "{} {}", r.status, r.text());
    wait_for("the Function to go", MINUTE, || async {
        functions(&c).get_opt("echo").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_at_zero_scales_the_deployment_and_waits_its_cold_start_timeout() {
    let Some(c) = cluster("cold").await else { return };
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "2s", "--autoscale", "false"]).await;
    create_function(&c, "sleepy", "{min: 0}").await;
    wait_for("the Deployment", MINUTE, || async { c.replicas("sleepy").await }).await;
    let r = g.call(Method::POST, "/system/scale-function/sleepy", json!({"replicas": 0})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("zero replicas", MINUTE, || async { (c.replicas("sleepy").await? == 0).then_some(()) }).await;
    let r = g.call(Method::POST, "/function/sleepy", json!("hi")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("did not become ready in 2s"), "{}", r.text());
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(c.replicas("sleepy").await, Some(1), "the request did not scale the Deployment from zero");
}

/// Two installations of Flint share a cluster: each gateway serves only its own function
/// namespaces, so it neither routes, lists nor fires the other's functions.
#[tokio::test]
async fn a_gateway_serves_only_its_function_namespaces() {
    let Some(c) = cluster("scope").await else { return };
    let elsewhere = c.api.namespace("elsewhere").await;
    let g = c.gateway("gateway-0", &["--cold-start-timeout", "2s", "--autoscale", "false"]).await;
    let every_second = "triggers: [{cron: {schedule: '* * * * * *'}}]";
    for ns in [&c.ns.name, &elsewhere.name] {
        let yaml = format!(
            "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: ticker, namespace: {ns}}}\n\
             spec: {{image: ghcr.io/acme/ticker:1, scale: {{min: 0}}, {every_second}}}\n"
        );
        let f = flint_api::manifest::from_yaml(&yaml).unwrap().remove(0);
        kube::Api::namespaced(c.api.client(), ns).create(&Default::default(), &f).await.unwrap();
    }
    // Its own function's trigger fires (and scales it from zero: no pod starts here, so the
    // call ends at the cold-start timeout); the other installation's never does.
    let own = format!("/function/ticker.{}/", c.ns.name);
    wait_for("its own cron trigger to fire", MINUTE, || async {
        g.process.log().lines().any(|l| l.contains("cron trigger") && l.contains(&own)).then_some(())
    })
    .await;
    let log = g.process.log();
    assert!(!log.contains(&format!("ticker.{}", elsewhere.name)), "fired another installation's trigger:\n{log}");

    let r = g.call(Method::POST, &format!("/function/ticker.{}", elsewhere.name), json!("hi")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r =
        g.call(Method::GET, &format!("/system/functions?namespace={}", elsewhere.name), serde_json::Value::Null).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("--function-namespaces"), "{}", r.text());
    let r = g.call(Method::GET, "/system/namespaces", serde_json::Value::Null).await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(), json!([c.ns.name]));
}

#[tokio::test]
async fn of_two_gateways_only_the_lease_holder_autoscales() {
    let Some(c) = cluster("lease").await else { return };
    let a = c.gateway("gateway-a", &FAST_AUTOSCALER).await;
    let b = c.gateway("gateway-b", &FAST_AUTOSCALER).await;
    create_function(&c, "idle", "{min: 0, zeroAfter: 2s}").await;
    // Idle: the one autoscaler takes it to zero.
    wait_for("scale to zero by the Lease holder", MINUTE, || async { (c.replicas("idle").await? == 0).then_some(()) })
        .await;
    let holders: Vec<&str> = [("gateway-a", &a), ("gateway-b", &b)]
        .into_iter()
        .filter(|(_, g)| g.process.log().contains("holding the Lease"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(holders.len(), 1, "Lease holders: {holders:?}");
    let scalers: Vec<&str> = [("gateway-a", &a), ("gateway-b", &b)]
        .into_iter()
        .filter(|(_, g)| g.process.log().contains("scaling"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(scalers, holders, "a gateway without the Lease scaled");
}

/// Defects issue, 5: a gateway that is not the Lease holder scales a function from zero for a
/// request waiting there; the holder must see that request (through Prometheus, which scrapes
/// both) and keep the replica while it waits, however long the cold start takes.
#[tokio::test]
async fn the_lease_holder_keeps_a_cold_start_begun_at_another_gateway() {
    let Some(c) = cluster("shared").await else { return };
    let ports = [free_port(), free_port()];
    let prometheus = flint_testkit::Prometheus::start(&ports.map(|p| format!("127.0.0.1:{p}"))).await;
    let url = prometheus.url();
    let args = [&FAST_AUTOSCALER[..], &["--cold-start-timeout", "20s", "--prometheus-url", &url]].concat();
    let a = c.gateway_on("gateway-a", ports[0], &args).await;
    let b = c.gateway_on("gateway-b", ports[1], &args).await;
    create_function(&c, "slow", "{min: 0, zeroAfter: 4s}").await;
    wait_for("scale to zero by the Lease holder", MINUTE, || async { (c.replicas("slow").await? == 0).then_some(()) })
        .await;
    let (holder, other) = if a.process.log().contains("holding the Lease") { (&a, &b) } else { (&b, &a) };
    assert!(holder.process.log().contains("holding the Lease"), "neither gateway holds the Lease");

    // No kubelet runs here, so the cold start never ends: the request waits its whole 20 s,
    // five times zeroAfter, while the holder decides every 200 ms.
    let call = tokio::spawn({
        let url = other.url("/function/slow");
        async move { flint_testkit::request(Method::POST, &url, &[], "hi".to_string()).await.unwrap() }
    });
    wait_for("the other gateway to scale from zero", MINUTE, || async {
        (c.replicas("slow").await? == 1).then_some(())
    })
    .await;
    let mut lowest = i32::MAX;
    while !call.is_finished() {
        // A failed read is no sample (not zero replicas).
        if let Some(n) = c.replicas("slow").await {
            lowest = lowest.min(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = call.await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("did not become ready in 20s"), "{}", r.text());
    let log = holder.process.log();
    let scaling: Vec<&str> = log.lines().filter(|l| l.contains("scaling")).collect();
    assert_eq!(
        lowest,
        1,
        "the Lease holder took the replica away while a request waited at the other gateway:\n{}",
        scaling.join("\n")
    );
    // Once nothing waits, the holder takes it to zero again.
    wait_for("scale to zero after the wait", MINUTE, || async { (c.replicas("slow").await? == 0).then_some(()) }).await;
}

#[tokio::test]
async fn a_count_set_by_hand_holds_for_the_scale_down_delay_on_kubernetes_too() {
    let Some(c) = cluster("by-hand").await else { return };
    let tuning =
        ["--autoscale-tick", "200ms", "--stable-window", "2s", "--panic-window", "1s", "--scale-down-delay", "4s"];
    let g = c.gateway("gateway-0", &tuning).await;
    create_function(&c, "steady", "{min: 1, max: 4, zeroAfter: 1h}").await;
    wait_for("the operator's Deployment", MINUTE, || async { (c.replicas("steady").await? == 1).then_some(()) }).await;

    let r = g.call(Method::POST, "/system/scale-function/steady", json!({"replicas": 3})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("3 replicas", MINUTE, || async { (c.replicas("steady").await? == 3).then_some(()) }).await;
    // No load asks for one; the hand-set three stay for the delay (which began no earlier than now).
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        assert_eq!(c.replicas("steady").await, Some(3), "lowered within the scale-down delay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("back to what the load asks for", MINUTE, || async { (c.replicas("steady").await? == 1).then_some(()) })
        .await;
}

/// A scheduled minimum (read in a time zone) sets the Deployment's replicas through the real
/// API server for exactly its window; the CRD with its CEL rule over the schedule is accepted.
#[tokio::test]
async fn a_scheduled_minimum_drives_the_deployment_for_its_window() {
    use chrono::Timelike;
    let Some(c) = cluster("scheduled").await else { return };
    let g = c.gateway("gateway-0", &["--autoscale-tick", "200ms"]).await;
    let zone: chrono_tz::Tz = "America/St_Johns".parse().unwrap(); // UTC-3:30 (or -2:30)
    // Cron times are whole seconds.
    let start = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::Duration::seconds(10), 0);
    let local = start.with_timezone(&zone);
    let cron = format!("{} {} {} * * *", local.second(), local.minute(), local.hour());
    let scale = format!(
        "{{min: 0, max: 4, zeroAfter: 1s, schedule: [{{cron: '{cron}', min: 3, for: 10s, timeZone: America/St_Johns}}]}}"
    );
    create_function(&c, "office", &scale).await;
    wait_for("the operator's Deployment at zero", MINUTE, || async {
        (c.replicas("office").await? == 0).then_some(())
    })
    .await;
    let until =
        |t: chrono::DateTime<chrono::Utc>| tokio::time::sleep((t - chrono::Utc::now()).to_std().unwrap_or_default());
    until(start - chrono::Duration::seconds(1)).await;
    assert_eq!(c.replicas("office").await, Some(0), "before the window");
    wait_for("3 replicas in the window", Duration::from_secs(5), || async {
        (c.replicas("office").await? == 3).then_some(())
    })
    .await;
    let opened = chrono::Utc::now();
    assert!(
        opened >= start && opened < start + chrono::Duration::seconds(3),
        "opened at {opened}, window from {start}"
    );
    until(start + chrono::Duration::seconds(9)).await;
    assert_eq!(c.replicas("office").await, Some(3), "held for the whole window, nothing calling");
    wait_for("zero after the window", Duration::from_secs(15), || async {
        (c.replicas("office").await? == 0).then_some(())
    })
    .await;
    assert!(chrono::Utc::now() >= start + chrono::Duration::seconds(10), "gone before the window's end");
    let m = g.call(Method::GET, "/metrics", json!(null)).await.text();
    let scaled = format!(
        r#"flint_autoscaler_scaling_events_total{{function_name="office.{}",version="stable",reason="scheduled"}} 1"#,
        c.ns.name
    );
    assert!(m.contains(&scaled), "{scaled} missing:\n{m}");
}
