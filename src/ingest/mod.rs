//! Ingest: from an input URL to shards, and from a shard to a stream of (key, uri, bytes).
//!
//! Four kinds of shard, told apart by what the objects hold (`--input-format` overrides):
//!
//! - a folder of images (every image directly in one folder of the input, found recursively
//!   by extension; img2dataset's `.txt`/`.json` sidecars beside them give captions and URLs);
//! - a webdataset `.tar` as img2dataset writes it (members grouped by key: the image plus
//!   `.json`/`.txt` sidecars), read as a stream, one member in memory at a time;
//! - an img2dataset Parquet object with the image bytes in a binary column ([`parquet`]);
//! - a part of a URI manifest, images fetched by URI ([`manifest`], [`fetch`]).
//!
//! Image formats are never trusted from names: decoding sniffs the bytes.

pub mod by_uri;
pub mod fetch;
pub mod manifest;
pub mod parquet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path as FsPath;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Error, Result};
use crate::storage::{segment_id, Location};
use crate::table::io;
use fetch::{FetchParams, Fetcher};
use manifest::{ManifestPart, TableFormat};
use parquet::ImageParquet;

/// Extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jfif", "png", "webp", "gif"];

/// Which kind of shard an input holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Told from the objects: tars, image folders and img2dataset Parquet; manifests when
    /// the input holds none of those.
    #[default]
    Auto,
    /// Image folders only.
    Folder,
    /// Webdataset tars only.
    Tar,
    /// img2dataset Parquet with image bytes only.
    Parquet,
    /// URI manifests (Parquet, CSV, TSV or JSONL) only.
    Manifest,
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(InputFormat::Auto),
            "folder" => Ok(InputFormat::Folder),
            "tar" => Ok(InputFormat::Tar),
            "parquet" => Ok(InputFormat::Parquet),
            "manifest" => Ok(InputFormat::Manifest),
            other => Err(format!(
                "unknown input format {other:?}: use auto, folder, tar, parquet or manifest"
            )),
        }
    }
}

/// How inputs are read, as a spec's `[embed]` section and the flags of `embed` and `dino`
/// say it (one shape, one check); [`IngestSettings::params`] makes the [`IngestParams`].
#[derive(Clone, Debug, serde::Deserialize, clap::Args)]
#[serde(default, rename_all = "kebab-case")]
pub struct IngestSettings {
    /// What the input holds: auto (told from the objects), folder, tar, parquet (img2dataset
    /// Parquet with image bytes) or manifest (a table of URIs).
    #[arg(long, default_value = "auto")]
    pub input_format: InputFormat,
    /// img2dataset Parquet: the binary column with the image [default: jpg, png, webp, ...].
    #[arg(long)]
    pub image_column: Option<String>,
    /// img2dataset Parquet and manifests: the key column.
    #[arg(long, default_value = "key")]
    pub key_column: String,
    /// Manifests: rows per shard [default: a Parquet row group; 10000 for CSV and JSONL].
    #[arg(long)]
    pub rows_per_shard: Option<u64>,
    /// Seconds one HTTP fetch may take, body included.
    #[arg(long, default_value_t = FetchParams::default().timeout.as_secs_f64())]
    pub fetch_timeout: f64,
    /// Retries of a fetch that failed with 5xx, 429, a timeout or a broken connection.
    #[arg(long, default_value_t = FetchParams::default().retries)]
    pub fetch_retries: usize,
    /// Manifests: also fetch these (comma-separated or repeated): `file` (local files named by a
    /// manifest that is not local), `outside` (objects of the manifest's store outside its
    /// folder), `store` (objects of other stores). By default a manifest names http(s) URLs and
    /// objects under its own folder only.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub allow_uri: Vec<fetch::UriKind>,
    /// HTTP fetches may go to loopback, private, link-local (cloud metadata) and other
    /// non-public addresses; refused by default, on every redirect too.
    #[arg(long)]
    pub allow_private: bool,
    /// The largest image read, in bytes (HTTP bodies and objects); larger ones are `too_large`
    /// errors.
    #[arg(long, default_value_t = fetch::DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        let p = IngestParams::default();
        IngestSettings {
            input_format: p.format,
            image_column: None,
            key_column: p.key_column,
            rows_per_shard: None,
            fetch_timeout: p.fetch.timeout.as_secs_f64(),
            fetch_retries: p.fetch.retries,
            allow_uri: Vec::new(),
            allow_private: false,
            max_bytes: p.fetch.max_bytes,
        }
    }
}

