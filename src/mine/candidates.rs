//! The candidates stage: every pair of images whose CLIP similarity is above the threshold
//! (strict `>`), each unordered pair once with `a < b`.
//!
//! With the index, each image's neighbours are searched with k = 32; when all k pass, the
//! search is repeated with a doubled k, so groups larger than k are found whole. Similarities
//! are recomputed exactly in f32 from the embeddings (the index may store f16), so the
//! threshold means the same thing in both modes. `--exact` compares every pair by brute
//! force: the ground truth that `--recall` measures the index against.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float32Array, RecordBatch, StringArray};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ann;
use super::vectors::{unique_vectors, UniqueVectors};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::storage::{Location, RunLock};
use crate::table::{self, schema, Catalog, Commit, CommitSet, WriteParams};

/// Rows per batch written to the `candidates` table.
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// Settings of the candidates stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CandidateParams {
    /// Keep pairs with CLIP similarity strictly above this.
    pub clip_min: f32,
    /// Neighbours asked for first; doubled while all of them pass.
    pub k: usize,
    /// Brute force instead of the index.
    pub exact: bool,
    /// Index similarities are approximate (f16, i8): neighbours this far below the threshold
    /// are still re-scored exactly, so none is lost to quantisation.
    pub margin: f32,
}

impl Default for CandidateParams {
    fn default() -> Self {
        CandidateParams {
            clip_min: 0.95,
            k: 32,
            exact: false,
            margin: 0.01,
        }
    }
}

/// The candidates stage's record in its commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CandidatesCommit {
    /// Pairs written.
    pub pairs: u64,
    /// The settings used.
    pub params: CandidateParams,
    /// The blindspot version.
    pub version: String,
}

/// What a candidates run did.
#[derive(Clone, Debug, Serialize)]
pub struct CandidatesSummary {
    /// Unique images searched.
    pub images: u64,
    /// Pairs above the threshold.
    pub pairs: u64,
    /// `index` or `exact`.
    pub mode: String,
    /// Recall of the index against brute force on a sample, when asked for.
    pub recall: Option<Recall>,
    /// Wall time.
    pub seconds: f64,
}

/// Index recall measured on a sample of query images.
#[derive(Clone, Debug, Serialize)]
pub struct Recall {
    /// Query images in the sample.
    pub sample: usize,
    /// Exact pairs involving them.
    pub exact_pairs: u64,
    /// Of those, found through the index.
    pub found: u64,
    /// found / exact_pairs (1.0 when there are none).
    pub recall: f64,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Pairs of labels `(i, j)` with `i < j` and their exact similarity.
type LabelPairs = Vec<(u32, u32, f32)>;

/// Every neighbour of `label` above the threshold, through the index.
pub fn search_one(
    index: &usearch::Index,
    vectors: &UniqueVectors,
    label: usize,
    params: &CandidateParams,
) -> Result<LabelPairs> {
    let n = vectors.len();
    let query = vectors.vector(label);
    let loose = params.clip_min - params.margin;
    let mut k = params.k.clamp(1, n.max(1));
    let matches = loop {
        let m = index
            .search(query, k)
            .map_err(|e| Error::Internal(format!("usearch search: {e}")))?;
        let all_pass = !m.keys.is_empty() && m.distances.iter().all(|d| 1.0 - d > loose);
        if all_pass && k < n {
            k = (k * 2).min(n);
            continue;
        }
        break m;
    };
    let mut out = Vec::new();
    for (&j, &d) in matches.keys.iter().zip(&matches.distances) {
        let j = j as usize;
        if j == label || 1.0 - d <= loose {
            continue;
        }
        let sim = dot(query, vectors.vector(j));
        if sim > params.clip_min {
            let (a, b) = if label < j { (label, j) } else { (j, label) };
            out.push((a as u32, b as u32, sim));
        }
    }
    Ok(out)
}

/// Every pair above the threshold involving `label`, by brute force.
fn exact_one(vectors: &UniqueVectors, label: usize, clip_min: f32, only_later: bool) -> LabelPairs {
    let q = vectors.vector(label);
    let start = if only_later { label + 1 } else { 0 };
    (start..vectors.len())
        .filter(|&j| j != label)
        .filter_map(|j| {
            let sim = dot(q, vectors.vector(j));
            let (a, b) = (label.min(j) as u32, label.max(j) as u32);
            (sim > clip_min).then_some((a, b, sim))
        })
        .collect()
}

/// All pairs above the threshold, by brute force over every pair (O(n^2 d)).
pub fn exact_pairs(vectors: &UniqueVectors, clip_min: f32, progress: &dyn Progress) -> LabelPairs {
    progress.start("candidates (exact)", Some(vectors.len() as u64));
    let mut pairs: LabelPairs = (0..vectors.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let found = exact_one(vectors, i, clip_min, true);
            progress.advance(1);
            found
        })
        .collect();
    progress.finish();
    pairs.sort_by_key(|p| (p.0, p.1));
    pairs
}

