//! The canary split in local mode, over real replicas: each version says which it is.

mod common;

use std::sync::Arc;

use common::{Dir, Gateway};
use hyper::Method;

fn canary_function(dir: &Dir, name: &str, weight: u8, sticky: &str) {
    dir.function(
        name,
        &format!(
            "  image: x\n  command: [sh, -c, 'echo $VERSION']\n  env: [{{name: VERSION, value: stable}}]\n  \
             canary: {{image: x2, weight: {weight}, env: [{{name: VERSION, value: canary}}]{sticky}}}"
        ),
        &[],
    );
}

/// Percentage of `n` requests answered by the canary, sent 16 at a time.
async fn canary_share(
    g: &Arc<Gateway>,
    name: &str,
    n: usize,
    headers: fn(usize) -> Vec<(&'static str, String)>,
) -> f64 {
    let mut canary = 0;
    for batch in (0..n).collect::<Vec<_>>().chunks(16) {
        let calls: Vec<_> = batch
            .iter()
            .map(|&i| {
                let (g, path) = (g.clone(), format!("/function/{name}"));
                tokio::spawn(async move {
                    let h = headers(i);
                    let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    g.call(Method::GET, &path, &refs, "").await
                })
            })
            .collect();
        for c in calls {
            let r = c.await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            if r.text().trim() == "canary" {
                canary += 1;
            }
        }
    }
    canary as f64 * 100.0 / n as f64
}

#[tokio::test]
async fn two_thousand_requests_split_by_weight_and_the_header_forces_a_version() {
    let dir = Dir::new("canary");
    for w in [0, 10, 50, 90, 100] {
        canary_function(&dir, &format!("w{w}"), w, "");
    }
    let g = Arc::new(Gateway::start(&dir.0, &["--autoscale", "false"]).await);
    for w in [0, 10, 50, 90, 100] {
        g.wait_available(&format!("w{w}"), 2).await;
    }
    for w in [10, 50, 90] {
        let got = canary_share(&g, &format!("w{w}"), 2000, |_| vec![]).await;
        assert!((got - w as f64).abs() <= 3.0, "weight {w}: {got}% went to the canary");
    }
    assert_eq!(canary_share(&g, "w0", 300, |_| vec![]).await, 0.0);
    assert_eq!(canary_share(&g, "w100", 300, |_| vec![]).await, 100.0);
    assert_eq!(canary_share(&g, "w0", 50, |_| vec![("x-flint-version", "canary".into())]).await, 100.0);
    assert_eq!(canary_share(&g, "w100", 50, |_| vec![("x-flint-version", "stable".into())]).await, 0.0);
    let m = g.metrics().await;
    assert!(
        m.contains(r#"flint_function_requests_total{function_name="w50.default",version="canary",code="200"}"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_sticky_caller_always_meets_the_same_version() {
    let dir = Dir::new("sticky");
    canary_function(&dir, "sticky", 50, ", sticky: {header: X-User}");
    let g = Arc::new(Gateway::start(&dir.0, &["--autoscale", "false"]).await);
    g.wait_available("sticky", 2).await;
    let mut seen = std::collections::HashMap::new();
    for round in 0..5 {
        for user in 0..40 {
            let r = g.call(Method::GET, "/function/sticky", &[("x-user", &format!("u{user}"))], "").await;
            let version = r.text().trim().to_string();
            let first = seen.entry(user).or_insert_with(|| version.clone());
            assert_eq!(*first, version, "user u{user} moved in round {round}");
        }
    }
    let on_canary = seen.values().filter(|v| *v == "canary").count();
    assert!((8..=32).contains(&on_canary), "{on_canary} of 40 users on a 50% canary");
}

/// Calls `name` from 4 callers until `until` holds; returns (requests, canary 5xx answers).
async fn load_until(g: &Arc<Gateway>, name: &str, until: impl Fn(String) -> bool) -> (usize, usize) {
    let (mut total, mut failed) = (0, 0);
    for _ in 0..2000 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let (g, path) = (g.clone(), format!("/function/{name}"));
                tokio::spawn(async move { g.call(Method::GET, &path, &[], "").await })
            })
            .collect();
        for c in calls {
            let r = c.await.unwrap();
            total += 1;
            failed += (r.status >= 500) as usize;
        }
        if until(g.metrics().await) {
            return (total, failed);
        }
    }
    panic!("the condition never held; metrics:\n{}", g.metrics().await);
}

/// A canary that answers every request with 500, judged every `interval`.
fn failing_canary(dir: &Dir, interval: &str) {
    dir.function(
        "risky",
        &format!(
            "  image: x\n  command: [sh, -c, 'if [ \"$FAIL\" = 1 ]; then exit 1; fi; echo ok']\n  \
             canary:\n    image: x2\n    weight: 20\n    env: [{{name: FAIL, value: '1'}}]\n    \
             analysis: {{interval: {interval}, stepWeight: 10, maxWeight: 50, minSuccessRate: 99, minRequests: 5}}"
        ),
        &[],
    );
}

