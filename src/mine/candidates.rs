//! The candidates stage: every pair of images whose CLIP similarity is above the threshold
//! (strict `>`), each unordered pair once with `a < b`, exact duplicates collapsed first (into
//! the `duplicates` table). Three methods:
//!
//! - `partitioned` (the default): the cells of `blindspot partition`, each joined on its own
//!   (home x home and home x guest, tiled matrix products, see `join`). A cell is the unit of
//!   work and of commit: a killed run redoes only the cells not committed, `--worker i/N` takes
//!   the cells `c` with `c % N == i`, and after an incremental partition only pairs involving
//!   the new vectors are computed (a new commit per cell and partition generation). Memory is
//!   one cell's block and the next (read while the first is joined), whatever the corpus size.
//! - `index`: the usearch HNSW index of `blindspot index`; each image's neighbours are searched
//!   with k = 32, doubled while all k pass, so groups larger than k are found whole.
//! - `exact`: every pair by brute force, all vectors in memory: the ground truth.
//!
//! Similarities are always re-scored with the same f32 dot product (`join::dot`), so the
//! threshold means the same thing under every method. `--recall` measures any method's table
//! against brute force on a sample (`recall`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float32Array, RecordBatch, StringArray};
use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ann;
use super::cells::{CellReader, Layout};
use super::join::{self, dot, Members};
use super::recall::{self, Recall};
use super::vectors::{unique_vectors, UniqueVectors};
use crate::error::{Error, Result};
use crate::lease::ClaimParams;
use crate::progress::{Every, Progress};
use crate::stage::Stage;
use crate::storage::Location;
pub use crate::table::records::CandidatesCommit;
use crate::table::records::{Settings, UnitId};
use crate::table::{self, schema, Catalog, Commit, CommitSet, DataObject, WriteParams};
use crate::units::{self, Outcome, Runner, Sharing};

/// Rows per batch written to the `candidates` table.
const WRITE_BATCH_ROWS: usize = 64 * 1024;
/// Query images of the recall measured by default on approximate layouts.
pub const DEFAULT_RECALL_SAMPLE: usize = 1000;
/// A progress line at most this often while cells are joined.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How candidates are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The cells of `blindspot partition`, joined one by one (exact unless partitioned with
    /// `--probe`).
    #[default]
    Partitioned,
    /// The HNSW index of `blindspot index`.
    Index,
    /// Brute force over every pair, all vectors in memory.
    Exact,
}

impl Method {
    /// Its name on the command line and in commits.
    pub fn name(self) -> &'static str {
        match self {
            Method::Partitioned => "partitioned",
            Method::Index => "index",
            Method::Exact => "exact",
        }
    }
}

/// Settings of the candidates stage: a spec's `[candidates]` section and the flags of
/// `blindspot candidates` (one shape, one check).
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CandidateParams {
    /// Keep pairs with CLIP similarity strictly above this.
    #[arg(long, default_value_t = CandidateParams::default().clip_min)]
    #[serde(alias = "clip_min")]
    pub clip_min: f32,
    /// Neighbours asked for first (--method index); doubled while all pass.
    #[arg(long, default_value_t = CandidateParams::default().k)]
    pub k: usize,
    /// How pairs are found: the partition's cells, the HNSW index, or brute force.
    #[arg(long, value_enum, default_value_t = Method::Partitioned)]
    pub method: Method,
    /// The same as method exact (older specs and scripts).
    #[arg(long, hide = true)]
    #[serde(skip_serializing)]
    pub exact: bool,
    /// Index similarities are approximate (f16, i8): neighbours this far below the threshold
    /// are still re-scored exactly, so none is lost to quantisation.
    #[arg(skip = CandidateParams::default().margin)]
    #[serde(skip_deserializing)]
    pub margin: f32,
}

impl CandidateParams {
    /// Every problem with these settings, by field name.
    pub fn check(&self) -> Vec<String> {
        let mut problems: Vec<String> =
            super::clip_min_problem(self.clip_min).into_iter().collect();
        if self.k == 0 {
            problems.push("k must be at least 1".into());
        }
        problems
    }

    /// The method asked for (`exact = true` is `method = "exact"`).
    pub fn method(&self) -> Method {
        match self.exact {
            true => Method::Exact,
            false => self.method,
        }
    }
}

