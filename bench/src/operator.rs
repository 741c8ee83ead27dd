//! The operator's costs at scale: desired-state computation for many Functions, and the memory
//! its cache of Functions takes (a kube-runtime reflector store, as the controller keeps one).

use std::time::Instant;

use flint_api::Function;
use flint_operator::{
    resources,
    status::{self, Observed},
};
use flint_testkit::rss;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{reflector, watcher};

fn functions(n: usize) -> Vec<Function> {
    (0..n)
        .map(|i| {
            let canary = if i % 5 == 0 { "\n  canary: {image: acme/fn:2, weight: 10}" } else { "" };
            let yaml = format!(
                "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: fn-{i}, namespace: ns-{}, uid: u-{i}, generation: 1}}\n\
                 spec:\n  image: acme/fn:1\n  command: [python3, handler.py]\n  env: [{{name: A, value: '1'}}, {{name: B, value: '2'}}]\n  \
                 labels: {{team: t{}}}\n  resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n  scale: {{min: 0, max: 10}}{canary}\n",
                i % 20,
                i % 7
            );
            flint_api::manifest::from_yaml(&yaml).unwrap().remove(0)
        })
        .collect()
}

pub fn run(n: usize) {
    // Memory first, from a fresh process: nothing freed yet that the cache could reuse.
    let me = nix::unistd::Pid::this();
    let before = rss(me);
    let (store, mut writer) = reflector::store::<Function>();
    for f in functions(n) {
        writer.apply_watcher_event(&watcher::Event::Apply(f));
    }
    let grown = rss(me).saturating_sub(before);
    println!(
        "cache of {} Functions (reflector store): {:.2} MiB RSS growth, {:.1} KiB per Function",
        store.len(),
        grown as f64 / 1048576.0,
        grown as f64 / 1024.0 / n as f64
    );

    let all = functions(n);
    let started = Instant::now();
    let mut objects = 0;
    for f in &all {
        let mut observed = Observed::default();
        for v in resources::versions(f) {
            let d = resources::desired_deployment(f, v);
            let s = resources::desired_service(f, v);
            objects += 2;
            std::hint::black_box(&s);
            observed.deployments.push((v, Some(d.create)));
        }
        std::hint::black_box(status::status(f, &observed, "http://gw", Timestamp::now()));
    }
    let elapsed = started.elapsed();
    println!(
        "desired state for {n} Functions ({objects} objects + status): {:.1} ms total, {:.1} us per Function",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}
