//! Object storage: opening any URL blindspot accepts, reading and writing whole small
//! objects, and the lock that keeps two runs off one root. What lives where under a run root
//! is the catalog's business (`table`), not this module's.
//!
//! Local paths, `file://`, `s3://`, `gs://`, `az://` (and `abfs://`) and `memory://` all open
//! through `object_store`; cloud credentials come from the environment only. `memory://NAME/`
//! names one in-process store per NAME, shared by every caller in the process, so tests can
//! write a corpus with one stage and read it with the next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

/// A place in an object store: the store and a prefix inside it.
#[derive(Clone, Debug)]
pub struct Location {
    /// The store holding everything under this location.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store; empty for a bucket's root.
    pub prefix: Path,
    /// The URL this location was opened from, normalised (no trailing slash).
    pub url: String,
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn bad_url(url: &str, reason: impl Into<String>) -> Error {
    Error::Url {
        url: url.to_string(),
        reason: reason.into(),
    }
}

impl Location {
    /// Opens a URL or a local path. A local path need not exist yet (outputs create it).
    pub fn open(input: &str) -> Result<Location> {
        let url = match Url::parse(input) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme, or a Windows drive letter: a local path.
            _ => local_url(input)?,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| bad_url(input, "not a local file path"))?;
                let prefix = Path::from_absolute_path(&path)
                    .map_err(|e| bad_url(input, e.to_string()))?;
                (Arc::new(object_store::local::LocalFileSystem::new()), prefix)
            }
            "memory" => {
                let name = url.host_str().unwrap_or("").to_string();
                let store = memory_stores()
                    .lock()
                    .expect("memory store registry poisoned")
                    .entry(name)
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                (store, url_prefix(input, &url)?)
            }
            "s3" | "s3a" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .map_err(|e| bad_url(input, format!("{e} (credentials come from AWS_* variables)")))?;
                (Arc::new(store), url_prefix(input, &url)?)
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .map_err(|e| bad_url(input, format!("{e} (credentials come from GOOGLE_* variables)")))?;
                (Arc::new(store), url_prefix(input, &url)?)
            }
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .map_err(|e| bad_url(input, format!("{e} (credentials come from AZURE_* variables)")))?;
                (Arc::new(store), url_prefix(input, &url)?)
            }
            other => {
                return Err(bad_url(
                    input,
                    format!("unsupported scheme {other:?}; use a local path, file://, s3://, gs://, az:// or memory://"),
                ))
            }
        };
        let url = url.as_str().trim_end_matches('/').to_string();
        Ok(Location { store, prefix, url })
    }

    /// The path of `rel` (slash-separated) under this location.
    pub fn path(&self, rel: &str) -> Path {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    /// The URL of an object of this store, for messages and the `uri` columns.
    pub fn uri_of(&self, path: &Path) -> String {
        let rel = path
            .prefix_match(&self.prefix)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| path.to_string());
        if rel.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url, rel)
        }
    }

    /// The part of `path` below this location's prefix, slash-separated.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// Every object under `rel` (recursive), sorted by path so runs are deterministic.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.path(rel);
        let mut all: Vec<ObjectMeta> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Error::storage(self.uri_of(&prefix), e)),
        };
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// Deletes the scratch objects `rels`, each under this location; one that cannot be
    /// deleted is logged and left (scratch is never read again, so the run goes on).
    pub async fn delete_scratch(&self, rels: &[String]) {
        for rel in rels {
            let path = self.path(rel);
            if let Err(e) = self.store.delete(&path).await {
                tracing::warn!(object = %self.uri_of(&path), error = %e, "could not delete a scratch object");
            }
        }
    }

    /// Whether the object `rel` exists.
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        let path = self.path(rel);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage(self.uri_of(&path), e)),
        }
    }

    /// Reads a whole (small) object.
    pub async fn get_bytes(&self, path: &Path) -> Result<Bytes, object_store::Error> {
        self.store.get(path).await?.bytes().await
    }

    /// Writes a whole object atomically.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(rel);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| Error::storage(self.uri_of(&path), e))?;
        Ok(())
    }

    /// Writes `value` as pretty JSON at `rel`.
    pub async fn put_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(rel, Bytes::from(json)).await
    }

    /// True when this location is on the local disk (where pids can be checked).
    pub fn is_local(&self) -> bool {
        self.url.starts_with("file:")
    }
}

