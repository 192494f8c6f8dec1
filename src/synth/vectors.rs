//! Synthetic vector corpora for mining tests and benchmarks: CLIP and DINOv2 vectors written
//! straight into a run root as committed `embeddings` shards, with no images and no encoders
//! (`blindspot synth-vectors`). Two kinds:
//!
//! - `planted`: isolated random unit vectors (cosine about 0 with everything) and, around 2% of
//!   them, groups of 2, 3, 5, 10 or 40 vectors whose pairwise cosine is about 0.96 to 0.995 (the
//!   distribution `scripts/bench_candidates.py` has always used);
//! - `clip-like`: what real CLIP embeddings look like to a miner. Every vector shares one mean
//!   direction (unrelated images have cosine about 0.45), belongs to one of many topics of very
//!   uneven size (Zipf), carries anisotropic noise (variance falling with the dimension's rank),
//!   and 5% of images come with one to four near-duplicates whose cosine to them is spread over
//!   0.92 to 0.98, straddling the 0.95 threshold.
//!
//! DINOv2 vectors: random, except that half of the near-duplicate copies (planted group
//! members, or clip-like near-duplicates) keep their original's DINO vector (a true
//! near-duplicate) while the other half get their own (CLIP-blind).

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::array::{FixedSizeListArray, Float16Array, Float32Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::storage::Location;
use crate::table::schema::{self, EncoderMeta, FloatType};
use crate::table::{self, io, Catalog, Commit, CommitSet, WriteParams};

/// Which distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum VectorKind {
    /// Random vectors with planted tight groups.
    #[default]
    Planted,
    /// A shared mean direction, uneven topics, anisotropic noise, near-duplicates around 0.95.
    ClipLike,
}

/// Settings of a synthetic vector corpus.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VectorParams {
    /// Vectors.
    pub n: usize,
    /// CLIP dimension.
    pub dim: usize,
    /// DINOv2 dimension.
    pub dino_dim: usize,
    /// The distribution.
    pub kind: VectorKind,
    /// Vectors per embed shard.
    pub shard_rows: usize,
    /// Seed.
    pub seed: u64,
    /// Storage type of both vector columns.
    pub float: FloatType,
    /// Shard names start with this (a later increment uses another).
    pub prefix: String,
}

impl Default for VectorParams {
    fn default() -> Self {
        VectorParams {
            n: 10_000,
            dim: 768,
            dino_dim: 16,
            kind: VectorKind::Planted,
            shard_rows: 50_000,
            seed: 0,
            float: FloatType::F16,
            prefix: "vectors".into(),
        }
    }
}

/// Generated vectors, flat, in key order.
pub struct Vectors {
    /// CLIP vectors, n x dim.
    pub clip: Vec<f32>,
    /// DINOv2 vectors, n x dino_dim.
    pub dino: Vec<f32>,
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn gaussian(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.normal() as f32).collect()
}

fn random_unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut v = gaussian(rng, dim);
    unit(&mut v);
    v
}

/// `x` moved to cosine `cos` with itself (a random direction orthogonal to it).
fn at_cosine(rng: &mut Rng, x: &[f32], cos: f32) -> Vec<f32> {
    let mut e = gaussian(rng, x.len());
    let along: f32 = e.iter().zip(x).map(|(a, b)| a * b).sum();
    e.iter_mut().zip(x).for_each(|(a, b)| *a -= along * b);
    unit(&mut e);
    let sin = (1.0 - cos * cos).max(0.0).sqrt();
    let mut y: Vec<f32> = x.iter().zip(&e).map(|(a, b)| cos * a + sin * b).collect();
    unit(&mut y);
    y
}

