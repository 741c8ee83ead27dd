//! The OpenFaaS management API (`/system/*`), same paths, JSON shapes and status codes, so
//! `faas-cli` works against Flint: list, deploy, update, delete, describe, scale, info,
//! namespaces, logs. Bodies are read whole up to 1 MiB; a malformed one is refused naming the
//! field, an invalid Function with every problem.

pub mod types;
mod ui;

use std::sync::Arc;

use bytes::Bytes;
use flint_http::{Body, BoxError};
use futures::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use serde::de::DeserializeOwned;

use self::types::{DeleteRequest, FunctionDeployment, FunctionStatus, ScaleRequest};
use crate::{
    metrics::Metrics,
    provider::{LogQuery, Provider, ProviderError, Version},
    reply,
};

const MAX_JSON: usize = 1 << 20;

pub struct Api {
    pub provider: Arc<dyn Provider>,
    pub metrics: Arc<Metrics>,
    pub namespaces: crate::namespace::Namespaces,
    /// For what each function's throttle holds now.
    pub invoker: Arc<crate::invoke::Invoker>,
}

type Reply = Response<Body>;

impl Api {
    /// `path` is what follows `/system/`.
    pub async fn handle(&self, req: Request<Incoming>, path: &str) -> Reply {
        let result = match (req.method().clone(), path) {
            (Method::GET, "functions") => self.list(&req).await,
            (Method::POST, "functions") => self.deploy(req, false).await,
            (Method::PUT, "functions") => self.deploy(req, true).await,
            (Method::DELETE, "functions") => self.delete(req).await,
            (Method::GET, "info") => Ok(self.info()),
            (Method::GET, "namespaces") => {
                self.provider.namespaces().await.map(|ns| reply::json(StatusCode::OK, &ns)).map_err(error)
            }
            (Method::GET, "logs") => self.logs(&req).await,
            (Method::GET, "ui/functions") => self.ui_functions(&req).await,
            (Method::GET, p) if p.starts_with("ui/series/") => self.ui_series(&req, &p["ui/series/".len()..]).await,
            (Method::GET, p) if p.starts_with("function/") => self.get(&req, &p["function/".len()..]).await,
            (Method::POST, p) if p.starts_with("scale-function/") => {
                self.scale(req, &p["scale-function/".len()..]).await
            }
            (_, "functions" | "info" | "namespaces" | "logs") => {
                return reply::text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{} is not allowed on /system/{path}", req.method()),
                );
            }
            _ => return reply::text(StatusCode::NOT_FOUND, format!("no such API: /system/{path}")),
        };
        result.unwrap_or_else(|e| e)
    }

    /// The namespace meant by a `namespace` query parameter or JSON field (none: the default).
    fn resolve(&self, given: Option<&str>) -> String {
        self.namespaces.resolve(&*self.provider, given).to_string()
    }

    fn namespace(&self, req: &Request<Incoming>) -> String {
        self.resolve(query(req, "namespace").as_deref())
    }

    async fn list(&self, req: &Request<Incoming>) -> Result<Reply, Reply> {
        let namespace = self.namespace(req);
        let all = self.provider.list(&namespace).await.map_err(error)?;
        let statuses: Vec<FunctionStatus> = all.iter().map(|d| self.status(d)).collect();
        Ok(reply::json(StatusCode::OK, &statuses))
    }

    async fn get(&self, req: &Request<Incoming>, name: &str) -> Result<Reply, Reply> {
        let (name, namespace) = match name.split_once('.') {
            Some((n, ns)) => (n.to_string(), self.resolve(Some(ns))),
            None => (name.to_string(), self.namespace(req)),
        };
        let d = self.provider.get(&namespace, &name).await.map_err(error)?;
        Ok(reply::json(StatusCode::OK, &self.status(&d)))
    }

    fn status(&self, d: &crate::provider::Deployed) -> FunctionStatus {
        let f = &d.function.metadata;
        let label = format!("{}.{}", f.name.as_deref().unwrap_or_default(), f.namespace.as_deref().unwrap_or_default());
        FunctionStatus::of(d, self.metrics.invocation_count(&label) as f64, self.invoker.throttle_usage(&label))
    }

    async fn deploy(&self, req: Request<Incoming>, update: bool) -> Result<Reply, Reply> {
        let mut deployment: FunctionDeployment = read_json(req).await?;
        deployment.namespace = self.resolve(Some(&deployment.namespace));
        let function = deployment.into_function(self.provider.default_namespace()).map_err(invalid)?;
        let name = function.metadata.name.clone().unwrap_or_default();
        if update { self.provider.update(function).await } else { self.provider.deploy(function).await }
            .map_err(error)?;
        tracing::info!(function = %name, update, "deployed through the API");
        Ok(reply::empty(StatusCode::ACCEPTED))
    }

    async fn delete(&self, req: Request<Incoming>) -> Result<Reply, Reply> {
        let r: DeleteRequest = read_json(req).await?;
        let namespace = self.resolve(Some(&r.namespace));
        self.provider.delete(&namespace, &r.function_name).await.map_err(error)?;
        tracing::info!(function = %r.function_name, %namespace, "deleted through the API");
        Ok(reply::empty(StatusCode::ACCEPTED))
    }

    async fn scale(&self, req: Request<Incoming>, name: &str) -> Result<Reply, Reply> {
        let default = self.namespace(&req);
        let r: ScaleRequest = read_json(req).await?;
        if !r.service_name.is_empty() && r.service_name != name {
            return Err(reply::text(
                StatusCode::BAD_REQUEST,
                format!("serviceName: {:?} differs from the function in the path ({name:?})", r.service_name),
            ));
        }
        let namespace = if r.namespace.is_empty() { default } else { self.resolve(Some(&r.namespace)) };
        let replicas = u32::try_from(r.replicas)
            .map_err(|_| reply::text(StatusCode::BAD_REQUEST, format!("replicas: {} is too many", r.replicas)))?;
        self.provider.scale(&namespace, name, Version::Stable, replicas).await.map_err(error)?;
        Ok(reply::empty(StatusCode::ACCEPTED))
    }

    fn info(&self) -> Reply {
        let version = env!("CARGO_PKG_VERSION");
        reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "provider": {
                    "provider": format!("flint-{}", self.provider.name()),
                    "orchestration": if self.provider.name() == "local" { "local" } else { "kubernetes" },
                    "version": { "release": version, "sha": option_env!("FLINT_GIT_SHA").unwrap_or("") },
                },
                "version": { "release": version, "sha": option_env!("FLINT_GIT_SHA").unwrap_or(""), "commit_message": "" },
                "arch": std::env::consts::ARCH,
            }),
        )
    }

    async fn logs(&self, req: &Request<Incoming>) -> Result<Reply, Reply> {
        let bad = |m: String| reply::text(StatusCode::UNPROCESSABLE_ENTITY, m);
        let name = query(req, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("name: required (the function whose logs to read)".into()))?;
        let tail = match query(req, "tail").filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match t.parse::<i64>() {
                Ok(n) if n < 0 => None,
                Ok(n) => Some(n as usize),
                Err(_) => return Err(bad(format!("tail: {t:?} is not a number"))),
            },
        };
        let since = match query(req, "since").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse().map_err(|e| bad(format!("since: {s:?} is not an RFC 3339 time: {e}")))?),
        };
        let follow = query(req, "follow").is_some_and(|f| f == "true" || f == "1");
        let q = LogQuery { name, namespace: self.namespace(req), tail, follow, since };
        let lines = self.provider.logs(q).await.map_err(error)?;
        let frames = lines.map(|m| {
            let mut line = serde_json::to_vec(&m).expect("log messages serialize");
            line.push(b'\n');
            Ok::<_, BoxError>(hyper::body::Frame::data(Bytes::from(line)))
        });
        let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson"));
        Ok(response)
    }
}

