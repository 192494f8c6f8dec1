//! `report --serve`: the written site over HTTP on loopback, for people who prefer a server
//! to opening `index.html` from disk. Read-only, files of the site folder only.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
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

async fn file(State(dir): State<PathBuf>, rel: Option<UrlPath<String>>) -> Response {
    let rel = rel.map_or_else(|| "index.html".to_string(), |UrlPath(p)| p);
    let rel = Path::new(&rel);
    // Only plain names below the site: no `..`, no absolute paths.
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    }
    let path = dir.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
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
    let app = Router::new()
        .route("/", get(file))
        .route("/{*path}", get(file))
        .with_state(dir.to_path_buf());
    ready(bound);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::Internal(format!("serving the report: {e}")))
}
