//! The index stage: a usearch HNSW index (cosine) over `embeddings.clip`, built with all cores
//! and saved under the run root, after collapsing exact duplicates (same content hash) into
//! their own `duplicates` table so identical images neither crowd neighbour lists nor degrade
//! the graph.
//!
//! Layout: `index/clip.usearch` (the graph and its vectors), `index/labels.parquet` (usearch
//! label -> key, in label order), `duplicates/duplicates.parquet`, and `_commits/index.json`
//! written last. Labels are row numbers over the unique images, in shard-id order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::embed::{self, ShardCommit};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::storage::{Location, RunLock};
use crate::tables;

/// Where the index's commit manifest lives.
pub const COMMIT: &str = "_commits/index.json";
/// The index file, relative to the run root.
pub const INDEX_FILE: &str = "index/clip.usearch";
/// The label -> key table.
pub const LABELS: &str = "index/labels.parquet";
/// The exact-duplicates table.
pub const DUPLICATES: &str = "duplicates/duplicates.parquet";

/// How vectors are stored in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Half precision (the default): half the memory, recall unchanged at these thresholds.
    #[default]
    F16,
    /// Full precision.
    F32,
    /// 8-bit integers: a quarter of the memory, some recall lost.
    I8,
}

impl Quantization {
    fn scalar(self) -> usearch::ScalarKind {
        match self {
            Quantization::F16 => usearch::ScalarKind::F16,
            Quantization::F32 => usearch::ScalarKind::F32,
            Quantization::I8 => usearch::ScalarKind::I8,
        }
    }
}

/// Settings of the index stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexParams {
    /// Vector storage in the index.
    pub quantization: Quantization,
    /// HNSW connectivity (M): edges per node.
    pub connectivity: usize,
    /// Candidate list size while building (efConstruction).
    pub expansion_add: usize,
    /// Candidate list size while searching (ef), saved with the index.
    pub expansion_search: usize,
    /// Build threads; 0 means one per core.
    pub threads: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams {
            quantization: Quantization::F16,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
            threads: 0,
        }
    }
}

/// The index's commit manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexCommit {
    /// Unique vectors in the index.
    pub vectors: u64,
    /// Rows collapsed as exact duplicates.
    pub duplicates: u64,
    /// Vector dimension.
    pub dim: usize,
    /// The settings it was built with.
    pub params: IndexParams,
    /// The embed shards it covers, by id: a later embed run makes the index stale.
    pub shards: Vec<String>,
    /// The blindspot version that built it.
    pub version: String,
}

/// What an index run did.
#[derive(Clone, Debug, Serialize)]
pub struct IndexSummary {
    /// Embedding rows read.
    pub rows: u64,
    /// Unique vectors indexed.
    pub vectors: u64,
    /// Exact duplicates collapsed.
    pub duplicates: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The schema of `index/labels.parquet`.
pub fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("label", DataType::UInt64, false),
        Field::new("key", DataType::Utf8, false),
    ]))
}

/// The schema of the `duplicates` table: `key` is byte-identical to `duplicate_of`, which is
/// the copy kept in the index.
pub fn duplicates_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("duplicate_of", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
    ]))
}

/// The unique CLIP vectors of a run root, exact duplicates collapsed: what both the index
/// and the exact search work on.
pub struct UniqueVectors {
    /// Keys, by label.
    pub keys: Vec<String>,
    /// Vectors, flat, by label.
    pub data: Vec<f32>,
    /// Dimension.
    pub dim: usize,
    /// `(key, duplicate_of, content_hash)` of every collapsed row.
    pub duplicates: Vec<(String, String, String)>,
    /// The shards read.
    pub shards: Vec<String>,
    /// Rows read.
    pub rows: u64,
}

impl UniqueVectors {
    /// Number of unique vectors.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The vector of one label.
    pub fn vector(&self, label: usize) -> &[f32] {
        &self.data[label * self.dim..(label + 1) * self.dim]
    }
}

