//! The console's static files, embedded in the binary: its own few files at `/static/{file}`,
//! and the vendored browser libraries (`server/static/vendor/`, see its README) at
//! `/static/vendor/<package>-<version>/<path in the package>`, e.g.
//! `/static/vendor/novnc-1.7.0/core/rfb.js`. Both are looked up in embedded tables only, so no
//! request path can reach the file system.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

mod vendored;

/// (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console.js"),
    ),
    (
        "console-session.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console-session.js"),
    ),
    (
        "console-term.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console-term.js"),
    ),
    (
        "console-vnc.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console-vnc.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../static/icon.svg"),
    ),
];

/// `GET /static/{file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    let Some((_, kind, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut r = (*bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Revalidated each time (the files change with the binary); no data in them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /static/vendor/{*path}`: a vendored library file. The version is part of the path (a new
/// version is a new URL), so browsers may keep the file forever.
pub async fn vendor(Path(path): Path<String>) -> Response {
    let Some((_, file, bytes)) = vendored::FILES.iter().find(|(url, _, _)| *url == path) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut r = (*bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(vendor_kind(file)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

/// A vendored file's content type: module scripts are MIME-checked by browsers.
fn vendor_kind(file: &str) -> &'static str {
    if file.ends_with(".js") || file.ends_with(".mjs") {
        "text/javascript; charset=utf-8"
    } else if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        // The licences.
        "text/plain; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use sha2::{Digest, Sha256};
    use std::collections::BTreeMap;
    use tower::ServiceExt;

    const MANIFEST: &str = include_str!("../../static/vendor/MANIFEST");

    /// MANIFEST's `<sha256>  <file>` lines, by file.
    fn manifest() -> BTreeMap<&'static str, &'static str> {
        let mut m = BTreeMap::new();
        for line in MANIFEST.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (sum, file) = line.split_once("  ").expect("`<sha256>  <file>` line");
            assert_eq!(sum.len(), 64, "{line}");
            assert!(m.insert(file, sum).is_none(), "{file} twice in MANIFEST");
        }
        m
    }

    #[test]
    fn vendored_files_match_the_manifest() {
        let m = manifest();
        assert!(!vendored::FILES.is_empty());
        for (_, file, bytes) in vendored::FILES {
            let want = m
                .get(file)
                .unwrap_or_else(|| panic!("{file} is embedded but not in MANIFEST"));
            assert_eq!(
                hex::encode(Sha256::digest(bytes)),
                *want,
                "{file} differs from MANIFEST (edited by hand? run refetch.sh)"
            );
        }
        for file in m.keys() {
            assert!(
                vendored::FILES.iter().any(|(_, f, _)| f == file),
                "{file} is in MANIFEST but not embedded"
            );
        }
        assert_eq!(m.len(), vendored::FILES.len());
    }

    #[test]
    fn vendored_urls_carry_the_version() {
        let mut seen = std::collections::BTreeSet::new();
        for (url, file, _) in vendored::FILES {
            assert!(seen.insert(*url), "{url} twice");
            let (dir, rest) = file.split_once('/').unwrap();
            let (versioned, url_rest) = url.split_once('/').unwrap();
            assert_eq!(rest, url_rest, "{url} / {file}");
            let version = versioned
                .strip_prefix(dir)
                .and_then(|v| v.strip_prefix('-'))
                .unwrap_or_else(|| panic!("{url} does not start with {dir}-<version>"));
            assert!(
                version.split('.').count() == 3
                    && version.split('.').all(|n| n.parse::<u32>().is_ok()),
                "{url}: version {version}"
            );
            // Each version named in the URLs is the one MANIFEST records.
            assert!(
                MANIFEST
                    .lines()
                    .any(|l| l.starts_with("# @") && l.split(' ').nth(2) == Some(version)),
                "{url}: version {version} not in MANIFEST"
            );
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/static/{file}", get(file))
            .route("/static/vendor/{*path}", get(vendor))
    }

    async fn get_(uri: &str) -> Response {
        app()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers()[name].to_str().unwrap()
    }

    #[tokio::test]
    async fn vendored_files_are_served_as_modules_and_cached() {
        for (uri, kind) in [
            (
                "/static/vendor/novnc-1.7.0/core/rfb.js",
                "text/javascript; charset=utf-8",
            ),
            (
                "/static/vendor/novnc-1.7.0/vendor/pako/lib/zlib/inflate.js",
                "text/javascript; charset=utf-8",
            ),
            (
                "/static/vendor/xterm-6.0.0/lib/xterm.mjs",
                "text/javascript; charset=utf-8",
            ),
            (
                "/static/vendor/xterm-6.0.0/css/xterm.css",
                "text/css; charset=utf-8",
            ),
            (
                "/static/vendor/xterm-addon-fit-0.11.0/lib/addon-fit.mjs",
                "text/javascript; charset=utf-8",
            ),
            (
                "/static/vendor/novnc-1.7.0/LICENSE.txt",
                "text/plain; charset=utf-8",
            ),
        ] {
            let r = get_(uri).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(header_of(&r, header::CONTENT_TYPE), kind, "{uri}");
            assert_eq!(
                header_of(&r, header::CACHE_CONTROL),
                "public, max-age=31536000, immutable",
                "{uri}"
            );
        }
        // The console's own files still answer beside the vendor route.
        let r = get_("/static/console.css").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
    }

    #[tokio::test]
    async fn unknown_and_traversing_vendor_paths_are_not_found() {
        for uri in [
            "/static/vendor/",
            "/static/vendor/novnc-1.7.0",
            "/static/vendor/novnc-1.7.0/",
            "/static/vendor/novnc/core/rfb.js",
            "/static/vendor/novnc-1.6.0/core/rfb.js",
            "/static/vendor/novnc-1.7.0/core/nope.js",
            "/static/vendor/novnc-1.7.0/core/../core/rfb.js",
            "/static/vendor/novnc-1.7.0/core/%2e%2e/core/rfb.js",
            "/static/vendor/novnc-1.7.0//core/rfb.js",
            "/static/vendor/novnc-1.7.0%5ccore%5crfb.js",
            "/static/vendor/%2fetc%2fpasswd",
            "/static/vendor//etc/passwd",
            "/static/vendor/../../Cargo.toml",
            "/static/vendor/%2e%2e/%2e%2e/Cargo.toml",
            "/static/vendor/MANIFEST",
            "/static/vendor/refetch.sh",
        ] {
            let r = get_(uri).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
            assert!(r.headers().get(header::CACHE_CONTROL).is_none(), "{uri}");
        }
    }
}
