//! Fetching one image by URI: `http(s)://` URLs with a timeout and retries with backoff
//! (`backon`), and objects of any store blindspot opens (`file://`, `s3://`, `gs://`, `az://`,
//! `memory://`), with one store client per bucket. A failed fetch is a [`FetchError`] with a
//! short kind (`http_404`, `http_5xx`, `timeout`, `not_found`, ...), which the caller turns
//! into an `errors` row: it never stops a run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::storage::Location;

/// How images named by URI are fetched.
#[derive(Clone, Debug)]
pub struct FetchParams {
    /// Fetches in flight at once.
    pub concurrency: usize,
    /// Limit on one HTTP request, body included.
    pub timeout: Duration,
    /// Retries after the first attempt, for 5xx, 429, timeouts and broken connections.
    pub retries: usize,
    /// First wait between attempts; doubled each time, with jitter, up to 30 s.
    pub backoff: Duration,
}

impl Default for FetchParams {
    fn default() -> Self {
        FetchParams {
            concurrency: 16,
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Why a fetch failed, as an `errors` row wants it.
#[derive(Clone, Debug)]
pub struct FetchError {
    /// Short machine-readable kind.
    pub kind: String,
    /// What happened, attempts included.
    pub message: String,
    retry: bool,
}

impl FetchError {
    /// A failure that retrying will not mend.
    pub fn permanent(kind: &str, message: String) -> Self {
        FetchError::new(kind, message, false)
    }

    fn new(kind: impl Into<String>, message: impl Into<String>, retry: bool) -> Self {
        FetchError {
            kind: kind.into(),
            message: message.into(),
            retry,
        }
    }
}

/// Fetches images by URI; shared by every fetch of a run.
pub struct Fetcher {
    http: reqwest::Client,
    stores: Mutex<HashMap<String, Location>>,
    params: FetchParams,
}

impl Fetcher {
    /// A fetcher with its own HTTP client.
    pub fn new(params: &FetchParams) -> Result<Fetcher> {
        let http = reqwest::Client::builder()
            .timeout(params.timeout)
            .connect_timeout(params.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("blindspot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(Fetcher {
            http,
            stores: Mutex::new(HashMap::new()),
            params: params.clone(),
        })
    }

    /// The fetch settings.
    pub fn params(&self) -> &FetchParams {
        &self.params
    }

    /// The bytes of the object or URL `uri`.
    pub async fn get(&self, uri: &str) -> Result<Bytes, FetchError> {
        if uri.starts_with("http://") || uri.starts_with("https://") {
            return self.get_http(uri).await;
        }
        let (location, path) = self.store_of(uri)?;
        let got = match location.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        got.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                FetchError::new("not_found", e.to_string(), false)
            }
            e => FetchError::new("read", e.to_string(), false),
        })
    }

    /// The store (one per scheme and bucket, opened once) and path of an object URI.
    pub fn store_of(&self, uri: &str) -> Result<(Location, Path), FetchError> {
        let bad = |reason: String| FetchError::new("bad_uri", reason, false);
        let url = url::Url::parse(uri).map_err(|e| bad(format!("{uri:?}: {e}")))?;
        let base = match url.scheme() {
            "file" => "file:///".to_string(),
            scheme => format!("{scheme}://{}", url.host_str().unwrap_or("")),
        };
        let path = Path::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
        let mut stores = self.stores.lock().expect("store cache poisoned");
        if let Some(loc) = stores.get(&base) {
            return Ok((loc.clone(), path));
        }
        let loc = Location::open(&base).map_err(|e| bad(e.to_string()))?;
        stores.insert(base, loc.clone());
        Ok((loc, path))
    }

    async fn get_http(&self, uri: &str) -> Result<Bytes, FetchError> {
        let attempt = || async {
            let response = self.http.get(uri).send().await.map_err(transport)?;
            let status = response.status();
            if !status.is_success() {
                let code = status.as_u16();
                let kind = if status.is_server_error() {
                    "http_5xx".to_string()
                } else {
                    format!("http_{code}")
                };
                let retry = status.is_server_error() || code == 429;
                return Err(FetchError::new(kind, format!("HTTP {status}"), retry));
            }
            response.bytes().await.map_err(transport)
        };
        let mut attempts = 0usize;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.params.backoff)
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.params.retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|e: &FetchError| e.retry)
            .notify(|e: &FetchError, wait| {
                attempts += 1;
                tracing::debug!(uri, kind = %e.kind, ?wait, "fetch failed, retrying: {}", e.message);
            })
            .await
            .map_err(|mut e| {
                if attempts > 0 {
                    e.message = format!("{} (after {} retries)", e.message, attempts);
                }
                e
            })
    }
}

fn transport(e: reqwest::Error) -> FetchError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "http"
    };
    let retry = e.is_timeout() || e.is_connect() || e.is_body() || e.is_request();
    FetchError::new(kind, e.to_string(), retry)
}

/// `uri` as a full URI: one with a scheme is kept; a relative path is taken relative to
/// `base` (the folder of the manifest that names it); an absolute path becomes `file://`.
pub fn resolve(base: &str, uri: &str) -> String {
    let has_scheme = uri
        .split_once("://")
        .is_some_and(|(s, _)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()));
    if has_scheme {
        return uri.to_string();
    }
    if uri.starts_with('/') {
        return url::Url::from_file_path(uri)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| format!("file://{uri}"));
    }
    let base = format!("{}/", base.trim_end_matches('/'));
    url::Url::parse(&base)
        .and_then(|b| b.join(uri))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("{base}{uri}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_absolute() {
        assert_eq!(resolve("file:///m", "a/b.jpg"), "file:///m/a/b.jpg");
        assert_eq!(resolve("s3://b/m/", "x.png"), "s3://b/m/x.png");
        assert_eq!(resolve("file:///m", "/data/x.png"), "file:///data/x.png");
        assert_eq!(resolve("file:///m/n", "../x.png"), "file:///m/x.png");
        assert_eq!(resolve("file:///m", "https://h/x.png"), "https://h/x.png");
    }

    #[tokio::test]
    async fn memory_objects_and_missing_ones() {
        let loc = Location::open("memory://fetch-test/").unwrap();
        loc.put("a/x.bin", Bytes::from_static(b"xyz"))
            .await
            .unwrap();
        let f = Fetcher::new(&FetchParams::default()).unwrap();
        assert_eq!(
            f.get("memory://fetch-test/a/x.bin").await.unwrap(),
            Bytes::from_static(b"xyz")
        );
        let e = f.get("memory://fetch-test/a/none.bin").await.unwrap_err();
        assert_eq!(e.kind, "not_found");
        let e = f.get("nosuch://x/y").await.unwrap_err();
        assert_eq!(e.kind, "bad_uri");
    }
}
