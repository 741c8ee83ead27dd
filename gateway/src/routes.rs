//! The gateway's front door: `/function/*` to the invocation path, `/async-function/*` to the
//! queue, `/system/*` (behind basic auth) to the REST API, `/ui/` (behind it too) to the
//! portal, `/healthz`, `/metrics`.

use std::{net::SocketAddr, sync::Arc};

use flint_http::{Body, full};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE},
};

use crate::{auth::Credentials, invoke::Invoker, metrics::Metrics, provider::Provider, reply, rest::Api};

pub struct Gateway {
    pub accept: crate::queue::accept::Accept,
    pub invoker: Arc<Invoker>,
    pub api: Api,
    pub provider: Arc<dyn Provider>,
    pub metrics: Arc<Metrics>,
    pub auth: Option<Credentials>,
    pub auth_functions: bool,
}

impl Gateway {
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_string();
        let sync = path.strip_prefix("/function/");
        let later = path.strip_prefix("/async-function/");
        if sync.is_some() || later.is_some() {
            if self.auth_functions {
                if !self.authorized(&req) {
                    return unauthorized();
                }
                // The gateway's own credentials (which can also deploy) never reach a function.
                req.headers_mut().remove(AUTHORIZATION);
            }
            return match (sync, later) {
                (Some(target), _) => self.invoker.invoke(req, target, peer).await,
                (_, Some(target)) => self.accept.accept(req, target).await,
                _ => unreachable!("one of the two"),
            };
        }
        if let Some(api) = path.strip_prefix("/system/") {
            if !self.authorized(&req) {
                return unauthorized();
            }
            return self.api.handle(req, api).await;
        }
        if let Some(file) = path.strip_prefix("/ui") {
            if !self.authorized(&req) {
                return unauthorized();
            }
            return crate::portal::serve(file);
        }
        match path.as_str() {
            "/healthz" => match self.provider.health() {
                Ok(()) => reply::text(StatusCode::OK, "OK"),
                Err(why) => reply::text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            "/metrics" => self.metrics().await,
            _ => reply::text(StatusCode::NOT_FOUND, format!("no route for {path}: invoke functions at /function/NAME")),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        self.auth.as_ref().is_none_or(|c| c.allows(req.headers()))
    }

    async fn metrics(&self) -> Response<Body> {
        // Replica counts are read at scrape time, so they are never stale when scraped.
        self.metrics.service_count.clear();
        if let Ok(namespaces) = self.provider.namespaces().await {
            for ns in namespaces {
                for d in self.provider.list(&ns).await.unwrap_or_default() {
                    let name = format!("{}.{ns}", d.function.metadata.name.as_deref().unwrap_or_default());
                    let labels = crate::metrics::FunctionLabels { function_name: name };
                    self.metrics.service_count.get_or_create(&labels).set(d.replicas as i64);
                }
            }
        }
        let mut response = Response::new(full(self.metrics.encode()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }
}

fn unauthorized() -> Response<Body> {
    let mut response =
        reply::text(StatusCode::UNAUTHORIZED, "authentication required: use basic auth (faas-cli login)");
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Restricted\""));
    response
}
