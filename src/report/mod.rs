//! The report stage: a self-contained static site over a run root. `index.html` is the pair
//! gallery (both images, similarities, keys, captions, duplicates, components; sort, filter,
//! keyboard review, decisions exported as CSV and JSON for `annotate --decisions`);
//! `thresholds.html` explores thresholds over all candidates (density, histograms, yield grid,
//! connected components); `evaluation.html` shows scores with bootstrap intervals, correlations
//! and every evaluation's settings.
//!
//! The site opens from disk: data is loaded by `<script>` tags (no fetch, which browsers refuse
//! on `file://`), pairs in chunks of a few hundred as pages need them, with a compact index of
//! every shown pair's similarities for sorting and filtering. Thumbnails are made once, at a
//! bounded size, and reused by later reports written to the same folder.

pub mod data;
pub mod drafts;
pub mod serve;
mod site;
pub mod thumbs;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::plot::{self, Series};
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::Location;
use data::{Pair, Tables};
use thumbs::{ThumbParams, ThumbStats, Thumbnailer};

/// What `report` needs besides the run root and the site.
#[derive(Clone, Debug)]
pub struct ReportParams {
    /// Pairs in the gallery at most (the most CLIP-blind first); the rest are counted.
    pub max_pairs: usize,
    /// Pairs per data chunk.
    pub chunk: usize,
    /// Pairs (from the first) whose images get thumbnails.
    pub thumbnails: usize,
    /// How thumbnails are made.
    pub thumbs: ThumbParams,
    /// The CLIP minimums of the yield grid.
    pub clip_grid: Vec<f64>,
    /// The DINOv2 maximums of the yield grid.
    pub dino_grid: Vec<f64>,
    /// Near-duplicate groups listed by size on the thresholds page.
    pub components: usize,
    /// One gallery row per pair instead of one per pair of near-duplicate groups.
    pub every_pair: bool,
    /// `drafts.json` of `blindspot draft`: each pair's draft on its card, for review.
    pub drafts: Option<String>,
}

/// Settings of the report: a spec's `[report]` section and the flags of `blindspot report`
/// (one shape, one check); [`ReportSettings::params`] makes the [`ReportParams`].
#[derive(Clone, Debug, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportSettings {
    /// The site's folder or URL in a spec (default: `<root>-report`, beside the run root);
    /// the command line's is `--out`.
    #[arg(skip)]
    pub out: Option<String>,
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
    /// `drafts.json` written by `blindspot draft`: each drafted pair's question on its card,
    /// to review and edit with the keyboard (exported with the decisions).
    #[arg(long)]
    pub drafts: Option<String>,
}

impl Default for ReportSettings {
    fn default() -> Self {
        let d = ReportParams::default();
        ReportSettings {
            out: None,
            max_pairs: d.max_pairs,
            thumbnails: d.thumbnails,
            thumb_size: d.thumbs.size,
            chunk: d.chunk,
            clip_grid: d.clip_grid,
            dino_grid: d.dino_grid,
            components: d.components,
            every_pair: d.every_pair,
            allow_private: false,
            drafts: None,
        }
    }
}

