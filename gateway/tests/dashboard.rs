//! The Grafana dashboard shipped in the chart: after some load in local mode (successes,
//! failures, a cold start, a canary, a function with the learned idle policy and a schedule),
//! every panel's PromQL, run against a real Prometheus scraping the gateway, returns data.

mod common;

use std::time::Duration;

use common::{Dir, Gateway};
use flint_testkit::{Prometheus, free_port, get, wait_for};
use hyper::Method;

fn panels() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/flint/dashboards/flint-functions.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().replace("$function", ".*")))
        })
        .collect()
}

async fn series(prometheus: &str, promql: &str) -> usize {
    let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
    let Ok(r) = get(&format!("{prometheus}/api/v1/query?{query}")).await else { return 0 };
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn every_dashboard_panel_returns_data_after_some_load() {
    let dir = Dir::new("dashboard");
    dir.function(
        "shop",
        "  image: x\n  command: [sh, -c, 'echo $VERSION']\n  env: [{name: VERSION, value: stable}]\n  scale: {min: 0, max: 3}\n  \
         canary: {image: x2, weight: 50, env: [{name: VERSION, value: canary}], analysis: {interval: 1s, minRequests: 1000000}}",
        &[],
    );
    dir.function("flaky", "  image: x\n  command: [sh, -c, 'exit 1']", &[]);
    // The idle policy's counters start at zero for a version that has the policy or a schedule.
    dir.function(
        "office",
        "  image: x\n  command: [cat]\n  scale: {min: 0, idle: {policy: learned}, \
         schedule: [{cron: '0 9 * * 1-5', min: 1, for: 8h, timeZone: Europe/Paris}]}",
        &[],
    );
    let port = free_port();
    let prometheus = Prometheus::start(&[format!("127.0.0.1:{port}")]).await;
    let g = Gateway::start_on(&dir.0, port, &["--autoscale-tick", "200ms", "--nats-url", "auto"]).await;
    g.wait_available("shop", 2).await;
    g.wait_available("flaky", 1).await;
    // A cold start: stable to zero, then a request forced to it.
    assert_eq!(g.call(Method::POST, "/system/scale-function/shop", &[], r#"{"replicas":0}"#).await.status, 202);
    let url = g.url("/system/function/shop");
    wait_for("shop's stable version at zero", Duration::from_secs(20), || async {
        let v: serde_json::Value = serde_json::from_slice(&get(&url).await.ok()?.body).ok()?;
        (v["replicas"] == 1).then_some(())
    })
    .await;
    assert_eq!(g.call(Method::GET, "/function/shop", &[("x-flint-version", "stable")], "").await.status, 200);

    let panels = panels();
    assert!(panels.len() >= 8, "{panels:?}");
    assert!(panels.iter().any(|(_, e)| e.contains("flint_cold_starts_avoided_total")), "{panels:?}");
    let base = prometheus.url();
    wait_for("every panel to have data", Duration::from_secs(60), || async {
        for _ in 0..20 {
            g.call(Method::GET, "/function/shop", &[], "").await;
            g.call(Method::GET, "/function/flaky", &[], "").await;
        }
        assert_eq!(g.call(Method::POST, "/async-function/shop", &[], "later").await.status, 202);
        let mut empty = Vec::new();
        for (title, expr) in &panels {
            if series(&base, expr).await == 0 {
                empty.push(title.clone());
            }
        }
        if !empty.is_empty() {
            eprintln!("panels without data yet: {empty:?}");
        }
        empty.is_empty().then_some(())
    })
    .await;
}
