//! `blindspot partition`, `index`, `candidates` and `filter`.

use anyhow::Result;
use blindspot::mine::ann::{IndexParams, Quantization};
use blindspot::mine::candidates::{CandidateParams, CandidatesSummary, Method};
use blindspot::mine::filter::{FilterParams, FilterSummary};
use blindspot::mine::partition::{PartitionParams, PartitionSummary};
use blindspot::storage::Location;
use clap::Args;

use super::{parse_worker, progress, report, ClaimArgs};

#[derive(Args, Debug)]
pub struct PartitionArgs {
    /// Run root (with committed embeddings).
    #[arg(long)]
    pub root: String,
    #[command(flatten)]
    pub params: PartitionParamArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PartitionParamArgs {
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
    /// Demand exact placement: refuse rather than choose probes when it is impractical.
    #[arg(long)]
    pub exact: bool,
    /// The recall probes are chosen for when exact placement is impractical.
    #[arg(long, default_value_t = PartitionParams::default().target_recall)]
    pub target_recall: f64,
    /// The CLIP threshold mining will use (the guest radius depends on it).
    #[arg(long, default_value_t = PartitionParams::default().clip_min)]
    pub clip_min: f32,
    /// Train new centroids and place every vector again.
    #[arg(long)]
    pub retrain: bool,
    /// Split cells whose block (home + guests) is estimated above this many rows; a cell's
    /// block is what candidates holds in memory (rows x dim x 4 bytes).
    #[arg(long, default_value_t = PartitionParams::default().max_block_rows)]
    pub max_block_rows: usize,
    /// Give up exact placement (choose probes; refuse with --exact) when vectors would average
    /// more guest copies than this.
    #[arg(long, default_value_t = PartitionParams::default().max_copies)]
    pub max_copies: f64,
    /// Retrain when new vectors fit the centroids this much worse (mean cosine) than the
    /// training sample did.
    #[arg(long, default_value_t = PartitionParams::default().drift_max)]
    pub drift_max: f64,
}

impl PartitionParamArgs {
    pub fn params(&self) -> PartitionParams {
        PartitionParams {
            cells: self.cells,
            sample: self.sample,
            seed: self.seed,
            probe: self.probe,
            clip_min: self.clip_min,
            retrain: self.retrain,
            max_block_rows: self.max_block_rows,
            max_copies: self.max_copies,
            exact: self.exact,
            target_recall: self.target_recall,
            drift_max: self.drift_max,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Run root.
    #[arg(long)]
    pub root: String,
    #[command(flatten)]
    pub params: IndexParamArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct IndexParamArgs {
    /// Vector storage in the index.
    #[arg(long, value_enum, default_value_t = Quantization::F16)]
    pub quantization: Quantization,
    /// HNSW connectivity (M).
    #[arg(long, default_value_t = IndexParams::default().connectivity)]
    pub connectivity: usize,
    /// HNSW expansion while adding (efConstruction).
    #[arg(long, default_value_t = IndexParams::default().expansion_add)]
    pub expansion_add: usize,
    /// HNSW expansion while searching (ef).
    #[arg(long, default_value_t = IndexParams::default().expansion_search)]
    pub expansion_search: usize,
    /// Build threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl IndexParamArgs {
    pub fn params(&self) -> IndexParams {
        IndexParams {
            quantization: self.quantization,
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
            threads: self.threads,
        }
    }
}

#[derive(Args, Debug)]
pub struct CandidatesArgs {
    /// Run root (partitioned first with `blindspot partition`, or indexed with `blindspot
    /// index` for --method index).
    #[arg(long)]
    pub root: String,
    /// How pairs are found: the partition's cells, the HNSW index, or brute force.
    #[arg(long, value_enum, default_value_t = Method::Partitioned)]
    pub method: Method,
    /// Only this worker's share of the cells, as i/N (cells c with c % N == i); any number of
    /// workers on one run root together write what one run writes.
    #[arg(long, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// Keep pairs with CLIP similarity strictly above this.
    #[arg(long, default_value_t = CandidateParams::default().clip_min)]
    pub clip_min: f32,
    /// Neighbours asked for first (--method index); doubled while all pass.
    #[arg(long, default_value_t = CandidateParams::default().k)]
    pub k: usize,
    /// The same as --method exact.
    #[arg(long, hide = true)]
    pub exact: bool,
    /// Also measure the table's recall against brute force on a sample of images.
    #[arg(long)]
    pub recall: bool,
    /// Query images in the recall sample.
    #[arg(long, default_value_t = 1000)]
    pub recall_sample: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Run root (with candidates).
    #[arg(long)]
    pub root: String,
    /// Keep pairs with DINOv2 similarity strictly below this.
    #[arg(long, default_value_t = 0.6)]
    pub dino_max: f32,
    /// Candidates with DINOv2 similarity at or above this are near-duplicates (the same
    /// picture): their connected components become the `groups` table, and the report shows
    /// one row per pair of groups.
    #[arg(long, default_value_t = blindspot::mine::filter::DEFAULT_DUP_MIN)]
    pub dup_min: f32,
    /// Units filtered at once, each its own task (memory is this many units; one with
    /// --cluster) [default: one per core, at most 4].
    #[arg(long, default_value_t = blindspot::mine::filter::default_units_at_once())]
    pub units_at_once: usize,
    /// Candidates units are gathered, in order, into units of work of about this many MiB
    /// (their cells' DINOv2 vectors and their candidates), each one query and one commit; a
    /// larger unit is one by itself. Workers sharing a root must pass the same value.
    #[arg(long, default_value_t = blindspot::mine::filter::DEFAULT_WORK_MIB)]
    pub work_mib: u64,
    /// Only this worker's share of the candidates units, as i/N (every N-th unit from the
    /// i-th); any number of workers on one run root together write what one run writes.
    #[arg(long, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// Run the query on a Ballista cluster at df://HOST:PORT (this process writes the pairs).
    #[arg(long, value_name = "df://HOST:PORT", env = "BLINDSPOT_CLUSTER")]
    pub cluster: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `blindspot partition`.
pub async fn partition_cmd(a: PartitionArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let s = blindspot::mine::partition::partition(&root, &a.params.params(), progress()).await?;
    report(a.json, &s, || partition_text(&s));
    Ok(())
}

fn mib(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "unknown".into())
}

/// The one-line summary of a partition run.
pub fn partition_text(s: &PartitionSummary) -> String {
    match s.generation {
        None => format!(
            "partition: up to date ({} cells, layout {}): every committed shard is placed",
            s.cells, s.layout
        ),
        Some(g) => {
            format!(
            "partition: generation {g}: {} vectors of {} shards into {} cells{}, {}, {} guest copies \
             (copy factor {:.2}), largest block {} rows, fit {:.3}{}, {:.1} MiB written, peak RSS {} in {:.1}s",
            s.vectors,
            s.shards,
            s.cells,
            match &s.trained {
                Some(why) => format!(" (trained: {why})"),
                None => " (existing centroids)".to_string(),
            },
            match (s.probe, s.auto_probe) {
                (None, _) => "exact placement".to_string(),
                (Some(k), None) => format!("probe {k}"),
                (Some(k), Some(t)) => format!(
                    "probe {k}, chosen for recall {t} (estimated {} on the training sample)",
                    s.estimated_recall.map_or("-".into(), |r| format!("{r:.4}"))
                ),
            },
            s.guests,
            s.copy_factor,
            s.largest_block,
            s.fit,
            s.drift.map(|d| format!(", drift {d:.3}")).unwrap_or_default(),
            s.bytes as f64 / (1 << 20) as f64,
            mib(s.peak_rss_bytes),
            s.seconds
        ) + &match s.duplicate_keys {
            0 => String::new(),
            n => format!("\n  {n} rows not placed: their keys are in another shard too (one row of each key is placed)"),
        }
        }
    }
}

/// The summary of a candidates run.
pub fn candidates_text(s: &CandidatesSummary, clip_min: f32) -> String {
    let mut text = format!(
        "candidates ({}): {} pairs with clip > {clip_min} among {} images in {:.1}s ({} in the table, {} exact duplicates collapsed)",
        s.mode, s.pairs, s.images, s.seconds, s.table_pairs, s.duplicates
    );
    if s.mode == "partitioned" {
        text += &format!(
            "\n  cells: {} joined, {} already committed, of {}; copy factor {:.2}; {:.1} MiB read; largest block {:.1} MiB; peak RSS {}",
            s.cells.done,
            s.cells.skipped,
            s.cells.total,
            s.copy_factor.unwrap_or(1.0),
            s.bytes_read as f64 / (1 << 20) as f64,
            s.peak_block_bytes as f64 / (1 << 20) as f64,
            mib(s.peak_rss_bytes)
        );
        if s.cells.by_others + s.cells.discarded > 0 {
            text += &format!(
                "\n  claimed: {} cells committed by other workers meanwhile; {} joined here but committed first by another (discarded)",
                s.cells.by_others, s.cells.discarded
            );
        }
    }
    if let Some(r) = &s.recall {
        text += &format!(
            "\n  recall on {} sampled images: {:.4} ({} of {} exact pairs)",
            r.sample, r.recall, r.found, r.exact_pairs
        );
    }
    text
}

/// `blindspot index`.
pub async fn index_cmd(a: IndexArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let s = blindspot::mine::index::index(&root, &a.params.params(), progress()).await?;
    report(a.json, &s, || {
        format!(
            "index: {} -> {} unique vectors ({} rows, {} exact duplicates collapsed) in {:.1}s",
            root.url, s.vectors, s.rows, s.duplicates, s.seconds
        )
    });
    Ok(())
}

/// `blindspot candidates`.
pub async fn candidates_cmd(a: CandidatesArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let params = CandidateParams {
        clip_min: a.clip_min,
        k: a.k,
        method: if a.exact { Method::Exact } else { a.method },
        ..Default::default()
    };
    let claim = a.claims.params();
    let s = blindspot::mine::candidates::candidates(
        &root,
        &params,
        a.worker,
        claim.as_ref(),
        a.recall.then_some(a.recall_sample),
        progress(),
    )
    .await?;
    report(a.json, &s, || candidates_text(&s, a.clip_min));
    Ok(())
}

/// `blindspot filter`.
pub async fn filter_cmd(a: FilterArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let params = FilterParams {
        dino_max: a.dino_max,
        worker: a.worker,
        claim: a.claims.params(),
        cluster: a.cluster.clone(),
        dup_min: a.dup_min,
        units_at_once: a.units_at_once,
        work_bytes: a.work_mib << 20,
    };
    let s = blindspot::mine::filter::filter_with(&root, &params, progress()).await?;
    report(a.json, &s, || filter_text(&s, a.dino_max));
    Ok(())
}

/// The summary of a filter run.
pub fn filter_text(s: &FilterSummary, dino_max: f32) -> String {
    if s.units == 0 && s.by_others + s.discarded == 0 {
        return format!(
            "filter: up to date: every candidate unit is filtered already ({} of {} units, {} pairs in the table)",
            s.skipped, s.units_total, s.table_pairs
        );
    }
    let mut text = format!(
        "filter: {} CLIP-blind pairs (dino < {dino_max}) from {} candidate units{} in {:.1}s, run {} ({} pairs in the table)\n  \
         {} candidates read in {} units of work; largest {} candidates and {} DINOv2 vectors; peak RSS {}",
        s.pairs,
        s.units,
        match s.incremental {
            true => format!(
                " (new since the last run, appended), {} units filtered before kept,",
                s.skipped
            ),
            false => String::new(),
        },
        s.seconds,
        s.run_id,
        s.table_pairs,
        s.candidate_rows,
        s.work,
        s.largest_unit,
        s.largest_unit_vectors,
        mib(s.peak_rss_bytes)
    );
    if s.scanned_units > 0 {
        text += &format!(
            "\n  {} units found their DINOv2 vectors by scanning the vector tables (their cells carry none: CLIP-first shards or cells placed by an older version)",
            s.scanned_units
        );
    }
    if s.missing_vectors > 0 {
        text += &format!(
            "\n  {} candidate images have no DINOv2 vector (see dino_errors); their pairs are left out",
            s.missing_vectors
        );
    }
    if let Some(g) = &s.groups {
        text += &format!(
            "\n  near-duplicate groups: {} groups of {} images (largest {}), from {} edges{}",
            g.groups,
            g.grouped,
            g.largest,
            g.edges,
            if g.rebuilt { "" } else { " (up to date)" }
        );
    }
    if s.by_others + s.discarded > 0 {
        text += &format!(
            "\n  claimed: {} units committed by other workers meanwhile; {} filtered here but committed first by another (discarded)",
            s.by_others, s.discarded
        );
    }
    text
}