impl Default for CandidateParams {
    fn default() -> Self {
        CandidateParams {
            clip_min: 0.95,
            k: 32,
            method: Method::Partitioned,
            exact: false,
            margin: 0.01,
        }
    }
}

pub use crate::table::records::RecallCommit;

/// What a candidates run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CandidatesSummary {
    /// Unique images mined (home vectors, for the partitioned method).
    pub images: u64,
    /// Pairs written by this run.
    pub pairs: u64,
    /// Pairs in the table after it.
    pub table_pairs: u64,
    /// `partitioned`, `index` or `exact`.
    pub mode: String,
    /// Exact duplicates collapsed by this run.
    pub duplicates: u64,
    /// Cell units of this worker (partitioned), committed before this run, and by it.
    pub cells: CellCounts,
    /// Guest copies per home vector in the layout.
    pub copy_factor: Option<f64>,
    /// Bytes fetched from `cells` and `guests` objects: footers and the pages the home rows
    /// and guest runs are on.
    pub bytes_read: u64,
    /// Memory of the largest cell block joined (its f32 vectors), in bytes.
    pub peak_block_bytes: u64,
    /// Vector products the cell joins evaluated (home x block, the upper triangle of home x
    /// home), and their floating-point operations (2 x dim each).
    pub products: u64,
    /// Floating-point operations of those products.
    pub flops: f64,
    /// Seconds spent in the joins (the GEMM kernel and threshold scan), summed over cells.
    pub join_seconds: f64,
    /// Seconds spent reading and decoding cells, summed over cells (overlaps the joins: the
    /// next cell is read while one is joined).
    pub read_seconds: f64,
    /// Recall against brute force on a sample, when asked for.
    pub recall: Option<Recall>,
    /// Seconds the recall measurement took after the mining (a brute force of the sample
    /// against every vector), besides `seconds`.
    pub recall_seconds: f64,
    /// Peak resident set of the process (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Wall time of the mining.
    pub seconds: f64,
}

/// Units of work of the partitioned method.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CellCounts {
    /// Units this worker is responsible for.
    pub total: u64,
    /// Already committed when the run started.
    pub skipped: u64,
    /// Joined and committed by this run.
    pub done: u64,
    /// Claiming: committed by other workers while this one ran.
    pub by_others: u64,
    /// Claiming: joined by this worker, but another committed the cell first (after a lease
    /// expired under this one); this copy was deleted.
    pub discarded: u64,
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
    progress.start(
        &format!("{} (exact)", Stage::Candidates),
        Some(vectors.len() as u64),
    );
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
    progress.start(Stage::Candidates.name(), Some(vectors.len() as u64));
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

/// Every pair above the threshold, all vectors in one block: the brute-force ground truth,
/// with the tiled matrix products of `join` (re-scored by the same dot product).
pub fn exact_block(vectors: &UniqueVectors, clip_min: f32, progress: &dyn Progress) -> LabelPairs {
    progress.start(&format!("{} (exact)", Stage::Candidates), None);
    let x = ArrayView2::from_shape((vectors.len(), vectors.dim), &vectors.data)
        .expect("unique vectors are n x dim");
    let mut pairs = join::threshold_join(x, x, true, clip_min, &|_, _| true);
    progress.finish();
    pairs.sort_by_key(|p| (p.0, p.1));
    pairs
}

/// The candidates stage. `worker = (i, n)`: only the cells `c % n == i` (partitioned);
/// `recall_sample`: also measure the table's recall against brute force on about that many
/// query images.
pub async fn candidates(
    root: &Location,
    params: &CandidateParams,
    worker: Option<(u32, u32)>,
    claim: Option<&ClaimParams>,
    recall_sample: Option<usize>,
    progress: Arc<dyn Progress>,
) -> Result<CandidatesSummary> {
    Stage::Candidates.settings(params.check())?;
    let params = &CandidateParams {
        method: params.method(),
        exact: false,
        ..params.clone()
    };
    let sharing = Sharing::new(worker, claim)?;
    if sharing.shared() && params.method != Method::Partitioned {
        let flag = match sharing.claiming() {
            true => "--claim",
            false => "--worker",
        };
        return Err(Error::Usage(format!(
            "{flag} shares out mining cells; it needs --method partitioned"
        )));
    }
    let mut result = units::exclusive(
        root,
        Stage::Candidates,
        &sharing,
        mine_and_measure(root, params, &sharing, recall_sample, progress),
    )
    .await;
    if let Ok(summary) = &mut result {
        summary.peak_rss_bytes = crate::progress::peak_rss_bytes();
    }
    result
}

