//! Plain-text answers the gateway writes itself (OpenFaaS answers errors as text, and so does
//! `faas-cli` expect), and JSON ones for the REST API.

use flint_http::{Body, full};
use hyper::{
    Response, StatusCode,
    header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER},
};
use serde::Serialize;

pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    let mut response = Response::new(full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A text answer telling the caller to come back in `seconds`.
pub fn retry_after(status: StatusCode, seconds: u64, message: impl Into<String>) -> Response<Body> {
    let mut response = text(status, message);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A function by this name is not deployed (synchronous and asynchronous calls alike).
pub fn no_function(name: &str, namespace: &str) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("function {name}.{namespace} not found (GET /system/functions lists what is deployed)"),
    )
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("API types serialize");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(flint_http::empty());
    *response.status_mut() = status;
    response
}