/// Loads `risky` until its canary is at 0; checks it was rolled back for its success rate and
/// never got more than its 20 % of the requests (with room for chance).
async fn rolled_back(g: &Arc<Gateway>) {
    g.wait_available("risky", 2).await;
    let at_zero = |m: String| m.contains(r#"flint_canary_weight{function_name="risky.default"} 0"#);
    let (total, failed) = load_until(g, "risky", at_zero).await;
    let log = g.process.log();
    assert!(log.contains("rolled back: success rate 0.00% (minimum 99%)"), "{log}");
    assert!(!log.contains("healthy:"), "the failing canary was widened before its rollback: {log}");
    assert!(failed as f64 <= total as f64 * 0.25 + 3.0, "{failed} of {total} requests reached the failing canary");
    for _ in 0..100 {
        assert_eq!(
            g.call(Method::GET, "/function/risky", &[], "").await.status,
            200,
            "a request still reached the canary"
        );
    }
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_at_its_first_check() {
    let dir = Dir::new("rollback");
    failing_canary(&dir, "1s");
    let g = Arc::new(Gateway::start(&dir.0, &["--autoscale-tick", "200ms"]).await);
    rolled_back(&g).await;
}

#[tokio::test]
async fn a_healthy_canary_steps_up_to_its_maximum_weight() {
    let dir = Dir::new("promote");
    dir.function(
        "steady",
        "  image: x\n  command: [cat]\n  \
         canary:\n    image: x2\n    weight: 20\n    analysis: {interval: 500ms, stepWeight: 20, maxWeight: 60, minSuccessRate: 99, minRequests: 3}",
        &[],
    );
    let g = Arc::new(Gateway::start(&dir.0, &["--autoscale-tick", "200ms"]).await);
    g.wait_available("steady", 2).await;
    let at_max = |m: String| m.contains(r#"flint_canary_weight{function_name="steady.default"} 60"#);
    let (_, failed) = load_until(&g, "steady", at_max).await;
    assert_eq!(failed, 0);
    let log = g.process.log();
    assert!(log.contains("phase=Succeeded"), "{log}");
    assert!(log.contains("weight=40"), "it went through 40: {log}");
}

#[tokio::test]
async fn removing_the_canary_sends_everything_to_stable_without_a_failed_request() {
    let dir = Dir::new("remove");
    canary_function(&dir, "switch", 50, "");
    let g = Arc::new(Gateway::start(&dir.0, &["--autoscale", "false"]).await);
    g.wait_available("switch", 2).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (g, stop, answers) = (g.clone(), stop.clone(), answers.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = g.call(Method::GET, "/function/switch", &[], "").await;
                    assert_eq!(r.status, 200, "a request failed during the switch: {}", r.text());
                    answers.lock().unwrap().push(r.text().trim().to_string());
                }
            })
        })
        .collect();
    let seen = |what: &'static str| {
        let answers = answers.clone();
        move || {
            let answers = answers.clone();
            async move { answers.lock().unwrap().iter().any(|a| a == what).then_some(()) }
        }
    };
    let secs_10 = std::time::Duration::from_secs(10);
    flint_testkit::wait_for("the canary to serve before the switch", secs_10, seen("canary")).await;
    // The user removes the canary from the manifest and tells local mode to reload.
    dir.function(
        "switch",
        "  image: x\n  command: [sh, -c, 'echo $VERSION']\n  env: [{name: VERSION, value: stable}]",
        &[],
    );
    g.process.signal(nix::sys::signal::Signal::SIGHUP);
    g.process.wait_log("reloaded the functions folder", secs_10).await;
    g.wait_available("switch", 1).await;
    // Keep the load on until 40 more answers came after the canary's replica was gone.
    let after_switch = answers.lock().unwrap().len() + 40;
    flint_testkit::wait_for("load across the switch", secs_10, || {
        let answers = answers.clone();
        async move { (answers.lock().unwrap().len() >= after_switch).then_some(()) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let after: Vec<_> = (0..100).map(|_| g.call(Method::GET, "/function/switch", &[], "")).collect();
    for r in futures::future::join_all(after).await {
        assert_eq!((r.status, r.text().trim()), (200, "stable"));
    }
}

#[tokio::test]
async fn with_prometheus_a_failing_canary_is_rolled_back_from_its_scraped_numbers() {
    let dir = Dir::new("rollback-prom");
    failing_canary(&dir, "3s");
    let port = flint_testkit::free_port();
    let prometheus = flint_testkit::Prometheus::start(&[format!("127.0.0.1:{port}")]).await;
    let url = prometheus.url();
    let g = Arc::new(Gateway::start_on(&dir.0, port, &["--autoscale-tick", "200ms", "--prometheus-url", &url]).await);
    rolled_back(&g).await;
}
