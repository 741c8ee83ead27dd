//! How a request becomes an invocation: the layers, outermost first.
//!
//! `Observe` (metrics, one log line, errors to responses) → `Limit` (`max_inflight`, 429) →
//! `Timeout` (`exec_timeout`, 504) → the mode (`http` proxy or `streaming` fork).
//! Every service here is always ready: overload is decided per call, by shedding.

use flint_http::Body;
use futures::future::BoxFuture;
use hyper::{Request, Response, body::Incoming};
use tower::{ServiceBuilder, util::BoxCloneService};

use crate::{
    config::Config,
    error::InvokeError,
    limit::LimitLayer,
    metrics::{Metrics, ObserveLayer},
    mode::Invoke,
    timeout::TimeoutLayer,
};

pub type Req = Request<Incoming>;
pub type Res = Response<Body>;
pub type ResFuture = BoxFuture<'static, Result<Res, InvokeError>>;

/// The whole invocation path, errors already turned into responses.
pub type Stack = BoxCloneService<Req, Res, std::convert::Infallible>;

pub fn build(config: &Config, invoke: Invoke, metrics: std::sync::Arc<Metrics>) -> Stack {
    let service = ServiceBuilder::new()
        .layer(ObserveLayer::new(metrics))
        .layer(LimitLayer::new(config.max_inflight))
        .layer(TimeoutLayer(config.exec_timeout))
        .service(invoke);
    BoxCloneService::new(service)
}