/// All pairs above the threshold, through the index, deduplicated.
pub fn index_pairs(
    index: &usearch::Index,
    vectors: &UniqueVectors,
    params: &CandidateParams,
    progress: &dyn Progress,
) -> Result<LabelPairs> {
    progress.start("candidates", Some(vectors.len() as u64));
    let found: Vec<LabelPairs> = (0..vectors.len())
        .into_par_iter()
        .map(|i| {
            let r = search_one(index, vectors, i, params);
            progress.advance(1);
            r
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let mut seen = HashSet::new();
    let mut pairs: LabelPairs = found
        .into_iter()
        .flatten()
        .filter(|p| seen.insert((p.0, p.1)))
        .collect();
    pairs.sort_by_key(|p| (p.0, p.1));
    Ok(pairs)
}

/// Recall of the index against brute force, for `sample` query images chosen evenly.
pub fn recall(
    index: &usearch::Index,
    vectors: &UniqueVectors,
    params: &CandidateParams,
    sample: usize,
) -> Result<Recall> {
    let n = vectors.len();
    let sample = sample.min(n);
    let step = n.checked_div(sample).unwrap_or(1);
    let queries: Vec<usize> = (0..sample).map(|s| s * step.max(1)).collect();
    let counts: Vec<(u64, u64)> = queries
        .par_iter()
        .map(|&q| {
            let exact: HashSet<(u32, u32)> = exact_one(vectors, q, params.clip_min, false)
                .into_iter()
                .map(|p| (p.0, p.1))
                .collect();
            let found: HashSet<(u32, u32)> = search_one(index, vectors, q, params)?
                .into_iter()
                .map(|p| (p.0, p.1))
                .collect();
            Ok((
                exact.len() as u64,
                exact.intersection(&found).count() as u64,
            ))
        })
        .collect::<Result<_>>()?;
    let exact_pairs: u64 = counts.iter().map(|c| c.0).sum();
    let found: u64 = counts.iter().map(|c| c.1).sum();
    let recall = if exact_pairs == 0 {
        1.0
    } else {
        found as f64 / exact_pairs as f64
    };
    Ok(Recall {
        sample,
        exact_pairs,
        found,
        recall,
    })
}

/// The candidates stage. `recall_sample` also measures the index's recall on that many queries.
pub async fn candidates(
    root: &Location,
    params: &CandidateParams,
    recall_sample: Option<usize>,
    progress: Arc<dyn Progress>,
) -> Result<CandidatesSummary> {
    if !(params.clip_min > -1.0 && params.clip_min < 1.0) {
        return Err(Error::Usage(format!(
            "--clip-min {} must be between -1 and 1",
            params.clip_min
        )));
    }
    let lock = RunLock::acquire(root, "candidates").await?;
    let result = candidates_locked(root, params, recall_sample, progress).await;
    lock.release().await;
    result
}

async fn candidates_locked(
    root: &Location,
    params: &CandidateParams,
    recall_sample: Option<usize>,
    progress: Arc<dyn Progress>,
) -> Result<CandidatesSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let opened = if params.exact && recall_sample.is_none() {
        None
    } else {
        Some(ann::open(&catalog).await?)
    };
    let vectors = unique_vectors(&catalog).await?;
    let generation = catalog.begin("candidates").await?;
    if let Some(o) = &opened {
        if o.keys != vectors.keys {
            return Err(Error::Usage(format!(
                "the index of {} does not match its embeddings; run `blindspot index` again",
                root.url
            )));
        }
    }
    let p = params.clone();
    let (vectors, pairs, recall) = tokio::task::spawn_blocking(move || -> Result<_> {
        let pairs = match (&opened, p.exact) {
            (_, true) | (None, _) => exact_pairs(&vectors, p.clip_min, progress.as_ref()),
            (Some(o), false) => index_pairs(&o.index, &vectors, &p, progress.as_ref())?,
        };
        let recall = match (&opened, recall_sample) {
            (Some(o), Some(s)) => Some(recall(&o.index, &vectors, &p, s)?),
            _ => None,
        };
        Ok((vectors, pairs, recall))
    })
    .await
    .map_err(|e| Error::Internal(format!("candidates: {e}")))??;

    let mut rows: Vec<(&str, &str, f32)> = pairs
        .iter()
        .map(|&(i, j, s)| {
            let (a, b) = (
                vectors.keys[i as usize].as_str(),
                vectors.keys[j as usize].as_str(),
            );
            if a < b {
                (a, b, s)
            } else {
                (b, a, s)
            }
        })
        .collect();
    rows.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let mut writer = catalog.writer(
        &table::CANDIDATES,
        "candidates",
        schema::candidates(),
        WriteParams::default(),
    )?;
    for chunk in rows.chunks(WRITE_BATCH_ROWS) {
        let batch = RecordBatch::try_new(
            schema::candidates(),
            vec![
                Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.1))),
                Arc::new(Float32Array::from_iter_values(chunk.iter().map(|r| r.2))),
            ],
        )
        .map_err(|e| Error::table(table::CANDIDATES.name, e))?;
        writer.write(&batch).await?;
    }
    let objects = writer.finish().await?;
    let record = CandidatesCommit {
        pairs: rows.len() as u64,
        params: params.clone(),
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new("", generation, &record)?.with(&table::CANDIDATES, objects);
    catalog.commit(CommitSet::CANDIDATES, &commit).await?;
    Ok(CandidatesSummary {
        images: vectors.len() as u64,
        pairs: record.pairs,
        mode: if params.exact { "exact" } else { "index" }.to_string(),
        recall,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    /// Random unit vectors with planted groups, some larger than the first k.
    fn planted(n_random: usize, groups: &[usize], dim: usize) -> UniqueVectors {
        let mut state = 12345u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let mut data = Vec::new();
        let norm = |v: &mut Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
        };
        for _ in 0..n_random {
            let mut v: Vec<f32> = (0..dim).map(|_| rnd()).collect();
            norm(&mut v);
            data.extend(v);
        }
        for &g in groups {
            let mut centre: Vec<f32> = (0..dim).map(|_| rnd()).collect();
            norm(&mut centre);
            for _ in 0..g {
                let mut v: Vec<f32> = centre.iter().map(|c| c + rnd() * 0.02).collect();
                norm(&mut v);
                data.extend(v);
            }
        }
        let n = data.len() / dim;
        UniqueVectors {
            keys: (0..n).map(|i| format!("k{i:06}")).collect(),
            data,
            dim,
            duplicates: vec![],
            shards: vec![],
            rows: n as u64,
        }
    }

    #[test]
    fn index_finds_every_planted_pair_including_groups_larger_than_k() {
        let v = planted(3000, &[2, 3, 5, 40, 70], 64);
        let params = CandidateParams {
            k: 16,
            ..Default::default()
        };
        let idx = ann::build(&v, &ann::IndexParams::default(), &NoProgress).unwrap();
        let exact = exact_pairs(&v, params.clip_min, &NoProgress);
        let expected_planted = 1 + 3 + 10 + 40 * 39 / 2 + 70 * 69 / 2;
        assert!(
            exact.len() >= expected_planted,
            "{} exact pairs",
            exact.len()
        );
        let found = index_pairs(&idx, &v, &params, &NoProgress).unwrap();
        let found_set: HashSet<(u32, u32)> = found.iter().map(|p| (p.0, p.1)).collect();
        let hit = exact
            .iter()
            .filter(|p| found_set.contains(&(p.0, p.1)))
            .count();
        assert_eq!(hit, exact.len(), "recall {}/{}", hit, exact.len());
        assert!(found.iter().all(|p| p.0 < p.1 && p.2 > params.clip_min));
        let r = recall(&idx, &v, &params, 500).unwrap();
        assert!(r.recall >= 0.99, "{r:?}");
    }
}
