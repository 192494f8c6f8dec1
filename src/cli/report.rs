//! `blindspot report`: the static site over a run root, optionally served on loopback.

use anyhow::Result;
use blindspot::report::{ReportParams, ReportSettings, ReportSummary};
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
    #[command(flatten)]
    pub settings: ReportSettings,
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
    if let Some(d) = &s.drafts {
        t.push_str(&format!(
            "\n  drafts: {} of the {} drafted pairs of {} on a card, for review (export, then `blindspot draft SHEET --review FILE`)",
            d.shown, d.pairs, d.file
        ));
    }
    t.push_str(&format!("\n  open {}", s.index));
    t
}

/// `blindspot report`.
pub async fn report_cmd(a: ReportArgs) -> Result<()> {
    blindspot::stage::Stage::Report.settings(a.settings.check())?;
    let params = a.settings.params();
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
