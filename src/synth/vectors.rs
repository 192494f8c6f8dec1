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
//! - `laion-like`: what LAION looks like after near-duplicate detection (SNIP: about a third of
//!   LAION-2B are near-duplicates, in groups of up to thousands). The clip-like background, and
//!   `group_share` (30%) of the images in near-duplicate groups whose sizes follow a power law
//!   (exponent 1.8, from 2 to `max_group`, 2,000 by default, one group always that large):
//!   members sit at CLIP cosine 0.975 to 0.995 from their group's centre, so nearly every pair
//!   of a group is a candidate (25.6M candidates measured at 200k rows). In DINOv2 a group is one
//!   picture (members at cosine 0.97 to 0.99 of one vector, pairwise above 0.9), except in
//!   `blind_share` (30%) of the groups, where 10% to 50% of the members are another picture
//!   (an unrelated DINOv2 vector): every pair across the two halves is CLIP-blind, a million
//!   "pairs" of one pair of pictures in a large group. Rows are generated one at a time from
//!   their own seed, so a corpus of any size is written shard by shard in bounded memory, and
//!   the rows of a group are spread over the whole corpus, as in a crawl.
//!
//! DINOv2 vectors (planted, clip-like): random, except that half of the near-duplicate copies
//! (planted group members, or clip-like near-duplicates) keep their original's DINO vector (a
//! true near-duplicate) while the other half get their own (CLIP-blind).

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
    /// Clip-like, with heavy-tailed near-duplicate groups (to 2,000 members), some of them
    /// split in DINOv2 into two pictures.
    LaionLike,
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
    /// laion-like: the share of images in near-duplicate groups.
    #[serde(default = "default_group_share")]
    pub group_share: f64,
    /// laion-like: the largest group (one group is always this large, if the share allows).
    #[serde(default = "default_max_group")]
    pub max_group: usize,
    /// laion-like: the share of groups that are two pictures in DINOv2.
    #[serde(default = "default_blind_share")]
    pub blind_share: f64,
}

fn default_group_share() -> f64 {
    0.3
}

fn default_max_group() -> usize {
    2000
}

fn default_blind_share() -> f64 {
    0.3
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
            group_share: default_group_share(),
            max_group: default_max_group(),
            blind_share: default_blind_share(),
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
    if params.kind == VectorKind::LaionLike {
        return LaionLike::new(params).rows(0..params.n);
    }
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
            let background = Background::new(&mut rng, n, dim);
            while clip.len() < n * dim {
                let x = background.vector(&mut rng);
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
        VectorKind::LaionLike => unreachable!("generated row by row above"),
    }
    clip.truncate(n * dim);
    dino.truncate(n * ddim);
    Vectors { clip, dino }
}

/// The clip-like distribution: one mean direction shared by every vector (unrelated images at
/// cosine about 0.45), Zipf(1.1) topics, and noise whose variance falls with the dimension's
/// rank.
struct Background {
    mean: Vec<f32>,
    dirs: Vec<Vec<f32>>,
    cumulative: Vec<f64>,
    spectrum: Vec<f32>,
}

impl Background {
    fn new(rng: &mut Rng, n: usize, dim: usize) -> Background {
        let mean = random_unit(rng, dim);
        let topics = (n / 200).max(8);
        let dirs: Vec<Vec<f32>> = (0..topics).map(|_| random_unit(rng, dim)).collect();
        let weights: Vec<f64> = (1..=topics).map(|r| (r as f64).powf(-1.1)).collect();
        let total: f64 = weights.iter().sum();
        let cumulative: Vec<f64> = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        let spectrum: Vec<f32> = (0..dim).map(|i| (1.0 + i as f32).powf(-0.5)).collect();
        Background {
            mean,
            dirs,
            cumulative,
            spectrum,
        }
    }

