//! The request a replica receives: the caller's method, path below the function, query,
//! headers and body; hop-by-hop headers removed; forwarding headers added.

use std::{net::SocketAddr, time::SystemTime};

use hyper::{
    HeaderMap, Request, Uri,
    header::{HOST, HeaderName, HeaderValue},
};

pub const CALL_ID: HeaderName = HeaderName::from_static("x-call-id");
const START_TIME: HeaderName = HeaderName::from_static("x-start-time");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The caller's call id, or a new random one (UUID v4 form).
pub fn call_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&CALL_ID) {
        return id.clone();
    }
    let b = fastrand::u128(..).to_be_bytes();
    let mut hex = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        let byte = match i {
            6 => (byte & 0x0f) | 0x40, // version 4
            8 => (byte & 0x3f) | 0x80, // RFC 4122 variant
            _ => *byte,
        };
        if matches!(i, 4 | 6 | 8 | 10) {
            hex.push('-');
        }
        hex.push_str(&format!("{byte:02x}"));
    }
    HeaderValue::from_str(&hex).expect("hex is a header value")
}

/// Rewrites `req` in place for `replica`: `path_and_query` is what follows `/function/NAME`.
pub fn prepare<B>(
    req: &mut Request<B>,
    replica: SocketAddr,
    path_and_query: &str,
    peer: SocketAddr,
    call_id: &HeaderValue,
) {
    let uri = format!("http://{replica}{path_and_query}");
    *req.uri_mut() = uri.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    // The gateway speaks HTTP/1.1 to replicas whatever the caller spoke: hyper frames a body of
    // unknown length (HTTP/2 DATA frames) as chunked only on an HTTP/1.1 request, and would
    // otherwise send it empty.
    *req.version_mut() = hyper::Version::HTTP_11;
    let headers = req.headers_mut();
    flint_http::headers::strip_hop_by_hop(headers);
    let peer_ip = peer.ip().to_string();
    let forwarded_for = match headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(FORWARDED_FOR, v);
    }
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(FORWARDED_HOST, host);
    }
    headers.insert(CALL_ID, call_id.clone());
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    headers.insert(START_TIME, HeaderValue::from_str(&nanos.to_string()).expect("digits"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_path_query_and_adds_forwarding_headers() {
        let mut req = Request::post("/function/f/a/b?x=1")
            .version(hyper::Version::HTTP_2)
            .header("host", "gw.example.com")
            .header("x-forwarded-for", "10.0.0.1")
            .header("connection", "close")
            .body(())
            .unwrap();
        let id = call_id(req.headers());
        prepare(&mut req, "127.0.0.1:9000".parse().unwrap(), "/a/b?x=1", "192.0.2.7:5555".parse().unwrap(), &id);
        assert_eq!(req.uri(), "http://127.0.0.1:9000/a/b?x=1");
        assert_eq!(req.version(), hyper::Version::HTTP_11);
        let h = req.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "gw.example.com");
        assert!(h.get("connection").is_none());
        assert!(h["x-start-time"].to_str().unwrap().parse::<u128>().is_ok());
        assert_eq!(h["x-call-id"].len(), 36);
    }

    #[test]
    fn keeps_a_callers_call_id_and_makes_v4_ids() {
        let mut h = HeaderMap::new();
        let id = call_id(&h);
        let s = id.to_str().unwrap();
        assert_eq!(&s[14..15], "4", "{s}");
        h.insert(CALL_ID, HeaderValue::from_static("abc"));
        assert_eq!(call_id(&h), "abc");
    }
}
