//! The partition stage: the mining layout. Spherical k-means on a sample of the CLIP vectors
//! gives the cells' centroids; every vector then gets a *home* cell (its nearest centroid) and
//! is a *guest* of every other cell where it could have a pair. It is written once, in its home
//! cell; the `guests` table lists, for each cell, the runs of other cells' home rows that are
//! its guests.
//!
//! The guest rule is exact. With every norm at most `N` (checked) and threshold `t`, a pair
//! `x . y > t` has `|x - y| < r(y) = sqrt(|y|^2 + N^2 - 2t)`. If `x` is homed in cell `j` and `y`
//! in `h`, then `x` lies on `c_j`'s side of the bisector of `c_h` and `c_j`, so `y` is within
//! `r(y)` of that hyperplane: `(c_h - c_j) . y / |c_h - c_j| < r(y)`. Copying `y` into every such
//! `j` puts every pair in a cell that holds one of its vectors at home and the other as a guest
//! (recall 1.0 by construction). `--probe K` keeps only the K nearest such cells (approximate;
//! `candidates --recall` measures the cost).
//!
//! Output: the `cells` table (cell-clustered Parquet: each row group one cell, its rows sorted by
//! the cells they are a guest of, so a cell's guests are a few runs of each neighbour's rows),
//! the `guests` table (those runs), the `centroids` table, and a commit per generation. A later run
//! places only the embed shards that are new, on the same centroids, unless `--retrain`, a
//! lower threshold, or drift (the new vectors' mean cosine to their home centroid falling more
//! than `drift_max` below the training sample's) asks for new centroids; then everything is
//! placed again and the older generations are retracted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::builder::{ListBuilder, UInt32Builder};
use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, RecordBatch, UInt32Array,
};
use arrow::datatypes::{Field, SchemaRef};
use futures::TryStreamExt;
use ndarray::{Array2, ArrayView2};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::by_cell;
use super::cells::{self, Layout, PartitionCommit};
use super::guests::{self, GuestRuns};
use super::kmeans;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::Rng;
use crate::stage::Stage;
use crate::storage::Location;
use crate::table::records::UnitId;
use crate::table::{self, io, Catalog, Commit, CommitSet, DataObject, Generations, WriteParams};
use crate::units;

/// Every CLIP vector's norm must be at most this (unit vectors stored in f16 are within 5e-4).
pub const NORM_BOUND: f32 = 1.001;
/// Added to the guest radius for rounding in the scores.
const SLACK: f32 = 1e-4;
/// New vectors sampled to measure drift.
const DRIFT_SAMPLE: usize = 10_000;
/// Rounds of splitting oversized cells.
const SPLIT_ROUNDS: usize = 4;

/// Settings of the partition stage: a spec's `[partition]` section (whose CLIP threshold is
/// `[candidates] clip-min`) and the flags of `blindspot partition` (one shape, one check).
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartitionParams {
    /// Cells (default: about sqrt(n), more if a cell's block would be too big).
    #[arg(long)]
    pub cells: Option<usize>,
    /// Vectors sampled to train the centroids (default: 32 per cell, 20k to 500k).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Seed of the sample and of k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Copy a vector as a guest into at most its K nearest other cells (approximate; measure
    /// with `candidates --recall`). Default: every cell where it can have a pair (exact), or,
    /// when that would copy each vector into more than --max-copies cells, the smallest K that
    /// keeps --target-recall of the training sample's exact pairs.
    #[arg(long, conflicts_with = "exact")]
    pub probe: Option<usize>,
    /// The CLIP threshold mining will use (the guest radius depends on it).
    #[arg(long, default_value_t = PartitionParams::default().clip_min)]
    #[serde(skip)]
    pub clip_min: f32,
    /// Train new centroids and place every vector again.
    #[arg(long)]
    pub retrain: bool,
    /// Split cells whose block (home + guests) is estimated above this many rows; a cell's
    /// block is what candidates holds in memory (rows x dim x 4 bytes).
    #[arg(long, default_value_t = PartitionParams::default().max_block_rows)]
    pub max_block_rows: usize,
    /// Give up exact placement (choose probes; refuse with --exact) when vectors would average
    /// more guest placements than this.
    #[arg(long, default_value_t = PartitionParams::default().max_copies)]
    pub max_copies: f64,
    /// Demand exact placement: refuse rather than choose probes when it is impractical.
    #[arg(long)]
    pub exact: bool,
    /// The recall probes are chosen for when exact placement is impractical.
    #[arg(long, default_value_t = PartitionParams::default().target_recall)]
    pub target_recall: f64,
    /// Retrain when new vectors fit the centroids this much worse (mean cosine) than the
    /// training sample did.
    #[arg(long, default_value_t = PartitionParams::default().drift_max)]
    pub drift_max: f64,
    /// Lloyd iterations at most.
    #[arg(skip = PartitionParams::default().iterations)]
    #[serde(skip)]
    pub iterations: usize,
    /// Rows buffered per cell before a row group is written, in bytes over all cells.
    #[arg(skip = PartitionParams::default().buffer_bytes)]
    #[serde(skip)]
    pub buffer_bytes: usize,
    /// Guest runs held in memory (24 bytes each) before they are spilled to scratch objects
    /// and sorted on disk.
    #[arg(skip = PartitionParams::default().runs_held)]
    #[serde(skip)]
    pub runs_held: usize,
    /// When the buffer cannot hold this many rows of every cell, rows are sorted by cell on
    /// disk before they are written (one row group per cell) rather than flushed a cell at a
    /// time from the buffer (row groups of a few rows).
    #[arg(skip = PartitionParams::default().min_group_rows)]
    #[serde(skip)]
    pub min_group_rows: usize,
}

impl PartitionParams {
    /// Every problem with these settings, by field name.
    pub fn check(&self) -> Vec<String> {
        let mut problems: Vec<String> =
            super::clip_min_problem(self.clip_min).into_iter().collect();
        for (name, value) in [
            ("cells", self.cells),
            ("probe", self.probe),
            ("sample", self.sample),
        ] {
            if value == Some(0) {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if self.probe.is_some() && self.exact {
            problems.push("probe and exact cannot both be set".into());
        }
        if !(self.target_recall > 0.0 && self.target_recall <= 1.0) {
            problems.push(format!(
                "target-recall {} must be in (0, 1]",
                self.target_recall
            ));
        }
        if self.max_copies.is_nan() || self.max_copies < 1.0 {
            problems.push(format!("max-copies {} must be at least 1", self.max_copies));
        }
        if self.max_block_rows == 0 {
            problems.push("max-block-rows must be at least 1".into());
        }
        problems
    }
}

impl Default for PartitionParams {
    fn default() -> Self {
        PartitionParams {
            cells: None,
            sample: None,
            seed: 0,
            probe: None,
            clip_min: 0.95,
            retrain: false,
            max_block_rows: 200_000,
            max_copies: 16.0,
            exact: false,
            target_recall: 0.999,
            drift_max: 0.05,
            iterations: 10,
            buffer_bytes: 256 << 20,
            runs_held: 4 << 20,
            min_group_rows: 64,
        }
    }
}

/// What a partition run did.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionSummary {
    /// The generation written (none when everything was placed already).
    pub generation: Option<u64>,
    /// The generation whose centroids are used.
    pub layout: u64,
    /// Why centroids were trained by this run, if they were.
    pub trained: Option<String>,
    /// Cells.
    pub cells: usize,
    /// Embed shards placed by this run.
    pub shards: usize,
    /// Vectors placed (home rows).
    pub vectors: u64,
    /// Guest placements (each read in place from its home cell, not copied).
    pub guests: u64,
    /// Runs of home rows the `guests` table lists for them.
    pub guest_runs: u64,
    /// (home + guests) / home: the rows the joins read per vector written.
    pub copy_factor: f64,
    /// The largest cell block (home + guests, all generations), in rows.
    pub largest_block: u64,
    /// Guests capped at this many nearest cells (None: exact placement).
    pub probe: Option<usize>,
    /// The probes were chosen for this recall because exact placement was impractical.
    pub auto_probe: Option<f64>,
    /// Recall of the probes on the training sample's exact pairs, when chosen.
    pub estimated_recall: Option<f64>,
    /// Mean cosine of the placed vectors to their home centroid.
    pub fit: f64,
    /// Drift of the new vectors against the training sample, when placed incrementally.
    pub drift: Option<f64>,
    /// Bytes of `cells` and `guests` objects written.
    pub bytes: u64,
    /// Rows not placed because their key is in another shard too (one row of each is).
    pub duplicate_keys: u64,
    /// Peak resident set of the process (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Wall time.
    pub seconds: f64,
}

/// Where one vector goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Its home cell.
    pub home: u32,
    /// Its cosine to the home centroid.
    pub fit: f32,
    /// Cells it is copied into as a guest.
    pub guests: Vec<u32>,
}