impl IngestSettings {
    /// Every problem with these settings, by name.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.fetch_timeout > 0.0 && self.fetch_timeout.is_finite()) {
            problems.push(format!(
                "fetch-timeout {} must be a positive number of seconds",
                self.fetch_timeout
            ));
        }
        if self.rows_per_shard == Some(0) {
            problems.push("rows-per-shard must be at least 1".into());
        }
        problems
    }

    /// The reading these settings describe, fetching `concurrency` objects at once.
    pub fn params(&self, concurrency: usize) -> IngestParams {
        IngestParams {
            format: self.input_format,
            image_column: self.image_column.clone(),
            key_column: self.key_column.clone(),
            rows_per_shard: self.rows_per_shard,
            fetch: FetchParams {
                concurrency,
                timeout: std::time::Duration::from_secs_f64(
                    self.fetch_timeout.clamp(0.001, 86_400.0),
                ),
                retries: self.fetch_retries,
                allow: self.allow_uri.clone(),
                allow_private: self.allow_private,
                max_bytes: self.max_bytes,
                ..FetchParams::default()
            },
        }
    }
}

/// How an input is listed and read.
#[derive(Clone, Debug)]
pub struct IngestParams {
    /// The kind of shard to look for.
    pub format: InputFormat,
    /// The binary column of img2dataset Parquet (default: `jpg`, `png`, `webp`, ...).
    pub image_column: Option<String>,
    /// The key column of img2dataset Parquet and manifests.
    pub key_column: String,
    /// Rows per shard of a manifest (Parquet manifests: per row group unless given).
    pub rows_per_shard: Option<u64>,
    /// Fetching images by URI (folders, manifests).
    pub fetch: FetchParams,
}

impl Default for IngestParams {
    fn default() -> Self {
        IngestParams {
            format: InputFormat::Auto,
            image_column: None,
            key_column: "key".into(),
            rows_per_shard: None,
            fetch: FetchParams::default(),
        }
    }
}

/// An image of a folder shard and its img2dataset sidecars.
#[derive(Clone, Debug)]
pub struct FolderImage {
    /// The image object.
    pub meta: ObjectMeta,
    /// `<stem>.txt`: the caption.
    pub txt: Option<ObjectMeta>,
    /// `<stem>.json`: img2dataset's metadata (`url`, `caption`).
    pub json: Option<ObjectMeta>,
}

/// What a shard is made of.
#[derive(Clone, Debug)]
pub enum ShardKind {
    /// Image objects directly inside one folder.
    Folder(Vec<FolderImage>),
    /// One webdataset tar.
    Tar(ObjectMeta),
    /// One img2dataset Parquet object with image bytes.
    Parquet(ImageParquet),
    /// Rows of a URI manifest.
    Manifest(ManifestPart),
}

/// A unit of input that is embedded, written and committed as one.
#[derive(Clone, Debug)]
pub struct Shard {
    /// The folder, tar, Parquet object or manifest part, relative to the input (`.` for the
    /// input's own folder; a manifest part is `<manifest>#<first row>+<rows>`).
    pub name: String,
    /// A safe object name for the shard's outputs.
    pub id: String,
    /// Where it is.
    pub uri: String,
    /// Its contents.
    pub kind: ShardKind,
}

