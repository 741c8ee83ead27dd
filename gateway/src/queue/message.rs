//! An invocation as a JetStream message: the body is the payload, the caller's HTTP headers are
//! the message's headers as they are, and what else the call needs rides in `Flint-*` headers
//! (a caller's own `Flint-*` headers are not carried). A trigger's message is someone else's:
//! its headers are carried, but it is always a `POST` to the trigger's own path, with no
//! callback, whatever `Flint-*` headers its publisher set.

use async_nats::HeaderMap as NatsHeaders;
use hyper::{HeaderMap, Method, header::HeaderName};

pub const METHOD: &str = "Flint-Method";
/// The path below the function, with its query.
pub const PATH: &str = "Flint-Path";
pub const CALL_ID: &str = "Flint-Call-Id";
pub const CALLBACK: &str = "Flint-Callback-Url";
/// Dead letters: attempts made, the last status (0: no answer) and why it failed.
pub const ATTEMPTS: &str = "Flint-Attempts";
pub const LAST_STATUS: &str = "Flint-Last-Status";
pub const LAST_ERROR: &str = "Flint-Last-Error";
/// Dead letters: the subject the message came from.
pub const SUBJECT: &str = "Flint-Subject";

/// What one attempt sends to the function.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub call_id: Option<String>,
    pub callback: Option<String>,
}

/// Headers that describe a hop or the message, not the call: not carried either way.
fn carried(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.starts_with("flint-")
        || lower.starts_with("nats-")
        || matches!(
            lower.as_str(),
            "host"
                | "content-length"
                | "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "te"
                | "upgrade"
                | "proxy-connection"
                | "trailer"
                | "x-callback-url"
        ))
}

/// The message headers of an asynchronous call.
pub fn encode(call: &Call) -> NatsHeaders {
    let mut out = NatsHeaders::new();
    for (name, value) in &call.headers {
        if let Ok(value) = value.to_str()
            && carried(name.as_str())
        {
            out.append(name.as_str(), value);
        }
    }
    out.insert(METHOD, call.method.as_str());
    out.insert(PATH, call.path.as_str());
    if let Some(id) = &call.call_id {
        out.insert(CALL_ID, id.as_str());
    }
    if let Some(url) = &call.callback {
        out.insert(CALLBACK, url.as_str());
    }
    out
}

/// Whose message it is: the gateway's own stored call, or a trigger publisher's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// Stored by `/async-function/`: its `Flint-*` headers say what the call is.
    Stored,
    /// Published on a trigger's subject: a `POST` to this path, nothing else.
    Trigger(&'a str),
}

/// The call a message holds.
pub fn decode(headers: Option<&NatsHeaders>, origin: Origin) -> Call {
    let path = match origin {
        Origin::Stored => "/",
        Origin::Trigger(path) => path,
    };
    let mut call =
        Call { method: Method::POST, path: path.to_string(), headers: HeaderMap::new(), call_id: None, callback: None };
    let Some(headers) = headers else { return call };
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        let last = values.last().map(|v| v.as_str().to_string()).unwrap_or_default();
        match (name, origin) {
            (METHOD, Origin::Stored) => call.method = last.parse().unwrap_or(Method::POST),
            (PATH, Origin::Stored) => call.path = last,
            (CALL_ID, Origin::Stored) => call.call_id = Some(last),
            (CALLBACK, Origin::Stored) => call.callback = Some(last),
            _ if carried(name) => {
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
                for value in values {
                    if let Ok(value) = value.as_str().parse() {
                        call.headers.append(name.clone(), value);
                    }
                }
            }
            _ => {}
        }
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_comes_back_as_it_went_in_without_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-tag", "a".parse().unwrap());
        headers.append("x-tag", "b".parse().unwrap());
        headers.insert("host", "gateway:8080".parse().unwrap());
        headers.insert("flint-method", "DELETE".parse().unwrap());
        let call = Call {
            method: Method::PUT,
            path: "/items/7?force=1".into(),
            headers,
            call_id: Some("c-1".into()),
            callback: Some("http://127.0.0.1:9/done".into()),
        };
        let back = decode(Some(&encode(&call)), Origin::Stored);
        assert_eq!(back.method, Method::PUT, "the caller's own Flint-Method header must not win");
        assert_eq!(back.path, "/items/7?force=1");
        assert_eq!(back.call_id.as_deref(), Some("c-1"));
        assert_eq!(back.callback.as_deref(), Some("http://127.0.0.1:9/done"));
        assert_eq!(back.headers.get("content-type").unwrap(), "application/json");
        let tags: Vec<_> = back.headers.get_all("x-tag").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(tags, ["a", "b"]);
        assert!(back.headers.get("host").is_none(), "{:?}", back.headers);
        assert!(back.headers.get("flint-method").is_none(), "{:?}", back.headers);
    }

    #[test]
    fn a_trigger_message_is_a_post_to_the_trigger_path_whatever_its_publisher_says() {
        let mut headers = NatsHeaders::new();
        headers.insert("Order-Id", "42");
        headers.insert("Nats-Msg-Id", "m-1");
        headers.insert(METHOD, "DELETE");
        headers.insert(PATH, "-prod/admin");
        headers.insert(CALLBACK, "http://169.254.169.254/");
        headers.insert(CALL_ID, "forged");
        let call = decode(Some(&headers), Origin::Trigger("/orders"));
        assert_eq!((call.method, call.path.as_str()), (Method::POST, "/orders"));
        assert_eq!((call.callback, call.call_id), (None, None));
        assert_eq!(call.headers.get("order-id").unwrap(), "42");
        assert!(call.headers.get("nats-msg-id").is_none());
        assert!(call.headers.keys().all(|k| !k.as_str().starts_with("flint-")), "{:?}", call.headers);
        assert_eq!(decode(None, Origin::Trigger("/")).path, "/");
    }
}