/// The location and object path of a full URL or local path to one object.
fn locate(url_or_path: &str) -> Result<(Location, Path)> {
    let (dir, name) = url_or_path.rsplit_once('/').unwrap_or((".", url_or_path));
    let loc = Location::open(if dir.is_empty() { "/" } else { dir })?;
    let path = loc.path(name);
    Ok((loc, path))
}

/// Reads a whole object named by a full URL or local path, refusing one larger than `max`
/// bytes before reading it (`what` names it in the error).
pub async fn get_url_bounded(url_or_path: &str, max: u64, what: &str) -> Result<Bytes> {
    let (loc, path) = locate(url_or_path)?;
    let uri = loc.uri_of(&path);
    let meta = loc
        .store
        .head(&path)
        .await
        .map_err(|e| Error::storage(uri.clone(), e))?;
    if meta.size > max {
        return Err(Error::Usage(format!(
            "{what} {uri} is {} MiB, above the {} MiB blindspot reads",
            meta.size >> 20,
            max >> 20
        )));
    }
    loc.get_bytes(&path)
        .await
        .map_err(|e| Error::storage(uri, e))
}

/// Reads a whole object named by a full URL or local path.
pub async fn get_url(url_or_path: &str) -> Result<Bytes> {
    let (loc, path) = locate(url_or_path)?;
    loc.get_bytes(&path)
        .await
        .map_err(|e| Error::storage(loc.uri_of(&path), e))
}

fn local_url(input: &str) -> Result<Url> {
    let path = std::path::Path::new(input);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad_url(input, e.to_string()))?
            .join(path)
    };
    let abs = normalise(&abs);
    Url::from_directory_path(&abs)
        .or_else(|_| Url::from_file_path(&abs))
        .map_err(|_| bad_url(input, "not an absolute local path"))
}

/// Removes `.` and `..` components without touching the file system (the path may not exist).
fn normalise(path: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn url_prefix(input: &str, url: &Url) -> Result<Path> {
    Path::from_url_path(url.path()).map_err(|e| bad_url(input, e.to_string()))
}

/// Makes a name safe and readable as one object-name segment, with a short hash so that two
/// names that sanitise alike stay apart.
pub fn segment_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| c == '_' || c == '.');
    let tail: String = clean
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let hash = blake3::hash(name.as_bytes()).to_hex();
    format!(
        "{}-{}",
        if tail.is_empty() { "root" } else { &tail },
        &hash[..8]
    )
}

/// Holds a run root for one run; a second run on the same root is refused.
///
/// The lock is an object created with a conditional put and refreshed by a heartbeat. A lock
/// whose heartbeat is older than [`STALE_AFTER`], or left by a dead process on this host, is
/// taken over, so a killed run never blocks the next one for long.
pub struct RunLock {
    root: Location,
    path: Path,
    heartbeat: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LockBody {
    host: String,
    pid: u32,
    command: String,
    heartbeat_unix: u64,
}

/// How often a held lock is refreshed.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// A lock not refreshed for this long belongs to a dead run.
pub const STALE_AFTER: Duration = Duration::from_secs(120);
const LOCK_NAME: &str = "_lock.json";

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".to_string())
}

