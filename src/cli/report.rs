//! `blindspot report`: the static site over a run root, optionally served on loopback.

use anyhow::Result;
use blindspot::report::thumbs::ThumbParams;
use blindspot::report::{ReportParams, ReportSummary};
use blindspot::storage::Location;
use clap::Args;

use super::{progress, report as print};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run root to report on.
    #[arg(long)]
    pub root: String,
    /// Where the site goes (a folder, or an object store URL): index.html, pages, data, thumbnails.
    #[arg(long)]
    pub out: String,
    /// After writing, serve the site over HTTP at this address (default 127.0.0.1:8700) until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:8700")]
    pub serve: Option<String>,
    /// Pairs in the gallery at most, the most CLIP-blind first.
    #[arg(long, default_value_t = ReportParams::default().max_pairs)]
    pub max_pairs: usize,
    /// Pairs (from the first) whose images get thumbnails.
    #[arg(long, default_value_t = ReportParams::default().thumbnails)]
    pub thumbnails: usize,
    /// Longest side of a thumbnail, in pixels.
    #[arg(long, default_value_t = ThumbParams::default().size)]
    pub thumb_size: u32,
    /// Pairs per data chunk the gallery loads at a time.
    #[arg(long, default_value_t = ReportParams::default().chunk)]
    pub chunk: usize,
    /// CLIP minimums of the yield grid (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ReportParams::default().clip_grid)]
    pub clip_grid: Vec<f64>,
    /// DINOv2 maximums of the yield grid (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ReportParams::default().dino_grid)]
    pub dino_grid: Vec<f64>,
    /// Near-duplicate groups listed on the thresholds page, largest first.
    #[arg(long, default_value_t = ReportParams::default().components)]
    pub components: usize,
    /// One gallery card per pair, instead of one per pair of near-duplicate groups (its most
    /// CLIP-blind member pair, with the number of pairs it stands for).
    #[arg(long)]
    pub every_pair: bool,
    /// Thumbnails may be fetched over HTTP from loopback, private and link-local addresses
    /// (refused by default, as in `embed`).
    #[arg(long)]
    pub allow_private: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Writes the report as the CLI, the spec and the demo run it.
pub async fn run_report(root: &str, out: &str, params: &ReportParams) -> Result<ReportSummary> {
    let root = Location::open(root)?;
    let out = Location::open(out)?;
    Ok(blindspot::report::report(&root, &out, params, &*progress()).await?)
}

/// A human summary of a report.
pub fn report_text(s: &ReportSummary) -> String {
    let mut t = format!(
        "report: {} of {} gallery rows in {} chunks ({} pairs in {} pairs of near-duplicate groups), {} groups (largest {} images), {} evaluations in {:.1}s\n  thumbnails {} made, {} cached, {} failed",
        s.shown,
        if s.every_pair { s.pairs } else { s.group_pairs },
        s.chunks,
        s.pairs,
        s.group_pairs,
        s.groups,
        s.largest_group,
        s.evaluations,
        s.seconds,
        s.thumbnails.made,
        s.thumbnails.cached,
        s.thumbnails.failed
    );
    if let Some(c) = s.candidates {
        t.push_str(&format!("\n  thresholds over {c} candidate pairs"));
    }
    t.push_str(&format!("\n  open {}", s.index));
    t
}

/// `blindspot report`.
pub async fn report_cmd(a: ReportArgs) -> Result<()> {
    let params = ReportParams {
        max_pairs: a.max_pairs,
        chunk: a.chunk,
        thumbnails: a.thumbnails,
        thumbs: ThumbParams {
            size: a.thumb_size.max(16),
            fetch: blindspot::ingest::fetch::FetchParams {
                allow_private: a.allow_private,
                ..Default::default()
            },
            ..ThumbParams::default()
        },
        clip_grid: a.clip_grid.clone(),
        dino_grid: a.dino_grid.clone(),
        components: a.components,
        every_pair: a.every_pair,
    };
    if a.serve.is_some() && !Location::open(&a.out)?.is_local() {
        anyhow::bail!("--serve needs a local --out folder (got {})", a.out);
    }
    let s = run_report(&a.root, &a.out, &params).await?;
    print(a.json, &s, || report_text(&s));
    if let Some(addr) = a.serve {
        let dir = url::Url::parse(&Location::open(&a.out)?.url)?
            .to_file_path()
            .map_err(|_| anyhow::anyhow!("--out is not a local folder"))?;
        blindspot::report::serve::serve(&dir, &addr, |bound| {
            eprintln!(
                "serving {} at http://{bound}/ (Ctrl-C stops)",
                dir.display()
            );
        })
        .await?;
    }
    Ok(())
}
