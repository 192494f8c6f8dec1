//! `blindspot index`, `candidates` and `filter`.

use anyhow::Result;
use blindspot::mine::ann::{IndexParams, Quantization};
use blindspot::mine::candidates::CandidateParams;
use blindspot::storage::Location;
use clap::Args;

use super::{progress, report};

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
    /// Run root (indexed first with `blindspot index`, unless --exact).
    #[arg(long)]
    pub root: String,
    /// Keep pairs with CLIP similarity strictly above this.
    #[arg(long, default_value_t = CandidateParams::default().clip_min)]
    pub clip_min: f32,
    /// Neighbours asked for first; doubled while all pass.
    #[arg(long, default_value_t = CandidateParams::default().k)]
    pub k: usize,
    /// Brute force over every pair (the ground truth) instead of the index.
    #[arg(long)]
    pub exact: bool,
    /// Also measure the index's recall against brute force on a sample of images.
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
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
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
        exact: a.exact,
        ..Default::default()
    };
    let s = blindspot::mine::candidates::candidates(
        &root,
        &params,
        a.recall.then_some(a.recall_sample),
        progress(),
    )
    .await?;
    report(a.json, &s, || {
        let mut text = format!(
            "candidates ({}): {} pairs with clip > {} among {} images in {:.1}s",
            s.mode, s.pairs, a.clip_min, s.images, s.seconds
        );
        if let Some(r) = &s.recall {
            text += &format!(
                "\n  index recall on {} sampled images: {:.4} ({} of {} exact pairs)",
                r.sample, r.recall, r.found, r.exact_pairs
            );
        }
        text
    });
    Ok(())
}

/// `blindspot filter`.
pub async fn filter_cmd(a: FilterArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let s = blindspot::mine::filter::filter(&root, a.dino_max).await?;
    report(a.json, &s, || {
        format!(
            "filter: {} CLIP-blind pairs (dino < {}) in {:.1}s, run {}",
            s.pairs, a.dino_max, s.seconds, s.run_id
        )
    });
    Ok(())
}
