//! The demo app: `/demo/` served from files in the repository's `web/`
//! folder (`web/demo/` and the esbuild bundle in `web/dist/`).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::http::{Body, json_error};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map" | "json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Serves `GET /demo...` from `web_dir`.
pub(crate) async fn serve_demo(web_dir: &Path, path: &str) -> Response<Body> {
    if path == "/demo" {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
        res.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/demo/"));
        return res;
    }
    let rest = path.strip_prefix("/demo/").unwrap_or("");
    let name = if rest.is_empty() { "index.html" } else { rest };
    // One plain file name: no directories, no `..`, no hidden files.
    if name.contains('/') || name.contains('\\') || name.starts_with('.') || name.contains("..") {
        return json_error(StatusCode::NOT_FOUND, "no such file");
    }
    let candidates: [PathBuf; 2] = [
        web_dir.join("demo").join(name),
        web_dir.join("dist").join(name),
    ];
    for file in candidates {
        if let Ok(bytes) = tokio::fs::read(&file).await {
            let mut res = Response::new(Full::new(Bytes::from(bytes)));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return res;
        }
    }
    if name == "pulsewave.esm.js" || name == "pulsewave.js" {
        return json_error(
            StatusCode::NOT_FOUND,
            "the client bundle is not built: run `npm ci && npm run build` in web/",
        );
    }
    json_error(StatusCode::NOT_FOUND, "no such file")
}
