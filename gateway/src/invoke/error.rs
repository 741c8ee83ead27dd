//! Why the gateway answered an invocation itself, and the one place each reason becomes an HTTP
//! status and a body that says what happened and what to do.

use hyper::{Response, StatusCode};

use flint_http::Body;

use crate::reply;

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("request body of {0} bytes is over the limit of {1} bytes")]
    DeclaredTooLarge(u64, u64),
    #[error("request body is over the limit of {0} bytes")]
    TooLarge(u64),
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("too many requests are waiting for {0} to start; retry shortly")]
    TooManyWaiting(String),
    #[error("function {0} did not become ready in {1}; retry shortly")]
    NotReady(String, String),
    #[error("function {0} timed out after {1}")]
    Timeout(String, String),
    #[error("no replica of {0} could be reached: {1}")]
    Unreachable(String, String),
    #[error(
        "function {0} failed: {1}; it was not sent again because the replica may have started it \
         (a request with an idempotent method or an Idempotency-Key header is)"
    )]
    FailedUnderway(String, String),
    #[error("function {0} failed: {1}")]
    Failed(String, String),
}

impl InvokeError {
    pub fn status(&self) -> StatusCode {
        match self {
            InvokeError::DeclaredTooLarge(..) | InvokeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            InvokeError::BadBody(_) => StatusCode::BAD_REQUEST,
            InvokeError::TooManyWaiting(_) => StatusCode::TOO_MANY_REQUESTS,
            InvokeError::NotReady(..) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            InvokeError::Unreachable(..) | InvokeError::FailedUnderway(..) | InvokeError::Failed(..) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        match self.status() {
            status @ (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
                reply::retry_after(status, 1, self.to_string())
            }
            status => reply::text(status, self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_status_and_says_why() {
        let e = InvokeError::Timeout("f.default".into(), "2s".into());
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.to_string(), "function f.default timed out after 2s");
        let r = InvokeError::TooManyWaiting("f.default".into()).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
        let e = InvokeError::FailedUnderway("f.default".into(), "connection closed".into());
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.to_string().contains("Idempotency-Key"), "{e}");
    }
}
