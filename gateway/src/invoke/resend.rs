//! The one rule for sending a request to another replica after the one it went to failed it
//! without a response. A request may run at most once unless running it twice is harmless:
//!
//! 1. It never left (the connection was refused or timed out, or a pooled connection was found
//!    closed): always sent elsewhere, whatever the method and body.
//! 2. It was written, and then:
//!    - the replica had already left its provider's set when the request was written (its
//!      death or removal was known): no live process could have received it;
//!    - the replica reset the connection: its socket closed with the request unread (a replica
//!      killed before it read the request, or a connection still in a dead listener's backlog),
//!      so no process read the whole request;
//!    - the request is idempotent: its method is (GET, HEAD, OPTIONS, TRACE, PUT, DELETE; RFC
//!      9110 9.2.2), or the caller says so with an `Idempotency-Key` header.
//!
//!    Otherwise (a POST that a live replica may have started, then closed the connection) the
//!    caller gets 502 saying so, and the request is not sent again. A written request can be
//!    sent again only if its body was small enough to keep (`payload::REPLAY_LIMIT`), and at
//!    most `MAX_RESENDS` times.

use hyper::{HeaderMap, Method};
use tokio::time::Instant;

use crate::endpoint::Endpoint;

/// Times a written request is sent again after its replica failed under it.
pub const MAX_RESENDS: usize = 2;

/// The request header by which a caller declares a request safe to repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
        || headers.contains_key(IDEMPOTENCY_KEY)
}

/// What is known of a written request that got no response.
pub struct Written<'a> {
    pub endpoint: &'a Endpoint,
    pub at: Instant,
    pub reset: bool,
    pub idempotent: bool,
}

/// Why a written request may go to another replica; `None`: it may not.
pub fn why_again(w: &Written) -> Option<&'static str> {
    if w.endpoint.retired_at().is_some_and(|gone| gone <= w.at) {
        Some("the replica had already gone")
    } else if w.reset {
        Some("the replica reset the connection before reading the request")
    } else if w.idempotent {
        Some("the request is idempotent")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn written(endpoint: &Endpoint, at: Instant, reset: bool, idempotent: bool) -> Option<&'static str> {
        why_again(&Written { endpoint, at, reset, idempotent })
    }

    #[test]
    fn methods_and_the_idempotency_key_decide_idempotence() {
        let none = HeaderMap::new();
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE] {
            assert!(idempotent(&m, &none), "{m}");
        }
        assert!(!idempotent(&Method::POST, &none));
        assert!(!idempotent(&Method::PATCH, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, "order-17".parse().unwrap());
        assert!(idempotent(&Method::POST, &keyed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_that_a_live_replica_may_have_run_is_never_sent_again() {
        let e = crate::endpoint::Endpoint::new("127.0.0.1:1".parse().unwrap());
        let written_at = Instant::now();
        assert_eq!(written(&e, written_at, false, false), None);
        assert!(written(&e, written_at, false, true).is_some(), "idempotent");
        assert!(written(&e, written_at, true, false).is_some(), "reset before it was read");
        // A replica that leaves after the write may have run it.
        tokio::time::advance(Duration::from_millis(5)).await;
        e.retire();
        assert_eq!(written(&e, written_at, false, false), None);
        // One that had left before the write cannot have.
        assert_eq!(written(&e, Instant::now(), false, false), Some("the replica had already gone"));
    }
}
