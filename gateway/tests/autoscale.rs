//! The autoscaler end to end in local mode, with its two sources: the gateway's in-process
//! counters, and a real Prometheus scraping the gateway every second.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Dir, Gateway, SECS_20};
use flint_testkit::{Prometheus, free_port, get, post, wait_for};
use hyper::Method;

const MINUTE: Duration = Duration::from_secs(60);
/// Short windows so a test sees whole scaling cycles in seconds.
const FAST: &[&str] =
    &["--stable-window", "6s", "--panic-window", "2s", "--scale-down-delay", "2s", "--autoscale-tick", "500ms"];

/// Each invocation takes 300 ms: with `target: 2` (concurrency), 8 callers need 4 replicas.
fn busy_function(dir: &Dir) {
    dir.function(
        "busy",
        "  image: x\n  command: [sh, -c, 'sleep 0.3; cat']\n  scale: {min: 0, max: 10, metric: concurrency, target: 2, zeroAfter: 3s}",
        &[],
    );
}

/// `callers` loops calling the function until stopped; every answer must be 200.
fn load(g: &Gateway, callers: usize) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<usize>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..callers)
        .map(|_| {
            let (url, stop) = (g.url("/function/busy"), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = post(&url, "x").await.expect("an answer");
                    assert_eq!(r.status, 200, "{}", r.text());
                    n += 1;
                }
                n
            })
        })
        .collect();
    (stop, tasks)
}

async fn replicas(g: &Gateway) -> u64 {
    let r = g.call(Method::GET, "/system/function/busy", &[], "").await;
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["replicas"].as_u64().unwrap()
}

