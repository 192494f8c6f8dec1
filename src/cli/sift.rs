//! `blindspot dino` and `filter`: the stages after mining.

use std::path::PathBuf;

use anyhow::Result;
use blindspot::encoder::preprocess::DecodeParams;
use blindspot::encoder::runtime::Device;
use blindspot::sift::filter::{FilterParams, FilterSummary};
use blindspot::storage::Location;
use blindspot::table::schema::FloatType;
use clap::Args;

use super::embed::{load_dino, EncoderArgs};
use super::mine::mib;
use super::{parse_worker, progress, report, ClaimArgs};

#[derive(Args, Debug)]
pub struct DinoArgs {
    /// Run root with candidates (embedded with `--encoders clip`, or imported).
    #[arg(long)]
    pub root: String,
    /// DINOv2 encoder manifest [default: models/tiny/dino-tiny.toml of this checkout].
    #[arg(long)]
    pub dino: Option<PathBuf>,
    /// Where the encoder runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// ONNX Runtime intra-op threads (0: ONNX Runtime decides).
    #[arg(long, default_value_t = 0)]
    pub intra_threads: usize,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Objects (or URLs) fetched at once.
    #[arg(long, default_value_t = 16)]
    pub fetch_concurrency: usize,
    /// Stored float type: f16 or f32 [default: as the embeddings' clip column].
    #[arg(long)]
    pub dtype: Option<FloatType>,
    /// Refuse images with more pixels than this.
    #[arg(long, default_value_t = DecodeParams::default().max_pixels)]
    pub max_pixels: u64,
    /// MiB the queries that find the candidate images still needing a vector may hold before
    /// they spill to disk (sorts, aggregates and sort-merge joins over the keys).
    #[arg(long, default_value_t = blindspot::sift::dino::DEFAULT_KEY_MEMORY >> 20)]
    pub key_memory_mib: usize,
    #[command(flatten)]
    pub ingest: blindspot::ingest::IngestSettings,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn dino_cmd(a: DinoArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let args = EncoderArgs {
        clip: None,
        dino: a.dino.clone(),
        device: a.device,
        intra_threads: a.intra_threads,
    };
    let dino = load_dino(&args)?;
    blindspot::stage::Stage::Dino.settings(a.ingest.check())?;
    let ingest = a.ingest.params(a.fetch_concurrency);
    let params = blindspot::sift::dino::DinoParams {
        batch_size: a.batch_size,
        float: a.dtype,
        decode: DecodeParams {
            max_pixels: a.max_pixels,
            ..DecodeParams::default()
        },
        image_column: ingest.image_column,
        fetch: ingest.fetch,
        key_memory: a.key_memory_mib << 20,
    };
    let s = blindspot::sift::dino::dino(&root, dino, &params, progress()).await?;
    super::report(a.json, &s, || dino_text(&s));
    Ok(())
}

pub fn dino_text(s: &blindspot::sift::dino::DinoSummary) -> String {
    let mut out = format!(
        "dino: {} of {} images are in a candidate pair; {:.2}% of the corpus needed DINOv2 ({} had a vector from embed)",
        s.candidate_images,
        s.images,
        s.share * 100.0,
        s.embedded_at_embed
    );
    if s.up_to_date {
        out.push_str("\n  up to date: every candidate image has a DINOv2 vector");
        return out;
    }
    out.push_str(&format!(
        "\n  embedded   {} of {} needed ({} already in the dino table) in {} shard commits, {:.1}s",
        s.embedded, s.needed, s.already, s.units, s.seconds
    ));
    out.push_str(&format!("\n  errors     {}", s.errors));
    for (kind, n) in &s.errors_by_kind {
        out.push_str(&format!("\n    {kind:<14} {n}"));
    }
    out
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Run root (with candidates).
    #[arg(long)]
    pub root: String,
    #[command(flatten)]
    pub params: FilterParams,
    /// Only this worker's share of the candidates units, as i/N (every N-th unit from the
    /// i-th); any number of workers on one run root together write what one run writes.
    #[arg(long, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `blindspot filter`.
pub async fn filter_cmd(a: FilterArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let params = FilterParams {
        worker: a.worker,
        claim: a.claims.params(),
        ..a.params.clone()
    };
    let s = blindspot::sift::filter::filter_with(&root, &params, progress()).await?;
    report(a.json, &s, || filter_text(&s, params.dino_max));
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