    /// One image's unit vector.
    fn vector(&self, rng: &mut Rng) -> Vec<f32> {
        let dim = self.mean.len();
        let (a, b, c) = (0.45f32.sqrt(), 0.25f32.sqrt(), 0.30f32.sqrt());
        let topics = self.dirs.len();
        let u = rng.unit();
        let t = self.cumulative.partition_point(|&c| c < u).min(topics - 1);
        let mut noise: Vec<f32> = gaussian(rng, dim)
            .iter()
            .zip(&self.spectrum)
            .map(|(g, s)| g * s)
            .collect();
        unit(&mut noise);
        let mut x: Vec<f32> = (0..dim)
            .map(|i| a * self.mean[i] + b * self.dirs[t][i] + c * noise[i])
            .collect();
        unit(&mut x);
        x
    }
}

/// A seed for item `i` of stream `salt`, decorrelated from its neighbours (splitmix64).
fn seed_of(seed: u64, salt: u64, i: u64) -> u64 {
    let mut z =
        seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The laion-like corpus: each row's group and picture, and every vector made on demand from
/// seeds, so any range of rows is generated alone.
pub struct LaionLike {
    params: VectorParams,
    background: Background,
    /// Per row: 0 for an image in no group, else `2 * group + picture + 1`.
    member: Vec<u32>,
    /// Group sizes.
    sizes: Vec<u32>,
}

/// The power-law exponent of group sizes.
const GROUP_EXPONENT: f64 = 1.8;

impl LaionLike {
    /// Draws the groups and spreads their members over the rows (deterministic in `params`).
    pub fn new(params: &VectorParams) -> LaionLike {
        let n = params.n;
        let mut rng = Rng(params.seed ^ 0x1A10_0000);
        let background = Background::new(&mut rng, n, params.dim);
        let target = (params.group_share.clamp(0.0, 1.0) * n as f64) as usize;
        let max_group = params.max_group.max(2);
        let mut sizes: Vec<u32> = Vec::new();
        let mut grouped = 0usize;
        while grouped + 2 <= target {
            let size = match sizes.is_empty() {
                true => max_group,
                false => {
                    let u = rng.unit();
                    (2.0 * (1.0 - u).powf(-1.0 / (GROUP_EXPONENT - 1.0))) as usize
                }
            };
            let size = size.clamp(2, max_group).min(target - grouped);
            if size < 2 {
                break;
            }
            sizes.push(size as u32);
            grouped += size;
        }
        let mut member: Vec<u32> = Vec::with_capacity(n);
        for (g, &size) in sizes.iter().enumerate() {
            let blind = rng.unit() < params.blind_share;
            // The second picture's share of a blind group: 10% to 50%, at least one member.
            let other = match blind {
                true => ((size as f64 * (0.1 + 0.4 * rng.unit())) as u32).clamp(1, size - 1),
                false => 0,
            };
            for m in 0..size {
                let picture = (m < other) as u32;
                member.push(2 * g as u32 + picture + 1);
            }
        }
        member.resize(n, 0);
        // Fisher-Yates: a group's members are spread over the corpus.
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            member.swap(i, j);
        }
        LaionLike {
            params: params.clone(),
            background,
            member,
            sizes,
        }
    }

    /// Group sizes, largest first.
    pub fn group_sizes(&self) -> Vec<u32> {
        let mut s = self.sizes.clone();
        s.sort_unstable_by(|a, b| b.cmp(a));
        s
    }

    /// Row `i`'s near-duplicate group and picture (0 or 1), if it is in one.
    pub fn group_of(&self, i: usize) -> Option<(u32, u32)> {
        match self.member[i] {
            0 => None,
            m => Some(((m - 1) / 2, (m - 1) % 2)),
        }
    }

    /// The vectors of rows `range`.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Vectors {
        let (dim, ddim, seed) = (self.params.dim, self.params.dino_dim, self.params.seed);
        let mut clip = Vec::with_capacity(range.len() * dim);
        let mut dino = Vec::with_capacity(range.len() * ddim);
        for i in range {
            let mut rng = Rng(seed_of(seed, 1, i as u64));
            match self.group_of(i) {
                None => {
                    clip.extend(self.background.vector(&mut rng));
                    dino.extend(random_unit(&mut rng, ddim));
                }
                Some((g, picture)) => {
                    let centre = self.background.vector(&mut Rng(seed_of(seed, 2, g as u64)));
                    let base =
                        random_unit(&mut Rng(seed_of(seed, 3, (2 * g + picture) as u64)), ddim);
                    let cos = 0.975 + 0.02 * rng.unit() as f32;
                    clip.extend(at_cosine(&mut rng, &centre, cos));
                    let cos = 0.97 + 0.02 * rng.unit() as f32;
                    dino.extend(at_cosine(&mut rng, &base, cos));
                }
            }
        }
        Vectors { clip, dino }
    }
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
    match params.kind {
        VectorKind::LaionLike => {
            let corpus = LaionLike::new(params);
            write_shards(root, params, |range| corpus.rows(range)).await
        }
        _ => {
            let v = generate(params);
            let (dim, ddim) = (params.dim, params.dino_dim);
            write_shards(root, params, |r| Vectors {
                clip: v.clip[r.start * dim..r.end * dim].to_vec(),
                dino: v.dino[r.start * ddim..r.end * ddim].to_vec(),
            })
            .await
        }
    }
}