/// Reads every committed `embeddings.clip` vector, collapsing exact duplicates: of each
/// content hash, the row with the smallest key is kept.
pub async fn unique_vectors(root: &Location) -> Result<UniqueVectors> {
    let commits: Vec<ShardCommit> = embed::commits_in_order(root).await?;
    if commits.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no committed embeddings; run `blindspot embed` first",
            root.url
        )));
    }
    let mut seen: HashMap<[u8; 16], u64> = HashMap::new();
    let mut dup_labels: Vec<(String, usize, String)> = Vec::new();
    let mut out = UniqueVectors {
        keys: Vec::new(),
        data: Vec::new(),
        dim: 0,
        duplicates: Vec::new(),
        shards: Vec::new(),
        rows: 0,
    };
    for commit in &commits {
        out.shards.push(commit.id.clone());
        for batch in
            tables::read(root, &commit.embeddings, &["key", "content_hash", "clip"]).await?
        {
            let keys = tables::strings(&batch, "key")?;
            let hashes = tables::strings(&batch, "content_hash")?;
            let (flat, dim) = tables::vectors_flat(&batch, "clip")?;
            if out.dim != 0 && out.dim != dim {
                return Err(Error::table(
                    "embeddings",
                    format!(
                        "clip dimension changes from {} to {dim} in {}",
                        out.dim, commit.embeddings
                    ),
                ));
            }
            out.dim = dim;
            for (i, (key, hash)) in keys.iter().zip(hashes.iter()).enumerate() {
                let (key, hash) = (key.unwrap_or_default(), hash.unwrap_or_default());
                out.rows += 1;
                match seen.entry(hash_prefix(hash)) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        // The smallest key of a group is kept, whatever order rows came in.
                        let label = *first.get() as usize;
                        let mut dropped = key.to_string();
                        if dropped < out.keys[label] {
                            std::mem::swap(&mut dropped, &mut out.keys[label]);
                        }
                        dup_labels.push((dropped, label, hash.to_string()));
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(out.keys.len() as u64);
                        out.keys.push(key.to_string());
                        out.data.extend_from_slice(&flat[i * dim..(i + 1) * dim]);
                    }
                }
            }
        }
    }
    out.duplicates = dup_labels
        .into_iter()
        .map(|(k, label, h)| (k, out.keys[label].clone(), h))
        .collect();
    out.duplicates.sort();
    Ok(out)
}

/// A 128-bit digest of a content hash string, whatever its format (collisions are out of
/// reach at 128 bits, and the map stays small).
fn hash_prefix(content_hash: &str) -> [u8; 16] {
    let digest = blake3::hash(content_hash.as_bytes());
    digest.as_bytes()[..16].try_into().expect("16 bytes")
}

/// A new, empty usearch index for `dim`-dimensional cosine vectors.
pub fn new_index(dim: usize, params: &IndexParams) -> Result<usearch::Index> {
    let options = usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::Cos,
        quantization: params.quantization.scalar(),
        connectivity: params.connectivity,
        expansion_add: params.expansion_add,
        expansion_search: params.expansion_search,
        multi: false,
    };
    usearch::Index::new(&options).map_err(|e| Error::Internal(format!("usearch: {e}")))
}

/// Builds the index over `vectors` with all cores.
pub fn build(
    vectors: &UniqueVectors,
    params: &IndexParams,
    progress: &dyn Progress,
) -> Result<usearch::Index> {
    let index = new_index(vectors.dim, params)?;
    let threads = if params.threads == 0 {
        rayon::current_num_threads()
    } else {
        params.threads
    };
    index
        .reserve_capacity_and_threads(vectors.len(), threads)
        .map_err(|e| Error::Internal(format!("usearch reserve: {e}")))?;
    progress.start("index", Some(vectors.len() as u64));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let failed = pool.install(|| {
        (0..vectors.len())
            .into_par_iter()
            .chunks(1024)
            .find_map_any(|labels| {
                for &label in &labels {
                    if let Err(e) = index.add(label as u64, vectors.vector(label)) {
                        return Some(format!("usearch add: {e}"));
                    }
                }
                progress.advance(labels.len() as u64);
                None
            })
    });
    progress.finish();
    match failed {
        Some(e) => Err(Error::Internal(e)),
        None => Ok(index),
    }
}

/// The index stage: reads the embeddings, collapses duplicates, builds and saves the index.
pub async fn index(
    root: &Location,
    params: &IndexParams,
    progress: Arc<dyn Progress>,
) -> Result<IndexSummary> {
    let lock = RunLock::acquire(root, "index").await?;
    let result = index_locked(root, params, progress).await;
    lock.release().await;
    result
}

