//! Ingest: from an input URL to shards, and from a shard to a stream of (key, uri, bytes).
//!
//! Two kinds of shard: a folder of images (every image directly in one folder of the input,
//! found recursively by extension) and a webdataset `.tar` as img2dataset writes it (members
//! grouped by key: the image plus `.json`/`.txt` sidecars). Tars are read as a stream; only
//! one member is in memory at a time.

use std::path::Path as FsPath;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Error, Result};
use crate::storage::{segment_id, Location};

/// Extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jfif", "png", "webp", "gif"];

/// What a shard is made of.
#[derive(Clone, Debug)]
pub enum ShardKind {
    /// Image objects directly inside one folder.
    Folder(Vec<ObjectMeta>),
    /// One webdataset tar.
    Tar(ObjectMeta),
}

/// A unit of input that is embedded, written and committed as one.
#[derive(Clone, Debug)]
pub struct Shard {
    /// The folder or tar, relative to the input (`.` for the input's own folder).
    pub name: String,
    /// A safe object name for the shard's outputs.
    pub id: String,
    /// Where it is.
    pub uri: String,
    /// Its contents.
    pub kind: ShardKind,
}

/// One image's bytes, with its identity.
#[derive(Debug)]
pub struct Item {
    /// Unique key in the corpus.
    pub key: String,
    /// Where the bytes came from (`<tar uri>#<member>` inside a tar).
    pub uri: String,
    /// The encoded image.
    pub bytes: Bytes,
}

/// An input that could not be read; becomes an `errors` row.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Key of the input, as far as it is known.
    pub key: String,
    /// Where it is.
    pub uri: String,
    /// Short machine-readable kind.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// What ingest sends downstream.
#[derive(Debug)]
pub enum Ingested {
    /// Bytes to decode.
    Image(Item),
    /// An input lost before decoding.
    Failed(Failure),
}

fn extension(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    FsPath::new(base)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// True for names with an image extension.
pub fn is_image_name(name: &str) -> bool {
    extension(name).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn strip_extension(name: &str) -> &str {
    match name.rfind('.') {
        Some(dot) if !name[dot..].contains('/') && dot > name.rfind('/').map_or(0, |s| s + 1) => {
            &name[..dot]
        }
        _ => name,
    }
}

/// Lists the shards of an input, in a stable order: every `.tar` is a shard, and the images
/// directly inside each folder form one. An input that is a single tar or image works too.
pub async fn list_shards(input: &Location) -> Result<Vec<Shard>> {
    let mut objects = input.list("").await?;
    if objects.is_empty() {
        // Perhaps the input names one object rather than a prefix.
        match input.store.head(&input.prefix).await {
            Ok(meta) => objects.push(meta),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Usage(format!(
                "input {} holds no objects; check the URL (a folder, a prefix, a .tar or an image)",
                input.url
            )))
            }
            Err(e) => return Err(Error::storage(&input.url, e)),
        }
    }
    let single = objects.len() == 1 && objects[0].location == input.prefix;
    let mut shards = Vec::new();
    let mut folders: std::collections::BTreeMap<String, Vec<ObjectMeta>> = Default::default();
    for meta in objects {
        let rel = if single {
            meta.location.filename().unwrap_or_default().to_string()
        } else {
            input.relative(&meta.location)
        };
        if rel
            .split('/')
            .any(|part| part.starts_with('.') || part.starts_with('_'))
        {
            continue; // hidden files and our own bookkeeping (`_lock.json`, `_commits/`)
        }
        if extension(&rel).as_deref() == Some("tar") {
            shards.push(Shard {
                id: segment_id(&rel),
                uri: input.uri_of(&meta.location),
                name: rel,
                kind: ShardKind::Tar(meta),
            });
        } else if is_image_name(&rel) {
            let dir = rel
                .rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_else(|| ".".to_string());
            folders.entry(dir).or_default().push(meta);
        }
    }
    for (dir, objects) in folders {
        let uri = if dir == "." {
            input.url.clone()
        } else {
            format!("{}/{dir}", input.url)
        };
        shards.push(Shard {
            id: segment_id(&format!("{dir}/")),
            uri,
            name: dir,
            kind: ShardKind::Folder(objects),
        });
    }
    shards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(shards)
}