/// A load step scales up to ceil(load / target), idleness brings it to zero after zeroAfter,
/// and a request at zero is answered.
async fn scales_with_load(g: &Gateway) {
    let (stop, tasks) = load(g, 8);
    wait_for("4 replicas under 8 callers", MINUTE, || async { (replicas(g).await == 4).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert!(t.await.unwrap() > 0);
    }
    wait_for("scale to zero after zeroAfter", MINUTE, || async { (replicas(g).await == 0).then_some(()) }).await;
    let m = g.metrics().await;
    assert!(
        m.contains(
            r#"flint_autoscaler_scaling_events_total{function_name="busy.default",version="stable",reason="to_zero"} 1"#
        ),
        "{m}"
    );
    let cold = g.call(Method::POST, "/function/busy", &[], "cold").await;
    assert_eq!((cold.status, cold.text().as_str()), (200, "cold"));
    assert!(g.process.log().contains("reason=\"panic\"") || g.process.log().contains("reason=\"scale_up\""));
}

#[tokio::test]
async fn in_process_metrics_drive_scale_up_and_scale_to_zero() {
    let dir = Dir::new("as-local");
    busy_function(&dir);
    let g = Gateway::start(&dir.0, FAST).await;
    scales_with_load(&g).await;
}

#[tokio::test]
async fn prometheus_metrics_drive_scale_up_and_scale_to_zero() {
    let dir = Dir::new("as-prom");
    busy_function(&dir);
    let port = free_port();
    let prometheus = Prometheus::start(&[format!("127.0.0.1:{port}")]).await;
    let url = prometheus.url();
    let mut args = FAST.to_vec();
    args.extend(["--prometheus-url", &url]);
    let g = Gateway::start_on(&dir.0, port, &args).await;
    scales_with_load(&g).await;
    // Before Prometheus' first scrape the autoscaler waits; after it, it reads Prometheus.
    let log = g.process.log();
    assert!(!log.contains("no metrics") || log.contains("autoscaler metrics are back"), "{log}");
}

#[tokio::test]
async fn without_metrics_the_autoscaler_keeps_the_count_and_says_so() {
    let dir = Dir::new("as-down");
    dir.function("idle", "  image: x\n  command: [cat]\n  scale: {min: 0, max: 3, zeroAfter: 1s}", &[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut args = FAST.to_vec();
    args.extend(["--prometheus-url", &dead]);
    let g = Gateway::start(&dir.0, &args).await;
    g.wait_available("idle", 1).await;
    g.process.wait_log("no metrics: keeping every function's replica count", Duration::from_secs(20)).await;
    // Well past zeroAfter: still one replica, since silence is not idleness.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = g.call(Method::GET, "/system/function/idle", &[], "").await;
    let f: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(f["replicas"], 1, "{f}");
}

/// `metric: rps` under a real request rate: 8 keep-alive callers of a fast function make far
/// more than `target` requests per second per replica, so it scales out to its maximum.
async fn rps_scales_out(g: &Gateway) {
    g.wait_available("rapid", 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop) = (g.url("/function/rapid"), stop.clone());
            tokio::spawn(async move {
                let caller = flint_testkit::Caller::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = caller.call(Method::POST, &url, &[], "x").await.expect("an answer");
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    let rapid = |g: &Gateway| {
        let url = g.url("/system/function/rapid");
        async move {
            let r = flint_testkit::get(&url).await.ok()?;
            serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["replicas"].as_u64()
        }
    };
    wait_for("rps load to scale out to 3 replicas", MINUTE, || async { (rapid(g).await? == 3).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let m = g.metrics().await;
    assert!(m.contains(r#"flint_function_arrivals_total{function_name="rapid.default",version="stable"}"#), "{m}");
}

fn rapid_function(dir: &Dir) {
    dir.function("rapid", "  image: x\n  command: [cat]\n  scale: {min: 1, max: 3, metric: rps, target: 5}", &[]);
}

#[tokio::test]
async fn rps_scaling_follows_the_request_rate_in_process_and_through_prometheus() {
    let dir = Dir::new("as-rps");
    rapid_function(&dir);
    let g = Gateway::start(&dir.0, FAST).await;
    rps_scales_out(&g).await;

    let dir = Dir::new("as-rps-prom");
    rapid_function(&dir);
    let port = free_port();
    let prometheus = Prometheus::start(&[format!("127.0.0.1:{port}")]).await;
    let url = prometheus.url();
    let mut args = FAST.to_vec();
    args.extend(["--prometheus-url", &url]);
    let g = Gateway::start_on(&dir.0, port, &args).await;
    rps_scales_out(&g).await;
}

#[tokio::test]
async fn a_trickle_of_calls_is_never_scaled_to_zero_under_it() {
    let dir = Dir::new("as-trickle");
    dir.function("trickle", "  image: x\n  command: [cat]\n  scale: {min: 0, max: 2, zeroAfter: 3s}", &[]);
    let g = Gateway::start(&dir.0, FAST).await;
    g.wait_available("trickle", 1).await;
    // One short call every 1.5 s, for twice zeroAfter and more: never in flight at a tick.
    for i in 0..8 {
        let r = g.call(Method::POST, "/function/trickle", &[], &format!("{i}")).await;
        assert_eq!((r.status, r.text()), (200, i.to_string()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let m = g.metrics().await;
    assert!(!m.contains("flint_cold_starts_total{function_name=\"trickle.default\""), "a call met a cold start: {m}");
    // Once the calls stop, zeroAfter takes it to zero.
    wait_for("scale to zero after the trickle", MINUTE, || async {
        let r = g.call(Method::GET, "/system/function/trickle", &[], "").await;
        (serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["replicas"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_count_set_by_hand_holds_for_the_scale_down_delay_then_follows_the_load() {
    let dir = Dir::new("as-hand");
    dir.function("busy", "  image: x\n  command: [cat]\n  scale: {min: 1, max: 4, zeroAfter: 1h}", &[]);
    let args =
        ["--stable-window", "2s", "--panic-window", "1s", "--scale-down-delay", "4s", "--autoscale-tick", "200ms"];
    let g = Gateway::start(&dir.0, &args).await;
    g.wait_available("busy", 1).await;
    let r = g.call(Method::POST, "/system/scale-function/busy", &[], r#"{"replicas":3}"#).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("three replicas", MINUTE, || async { (replicas(&g).await == 3).then_some(()) }).await;
    // Idle, the load asks for one; the hand-set three stay for the delay (seen from here, the
    // delay began no earlier than now).
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        assert_eq!(replicas(&g).await, 3, "lowered within the scale-down delay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("back to what the load asks for", MINUTE, || async { (replicas(&g).await == 1).then_some(()) }).await;
}

/// With the learned idle policy (its histogram's bins shrunk to half a second, so that what
/// takes hours in production takes a minute here), a function called every 4 s learns its
/// gaps: after ten of them it sits at zero between calls, yet every call finds a replica
/// pre-warmed for it. The same function with a fixed idle time of about the same budget
/// cold-starts on every call. What was learned survives a restart of the gateway.
#[tokio::test]
async fn a_function_called_on_a_rhythm_is_pre_warmed_for_each_call_and_sits_at_zero_between() {
    let dir = Dir::new("as-learned");
    let spec = |idle: &str| format!("  image: x\n  command: [cat]\n  scale: {{min: 0, max: 1, zeroAfter: 2s{idle}}}");
    dir.function("learned", &spec(", idle: {policy: learned}"), &[]);
    dir.function("fixed", &spec(""), &[]);
    let args = [
        "--stable-window",
        "6s",
        "--panic-window",
        "2s",
        "--scale-down-delay",
        "2s",
        "--autoscale-tick",
        "250ms",
        "--idle-bin",
        "500ms",
    ];
    let g = Gateway::start(&dir.0, &args).await;
    let replicas = |name: &'static str| {
        let url = g.url(&format!("/system/function/{name}"));
        async move {
            let r = get(&url).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["replicas"].as_u64().unwrap()
        }
    };
    let cold = |name: &'static str| {
        let url = g.url(&format!("/function/{name}"));
        async move {
            let r = post(&url, "x").await.unwrap();
            assert_eq!((r.status, r.text()), (200, "x".to_string()));
            r.headers.get("x-flint-cold-start").is_some()
        }
    };
    let (mut learned_cold, mut fixed_cold, mut at_zero_between) = (Vec::new(), Vec::new(), 0);
    for round in 0..18 {
        let started = tokio::time::Instant::now();
        let (l, f) = tokio::join!(cold("learned"), cold("fixed"));
        learned_cold.push(l);
        fixed_cold.push(f);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if round >= 11 && replicas("learned").await == 0 {
            at_zero_between += 1;
        }
        tokio::time::sleep_until(started + Duration::from_secs(4)).await;
    }
    // Ten gaps learned (calls 1-11), then each call finds the replica brought up for it.
    assert_eq!(learned_cold[12..], [false; 6], "learned: cold starts per call {learned_cold:?}");
    assert!(at_zero_between >= 5, "learned: at zero between calls in {at_zero_between} of 7 rounds");
    assert_eq!(fixed_cold[1..], [true; 17], "fixed: cold starts per call {fixed_cold:?}");
    let m = g.metrics().await;
    assert!(m.contains(r#"flint_autoscaler_scaling_events_total{function_name="learned.default",version="stable",reason="pre_warm"}"#), "{m}");
    // What the policy did is counted: pre-warms, those whose call came, cold starts avoided
    // (the six warm calls at least), and nothing of the kind for the fixed policy.
    let count =
        |series: &str| m.lines().find_map(|l| l.strip_prefix(series)).map_or(0.0, |v| v.trim().parse::<f64>().unwrap());
    let pre_warms = count(r#"flint_pre_warms_total{function_name="learned.default",version="stable"}"#);
    let used = count(r#"flint_pre_warms_used_total{function_name="learned.default",version="stable"}"#);
    let avoided =
        count(r#"flint_cold_starts_avoided_total{function_name="learned.default",version="stable",by="pre_warm"}"#);
    // Avoided counts only calls whose replica was ready a tick (250 ms) before they came: a
    // loaded machine may start one later than that and still serve the call warm.
    assert!(pre_warms >= 6.0 && used >= 6.0 && avoided >= 3.0, "pre-warms {pre_warms}, used {used}, avoided {avoided}");
    assert!(used <= pre_warms && avoided <= used, "pre-warms {pre_warms}, used {used}, avoided {avoided}");
    assert!(!m.contains(r#"flint_pre_warms_total{function_name="fixed.default""#), "{m}");
    // The portal shows the windows, the histogram and the next warm-up.
    let series: serde_json::Value =
        serde_json::from_slice(&get(&g.url("/system/ui/series/learned")).await.unwrap().body).unwrap();
    let view = &series["idle"][0];
    assert_eq!((view["policy"].as_str(), view["basis"].as_str()), (Some("learned"), Some("histogram")), "{view}");
    let (pre_warm, keep_alive) = (view["preWarmS"].as_f64().unwrap(), view["keepAliveS"].as_f64().unwrap());
    assert!((2.0..4.0).contains(&pre_warm) && keep_alive > pre_warm && keep_alive < 10.0, "{view}");
    let spells = view["spells"].as_u64().unwrap();
    let in_bins: u64 = view["bins"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).sum();
    assert!(spells >= 17 && in_bins == spells, "{view}");
    let (last, from) = (view["lastCall"].as_i64().unwrap(), view["warmFrom"].as_i64().unwrap());
    assert!(from >= last + 2 && from <= last + 4, "{view}");
    assert!(series["idle"][1].is_null(), "no canary, no view of one: {series}");
    let fixed: serde_json::Value =
        serde_json::from_slice(&get(&g.url("/system/ui/series/fixed")).await.unwrap().body).unwrap();
    assert!(fixed["idle"][0].is_null(), "no idle view for a fixed policy without a schedule: {fixed}");
    // Stopped gracefully, the gateway keeps every spell it learned (writes are otherwise at
    // most every 30 s: the last ones would be lost).
    let mut g = g;
    g.process.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(g.process.exit(SECS_20).await.success(), "{}", g.process.log());
    let kept = dir.0.join(".flint/idle/default_learned_stable.json");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kept).expect("the learned idle times are kept")).unwrap();
    let kept_spells: u64 = kept["idle"]["bins"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).sum();
    assert_eq!(kept_spells, spells, "every spell learned is kept at stop");
    drop(g);

    // A new gateway starts from what was learned: the second call after a restart is warm.
    let g = Gateway::start(&dir.0, &args).await;
    let call = |name: &'static str| {
        let url = g.url(&format!("/function/{name}"));
        async move { post(&url, "x").await.unwrap().headers.get("x-flint-cold-start").is_some() }
    };
    call("learned").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!call("learned").await, "the restarted gateway forgot what it had learned");
}

/// A scheduled minimum read in a time zone: replicas come at the window's start, stay while
/// nothing calls, serve a call warm (a cold start avoided, counted), and go at its end.
#[tokio::test]
async fn a_scheduled_minimum_holds_replicas_for_its_window_in_its_time_zone() {
    use chrono::Timelike;
    let dir = Dir::new("as-scheduled");
    // The window starts 6 s from now, read in Asia/Kolkata (UTC+5:30: a half-hour offset, so
    // a cron read in UTC would miss it), for 8 s.
    let zone: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    // Cron times are whole seconds.
    let start = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::Duration::seconds(6), 0);
    let local = start.with_timezone(&zone);
    let cron = format!("{} {} {} * * *", local.second(), local.minute(), local.hour());
    let spec = format!(
        "  image: x\n  command: [cat]\n  scale: {{min: 0, max: 3, zeroAfter: 1s, \
         schedule: [{{cron: '{cron}', min: 2, for: 8s, timeZone: Asia/Kolkata}}]}}"
    );
    dir.function("office", &spec, &[]);
    let g = Gateway::start(&dir.0, &["--autoscale-tick", "250ms"]).await;
    let state = || async {
        let r = g.call(Method::GET, "/system/function/office", &[], "").await;
        let f: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (f["replicas"].as_u64().unwrap(), f["availableReplicas"].as_u64().unwrap())
    };
    let until =
        |t: chrono::DateTime<chrono::Utc>| tokio::time::sleep((t - chrono::Utc::now()).to_std().unwrap_or_default());
    until(start - chrono::Duration::milliseconds(800)).await;
    assert_eq!(state().await, (0, 0), "before the window");
    until(start + chrono::Duration::seconds(3)).await;
    assert_eq!(state().await, (2, 2), "in the window, nothing calling");
    let series: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/ui/series/office", &[], "").await.body).unwrap();
    let view = &series["idle"][0];
    assert_eq!(view["scheduled"]["min"], 2, "{view}");
    assert_eq!(view["scheduled"]["at"].as_i64(), Some((start + chrono::Duration::seconds(8)).timestamp()), "{view}");
    assert!(view["nextScheduled"]["at"].as_i64().unwrap() > start.timestamp() + 86_000, "tomorrow: {view}");
    let r = post(&g.url("/function/office"), "x").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-flint-cold-start").is_none(), "a call in the window is warm");
    until(start + chrono::Duration::seconds(6)).await;
    assert_eq!(state().await.0, 2, "the call does not end the window");
    wait_for("the window to end and the replicas to go", SECS_20, || async { (state().await == (0, 0)).then_some(()) })
        .await;
    assert!(chrono::Utc::now() >= start + chrono::Duration::seconds(8), "gone before the window's end");
    let m = g.metrics().await;
    for series in [
        r#"flint_autoscaler_scaling_events_total{function_name="office.default",version="stable",reason="scheduled"} 1"#,
        r#"flint_cold_starts_avoided_total{function_name="office.default",version="stable",by="scheduled"} 1"#,
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }
}
