//! The gateway in local mode, end to end: real watchdog processes, real functions, real
//! sockets. Every example in `examples/` is invoked; the REST API deploys, lists, scales,
//! reads logs and deletes; auth and every bad-input case get their status.

mod common;

use std::path::PathBuf;

use base64::Engine;
use common::{Dir, Gateway, SECS_20};
use flint_testkit::{alive, children, wait_for};
use hyper::Method;
use nix::sys::signal::Signal;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

#[tokio::test]
async fn every_example_answers_in_local_mode() {
    let g = Gateway::start(&examples(), &[]).await;
    let listed: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/functions", &[], "").await.body).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        let r = g.call(Method::POST, &format!("/function/{name}"), &[], "ping-42").await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert!(r.text().contains("ping-42"), "{name} did not answer with the body: {}", r.text());
        // A body of unknown length comes chunked; one beyond what the gateway reads ahead (64 KiB)
        // reaches the function chunked, and whole all the same.
        let mut c = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
        let head = format!(
            "POST /function/{name} HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let half = "x".repeat(50_000);
        let body =
            format!("{head}{:x}\r\n{half}\r\n{:x}\r\n{half}\r\n7\r\nping-42\r\n0\r\n\r\n", half.len(), half.len());
        c.write_all(body.as_bytes()).await.unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}, chunked: {}", &answer[..answer.len().min(300)]);
        assert!(
            answer.contains("ping-42"),
            "{name} did not answer with the chunked body: {}",
            &answer[..answer.len().min(300)]
        );
    }
}

#[tokio::test]
async fn paths_queries_and_forwarding_headers_reach_the_function() {
    let dir = Dir::new("fwd");
    dir.function(
        "env",
        "  image: x\n  command: [sh, -c, 'echo \"$Http_Path|$Http_Query|$Http_X_Forwarded_For|$Http_X_Call_Id|$Http_Connection\"']",
        &[],
    );
    let g = Gateway::start(&dir.0, &[]).await;
    let r = g.call(Method::GET, "/function/env.default/a/b?x=1&y=2", &[("connection", "keep-alive")], "").await;
    assert_eq!(r.status, 200);
    let fields: Vec<String> = r.text().trim().split('|').map(String::from).collect();
    assert_eq!(fields[0], "/a/b");
    assert_eq!(fields[1], "x=1&y=2");
    assert_eq!(fields[2], "127.0.0.1");
    assert_eq!(fields[3].len(), 36, "call id {:?}", fields[3]);
    assert_eq!(fields[4], "", "a hop-by-hop header was forwarded");
    assert_eq!(r.headers["x-call-id"].to_str().unwrap(), fields[3]);
}

