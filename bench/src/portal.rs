//! `portal`: the portal's function list with 200 functions in local mode, first shown how many
//! milliseconds after the page started loading (Debian's Chromium with playwright-core, the
//! browser the portal's tests use; median of 5 fresh page loads).

use std::time::Duration;

use flint_testkit::{Spawned, free_port, get, wait_for, workspace};

use crate::release_bin;

pub async fn run(functions: usize, loads: usize) {
    let dir = std::env::temp_dir().join(format!("flint-bench-portal-{}", std::process::id()));
    crate::write_idle_functions(&dir, functions);
    let port = free_port();
    let p = port.to_string();
    let args = ["--functions-dir", dir.to_str().unwrap(), "--port", &p, "--nats-url", "off"];
    let gateway = Spawned::start(release_bin("flint-gateway").to_str().unwrap(), &args, &[("RUST_LOG", "warn")]);
    let url = format!("http://127.0.0.1:{port}/system/functions");
    wait_for("the gateway to list every function", Duration::from_secs(60), || async {
        let r = get(&url).await.ok()?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&r.body).ok()?;
        (list.len() == functions).then_some(())
    })
    .await;
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..loads {
        let out = std::process::Command::new("node")
            .arg(workspace().join("gateway/tests/portal/drive.cjs"))
            .env("GATEWAY", format!("http://127.0.0.1:{port}"))
            .env("SHOTS", std::env::temp_dir())
            .env("PLAYWRIGHT", workspace().join(".tools/node_modules/playwright-core"))
            .env("CHROMIUM", "/usr/bin/chromium")
            .env("SCENARIO", "paint")
            .output()
            .expect("node runs (scripts/setup.sh installs playwright-core and Chromium)");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|_| panic!("the browser said:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
        rows = v["rows"].as_u64().unwrap_or(0);
        times.push(v["firstPaintMs"].as_f64().unwrap_or(f64::NAN));
    }
    times.sort_by(f64::total_cmp);
    println!("# portal: the function list in Chromium, {functions} functions, {loads} fresh page loads");
    println!(
        "first shown {:.0} ms after the page started loading (median; min {:.0}, max {:.0}; goal <= 300 ms), {rows} rows",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