async fn index_locked(
    root: &Location,
    params: &IndexParams,
    progress: Arc<dyn Progress>,
) -> Result<IndexSummary> {
    let started = Instant::now();
    let vectors = unique_vectors(root).await?;
    tracing::info!(
        rows = vectors.rows,
        unique = vectors.len(),
        duplicates = vectors.duplicates.len(),
        "embeddings read"
    );
    let (vectors, built) = {
        let params = params.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let built = build(&vectors, &params, progress.as_ref());
            (vectors, built)
        })
        .await
        .map_err(|e| Error::Internal(format!("index build: {e}")))?
    };
    let built = built?;
    save_index(root, &built).await?;

    let labels = RecordBatch::try_new(
        labels_schema(),
        vec![
            Arc::new(UInt64Array::from_iter_values(0..vectors.len() as u64)),
            Arc::new(StringArray::from_iter_values(vectors.keys.iter())),
        ],
    )
    .map_err(|e| Error::table(LABELS, e))?;
    tables::write(root, LABELS, &labels_schema(), &[labels]).await?;
    let d = &vectors.duplicates;
    let dups = RecordBatch::try_new(
        duplicates_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                d.iter().map(|x| x.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                d.iter().map(|x| x.1.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                d.iter().map(|x| x.2.as_str()),
            )),
        ],
    )
    .map_err(|e| Error::table(DUPLICATES, e))?;
    tables::write(root, DUPLICATES, &duplicates_schema(), &[dups]).await?;
    let commit = IndexCommit {
        vectors: vectors.len() as u64,
        duplicates: vectors.duplicates.len() as u64,
        dim: vectors.dim,
        params: params.clone(),
        shards: vectors.shards.clone(),
        version: crate::VERSION.to_string(),
    };
    root.put_json(COMMIT, &commit).await?;
    Ok(IndexSummary {
        rows: vectors.rows,
        vectors: commit.vectors,
        duplicates: commit.duplicates,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A local file path for the index: the run root's own file when the root is local,
/// otherwise a file in a temp folder that is uploaded.
fn local_index_path(root: &Location) -> Option<std::path::PathBuf> {
    if root.is_local() {
        Some(std::path::PathBuf::from("/").join(root.path(INDEX_FILE).as_ref()))
    } else {
        None
    }
}

async fn save_index(root: &Location, index: &usearch::Index) -> Result<()> {
    match local_index_path(root) {
        Some(path) => {
            let dir = path.parent().expect("the index file has a folder");
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
            // Write beside, then rename: a reader never sees half an index.
            let tmp = path.with_extension("usearch.tmp");
            index
                .save(&tmp.to_string_lossy())
                .map_err(|e| Error::Internal(format!("usearch save {}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })
        }
        None => {
            let mut buf = vec![0u8; index.serialized_length()];
            index
                .save_to_buffer(&mut buf)
                .map_err(|e| Error::Internal(format!("usearch save: {e}")))?;
            root.put(INDEX_FILE, bytes::Bytes::from(buf)).await
        }
    }
}

/// A committed index, opened for search: memory-mapped from a local run root, loaded into
/// memory from a remote one.
pub struct OpenIndex {
    /// The usearch index.
    pub index: usearch::Index,
    /// Its commit manifest.
    pub commit: IndexCommit,
    /// Keys by label.
    pub keys: Vec<String>,
}

/// Reads the index commit, checks it covers the current embeddings, and opens the index.
pub async fn open(root: &Location) -> Result<OpenIndex> {
    let path = root.path(COMMIT);
    let bytes = match root.get_bytes(&path).await {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::Usage(format!(
                "{} has no index; run `blindspot index --root {}` first",
                root.url, root.url
            )))
        }
        Err(e) => return Err(Error::storage(root.uri_of(&path), e)),
    };
    let commit: IndexCommit =
        serde_json::from_slice(&bytes).map_err(|e| Error::table("index commit", e))?;
    let shards: Vec<String> = embed::commits_in_order(root)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if shards != commit.shards {
        return Err(Error::Usage(format!(
            "the index of {} is stale: it covers {} embed shards, the run root now has {}; run `blindspot index --root {}` again",
            root.url,
            commit.shards.len(),
            shards.len(),
            root.url
        )));
    }
    let index = new_index(commit.dim, &commit.params)?;
    match local_index_path(root) {
        Some(p) => index
            .view(&p.to_string_lossy())
            .map_err(|e| Error::Internal(format!("usearch view {}: {e}", p.display())))?,
        None => {
            let path = root.path(INDEX_FILE);
            let bytes = root
                .get_bytes(&path)
                .await
                .map_err(|e| Error::storage(root.uri_of(&path), e))?;
            index
                .load_from_buffer(&bytes)
                .map_err(|e| Error::Internal(format!("usearch load: {e}")))?;
        }
    }
    index.change_expansion_search(commit.params.expansion_search);
    let mut keys = Vec::with_capacity(commit.vectors as usize);
    for batch in tables::read(root, LABELS, &["key"]).await? {
        keys.extend(
            tables::strings(&batch, "key")?
                .iter()
                .map(|k| k.unwrap_or_default().to_string()),
        );
    }
    if keys.len() as u64 != commit.vectors || index.size() as u64 != commit.vectors {
        return Err(Error::table(
            LABELS,
            format!(
                "{} labels and {} vectors for {} committed",
                keys.len(),
                index.size(),
                commit.vectors
            ),
        ));
    }
    Ok(OpenIndex {
        index,
        commit,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hashes_differing_anywhere_stay_apart() {
        // Regression: only the first 16 bytes were compared, so zero-padded hashes collided.
        assert_ne!(
            hash_prefix(&format!("{:064x}", 1)),
            hash_prefix(&format!("{:064x}", 2))
        );
        assert_eq!(hash_prefix("abc"), hash_prefix("abc"));
    }
}