#[tokio::test]
async fn the_rest_api_deploys_lists_scales_logs_updates_and_deletes() {
    let dir = Dir::new("rest");
    let g = Gateway::start(&dir.0, &[]).await;
    let deploy = r#"{"service":"greeter","image":"acme/greeter:1","envProcess":"sh -c 'echo \"hello $WHO\"; cat'","envVars":{"WHO":"world"},"labels":{"com.openfaas.scale.max":"4"}}"#;
    assert_eq!(g.call(Method::POST, "/system/functions", &[], deploy).await.status, 202);
    assert_eq!(g.call(Method::POST, "/system/functions", &[], deploy).await.status, 409, "deploying twice");
    g.wait_available("greeter", 1).await;
    let r = g.call(Method::POST, "/function/greeter", &[], "!").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world\n!"));

    let list: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/functions", &[], "").await.body).unwrap();
    assert_eq!(list[0]["name"], "greeter");
    assert_eq!(list[0]["envVars"]["WHO"], "world");
    assert_eq!(list[0]["labels"]["com.openfaas.scale.max"], "4");
    assert_eq!(list[0]["invocationCount"], 1.0);

    let scale = |n: u32| format!(r#"{{"serviceName":"greeter","replicas":{n}}}"#);
    assert_eq!(g.call(Method::POST, "/system/scale-function/greeter", &[], &scale(3)).await.status, 202);
    g.wait_available("greeter", 3).await;
    let over = g.call(Method::POST, "/system/scale-function/greeter", &[], &scale(9)).await;
    assert_eq!(over.status, 400, "{}", over.text());
    assert!(over.text().contains("spec.scale.max"), "{}", over.text());

    // A watchdog writes its lines in batches, up to 20 ms after they happen (longer on a busy
    // machine): the invocation's line is waited for.
    let lines = wait_for("the invocation's line in the logs", SECS_20, || async {
        let logs = g.call(Method::GET, "/system/logs?name=greeter&tail=50", &[], "").await;
        assert_eq!(logs.status, 200);
        assert_eq!(logs.headers["content-type"], "application/x-ndjson");
        let lines: Vec<serde_json::Value> = logs.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines.iter().any(|l| l["text"].as_str().unwrap().contains("invocation")).then_some(lines)
    })
    .await;
    assert!(lines.iter().all(|l| l["name"] == "greeter" && l["instance"].as_str().unwrap().starts_with("greeter-")));

    let update = deploy.replace("world", "flint");
    assert_eq!(g.call(Method::PUT, "/system/functions", &[], &update).await.status, 202);
    wait_for("the update to serve", SECS_20, || async {
        let r = g.call(Method::POST, "/function/greeter", &[], "").await;
        assert_eq!(r.status, 200, "a request failed during the update: {}", r.text());
        (r.text() == "hello flint\n").then_some(())
    })
    .await;

    let delete = r#"{"functionName":"greeter"}"#;
    assert_eq!(g.call(Method::DELETE, "/system/functions", &[], delete).await.status, 202);
    assert_eq!(g.call(Method::GET, "/system/function/greeter", &[], "").await.status, 404);
    let gone = g.call(Method::POST, "/function/greeter", &[], "").await;
    assert_eq!(gone.status, 404);
    assert!(gone.text().contains("greeter.default"), "{}", gone.text());
    assert_eq!(g.call(Method::DELETE, "/system/functions", &[], delete).await.status, 404);
    assert_eq!(g.call(Method::PUT, "/system/functions", &[], &update).await.status, 404);
}

/// faas-cli names `openfaas-fn` (OpenFaaS's default namespace) whenever its user names none;
/// these are the requests it sends for invoke, describe, list, deploy and remove.
#[tokio::test]
async fn openfaas_clients_naming_openfaas_fn_reach_the_default_namespace() {
    let dir = Dir::new("openfaas-fn");
    dir.function("shout", "  image: x\n  command: [tr, a-z, A-Z]", &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("shout", 1).await;
    let r = g.call(Method::POST, "/function/shout.openfaas-fn", &[], "hi").await;
    assert_eq!((r.status, r.text().as_str()), (200, "HI"));
    let r = g.call(Method::GET, "/system/function/shout?namespace=openfaas-fn", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let f: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((&f["name"], &f["namespace"]), (&"shout".into(), &"default".into()));
    let r = g.call(Method::GET, "/system/functions?namespace=openfaas-fn", &[], "").await;
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list[0]["name"], "shout", "{list}");

    let deploy = r#"{"service":"echo","image":"acme/echo:1","envProcess":"cat","namespace":"openfaas-fn"}"#;
    assert_eq!(g.call(Method::POST, "/system/functions", &[], deploy).await.status, 202);
    g.wait_available("echo", 1).await;
    let r = g.call(Method::POST, "/function/echo", &[], "in default").await;
    assert_eq!((r.status, r.text().as_str()), (200, "in default"));
    let remove = r#"{"functionName":"echo","namespace":"openfaas-fn"}"#;
    assert_eq!(g.call(Method::DELETE, "/system/functions", &[], remove).await.status, 202);
    assert_eq!(g.call(Method::GET, "/system/function/echo", &[], "").await.status, 404);
    drop(g);

    // Switched off, the name means a namespace like any other.
    let g = Gateway::start(&dir.0, &["--openfaas-namespace", ""]).await;
    let r = g.call(Method::POST, "/function/shout.openfaas-fn", &[], "hi").await;
    assert_eq!(r.status, 404, "{}", r.text());
    drop(g);

    // Functions that really live in a namespace of that name are reached there.
    std::fs::write(
        dir.0.join("shout/function.yaml"),
        "apiVersion: flint.dev/v1alpha1\nkind: Function\nmetadata: {name: whisper, namespace: openfaas-fn}\nspec: {image: x, command: [tr, A-Z, a-z]}\n",
    )
    .unwrap();
    let g = Gateway::start(&dir.0, &[]).await;
    wait_for("whisper to answer", SECS_20, || async {
        let r = g.call(Method::POST, "/function/whisper.openfaas-fn", &[], "HI").await;
        (r.status == 200).then(|| assert_eq!(r.text(), "hi"))
    })
    .await;
    let r = g.call(Method::POST, "/function/shout.openfaas-fn", &[], "hi").await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn info_namespaces_and_health() {
    let dir = Dir::new("info");
    let g = Gateway::start(&dir.0, &[]).await;
    let info: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/info", &[], "").await.body).unwrap();
    assert_eq!(info["provider"]["provider"], "flint-local");
    assert!(info["version"]["release"].as_str().is_some());
    let ns: Vec<String> =
        serde_json::from_slice(&g.call(Method::GET, "/system/namespaces", &[], "").await.body).unwrap();
    assert_eq!(ns, ["default"]);
    assert_eq!(g.call(Method::GET, "/healthz", &[], "").await.status, 200);
    assert_eq!(g.call(Method::PATCH, "/system/functions", &[], "").await.status, 405);
}

#[tokio::test]
async fn basic_auth_guards_the_api_and_optionally_functions() {
    let secrets = Dir::new("auth");
    std::fs::write(secrets.0.join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(secrets.0.join("basic-auth-password"), "s3cret\n").unwrap();
    let dir = Dir::new("auth-fns");
    dir.function("echo", "  image: x\n  command: [cat]", &[]);
    dir.function("snoop", "  image: x\n  command: [sh, -c, 'echo \"auth=$Http_Authorization\"']", &[]);
    let creds =
        |u: &str, p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
    let mount = secrets.0.to_str().unwrap();

    let g = Gateway::start(&dir.0, &["--basic-auth", "--secret-mount-path", mount]).await;
    let none = g.call(Method::GET, "/system/functions", &[], "").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Basic realm=\"Flint gateway\", charset=\"UTF-8\"");
    let wrong = creds("admin", "guess");
    assert_eq!(g.call(Method::GET, "/system/functions", &[("authorization", &wrong)], "").await.status, 401);
    let right = creds("admin", "s3cret");
    assert_eq!(g.call(Method::GET, "/system/functions", &[("authorization", &right)], "").await.status, 200);
    assert_eq!(g.call(Method::POST, "/function/echo", &[], "open").await.status, 200, "functions are open by default");
    // No path reaches the API without credentials.
    for path in [
        "/system/functions",
        "/system/../system/functions",
        "/function/../system/functions",
        "//system/functions",
        "/system%2Ffunctions",
        "/SYSTEM/functions",
        "/system/scale-function/echo",
    ] {
        let r = g.call(Method::GET, path, &[], "").await;
        assert!(r.status == 401 || r.status == 404, "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("\"name\""), "{path} listed functions: {}", r.text());
    }
    // Dot segments below a function are the function's own path, not a way out of it.
    let r = g.call(Method::POST, "/function/echo/../../system/functions", &[], "from-echo").await;
    assert_eq!((r.status, r.text().as_str()), (200, "from-echo"));
    // A function's own Authorization header is its business when functions are open.
    let mine = g.call(Method::POST, "/function/snoop", &[("authorization", "Bearer user-token")], "").await;
    assert_eq!(mine.text().trim(), "auth=Bearer user-token");
    drop(g);

    let g = Gateway::start(&dir.0, &["--basic-auth", "--secret-mount-path", mount, "--auth-functions"]).await;
    assert_eq!(g.call(Method::POST, "/function/echo", &[], "x").await.status, 401);
    assert_eq!(g.call(Method::POST, "/function/echo", &[("authorization", &right)], "x").await.status, 200);
    // The gateway's credentials (which can also deploy) never reach the function.
    let seen = g.call(Method::POST, "/function/snoop", &[("authorization", &right)], "").await;
    assert_eq!((seen.status, seen.text().trim()), (200, "auth="), "the function saw the gateway's credentials");
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_message() {
    let dir = Dir::new("bad");
    dir.function("echo", "  image: x\n  command: [cat]", &[]);
    dir.function("slow", "  image: x\n  command: [sh, -c, 'sleep 30']\n  timeout: 1s", &[]);
    let g = Gateway::start(&dir.0, &["--max-body-bytes", "1000"]).await;

    let unknown = g.call(Method::GET, "/function/nope", &[], "").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.text().contains("nope.default"), "{}", unknown.text());

    let malformed = g.call(Method::POST, "/system/functions", &[], r#"{"service":"a","image":7}"#).await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.text().contains("image"), "{}", malformed.text());
    let not_json = g.call(Method::POST, "/system/functions", &[], "{nope").await;
    assert_eq!(not_json.status, 400);

    let invalid = g
        .call(
            Method::POST,
            "/system/functions",
            &[],
            r#"{"service":"Bad_Name","image":"","labels":{"com.openfaas.scale.min":"5","com.openfaas.scale.max":"2"}}"#,
        )
        .await;
    assert_eq!(invalid.status, 400);
    for field in ["metadata.name", "spec.image", "spec.scale.min"] {
        assert!(invalid.text().contains(field), "{field} missing: {}", invalid.text());
    }

    let big = "x".repeat(5000);
    let too_big = g.call(Method::POST, "/function/echo", &[], &big).await;
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    let fits = g.call(Method::POST, "/function/echo", &[], &"y".repeat(900)).await;
    assert_eq!(fits.status, 200);

    let timed_out = g.call(Method::GET, "/function/slow", &[], "").await;
    assert_eq!(timed_out.status, 504);
    assert!(timed_out.text().contains("timed out after 1s"), "{}", timed_out.text());

    let nonsense = g.call(Method::GET, "/nothing/here", &[], "").await;
    assert_eq!(nonsense.status, 404);
}

#[tokio::test]
async fn odd_requests_never_break_the_gateway() {
    let dir = Dir::new("odd");
    dir.function("echo", "  image: x\n  command: [cat]", &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    let paths = [
        "/function/",
        "/function/.",
        "/function/..",
        "/function/echo.",
        "/function/.default",
        "/function/echo..x",
        "/function/%00",
        "/function/echo/%2e%2e/%2e%2e",
        "/system/",
        "/system/function/",
        "/system/scale-function/",
        "/system/logs",
        "/system/logs?name=",
        "/system/logs?name=echo&tail=x",
        "/system/logs?name=echo&since=yesterday",
        "/function/ECHO",
        "/function/echo.other-ns",
    ];
    for path in paths {
        for method in [Method::GET, Method::POST, Method::DELETE, Method::OPTIONS] {
            let r = flint_testkit::request(method.clone(), &g.url(path), &[], "{").await;
            assert!(r.is_ok(), "{method} {path}: no answer ({r:?})");
        }
    }
    let logs = g.call(Method::GET, "/system/logs?name=echo&tail=x", &[], "").await;
    assert_eq!(logs.status, 422);
    assert_eq!(g.call(Method::POST, "/function/echo", &[], "still fine").await.text(), "still fine");
}

#[tokio::test]
async fn a_function_at_zero_starts_on_the_first_request_once_for_many() {
    let dir = Dir::new("cold");
    dir.function("cold", "  image: x\n  command: [sh, -c, 'sleep 0.2; cat']\n  scale: {min: 0, max: 5}", &[]);
    // The request path alone: the autoscaler would (rightly) add replicas under this load.
    let g = Gateway::start(&dir.0, &["--autoscale", "false"]).await;
    g.wait_available("cold", 1).await;
    assert_eq!(g.call(Method::POST, "/system/scale-function/cold", &[], r#"{"replicas":0}"#).await.status, 202);
    g.wait_available("cold", 0).await;

    let calls: Vec<_> = (0..200)
        .map(|i| {
            let url = g.url("/function/cold");
            tokio::spawn(async move { flint_testkit::post(&url, format!("req-{i}")).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        let r = c.await.unwrap().expect("a held request was dropped");
        assert_eq!((r.status, r.text()), (200, format!("req-{i}")));
    }
    let f: serde_json::Value =
        serde_json::from_slice(&g.call(Method::GET, "/system/function/cold", &[], "").await.body).unwrap();
    assert_eq!(f["replicas"], 1, "200 waiting requests must cause one scale-up: {f}");
    let m = g.metrics().await;
    assert!(m.contains(r#"flint_cold_starts_total{function_name="cold.default",version="stable"}"#), "{m}");
}

#[tokio::test]
async fn a_function_deployed_at_zero_runs_nothing_until_its_first_request() {
    let dir = Dir::new("initial");
    dir.function("idle", "  image: x\n  command: [cat]\n  scale: {initial: 0}", &[]);
    dir.function("warm", "  image: x\n  command: [cat]", &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("warm", 1).await;
    let replicas = |name: &'static str| {
        let g = &g;
        async move {
            let path = format!("/system/function/{name}");
            let f: serde_json::Value = serde_json::from_slice(&g.call(Method::GET, &path, &[], "").await.body).unwrap();
            f["replicas"].as_u64()
        }
    };
    assert_eq!(replicas("idle").await, Some(0));
    assert_eq!(children(g.process.pid()).len(), 1, "only warm's replica runs");

    let r = g.call(Method::POST, "/function/idle", &[], "first").await;
    assert_eq!((r.status, r.text()), (200, "first".to_string()));
    assert_eq!(replicas("idle").await, Some(1));
    assert_eq!(children(g.process.pid()).len(), 2);

    // Back at zero its replica goes (and with it what looked after it); called again, it comes
    // back as a new replica under a name of its own.
    let zero = r#"{"serviceName":"idle","replicas":0}"#;
    assert_eq!(g.call(Method::POST, "/system/scale-function/idle", &[], zero).await.status, 202);
    wait_for("idle's replica to stop", SECS_20, || async { (children(g.process.pid()).len() == 1).then_some(()) })
        .await;
    let r = g.call(Method::POST, "/function/idle", &[], "second").await;
    assert_eq!((r.status, r.text()), (200, "second".to_string()));
    let instances = wait_for("both replicas' invocations in the logs", SECS_20, || async {
        let logs = g.call(Method::GET, "/system/logs?name=idle&tail=50", &[], "").await.text();
        let named: std::collections::BTreeSet<String> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["text"].as_str().is_some_and(|t| t.contains("invocation")))
            .filter_map(|l| l["instance"].as_str().map(str::to_string))
            .collect();
        (named.len() == 2).then_some(named)
    })
    .await;
    assert_eq!(instances.into_iter().collect::<Vec<_>>(), ["idle-stable-1", "idle-stable-2"]);
}

#[tokio::test]
async fn a_function_that_never_gets_ready_answers_503_after_the_deadline() {
    let dir = Dir::new("never");
    // An http-mode function whose server never listens: its replicas never become ready.
    dir.function("never", "  image: x\n  command: [sleep, '600']\n  env: [{name: mode, value: http}]", &[]);
    let g = Gateway::start(&dir.0, &["--cold-start-timeout", "1s"]).await;
    let r = g.call(Method::GET, "/function/never", &[], "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.text().contains("did not become ready in 1s"), "{}", r.text());
}

#[tokio::test]
async fn crashed_replicas_are_replaced_and_requests_keep_working() {
    let dir = Dir::new("crash");
    dir.function("sturdy", "  image: x\n  command: [cat]\n  scale: {min: 2, max: 2}", &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("sturdy", 2).await;
    let before = children(g.process.pid());
    assert_eq!(before.len(), 2, "{before:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(before[0]), Signal::SIGKILL).unwrap();
    // Requests right after the crash go to the surviving replica (or are retried there).
    for i in 0..50 {
        let r = g.call(Method::POST, "/function/sturdy", &[], &format!("{i}")).await;
        assert_eq!((r.status, r.text()), (200, i.to_string()));
    }
    wait_for("the crashed replica to be replaced", SECS_20, || async {
        let now = children(g.process.pid());
        (now.len() == 2 && !now.contains(&before[0])).then_some(())
    })
    .await;
    g.wait_available("sturdy", 2).await;
}

#[tokio::test]
async fn stopping_the_gateway_finishes_requests_and_stops_every_replica() {
    let dir = Dir::new("stop");
    dir.function("slowish", "  image: x\n  command: [sh, -c, 'sleep 1; echo done']\n  scale: {min: 2, max: 2}", &[]);
    let mut g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("slowish", 2).await;
    let replicas = children(g.process.pid());
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let url = g.url("/function/slowish");
            tokio::spawn(async move { flint_testkit::post(&url, "").await })
        })
        .collect();
    wait_for("requests in flight", SECS_20, || async {
        g.metrics()
            .await
            .contains(r#"flint_function_in_flight{function_name="slowish.default",version="stable"} 6"#)
            .then_some(())
    })
    .await;
    g.process.signal(Signal::SIGTERM);
    for c in calls {
        let r = c.await.unwrap().expect("an accepted request was lost");
        assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    }
    assert_eq!(g.process.exit(SECS_20).await.code(), Some(0));
    for pid in replicas {
        assert!(!alive(pid), "replica {pid} outlived the gateway");
    }
}

#[tokio::test]
async fn a_bad_manifest_stops_the_gateway_naming_file_and_field() {
    let dir = Dir::new("badmanifest");
    dir.function("broken", "  image: x\n  command: [cat]\n  scale: {min: 3, max: 1}", &[]);
    let mut p = flint_testkit::Spawned::start(
        common::GATEWAY,
        &[
            "--functions-dir",
            dir.0.to_str().unwrap(),
            "--port",
            &flint_testkit::free_port().to_string(),
            "--watchdog",
            common::watchdog().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(p.exit(SECS_20).await.code(), Some(1));
    let log = p.log();
    assert!(
        log.contains("broken/function.yaml") && log.contains("spec.scale.min: must be <= spec.scale.max (3 > 1)"),
        "{log}"
    );
}

#[tokio::test]
async fn without_a_watchdog_a_gateway_with_functions_to_run_stops_saying_so_and_one_without_starts() {
    let dir = Dir::new("nowatchdog");
    dir.function("hello", "  image: x\n  command: [cat]", &[]);
    let args = |dir: &Dir| {
        let port = flint_testkit::free_port().to_string();
        let dir = dir.0.to_str().unwrap().to_string();
        vec![
            "--functions-dir".to_string(),
            dir,
            "--port".into(),
            port,
            "--watchdog".into(),
            "/nonexistent/watchdog".into(),
        ]
    };
    let with = args(&dir);
    let mut p =
        flint_testkit::Spawned::start(common::GATEWAY, &with.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(p.exit(SECS_20).await.code(), Some(1));
    let log = p.log();
    assert!(log.contains("hello/function.yaml") && log.contains("there is none at /nonexistent/watchdog"), "{log}");
    assert!(!log.contains("Kubernetes"), "local mode's error named Kubernetes: {log}");

    // A gateway image holds no watchdog: with no functions it serves, and refuses to deploy one.
    let empty = Dir::new("nowatchdog-empty");
    let without: Vec<String> = args(&empty).into_iter().chain(["--nats-url".into(), "off".into()]).collect();
    let port = without[3].clone();
    let _p =
        flint_testkit::Spawned::start(common::GATEWAY, &without.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let url = format!("http://127.0.0.1:{port}");
    flint_testkit::wait_for("the gateway to listen", SECS_20, || async {
        flint_testkit::get(&format!("{url}/healthz")).await.ok().filter(|r| r.status == 200)
    })
    .await;
    let r =
        flint_testkit::post(&format!("{url}/system/functions"), r#"{"service":"f","image":"x","envProcess":"cat"}"#)
            .await
            .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("there is none at /nonexistent/watchdog"), "{}", r.text());
}

#[tokio::test]
async fn on_sigterm_a_shutdown_delay_keeps_serving_while_health_says_it_is_leaving() {
    let dir = Dir::new("shutdown-delay");
    let mut g = Gateway::start(&dir.0, &["--shutdown-delay", "2s"]).await;
    g.process.signal(Signal::SIGTERM);
    let leaving = wait_for("/healthz to say the gateway is leaving", SECS_20, || async {
        flint_testkit::get(&g.url("/healthz")).await.ok().filter(|r| r.status == 503)
    })
    .await;
    assert!(leaving.text().contains("shutting down"), "{}", leaving.text());
    let r = flint_testkit::get(&g.url("/system/functions")).await.unwrap();
    assert_eq!(r.status, 200, "still serving during the delay");
    let started = std::time::Instant::now();
    assert_eq!(g.process.exit(SECS_20).await.code(), Some(0));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "stopped before the delay: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cron_triggers_invoke_the_function_through_the_gateway() {
    let dir = Dir::new("cron");
    dir.function(
        "ticker",
        "  image: x\n  command: [sh, -c, 'echo \"$Http_Path $Http_X_Flint_Trigger $(cat)\"; echo \"tick $Http_X_Flint_Cron_Time\" >&2']\n  \
         triggers: [{cron: {schedule: '* * * * * *', path: /tick, body: hello}}]",
        &[],
    );
    let g = Gateway::start(&dir.0, &[]).await;
    g.process.wait_log("cron trigger fired", SECS_20).await;
    wait_for("three scheduled invocations", SECS_20, || async {
        let f: serde_json::Value =
            serde_json::from_slice(&g.call(Method::GET, "/system/function/ticker", &[], "").await.body).ok()?;
        (f["invocationCount"].as_f64()? >= 3.0).then_some(())
    })
    .await;
    // Each call says which scheduled second it is for. A replica's output reaches the logs after
    // its answer has been counted, so they are waited for too.
    let (logs, ticks) = wait_for("three scheduled invocations in the logs", SECS_20, || async {
        let logs = g.call(Method::GET, "/system/logs?name=ticker&tail=200", &[], "").await.text();
        let ticks: Vec<String> = logs
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l).ok()?["text"]
                    .as_str()?
                    .strip_prefix("tick ")
                    .map(String::from)
            })
            .collect();
        (ticks.len() >= 3 && logs.contains("path=/tick")).then_some((logs, ticks))
    })
    .await;
    for t in &ticks {
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "not a time: {t:?}\n{logs}");
    }
    assert!(g.process.log().contains("status=200"), "{}", g.process.log());
}

/// The gateway's own calls (cron triggers; stored calls take the same door) are made in place,
/// not over a connection to its own port: a front door held full by clients that never finish
/// asking does not stop them.
#[tokio::test]
async fn cron_triggers_still_run_while_the_front_door_is_full() {
    let dir = Dir::new("cron-full");
    dir.function("ticker", "  image: x\n  command: [cat]", &[]);
    let args = ["--max-connections", "4", "--header-timeout", "60s", "--idle-timeout", "60s"];
    let g = Gateway::start(&dir.0, &args).await;
    let probe = || async {
        let mut c = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out).await;
        out
    };
    // Every place is taken by a connection that sends half a request head, once the start-up
    // check's connection has gone (so that no place frees up later).
    g.wait_no_connections().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(("127.0.0.1", g.port)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n").await.unwrap();
        held.push(c);
    }
    let refused = probe().await;
    assert!(refused.starts_with("HTTP/1.1 503"), "the door is not full: {refused}");
    // The trigger comes only now, so no connection made before the door filled can serve it.
    dir.function(
        "ticker",
        "  image: x\n  command: [cat]\n  triggers: [{cron: {schedule: '* * * * * *', path: /tick}}]",
        &[],
    );
    g.process.signal(Signal::SIGHUP);
    let fired =
        |log: &str| log.lines().filter(|l| l.contains("cron trigger fired") && l.contains("status=200")).count();
    wait_for("two scheduled calls answered 200 while the door is full", SECS_20, || async {
        (fired(&g.process.log()) >= 2).then_some(())
    })
    .await;
    assert!(probe().await.starts_with("HTTP/1.1 503"), "the door was no longer full");
    assert!(!g.process.log().contains("cron trigger failed"), "{}", g.process.log());
    drop(held);
}

#[tokio::test]
async fn an_http2_body_without_a_length_reaches_the_function_whole() {
    use http_body_util::{BodyExt, StreamBody};
    let dir = Dir::new("h2");
    dir.function("echo", "  image: x\n  command: [cat]", &[]);
    let g = Gateway::start(&dir.0, &[]).await;
    g.wait_available("echo", 1).await;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    // DATA frames with no content-length: small (kept for resending) and large (streamed).
    for size in [5_000usize, 300_000] {
        let chunks: Vec<Result<_, std::convert::Infallible>> = (0..size / 1000)
            .map(|i| Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![b'a' + (i % 26) as u8; 1000]))))
            .collect();
        let body = StreamBody::new(futures::stream::iter(chunks));
        let req = hyper::Request::post(g.url("/function/echo")).body(body).unwrap();
        assert!(req.headers().get("content-length").is_none());
        let response = client.request(req).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let got = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), size, "the function got a {}-byte body of {size}", got.len());
        assert!(got.chunks(1000).enumerate().all(|(i, c)| c.iter().all(|b| *b == b'a' + (i % 26) as u8)));
    }
}