/// The candidates table by `params.method`, then its recall measured on `recall_sample`
/// images (by default when the layout is approximate and the run has the root to itself).
async fn mine_and_measure(
    root: &Location,
    params: &CandidateParams,
    sharing: &Sharing,
    recall_sample: Option<usize>,
    progress: Arc<dyn Progress>,
) -> Result<CandidatesSummary> {
    // An approximate layout (probes) gets its recall measured after the join unless asked
    // otherwise; workers leave it to a run over the whole table.
    let catalog = Catalog::new(root);
    let layout = match params.method {
        Method::Partitioned => Layout::open(&catalog).await.ok().flatten(),
        _ => None,
    };
    let latest = layout.as_ref().map(|l| l.latest().clone());
    let approximate = latest.as_ref().is_some_and(|l| l.probe.is_some());
    let recall_sample =
        recall_sample.or((approximate && !sharing.shared()).then_some(DEFAULT_RECALL_SAMPLE));
    let mut result = match params.method {
        Method::Partitioned => partitioned(root, params, sharing, progress).await,
        Method::Index | Method::Exact => whole(root, params, progress).await,
    };
    if let (Ok(summary), Some(n)) = (&mut result, recall_sample) {
        let started = Instant::now();
        // A partitioned table's rows are in the cells, once each.
        let vectors = match layout.as_ref().is_some_and(Layout::in_place) {
            true => &table::CELLS,
            false => &table::EMBEDDINGS,
        };
        let measured = recall::measure(&catalog, params.clip_min, n, vectors).await;
        summary.recall_seconds = started.elapsed().as_secs_f64();
        match measured {
            Ok(r) => {
                let record = RecallCommit {
                    recall: r.clone(),
                    clip_min: params.clip_min,
                    method: params.method.name().to_string(),
                    probe: latest.as_ref().and_then(|l| l.probe),
                    target_recall: latest.as_ref().and_then(|l| l.auto_probe),
                    table_pairs: summary.table_pairs,
                    version: crate::VERSION.to_string(),
                };
                let commit = Commit::new("recall", 0, &record)?;
                if let Err(e) = catalog.commit(CommitSet::RECALL, &commit).await {
                    result = Err(e);
                } else {
                    summary.recall = Some(r);
                }
            }
            Err(e) => result = Err(e),
        }
    }
    result
}