impl ReportSettings {
    /// Every problem with these settings, by name.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.chunk == 0 {
            problems.push("chunk must be at least 1".into());
        }
        use crate::sift::aggregates::{on_grid, CLIP_STEPS, COARSE_STEPS, DINO_STEPS};
        for c in &self.clip_grid {
            if on_grid(*c, CLIP_STEPS).is_none() || on_grid(*c, COARSE_STEPS).is_none() {
                problems.push(format!(
                    "clip-grid {c}: the yield is counted on CLIP thresholds in hundredths (0.95, 0.96, ...)"
                ));
            }
        }
        for d in &self.dino_grid {
            if on_grid(*d, DINO_STEPS).is_none() {
                problems.push(format!(
                    "dino-grid {d}: the yield is counted on DINOv2 thresholds in hundredths (0.55, 0.6, ...)"
                ));
            }
        }
        problems
    }

    /// The report's settings.
    pub fn params(&self) -> ReportParams {
        ReportParams {
            max_pairs: self.max_pairs,
            chunk: self.chunk,
            thumbnails: self.thumbnails,
            thumbs: ThumbParams {
                // Smaller thumbnails are made at 16 pixels.
                size: self.thumb_size.max(16),
                fetch: crate::ingest::fetch::FetchParams {
                    allow_private: self.allow_private,
                    ..Default::default()
                },
                ..ThumbParams::default()
            },
            clip_grid: self.clip_grid.clone(),
            dino_grid: self.dino_grid.clone(),
            components: self.components,
            every_pair: self.every_pair,
            drafts: self.drafts.clone(),
        }
    }

    /// Where the site goes for run root `root`.
    pub fn out_for(&self, root: &str) -> String {
        self.out
            .clone()
            .unwrap_or_else(|| format!("{}-report", root.trim_end_matches('/')))
    }
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            max_pairs: 200_000,
            chunk: 500,
            thumbnails: 20_000,
            thumbs: ThumbParams::default(),
            clip_grid: vec![0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99],
            dino_grid: vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            components: 25,
            every_pair: false,
            drafts: None,
        }
    }
}

/// What `report` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ReportSummary {
    /// The gallery page's URL.
    pub index: String,
    /// Pairs in the `pairs` table.
    pub pairs: u64,
    /// Pairs of near-duplicate groups (`group_pairs` rows): the gallery's rows by default.
    pub group_pairs: u64,
    /// The gallery has a row per pair (`--every-pair`).
    pub every_pair: bool,
    /// Rows in the gallery.
    pub shown: u64,
    /// Data chunks written.
    pub chunks: usize,
    /// Thumbnails.
    pub thumbnails: ThumbStats,
    /// Candidate pairs aggregated on the thresholds page.
    pub candidates: Option<u64>,
    /// Near-duplicate groups.
    pub groups: usize,
    /// Images in the largest.
    pub largest_group: u64,
    /// Evaluations (score sets) on the evaluation page.
    pub evaluations: usize,
    /// With `--drafts`: the drafted pairs and how many are on a card.
    pub drafts: Option<drafts::DraftsShown>,
    /// Wall time.
    pub seconds: f64,
}

/// The nine MMVP patterns, in the paper's order, for the reviewer's keys 1-9.
pub use crate::mmvp::PATTERNS;

/// A value rounded for the data files (4 decimals is below any threshold anyone sets).
fn round4(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!((v * 10_000.0).round() / 10_000.0)
    } else {
        serde_json::Value::Null
    }
}

/// A data file loadable by a script tag from disk: `BLINDSPOT.<name> = <json>;` for the files
/// the pages load first, `BLINDSPOT.<name>(<json>);` (a call into the app) for chunks.
fn script(name: &str, value: &serde_json::Value, call: bool) -> Bytes {
    let body = if call {
        format!("BLINDSPOT.{name}({value});")
    } else {
        format!("BLINDSPOT.{name}={value};")
    };
    Bytes::from(format!("window.BLINDSPOT=window.BLINDSPOT||{{}};{body}\n"))
}

/// The chunk file of chunk `i`.
pub fn chunk_name(i: usize) -> String {
    format!("data/pairs/{i:05}.js")
}

/// `data/meta.js`: what the pages need to know of the whole report.
fn meta(
    root: &Location,
    params: &ReportParams,
    groups: &data::Groups,
    shown: u64,
    chunks: usize,
    report_id: &str,
) -> serde_json::Value {
    serde_json::json!({
        "root": root.url,
        "version": crate::VERSION,
        "generated": crate::storage::now_unix(),
        "pairs": groups.pairs,
        "group_pairs": groups.group_pairs,
        "every_pair": params.every_pair,
        "shown": shown,
        "chunk": params.chunk.max(1),
        "chunks": chunks,
        "thumbnails": params.thumbnails.min(shown as usize),
        "patterns": PATTERNS,
        "report_id": report_id,
        "drafts": params.drafts.is_some(),
    })
}