/// Generates the corpus (deterministic in `params`).
pub fn generate(params: &VectorParams) -> Vectors {
    let (n, dim, ddim) = (params.n, params.dim, params.dino_dim);
    let mut rng = Rng(params.seed ^ 0xC11F_0000);
    let mut clip = Vec::with_capacity(n * dim);
    let mut dino = Vec::with_capacity(n * ddim);
    // Pushes a copy of `x` at cosine `cos`, keeping the DINO vector `d` or drawing its own.
    let copies = |rng: &mut Rng,
                  clip: &mut Vec<f32>,
                  dino: &mut Vec<f32>,
                  x: &[f32],
                  d: &[f32],
                  cos: f32| {
        clip.extend(at_cosine(rng, x, cos));
        if rng.unit() < 0.5 {
            dino.extend_from_slice(d);
        } else {
            dino.extend(random_unit(rng, ddim));
        }
    };
    match params.kind {
        VectorKind::Planted => {
            const GROUPS: [usize; 5] = [2, 3, 5, 10, 40];
            while clip.len() < n * dim {
                // 2% of the vectors are group centres (groups average 12 members).
                if rng.unit() < 0.0256 {
                    let centre = random_unit(&mut rng, dim);
                    let d = random_unit(&mut rng, ddim);
                    let size = GROUPS[rng.below(GROUPS.len() as u64) as usize];
                    for _ in 0..size {
                        let cos = 0.98 + 0.0175 * rng.unit() as f32;
                        copies(&mut rng, &mut clip, &mut dino, &centre, &d, cos);
                    }
                } else {
                    clip.extend(random_unit(&mut rng, dim));
                    dino.extend(random_unit(&mut rng, ddim));
                }
            }
        }
        VectorKind::ClipLike => {
            let mean = random_unit(&mut rng, dim);
            let topics = (n / 200).max(8);
            let dirs: Vec<Vec<f32>> = (0..topics).map(|_| random_unit(&mut rng, dim)).collect();
            // Zipf(1.1) topic sizes: cumulative weights.
            let weights: Vec<f64> = (1..=topics).map(|r| (r as f64).powf(-1.1)).collect();
            let total: f64 = weights.iter().sum();
            let cumulative: Vec<f64> = weights
                .iter()
                .scan(0.0, |acc, w| {
                    *acc += w / total;
                    Some(*acc)
                })
                .collect();
            // Noise variance falls with the dimension's rank.
            let spectrum: Vec<f32> = (0..dim).map(|i| (1.0 + i as f32).powf(-0.5)).collect();
            let (a, b, c) = (0.45f32.sqrt(), 0.25f32.sqrt(), 0.30f32.sqrt());
            while clip.len() < n * dim {
                let u = rng.unit();
                let t = cumulative.partition_point(|&c| c < u).min(topics - 1);
                let mut noise: Vec<f32> = gaussian(&mut rng, dim)
                    .iter()
                    .zip(&spectrum)
                    .map(|(g, s)| g * s)
                    .collect();
                unit(&mut noise);
                let mut x: Vec<f32> = (0..dim)
                    .map(|i| a * mean[i] + b * dirs[t][i] + c * noise[i])
                    .collect();
                unit(&mut x);
                let d = random_unit(&mut rng, ddim);
                clip.extend_from_slice(&x);
                dino.extend_from_slice(&d);
                if rng.unit() < 0.05 {
                    for _ in 0..1 + rng.below(4) {
                        let cos = 0.92 + 0.06 * rng.unit() as f32;
                        copies(&mut rng, &mut clip, &mut dino, &x, &d, cos);
                    }
                }
            }
        }
    }
    clip.truncate(n * dim);
    dino.truncate(n * ddim);
    Vectors { clip, dino }
}

fn vectors_column(values: &[f32], dim: usize, float: FloatType) -> Result<ArrayRef> {
    let (item, data): (_, ArrayRef) = match float {
        FloatType::F32 => (
            arrow::datatypes::DataType::Float32,
            Arc::new(Float32Array::from(values.to_vec())),
        ),
        FloatType::F16 => (
            arrow::datatypes::DataType::Float16,
            Arc::new(Float16Array::from_iter_values(
                values.iter().map(|v| half::f16::from_f32(*v)),
            )),
        ),
    };
    let field = Arc::new(arrow::datatypes::Field::new("item", item, false));
    Ok(Arc::new(
        FixedSizeListArray::try_new(field, dim as i32, data, None)
            .map_err(|e| Error::table("embeddings", e))?,
    ))
}

/// The key of vector `i` of a corpus with shard prefix `prefix`.
pub fn key_of(prefix: &str, i: usize) -> String {
    format!("{prefix}/{i:010}")
}

/// Writes the corpus into `root` as committed embed shards of `shard_rows` vectors (each a
/// commit of its own, as `blindspot embed` makes them). Returns the number of shards.
pub async fn write(root: &Location, params: &VectorParams) -> Result<usize> {
    if params.n == 0 || params.dim == 0 || params.shard_rows == 0 {
        return Err(Error::Usage(
            "synth-vectors needs --n, --dim and --shard-rows above 0".into(),
        ));
    }
    let v = generate(params);
    write_shards(root, params, &v).await
}