/// The index and exact methods: the whole table in one commit, replacing every other.
async fn whole(
    root: &Location,
    params: &CandidateParams,
    progress: Arc<dyn Progress>,
) -> Result<CandidatesSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let opened = match params.method {
        Method::Index => Some(ann::open(&catalog).await?),
        _ => None,
    };
    let vectors = unique_vectors(&catalog).await?;
    let generation = catalog.begin(Stage::Candidates.name()).await?;
    if let Some(o) = &opened {
        if o.keys != vectors.keys {
            return Err(Error::Usage(format!(
                "the index of {} does not match its embeddings; run `blindspot index` again",
                root.url
            )));
        }
    }
    let p = params.clone();
    let (vectors, pairs) = tokio::task::spawn_blocking(move || -> Result<_> {
        let pairs = match &opened {
            Some(o) => index_pairs(&o.index, &vectors, &p, progress.as_ref())?,
            None => exact_block(&vectors, p.clip_min, progress.as_ref()),
        };
        Ok((vectors, pairs))
    })
    .await
    .map_err(|e| Error::Internal(format!("candidates: {e}")))??;
    let rows: Vec<(&str, &str, f32)> = pairs
        .iter()
        .map(|&(i, j, s)| {
            (
                vectors.keys[i as usize].as_str(),
                vectors.keys[j as usize].as_str(),
                s,
            )
        })
        .collect();
    let epoch: String = UnitId::method_epoch(params.method.name(), generation).into();
    let objects = write_pairs(&catalog, &epoch, rows).await?;
    let dups = write_duplicates(&catalog, &epoch, &vectors.duplicates).await?;
    let record = CandidatesCommit {
        pairs: pairs.len() as u64,
        duplicates: vectors.duplicates.len() as u64,
        params: Settings::of(params),
        epoch: epoch.clone(),
        partition: None,
        cell: None,
        block_rows: vectors.len() as u64,
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new(&epoch, generation, &record)?
        .with(&table::CANDIDATES, objects)
        .with(&table::DUPLICATES, dups);
    catalog.commit(CommitSet::CANDIDATES, &commit).await?;
    catalog
        .retract(CommitSet::CANDIDATES, |c| c.unit != epoch)
        .await?;
    Ok(CandidatesSummary {
        images: vectors.len() as u64,
        pairs: record.pairs,
        table_pairs: record.pairs,
        mode: params.method.name().to_string(),
        duplicates: record.duplicates,
        peak_block_bytes: (vectors.data.len() * 4) as u64,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

/// The epoch of a partitioned table: its layout and threshold. Commits of any other epoch
/// belong to another table and are retracted when a run starts.
fn cells_epoch(layout: &Layout, clip_min: f32) -> String {
    let tag = blake3::hash(format!("{:08x}", clip_min.to_bits()).as_bytes()).to_hex();
    UnitId::cells_epoch(layout.layout, &tag).into()
}

/// What joining one cell needs besides its members.
struct CellJob<'a> {
    catalog: &'a Catalog,
    params: &'a CandidateParams,
    epoch: &'a str,
    generation: u64,
    stem_suffix: String,
}

impl CellJob<'_> {
    /// Joins one cell and writes its pairs and duplicates; returns the commit to make.
    async fn run(
        &self,
        members: Members,
        g: u64,
        cell: u32,
        unit: &str,
        read_seconds: f64,
    ) -> Result<(Joined, Commit)> {
        let block_bytes = members.vector_bytes();
        let clip_min = self.params.clip_min;
        let (members, out, join_seconds) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = join::cell_pairs(&members, g, clip_min);
            (members, out, started.elapsed().as_secs_f64())
        })
        .await
        .map_err(|e| Error::Internal(format!("cell {cell}: {e}")))?;
        let key = |i: u32| members.keys[i as usize].as_str();
        let rows: Vec<(&str, &str, f32)> = out
            .pairs
            .iter()
            .map(|&(a, b, s)| (key(a), key(b), s))
            .collect();
        let dups: Vec<(String, String, String)> = out
            .duplicates
            .iter()
            .map(|&(d, k)| {
                (
                    key(d).to_string(),
                    key(k).to_string(),
                    members.hashes[d as usize].clone(),
                )
            })
            .collect();
        let stem = format!(
            "{}/{}{}",
            self.epoch,
            UnitId::cell_stem(g, cell),
            self.stem_suffix
        );
        let pair_objects = match rows.is_empty() {
            true => Vec::new(),
            false => write_pairs(self.catalog, &stem, rows).await?,
        };
        let dup_objects = match dups.is_empty() {
            true => Vec::new(),
            false => write_duplicates(self.catalog, &stem, &dups).await?,
        };
        let record = CandidatesCommit {
            pairs: out.pairs.len() as u64,
            duplicates: dups.len() as u64,
            params: Settings::of(self.params),
            epoch: self.epoch.to_string(),
            partition: Some(g),
            cell: Some(cell),
            block_rows: members.len() as u64,
            version: crate::VERSION.to_string(),
        };
        let commit = Commit::new(unit, self.generation, &record)?
            .with(&table::CANDIDATES, pair_objects)
            .with(&table::DUPLICATES, dup_objects);
        let joined = Joined {
            record,
            block_bytes,
            products: out.products,
            flops: 2.0 * out.products as f64 * members.dim as f64,
            join_seconds,
            read_seconds,
        };
        Ok((joined, commit))
    }
}

/// A joined cell: its record, its block's vector bytes, and what the
/// read and the join cost.
struct Joined {
    record: CandidatesCommit,
    block_bytes: u64,
    products: u64,
    flops: f64,
    join_seconds: f64,
    read_seconds: f64,
}

impl CandidatesSummary {
    fn read(&mut self, done: &Joined) {
        self.peak_block_bytes = self.peak_block_bytes.max(done.block_bytes);
        self.products += done.products;
        self.flops += done.flops;
        self.join_seconds += done.join_seconds;
        self.read_seconds += done.read_seconds;
    }