/// Writes given CLIP vectors (n x dim, random DINO vectors of `dino_dim`) as one committed
/// shard `prefix`, keys `prefix/<i>`, stored as f16 like the default corpus: vectors a test
/// places itself, such as pairs on a cell border.
pub async fn write_given(
    root: &Location,
    prefix: &str,
    clip: &[f32],
    dim: usize,
    dino_dim: usize,
) -> Result<usize> {
    let n = clip.len() / dim.max(1);
    let mut rng = Rng(n as u64);
    let dino: Vec<f32> = (0..n)
        .flat_map(|_| random_unit(&mut rng, dino_dim))
        .collect();
    write_copies(root, prefix, clip, &dino, dim, dino_dim).await
}

/// Writes given CLIP and DINOv2 vectors (n x dim, n x dino_dim) as one committed shard
/// `prefix`, keys `prefix/<i>`, stored as f16: copies of earlier images, say, that join their
/// near-duplicate groups from a later generation.
pub async fn write_copies(
    root: &Location,
    prefix: &str,
    clip: &[f32],
    dino: &[f32],
    dim: usize,
    dino_dim: usize,
) -> Result<usize> {
    let n = clip.len() / dim.max(1);
    let params = VectorParams {
        n,
        dim,
        dino_dim,
        shard_rows: n.max(1),
        prefix: prefix.into(),
        ..Default::default()
    };
    let v = Vectors {
        clip: clip.to_vec(),
        dino: dino.to_vec(),
    };
    write_shards(root, &params, |r| Vectors {
        clip: v.clip[r.start * dim..r.end * dim].to_vec(),
        dino: v.dino[r.start * params.dino_dim..r.end * params.dino_dim].to_vec(),
    })
    .await
}

/// One shard's `embeddings` rows: keys, stand-in uris and hashes, both vectors.
fn shard_batch(
    schema: &arrow::datatypes::SchemaRef,
    shard: &str,
    keys: &[String],
    v: &Vectors,
    (dim, ddim): (usize, usize),
    float: FloatType,
) -> Result<RecordBatch> {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(keys.iter())),
            Arc::new(StringArray::from_iter_values(
                keys.iter().map(|k| format!("synthetic://{k}")),
            )),
            Arc::new(StringArray::from_iter_values(keys.iter().map(|_| shard))),
            Arc::new(UInt32Array::from_value(1, keys.len())),
            Arc::new(UInt32Array::from_value(1, keys.len())),
            Arc::new(StringArray::from_iter_values(keys.iter())),
            vectors_column(&v.clip, dim, float)?,
            vectors_column(&v.dino, ddim, float)?,
            arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, keys.len()),
            arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, keys.len()),
        ],
    )
    .map_err(|e| Error::table("embeddings", e))
}