/// Sends every item of `shard` to `tx`; returns how many were sent. Unreadable inputs are
/// sent as [`Ingested::Failed`]; only a closed channel ends it early.
pub async fn read_shard(
    input: &Location,
    shard: &Shard,
    fetch_concurrency: usize,
    tx: mpsc::Sender<Ingested>,
) -> Result<u64> {
    match &shard.kind {
        ShardKind::Folder(objects) => {
            read_folder(input, shard, objects, fetch_concurrency, tx).await
        }
        ShardKind::Tar(meta) => read_tar(input, meta, tx).await,
    }
}

fn fetch_failure(key: String, uri: String, err: &object_store::Error) -> Failure {
    let kind = match err {
        object_store::Error::NotFound { .. } => "not_found",
        _ => "read",
    };
    Failure {
        key,
        uri,
        kind: kind.to_string(),
        message: err.to_string(),
    }
}

async fn read_folder(
    input: &Location,
    shard: &Shard,
    objects: &[ObjectMeta],
    fetch_concurrency: usize,
    tx: mpsc::Sender<Ingested>,
) -> Result<u64> {
    let single = objects.len() == 1 && objects[0].location == input.prefix;
    let fetches = futures::stream::iter(objects.iter().cloned())
        .map(|meta| {
            let store = input.store.clone();
            let uri = input.uri_of(&meta.location);
            let rel = if single {
                meta.location.filename().unwrap_or_default().to_string()
            } else {
                input.relative(&meta.location)
            };
            let key = strip_extension(&rel).to_string();
            async move {
                match store.get(&meta.location).await {
                    Ok(r) => match r.bytes().await {
                        Ok(bytes) => Ingested::Image(Item { key, uri, bytes }),
                        Err(e) => Ingested::Failed(fetch_failure(key, uri, &e)),
                    },
                    Err(e) => Ingested::Failed(fetch_failure(key, uri, &e)),
                }
            }
        })
        .buffered(fetch_concurrency.max(1));
    tokio::pin!(fetches);
    let mut sent = 0;
    while let Some(item) = fetches.next().await {
        if tx.send(item).await.is_err() {
            break;
        }
        sent += 1;
    }
    tracing::debug!(shard = %shard.name, sent, "folder read");
    Ok(sent)
}

/// Members of one key in a tar, gathered while streaming.
#[derive(Default)]
struct Group {
    stem: String,
    image: Option<(String, Bytes)>,
    json_key: Option<String>,
    members: Vec<String>,
    extra_images: Vec<String>,
}

impl Group {
    fn into_items(self, tar_uri: &str) -> Vec<Ingested> {
        let key = self.json_key.unwrap_or_else(|| self.stem.clone());
        let mut out = Vec::new();
        match self.image {
            Some((name, bytes)) => {
                out.push(Ingested::Image(Item {
                    key: key.clone(),
                    uri: format!("{tar_uri}#{name}"),
                    bytes,
                }));
            }
            None => out.push(Ingested::Failed(Failure {
                key: key.clone(),
                uri: format!(
                    "{tar_uri}#{}",
                    self.members.first().cloned().unwrap_or_default()
                ),
                kind: "no_image".into(),
                message: format!("tar members {:?} have no image beside them", self.members),
            })),
        }
        for name in self.extra_images {
            out.push(Ingested::Failed(Failure {
                key: key.clone(),
                uri: format!("{tar_uri}#{name}"),
                kind: "duplicate_key".into(),
                message: format!("a second image for key {key:?}; only the first is embedded"),
            }));
        }
        out
    }
}

async fn read_tar(input: &Location, meta: &ObjectMeta, tx: mpsc::Sender<Ingested>) -> Result<u64> {
    let tar_uri = input.uri_of(&meta.location);
    let name = meta.location.filename().unwrap_or_default().to_string();
    let stream = match input.store.get(&meta.location).await {
        Ok(r) => r.into_stream(),
        Err(e) => {
            let failure = fetch_failure(strip_extension(&name).to_string(), tar_uri, &e);
            return Ok(u64::from(tx.send(Ingested::Failed(failure)).await.is_ok()));
        }
    };
    let reader = StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other)));
    let bridge = SyncIoBridge::new(reader);
    let handle = tokio::task::spawn_blocking(move || walk_tar(bridge, &tar_uri, &name, &tx));
    handle
        .await
        .map_err(|e| Error::Internal(format!("tar reader: {e}")))
}

