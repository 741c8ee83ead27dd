//! The gateway's front door: `/function/*` to the invocation path, `/async-function/*` to the
//! queue, `/system/*` (behind basic auth) to the REST API, `/ui/` (behind it too) to the
//! portal, `/healthz`, `/metrics`. Before any of them: the host must be one the gateway answers
//! and a write to the API must not come from another site (`origin`); the gateway's own
//! credential never reaches a function, and a function cannot ask a browser for it.

use std::{net::SocketAddr, sync::Arc};

use flint_http::{Body, full};
use hyper::{
    HeaderMap, Request, Response, StatusCode,
    body::Incoming,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS},
};

use crate::{auth::Credentials, invoke::Invoker, metrics::Metrics, origin, provider::Provider, reply, rest::Api};

pub struct Gateway {
    pub accept: crate::queue::accept::Accept,
    pub invoker: Arc<Invoker>,
    pub api: Api,
    pub provider: Arc<dyn Provider>,
    pub metrics: Arc<Metrics>,
    pub auth: Option<Credentials>,
    pub auth_functions: bool,
    pub hosts: origin::Hosts,
    /// Set on SIGTERM: /healthz says so, so that whatever balances to this replica stops.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Gateway {
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let host = origin::host(req.headers(), req.uri());
        if !self.hosts.allows(host) {
            return reply::text(
                StatusCode::FORBIDDEN,
                format!(
                    "this gateway does not answer for the host {:?}: add it to --allowed-hosts (the chart's \
                     gateway.allowedHosts) if it is yours",
                    host.unwrap_or_default()
                ),
            );
        }
        let path = req.uri().path().to_string();
        if let Some(target) = path.strip_prefix("/function/") {
            return self.call_function(req, target, peer).await;
        }
        if let Some(target) = path.strip_prefix("/async-function/") {
            if let Some(refused) = self.function_door(&mut req) {
                return refused;
            }
            return self.accept.accept(req, target).await;
        }
        if let Some(api) = path.strip_prefix("/system/") {
            if !self.authorized(&req) {
                return unauthorized();
            }
            if let Some(why) = origin::cross_site(req.method(), req.headers(), host) {
                return reply::text(StatusCode::FORBIDDEN, why);
            }
            let mut response = self.api.handle(req, api).await;
            response.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            return response;
        }
        if let Some(file) = path.strip_prefix("/ui") {
            if !self.authorized(&req) {
                return unauthorized();
            }
            return crate::portal::serve(file);
        }
        match path.as_str() {
            "/healthz" if self.draining.load(std::sync::atomic::Ordering::Relaxed) => {
                reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down: finishing accepted requests")
            }
            "/healthz" => match self.provider.health() {
                Ok(()) => reply::text(StatusCode::OK, "OK"),
                Err(why) => reply::text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            "/metrics" => self.metrics().await,
            _ => reply::text(StatusCode::NOT_FOUND, format!("no route for {path}: invoke functions at /function/NAME")),
        }
    }

    /// `/function/TARGET`, from the front door or from the gateway's own cron and queue worker
    /// (`client`), which call it in place.
    pub async fn call_function<B>(&self, mut req: Request<B>, target: &str, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<flint_http::BoxError>,
    {
        if let Some(refused) = self.function_door(&mut req) {
            return refused;
        }
        let mut response = self.invoker.invoke(req, target, peer).await;
        self.strip_own_realm(&mut response);
        response
    }

    /// What every call to a function passes, now or stored: the caller may call functions, and
    /// the gateway's own credential (which can also deploy) never reaches a function, nor a
    /// stored call, whether it protects functions or a browser sent it along anyway.
    fn function_door<B>(&self, req: &mut Request<B>) -> Option<Response<Body>> {
        if self.auth_functions && !self.authorized(req) {
            return Some(unauthorized());
        }
        self.strip_own_credential(req.headers_mut());
        None
    }

    fn strip_own_credential(&self, headers: &mut HeaderMap) {
        if self.auth_functions || self.auth.as_ref().is_some_and(|c| c.allows(headers)) {
            headers.remove(AUTHORIZATION);
        }
    }

    /// A function answering 401 with the gateway's realm would have a browser send it the
    /// login it keeps for the gateway (or ask its user for it): that challenge is not passed on.
    fn strip_own_realm(&self, response: &mut Response<Body>) {
        if self.auth.is_some() && response.headers().get_all(WWW_AUTHENTICATE).iter().any(crate::auth::names_our_realm)
        {
            response.headers_mut().remove(WWW_AUTHENTICATE);
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
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
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(crate::auth::CHALLENGE));
    response
}
