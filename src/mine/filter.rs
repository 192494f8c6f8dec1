//! The filter stage: DataFusion runs `sql/pairs.sql` over the `candidates` and `embeddings`
//! tables, keeping the pairs whose DINOv2 similarity is below the threshold, and streams them
//! to the `pairs` table.

use std::time::Instant;

use datafusion::common::ScalarValue;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sql;
use crate::storage::{Location, RunLock};
use crate::table::{self, Catalog, Commit, CommitSet, WriteParams};

/// The filter stage's record in its commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FilterCommit {
    /// Pairs written.
    pub pairs: u64,
    /// The DINOv2 threshold used.
    pub dino_max: f32,
    /// The run id stamped on the rows.
    pub run_id: String,
    /// The blindspot version.
    pub version: String,
}

/// What a filter run did.
#[derive(Clone, Debug, Serialize)]
pub struct FilterSummary {
    /// CLIP-blind pairs written.
    pub pairs: u64,
    /// The run id.
    pub run_id: String,
    /// Wall time.
    pub seconds: f64,
}

/// A run id: UTC time and a few random-enough hex digits.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let tag = blake3::hash(format!("{:?}{}", now, std::process::id()).as_bytes()).to_hex();
    format!("{}-{}", now.as_secs(), &tag[..8])
}

/// The filter stage.
pub async fn filter(root: &Location, dino_max: f32) -> Result<FilterSummary> {
    if !(-1.0..=1.0).contains(&dino_max) {
        return Err(Error::Usage(format!(
            "--dino-max {dino_max} must be between -1 and 1"
        )));
    }
    let lock = RunLock::acquire(root, "filter").await?;
    let result = filter_locked(root, dino_max).await;
    lock.release().await;
    result
}

async fn filter_locked(root: &Location, dino_max: f32) -> Result<FilterSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let (ctx, tables) = sql::session(root).await?;
    if !tables.iter().any(|t| t == table::CANDIDATES.name) {
        return Err(Error::Usage(format!(
            "{} has no candidates; run `blindspot candidates --root {}` first",
            root.url, root.url
        )));
    }
    let generation = catalog.begin("filter").await?;
    let run_id = new_run_id();
    let df = ctx
        .sql(sql::queries::PAIRS)
        .await
        .and_then(|df| {
            df.with_param_values(vec![
                ScalarValue::Float32(Some(dino_max)),
                ScalarValue::Utf8(Some(run_id.clone())),
            ])
        })
        .map_err(|e| Error::table("pairs", format!("sql/pairs.sql: {e}")))?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| Error::table("pairs", e))?;
    let mut writer = catalog.writer(&table::PAIRS, "pairs", schema, WriteParams::default())?;
    let mut pairs = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::table("pairs", e))?;
        pairs += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    let objects = writer.finish().await?;
    let record = FilterCommit {
        pairs,
        dino_max,
        run_id: run_id.clone(),
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new("", generation, &record)?.with(&table::PAIRS, objects);
    catalog.commit(CommitSet::FILTER, &commit).await?;
    Ok(FilterSummary {
        pairs,
        run_id,
        seconds: started.elapsed().as_secs_f64(),
    })
}
