//! Why the gateway answered an invocation itself, and the one place each reason becomes an HTTP
//! status and a body that says what happened and what to do.

use hyper::{Response, StatusCode};

use flint_http::Body;

use super::throttle::Refused;
use crate::reply;

/// On the gateway's own refusal of a paused or throttled function: the reason (`paused`,
/// `rate`, `queue_full`, `queue_timeout`).
pub const THROTTLED: hyper::header::HeaderName = hyper::header::HeaderName::from_static("x-flint-throttled");

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
    #[error("{}", throttled(.0, .1))]
    Throttled(String, Refused),
}

fn throttled(function: &str, why: &Refused) -> String {
    let d = flint_api::duration::format;
    match why {
        Refused::Paused => {
            format!("function {function} is paused (spec.paused); it is served again when spec.paused is false")
        }
        Refused::Rate { rate, .. } => format!(
            "function {function} is over its rate of {rate} requests per second (spec.throttle.rate); \
             retry after the time in Retry-After"
        ),
        Refused::QueueFull { max_in_flight, queue } => format!(
            "function {function} has its {max_in_flight} invocations in flight (spec.throttle.maxInFlight) \
             and {queue} more waiting (spec.throttle.queue); retry shortly"
        ),
        Refused::QueueTimeout { max_in_flight, waited } => format!(
            "function {function} had its {max_in_flight} invocations in flight (spec.throttle.maxInFlight) \
             for all of the {} a request may wait (spec.throttle.queueTimeout); retry shortly",
            d(*waited)
        ),
    }
}

impl InvokeError {
    pub fn status(&self) -> StatusCode {
        match self {
            InvokeError::DeclaredTooLarge(..) | InvokeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            InvokeError::BadBody(_) => StatusCode::BAD_REQUEST,
            InvokeError::TooManyWaiting(_) => StatusCode::TOO_MANY_REQUESTS,
            InvokeError::Throttled(_, Refused::Paused) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Throttled(..) => StatusCode::TOO_MANY_REQUESTS,
            InvokeError::NotReady(..) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            InvokeError::Unreachable(..) | InvokeError::FailedUnderway(..) | InvokeError::Failed(..) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = self.response();
        if let InvokeError::Throttled(_, why) = &self {
            // Says the gateway held the call back (the function did not fail): a queue worker
            // waits and tries again without counting an attempt.
            response.headers_mut().insert(THROTTLED, hyper::header::HeaderValue::from_static(why.reason()));
        }
        response
    }

    fn response(&self) -> Response<Body> {
        match (self.status(), self) {
            // A paused function stays paused until someone changes it: retrying soon is no use.
            (status, InvokeError::Throttled(_, Refused::Paused)) => reply::text(status, self.to_string()),
            (status, InvokeError::Throttled(_, Refused::Rate { retry_after, .. })) => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                reply::retry_after(status, seconds, self.to_string())
            }
            (status @ (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE), _) => {
                reply::retry_after(status, 1, self.to_string())
            }
            (status, _) => reply::text(status, self.to_string()),
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

    #[test]
    fn a_throttled_request_says_which_limit_and_when_to_retry() {
        let paused = InvokeError::Throttled("f.default".into(), Refused::Paused).into_response();
        assert_eq!(paused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(paused.headers()[THROTTLED], "paused");
        assert!(!paused.headers().contains_key("retry-after"));
        let rate = Refused::Rate { rate: 2, retry_after: std::time::Duration::from_millis(1500) };
        let e = InvokeError::Throttled("f.default".into(), rate);
        assert!(e.to_string().contains("spec.throttle.rate"), "{e}");
        let r = e.into_response();
        assert_eq!((r.status(), &r.headers()["retry-after"]), (StatusCode::TOO_MANY_REQUESTS, &"2".parse().unwrap()));
        let waited = Refused::QueueTimeout { max_in_flight: 3, waited: std::time::Duration::from_secs(5) };
        let e = InvokeError::Throttled("f.default".into(), waited);
        assert!(e.to_string().contains("3 invocations in flight") && e.to_string().contains("5s"), "{e}");
    }
}
