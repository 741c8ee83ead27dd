//! A function's front-door limits under real load (local mode, real processes): the request
//! rate with its burst, the in-flight cap across replicas with its queue, and `paused`, each
//! answered with its documented status and body, counted by reason, and changed without a
//! restart.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Dir, Gateway};
use flint_testkit::{Caller, Reply, get, wait_for};
use hyper::Method;
use tokio::time::Instant;

/// Calls `path` from `callers` tasks, back to back, for `secs`; every reply, in order of arrival.
async fn load(g: &Gateway, path: &str, callers: usize, secs: Duration) -> Vec<Reply> {
    let replies = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + secs;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (url, replies) = (g.url(path), replies.clone());
            tokio::spawn(async move {
                let caller = Caller::new();
                while Instant::now() < until {
                    let r = caller.call(Method::POST, &url, &[], "x").await.unwrap();
                    replies.lock().unwrap().push(r);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(replies).unwrap().into_inner().unwrap()
}

/// The value of one series in the metrics text; 0 when absent.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

fn throttled(metrics: &str, function: &str, reason: &str) -> u64 {
    sample(metrics, &format!("flint_function_throttled_total{{function_name=\"{function}\",reason=\"{reason}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_admits_its_rate_and_answers_the_rest_429_with_retry_after() {
    let dir = Dir::new("throttle-rate");
    dir.function("rated", "  image: x\n  command: [cat]\n  scale: {min: 1}\n  throttle: {rate: 20, burst: 5}", &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("rated", 1).await;

    let replies = load(&g, "/function/rated", 4, Duration::from_secs(10)).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    // 10 s at 20 a second, plus the burst the bucket started with.
    let expected = 10 * 20 + 5;
    assert!(
        (expected * 9 / 10..=expected * 11 / 10).contains(&ok),
        "{ok} requests admitted in 10 s; expected {expected} ± 10 %"
    );
    assert!(refused.len() > ok, "the callers asked for more than the rate ({} refused)", refused.len());
    for r in &refused {
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.text().contains("rate of 20 requests per second (spec.throttle.rate)"), "{}", r.text());
        assert_eq!(r.headers["retry-after"], "1");
    }
    let metrics = g.metrics().await;
    assert_eq!(throttled(&metrics, "rated.default", "rate"), refused.len() as u64);
    // Refusals are not invocations: the invocation count is what the function answered.
    let status: serde_json::Value = serde_json::from_slice(&get(&g.url("/system/function/rated")).await.unwrap().body)
        .expect("the function's status is JSON");
    assert_eq!(status["invocationCount"].as_f64(), Some(ok as f64));
    assert_eq!((status["throttle"]["rate"].as_i64(), status["throttle"]["burst"].as_i64()), (Some(20), Some(5)));
}

/// Each call leaves a folder in `live/` while it runs and answers how many it saw: the
/// functions' own count of invocations in flight, across every replica.
const COUNTING: &str = "  image: x\n  command: [sh, -c, 'mkdir -p live; mkdir live/$$; n=$(ls live | wc -l); sleep 0.3; rmdir live/$$; echo $n']";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_in_flight_cap_holds_across_replicas_and_the_excess_waits_its_turn() {
    let dir = Dir::new("throttle-cap");
    let spec = format!(
        "{COUNTING}\n  scale: {{min: 3, max: 3}}\n  throttle: {{maxInFlight: 3, queue: 50, queueTimeout: 20s}}"
    );
    dir.function("capped", &spec, &[]);
    let g = Arc::new(Gateway::start(&dir.0, &[]).await);
    g.wait_available("capped", 3).await;

    // While 12 callers press on 3 places, the gateway shows requests queued.
    let watching = Arc::new(AtomicBool::new(true));
    let seen = {
        let (g, watching) = (g.clone(), watching.clone());
        tokio::spawn(async move {
            let mut most = (0, 0);
            while watching.load(Ordering::Relaxed) {
                let r = get(&g.url("/system/function/capped")).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let usage = (v["throttle"]["inFlight"].as_u64().unwrap(), v["throttle"]["queued"].as_u64().unwrap());
                most = (most.0.max(usage.0), most.1.max(usage.1));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            most
        })
    };
    let replies = load(&g, "/function/capped", 12, Duration::from_secs(5)).await;
    watching.store(false, Ordering::Relaxed);
    let (most_in_flight, most_queued) = seen.await.unwrap();

    let counts: Vec<u32> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            r.text().trim().parse().unwrap()
        })
        .collect();
    let most = counts.iter().max().copied().unwrap();
    assert_eq!(most, 3, "the functions saw at most {most} invocations at once; the cap is 3 and the load reaches it");
    assert!(counts.len() >= 15, "only {} calls finished in 5 s", counts.len());
    assert_eq!(most_in_flight, 3, "the gateway's count of places taken");
    assert!(most_queued >= 5, "at most {most_queued} requests were seen waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_and_a_long_wait_are_each_answered_429_saying_which() {
    let dir = Dir::new("throttle-queue");
    let spec = "  image: x\n  command: [sh, -c, 'sleep 2; echo done']\n  scale: {min: 1}\n  \
                throttle: {maxInFlight: 1, queue: 1, queueTimeout: 500ms}";
    dir.function("narrow", spec, &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("narrow", 1).await;

    let url = g.url("/function/narrow");
    let call = |body: &'static str| {
        let url = url.clone();
        tokio::spawn(async move { flint_testkit::post(&url, body).await })
    };
    let first = call("a");
    wait_for("the first call to take the one place", Duration::from_secs(10), || async {
        let r = get(&g.url("/system/function/narrow")).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        (v["throttle"]["inFlight"] == 1).then_some(())
    })
    .await;
    let waiting = call("b");
    wait_for("the second call to wait", Duration::from_secs(10), || async {
        let r = get(&g.url("/system/function/narrow")).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        (v["throttle"]["queued"] == 1).then_some(())
    })
    .await;
    let full = g.call(Method::POST, "/function/narrow", &[], "c").await;
    assert_eq!(full.status, 429);
    assert!(full.text().contains("1 more waiting (spec.throttle.queue)"), "{}", full.text());

    let waited = waiting.await.unwrap().unwrap();
    assert_eq!(waited.status, 429);
    assert!(waited.text().contains("500ms a request may wait (spec.throttle.queueTimeout)"), "{}", waited.text());
    let done = first.await.unwrap().unwrap();
    assert_eq!((done.status, done.text().trim()), (200, "done"));

    let metrics = g.metrics().await;
    assert_eq!(throttled(&metrics, "narrow.default", "queue_full"), 1);
    assert_eq!(throttled(&metrics, "narrow.default", "queue_timeout"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_function_answers_503_until_unpaused_without_a_restart() {
    let dir = Dir::new("throttle-paused");
    dir.function("held", "  image: x\n  command: [cat]\n  paused: true", &[]);
    let g = Gateway::start(&dir.0, &[]).await;

    let r = g.call(Method::POST, "/function/held", &[], "hi").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("function held.default is paused (spec.paused)"), "{}", r.text());
    let status = get(&g.url("/system/function/held")).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(v["paused"], true);
    // A refusal is not traffic: the autoscaler saw no arrival.
    let arrivals = r#"flint_function_arrivals_total{function_name="held.default",version="stable"}"#;
    assert_eq!(sample(&g.metrics().await, arrivals), 0);

    dir.function("held", "  image: x\n  command: [cat]", &[]);
    g.process.signal(nix::sys::signal::Signal::SIGHUP);
    g.process.wait_log("reloaded the functions folder", Duration::from_secs(10)).await;
    let r = g.call(Method::POST, "/function/held", &[], "hi").await;
    assert_eq!((r.status, r.text()), (200, "hi".to_string()));

    dir.function("held", "  image: x\n  command: [cat]\n  paused: true", &[]);
    g.process.signal(nix::sys::signal::Signal::SIGHUP);
    let served = std::sync::atomic::AtomicU64::new(1);
    wait_for("the pause to take effect", Duration::from_secs(10), || async {
        match g.call(Method::POST, "/function/held", &[], "hi").await.status {
            503 => Some(()),
            _ => {
                served.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    })
    .await;
    let metrics = g.metrics().await;
    assert_eq!(throttled(&metrics, "held.default", "paused"), 2);
    let served = served.load(Ordering::Relaxed);
    assert_eq!(sample(&metrics, arrivals), served, "only the calls made while unpaused arrived");
}
