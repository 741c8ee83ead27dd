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

/// `path` is what follows `/ui` (`/`, `/app.js`, ...).
pub fn serve(path: &str) -> Response<Body> {
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
