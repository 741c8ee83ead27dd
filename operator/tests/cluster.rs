//! Against a real cluster (`KUBECONFIG` set; not run by CI, which has none):
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo test -p flint-operator --test cluster -- --ignored
//! ```
//!
//! Installs the CRD, runs the controller in-process for a scratch namespace, applies a
//! Function, waits for its Deployment, Service and status, deletes it and waits for the
//! children to be garbage-collected.

use std::{sync::Arc, time::Duration};

use flint_api::Function;
use flint_operator::{controller, metrics::Metrics};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..120 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test -p flint-operator --test cluster -- --ignored"]
async fn a_function_becomes_a_deployment_and_a_service_and_goes_away_with_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.expect("KUBECONFIG points at a cluster");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "functions.flint.dev",
        &PatchParams::apply("flint-test").force(),
        &Patch::Apply(flint_api::crd::definition()),
    )
    .await
    .unwrap();
    eventually("the CRD to be established", || async {
        let crd = crds.get("functions.flint.dev").await.ok()?;
        crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
    })
    .await;

    let ns = format!("flint-test-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&PostParams::default(), &namespace).await.unwrap();

    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        "http://gateway".into(),
        "test".into(),
    ));
    let running = tokio::spawn(controller::run(ctx, vec![ns.clone()]));

    let functions: Api<Function> = Api::namespaced(client.clone(), &ns);
    let f = flint_api::manifest::from_yaml(&format!(
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {{name: hello, namespace: {ns}}}\nspec: {{image: ghcr.io/openfaas/alpine:latest, command: [cat]}}\n"
    ))
    .unwrap()
    .remove(0);
    functions.create(&PostParams::default(), &f).await.unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    eventually("the Deployment", || async { deployments.get_opt("hello").await.ok().flatten() }).await;
    eventually("the Service", || async { services.get_opt("hello").await.ok().flatten() }).await;
    let status = eventually("the status", || async { functions.get("hello").await.ok()?.status }).await;
    assert_eq!(status.url.as_deref(), Some(format!("http://gateway/function/hello.{ns}").as_str()));

    functions.delete("hello", &DeleteParams::foreground()).await.unwrap();
    eventually("the Deployment to go", || async { deployments.get_opt("hello").await.ok()?.is_none().then_some(()) })
        .await;
    running.abort();
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
}