/// The last value of `key` in the query string, decoded.
fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == key).map(|(_, v)| v.into_owned()).last()
}

/// Reads a JSON body of at most 1 MiB; a malformed one is answered 400 naming the field.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let body = Limited::new(req.into_body(), MAX_JSON).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            reply::text(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {MAX_JSON} bytes"))
        } else {
            reply::text(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"))
        }
    })?;
    let bytes = body.to_bytes();
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." { format!("invalid JSON: {inner}") } else { format!("{path}: {inner}") };
        reply::text(StatusCode::BAD_REQUEST, message)
    })
}

fn invalid(e: flint_api::Invalid) -> Reply {
    reply::text(StatusCode::BAD_REQUEST, format!("invalid function: {e}"))
}

fn error(e: ProviderError) -> Reply {
    let status = match &e {
        ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
        ProviderError::AlreadyExists(_) => StatusCode::CONFLICT,
        ProviderError::Invalid(_) => StatusCode::BAD_REQUEST,
        ProviderError::Backend(_) => StatusCode::BAD_GATEWAY,
        ProviderError::Forbidden(..) => StatusCode::FORBIDDEN,
        ProviderError::NotOurs(_) => StatusCode::CONFLICT,
    };
    match e {
        ProviderError::Invalid(i) => invalid(i),
        e => reply::text(status, e.to_string()),
    }
}