    /// Counts what became of a cell.
    fn took<U>(&mut self, outcome: Outcome<U, Joined>) {
        match outcome {
            Outcome::Committed(done) => self.add(&done),
            Outcome::Discarded(done) => {
                self.read(&done);
                self.cells.discarded += 1;
            }
            Outcome::ByOthers(_) => self.cells.by_others += 1,
        }
    }

    /// The periodic progress line.
    fn line(&self) -> String {
        format!(
            "candidates: {}/{} cells, {} pairs, {:.1} MiB read",
            self.cells.done + self.cells.skipped,
            self.cells.total,
            self.pairs,
            self.bytes_read as f64 / (1 << 20) as f64
        )
    }

    fn add(&mut self, done: &Joined) {
        self.read(done);
        self.pairs += done.record.pairs;
        self.duplicates += done.record.duplicates;
        self.cells.done += 1;
    }
}

/// The run root's layout, refused when its cells were placed for a higher threshold than
/// `clip_min` (pairs could be missed).
async fn open_layout(catalog: &Catalog, clip_min: f32) -> Result<Layout> {
    let url = &catalog.root().url;
    let layout = Layout::open(catalog).await?.ok_or_else(|| {
        Error::Usage(format!(
            "{url} has no mining cells; run `blindspot partition --root {url}` first, or pass --method index|exact"
        ))
    })?;
    let placed_for = layout.latest().clip_min;
    if clip_min < placed_for - 1e-6 {
        return Err(Error::Usage(format!(
            "clip-min {clip_min} is below the {placed_for} the cells were placed for, so pairs could be missed; run `blindspot partition --root {url} --clip-min {clip_min}` first"
        )));
    }
    Ok(layout)
}

/// This worker's cell units of `epoch` not committed yet, as (partition generation, cell,
/// unit), and the summary counting them.
async fn cells_todo(
    catalog: &Catalog,
    layout: &Layout,
    epoch: &str,
    sharing: &Sharing,
) -> Result<(Vec<(u64, u32, String)>, CandidatesSummary)> {
    let done: HashSet<String> = catalog
        .commits_of(CommitSet::CANDIDATES)
        .await?
        .into_iter()
        .map(|c| c.unit)
        .collect();
    let (home, guests) = layout
        .generations
        .iter()
        .fold((0, 0), |acc, g| (acc.0 + g.1.home, acc.1 + g.1.guests));
    let mut summary = CandidatesSummary {
        mode: Method::Partitioned.name().to_string(),
        images: home,
        copy_factor: Some((home + guests) as f64 / home.max(1) as f64),
        ..Default::default()
    };
    let mut todo = Vec::new();
    for (g, record, _) in &layout.generations {
        for (cell, rows) in record.cell_rows.iter().enumerate() {
            if rows[0] + rows[1] == 0 || !sharing.takes(cell as u64) {
                continue;
            }
            summary.cells.total += 1;
            let unit: String = UnitId::cell(epoch, *g, cell as u32).into();
            match done.contains(&unit) {
                true => summary.cells.skipped += 1,
                false => todo.push((*g, cell as u32, unit)),
            }
        }
    }
    Ok((todo, summary))
}

/// Retracts the candidates commits of another epoch (method, threshold) or of a partition
/// generation the layout no longer has.
async fn retract_stale(
    catalog: &Catalog,
    layout: &Layout,
    epoch: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let generations: BTreeSet<u64> = layout.generations.iter().map(|g| g.0).collect();
    let gone = catalog
        .retract(CommitSet::CANDIDATES, |c| {
            match c.record::<CandidatesCommit>() {
                Ok(r) => r.epoch != epoch || !r.partition.is_some_and(|p| generations.contains(&p)),
                Err(_) => true,
            }
        })
        .await?;
    if gone > 0 {
        progress.message(&format!(
            "candidates: {gone} commits of an older table (another method, layout or threshold) retracted"
        ));
    }
    Ok(())
}