impl Shard {
    /// The inputs in the shard when known before reading it (all but tars).
    pub fn known_items(&self) -> Option<u64> {
        match &self.kind {
            ShardKind::Folder(o) => Some(o.len() as u64),
            ShardKind::Tar(_) => None,
            ShardKind::Parquet(p) => Some(p.rows),
            ShardKind::Manifest(m) => Some(m.len),
        }
    }
}

/// One image's bytes, with its identity.
#[derive(Debug)]
pub struct Item {
    /// Unique key in the corpus.
    pub key: String,
    /// Where the bytes came from (`<tar uri>#<member>` inside a tar, `<parquet uri>#row=<n>`
    /// inside img2dataset Parquet).
    pub uri: String,
    /// The encoded image.
    pub bytes: Bytes,
    /// The caption, where the input has one.
    pub caption: Option<String>,
    /// The source URL, where the input has one.
    pub url: Option<String>,
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

/// What reading one shard did.
#[derive(Clone, Debug, Default)]
pub struct ShardRead {
    /// Items sent downstream.
    pub sent: u64,
    /// Rows not sent because img2dataset did not download them, by `status`.
    pub skipped: BTreeMap<String, u64>,
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

/// What a listing saw, for the message when nothing in it is readable.
#[derive(Default)]
struct Found {
    by_extension: BTreeMap<String, usize>,
    not_shards: Vec<(String, String)>,
}

impl Found {
    fn describe(&self, input: &Location, params: &IngestParams) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut unreadable: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, why) in &self.not_shards {
            unreadable.entry(why.as_str()).or_default().push(name);
        }
        for (why, names) in &unreadable {
            let ext = extension(names[0]).unwrap_or_default();
            parts.push(format!(
                "{} .{ext} object(s) (e.g. {}) but {why}",
                names.len(),
                names[0]
            ));
        }
        for (ext, n) in &self.by_extension {
            let shown = if ext.is_empty() {
                "(no extension)"
            } else {
                ext
            };
            parts.push(format!("{n} .{shown} object(s)"));
        }
        let what = if parts.is_empty() {
            "nothing but hidden or `_` objects".to_string()
        } else {
            parts.join("; ")
        };
        let forced = match params.format {
            InputFormat::Auto => String::new(),
            f => format!(" with --input-format {f:?}").to_ascii_lowercase(),
        };
        format!(
            "input {} holds no shard blindspot can read{forced}: found {what}. It reads image folders \
             (jpg, jpeg, png, webp, gif), webdataset .tar shards, img2dataset Parquet with image \
             bytes (a `jpg` column, or pass --image-column) and URI manifests (.parquet, .csv, \
             .tsv, .jsonl with a `uri` or `url` column)",
            input.url
        )
    }
}

/// Lists the shards of an input, in a stable order (see the module documentation for the
/// kinds). An input that is a single tar, image, Parquet object or manifest works too. An
/// input with nothing readable is an error that says what it holds.
pub async fn list_shards(input: &Location, params: &IngestParams) -> Result<Vec<Shard>> {
    let (objects, single) = list_objects(input).await?;
    let want = |f: InputFormat| params.format == InputFormat::Auto || params.format == f;
    let Listing {
        mut found,
        mut shards,
        folders,
        mut sidecars,
        tables,
    } = Listing::of(input, objects, single, &want);
    let sidecar_count = sidecars.len();
    shards.extend(folder_shards(input, folders, &mut sidecars));
    if shards.is_empty() && sidecar_count > 0 {
        *found.by_extension.entry("txt/.json".into()).or_default() += sidecar_count;
    }
    // Parquet objects with image bytes are shards; the others may be manifests.
    let mut manifests = Vec::new();
    for (rel, meta, format) in tables {
        if format == TableFormat::Parquet && want(InputFormat::Parquet) {
            match parquet_shard(input, &rel, &meta, params).await {
                Ok(Some(shard)) => {
                    shards.push(shard);
                    continue;
                }
                Ok(None) => {}
                Err(why) => {
                    found.not_shards.push((rel, why));
                    continue;
                }
            }
        }
        manifests.push((rel, meta, format));
    }
    // Manifests are read when asked for, or when the input holds nothing else: img2dataset
    // writes a metadata Parquet with a `url` column beside every tar, which must not be read
    // as a list of images to download again.
    let read_manifests = params.format == InputFormat::Manifest
        || (params.format == InputFormat::Auto && shards.is_empty());
    for (rel, meta, format) in manifests {
        if !read_manifests {
            tracing::debug!(object = %rel, "not read: a table beside the image shards");
            continue;
        }
        match manifest_shards(input, &rel, &meta, format, params).await? {
            Ok(parts) => shards.extend(parts),
            Err(why) => found.not_shards.push((rel, why)),
        }
    }
    if shards.is_empty() {
        return Err(Error::Usage(found.describe(input, params)));
    }
    shards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(shards)
}