/// The error for a run root with nothing to show, naming the tables it has.
fn nothing_to_report(root: &Location, names: &[String]) -> Error {
    Error::Usage(format!(
        "nothing to report in {}: it has no pairs, candidates or scores (tables: {}); \
         run the mining stages or an evaluation first",
        root.url,
        match names.is_empty() {
            true => "none".to_string(),
            false => names.join(", "),
        }
    ))
}

/// The gallery's rows, in full chunks as they fill and the remainder at the end.
async fn write_gallery(
    t: &Tables,
    out: &Location,
    params: &ReportParams,
    sinks: &mut Sinks<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    let chunk = params.chunk.max(1);
    let mut stream = data::pairs(t, params.max_pairs, params.every_pair).await?;
    let mut pending: Vec<Pair> = Vec::new();
    loop {
        let next = stream
            .try_next()
            .await
            .map_err(|e| Error::table("pairs", e))?;
        let last = next.is_none();
        if let Some(b) = next {
            pending.extend(data::parse_pairs(&b)?);
        }
        while pending.len() >= chunk || (last && !pending.is_empty()) {
            let rest = pending.split_off(chunk.min(pending.len()));
            let full = std::mem::replace(&mut pending, rest);
            write_chunk(out, &full, params, sinks).await?;
            progress.advance(full.len() as u64);
        }
        if last {
            return Ok(());
        }
    }
}

/// The thresholds and evaluation pages, each with its charts.
async fn write_pages(
    root: &Location,
    out: &Location,
    thresholds: (String, Vec<(String, String)>),
    evaluation: (String, Vec<(String, String)>),
) -> Result<()> {
    for (file, title, id, (body, charts)) in [
        ("thresholds.html", "Thresholds", "thresholds", thresholds),
        ("evaluation.html", "Evaluation", "evaluation", evaluation),
    ] {
        let html = site::page(title, id, root, &body, "");
        out.put(file, Bytes::from(html)).await?;
        for (name, svg) in charts {
            out.put(&name, Bytes::from(svg)).await?;
        }
    }
    Ok(())
}

