//! Runs `wrk` (Debian's package) and reads its summary.

use std::{process::Command, time::Duration};

#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

pub fn run(url: &str, connections: usize, duration: Duration) -> Load {
    run_with(url, connections, duration, &[])
}

/// The same with each request a `POST` of `body`.
pub fn post(url: &str, connections: usize, duration: Duration, body: &str) -> Load {
    let script = std::env::temp_dir().join(format!("flint-bench-post-{}.lua", std::process::id()));
    std::fs::write(&script, format!("wrk.method = \"POST\"\nwrk.body = {body:?}\n")).unwrap();
    let load = run_with(url, connections, duration, &["-s", script.to_str().unwrap()]);
    let _ = std::fs::remove_file(script);
    load
}

fn run_with(url: &str, connections: usize, duration: Duration, extra: &[&str]) -> Load {
    let threads = connections.min(2);
    let out = Command::new("wrk")
        .args(["--latency", "-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(extra)
        .args(["-d", &format!("{}s", duration.as_secs()), url])
        .output()
        .expect("wrk is installed (scripts/bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text)
        .unwrap_or_else(|| panic!("cannot read wrk's output:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn parse(text: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [n, "requests", "in", ..] => load.requests = n.parse().ok()?,
            ["Requests/sec:", v] => load.rps = v.parse().ok()?,
            ["50.000%", v] | ["50%", v] => load.p50_us = micros(v)?,
            ["99.000%", v] | ["99%", v] => load.p99_us = micros(v)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest.iter().filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    (load.rps > 0.0).then_some(load)
}

fn micros(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_summaries() {
        let text = "  Latency Distribution\n     50%  120.00us\n     75%  1.50ms\n     99%    2.00ms\n  \
                    Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\n\
                    206172 requests in 5.00s, 24.12MB read\nRequests/sec:  41234.56\n";
        let load = super::parse(text).unwrap();
        assert_eq!(load.requests, 206172);
        assert_eq!(load.rps, 41234.56);
        assert_eq!(load.p50_us, 120.0);
        assert_eq!(load.p99_us, 2000.0);
        assert_eq!(load.errors, 8);
    }
}