/// The input's objects sorted by what they are.
struct Listing {
    found: Found,
    shards: Vec<Shard>,
    folders: BTreeMap<String, Vec<(String, ObjectMeta)>>,
    sidecars: HashMap<String, ObjectMeta>,
    tables: Vec<(String, ObjectMeta, TableFormat)>,
}

impl Listing {
    /// Tars are shards; images gather by folder, with their sidecars; tables wait to be read;
    /// anything else is counted by extension. Hidden and bookkeeping objects are skipped.
    fn of(
        input: &Location,
        objects: Vec<ObjectMeta>,
        single: bool,
        want: &dyn Fn(InputFormat) -> bool,
    ) -> Listing {
        let mut found = Found::default();
        let mut shards = Vec::new();
        let mut folders: BTreeMap<String, Vec<(String, ObjectMeta)>> = Default::default();
        let mut sidecars: HashMap<String, ObjectMeta> = HashMap::new();
        let mut tables: Vec<(String, ObjectMeta, TableFormat)> = Vec::new();
        for meta in objects {
            let rel = match single {
                true => meta.location.filename().unwrap_or_default().to_string(),
                false => input.relative(&meta.location),
            };
            if rel
                .split('/')
                .any(|part| part.starts_with('.') || part.starts_with('_'))
            {
                continue; // hidden files and our own bookkeeping (`_lock.json`, `_commits/`)
            }
            let ext = extension(&rel).unwrap_or_default();
            if ext == "tar" && want(InputFormat::Tar) {
                shards.push(Shard {
                    id: segment_id(&rel),
                    uri: input.uri_of(&meta.location),
                    name: rel,
                    kind: ShardKind::Tar(meta),
                });
            } else if is_image_name(&rel) && want(InputFormat::Folder) {
                let dir = rel
                    .rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_else(|| ".".to_string());
                folders.entry(dir).or_default().push((rel, meta));
            } else if (ext == "txt" || ext == "json") && want(InputFormat::Folder) {
                sidecars.insert(rel, meta);
            } else if let Some(format) = TableFormat::of(&rel) {
                tables.push((rel, meta, format));
            } else {
                *found.by_extension.entry(ext).or_default() += 1;
            }
        }
        Listing {
            found,
            shards,
            folders,
            sidecars,
            tables,
        }
    }
}

/// The objects under the input, or the one object it names; true in the second case.
async fn list_objects(input: &Location) -> Result<(Vec<ObjectMeta>, bool)> {
    let mut objects = input.list("").await?;
    if objects.is_empty() {
        // Perhaps the input names one object rather than a prefix.
        match input.store.head(&input.prefix).await {
            Ok(meta) => objects.push(meta),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Usage(format!(
                "input {} holds no objects; check the URL (a folder, a prefix, a .tar, a .parquet or an image)",
                input.url
            )))
            }
            Err(e) => return Err(Error::storage(&input.url, e)),
        }
    }
    let single = objects.len() == 1 && objects[0].location == input.prefix;
    Ok((objects, single))
}

