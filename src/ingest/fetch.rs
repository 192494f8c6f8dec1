//! Fetching one image by URI: `http(s)://` URLs with a timeout and retries with backoff
//! (`backon`), and objects of any store blindspot opens (`file://`, `s3://`, `gs://`, `az://`,
//! `memory://`), with one store client per bucket. A failed fetch is a [`FetchError`] with a
//! short kind (`http_404`, `http_5xx`, `timeout`, `not_found`, ...), which the caller turns
//! into an `errors` row: it never stops a run.
//!
//! The fetch policy lives here, in one place. A manifest may name `http(s)` URLs and objects
//! of its own store under its own folder; local files, objects outside its folder and other
//! stores need `--allow-uri` ([`UriKind`]), and anything else is refused (`blocked_uri`).
//! HTTP goes only to public addresses: the client resolves names itself and refuses loopback,
//! private, link-local (cloud metadata), shared, multicast and reserved addresses, on the first
//! request and on every redirect (at most [`MAX_REDIRECTS`]), unless `--allow-private`
//! (`blocked_address`). A body is read up to `--max-bytes`, checked on `Content-Length` and
//! while it streams (`too_large`). A refused row's message names the rule, never fetched bytes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
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
    /// What a manifest may name besides `http(s)` URLs and objects under its own folder.
    pub allow: Vec<UriKind>,
    /// HTTP to loopback, private, link-local and other non-public addresses.
    pub allow_private: bool,
    /// The largest body or object read, in bytes.
    pub max_bytes: u64,
}

/// The default `--max-bytes`: 16 MiB. Web images are far smaller (LAION's median is tens of
/// KiB; a 24-megapixel camera JPEG at high quality is 8 to 12 MiB), and 16 fetches in flight
/// then hold at most 256 MiB of bodies.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// The message of a `too_large` error: an image of `size` bytes (or more) over `max`.
pub fn too_large(size: u64, max: u64) -> String {
    format!("{size} bytes or more, above --max-bytes {max}")
}

/// Redirects followed per fetch.
pub const MAX_REDIRECTS: usize = 5;

