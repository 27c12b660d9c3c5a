//! Static files on the public listener: the socket.io channel module for noVNC
//! (`/static/vnc-socketio.js`, built into the binary) and, when a web root is
//! configured, the viewer page and its assets at `/`.
//!
//! Only `GET`/`HEAD` of plain files under the root: no dotfiles, no `..`, no directory
//! listings, no symlinks leading out of the root.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;

use crate::admission::reject::Reject;

/// The module that turns a socket.io socket into a noVNC channel.
pub const SOCKETIO_MODULE_PATH: &str = "/static/vnc-socketio.js";
const SOCKETIO_MODULE: &str = include_str!("../../assets/vnc-socketio.js");
/// Largest file served from the web root (noVNC's biggest module is ~100 KiB).
const MAX_FILE: u64 = 8 << 20;

/// Answers a static request, or `None` if `path` is not a static path.
pub async fn serve(
    root: Option<&Path>,
    method: &Method,
    path: &str,
) -> Option<Response<Full<Bytes>>> {
    if path == SOCKETIO_MODULE_PATH {
        return Some(file_response(
            method,
            "text/javascript; charset=utf-8",
            Bytes::from_static(SOCKETIO_MODULE.as_bytes()),
        ));
    }
    let root = root?;
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let Some(relative) = safe_relative(path) else {
        return Some(Reject::NotFound.into_response());
    };
    Some(match read(root, &relative).await {
        Some((content_type, body)) => file_response(method, content_type, body),
        None => Reject::NotFound.into_response(),
    })
}

/// The path below the root a request names (`/` → `index.html`), or `None` for
/// anything that could leave the root or reach a hidden file.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let path = path.strip_prefix('/')?;
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    let decoded = percent_decode(&path)?;
    let mut out = PathBuf::new();
    for part in Path::new(&decoded).components() {
        match part {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => out.push(p),
            _ => return None,
        }
    }
    Some(out)
}

/// `%XX` decoding; `None` for invalid UTF-8 or a decoded NUL.
fn percent_decode(s: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    (!decoded.contains('\0')).then(|| decoded.into_owned())
}

async fn read(root: &Path, relative: &Path) -> Option<(&'static str, Bytes)> {
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let full = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    if !full.starts_with(&root) {
        return None;
    }
    let meta = tokio::fs::metadata(&full).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    let body = tokio::fs::read(&full).await.ok()?;
    Some((content_type(&full), Bytes::from(body)))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn file_response(
    method: &Method,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let len = body.len();
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(safe_relative("/"), Some(PathBuf::from("index.html")));
        assert_eq!(
            safe_relative("/node_modules/@novnc/novnc/core/rfb.js"),
            Some(PathBuf::from("node_modules/@novnc/novnc/core/rfb.js"))
        );
        assert_eq!(safe_relative("/a%20b.js"), Some(PathBuf::from("a b.js")));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/etc/passwd",
            "/.git/config",
            "/a/.env",
            "/x%00.js",
            "/%ff.js",
            "//etc/passwd",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<h1>viewer</h1>").unwrap();
        std::fs::write(dir.path().join(".secret"), "no").unwrap();
        let root = Some(dir.path());
        let ok = serve(root, &Method::GET, "/").await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let hidden = serve(root, &Method::GET, "/.secret").await.unwrap();
        assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
        let missing = serve(root, &Method::GET, "/nope.js").await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(serve(root, &Method::POST, "/").await.is_none());
        // The channel module is served with or without a web root.
        let module = serve(None, &Method::GET, SOCKETIO_MODULE_PATH)
            .await
            .unwrap();
        assert_eq!(module.status(), StatusCode::OK);
        assert!(serve(None, &Method::GET, "/").await.is_none());
    }
}