/// A shard per folder of images, each with its sidecars (taken from `sidecars`).
fn folder_shards(
    input: &Location,
    folders: BTreeMap<String, Vec<(String, ObjectMeta)>>,
    sidecars: &mut HashMap<String, ObjectMeta>,
) -> Vec<Shard> {
    let mut shards = Vec::new();
    for (dir, images) in folders {
        let uri = match dir == "." {
            true => input.url.clone(),
            false => format!("{}/{dir}", input.url),
        };
        // In name order, whatever order the store lists them in: the same folder gives the
        // same shard, and of two images with one stem (`x.jpg`, `x.png`) the same one is kept.
        let mut images = images;
        images.sort_by(|a, b| a.0.cmp(&b.0));
        let images = images
            .into_iter()
            .map(|(rel, meta)| {
                let stem = strip_extension(&rel);
                FolderImage {
                    txt: sidecars.remove(&format!("{stem}.txt")),
                    json: sidecars.remove(&format!("{stem}.json")),
                    meta,
                }
            })
            .collect();
        shards.push(Shard {
            id: segment_id(&format!("{dir}/")),
            uri,
            name: dir,
            kind: ShardKind::Folder(images),
        });
    }
    shards
}

/// A Parquet object as an img2dataset shard (image bytes in a column); None: perhaps a
/// manifest; Err: why it is neither (not Parquet, or `--input-format parquet` without an
/// image column).
async fn parquet_shard(
    input: &Location,
    rel: &str,
    meta: &ObjectMeta,
    params: &IngestParams,
) -> Result<Option<Shard>, String> {
    let footer = io::footer_at(&input.store, meta)
        .await
        .map_err(|e| format!("they are not Parquet ({e})"))?;
    let rows = footer.metadata().file_metadata().num_rows().max(0) as u64;
    if let Some(p) = ImageParquet::from_schema(
        meta.clone(),
        rows,
        footer.schema(),
        params.image_column.as_deref(),
        &params.key_column,
    ) {
        return Ok(Some(Shard {
            id: segment_id(rel),
            uri: input.uri_of(&meta.location),
            name: rel.to_string(),
            kind: ShardKind::Parquet(p),
        }));
    }
    if params.format != InputFormat::Parquet {
        return Ok(None);
    }
    let columns: Vec<&str> = footer
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let needs = params.image_column.as_deref().unwrap_or("jpg");
    Err(format!(
        "no binary image column: img2dataset Parquet needs a `{needs}` column, or pass --image-column (columns: {})",
        columns.join(", ")
    ))
}

/// A manifest's shards (parts of `rows_per_shard` rows), or why it is not one.
async fn manifest_shards(
    input: &Location,
    rel: &str,
    meta: &ObjectMeta,
    format: TableFormat,
    params: &IngestParams,
) -> Result<Result<Vec<Shard>, String>> {
    let uri = input.uri_of(&meta.location);
    let parts = manifest::parts(
        &input.store,
        meta,
        &uri,
        format,
        &params.key_column,
        params.rows_per_shard,
    )
    .await?;
    Ok(match parts {
        Ok(parts) if parts.is_empty() => Err("they have no rows".into()),
        Ok(parts) => Ok(parts
            .into_iter()
            .map(|part| {
                let name = format!("{rel}#{}+{}", part.start, part.len);
                Shard {
                    id: segment_id(&name),
                    uri: uri.clone(),
                    name,
                    kind: ShardKind::Manifest(part),
                }
            })
            .collect()),
        Err(why) => Err(
            match format == TableFormat::Parquet && params.format == InputFormat::Auto {
                true => {
                    let needs = params.image_column.as_deref().unwrap_or("jpg");
                    format!("no binary image column (img2dataset Parquet needs a `{needs}` column, or pass --image-column) and, as a manifest, {why}")
                }
                false => format!("as a manifest, {why}"),
            },
        ),
    })
}

/// Reads shards: holds what every shard of a run shares (the fetcher of manifests).
pub struct ShardReader {
    input: Location,
    fetcher: Arc<Fetcher>,
}

