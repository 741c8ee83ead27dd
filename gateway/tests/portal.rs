//! The portal (`/ui/`) in a real browser: Debian's Chromium driven by playwright-core (both
//! installed by scripts/setup.sh) through `tests/portal/drive.cjs`, against the real gateway in
//! local mode with real function processes. Screenshots of each page are saved under
//! `target/portal-screenshots/` for a reviewer to look at.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{Dir, Gateway, SECS_20};
use flint_testkit::{Caller, get, request, wait_for, workspace};
use hyper::Method;

fn screenshots(scenario: &str) -> PathBuf {
    let dir = workspace().join("target/portal-screenshots").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a scenario of `drive.cjs`; fails the test with what the browser did not see.
async fn drive(g: &Gateway, scenario: &str, credentials: Option<(&str, &str)>) -> PathBuf {
    let shots = screenshots(scenario);
    let playwright = workspace().join(".tools/node_modules/playwright-core");
    assert!(playwright.is_dir(), "{} is missing: run scripts/setup.sh (scripts/test does)", playwright.display());
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(workspace().join("gateway/tests/portal/drive.cjs"))
        .env("GATEWAY", g.url(""))
        .env("SHOTS", &shots)
        .env("PLAYWRIGHT", &playwright)
        .env("CHROMIUM", "/usr/bin/chromium")
        .env("SCENARIO", scenario)
        .kill_on_drop(true);
    if let Some((user, password)) = credentials {
        cmd.env("USER_NAME", user).env("PASSWORD", password);
    }
    let out =
        tokio::time::timeout(Duration::from_secs(180), cmd.output()).await.expect("the browser run ended").unwrap();
    assert!(
        out.status.success(),
        "the browser run failed ({}):\n{}{}\nscreenshots in {}\ngateway log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        shots.display(),
        g.process.log()
    );
    shots
}

fn assert_png(shots: &std::path::Path, name: &str) {
    let bytes = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_default();
    assert!(bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"), "{name}.png is not a screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_invoke_and_watch_functions_in_the_browser() {
    let dir = Dir::new("portal");
    dir.function("shout", "  image: x\n  command: [tr, a-z, A-Z]", &[]);
    dir.function(
        "busy",
        "  image: x\n  command: [sh, -c, 'sleep 0.2; cat']\n  scale: {min: 1, max: 4, metric: concurrency, target: 1, zeroAfter: 1h}",
        &[],
    );
    dir.function(
        "risky",
        "  image: x\n  command: [sh, -c, 'if [ \"$FAIL\" = 1 ]; then exit 1; fi; echo ok']\n  \
         canary: {image: x2, weight: 50, env: [{name: FAIL, value: '1'}], analysis: {interval: 1s, minRequests: 5}}",
        &[],
    );
    dir.function("resting", "  image: x\n  command: [cat]\n  paused: true\n  throttle: {rate: 5}", &[]);
    // A timer every 20 minutes with the learned policy, and office hours: what a gateway
    // learned before (its file, as local mode keeps it) is what the page shows.
    dir.function(
        "nightly",
        "  image: x\n  command: [cat]\n  scale: {min: 0, idle: {policy: learned}, \
         schedule: [{cron: '55 8 * * 1-5', min: 2, for: 9h, timeZone: Europe/Berlin}]}",
        &[],
    );
    let mut bins = vec![0u32; 240];
    (bins[19], bins[20], bins[3]) = (12, 30, 1);
    let kept =
        serde_json::json!({"image": "x", "idle": {"bin_ms": 60_000, "bins": bins, "longer": 0, "recent_long": []}});
    std::fs::create_dir_all(dir.0.join(".flint/idle")).unwrap();
    std::fs::write(dir.0.join(".flint/idle/default_nightly_stable.json"), kept.to_string()).unwrap();
    let g = Gateway::start(
        &dir.0,
        &["--autoscale-tick", "200ms", "--panic-window", "3s", "--stable-window", "6s", "--scale-down-delay", "2s"],
    )
    .await;
    g.wait_available("shout", 1).await;
    g.wait_available("busy", 1).await;

    // Load: `busy` scales out, then back in once it stops; `risky`'s canary fails its analysis.
    let load: Vec<_> = (0..6)
        .map(|_| {
            let url = g.url("/function/busy");
            tokio::spawn(async move {
                let caller = Caller::new();
                let until = tokio::time::Instant::now() + Duration::from_secs(4);
                while tokio::time::Instant::now() < until {
                    let _ = caller.call(Method::POST, &url, &[], "x").await;
                }
            })
        })
        .collect();
    for _ in 0..40 {
        let _ = request(Method::GET, &g.url("/function/risky"), &[], String::new()).await;
    }
    for l in load {
        l.await.unwrap();
    }
    let url = g.url("/system/function/busy");
    wait_for("busy to scale back in", SECS_20, || async {
        let v: serde_json::Value = serde_json::from_slice(&get(&url).await.ok()?.body).ok()?;
        (v["replicas"] == 1).then_some(())
    })
    .await;

    let shots = drive(&g, "main", None).await;
    for name in ["list", "deploy-refused", "function-echo", "function-busy", "function-risky", "function-nightly"] {
        assert_png(&shots, name);
    }
    // What the browser did, seen from the API: echo was deployed, invoked, then deleted.
    assert_eq!(get(&g.url("/system/function/echo")).await.unwrap().status, 404);
    assert!(g.process.log().contains("deployed through the API"), "{}", g.process.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_basic_auth_the_portal_and_its_json_refuse_requests_without_credentials() {
    let secrets = Dir::new("portal-auth-secrets");
    std::fs::write(secrets.0.join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(secrets.0.join("basic-auth-password"), "s3cret\n").unwrap();
    let dir = Dir::new("portal-auth");
    dir.function("shout", "  image: x\n  command: [tr, a-z, A-Z]", &[]);
    let g = Gateway::start(&dir.0, &["--basic-auth", "--secret-mount-path", secrets.0.to_str().unwrap()]).await;
    let basic = "Basic YWRtaW46czNjcmV0"; // admin:s3cret
    for path in ["/ui/", "/ui/app.js", "/ui/uPlot.iife.min.js", "/system/ui/functions", "/system/ui/series/shout"] {
        let r = request(Method::GET, &g.url(path), &[], String::new()).await.unwrap();
        assert_eq!(r.status, 401, "{path} without credentials");
        assert!(r.headers.contains_key("www-authenticate"), "{path}: the browser must be asked");
        let r = request(Method::GET, &g.url(path), &[("authorization", basic)], String::new()).await.unwrap();
        assert_eq!(r.status, 200, "{path} with credentials: {}", r.text());
    }
    let shots = drive(&g, "auth", Some(("admin", "s3cret"))).await;
    assert_png(&shots, "list-with-auth");
    let shots = drive(&g, "zoom", Some(("admin", "s3cret"))).await;
    assert_png(&shots, "list-at-200-percent");
    assert_png(&shots, "function-at-200-percent");
}

#[tokio::test]
async fn the_portal_serves_its_files_and_nothing_else() {
    let dir = Dir::new("portal-files");
    let g = Gateway::start(&dir.0, &[]).await;
    let r = get(&g.url("/ui/")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().contains("<script src=\"app.js\">"), "{}", r.text());
    let r = get(&g.url("/ui")).await.unwrap();
    assert_eq!((r.status, r.headers["location"].to_str().unwrap()), (308, "/ui/"));
    assert_eq!(get(&g.url("/ui/../Cargo.toml")).await.unwrap().status, 404);
    assert_eq!(get(&g.url("/system/ui/series/nope")).await.unwrap().status, 404);
}