/// Writes rows `0..n` as committed shards, asking `rows` for one shard's vectors at a time.
async fn write_shards(
    root: &Location,
    params: &VectorParams,
    rows: impl Fn(std::ops::Range<usize>) -> Vectors,
) -> Result<usize> {
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
    let generation = catalog
        .begin(crate::stage::Stage::SynthVectors.name())
        .await?;
    let (dim, ddim) = (params.dim, params.dino_dim);
    let mut shards = 0;
    for start in (0..params.n).step_by(params.shard_rows) {
        let end = (start + params.shard_rows).min(params.n);
        let shard = format!("{}-{:06}", params.prefix, start / params.shard_rows);
        let keys: Vec<String> = (start..end).map(|i| key_of(&params.prefix, i)).collect();
        let v = rows(start..end);
        let batch = shard_batch(&schema, &shard, &keys, &v, (dim, ddim), params.float)?;
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
        let record = crate::table::records::EmbedCommit {
            shard: shard.clone(),
            shard_uri: format!("synthetic://{shard}"),
            id: shard.clone(),
            embeddings: String::new(),
            errors: String::new(),
            rows: keys.len() as u64,
            error_rows: 0,
            encoders: Some(["synthetic-clip".into(), "synthetic-dino".into()]),
            skipped_rows: 0,
            version: crate::VERSION.to_string(),
        };
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

    #[test]
    fn laion_like_groups_are_heavy_tailed_near_duplicates_some_split_in_two_pictures() {
        let p = VectorParams {
            n: 20_000,
            dim: 64,
            dino_dim: 128,
            kind: VectorKind::LaionLike,
            max_group: 400,
            seed: 3,
            ..Default::default()
        };
        let corpus = LaionLike::new(&p);
        let sizes = corpus.group_sizes();
        let grouped: u32 = sizes.iter().sum();
        // The share holds, one group is as large as allowed, and most groups are small.
        assert!((5_900..=6_000).contains(&grouped), "{grouped}");
        assert_eq!(sizes[0], 400);
        let small = sizes.iter().filter(|&&s| s <= 8).count();
        assert!(
            small * 2 > sizes.len(),
            "{small} of {} groups small",
            sizes.len()
        );
        // Members of a group are spread over the corpus, not in a run.
        let rows: Vec<usize> = (0..p.n)
            .filter(|&i| corpus.group_of(i).is_some_and(|g| g.0 == 0))
            .collect();
        assert_eq!(rows.len(), 400);
        assert!(rows[399] - rows[0] > p.n / 2, "{:?}", (rows[0], rows[399]));

        let v = generate(&p);
        let (dim, ddim) = (64, 128);
        // Pairs inside a group: CLIP candidates. Same picture: DINOv2 near-duplicates; the two
        // pictures of a split group: CLIP-blind.
        let (mut candidates, mut same, mut blind, mut pairs) = (0, 0, 0, 0);
        let members: Vec<(usize, (u32, u32))> = (0..p.n)
            .filter_map(|i| corpus.group_of(i).map(|g| (i, g)))
            .take(3000)
            .collect();
        for (x, (i, gi)) in members.iter().enumerate() {
            for (j, gj) in members[x + 1..].iter() {
                if gi.0 != gj.0 {
                    continue;
                }
                pairs += 1;
                candidates += (cos(&v.clip, dim, *i, *j) > 0.95) as usize;
                let d = cos(&v.dino, ddim, *i, *j);
                match gi.1 == gj.1 {
                    true => same += (d > 0.9) as usize,
                    false => blind += (d < 0.6) as usize,
                }
            }
        }
        let split: usize = members
            .iter()
            .enumerate()
            .flat_map(|(x, (_, gi))| members[x + 1..].iter().map(move |(_, gj)| (gi, gj)))
            .filter(|(a, b)| a.0 == b.0 && a.1 != b.1)
            .count();
        assert!(pairs > 10_000, "{pairs}");
        assert!(
            candidates as f64 > 0.9 * pairs as f64,
            "{candidates} of {pairs}"
        );
        assert_eq!(
            same + blind,
            pairs,
            "every same-picture pair a near-duplicate, every split pair blind"
        );
        assert_eq!(blind, split);
        assert!(blind > 0);
        // Rows are made alone: any range equals the same rows of the whole corpus.
        let part = corpus.rows(5_000..5_100);
        assert_eq!(part.clip, v.clip[5_000 * dim..5_100 * dim]);
        assert_eq!(part.dino, v.dino[5_000 * ddim..5_100 * ddim]);
    }
}