/// The partitioned method: every cell unit of this worker not committed yet, one at a time.
async fn partitioned(
    root: &Location,
    params: &CandidateParams,
    sharing: &Sharing,
    progress: Arc<dyn Progress>,
) -> Result<CandidatesSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let layout = open_layout(&catalog, params.clip_min).await?;
    let epoch = cells_epoch(&layout, params.clip_min);
    retract_stale(&catalog, &layout, &epoch, progress.as_ref()).await?;
    let (todo, mut summary) = cells_todo(&catalog, &layout, &epoch, sharing).await?;
    let fetched = table::io::bytes_fetched();
    if !todo.is_empty() {
        let generation = catalog.begin(Stage::Candidates.name()).await?;
        let reader = Arc::new(CellReader::open(root, &layout).await?);
        let runner = Runner::new(&catalog, Stage::Candidates, sharing)?;
        let job = CellJob {
            catalog: &catalog,
            params,
            epoch: &epoch,
            generation,
            stem_suffix: runner.suffix(generation),
        };
        runner.start(progress.as_ref(), "cells", Some(todo.len() as u64));
        let mut every = Every::new(PROGRESS_EVERY);
        // Two cells in flight: the next one is read while one is joined. One join at a time
        // (the join uses every core), so memory is two blocks and one join's pairs at most.
        let joining = tokio::sync::Semaphore::new(1);
        let work = |(g, cell, unit): (u64, u32, String)| {
            let reader = reader.clone();
            let (job, joining) = (&job, &joining);
            async move {
                let started = Instant::now();
                let members = reader.read(cell, g).await?;
                let read = started.elapsed().as_secs_f64();
                let _turn = joining
                    .acquire()
                    .await
                    .map_err(|e| Error::Internal(format!("cell {cell}: {e}")))?;
                job.run(members, g, cell, &unit, read).await
            }
        };
        let ran = runner
            .drive(
                todo,
                |u| u.2.clone(),
                2,
                work,
                |outcome| {
                    summary.took(outcome);
                    progress.advance(1);
                    if every.due() {
                        progress.message(&summary.line());
                    }
                },
            )
            .await;
        runner.finish(ran).await?;
        progress.finish();
    }
    summary.table_pairs = catalog
        .commits_of(CommitSet::CANDIDATES)
        .await?
        .iter()
        .filter_map(|c| c.record::<CandidatesCommit>().ok())
        .map(|r| r.pairs)
        .sum();
    summary.bytes_read = table::io::bytes_fetched() - fetched;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Writes pairs (each with `a < b`, sorted by `(a, b)` here) as `candidates` objects named
/// after `stem`.
async fn write_pairs(
    catalog: &Catalog,
    stem: &str,
    mut rows: Vec<(&str, &str, f32)>,
) -> Result<Vec<DataObject>> {
    for r in rows.iter_mut() {
        if r.1 < r.0 {
            std::mem::swap(&mut r.0, &mut r.1);
        }
        // Vectors read back are checked unit-norm, so a similarity outside [-1, 1] (beyond
        // rounding) is damage the checks missed: stop rather than write it.
        if r.2.is_nan() || r.2.abs() > 1.0 + 1e-3 {
            return Err(Error::table(
                "candidates",
                format!(
                    "{stem}: similarity {} between {:?} and {:?} is outside [-1, 1]; the vectors it was computed from are damaged",
                    r.2, r.0, r.1
                ),
            ));
        }
    }
    // Two rows of one key (the same key in two shards) are no pair.
    rows.retain(|r| r.0 != r.1);
    rows.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let mut writer = catalog.writer(
        &table::CANDIDATES,
        stem,
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
    writer.finish().await
}

/// Writes `(key, duplicate_of, content_hash)` rows as `duplicates` objects named after `stem`.
async fn write_duplicates(
    catalog: &Catalog,
    stem: &str,
    rows: &[(String, String, String)],
) -> Result<Vec<DataObject>> {
    let column = |f: fn(&(String, String, String)) -> &str| {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as arrow::array::ArrayRef
    };
    let batch = RecordBatch::try_new(
        schema::duplicates(),
        vec![column(|r| &r.0), column(|r| &r.1), column(|r| &r.2)],
    )
    .map_err(|e| Error::table(table::DUPLICATES.name, e))?;
    let base = format!("{}/{stem}", table::DUPLICATES.dir);
    table::io::write_batches(catalog.root(), &base, &schema::duplicates(), &[batch]).await
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
        // The tiled brute force finds exactly what the double loop finds, same similarities.
        assert_eq!(exact_block(&v, params.clip_min, &NoProgress), exact);
    }
}
