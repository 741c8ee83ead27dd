//! A queued message's headers, as a trigger's publisher or anyone with NATS access may write
//! them: a trigger's message is always a POST to the trigger's own path with no callback and
//! no call id, and no `Flint-*` header reaches the function; a stored call comes back as the
//! gateway wrote it.
#![no_main]

use flint_gateway::queue::message::{self, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut headers = async_nats::HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        // What the NATS client would refuse to send is not a message anyone can publish.
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if valid && !value.contains(['\r', '\n']) {
            headers.append(name, value.trim());
        }
    }
    let call = message::decode(Some(&headers), Origin::Trigger("/orders"));
    assert_eq!(call.method, hyper::Method::POST);
    assert_eq!(call.path, "/orders");
    assert_eq!((call.callback.as_deref(), call.call_id.as_deref()), (None, None));
    assert!(call.headers.keys().all(|k| !k.as_str().starts_with("flint-")), "{:?}", call.headers);

    let stored = message::decode(Some(&headers), Origin::Stored);
    let again = message::decode(Some(&message::encode(&stored)), Origin::Stored);
    assert_eq!(again.method, stored.method);
    assert_eq!(again.path, stored.path);
    assert_eq!(again.callback, stored.callback);
    assert_eq!(again.call_id, stored.call_id);
});
