//! The index stage (for `candidates --method index`): a usearch HNSW index (cosine) over the
//! unique `embeddings.clip` vectors, built with all cores and saved under the run root, after
//! collapsing exact duplicates (same content hash) so identical images neither crowd neighbour
//! lists nor degrade the graph (the candidates stage writes them to `duplicates`).
//!
//! Layout: `index/clip.usearch` and `index/labels.parquet` (see `ann`), and the commit
//! `_commits/index.json` written last. Labels are row numbers over the unique
//! images, in shard-id order.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::ann::{self, IndexCommit, IndexParams};
use super::vectors::unique_vectors;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::Location;
use crate::table::records::Settings;
use crate::table::{Catalog, Commit, CommitSet};
use crate::units;

/// What an index run did.
#[derive(Clone, Debug, Serialize)]
pub struct IndexSummary {
    /// Embedding rows read.
    pub rows: u64,
    /// Unique vectors indexed.
    pub vectors: u64,
    /// Exact duplicates collapsed.
    pub duplicates: u64,
    /// Peak resident set of the process (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Wall time.
    pub seconds: f64,
}

/// The index stage: reads the embeddings, collapses duplicates, builds and saves the index.
pub async fn index(
    root: &Location,
    params: &IndexParams,
    progress: Arc<dyn Progress>,
) -> Result<IndexSummary> {
    Stage::Index.settings(params.check())?;
    units::locked(root, Stage::Index, index_locked(root, params, progress)).await
}

async fn index_locked(
    root: &Location,
    params: &IndexParams,
    progress: Arc<dyn Progress>,
) -> Result<IndexSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let vectors = unique_vectors(&catalog).await?;
    let generation = catalog.begin(Stage::Index.name()).await?;
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
            let built = ann::build(&vectors, &params, progress.as_ref());
            (vectors, built)
        })
        .await
        .map_err(|e| Error::Internal(format!("index build: {e}")))?
    };
    let built = built?;
    ann::save(root, &built, &vectors.keys).await?;
    let record = IndexCommit {
        vectors: vectors.len() as u64,
        duplicates: vectors.duplicates.len() as u64,
        dim: vectors.dim,
        params: Settings::of(params),
        shards: vectors.shards.clone(),
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new("", generation, &record)?;
    catalog.commit(CommitSet::INDEX, &commit).await?;
    Ok(IndexSummary {
        rows: vectors.rows,
        vectors: record.vectors,
        duplicates: record.duplicates,
        peak_rss_bytes: crate::progress::peak_rss_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
