//! The request a replica receives: the caller's method, path below the function, query,
//! headers and body; hop-by-hop headers removed; forwarding headers added.

use std::{
    net::{IpAddr, SocketAddr},
    time::SystemTime,
};

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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = fastrand::u128(..).to_be_bytes();
    // Written by hand: formatting each byte was a tenth of the gateway's own work per request.
    let mut id = [0u8; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        let byte = match i {
            6 => (byte & 0x0f) | 0x40, // version 4
            8 => (byte & 0x3f) | 0x80, // RFC 4122 variant
            _ => *byte,
        };
        if matches!(i, 4 | 6 | 8 | 10) {
            id[at] = b'-';
            at += 1;
        }
        id[at] = HEX[usize::from(byte >> 4)];
        id[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    HeaderValue::from_bytes(&id).expect("hex is a header value")
}

/// Rewrites `req` in place for a replica: `path_and_query` is what follows `/function/NAME`.
/// The request goes in origin form (`GET /path HTTP/1.1`, as nginx sends it), with the
/// caller's Host; one that came without a Host header (HTTP/2 names it in the request line)
/// gets the authority it named, or the replica's address.
pub fn prepare<B>(
    req: &mut Request<B>,
    replica: SocketAddr,
    path_and_query: &str,
    peer: SocketAddr,
    call_id: &HeaderValue,
) {
    let named = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    *req.uri_mut() = Uri::try_from(path_and_query).unwrap_or_else(|_| Uri::from_static("/"));
    // The gateway speaks HTTP/1.1 to replicas whatever the caller spoke: hyper frames a body of
    // unknown length (HTTP/2 DATA frames) as chunked only on an HTTP/1.1 request, and would
    // otherwise send it empty.
    *req.version_mut() = hyper::Version::HTTP_11;
    let headers = req.headers_mut();
    flint_http::headers::strip_hop_by_hop(headers);
    // The host the caller asked for, if it named one.
    let asked = headers.get(HOST).cloned().or(named);
    if let Some(host) = &asked {
        headers.insert(FORWARDED_HOST, host.clone());
    }
    if !headers.contains_key(HOST) {
        let host = asked.unwrap_or_else(|| HeaderValue::from_str(&replica.to_string()).expect("an address"));
        headers.insert(HOST, host);
    }
    let peer_ip = ip_text(peer.ip());
    let forwarded_for = match headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(before) => HeaderValue::from_str(&format!("{before}, {peer_ip}")).ok(),
        None => HeaderValue::from_str(&peer_ip).ok(),
    };
    if let Some(v) = forwarded_for {
        headers.insert(FORWARDED_FOR, v);
    }
    headers.insert(CALL_ID, call_id.clone());
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    headers.insert(START_TIME, HeaderValue::from(nanos as u64));
}

/// An address as text: IPv4 without the formatting machinery (it is written on every request).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let digit = |d: u8| char::from(b'0' + d);
        if octet >= 100 {
            out.push(digit(octet / 100));
        }
        if octet >= 10 {
            out.push(digit(octet / 10 % 10));
        }
        out.push(digit(octet % 10));
    }
    out
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
        assert_eq!(req.uri(), "/a/b?x=1");
        assert_eq!(req.version(), hyper::Version::HTTP_11);
        let h = req.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "gw.example.com");
        assert!(h.get("connection").is_none());
        assert!(h["x-start-time"].to_str().unwrap().parse::<u128>().is_ok());
        assert_eq!(h["x-call-id"].len(), 36);
        assert_eq!(h["host"], "gw.example.com");
    }

    #[test]
    fn a_request_without_host_names_the_authority_it_was_sent_to() {
        let id = HeaderValue::from_static("id");
        let (replica, peer) = ("127.0.0.1:9000".parse().unwrap(), "[2001:db8::7]:5555".parse().unwrap());
        // HTTP/2 names the authority in the request line, not in a Host header.
        let mut req = Request::get("https://gw.example.com/function/f/").body(()).unwrap();
        prepare(&mut req, replica, "/", peer, &id);
        assert_eq!(req.uri(), "/");
        assert_eq!(req.headers()["host"], "gw.example.com");
        assert_eq!(req.headers()["x-forwarded-host"], "gw.example.com");
        assert_eq!(req.headers()["x-forwarded-for"], "2001:db8::7");
        let mut req = Request::get("/function/f/").version(hyper::Version::HTTP_10).body(()).unwrap();
        prepare(&mut req, replica, "/", "10.0.0.255:1".parse().unwrap(), &id);
        assert_eq!(req.uri(), "/");
        assert_eq!(req.headers()["host"], "127.0.0.1:9000");
        assert!(req.headers().get("x-forwarded-host").is_none(), "the caller named no host");
        assert_eq!(req.headers()["x-forwarded-for"], "10.0.0.255");
    }

    #[test]
    fn a_path_that_looks_like_an_authority_stays_a_path() {
        let id = HeaderValue::from_static("id");
        let (replica, peer) = ("127.0.0.1:9000".parse().unwrap(), "192.0.2.7:5555".parse().unwrap());
        for path in ["//evil.example/x", "//evil.example:80/x?y=//z", "/http://evil.example/"] {
            let mut req = Request::get("/function/f").header("host", "gw").body(()).unwrap();
            prepare(&mut req, replica, path, peer, &id);
            assert_eq!((req.uri().authority(), req.uri().to_string()), (None, path.to_string()));
        }
    }

    #[test]
    fn writes_every_ipv4_address_as_rust_does() {
        for octet in 0..=255u8 {
            for ip in [[octet, 0, 0, 0], [1, octet, 2, 3], [10, 0, octet, 255], [255, 255, 255, octet]] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
    }

    #[test]
    fn keeps_a_callers_call_id_and_makes_v4_ids() {
        let mut h = HeaderMap::new();
        let id = call_id(&h);
        let s = id.to_str().unwrap();
        assert_eq!(&s[14..15], "4", "{s}");
        let groups: Vec<usize> = s.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{s}");
        assert!(s.bytes().all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(call_id(&h), id, "a new id each time");
        h.insert(CALL_ID, HeaderValue::from_static("abc"));
        assert_eq!(call_id(&h), "abc");
    }
}
