//! `report --serve`: the written site over HTTP on loopback, for people who prefer a server
//! to opening `index.html` from disk. Read-only: regular files inside the site folder only
//! (a symlink that leads out of it is not followed), requests only for the bound address or a
//! loopback name in `Host` (a DNS-rebinding page names its own host), and every response
//! with a Content-Security-Policy that allows the site's own files and nothing else,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::{Error, Result};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// The Content-Security-Policy of every response: the site's own scripts, styles and images
/// (thumbnails are files of the site; exports are `blob:` downloads), nothing inline, no
/// frames, no other origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the server knows: the site (its canonical path) and the address it is bound to.
struct Site {
    dir: PathBuf,
    bound: SocketAddr,
}

impl Site {
    /// Whether `host` (a request's `Host` header) names this server: `localhost`, a loopback
    /// address or the bound address, with the bound port. A name (what DNS rebinding needs) is
    /// accepted only when it is `localhost`; any address literal is, when the server listens
    /// on all addresses.
    fn accepts(&self, host: &str) -> bool {
        let (name, port) = match host.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((name, tail)) => (name, tail.strip_prefix(':')),
                None => return false,
            },
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        let port = port.map_or(Some(80), |p| p.parse::<u16>().ok());
        if port != Some(self.bound.port()) {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.bound.ip() || self.bound.ip().is_unspecified(),
            Err(_) => false,
        }
    }
}

fn with_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn file(
    State(site): State<Arc<Site>>,
    headers: HeaderMap,
    rel: Option<UrlPath<String>>,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !site.accepts(host) {
        return with_headers((StatusCode::MISDIRECTED_REQUEST, "unknown host").into_response());
    }
    let rel = rel.map_or_else(|| "index.html".to_string(), |UrlPath(p)| p);
    let rel = Path::new(&rel);
    // Only plain names below the site: no `..`, no absolute paths.
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return with_headers((StatusCode::BAD_REQUEST, "bad path").into_response());
    }
    // A regular file whose real path is inside the site: symlinks may not lead out of it.
    let inside = match tokio::fs::canonicalize(site.dir.join(rel)).await {
        Ok(real) if real.starts_with(&site.dir) => match tokio::fs::metadata(&real).await {
            Ok(m) if m.is_file() => Some(real),
            _ => None,
        },
        _ => None,
    };
    let response = match inside {
        Some(path) => match tokio::fs::read(&path).await {
            Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
            Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
        },
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    with_headers(response)
}

/// Binds `addr` (a loopback address unless the user names another) and serves `dir` until
/// the process is stopped. Returns the bound address through `ready` first.
pub async fn serve(dir: &Path, addr: &str, ready: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    if !dir.join("index.html").is_file() {
        return Err(Error::Usage(format!(
            "{} has no index.html to serve",
            dir.display()
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", dir.display())))?;
    let app = Router::new()
        .route("/", get(file))
        .route("/{*path}", get(file))
        .with_state(Arc::new(Site { dir, bound }));
    ready(bound);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::Internal(format!("serving the report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bound_address_and_loopback_names_are_accepted_as_host() {
        let site = |addr: &str| Site {
            dir: PathBuf::from("/site"),
            bound: addr.parse().unwrap(),
        };
        let local = site("127.0.0.1:8123");
        for ok in [
            "127.0.0.1:8123",
            "localhost:8123",
            "LOCALHOST:8123",
            "[::1]:8123",
        ] {
            assert!(local.accepts(ok), "{ok}");
        }
        for bad in [
            "evil.example:8123",
            "127.0.0.1:9999",
            "127.0.0.1",
            "localhost",
            "10.0.0.5:8123",
            "",
            "[::1",
            "localhost.evil.example:8123",
        ] {
            assert!(!local.accepts(bad), "{bad:?}");
        }
        let all = site("0.0.0.0:8123");
        assert!(all.accepts("192.168.1.20:8123"));
        assert!(!all.accepts("rebind.example:8123"));
    }
}