/// Places vectors on a set of centroids.
pub struct Placer {
    centroids: Array2<f32>,
    gram: Option<Array2<f32>>,
    clip_min: f32,
    probe: Option<usize>,
}

/// Centroid Gram matrices are kept up to this many cells (64 MiB); above, dot products are
/// computed as needed.
const GRAM_MAX_CELLS: usize = 4096;

impl Placer {
    /// A placer for unit `centroids`, threshold `clip_min`, optional probe cap.
    pub fn new(centroids: Array2<f32>, clip_min: f32, probe: Option<usize>) -> Placer {
        let gram = (centroids.nrows() <= GRAM_MAX_CELLS).then(|| centroids.dot(&centroids.t()));
        Placer {
            centroids,
            gram,
            clip_min,
            probe,
        }
    }

    /// Cells.
    pub fn cells(&self) -> usize {
        self.centroids.nrows()
    }

    fn centroid_dot(&self, a: usize, b: usize) -> f32 {
        match &self.gram {
            Some(g) => g[[a, b]],
            None => self.centroids.row(a).dot(&self.centroids.row(b)),
        }
    }

    /// Places the rows of `flat` (`dim` wide) on a blocking thread.
    async fn place_blocking(self: Arc<Self>, flat: Vec<f32>, dim: usize) -> Result<Vec<Placement>> {
        tokio::task::spawn_blocking(move || {
            let x =
                ArrayView2::from_shape((flat.len() / dim.max(1), dim), &flat).expect("rows x dim");
            self.place(x)
        })
        .await
        .map_err(|e| Error::Internal(format!("placement: {e}")))
    }

    /// Home and guest cells of each row of `x` (guests in cell order).
    pub fn place(&self, x: ArrayView2<f32>) -> Vec<Placement> {
        self.placements(x, false)
    }

    /// Home and guest cells of each row of `x`, guests nearest first (by distance to the
    /// bisector): with probe K a vector is a guest of the first K.
    pub fn ranked(&self, x: ArrayView2<f32>) -> Vec<Placement> {
        self.placements(x, true)
    }

