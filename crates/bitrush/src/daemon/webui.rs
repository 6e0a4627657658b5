//! The web UI: a page, its script, its style sheet and its icon, compiled into the binary
//! (nothing is fetched from elsewhere, so it works offline) and served at `/` beside the API,
//! behind the same access rule. The page drives the REST API under `/api/v1` only.
//!
//! Invariants: the assets are plain files under `webui/` (no build step); every answer carries
//! a content security policy allowing only this origin's scripts, styles and images, so the
//! page never runs injected markup even if a torrent's name slipped past the script's escaping,
//! and refuses to be framed.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("webui/index.html");
const APP_JS: &str = include_str!("webui/app.js");
const STYLE_CSS: &str = include_str!("webui/style.css");
const ICON_SVG: &str = include_str!("webui/icon.svg");

/// The page's routes, to merge into the API's router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

/// One embedded asset with its type and the page's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate each time: an upgraded daemon serves its own page at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for url in ["/app.js", "/style.css", "/icon.svg"] {
            assert!(INDEX_HTML.contains(url), "{url} not linked");
        }
        // Nothing from another origin: no CDN, works offline.
        for (name, asset) in [
            ("page", INDEX_HTML),
            ("script", APP_JS),
            ("style", STYLE_CSS),
        ] {
            assert!(
                !asset.contains("http://") && !asset.contains("https://"),
                "the {name} names another origin"
            );
        }
    }
}