impl Default for FetchParams {
    fn default() -> Self {
        FetchParams {
            concurrency: 16,
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(500),
            allow: Vec::new(),
            allow_private: false,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What a manifest may name only when `--allow-uri` allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UriKind {
    /// Local files (`file://` URIs and absolute paths) named by a manifest that is not a local
    /// file itself.
    File,
    /// Objects of the manifest's own store outside its folder (`..`, absolute paths).
    Outside,
    /// Objects of another store (another bucket, another scheme).
    Store,
}

impl UriKind {
    /// The name `--allow-uri` takes.
    pub fn name(self) -> &'static str {
        match self {
            UriKind::File => "file",
            UriKind::Outside => "outside",
            UriKind::Store => "store",
        }
    }
}

/// Whether a manifest at `manifest` (its URI) may name `raw` (a row's uri as written) under
/// `allow`; returns the URI to fetch (`raw` resolved against the manifest's folder).
pub fn check_listed(manifest: &str, raw: &str, allow: &[UriKind]) -> Result<String, FetchError> {
    let blocked = |why: String| FetchError::new("blocked_uri", why, false);
    // A scheme without `//` (`javascript:`, `data:`, `mailto:`) is no path and no URL we fetch.
    if let Some((scheme, rest)) = raw.split_once(':') {
        let schemelike = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if schemelike && !rest.starts_with("//") {
            return Err(blocked(format!(
                "the manifest names a {:?} URI; only http(s) URLs and objects of a store are fetched",
                uri_for_message(scheme)
            )));
        }
    }
    let base = manifest.rsplit_once('/').map_or(manifest, |(d, _)| d);
    let uri = resolve(base, raw);
    let scheme = uri.split_once(':').map_or("", |(s, _)| s);
    if scheme == "http" || scheme == "https" {
        return Ok(uri);
    }
    if !["file", "s3", "gs", "az", "abfs", "memory"].contains(&scheme) {
        return Err(blocked(format!(
            "the manifest names a URI of scheme {scheme:?}; only http(s) URLs and objects of a store are fetched"
        )));
    }
    let (Ok(at), Ok(folder)) = (
        url::Url::parse(&uri),
        url::Url::parse(&format!("{}/", base.trim_end_matches('/'))),
    ) else {
        return Err(blocked(
            "the manifest names a URI that does not parse".into(),
        ));
    };
    let same_store = at.scheme() == folder.scheme() && at.host_str() == folder.host_str();
    let needs = if at.scheme() == "file" && folder.scheme() != "file" {
        Some(UriKind::File)
    } else if !same_store {
        Some(UriKind::Store)
    } else if !at.path().starts_with(folder.path()) {
        Some(UriKind::Outside)
    } else {
        None
    };
    match needs {
        Some(kind) if !allow.contains(&kind) => Err(blocked(format!(
            "{} is outside what the manifest may name ({}); pass --allow-uri {} to fetch it",
            match kind {
                UriKind::File => "a local file".to_string(),
                UriKind::Outside => format!("an object outside the manifest's folder {base}"),
                UriKind::Store => "an object of another store".to_string(),
            },
            uri_for_message(&uri),
            kind.name()
        ))),
        _ => Ok(uri),
    }
}

/// A URI for an error message: at most 200 characters, control characters escaped.
fn uri_for_message(uri: &str) -> String {
    let short: String = uri.chars().take(200).collect();
    short.escape_debug().to_string()
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local
/// (169.254.169.254, the cloud metadata service, among them), shared (CGNAT), unspecified,
/// broadcast, multicast, documentation, benchmarking or reserved; IPv4 inside IPv6 (mapped,
/// compatible, NAT64) is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return !v6.is_unspecified() && !v6.is_loopback() && is_public_v4(v4);
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2001 && s[1] < 0x0200)) // IETF special purpose (Teredo, ORCHID...)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// Names resolved by the system, refused when any address is not public.
struct PublicOnly;

/// Why an HTTP fetch was refused by the address or redirect policy: the error row's kind and
/// message.
#[derive(Debug)]
struct Blocked(&'static str, String);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Blocked {}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(Blocked("blocked_address", format!(
                    "{} resolves to {}, which is not a public address (pass --allow-private to fetch from it)",
                    uri_for_message(&host),
                    bad.ip()
                ))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a redirect to `url` is followed, after `previous` requests: http(s) only, at most
/// [`MAX_REDIRECTS`], and (unless `private`) not to a literal non-public address; a name is
/// checked when it is resolved ([`PublicOnly`]).
fn redirect_allowed(url: &url::Url, previous: usize, private: bool) -> Result<(), Blocked> {
    if previous > MAX_REDIRECTS {
        let why = format!("more than {MAX_REDIRECTS} redirects");
        return Err(Blocked("too_many_redirects", why));
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        let why = format!(
            "a redirect to a {:?} URL; only http(s) is followed",
            url.scheme()
        );
        return Err(Blocked("blocked_uri", why));
    }
    match private {
        true => Ok(()),
        false => check_literal(url),
    }
}