    fn placements(&self, x: ArrayView2<f32>, nearest_first: bool) -> Vec<Placement> {
        let bound2 = NORM_BOUND * NORM_BOUND - 2.0 * self.clip_min;
        kmeans::score_chunks(x, self.centroids.view(), |start, scores| {
            scores
                .rows()
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let s = s.as_slice().expect("standard layout");
                    let (home, best) = kmeans::argmax(s);
                    let row = x.row(start + i);
                    let r2 = row.dot(&row) + bound2;
                    let mut guests = Vec::new();
                    if r2 > 0.0 {
                        let r = r2.sqrt() + SLACK;
                        let h = home as usize;
                        for (j, &sj) in s.iter().enumerate() {
                            let gap = best - sj;
                            if j == h || gap > 2.0 * r {
                                continue;
                            }
                            let apart = (2.0 - 2.0 * self.centroid_dot(h, j)).max(0.0).sqrt();
                            let dist = if apart < 1e-6 { 0.0 } else { gap / apart };
                            if dist <= r {
                                guests.push((dist, j as u32));
                            }
                        }
                    }
                    if self.probe.is_some() || nearest_first {
                        guests.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                    if let Some(k) = self.probe {
                        guests.truncate(k);
                    }
                    let mut guests: Vec<u32> = guests.into_iter().map(|g| g.1).collect();
                    if !nearest_first {
                        guests.sort_unstable();
                    }
                    Placement {
                        home,
                        fit: best,
                        guests,
                    }
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Default cell count for `n` vectors: about sqrt(n), and enough that an average home set
/// stays well under the block bound.
pub fn default_cells(n: u64, max_block_rows: usize) -> usize {
    let by_sqrt = (n as f64).sqrt().round() as usize;
    let by_block = (n as usize * 4).div_ceil(max_block_rows.max(1));
    by_sqrt.max(by_block).max(1)
}

/// Probes chosen for a target recall on a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeChoice {
    /// Guest copies per vector capped at this many nearest cells.
    pub probe: usize,
    /// The share of the sample's exact pairs that this probe keeps.
    pub recall: f64,
    /// Exact pairs found in the sample (the estimate's support).
    pub pairs: usize,
}

/// Query rows of the sample whose exact pairs estimate recall.
const PROBE_QUERIES: usize = 4000;
/// The probe used when the sample has no pair above the threshold to estimate with.
const PROBE_WITHOUT_PAIRS: usize = 2;

/// The smallest probe K whose placement keeps at least `target` of the exact pairs above the
/// threshold among `sample` (pairs of its first 4,000 rows with every row, by brute force). A
/// pair `(x, y)` homed in different cells is found when `y`'s home is among the first K guest
/// cells of `x` or the other way round, so its rank is the smaller of the two positions.
pub fn choose_probe(sample: ArrayView2<f32>, exact: &Placer, target: f64) -> ProbeChoice {
    let n = sample.nrows();
    let m = n.min(PROBE_QUERIES);
    let ranked = exact.ranked(sample);
    let position = |of: usize, cell: u32| -> usize {
        ranked[of]
            .guests
            .iter()
            .position(|&g| g == cell)
            .map_or(usize::MAX, |p| p + 1)
    };
    let mut ranks: Vec<usize> = Vec::new();
    for start in (0..m).step_by(512) {
        let end = (start + 512).min(m);
        let sims = sample.slice(ndarray::s![start..end, ..]).dot(&sample.t());
        for (qi, row) in sims.rows().into_iter().enumerate() {
            let i = start + qi;
            for (j, &sim) in row.iter().enumerate() {
                if j <= i || sim <= exact.clip_min {
                    continue;
                }
                let (hi, hj) = (ranked[i].home, ranked[j].home);
                ranks.push(match hi == hj {
                    true => 0,
                    false => position(i, hj).min(position(j, hi)),
                });
            }
        }
    }
    if ranks.is_empty() {
        return ProbeChoice {
            probe: PROBE_WITHOUT_PAIRS,
            recall: f64::NAN,
            pairs: 0,
        };
    }
    ranks.sort_unstable();
    let need =
        ((target.clamp(0.0, 1.0) * ranks.len() as f64).ceil() as usize).clamp(1, ranks.len());
    let probe = ranks[need - 1].clamp(1, exact.cells().max(1));
    let kept = ranks.partition_point(|&r| r <= probe);
    ProbeChoice {
        probe,
        recall: kept as f64 / ranks.len() as f64,
        pairs: ranks.len(),
    }
}

/// The partition stage.
pub async fn partition(
    root: &Location,
    params: &PartitionParams,
    progress: Arc<dyn Progress>,
) -> Result<PartitionSummary> {
    Stage::Partition.settings(params.check())?;
    units::locked(
        root,
        Stage::Partition,
        partition_locked(root, params, progress),
    )
    .await
}

/// The embed commits to place, and whether everything is placed again.
struct Plan {
    units: Vec<Commit>,
    trained: Option<String>,
    full: bool,
}

async fn partition_locked(
    root: &Location,
    params: &PartitionParams,
    progress: Arc<dyn Progress>,
) -> Result<PartitionSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let embeds = catalog
        .commits(&table::EMBEDDINGS, Generations::All)
        .await?;
    if embeds.is_empty() {
        let url = &root.url;
        return Err(Error::Usage(format!(
            "{url} has no committed embeddings; run `blindspot embed INPUT --out {url}` first"
        )));
    }
    // Plan: the shards to place, on which centroids.
    let existing = Layout::open(&catalog).await?;
    let mut plan = plan(&embeds, existing.as_ref(), params);
    let mut drift = None;
    if let (Some(layout), None) = (&existing, &plan.trained) {
        if plan.units.is_empty() {
            return Ok(up_to_date(layout, started));
        }
        drift = Some(check_drift(&catalog, &mut plan, layout, &embeds, params).await?);
    }
    let generation = catalog.begin(Stage::Partition.name()).await?;
    guests::clear_scratch(root).await?;
    let centroids = match (&plan.trained, &existing) {
        (None, Some(layout)) => Centroids::of(layout, params),
        (reason, _) => {
            let reason = reason.clone().unwrap_or_default();
            tracing::info!(reason, "training centroids");
            Centroids::train(&catalog, generation, &embeds, params, progress.as_ref()).await?
        }
    };
    let placer = Arc::new(Placer::new(
        centroids.centroids.clone(),
        params.clip_min,
        centroids.probe,
    ));
    let dups = duplicate_keys(&catalog, &embeds, &plan.units).await?;
    dups.warn(progress.as_ref());
    // Place, then write the generation's commit.
    let placed = place(
        &catalog,
        generation,
        &plan.units,
        placer.clone(),
        params,
        &dups,
        progress,
    )
    .await?;
    let record = commit_generation(
        &catalog,
        generation,
        &plan,
        centroids,
        &placed,
        placer.cells(),
        drift,
        params,
    )
    .await?;
    // The blocks now: what this generation added, plus what the kept generations hold.
    let kept = existing.as_ref().filter(|_| !plan.full);
    Ok(PartitionSummary {
        generation: Some(generation),
        trained: plan.trained,
        largest_block: largest_after(kept, &record),
        bytes: placed.bytes,
        duplicate_keys: placed.duplicate_rows,
        seconds: started.elapsed().as_secs_f64(),
        ..PartitionSummary::of(&record)
    })
}

impl PartitionSummary {
    /// What `record` says of the generation it commits.
    fn of(record: &PartitionCommit) -> PartitionSummary {
        PartitionSummary {
            generation: None,
            layout: record.layout,
            trained: record.trained.clone(),
            cells: record.cells,
            shards: record.shards.len(),
            vectors: record.home,
            guests: record.guests,
            guest_runs: record.guest_runs,
            copy_factor: record.copy_factor(),
            largest_block: 0,
            probe: record.probe,
            auto_probe: record.auto_probe,
            estimated_recall: record.estimated_recall,
            fit: record.fit,
            drift: record.drift,
            bytes: 0,
            duplicate_keys: 0,
            peak_rss_bytes: crate::progress::peak_rss_bytes(),
            seconds: 0.0,
        }
    }
}

/// The generation's record and commit (its cells and the centroids it placed on); a full
/// placement retracts every other generation.
#[allow(clippy::too_many_arguments)]
async fn commit_generation(
    catalog: &Catalog,
    generation: u64,
    plan: &Plan,
    centroids: Centroids,
    placed: &Placed,
    cells: usize,
    drift: Option<f64>,
    params: &PartitionParams,
) -> Result<PartitionCommit> {
    let record = PartitionCommit {
        layout: centroids.layout,
        cells,
        dim: placed.dim,
        clip_min: params.clip_min,
        norm_bound: NORM_BOUND,
        probe: centroids.probe,
        auto_probe: centroids.chosen.map(|c| c.0),
        estimated_recall: centroids.chosen.and_then(|c| c.1),
        seed: params.seed,
        shards: plan
            .units
            .iter()
            .map(|c| (c.unit.clone(), c.generation))
            .collect(),
        home: placed.home,
        guests: placed.guests,
        guests_in_place: true,
        guest_runs: placed.runs,
        cell_rows: placed.cell_rows.clone(),
        fit: placed.fit,
        train_fit: centroids.train_fit,
        drift,
        trained: plan.trained.clone(),
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new(&UnitId::partition(generation), generation, &record)?
        .with(&table::CELLS, placed.objects.clone())
        .with(&table::GUESTS, placed.guest_objects.clone())
        .with(&table::CENTROIDS, centroids.objects);
    catalog.commit(CommitSet::PARTITION, &commit).await?;
    if plan.full {
        let gone = catalog
            .retract(CommitSet::PARTITION, |c| c.generation != generation)
            .await?;
        if gone > 0 {
            tracing::info!(retracted = gone, "older partition generations replaced");
        }
    }
    Ok(record)
}

/// The summary of a run that found every shard placed.
fn up_to_date(layout: &Layout, started: Instant) -> PartitionSummary {
    PartitionSummary {
        generation: None,
        layout: layout.layout,
        trained: None,
        cells: layout.centroids.nrows(),
        shards: 0,
        vectors: 0,
        guests: 0,
        guest_runs: 0,
        copy_factor: 1.0,
        largest_block: largest_block(layout),
        probe: layout.latest().probe,
        auto_probe: layout.latest().auto_probe,
        estimated_recall: layout.latest().estimated_recall,
        fit: layout.latest().fit,
        drift: None,
        bytes: 0,
        duplicate_keys: 0,
        peak_rss_bytes: crate::progress::peak_rss_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// How much worse new vectors fit the layout than its training sample; past
/// `params.drift_max` the plan becomes a full retrain.
async fn check_drift(
    catalog: &Catalog,
    plan: &mut Plan,
    layout: &Layout,
    embeds: &[Commit],
    params: &PartitionParams,
) -> Result<f64> {
    let sample = reservoir(catalog, &plan.units, DRIFT_SAMPLE, params.seed).await?;
    let near = kmeans::nearest(sample.view(), layout.centroids.view());
    let fit = near.iter().map(|n| n.1 as f64).sum::<f64>() / near.len().max(1) as f64;
    let d = layout.latest().train_fit - fit;
    if d > params.drift_max {
        tracing::warn!(
            drift = d,
            bound = params.drift_max,
            "new vectors drifted from the centroids; retraining"
        );
        *plan = Plan {
            units: embeds.to_vec(),
            trained: Some(format!("drift {d:.3} above {}", params.drift_max)),
            full: true,
        };
    }
    Ok(d)
}

/// The centroids a generation places on: the layout's, or newly trained.
struct Centroids {
    centroids: Array2<f32>,
    /// The generation that trained them.
    layout: u64,
    train_fit: f64,
    objects: Vec<DataObject>,
    /// The probe placed with.
    probe: Option<usize>,
    /// When partition chose the probe: the recall it was chosen for and its estimate.
    chosen: Option<(f64, Option<f64>)>,
}

impl Centroids {
    /// The existing layout's.
    fn of(layout: &Layout, params: &PartitionParams) -> Centroids {
        let latest = layout.latest();
        Centroids {
            centroids: layout.centroids.clone(),
            layout: layout.layout,
            train_fit: latest.train_fit,
            objects: layout
                .generations
                .iter()
                .flat_map(|g| g.2.objects(&table::CENTROIDS))
                .collect(),
            probe: params.probe.or(latest.probe),
            chosen: latest.auto_probe.map(|t| (t, latest.estimated_recall)),
        }
    }

    /// Trained on every embed commit by `generation`, and written.
    async fn train(
        catalog: &Catalog,
        generation: u64,
        embeds: &[Commit],
        params: &PartitionParams,
        progress: &dyn Progress,
    ) -> Result<Centroids> {
        let trained = train(catalog, embeds, params, progress).await?;
        let objects = write_centroids(catalog, generation, &trained.centroids).await?;
        let mut chosen = None;
        if let Some(c) = &trained.chosen {
            let line = format!(
                "partition: exact placement would copy each vector into {:.1} cells (bound {}); placing with probe {} for a target recall of {} (estimated {:.4} on {} exact pairs of the training sample; `candidates` measures it after the join; --exact refuses instead)",
                trained.exact_copies, params.max_copies, c.probe, params.target_recall, c.recall, c.pairs
            );
            tracing::info!("{line}");
            progress.message(&line);
            chosen = Some((
                params.target_recall,
                Some(c.recall).filter(|r| r.is_finite()),
            ));
        }
        Ok(Centroids {
            probe: params.probe.or(trained.chosen.map(|c| c.probe)),
            centroids: trained.centroids,
            layout: generation,
            train_fit: trained.fit,
            objects,
            chosen,
        })
    }
}

/// Which embed shards to place, and whether to train.
fn plan(embeds: &[Commit], existing: Option<&Layout>, params: &PartitionParams) -> Plan {
    let all = || embeds.to_vec();
    let Some(layout) = existing else {
        return Plan {
            units: all(),
            trained: Some("first partition".into()),
            full: true,
        };
    };
    let reason = retrain_reason(layout, params);
    if reason.is_some() {
        return Plan {
            units: all(),
            trained: reason,
            full: true,
        };
    }
    if !layout.in_place() {
        tracing::warn!("the cells hold guest copies (an older layout); placing every shard again on the same centroids");
        return Plan {
            units: all(),
            trained: None,
            full: true,
        };
    }
    let placed: BTreeMap<&str, u64> = layout
        .generations
        .iter()
        .flat_map(|g| g.1.shards.iter().map(|(u, gen)| (u.as_str(), *gen)))
        .collect();
    let current: HashMap<&str, u64> = embeds
        .iter()
        .map(|c| (c.unit.as_str(), c.generation))
        .collect();
    let changed = placed
        .iter()
        .find(|(u, g)| current.get(*u) != Some(g))
        .map(|(u, _)| u.to_string());
    if let Some(unit) = changed {
        tracing::warn!(shard = unit, "a placed shard was re-embedded or removed; placing every shard again on the same centroids");
        return Plan {
            units: all(),
            trained: None,
            full: true,
        };
    }
    Plan {
        units: embeds
            .iter()
            .filter(|c| !placed.contains_key(c.unit.as_str()))
            .cloned()
            .collect(),
        trained: None,
        full: false,
    }
}

/// Why `params` ask for new centroids on `layout`, if they do.
fn retrain_reason(layout: &Layout, params: &PartitionParams) -> Option<String> {
    let latest = layout.latest();
    if params.retrain {
        Some("--retrain".to_string())
    } else if params.clip_min < latest.clip_min {
        Some(format!(
            "clip-min {} is below the {} the guests were placed for",
            params.clip_min, latest.clip_min
        ))
    } else if probe_changed(params, latest) {
        Some(format!(
            "probe changed from {} to {}",
            probe_name(latest.probe, latest.auto_probe.is_some()),
            match (params.probe, params.exact) {
                (Some(k), _) => k.to_string(),
                (None, true) => "exact".into(),
                (None, false) => "chosen for the target recall".into(),
            }
        ))
    } else if params.cells.is_some_and(|k| k != layout.centroids.nrows()) {
        Some(format!(
            "--cells differs from the layout's {}",
            layout.centroids.nrows()
        ))
    } else {
        None
    }
}

/// True when the placement `params` ask for differs from the layout's: another `--probe`,
/// `--exact` on an approximate layout, or no `--probe` on a layout whose probe was given (a
/// layout whose probe partition chose itself, or an exact one, is kept).
fn probe_changed(params: &PartitionParams, latest: &PartitionCommit) -> bool {
    match (params.probe, params.exact) {
        (Some(k), _) => latest.probe != Some(k),
        (None, true) => latest.probe.is_some(),
        (None, false) => latest.probe.is_some() && latest.auto_probe.is_none(),
    }
}

fn probe_name(probe: Option<usize>, chosen: bool) -> String {
    match (probe, chosen) {
        (None, _) => "exact".into(),
        (Some(k), false) => k.to_string(),
        (Some(k), true) => format!("{k} (chosen)"),
    }
}

fn largest_block(layout: &Layout) -> u64 {
    let through = layout.generations.last().map(|g| g.0).unwrap_or(0);
    (0..layout.centroids.nrows())
        .map(|c| layout.block_rows(c, through))
        .max()
        .unwrap_or(0)
}

/// Rows of the embed units' objects (from their commits, or their footers).
async fn rows_of(catalog: &Catalog, units: &[Commit]) -> Result<u64> {
    let mut n = 0;
    for c in units {
        for o in c.objects(&table::EMBEDDINGS) {
            n += match o.rows {
                Some(r) => r,
                None => io::object_rows(catalog.root(), &o.path).await?,
            };
        }
    }
    Ok(n)
}

fn paths_of(units: &[Commit]) -> Vec<String> {
    units
        .iter()
        .flat_map(|c| c.objects(&table::EMBEDDINGS))
        .map(|o| o.path)
        .collect()
}

/// A uniform sample of `size` CLIP vectors of `units` (reservoir sampling, seeded).
async fn reservoir(
    catalog: &Catalog,
    units: &[Commit],
    size: usize,
    seed: u64,
) -> Result<Array2<f32>> {
    let mut rng = Rng(seed ^ 0x5A4D_504C_4520);
    let mut kept: Vec<Vec<f32>> = Vec::with_capacity(size);
    let mut seen = 0u64;
    let mut dim = 0;
    let mut stream = io::scan_objects(
        catalog.root(),
        paths_of(units),
        &["clip"],
        io::SCAN_BATCH_ROWS,
    );
    while let Some(batch) = stream.try_next().await? {
        let (flat, d) = io::vectors_flat(&batch, "clip")?;
        dim = d;
        for row in flat.chunks_exact(d.max(1)) {
            seen += 1;
            if kept.len() < size {
                kept.push(row.to_vec());
            } else {
                let j = rng.below(seen) as usize;
                if j < size {
                    kept[j] = row.to_vec();
                }
            }
        }
    }
    let m = kept.len();
    Array2::from_shape_vec((m, dim), kept.concat())
        .map_err(|e| Error::Internal(format!("sample: {e}")))
}

/// What training made: the centroids, their fit on the sample and, when exact placement was
/// impractical, the probes chosen instead.
struct Trained {
    centroids: Array2<f32>,
    fit: f64,
    exact_copies: f64,
    chosen: Option<ProbeChoice>,
}

/// Trains the centroids on a sample of every vector, splitting cells whose estimated block is
/// too big; refuses exact placement whose estimated copy factor passes the bound.
async fn train(
    catalog: &Catalog,
    embeds: &[Commit],
    params: &PartitionParams,
    progress: &dyn Progress,
) -> Result<Trained> {
    let n = rows_of(catalog, embeds).await?;
    let k = params
        .cells
        .unwrap_or_else(|| default_cells(n, params.max_block_rows));
    let size = params
        .sample
        .unwrap_or_else(|| (32 * k).clamp(20_000, 500_000))
        .min(n as usize);
    progress.message(&format!(
        "partition: training {k} centroids on {size} of {n} vectors"
    ));
    let sample = reservoir(catalog, embeds, size, params.seed).await?;
    if sample.nrows() == 0 {
        return Err(Error::Usage(format!(
            "{} has embeddings commits but no CLIP vectors in them",
            catalog.root().url
        )));
    }
    let params = params.clone();
    tokio::task::spawn_blocking(move || -> Result<Trained> {
        let trained = kmeans::train(sample.view(), k, params.iterations, params.seed);
        let mut centroids = trained.centroids;
        let scale = n as f64 / sample.nrows() as f64;
        let (exact_copies, chosen) = match params.probe {
            Some(_) => (f64::NAN, None),
            None => probe_for(sample.view(), &centroids, &params)?,
        };
        let probe = params.probe.or(chosen.as_ref().map(|c| c.probe));
        for round in 0..SPLIT_ROUNDS {
            match split_oversized(sample.view(), &centroids, probe, scale, &params)? {
                Some((split, cells)) => {
                    tracing::info!(round, cells, "splitting oversized cells");
                    centroids = split;
                }
                None => break,
            }
        }
        let near = kmeans::nearest(sample.view(), centroids.view());
        let fit = near.iter().map(|n| n.1 as f64).sum::<f64>() / near.len().max(1) as f64;
        Ok(Trained {
            centroids,
            fit,
            exact_copies,
            chosen,
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("partition training: {e}")))?
}

/// Without a probe asked for: the copies exact placement would make of each sample vector,
/// and, past `max_copies`, the probe chosen for `target_recall` (refused with `exact`).
fn probe_for(
    sample: ArrayView2<f32>,
    centroids: &Array2<f32>,
    params: &PartitionParams,
) -> Result<(f64, Option<ProbeChoice>)> {
    let exact = Placer::new(centroids.clone(), params.clip_min, None);
    let copies = exact
        .place(sample)
        .iter()
        .map(|p| 1 + p.guests.len())
        .sum::<usize>() as f64
        / sample.nrows() as f64;
    if copies <= params.max_copies {
        return Ok((copies, None));
    }
    if params.exact {
        return Err(Error::Usage(format!(
            "exact partitioning would copy each vector into {copies:.1} cells on average \
             (bound {}): these vectors are too spread out for clip-min {}. Drop --exact \
             to let partition choose probes for --target-recall, pass --probe K, fewer \
             --cells, or use `candidates --method exact|index`",
            params.max_copies, params.clip_min
        )));
    }
    Ok((
        copies,
        Some(choose_probe(sample, &exact, params.target_recall)),
    ))
}

/// The centroids with each cell whose block (scaled from the sample to all `scale` times as
/// many vectors) passes `max_block_rows` split in two, and how many were split; None when
/// none is oversized.
fn split_oversized(
    sample: ArrayView2<f32>,
    centroids: &Array2<f32>,
    probe: Option<usize>,
    scale: f64,
    params: &PartitionParams,
) -> Result<Option<(Array2<f32>, usize)>> {
    let placer = Placer::new(centroids.clone(), params.clip_min, probe);
    let placed = placer.place(sample);
    let mut block = vec![0u64; placer.cells()];
    let mut homes: Vec<Vec<usize>> = vec![Vec::new(); placer.cells()];
    for (i, p) in placed.iter().enumerate() {
        block[p.home as usize] += 1;
        homes[p.home as usize].push(i);
        for g in &p.guests {
            block[*g as usize] += 1;
        }
    }
    let oversized: Vec<usize> = (0..placer.cells())
        .filter(|&c| block[c] as f64 * scale > params.max_block_rows as f64)
        .filter(|&c| homes[c].len() >= 2)
        .collect();
    if oversized.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<Array2<f32>> = vec![centroids.clone()];
    for &c in &oversized {
        let members = kmeans::gather(sample, &homes[c]);
        let halves = kmeans::split(members.view(), params.seed + c as u64);
        rows[0].row_mut(c).assign(&halves.row(0));
        rows.push(halves.slice(ndarray::s![1..2, ..]).to_owned());
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let split = ndarray::concatenate(ndarray::Axis(0), &views)
        .map_err(|e| Error::Internal(format!("split: {e}")))?;
    Ok(Some((split, oversized.len())))
}

async fn write_centroids(
    catalog: &Catalog,
    generation: u64,
    centroids: &Array2<f32>,
) -> Result<Vec<DataObject>> {
    let (k, dim) = centroids.dim();
    let schema = cells::centroids_schema(dim);
    let values = Float32Array::from_iter_values(centroids.iter().copied());
    let item = Arc::new(Field::new(
        "item",
        arrow::datatypes::DataType::Float32,
        false,
    ));
    let list = FixedSizeListArray::try_new(item, dim as i32, Arc::new(values), None)
        .map_err(|e| Error::table("centroids", e))?;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(UInt32Array::from_iter_values(0..k as u32)),
            Arc::new(list),
        ],
    )
    .map_err(|e| Error::table("centroids", e))?;
    let base = format!(
        "{}/{}/centroids",
        table::CENTROIDS.dir,
        UnitId::generation(generation)
    );
    io::write_batches(catalog.root(), &base, &schema, &[batch]).await
}

/// What placing wrote.
struct Placed {
    objects: Vec<DataObject>,
    guest_objects: Vec<DataObject>,
    home: u64,
    guests: u64,
    runs: u64,
    cell_rows: Vec<[u64; 2]>,
    fit: f64,
    dim: usize,
    bytes: u64,
    /// Rows not placed: a second row of a key already placed.
    duplicate_rows: u64,
}

/// Keys found in more than one shard, and the shard whose row of each is placed (`None`:
/// one placed by an earlier generation).
#[derive(Default)]
struct DuplicateKeys {
    keep: HashMap<String, Option<String>>,
}

/// At most this many rows with a duplicated key are held to decide which to place (about
/// 100 bytes each): a corpus whose keys repeat beyond it is refused, not mined.
const MAX_DUPLICATE_ROWS: usize = 1 << 20;

/// The keys of the shards to place (`units`) that occur in more than one row of the whole
/// `embeddings` table (two images given one key: `x.png` in one folder, `x.jpg` in another
/// manifest part). A DataFusion query in a session that spills past 256 MiB finds them, so its
/// memory follows the duplicated keys (at most `MAX_DUPLICATE_ROWS`), not the images. The row kept is the one placed before,
/// if any, else the one in the first shard by name; the others are not placed (mined twice,
/// a key would pair with itself and inflate every join on keys).
async fn duplicate_keys(
    catalog: &Catalog,
    embeds: &[Commit],
    units: &[Commit],
) -> Result<DuplicateKeys> {
    let root = catalog.root();
    let ctx = crate::sql::spilling_session(root, 256 << 20)?;
    crate::sql::register_objects(&ctx, root, "embeddings", &paths_of(embeds)).await?;
    let failed = |e: datafusion::error::DataFusionError| Error::table("embeddings", e);
    let df = ctx
        .sql(
            "SELECT e.key, e.shard FROM embeddings e \
             JOIN (SELECT key FROM embeddings GROUP BY key HAVING count(*) > 1) d ON e.key = d.key",
        )
        .await
        .map_err(failed)?;
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let new: std::collections::HashSet<String> = units
        .iter()
        .filter_map(|u| u.record::<table::records::EmbedCommit>().ok())
        .map(|r| r.shard)
        .collect();
    let mut shards: HashMap<String, Vec<String>> = HashMap::new();
    let mut rows = 0usize;
    while let Some(batch) = stream.try_next().await.map_err(failed)? {
        rows += batch.num_rows();
        if rows > MAX_DUPLICATE_ROWS {
            return Err(Error::Usage(format!(
                "{}: more than {MAX_DUPLICATE_ROWS} rows share their key with another row; keys must name one image each (re-embed with keys that do, e.g. a manifest's key column)",
                root.url
            )));
        }
        let batch = io::cast_batch(
            &batch,
            &Arc::new(arrow::datatypes::Schema::new(vec![
                Field::new("key", arrow::datatypes::DataType::Utf8, true),
                Field::new("shard", arrow::datatypes::DataType::Utf8, true),
            ])),
        )?;
        let (keys, names) = (io::strings(&batch, "key")?, io::strings(&batch, "shard")?);
        for i in 0..batch.num_rows() {
            shards
                .entry(keys.value(i).to_string())
                .or_default()
                .push(names.value(i).to_string());
        }
    }
    let mut out = DuplicateKeys::default();
    for (key, mut of) in shards {
        let placed_before = of.iter().any(|s| !new.contains(s));
        if !of.iter().any(|s| new.contains(s)) {
            continue;
        }
        of.sort();
        let keep = match placed_before {
            true => None,
            false => of.first().cloned(),
        };
        out.keep.insert(key, keep);
    }
    Ok(out)
}

/// Rows waiting to be written, per cell.
struct Buffers {
    cells: Vec<Vec<RecordBatch>>,
    bytes: Vec<usize>,
    total: usize,
}

impl Buffers {
    fn new(cells: usize) -> Buffers {
        Buffers {
            cells: vec![Vec::new(); cells],
            bytes: vec![0; cells],
            total: 0,
        }
    }

    /// Buffers `part`, rows of `cell`.
    fn push(&mut self, cell: usize, part: RecordBatch) {
        let size = part.get_array_memory_size();
        self.cells[cell].push(part);
        self.bytes[cell] += size;
        self.total += size;
    }

    /// Every buffered part, in cell order, leaving the buffer empty.
    fn take_all(&mut self) -> Vec<RecordBatch> {
        self.bytes.iter_mut().for_each(|b| *b = 0);
        self.total = 0;
        self.cells.iter_mut().flat_map(std::mem::take).collect()
    }
}

impl Placed {
    fn new(cells: usize) -> Placed {
        Placed {
            objects: Vec::new(),
            guest_objects: Vec::new(),
            home: 0,
            guests: 0,
            runs: 0,
            cell_rows: vec![[0, 0]; cells],
            fit: 0.0,
            dim: 0,
            bytes: 0,
            duplicate_rows: 0,
        }
    }
}

/// Streams the units' vectors, places each, and writes the `cells` rows one cell per row group,
/// buffering at most `buffer_bytes` across cells (the fullest cell is written first); then the
/// `guests` table of the runs the row groups hold.
async fn place(
    catalog: &Catalog,
    generation: u64,
    units: &[Commit],
    placer: Arc<Placer>,
    params: &PartitionParams,
    dups: &DuplicateKeys,
    progress: Arc<dyn Progress>,
) -> Result<Placed> {
    let k = placer.cells();
    let total = rows_of(catalog, units).await?;
    progress.start(Stage::Partition.name(), Some(total));
    let (with_dino, copied, projected) = columns_to_place(units, dups);
    let mut seen = std::collections::HashSet::new();
    let mut stream = io::scan_objects(
        catalog.root(),
        paths_of(units),
        &projected,
        io::SCAN_BATCH_ROWS,
    );
    let mut out = Placed::new(k);
    let mut buffers = Buffers::new(k);
    let mut cells: Option<Written> = None;
    while let Some(batch) = stream.try_next().await? {
        let batch = match dups.keep.is_empty() {
            true => batch,
            false => dups.keep_one(&batch, &mut seen, &mut out.duplicate_rows)?,
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let (flat, dim) = io::vectors_flat(&batch, "clip")?;
        out.dim = dim;
        check_norms(&flat, dim, &batch)?;
        let first = cells.is_none();
        let w = match &mut cells {
            Some(w) => w,
            None => cells.insert(Written::new(
                catalog, generation, &batch, with_dino, params,
            )?),
        };
        let placements = placer.clone().place_blocking(flat, dim).await?;
        for p in &placements {
            out.fit += p.fit as f64;
        }
        buffer_by_cell(
            &mut out,
            &mut buffers,
            &placements,
            &batch,
            copied,
            &w.schema,
        )?;
        progress.advance(batch.num_rows() as u64);
        if first {
            w.sort_if_crowded(k, buffers.total / batch.num_rows().max(1), params)?;
        }
        w.make_room(&mut buffers, params.buffer_bytes).await?;
    }
    progress.finish();
    let Some(mut w) = cells else {
        return Err(Error::Usage(format!(
            "the {} embed shards to place hold no rows",
            units.len()
        )));
    };
    w.write_rest(buffers, params.buffer_bytes).await?;
    out.runs = w.runs.count();
    (out.objects, out.guest_objects) = w.finish().await?;
    out.bytes =
        bytes_of(catalog, &out.objects).await? + bytes_of(catalog, &out.guest_objects).await?;
    out.fit /= out.home.max(1) as f64;
    Ok(out)
}

/// The `cells` objects of a generation being written, and the guest runs of their row groups.
struct Written {
    root: Location,
    generation: u64,
    schema: SchemaRef,
    writer: table::TableWriter,
    /// Rows spilled to be sorted by cell on disk, when the cells are too many to buffer.
    spilled: Option<by_cell::Spilled>,
    /// The objects written to, in order.
    paths: Vec<String>,
    runs: GuestRuns,
}

impl Written {
    /// The writer for generation `generation`'s cells, in the schema of `batch`'s columns.
    fn new(
        catalog: &Catalog,
        generation: u64,
        batch: &RecordBatch,
        with_dino: bool,
        params: &PartitionParams,
    ) -> Result<Written> {
        let field = |name: &str| batch.schema().field_with_name(name).ok().cloned();
        let schema = cells::cells_schema(
            &field("clip").expect("projected"),
            field("dino").filter(|_| with_dino).as_ref(),
        );
        let base = format!(
            "{}/{}/cells",
            table::CELLS.dir,
            UnitId::generation(generation)
        );
        let writer = table::TableWriter::new(
            catalog.root(),
            &base,
            schema.clone(),
            WriteParams {
                fast: true,
                page_rows: Some(cells::PAGE_ROWS),
                ..WriteParams::default()
            },
        )?;
        Ok(Written {
            root: catalog.root().clone(),
            generation,
            schema,
            writer,
            spilled: None,
            paths: Vec::new(),
            runs: GuestRuns::new(catalog.root(), generation, params.runs_held),
        })
    }

    /// Writes one cell's buffered rows as a row group, sorted by the cells they are a guest of,
    /// and notes the runs of each guest cell.
    async fn flush(&mut self, buffers: &mut Buffers, cell: usize) -> Result<()> {
        let parts = std::mem::take(&mut buffers.cells[cell]);
        buffers.total -= std::mem::take(&mut buffers.bytes[cell]);
        if parts.is_empty() {
            return Ok(());
        }
        let batch = arrow::compute::concat_batches(&self.schema, &parts)
            .map_err(|e| Error::table("cells", e))?;
        let lists = guest_lists(&batch)?;
        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_by(|&a, &b| lists[a as usize].cmp(lists[b as usize]));
        let sorted = arrow::compute::take_record_batch(&batch, &UInt32Array::from(order.clone()))
            .map_err(|e| Error::table("cells", e))?;
        let (path, first) = self.writer.write_group(&sorted).await?;
        if self.paths.last() != Some(&path) {
            self.paths.push(path);
        }
        let object = (self.paths.len() - 1) as u32;
        // (guest cell, row in the group), then runs of consecutive rows.
        let mut entries: Vec<(u32, u32)> = order
            .iter()
            .enumerate()
            .flat_map(|(row, &i)| lists[i as usize].iter().map(move |&g| (g, row as u32)))
            .collect();
        entries.sort_unstable();
        let runs = entries
            .chunk_by(|a, b| a.0 == b.0 && a.1 + 1 == b.1)
            .map(|run| cells::GuestRun {
                cell: run[0].0,
                home_cell: cell as u32,
                object,
                first: first + run[0].1 as u64,
                rows: run.len() as u32,
            });
        self.runs.push(runs).await
    }

    /// Sorts the rows by cell on disk when the buffer cannot gather `min_group_rows` rows of
    /// each of `cells` cells at `row_bytes` bytes a row.
    fn sort_if_crowded(
        &mut self,
        cells: usize,
        row_bytes: usize,
        params: &PartitionParams,
    ) -> Result<()> {
        if cells * params.min_group_rows * row_bytes > params.buffer_bytes {
            tracing::info!(
                cells,
                "rows are sorted by cell on disk before they are written"
            );
            let spilled = by_cell::Spilled::new(&self.root, self.generation, &self.schema)?;
            self.spilled = Some(spilled);
        }
        Ok(())
    }

    /// Makes room in the buffer, down to `limit` bytes: spills everything when the rows are
    /// sorted by cell on disk, else writes the fullest cells.
    async fn make_room(&mut self, buffers: &mut Buffers, limit: usize) -> Result<()> {
        while buffers.total > limit {
            match self.spilled.as_mut() {
                Some(s) => s.spill(&buffers.take_all()).await?,
                None => {
                    let cells = buffers.cells.len();
                    let fullest = (0..cells).max_by_key(|&c| buffers.bytes[c]).expect("cells");
                    self.flush(buffers, fullest).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes every row still buffered or spilled: the spilled rows sorted by cell (DataFusion
    /// in `memory` bytes, at least 16 MiB), each cell one row group, a cell at a time; else
    /// each cell's buffered rows.
    async fn write_rest(&mut self, mut buffers: Buffers, memory: usize) -> Result<()> {
        let Some(mut s) = self.spilled.take() else {
            for c in 0..buffers.cells.len() {
                self.flush(&mut buffers, c).await?;
            }
            return Ok(());
        };
        s.spill(&buffers.take_all()).await?;
        let mut current: Option<u32> = None;
        // DataFusion's sort needs some room to merge its spills, even for a tiny buffer.
        s.sorted(memory.max(16 << 20), async |cell, part| {
            if let Some(c) = current.filter(|&c| c != cell) {
                self.flush(&mut buffers, c as usize).await?;
            }
            current = Some(cell);
            buffers.push(cell as usize, part);
            Ok(())
        })
        .await?;
        if let Some(c) = current {
            self.flush(&mut buffers, c as usize).await?;
        }
        Ok(())
    }

    /// Closes the `cells` objects and writes the `guests` table: the runs sorted by cell.
    async fn finish(self) -> Result<(Vec<DataObject>, Vec<DataObject>)> {
        let objects = self.writer.finish().await?;
        let written: Vec<&String> = objects.iter().map(|o| &o.path).collect();
        if written.iter().zip(&self.paths).any(|(a, b)| *a != b) || self.paths.len() > written.len()
        {
            return Err(Error::Internal(format!(
                "cells objects {written:?} are not the ones written to, {:?}",
                self.paths
            )));
        }
        Ok((objects, self.runs.write().await?))
    }
}

/// Each row's `guest_cells` of a `cells` batch.
fn guest_lists(batch: &RecordBatch) -> Result<Vec<&[u32]>> {
    let lists = batch
        .column_by_name("guest_cells")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::ListArray>())
        .ok_or_else(|| Error::table("cells", "no list column guest_cells"))?;
    let values = lists
        .values()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| Error::table("cells", "guest_cells holds no u32"))?
        .values();
    let offsets = lists.value_offsets();
    Ok((0..offsets.len() - 1)
        .map(|i| &values[offsets[i] as usize..offsets[i + 1] as usize])
        .collect())
}

/// Buffers each cell's home rows of a batch, counting home rows and guest placements into
/// `out`.
fn buffer_by_cell(
    out: &mut Placed,
    buffers: &mut Buffers,
    placements: &[Placement],
    batch: &RecordBatch,
    copied: &[&str],
    schema: &SchemaRef,
) -> Result<()> {
    // (cell, row), grouped by cell.
    let mut entries: Vec<(u32, u32)> = Vec::new();
    for (row, p) in placements.iter().enumerate() {
        entries.push((p.home, row as u32));
        for &g in &p.guests {
            out.cell_rows[g as usize][1] += 1;
        }
        out.guests += p.guests.len() as u64;
    }
    entries.sort_unstable();
    for run in entries.chunk_by(|a, b| a.0 == b.0) {
        let cell = run[0].0;
        out.cell_rows[cell as usize][0] += run.len() as u64;
        out.home += run.len() as u64;
        buffers.push(
            cell as usize,
            cell_part(cell, run, placements, batch, copied, schema)?,
        );
    }
    Ok(())
}

/// The bytes of written objects, as the store says.
async fn bytes_of(catalog: &Catalog, objects: &[DataObject]) -> Result<u64> {
    let mut bytes = 0;
    for o in objects {
        let path = catalog.root().path(&o.path);
        bytes += catalog
            .root()
            .store
            .head(&path)
            .await
            .map_err(|e| Error::storage(catalog.root().uri_of(&path), e))?
            .size;
    }
    Ok(bytes)
}

/// One cell's `cells` rows of a batch: `run`, the (cell, row) entries of its home rows, with
/// the columns `copied` from `batch` cast to `schema`'s types (vectors as raw bytes).
fn cell_part(
    cell: u32,
    run: &[(u32, u32)],
    placements: &[Placement],
    batch: &RecordBatch,
    copied: &[&str],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let rows = UInt32Array::from_iter_values(run.iter().map(|e| e.1));
    let mut guest_cells = ListBuilder::new(UInt32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        arrow::datatypes::DataType::UInt32,
        false,
    )));
    for e in run {
        guest_cells
            .values()
            .append_slice(&placements[e.1 as usize].guests);
        guest_cells.append(true);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_value(cell, run.len())),
        Arc::new(guest_cells.finish()),
    ];
    for name in copied {
        let col = batch.column_by_name(name).expect("projected");
        let taken = arrow::compute::take(col.as_ref(), &rows, None)
            .map_err(|e| Error::table("cells", e))?;
        // Shards embedded with another float type are stored as the first one was.
        let field = schema.field(columns.len());
        if let arrow::datatypes::DataType::FixedSizeBinary(_) = field.data_type() {
            columns.push(io::raw_vectors(&taken, field)?);
            continue;
        }
        let want = field.data_type();
        columns.push(match taken.data_type() == want {
            true => taken,
            false => arrow::compute::cast(&taken, want).map_err(|e| {
                Error::table(
                    "cells",
                    format!(
                        "{name} is {} in some shards and {want} in others; re-embed them alike: {e}",
                        taken.data_type()
                    ),
                )
            })?,
        });
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::table("cells", e))
}

/// Refuses a batch with a CLIP vector longer than `NORM_BOUND` (partitioned mining's radius
/// assumes unit vectors).
fn check_norms(flat: &[f32], dim: usize, batch: &RecordBatch) -> Result<()> {
    let Some((i, norm)) = flat
        .chunks_exact(dim.max(1))
        .map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt())
        .enumerate()
        .find(|(_, n)| *n > NORM_BOUND)
    else {
        return Ok(());
    };
    let keys = io::strings(batch, "key")?;
    Err(Error::table(
        "embeddings",
        format!(
            "key {:?} has a CLIP vector of norm {norm:.4}; partitioned mining needs unit vectors (norm at most {NORM_BOUND})",
            keys.value(i)
        ),
    ))
}

/// Whether DINOv2 vectors ride along into the cells (when every shard placed has them: embed
/// with both encoders; shards embedded with CLIP only get theirs from `blindspot dino`), the
/// columns copied into `cells`, and those read (with keys in two shards, the shard column
/// too, to keep one row of each).
fn columns_to_place(
    units: &[Commit],
    dups: &DuplicateKeys,
) -> (bool, &'static [&'static str], Vec<&'static str>) {
    let with_dino = units.iter().all(|u| {
        u.record::<table::records::EmbedCommit>()
            .is_ok_and(|r| !r.without_dino())
    });
    let copied = cells::copied_columns(with_dino);
    let mut projected = copied.to_vec();
    if !dups.keep.is_empty() {
        projected.push("shard");
    }
    (with_dino, copied, projected)
}

/// The largest block (home + guest rows of a cell) once `record`'s generation is added to
/// the generations `kept`.
fn largest_after(kept: Option<&Layout>, record: &PartitionCommit) -> u64 {
    (0..record.cells)
        .map(|c| {
            let old = kept.map_or(0, |l| l.block_rows(c, u64::MAX));
            old + record.cell_rows[c][0] + record.cell_rows[c][1]
        })
        .max()
        .unwrap_or(0)
}

impl DuplicateKeys {
    /// Says, once, which keys are in more than one shard and which row of each is placed.
    fn warn(&self, progress: &dyn Progress) {
        if self.keep.is_empty() {
            return;
        }
        let examples: Vec<&String> = self.keep.keys().take(5).collect();
        let line = format!(
            "partition: {} keys are in more than one shard (e.g. {examples:?}); each is placed once, from {}",
            self.keep.len(),
            "a shard placed before, else the first shard by name"
        );
        tracing::warn!("{line}");
        progress.message(&line);
    }

    /// The rows of `batch` to place: one row of each duplicated key (the kept shard's, once),
    /// none of a key placed before; counts the rest into `dropped`.
    fn keep_one(
        &self,
        batch: &RecordBatch,
        seen: &mut std::collections::HashSet<String>,
        dropped: &mut u64,
    ) -> Result<RecordBatch> {
        let (keys, shards) = (io::strings(batch, "key")?, io::strings(batch, "shard")?);
        let keep = BooleanArray::from_iter((0..batch.num_rows()).map(|i| {
            let key = keys.value(i);
            Some(match self.keep.get(key) {
                None => true,
                Some(Some(shard)) => shard == shards.value(i) && seen.insert(key.to_string()),
                // Its kept row was placed before this run.
                Some(None) => false,
            })
        }));
        *dropped += (batch.num_rows() - keep.true_count()) as u64;
        arrow::compute::filter_record_batch(batch, &keep).map_err(|e| Error::table("embeddings", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_on_the_border_is_a_guest_of_the_cell_across_it() {
        // Two centroids on the x and y axes; the bisector is x = y.
        let c = ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]);
        let placer = Placer::new(c, 0.95, None);
        let angle = |deg: f32| [deg.to_radians().cos(), deg.to_radians().sin()];
        // 44 degrees: home 0, 1 degree from the border, well within r (18 degrees at 0.95).
        // 10 degrees: home 0, 35 degrees from the border: no guest.
        let x = ndarray::arr2(&[angle(44.0), angle(10.0), angle(80.0)]);
        let p = placer.place(x.view());
        assert_eq!((p[0].home, p[0].guests.clone()), (0, vec![1]));
        assert_eq!((p[1].home, p[1].guests.clone()), (0, vec![]));
        assert_eq!((p[2].home, p[2].guests.clone()), (1, vec![]));
        // Its partner across the border (46 degrees, cosine 0.9994) sits in cell 1 and is a
        // guest of cell 0 in turn.
        let y = ndarray::arr2(&[angle(46.0)]);
        assert_eq!(placer.place(y.view())[0].guests, vec![0]);
        assert_eq!(default_cells(10_000, 200_000), 100);
    }
}
