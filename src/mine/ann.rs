//! The CLIP nearest-neighbour index on storage: usearch HNSW settings, building it with all
//! cores, saving it under the run root (`index/clip.usearch` and the label -> key map
//! `index/labels.parquet`), and opening it for search with the record of its commit. The index
//! stage builds it; the candidates stage opens it.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use futures::TryStreamExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::vectors::UniqueVectors;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::Location;
pub use crate::table::records::IndexCommit;
use crate::table::{self, io, schema, Catalog, Generations};

/// The index file, relative to the run root.
pub const INDEX_FILE: &str = "index/clip.usearch";
/// The label -> key map, relative to the run root.
pub const LABELS: &str = "index/labels.parquet";

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

/// Settings of the index stage: a spec's `[index]` section and the flags of `blindspot index`
/// (one shape, one check). Records written before it was the section used snake_case names.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IndexParams {
    /// Vector storage in the index.
    #[arg(long, value_enum, default_value_t = Quantization::F16)]
    pub quantization: Quantization,
    /// HNSW connectivity (M): edges per node.
    #[arg(long, default_value_t = IndexParams::default().connectivity)]
    pub connectivity: usize,
    /// HNSW expansion while adding (efConstruction).
    #[arg(long, default_value_t = IndexParams::default().expansion_add)]
    #[serde(alias = "expansion_add")]
    pub expansion_add: usize,
    /// HNSW expansion while searching (ef), saved with the index.
    #[arg(long, default_value_t = IndexParams::default().expansion_search)]
    #[serde(alias = "expansion_search")]
    pub expansion_search: usize,
    /// Build threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl IndexParams {
    /// Every problem with these settings, by field name (the caller adds `--` or `[index]`).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.connectivity < 2 {
            problems.push(format!(
                "connectivity {} must be at least 2",
                self.connectivity
            ));
        }
        if self.expansion_add == 0 || self.expansion_search == 0 {
            problems.push("expansion-add and expansion-search must be at least 1".into());
        }
        problems
    }
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
    progress.start(Stage::Index.name(), Some(vectors.len() as u64));
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

/// A local file path for the index: the run root's own file when the root is local,
/// otherwise a file in a temp folder that is uploaded.
fn local_index_path(root: &Location) -> Option<std::path::PathBuf> {
    if root.is_local() {
        Some(std::path::PathBuf::from("/").join(root.path(INDEX_FILE).as_ref()))
    } else {
        None
    }
}

/// Saves the index file and its label -> key map (`keys[label]`) under the run root; the
/// caller commits them.
pub async fn save(root: &Location, index: &usearch::Index, keys: &[String]) -> Result<()> {
    save_index(root, index).await?;
    let labels = RecordBatch::try_new(
        schema::index_labels(),
        vec![
            Arc::new(UInt64Array::from_iter_values(0..keys.len() as u64)),
            Arc::new(StringArray::from_iter_values(keys.iter())),
        ],
    )
    .map_err(|e| Error::table(LABELS, e))?;
    let base = LABELS.trim_end_matches(".parquet");
    io::write_batches(root, base, &schema::index_labels(), &[labels]).await?;
    Ok(())
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
pub async fn open(catalog: &Catalog) -> Result<OpenIndex> {
    let root = catalog.root();
    let Some((_, commit)) = catalog.record_of::<IndexCommit>("").await? else {
        return Err(Stage::Index.run_first(&root.url));
    };
    let params: IndexParams = commit.params.read()?;
    let shards: Vec<String> = catalog
        .commits(&table::EMBEDDINGS, Generations::All)
        .await?
        .into_iter()
        .map(|c| c.unit)
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
    let index = new_index(commit.dim, &params)?;
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
    index.change_expansion_search(params.expansion_search);
    let mut keys = Vec::with_capacity(commit.vectors as usize);
    let mut labels = io::scan_objects(
        root,
        vec![LABELS.to_string()],
        &["key"],
        io::SCAN_BATCH_ROWS,
    );
    while let Some(batch) = labels.try_next().await? {
        keys.extend(
            io::strings(&batch, "key")?
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
