//! The filter stage: DataFusion runs `sql/pairs.sql` over the `candidates` and `embeddings`
//! tables, keeping the pairs whose DINOv2 similarity is below the threshold, and streams them
//! to the `pairs` table.
//!
//! Incremental: each run's commit names the candidate units (`unit@generation`) it covered.
//! When the earlier runs used the same threshold and every unit they covered is still
//! committed, a run filters only the candidate units added since (a nightly increment) and
//! appends its pairs as a new commit; otherwise it filters everything and replaces the table.

use std::collections::BTreeSet;
use std::time::Instant;

use datafusion::common::ScalarValue;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster;
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
    /// The candidate units covered, as `unit@generation`.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// The blindspot version.
    pub version: String,
}

/// What a filter run did.
#[derive(Clone, Debug, Serialize)]
pub struct FilterSummary {
    /// CLIP-blind pairs written by this run.
    pub pairs: u64,
    /// Candidate units filtered by this run.
    pub units: usize,
    /// True when only units added since the last run were filtered.
    pub incremental: bool,
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

/// The filter stage, in this process.
pub async fn filter(root: &Location, dino_max: f32) -> Result<FilterSummary> {
    filter_on(root, dino_max, None).await
}

/// The filter stage; with `cluster` (`df://HOST:PORT`) the query runs on a Ballista cluster
/// and this process only writes the pairs it streams back.
pub async fn filter_on(
    root: &Location,
    dino_max: f32,
    cluster: Option<&str>,
) -> Result<FilterSummary> {
    if !(-1.0..=1.0).contains(&dino_max) {
        return Err(Error::Usage(format!(
            "--dino-max {dino_max} must be between -1 and 1"
        )));
    }
    let lock = RunLock::acquire(root, "filter").await?;
    let result = filter_locked(root, dino_max, cluster).await;
    lock.release().await;
    result
}

fn covered(c: &Commit) -> String {
    format!("{}@{}", c.unit, c.generation)
}

async fn filter_locked(
    root: &Location,
    dino_max: f32,
    cluster: Option<&str>,
) -> Result<FilterSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let units = catalog.candidate_units().await?;
    let current: BTreeSet<String> = units.iter().map(covered).collect();
    let earlier: Vec<FilterCommit> = catalog
        .commits_of(CommitSet::FILTER)
        .await?
        .iter()
        .map(|c| c.info::<FilterCommit>())
        .collect::<Result<_>>()
        .unwrap_or_default();
    let done: BTreeSet<&String> = earlier.iter().flat_map(|f| &f.candidates).collect();
    let incremental = !earlier.is_empty()
        && earlier
            .iter()
            .all(|f| f.dino_max == dino_max && !f.candidates.is_empty())
        && done.iter().all(|u| current.contains(*u));
    let todo: Vec<&Commit> = units
        .iter()
        .filter(|c| !incremental || !done.contains(&covered(c)))
        .collect();
    let run_id = new_run_id();
    if incremental && todo.is_empty() {
        return Ok(FilterSummary {
            pairs: 0,
            units: 0,
            incremental,
            run_id,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    // Shards embedded with CLIP only get their DINOv2 vectors from `blindspot dino`: every
    // candidate unit filtered now must have been covered by a finished dino run.
    let clip_only = catalog
        .commits_of(CommitSet::EMBED)
        .await?
        .iter()
        .any(table::without_dino);
    if clip_only {
        let dino = catalog.dino_covered().await?;
        let missing = todo.iter().filter(|c| !dino.contains(&covered(c))).count();
        if missing > 0 {
            return Err(Error::Usage(format!(
                "{missing} of {} candidate units of {} have no DINOv2 vectors yet (shards were embedded with CLIP only); run `blindspot dino --root {}` first",
                todo.len(),
                root.url,
                root.url
            )));
        }
    }
    let (ctx, _) = match cluster {
        None => sql::session(root).await?,
        Some(url) => cluster::session(root, url).await?,
    };
    let paths: Vec<String> = todo
        .iter()
        .flat_map(|c| c.objects(&table::CANDIDATES))
        .map(|o| o.path)
        .collect();
    if paths.is_empty() {
        sql::register_empty(&ctx, table::CANDIDATES.name, table::schema::candidates())?;
    } else {
        sql::register_objects(&ctx, root, table::CANDIDATES.name, &paths).await?;
    }
    let generation = catalog.begin("filter").await?;
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
    let stem = format!("g{generation:010}/pairs");
    let mut writer = catalog.writer(&table::PAIRS, &stem, schema, WriteParams::default())?;
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
        candidates: todo.iter().map(|c| covered(c)).collect(),
        version: crate::VERSION.to_string(),
    };
    let unit = format!("f{generation:010}");
    let commit = Commit::new(&unit, generation, &record)?.with(&table::PAIRS, objects);
    catalog.commit(CommitSet::FILTER, &commit).await?;
    if !incremental {
        catalog
            .retract(CommitSet::FILTER, |c| c.unit != unit)
            .await?;
    }
    Ok(FilterSummary {
        pairs,
        units: todo.len(),
        incremental,
        run_id,
        seconds: started.elapsed().as_secs_f64(),
    })
}