/// True while process `pid` of this host runs (a zombie, killed but not yet reaped, is dead).
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl RunLock {
    /// Takes the lock on `root` for `command`, or says who holds it.
    pub async fn acquire(root: &Location, command: &str) -> Result<RunLock> {
        let path = root.path(LOCK_NAME);
        let body = || LockBody {
            host: hostname(),
            pid: std::process::id(),
            command: command.to_string(),
            heartbeat_unix: now_unix(),
        };
        let encode = |b: &LockBody| PutPayload::from(serde_json::to_vec(b).unwrap_or_default());
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        for _ in 0..3 {
            match root
                .store
                .put_opts(&path, encode(&body()), create.clone())
                .await
            {
                Ok(_) => {
                    return Ok(RunLock::held(root, path, command));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let held: Option<LockBody> = match root.get_bytes(&path).await {
                        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(Error::storage(root.uri_of(&path), e)),
                    };
                    let stale = match &held {
                        None => true,
                        Some(h) => {
                            (h.host == hostname() && !pid_alive(h.pid))
                                || now_unix().saturating_sub(h.heartbeat_unix)
                                    > STALE_AFTER.as_secs()
                        }
                    };
                    if !stale {
                        let h = held.expect("a fresh lock has a body");
                        return Err(Error::Locked {
                            root: root.url.clone(),
                            holder: format!("`{}` pid {} on {}", h.command, h.pid, h.host),
                            lock: root.uri_of(&path),
                        });
                    }
                    tracing::warn!(lock = %root.uri_of(&path), "taking over a stale lock left by a dead run");
                    match root.store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(Error::storage(root.uri_of(&path), e)),
                    }
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    // Stores without conditional puts: best effort, still refreshed.
                    root.store
                        .put(&path, encode(&body()))
                        .await
                        .map_err(|e| Error::storage(root.uri_of(&path), e))?;
                    return Ok(RunLock::held(root, path, command));
                }
                Err(e) => return Err(Error::storage(root.uri_of(&path), e)),
            }
        }
        Err(Error::Locked {
            root: root.url.clone(),
            holder: "a run that keeps re-taking it".into(),
            lock: root.uri_of(&path),
        })
    }

    fn held(root: &Location, path: Path, command: &str) -> RunLock {
        let heartbeat = spawn_heartbeat(root.clone(), path.clone(), command.to_string());
        RunLock {
            root: root.clone(),
            path,
            heartbeat,
        }
    }

    /// Releases the lock (also best-effort on drop of the process: a stale lock is taken over).
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.root.store.delete(&self.path).await {
            tracing::warn!(error = %e, "could not delete the run lock");
        }
    }
}

fn spawn_heartbeat(root: Location, path: Path, command: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let body = LockBody {
                host: hostname(),
                pid: std::process::id(),
                command: command.clone(),
                heartbeat_unix: now_unix(),
            };
            let payload = PutPayload::from(serde_json::to_vec(&body).unwrap_or_default());
            if let Err(e) = root.store.put(&path, payload).await {
                tracing::warn!(error = %e, "could not refresh the run lock");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_process_not_yet_reaped_is_dead() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(pid_alive(child.id()));
        child.kill().unwrap();
        // Not waited for: a zombie until reaped, and dead all the same.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!pid_alive(child.id()));
        child.wait().unwrap();
        assert!(!pid_alive(child.id()));
    }

    #[test]
    fn segment_ids_are_safe_and_distinct() {
        let a = segment_id("shards/00000.tar");
        let b = segment_id("shards_00000.tar");
        assert!(a.starts_with("shards_00000.tar-"), "{a}");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }

    #[tokio::test]
    async fn a_bounded_read_refuses_an_object_over_its_bound_before_reading_it() {
        let a = Location::open("memory://bounded-test/x").unwrap();
        a.put("big.json", Bytes::from(vec![b' '; 3 << 20]))
            .await
            .unwrap();
        let url = "memory://bounded-test/x/big.json";
        let err = get_url_bounded(url, 2 << 20, "drafts file")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("drafts file") && err.contains("3 MiB, above the 2 MiB"),
            "{err}"
        );
        assert_eq!(
            get_url_bounded(url, 4 << 20, "x").await.unwrap().len(),
            3 << 20
        );
    }

    #[tokio::test]
    async fn memory_urls_share_one_store_per_name() {
        let a = Location::open("memory://share-test/x").unwrap();
        a.put("f.txt", Bytes::from_static(b"hi")).await.unwrap();
        let b = Location::open("memory://share-test/x").unwrap();
        let got = b.get_bytes(&b.path("f.txt")).await.unwrap();
        assert_eq!(&got[..], b"hi");
        assert_eq!(b.uri_of(&b.path("f.txt")), "memory://share-test/x/f.txt");
    }

    #[tokio::test]
    async fn second_lock_is_refused_and_release_frees_it() {
        let root = Location::open("memory://lock-test/root").unwrap();
        let first = RunLock::acquire(&root, "a command").await.unwrap();
        let err = RunLock::acquire(&root, "a command")
            .await
            .err()
            .expect("second lock refused");
        assert!(err.to_string().contains("in use by another run"), "{err}");
        first.release().await;
        RunLock::acquire(&root, "a command")
            .await
            .unwrap()
            .release()
            .await;
    }

    #[test]
    fn local_paths_open_as_file_urls() {
        let loc = Location::open("/tmp/blindspot-x/../blindspot-y").unwrap();
        assert_eq!(loc.url, "file:///tmp/blindspot-y");
        assert_eq!(loc.prefix.as_ref(), "tmp/blindspot-y");
    }
}
