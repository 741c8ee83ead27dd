//! The operator at scale on a real API server (`flint_testkit::kube_api`: `KUBEBUILDER_ASSETS`
//! or `FLINT_TEST_KUBECONFIG`): N Functions created at once; how long until every Deployment
//! and Service exists and every status is written; the operator's memory; its API requests per
//! Function; and what it writes once everything is settled (nothing, it should be).

use std::{collections::BTreeMap, time::Duration};

use flint_api::Function;
use flint_testkit::{free_port, kube_api::TestApi, rss};
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use tokio::time::Instant;

pub async fn run(n: usize, idle: Duration) {
    let Some(api) = TestApi::get().await else {
        println!("# operator on a real API server: skipped (set KUBEBUILDER_ASSETS or FLINT_TEST_KUBECONFIG)");
        return;
    };
    api.install_crd(&flint_api::crd::definition()).await;
    let ns = api.namespace("bench").await;
    let release = "bench";
    api.install_chart_rbac(release, &ns.name, &[]).await;
    let telemetry = free_port();
    let operator =
        api.start_operator(&crate::release_bin("flint-operator"), &ns.name, release, "bench", telemetry, &[]);
    let client = api.client();
    let functions: Api<Function> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    // Wait for the operator to lead before the clock starts.
    flint_testkit::wait_for("the operator to serve its metrics", Duration::from_secs(60), || async {
        flint_testkit::get(&format!("http://127.0.0.1:{telemetry}/metrics")).await.ok().filter(|r| r.status == 200)
    })
    .await;

    // Watched, not polled: listing a thousand Functions every 250 ms loaded the very API server
    // the operator was waiting on (the floor below is not watched at all).
    let started = Instant::now();
    let progress = tokio::spawn(watch_progress(
        (functions.clone(), deployments.clone(), services.clone()),
        (n, n + n / 5),
        started,
    ));
    let params = PostParams { field_manager: Some("flint-bench".into()), ..Default::default() };
    let ns_name = ns.name.clone();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (functions, params, ns_name) = (functions.clone(), params.clone(), ns_name.clone());
            async move {
                let mut f = function(i, &ns_name);
                (f.metadata.namespace, f.metadata.uid) = (None, None);
                functions.create(&params, &f).await.unwrap();
            }
        })
        .await;
    let created = started.elapsed();
    let children = n + n / 5;
    let Ok(Ok((all_children, all_statuses))) = tokio::time::timeout(Duration::from_secs(600), progress).await else {
        println!("# gave up after 600s");
        return;
    };
    let (all_children, all_statuses) = (Some(all_children), Some(all_statuses));
    let requests = api_requests(telemetry).await;
    let total: f64 = requests.values().sum();

    // Settled: the controller-manager has finished with the Deployments too (their status
    // writes wake the operator, rightly), seen as 5 s in which no Function or Deployment changed.
    let versions = || async {
        let lp = ListParams::default();
        let mut v: Vec<String> = functions
            .list_metadata(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|f| f.metadata.resource_version.unwrap_or_default())
            .collect();
        v.extend(
            deployments
                .list_metadata(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|d| d.metadata.resource_version.unwrap_or_default()),
        );
        v
    };
    let (mut last, mut still_since) = (versions().await, Instant::now());
    while still_since.elapsed() < Duration::from_secs(5) && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = versions().await;
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    let settled = started.elapsed() - Duration::from_secs(5);
    let settled_rss = rss(operator.pid());

    // Settled: nothing changes, so nothing should be written.
    let idle_since = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(idle).await;
    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    let mut managers: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |meta: &ObjectMeta| {
        for m in meta.managed_fields.iter().flatten() {
            let manager = m.manager.clone().unwrap_or_else(|| "(none)".into());
            *managers.entry(manager.clone()).or_default() += 1;
            if m.time.as_ref().is_some_and(|t| t.0 > idle_since) {
                *writes.entry(manager).or_default() += 1;
            }
        }
    };
    let lp = ListParams::default();
    functions.list(&lp).await.unwrap().items.iter().for_each(|f| count(&f.metadata));
    deployments.list_metadata(&lp).await.unwrap().items.iter().for_each(|d| count(&d.metadata));
    services.list_metadata(&lp).await.unwrap().items.iter().for_each(|s| count(&s.metadata));
    let idle_requests: f64 = api_requests(telemetry).await.values().sum::<f64>() - total;

    println!("# operator on a real API server: {n} Functions ({children} Deployments and as many Services)");
    println!("created in {:.1}s (32 at a time)", created.as_secs_f64());
    println!("every Deployment and Service after {:.1}s (goal <= 10s)", all_children.unwrap().as_secs_f64());
    println!("every status after {:.1}s (goal <= 10s)", all_statuses.unwrap().as_secs_f64());
    println!("settled (no Function or Deployment changing) after {:.1}s", settled.as_secs_f64());
    println!("operator RSS once settled: {:.1} MiB (goal <= 50 MiB)", settled_rss as f64 / 1048576.0);
    println!("API requests: {total:.0} ({:.1} per Function): {requests:?}", total / n as f64);
    println!(
        "after {}s settled: {idle_requests:.0} more API requests; writes by field manager: {writes:?} (goal: none by flint-operator)",
        idle.as_secs()
    );
    println!("field managers on the objects: {managers:?}");
    drop(operator);

    // The floor: the same children written straight to the API server, as fast as the
    // operator may (32 at a time), in a namespace of their own with no operator.
    let floor_ns = api.namespace("bench-floor").await;
    let floor = floor(&client, &floor_ns.name, n).await;
    let (operator, said) = (all_children.unwrap(), all_statuses.unwrap());
    println!(
        "floor: the same {children} Deployments and {children} Services written straight to the API server in {:.1}s; \
         the operator's (from the first Function's create) every child after {:.1}s is {:.2}x it (goal <= 1.2x), \
         every status after {:.1}s {:.2}x",
        floor.as_secs_f64(),
        operator.as_secs_f64(),
        operator.as_secs_f64() / floor.as_secs_f64(),
        said.as_secs_f64(),
        said.as_secs_f64() / floor.as_secs_f64()
    );
}

