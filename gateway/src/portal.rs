//! The web portal at `/ui/`: a page, its script and style, and the uPlot charting library,
//! embedded in the binary (nothing fetched at run time). It reads the REST API and the
//! `/system/ui/*` JSON, behind the same basic auth as `/system/*`.

use flint_http::{Body, full};
use hyper::{
    Response, StatusCode,
    header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION},
};

use crate::reply;

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../ui/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../ui/style.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../ui/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../ui/vendor/uPlot.min.css")),
];

/// What a browser may do with the portal's pages: run and load only the portal's own files
/// (no inline script, nothing from elsewhere), talk only to the gateway, never be framed (no
/// clickjacking of deploy and delete), never guess a type, and send no address elsewhere.
const HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// `path` is what follows `/ui` (`/`, `/app.js`, ...).
pub fn serve(path: &str) -> Response<Body> {
    let mut response = file(path);
    for (name, value) in HEADERS {
        response.headers_mut().insert(*name, HeaderValue::from_static(value));
    }
    response
}

fn file(path: &str) -> Response<Body> {
    let Some(file) = path.strip_prefix('/') else {
        let mut r = reply::empty(StatusCode::PERMANENT_REDIRECT);
        r.headers_mut().insert(LOCATION, HeaderValue::from_static("/ui/"));
        return r;
    };
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => {
            let mut r = Response::new(full(*bytes));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            // Embedded in this build: a new gateway may change them, so revalidate each time.
            r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        None => reply::text(StatusCode::NOT_FOUND, format!("no such file in the portal: /ui/{file}")),
    }
}
