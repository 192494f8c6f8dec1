//! `blindspot partition`, `index`, `candidates` and `filter`.

use anyhow::Result;
use blindspot::mine::ann::IndexParams;
use blindspot::mine::candidates::{CandidateParams, CandidatesSummary};
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
    pub params: PartitionParams,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Run root.
    #[arg(long)]
    pub root: String,
    #[command(flatten)]
    pub params: IndexParams,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CandidatesArgs {
    /// Run root (partitioned first with `blindspot partition`, or indexed with `blindspot
    /// index` for --method index).
    #[arg(long)]
    pub root: String,
    #[command(flatten)]
    pub params: CandidateParams,
    /// Only this worker's share of the cells, as i/N (cells c with c % N == i); any number of
    /// workers on one run root together write what one run writes.
    #[arg(long, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
    #[command(flatten)]
    pub claims: ClaimArgs,
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

/// `blindspot partition`.
pub async fn partition_cmd(a: PartitionArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let s = blindspot::mine::partition::partition(&root, &a.params, progress()).await?;
    report(a.json, &s, || partition_text(&s));
    Ok(())
}

pub fn mib(bytes: Option<u64>) -> String {
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
            "partition: generation {g}: {} vectors of {} shards into {} cells{}, {}, {} guest placements \
             in {} runs read in place (copy factor {:.2}), largest block {} rows, fit {:.3}{}, {:.1} MiB written, peak RSS {} in {:.1}s",
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
            s.guest_runs,
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
        if s.join_seconds > 0.0 {
            text += &format!(
                "\n  joins: {:.3e} vector products, {:.3e} flops in {:.1}s ({:.0} GFLOP/s); reading cells {:.1}s (overlapping the joins)",
                s.products as f64,
                s.flops,
                s.join_seconds,
                s.flops / s.join_seconds / 1e9,
                s.read_seconds
            );
        }
        if s.cells.by_others + s.cells.discarded > 0 {
            text += &format!(
                "\n  claimed: {} cells committed by other workers meanwhile; {} joined here but committed first by another (discarded)",
                s.cells.by_others, s.cells.discarded
            );
        }
    }
    if let Some(r) = &s.recall {
        text += &format!(
            "\n  recall on {} sampled images: {:.4} ({} of {} exact pairs), measured in {:.1}s",
            r.sample, r.recall, r.found, r.exact_pairs, s.recall_seconds
        );
    }
    text
}

/// `blindspot index`.
pub async fn index_cmd(a: IndexArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let s = blindspot::mine::index::index(&root, &a.params, progress()).await?;
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
    let claim = a.claims.params();
    let s = blindspot::mine::candidates::candidates(
        &root,
        &a.params,
        a.worker,
        claim.as_ref(),
        a.recall.then_some(a.recall_sample),
        progress(),
    )
    .await?;
    report(a.json, &s, || candidates_text(&s, a.params.clip_min));
    Ok(())
}