/// Writes given CLIP vectors (n x dim, random DINO vectors) as one committed shard `prefix`,
/// keys `prefix/<i>`, stored as f16 like the default corpus: vectors a test places itself,
/// such as pairs on a cell border.
pub async fn write_given(root: &Location, prefix: &str, clip: &[f32], dim: usize) -> Result<usize> {
    let n = clip.len() / dim.max(1);
    let params = VectorParams {
        n,
        dim,
        shard_rows: n.max(1),
        prefix: prefix.into(),
        ..Default::default()
    };
    let mut rng = Rng(n as u64);
    let dino = (0..n)
        .flat_map(|_| random_unit(&mut rng, params.dino_dim))
        .collect();
    let v = Vectors {
        clip: clip.to_vec(),
        dino,
    };
    write_shards(root, &params, &v).await
}

async fn write_shards(root: &Location, params: &VectorParams, v: &Vectors) -> Result<usize> {
    let catalog = Catalog::new(root);
    let meta = |id: &str, dim| EncoderMeta {
        id: format!("synthetic-{id}"),
        digest: "synthetic".into(),
        dim,
    };
    let schema = schema::embeddings(
        &meta("clip", params.dim),
        Some(&meta("dino", params.dino_dim)),
        params.float,
    );
    let generation = catalog.begin("synth-vectors").await?;
    let (dim, ddim) = (params.dim, params.dino_dim);
    let mut shards = 0;
    for start in (0..params.n).step_by(params.shard_rows) {
        let end = (start + params.shard_rows).min(params.n);
        let shard = format!("{}-{:06}", params.prefix, start / params.shard_rows);
        let keys: Vec<String> = (start..end).map(|i| key_of(&params.prefix, i)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(keys.iter())),
                Arc::new(StringArray::from_iter_values(
                    keys.iter().map(|k| format!("synthetic://{k}")),
                )),
                Arc::new(StringArray::from_iter_values(
                    keys.iter().map(|_| shard.as_str()),
                )),
                Arc::new(UInt32Array::from_value(1, keys.len())),
                Arc::new(UInt32Array::from_value(1, keys.len())),
                Arc::new(StringArray::from_iter_values(keys.iter())),
                vectors_column(&v.clip[start * dim..end * dim], dim, params.float)?,
                vectors_column(&v.dino[start * ddim..end * ddim], ddim, params.float)?,
                arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, keys.len()),
                arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, keys.len()),
            ],
        )
        .map_err(|e| Error::table("embeddings", e))?;
        let mut w = catalog.writer(
            &table::EMBEDDINGS,
            &shard,
            schema.clone(),
            WriteParams::default(),
        )?;
        w.write(&batch).await?;
        let embeddings = w.finish().await?;
        let errors = io::write_batches(
            root,
            &format!("{}/{shard}", table::ERRORS.dir),
            &schema::errors(),
            &[RecordBatch::new_empty(schema::errors())],
        )
        .await?;
        let record = serde_json::json!({
            "shard": shard,
            "shard_uri": format!("synthetic://{shard}"),
            "id": shard,
            "rows": keys.len(),
            "error_rows": 0,
            "encoders": ["synthetic-clip", "synthetic-dino"],
            "version": crate::VERSION,
        });
        let commit = Commit::new(&shard, generation, &record)?
            .with(&table::EMBEDDINGS, embeddings)
            .with(&table::ERRORS, errors);
        catalog.commit(CommitSet::EMBED, &commit).await?;
        shards += 1;
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(v: &[f32], dim: usize, i: usize, j: usize) -> f32 {
        v[i * dim..(i + 1) * dim]
            .iter()
            .zip(&v[j * dim..(j + 1) * dim])
            .map(|(a, b)| a * b)
            .sum()
    }

    #[test]
    fn clip_like_vectors_share_a_direction_and_straddle_the_threshold() {
        let p = VectorParams {
            n: 4000,
            dim: 64,
            kind: VectorKind::ClipLike,
            ..Default::default()
        };
        let v = generate(&p);
        assert_eq!(v.clip.len(), 4000 * 64);
        // Unrelated images: mean cosine near 0.45 (topics add a little).
        let mean: f32 = (0..200).map(|i| cos(&v.clip, 64, i, 3999 - i)).sum::<f32>() / 200.0;
        assert!((0.4..0.6).contains(&mean), "mean cosine {mean}");
        // Near-duplicates on both sides of 0.95.
        let (mut above, mut below) = (0, 0);
        for i in 1..4000 {
            let c = cos(&v.clip, 64, i - 1, i);
            if (0.95..0.99).contains(&c) {
                above += 1;
            } else if (0.9..0.95).contains(&c) {
                below += 1;
            }
        }
        assert!(above > 20 && below > 20, "{above} above, {below} below");
        assert_eq!(generate(&p).clip, v.clip, "deterministic");
    }
}