/// Writes the report of `root` into `out`.
pub async fn report(
    root: &Location,
    out: &Location,
    params: &ReportParams,
    progress: &dyn Progress,
) -> Result<ReportSummary> {
    let started = Instant::now();
    let (ctx, names) = crate::sql::session(root).await?;
    let t = Tables {
        ctx,
        names,
        root: Some(root.clone()),
    };
    let has_pairs = t.has("pairs");
    if !has_pairs && !t.has("candidates") && !t.has("scores") {
        return Err(nothing_to_report(root, &t.names));
    }
    let chunk = params.chunk.max(1);

    // The near-duplicate groups, then the gallery's rows in chunks.
    let groups = if has_pairs {
        progress.message("report: near-duplicate groups and pairs of groups");
        data::groups(&t, params.components).await?
    } else {
        data::Groups::default()
    };
    let rows = match params.every_pair {
        true => groups.pairs,
        false => groups.group_pairs,
    };
    let written = gallery(&t, out, params, has_pairs.then_some(rows), progress).await?;
    let (index, drafts) = (written.index, written.drafts);
    let shown = index.clip.len() as u64;
    let chunks = shown.div_ceil(chunk as u64) as usize;
    out.put("data/index.js", index.script()).await?;

    // Thresholds and components.
    progress.message("report: thresholds over the candidates");
    let thresholds = data::thresholds(&t, &params.clip_grid, &params.dino_grid).await?;
    let threshold_html = site::thresholds_body(thresholds.as_ref(), &groups)?;

    // Evaluations.
    let evals = data::evaluations(&t).await?;
    let eval_html = site::evaluation_body(&evals)?;
    let evaluations = evals.scores.iter().filter(|s| s.pattern == "all").count();

    let meta = meta(root, params, &groups, shown, chunks, &written.report_id);
    out.put("data/meta.js", script("meta", &meta, false))
        .await?;
    for (name, text) in site::assets() {
        out.put(name, Bytes::from(text)).await?;
    }
    let gallery = site::gallery_page(root, &groups, params, shown);
    out.put("index.html", Bytes::from(gallery)).await?;
    write_pages(root, out, threshold_html, eval_html).await?;
    Ok(ReportSummary {
        index: out.uri_of(&out.path("index.html")),
        pairs: groups.pairs,
        group_pairs: groups.group_pairs,
        every_pair: params.every_pair,
        shown,
        chunks,
        thumbnails: written.thumbs,
        candidates: thresholds.as_ref().map(|t| t.candidates),
        groups: groups.sizes.len(),
        largest_group: groups.sizes.first().copied().unwrap_or(0),
        evaluations,
        drafts,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What writing the gallery's rows leaves: the index, the report's id (a hash of the rows'
/// keys), the thumbnails' counts and how the drafts met the cards.
struct Written {
    index: GalleryIndex,
    report_id: String,
    thumbs: ThumbStats,
    drafts: Option<drafts::DraftsShown>,
}

/// The gallery's `rows` (none without a pairs table), in chunks with their thumbnails and
/// drafts.
async fn gallery(
    t: &Tables,
    out: &Location,
    params: &ReportParams,
    rows: Option<u64>,
    progress: &dyn Progress,
) -> Result<Written> {
    let mut drafts = match &params.drafts {
        Some(file) => drafts::GalleryDrafts::load(file).await?,
        None => drafts::GalleryDrafts::default(),
    };
    let mut thumbs = Thumbnailer::open(out, &params.thumbs).await?;
    let mut index = GalleryIndex::default();
    let mut report_id = blake3::Hasher::new();
    if let Some(rows) = rows {
        progress.start(
            Stage::Report.name(),
            Some(rows.min(params.max_pairs as u64)),
        );
        let mut sinks = Sinks {
            thumbs: &mut thumbs,
            index: &mut index,
            report_id: &mut report_id,
            drafts: &mut drafts,
        };
        write_gallery(t, out, params, &mut sinks, progress).await?;
        progress.finish();
    }
    let drafts = drafts.finish(index.clip.len() as u64)?;
    Ok(Written {
        index,
        report_id: report_id.finalize().to_hex()[..16].to_string(),
        thumbs: thumbs.stats.clone(),
        drafts,
    })
}

impl GalleryIndex {
    /// `data/index.js`.
    fn script(&self) -> Bytes {
        let index = serde_json::json!({
            "clip": self.clip, "dino": self.dino, "ga": self.ga, "gb": self.gb,
            "members": self.members, "draft": self.draft,
        });
        script("index", &index, false)
    }
}

/// Per shown pair, what sorting and filtering need, in gallery order.
#[derive(Default)]
struct GalleryIndex {
    clip: Vec<serde_json::Value>,
    dino: Vec<serde_json::Value>,
    ga: Vec<Option<i64>>,
    gb: Vec<Option<i64>>,
    members: Vec<u64>,
    /// With `--drafts`: each row's draft, as [`drafts::code`] names it.
    draft: Vec<String>,
}

/// Where a chunk's side effects go and what it draws on besides its pairs.
struct Sinks<'a> {
    thumbs: &'a mut Thumbnailer,
    index: &'a mut GalleryIndex,
    report_id: &'a mut blake3::Hasher,
    drafts: &'a mut drafts::GalleryDrafts,
}

async fn write_chunk(
    out: &Location,
    pairs: &[Pair],
    params: &ReportParams,
    sinks: &mut Sinks<'_>,
) -> Result<()> {
    let Sinks {
        thumbs,
        index,
        report_id,
        drafts,
    } = sinks;
    let first = index.clip.len();
    let with_thumbs = params.thumbnails.saturating_sub(first).min(pairs.len());
    let uris: Vec<String> = pairs[..with_thumbs]
        .iter()
        .flat_map(|p| [p.a_uri.clone(), p.b_uri.clone()])
        .collect();
    thumbs.make(&uris).await?;
    let thumb = |uri: &str, i: usize| thumbs.of(uri, i < with_thumbs);
    let rows: Vec<serde_json::Value> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            index.clip.push(round4(p.clip));
            index.dino.push(round4(p.dino));
            index.ga.push(p.a_group);
            index.gb.push(p.b_group);
            index.members.push(p.member_pairs);
            let draft = drafts.card(&p.a, &p.b);
            if drafts.given() {
                index.draft.push(drafts::code(&draft));
            }
            report_id.update(p.a.as_bytes());
            report_id.update(b"\t");
            report_id.update(p.b.as_bytes());
            report_id.update(b"\n");
            let (at, aw) = thumb(&p.a_uri, i);
            let (bt, bw) = thumb(&p.b_uri, i);
            serde_json::json!([
                p.a,
                p.b,
                p.a_uri,
                p.b_uri,
                p.a_caption,
                p.b_caption,
                at,
                bt,
                aw,
                bw,
                p.a_duplicates,
                p.b_duplicates,
                round4(p.clip),
                round4(p.dino),
                p.a_group,
                p.b_group,
                p.a_size,
                p.b_size,
                p.member_pairs,
                draft
            ])
        })
        .collect();
    let n = first / params.chunk.max(1);
    out.put(
        &chunk_name(n),
        script(
            "addChunk",
            &serde_json::json!({"index": n, "first": first, "rows": rows}),
            true,
        ),
    )
    .await
}

impl Thumbnailer {
    /// A pair image's thumbnail in the gallery's rows, or why it has none (`wanted`: within
    /// `--thumbnails`).
    fn of(&self, uri: &str, wanted: bool) -> (serde_json::Value, serde_json::Value) {
        if !wanted {
            return (
                serde_json::Value::Null,
                serde_json::json!("beyond --thumbnails"),
            );
        }
        if self.has(uri) {
            return (
                serde_json::json!(thumbs::name(uri)),
                serde_json::Value::Null,
            );
        }
        let why = self
            .failures
            .get(uri)
            .cloned()
            .unwrap_or_else(|| "no thumbnail".into());
        (serde_json::Value::Null, serde_json::json!(why))
    }
}

/// Writes `chart` as an SVG file name and returns the `<img>` for it.
pub(crate) fn svg_file(
    files: &mut Vec<(String, String)>,
    name: &str,
    chart: &impl plot::Chart,
    alt: &str,
) -> Result<String> {
    let svg = plot::svg(chart)?;
    let rel = format!("charts/{name}.svg");
    files.push((rel.clone(), svg));
    Ok(format!(
        "<img class=\"chart\" src=\"{rel}\" alt=\"{}\">",
        site::esc(alt)
    ))
}

/// Pattern order of charts: the paper's, then others.
pub(crate) fn pattern_order(names: impl Iterator<Item = String>) -> Vec<String> {
    let all: std::collections::BTreeSet<String> = names.filter(|p| p != "all").collect();
    let mut out: Vec<String> = PATTERNS
        .iter()
        .filter(|p| all.contains(**p))
        .map(|p| p.to_string())
        .collect();
    out.extend(all.into_iter().filter(|p| !PATTERNS.contains(&p.as_str())));
    out
}

/// Series of per-pattern pair accuracy with intervals, one per (model, benchmark) of a kind.
pub(crate) fn pattern_series(scores: &[data::Score], kind: &str, order: &[String]) -> Vec<Series> {
    let mut by_model: BTreeMap<(String, String), Vec<&data::Score>> = BTreeMap::new();
    for s in scores.iter().filter(|s| s.kind == kind) {
        by_model
            .entry((s.model.clone(), s.benchmark.clone()))
            .or_default()
            .push(s);
    }
    by_model
        .into_iter()
        .map(|((model, _), rows)| {
            let get = |p: &str| rows.iter().find(|r| r.pattern == p);
            Series {
                name: model,
                values: order
                    .iter()
                    .map(|p| get(p).and_then(|r| r.pair_accuracy).unwrap_or(f64::NAN))
                    .collect(),
                intervals: order
                    .iter()
                    .map(|p| get(p).and_then(|r| r.pair_interval))
                    .collect(),
            }
        })
        .collect()
}
