//! `/_/health` (liveness: the function's process is running) and `/_/ready` (readiness: the
//! function can take an invocation and the watchdog is not draining). Kubernetes probes both;
//! local mode polls `/_/ready` before sending traffic to a replica.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use hyper::{Response, StatusCode};

use flint_http::body::{Body, full};

#[derive(Default)]
pub struct Health {
    upstream_ready: AtomicBool,
    draining: AtomicBool,
    dead: AtomicBool,
}

impl Health {
    pub fn set_upstream_ready(&self) {
        self.upstream_ready.store(true, SeqCst);
    }
    pub fn set_draining(&self) {
        self.draining.store(true, SeqCst);
    }
    pub fn set_dead(&self) {
        self.dead.store(true, SeqCst);
    }

    /// The answer for a health path, or `None` when `path` is not one.
    pub fn respond(&self, path: &str) -> Option<Response<Body>> {
        let (ok, why) = match path {
            "/_/health" => (!self.dead.load(SeqCst), "the function's process has exited"),
            "/_/ready" => {
                if self.dead.load(SeqCst) {
                    (false, "the function's process has exited")
                } else if self.draining.load(SeqCst) {
                    (false, "shutting down")
                } else {
                    (self.upstream_ready.load(SeqCst), "the function's server is not accepting connections yet")
                }
            }
            _ => return None,
        };
        let mut response = Response::new(full(if ok { "OK\n".to_string() } else { format!("{why}\n") }));
        if !ok {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_the_upstream_accepts_and_not_draining() {
        let h = Health::default();
        assert_eq!(h.respond("/_/ready").unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.respond("/_/health").unwrap().status(), StatusCode::OK);
        h.set_upstream_ready();
        assert_eq!(h.respond("/_/ready").unwrap().status(), StatusCode::OK);
        h.set_draining();
        assert_eq!(h.respond("/_/ready").unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.respond("/_/health").unwrap().status(), StatusCode::OK);
        h.set_dead();
        assert_eq!(h.respond("/_/health").unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(h.respond("/anything").is_none());
    }
}
