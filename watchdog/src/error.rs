//! Why an invocation failed, and the one place each reason becomes an HTTP status and body.

use std::time::Duration;

use hyper::{Response, StatusCode, header};

use flint_http::body::{Body, full};

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("too many invocations in flight (max_inflight={0}); retry shortly")]
    Overloaded(usize),
    #[error("function timed out after {}", flint_api::duration::format(*.0))]
    Timeout(Duration),
    #[error("the function's server at {upstream} could not be reached: {reason}")]
    Upstream { upstream: String, reason: String },
    #[error("the function's process could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("the function's process {status}{}", stderr_suffix(.stderr))]
    Failed { status: String, stderr: Option<String> },
}

fn stderr_suffix(stderr: &Option<String>) -> String {
    stderr.as_deref().map(|s| format!("; stderr:\n{s}")).unwrap_or_default()
}

impl InvokeError {
    pub fn status(&self) -> StatusCode {
        match self {
            InvokeError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            InvokeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            InvokeError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            InvokeError::Spawn(_) | InvokeError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(full(format!("{self}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
        if let InvokeError::Overloaded(_) = self {
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_and_says_why() {
        let r = InvokeError::Timeout(Duration::from_secs(2)).into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(InvokeError::Timeout(Duration::from_secs(2)).to_string(), "function timed out after 2s");
        let r = InvokeError::Overloaded(4).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let failed = InvokeError::Failed { status: "exited with status 3".into(), stderr: Some("boom".into()) };
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(failed.to_string().ends_with("stderr:\nboom"));
    }
}