/// Walks a tar synchronously (on a blocking thread), sending each key's group when the next
/// key starts: img2dataset writes a key's members next to each other.
fn walk_tar(
    reader: impl std::io::Read,
    tar_uri: &str,
    tar_name: &str,
    tx: &mpsc::Sender<Ingested>,
) -> u64 {
    let mut sent = 0u64;
    let mut emit = |items: Vec<Ingested>| -> bool {
        for item in items {
            if tx.blocking_send(item).is_err() {
                return false;
            }
            sent += 1;
        }
        true
    };
    let mut archive = tar::Archive::new(reader);
    let mut group: Option<Group> = None;
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            emit(vec![tar_failure(tar_uri, tar_name, &e)]);
            return sent;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A corrupt or cut-off archive: keep what was read, record the rest as lost.
                if let Some(g) = group.take() {
                    emit(g.into_items(tar_uri));
                }
                emit(vec![tar_failure(tar_uri, tar_name, &e)]);
                return sent;
            }
        };
        let member = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let stem = strip_extension(&member).to_string();
        if group.as_ref().is_some_and(|g| g.stem != stem) {
            let done = group.take().expect("checked");
            if !emit(done.into_items(tar_uri)) {
                return sent;
            }
        }
        let g = group.get_or_insert_with(|| Group {
            stem: stem.clone(),
            ..Default::default()
        });
        g.members.push(member.clone());
        if !kind.is_file() {
            continue;
        }
        let ext = extension(&member).unwrap_or_default();
        let wanted = IMAGE_EXTENSIONS.contains(&ext.as_str()) || ext == "json";
        if !wanted {
            continue; // `.txt` captions and other sidecars are not needed to embed
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        if let Err(e) = std::io::Read::read_to_end(&mut entry, &mut buf) {
            emit(vec![tar_failure(tar_uri, tar_name, &e)]);
            return sent;
        }
        if ext == "json" {
            g.json_key = serde_json::from_slice::<serde_json::Value>(&buf)
                .ok()
                .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_string));
        } else if g.image.is_none() {
            g.image = Some((member, Bytes::from(buf)));
        } else {
            g.extra_images.push(member);
        }
    }
    if let Some(g) = group.take() {
        emit(g.into_items(tar_uri));
    }
    sent
}

fn tar_failure(tar_uri: &str, tar_name: &str, err: &std::io::Error) -> Ingested {
    Ingested::Failed(Failure {
        key: format!("{}#", strip_extension(tar_name)),
        uri: tar_uri.to_string(),
        kind: "tar".into(),
        message: format!("the archive is damaged, members after this point are lost: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions() {
        assert!(is_image_name("a/b/C.JPG"));
        assert!(!is_image_name("a/b.json"));
        assert_eq!(strip_extension("00000/000000012.jpg"), "00000/000000012");
        assert_eq!(strip_extension("dir.v2/file"), "dir.v2/file");
    }

    #[tokio::test]
    async fn tar_groups_by_key_and_reports_junk() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, data).unwrap();
        };
        add("000001.jpg", b"jpegbytes");
        add("000001.json", br#"{"key": "000001", "url": "http://x"}"#);
        add("000001.txt", b"a caption");
        add("junk.bin", b"zz");
        add("000002.png", b"pngbytes");
        let bytes = builder.into_inner().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let n = tokio::task::spawn_blocking(move || {
            walk_tar(
                std::io::Cursor::new(bytes),
                "memory://t/s.tar",
                "s.tar",
                &tx,
            )
        })
        .await
        .unwrap();
        let mut got = Vec::new();
        while let Some(i) = rx.recv().await {
            got.push(i);
        }
        assert_eq!(n, 3);
        match &got[0] {
            Ingested::Image(i) => {
                assert_eq!(i.key, "000001");
                assert_eq!(i.uri, "memory://t/s.tar#000001.jpg");
            }
            other => panic!("{other:?}"),
        }
        match &got[1] {
            Ingested::Failed(f) => assert_eq!(f.kind, "no_image"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&got[2], Ingested::Image(i) if i.key == "000002"));
    }
}