impl ShardReader {
    /// A reader of `input`'s shards.
    pub fn new(input: &Location, params: &IngestParams) -> Result<ShardReader> {
        Ok(ShardReader {
            input: input.clone(),
            fetcher: Arc::new(Fetcher::new(&params.fetch)?),
        })
    }

    /// Sends every item of `shard` to `tx`. Unreadable inputs are sent as
    /// [`Ingested::Failed`]; only a closed channel ends it early.
    pub async fn read(&self, shard: &Shard, tx: mpsc::Sender<Ingested>) -> Result<ShardRead> {
        let input = &self.input;
        let concurrency = self.fetcher.params().concurrency;
        let max_bytes = self.fetcher.params().max_bytes;
        match &shard.kind {
            ShardKind::Folder(objects) => {
                let sent = read_folder(input, shard, objects, concurrency, max_bytes, tx).await?;
                Ok(ShardRead {
                    sent,
                    ..Default::default()
                })
            }
            ShardKind::Tar(meta) => Ok(ShardRead {
                sent: read_tar(input, meta, max_bytes, tx).await?,
                ..Default::default()
            }),
            ShardKind::Parquet(p) => {
                let stem = strip_extension(&shard.name).to_string();
                parquet::read(&input.store, &shard.uri, &stem, p, tx).await
            }
            ShardKind::Manifest(part) => {
                manifest::read(&input.store, part, &self.fetcher, tx).await
            }
        }
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

/// What img2dataset's `.json` sidecar says about a sample.
#[derive(Default)]
struct Sidecar {
    key: Option<String>,
    url: Option<String>,
    caption: Option<String>,
}

fn sidecar(json: &[u8]) -> Sidecar {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Sidecar::default();
    };
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Sidecar {
        key: get("key"),
        url: get("url"),
        caption: get("caption"),
    }
}

async fn get_text(input: &Location, meta: &Option<ObjectMeta>) -> Option<Bytes> {
    let meta = meta.as_ref()?;
    input.get_bytes(&meta.location).await.ok()
}

async fn read_folder(
    input: &Location,
    shard: &Shard,
    objects: &[FolderImage],
    fetch_concurrency: usize,
    max_bytes: u64,
    tx: mpsc::Sender<Ingested>,
) -> Result<u64> {
    let single = objects.len() == 1 && objects[0].meta.location == input.prefix;
    let mut keys = HashSet::new();
    let fetches = futures::stream::iter(objects.iter().cloned())
        .map(|image| {
            let uri = input.uri_of(&image.meta.location);
            let rel = if single {
                image
                    .meta
                    .location
                    .filename()
                    .unwrap_or_default()
                    .to_string()
            } else {
                input.relative(&image.meta.location)
            };
            let key = strip_extension(&rel).to_string();
            // A key is the name without its extension (as img2dataset's sidecars pair with
            // it): a second image of the same stem is an error, not a second row of the key.
            let first = keys.insert(key.clone());
            async move {
                if !first {
                    return Ingested::Failed(Failure {
                        message: format!(
                            "{uri} has the key {key:?} of an image before it in this folder (the same name with another extension); only the first is embedded"
                        ),
                        key,
                        uri,
                        kind: "duplicate_key".into(),
                    });
                }
                if image.meta.size > max_bytes {
                    return Ingested::Failed(Failure {
                        message: fetch::too_large(image.meta.size, max_bytes),
                        key,
                        uri,
                        kind: "too_large".into(),
                    });
                }
                read_image(input, &image, key, uri).await
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

/// One folder image with its sidecars. Sidecars are best effort: a missing or broken one
/// loses a caption, not an image.
async fn read_image(input: &Location, image: &FolderImage, key: String, uri: String) -> Ingested {
    let bytes = match input.get_bytes(&image.meta.location).await {
        Ok(bytes) => bytes,
        Err(e) => return Ingested::Failed(fetch_failure(key, uri, &e)),
    };
    let meta = get_text(input, &image.json)
        .await
        .map(|j| sidecar(&j))
        .unwrap_or_default();
    let caption = get_text(input, &image.txt)
        .await
        .map(|t| String::from_utf8_lossy(&t).trim().to_string())
        .filter(|t| !t.is_empty())
        .or(meta.caption);
    Ingested::Image(Item {
        key,
        uri,
        bytes,
        caption,
        url: meta.url,
    })
}

/// Members of one key in a tar, gathered while streaming.
#[derive(Default)]
struct Group {
    stem: String,
    image: Option<(String, Bytes)>,
    json: Sidecar,
    caption: Option<String>,
    members: Vec<String>,
    extra_images: Vec<String>,
    /// An image member over `--max-bytes`, not read: (name, declared size).
    too_large: Option<(String, u64)>,
}

impl Group {
    fn into_items(self, tar_uri: &str, max_bytes: u64) -> Vec<Ingested> {
        let key = self.json.key.unwrap_or_else(|| self.stem.clone());
        let mut out = Vec::new();
        match self.image {
            Some((name, bytes)) => {
                out.push(Ingested::Image(Item {
                    key: key.clone(),
                    uri: format!("{tar_uri}#{name}"),
                    bytes,
                    caption: self.caption.or(self.json.caption),
                    url: self.json.url,
                }));
            }
            None if self.too_large.is_some() => {
                let (name, size) = self.too_large.expect("checked");
                out.push(Ingested::Failed(Failure {
                    key: key.clone(),
                    uri: format!("{tar_uri}#{name}"),
                    kind: "too_large".into(),
                    message: fetch::too_large(size, max_bytes),
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

async fn read_tar(
    input: &Location,
    meta: &ObjectMeta,
    max_bytes: u64,
    tx: mpsc::Sender<Ingested>,
) -> Result<u64> {
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
    let handle =
        tokio::task::spawn_blocking(move || walk_tar(bridge, &tar_uri, &name, max_bytes, &tx));
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
    max_bytes: u64,
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
                    emit(g.into_items(tar_uri, max_bytes));
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
            if !emit(done.into_items(tar_uri, max_bytes)) {
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
        let wanted = IMAGE_EXTENSIONS.contains(&ext.as_str()) || ext == "json" || ext == "txt";
        if !wanted {
            continue; // other sidecars are not needed
        }
        // The header's size is the archive's word: nothing larger than `--max-bytes` is read
        // (or allocated for); an image that is becomes the group's `too_large` error.
        if entry.size() > max_bytes {
            if IMAGE_EXTENSIONS.contains(&ext.as_str()) && g.image.is_none() {
                g.too_large = Some((member, entry.size()));
            }
            continue;
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        if let Err(e) = std::io::Read::read_to_end(&mut entry, &mut buf) {
            emit(vec![tar_failure(tar_uri, tar_name, &e)]);
            return sent;
        }
        if ext == "json" {
            g.json = sidecar(&buf);
        } else if ext == "txt" {
            let text = String::from_utf8_lossy(&buf).trim().to_string();
            g.caption = (!text.is_empty()).then_some(text);
        } else if g.image.is_none() {
            g.image = Some((member, Bytes::from(buf)));
        } else {
            g.extra_images.push(member);
        }
    }
    if let Some(g) = group.take() {
        emit(g.into_items(tar_uri, max_bytes));
    }
    sent
}

/// Streams the tar at `tar_uri` once and sends each member named in `wanted` (member names as
/// in `<tar>#<member>` uris), for the dino stage; stops early once all are found.
pub async fn tar_members(
    fetcher: &Fetcher,
    tar_uri: &str,
    mut wanted: std::collections::HashSet<String>,
    tx: mpsc::Sender<(String, Bytes)>,
) -> Result<(), fetch::FetchError> {
    use fetch::FetchError;
    let (loc, path) = fetcher.store_of(tar_uri)?;
    let stream = match loc.store.get(&path).await {
        Ok(r) => r.into_stream(),
        Err(object_store::Error::NotFound { .. }) => {
            return Err(FetchError::permanent(
                "not_found",
                format!("{tar_uri} is gone"),
            ))
        }
        Err(e) => return Err(FetchError::permanent("read", e.to_string())),
    };
    let reader = SyncIoBridge::new(StreamReader::new(
        stream.map(|r| r.map_err(std::io::Error::other)),
    ));
    let tar_uri = tar_uri.to_string();
    let max_bytes = fetcher.params().max_bytes;
    tokio::task::spawn_blocking(move || {
        let damaged =
            |e: std::io::Error| FetchError::permanent("tar", format!("{tar_uri} is damaged: {e}"));
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            let member = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !wanted.remove(&member) {
                continue;
            }
            if entry.size() > max_bytes {
                // `embed` refused it (`too_large`), so it has no row that asks for it.
                continue;
            }
            let mut buf = Vec::with_capacity(entry.size() as usize);
            std::io::Read::read_to_end(&mut entry, &mut buf).map_err(damaged)?;
            if tx.blocking_send((member, Bytes::from(buf))).is_err() || wanted.is_empty() {
                break;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| FetchError::permanent("read", e.to_string()))?
}

fn tar_failure(tar_uri: &str, tar_name: &str, err: &std::io::Error) -> Ingested {
    Ingested::Failed(Failure {
        key: format!("{}#", strip_extension(tar_name)),
        uri: tar_uri.to_string(),
        kind: "tar".into(),
        message: format!("the archive is damaged, members after this point are lost: {err}"),
    })
}

/// The `errors` rows of `shard`'s failures, each with the stage that met it.
pub fn errors_batch(shard: &str, errors: &[(&'static str, Failure)]) -> Result<RecordBatch> {
    let schema = crate::table::schema::errors();
    fn col<'a>(
        errors: &'a [(&'static str, Failure)],
        f: impl Fn(&'a (&'static str, Failure)) -> &'a str,
    ) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(errors.iter().map(f)))
    }
    RecordBatch::try_new(
        schema,
        vec![
            col(errors, |e| e.1.key.as_str()),
            col(errors, |e| e.1.uri.as_str()),
            col(errors, |_| shard),
            col(errors, |e| e.0),
            col(errors, |e| e.1.kind.as_str()),
            col(errors, |e| e.1.message.as_str()),
        ],
    )
    .map_err(|e| Error::table(crate::table::ERRORS.name, e))
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
        // Over the 48-byte bound of this walk: not read, an error of its own.
        add("000003.png", &[7u8; 64]);
        let bytes = builder.into_inner().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let n = tokio::task::spawn_blocking(move || {
            walk_tar(
                std::io::Cursor::new(bytes),
                "memory://t/s.tar",
                "s.tar",
                48,
                &tx,
            )
        })
        .await
        .unwrap();
        let mut got = Vec::new();
        while let Some(i) = rx.recv().await {
            got.push(i);
        }
        assert_eq!(n, 4);
        match &got[0] {
            Ingested::Image(i) => {
                assert_eq!(i.key, "000001");
                assert_eq!(i.uri, "memory://t/s.tar#000001.jpg");
                assert_eq!(i.caption.as_deref(), Some("a caption"));
                assert_eq!(i.url.as_deref(), Some("http://x"));
            }
            other => panic!("{other:?}"),
        }
        match &got[1] {
            Ingested::Failed(f) => assert_eq!(f.kind, "no_image"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&got[2], Ingested::Image(i) if i.key == "000002"));
        match &got[3] {
            Ingested::Failed(f) => {
                assert_eq!((f.kind.as_str(), f.key.as_str()), ("too_large", "000003"));
                assert!(f.message.contains("above --max-bytes 48"), "{}", f.message);
            }
            other => panic!("{other:?}"),
        }
    }
}