/// Writes the Deployments and Services the operator would make for `n` Functions (owner
/// references left out: no Function owns them here), 32 at a time; how long it took.
async fn floor(client: &kube::Client, namespace: &str, n: usize) -> Duration {
    use flint_operator::resources::{self, Version};
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let children: Vec<(Deployment, Service)> = (0..n)
        .flat_map(|i| {
            let f = function(i, namespace);
            let versions =
                if f.spec.canary.is_some() { vec![Version::Stable, Version::Canary] } else { vec![Version::Stable] };
            versions.into_iter().map(move |v| {
                let (mut d, mut s) =
                    (resources::desired_deployment(&f, v).create, resources::desired_service(&f, v).create);
                d.metadata.owner_references = None;
                s.metadata.owner_references = None;
                (d, s)
            })
        })
        .collect();
    let started = Instant::now();
    let params = PostParams { field_manager: Some("flint-bench".into()), ..Default::default() };
    futures::stream::iter(children)
        .for_each_concurrent(32, |(d, s)| {
            let (deployments, services, params) = (deployments.clone(), services.clone(), params.clone());
            async move {
                deployments.create(&params, &d).await.unwrap();
                services.create(&params, &s).await.unwrap();
            }
        })
        .await;
    started.elapsed()
}

/// Watches until every child exists and every Function has a status; when each was first true,
/// measured from `started`.
async fn watch_progress(
    (functions, deployments, services): (Api<Function>, Api<Deployment>, Api<Service>),
    (n, children): (usize, usize),
    started: Instant,
) -> (Duration, Duration) {
    use futures::stream::{self, StreamExt};
    use kube::runtime::{WatchStreamExt, watcher};
    enum Seen {
        /// A Function's name, and whether it has a status.
        Function(String, bool),
        Deployment(String),
        Service(String),
    }
    let config = || watcher::Config::default().any_semantic();
    let name = |meta: &ObjectMeta| meta.name.clone().unwrap_or_default();
    let seen = stream::select_all([
        watcher(functions, config())
            .applied_objects()
            .map(|f| {
                let f = f.unwrap();
                let said = f.status.as_ref().is_some_and(|s| s.observed_generation.is_some());
                Seen::Function(f.metadata.name.unwrap_or_default(), said)
            })
            .boxed(),
        watcher(deployments.clone(), config())
            .applied_objects()
            .map(move |d| Seen::Deployment(name(&d.unwrap().metadata)))
            .boxed(),
        watcher(services, config()).applied_objects().map(move |s| Seen::Service(name(&s.unwrap().metadata))).boxed(),
    ]);
    let (mut with_status, mut ds, mut ss) =
        (std::collections::HashSet::new(), std::collections::HashSet::new(), std::collections::HashSet::new());
    let (mut all_children, mut all_statuses) = (None, None);
    futures::pin_mut!(seen);
    while let Some(event) = seen.next().await {
        match event {
            Seen::Function(f, true) => _ = with_status.insert(f),
            Seen::Function(_, false) => {}
            Seen::Deployment(d) => _ = ds.insert(d),
            Seen::Service(s) => _ = ss.insert(s),
        }
        if all_children.is_none() && ds.len() >= children && ss.len() >= children {
            all_children = Some(started.elapsed());
        }
        if all_statuses.is_none() && with_status.len() >= n {
            all_statuses = Some(started.elapsed());
        }
        if let (Some(c), Some(s)) = (all_children, all_statuses) {
            return (c, s);
        }
    }
    unreachable!("watches end only when dropped")
}

/// The bench's `i`th Function: one in five has a canary.
fn function(i: usize, namespace: &str) -> Function {
    let canary = if i.is_multiple_of(5) { ", canary: {image: acme/fn:2, weight: 10}" } else { "" };
    let yaml = format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: fn-{i}, namespace: {namespace}, uid: u-{i}}}\n\
         spec: {{image: acme/fn:1, command: [python3, handler.py], scale: {{min: 0, max: 10}}{canary}}}\n"
    );
    flint_api::manifest::from_yaml(&yaml).unwrap().remove(0)
}

/// The operator's `flint_operator_api_requests_total` by method.
async fn api_requests(port: u16) -> BTreeMap<String, f64> {
    let text = flint_testkit::get(&format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text();
    text.lines()
        .filter_map(|l| l.strip_prefix("flint_operator_api_requests_total{method=\""))
        .filter_map(|l| {
            let (method, rest) = l.split_once("\"}")?;
            Some((method.to_string(), rest.trim().parse().ok()?))
        })
        .collect()
}
