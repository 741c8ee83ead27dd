//! The watchdog's request → CGI variables mapping, fed requests as raw HTTP/1.1 bytes: every
//! variable is one a process can receive (a name without `=` or NUL, a value without NUL).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut req = hyper::Request::builder().method(parsed.method.unwrap()).uri(parsed.path.unwrap());
    for h in parsed.headers.iter() {
        req = req.header(h.name, h.value);
    }
    // What hyper itself would refuse never reaches the watchdog.
    let Ok(req) = req.body(()) else { return };
    let (parts, ()) = req.into_parts();
    for (name, value) in flint_watchdog::mode::streaming::cgi_env(&parts) {
        assert!(name.starts_with("Http_"), "{name:?}");
        assert!(!name.contains(['=', '\0']) && !value.contains('\0'), "{name:?}={value:?}");
    }
});