/// The address policy on a URL's literal host (names go through [`PublicOnly`]).
fn check_literal(url: &url::Url) -> Result<(), Blocked> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    match is_public(ip) {
        true => Ok(()),
        false => Err(Blocked(
            "blocked_address",
            format!("{ip} is not a public address (pass --allow-private to fetch from it)"),
        )),
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
        let private = params.allow_private;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            match redirect_allowed(attempt.url(), attempt.previous().len(), private) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut http = reqwest::Client::builder()
            .timeout(params.timeout)
            .connect_timeout(params.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("blindspot/", env!("CARGO_PKG_VERSION")))
            .redirect(redirects);
        if !private {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        let http = http
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
        let failed = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => {
                FetchError::new("not_found", e.to_string(), false)
            }
            e => FetchError::new("read", e.to_string(), false),
        };
        let got = location.store.get(&path).await.map_err(failed)?;
        if got.meta.size > self.params.max_bytes {
            return Err(self.too_large(got.meta.size));
        }
        got.bytes().await.map_err(failed)
    }

    fn too_large(&self, size: u64) -> FetchError {
        FetchError::permanent("too_large", too_large(size, self.params.max_bytes))
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
        if !self.params.allow_private {
            let url = url::Url::parse(uri)
                .map_err(|e| FetchError::permanent("bad_uri", format!("{e}")))?;
            check_literal(&url).map_err(|e| FetchError::permanent(e.0, e.1))?;
        }
        let attempt = || async {
            let mut response = self.http.get(uri).send().await.map_err(transport)?;
            let status = response.status();
            if status.is_redirection() {
                // A redirect the client did not follow: to a location that is not http(s).
                let to = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("");
                let scheme = to.split_once(':').map_or("", |(s, _)| s);
                return Err(FetchError::permanent(
                    "blocked_uri",
                    format!(
                        "HTTP {status}: a redirect to a {:?} location; only http(s) is followed",
                        uri_for_message(scheme)
                    ),
                ));
            }
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
            let max = self.params.max_bytes;
            if response.content_length().is_some_and(|n| n > max) {
                return Err(self.too_large(response.content_length().unwrap_or(max)));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if (body.len() + chunk.len()) as u64 > max {
                    return Err(self.too_large((body.len() + chunk.len()) as u64));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(body))
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
    // Refused by the address or redirect policy: say only why.
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return FetchError::permanent(b.0, b.1.clone());
        }
        source = s.source();
    }
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

    #[test]
    fn a_manifest_names_its_folder_and_the_web_unless_allowed_more() {
        let m = "s3://bucket/lists/part.csv";
        let ok = |raw: &str, allow: &[UriKind]| check_listed(m, raw, allow);
        assert_eq!(ok("a/x.jpg", &[]).unwrap(), "s3://bucket/lists/a/x.jpg");
        assert_eq!(
            ok("s3://bucket/lists/y.jpg", &[]).unwrap(),
            "s3://bucket/lists/y.jpg"
        );
        assert_eq!(ok("https://h/x.jpg", &[]).unwrap(), "https://h/x.jpg");
        let kind = |raw: &str, allow: &[UriKind]| ok(raw, allow).map_err(|e| e.kind);
        for (raw, needs) in [
            ("../x.jpg", UriKind::Outside),
            ("s3://bucket/other/x.jpg", UriKind::Outside),
            ("s3://bucket/lists/../x.jpg", UriKind::Outside),
            ("s3://bucket/listsx/y.jpg", UriKind::Outside),
            ("s3://other/lists/x.jpg", UriKind::Store),
            ("memory://x/y.jpg", UriKind::Store),
            ("file:///etc/passwd", UriKind::File),
            ("/etc/passwd", UriKind::File),
        ] {
            assert_eq!(kind(raw, &[]), Err("blocked_uri".into()), "{raw}");
            assert!(kind(raw, &[needs]).is_ok(), "{raw} with {needs:?}");
        }
        for raw in [
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "gopher://h/x",
        ] {
            let all = [UriKind::File, UriKind::Outside, UriKind::Store];
            assert_eq!(kind(raw, &all), Err("blocked_uri".into()), "{raw}");
        }
        // A local manifest's own folder is local files; outside it is `outside`.
        let local = "file:///data/m/list.csv";
        assert!(check_listed(local, "/data/m/x.png", &[]).is_ok());
        let e = check_listed(local, "file:///etc/passwd", &[]).unwrap_err();
        assert!(e.message.contains("--allow-uri outside"), "{}", e.message);
        assert!(check_listed(local, "%2e%2e/x.png", &[]).is_err());
    }

    #[test]
    fn redirects_to_loopback_metadata_files_or_too_far_are_refused() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let kind = |u: &str, previous: usize, private: bool| {
            redirect_allowed(&url(u), previous, private).map_err(|e| e.0)
        };
        assert_eq!(kind("https://cdn.example/x.jpg", 1, false), Ok(()));
        for to in [
            "http://127.0.0.1/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/",
            "http://10.0.0.7/x",
        ] {
            assert_eq!(kind(to, 1, false), Err("blocked_address"), "{to}");
            assert_eq!(kind(to, 1, true), Ok(()), "{to} with --allow-private");
        }
        assert_eq!(kind("file:///etc/passwd", 1, true), Err("blocked_uri"));
        assert_eq!(kind("https://cdn.example/x", 5, false), Ok(()));
        assert_eq!(
            kind("https://cdn.example/x", 6, false),
            Err("too_many_redirects")
        );
    }

    #[test]
    fn public_addresses_only() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
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
