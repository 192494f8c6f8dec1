//! Closing the loop from mining to a benchmark: mined `pairs` exported as an MMVP-format sheet
//! (`Questions.csv` and `MMVP Images/`) whose question and answer columns people fill in; the
//! filled sheet then loads with `blindspot eval mllm --benchmark` like MMVP itself. With a
//! decisions file from the report's review, only the accepted pairs are exported, each with
//! the pattern and note the reviewer gave it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::Array;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::ingest::by_uri::fetch_uris;
use crate::ingest::fetch::{FetchParams, Fetcher};
use crate::mmvp::{canonical, sheet_text, MMVP_IMAGES, QUESTIONS};
use crate::review_files::{read_decisions, Decision};
use crate::sql;
use crate::storage::Location;
use crate::table::{self, io};

/// What `annotate` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct AnnotateSummary {
    /// Pairs exported.
    pub pairs: usize,
    /// The sheet's URL.
    pub sheet: String,
    /// With a decisions file: its accepted, rejected and undecided entries.
    pub decisions: Option<DecisionCounts>,
}

/// How the entries of a decisions file split.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DecisionCounts {
    /// Accepted pairs (exported).
    pub accepted: usize,
    /// Rejected pairs.
    pub rejected: usize,
    /// Entries with only a pattern or a note.
    pub undecided: usize,
}

struct MinedPair {
    a: String,
    b: String,
    a_uri: String,
    b_uri: String,
    clip: f32,
    dino: f32,
    pattern: String,
    note: String,
}

/// Which pairs to export: the first `limit`, or the accepted of a decisions file.
enum Wanted<'a> {
    First(Option<usize>),
    Accepted(&'a HashMap<(String, String), &'a Decision>),
}

/// The mined pairs in `sql/annotate.sql`'s order that `wanted` names; only those are held in
/// memory.
async fn read_pairs(
    root: &Location,
    wanted: &Wanted<'_>,
    every_pair: bool,
) -> Result<Vec<MinedPair>> {
    let (ctx, tables) = sql::session(root).await?;
    if !tables.iter().any(|t| t == table::PAIRS.name) {
        return Err(Error::Usage(format!(
            "{} has no pairs; run the filter stage first (`blindspot filter --root {}`)",
            root.url, root.url
        )));
    }
    let (limit, source) = match wanted {
        Wanted::First(l) if !every_pair => (*l, sql::GROUP_PAIRS),
        Wanted::First(l) => (*l, table::PAIRS.name),
        Wanted::Accepted(_) => (None, table::PAIRS.name),
    };
    let view = ctx
        .table(source)
        .await
        .map_err(|e| Error::table(source, e))?
        .into_view();
    ctx.register_table("annotated", view)
        .map_err(|e| Error::table(source, e))?;
    let mut batches = ctx
        .sql(sql::queries::ANNOTATE)
        .await
        .and_then(|df| df.limit(0, limit))
        .map_err(|e| Error::table("pairs", format!("sql/annotate.sql: {e}")))?
        .execute_stream()
        .await
        .map_err(|e| Error::table("pairs", e))?;
    let mut out = Vec::new();
    while let Some(batch) = batches
        .try_next()
        .await
        .map_err(|e| Error::table("pairs", e))?
    {
        let batch = &batch;
        let (a, b) = (io::strings(batch, "a")?, io::strings(batch, "b")?);
        let (au, bu) = (io::strings(batch, "a_uri")?, io::strings(batch, "b_uri")?);
        let (clip, dino) = (
            io::floats(batch, "clip_sim")?,
            io::floats(batch, "dino_sim")?,
        );
        for i in 0..batch.num_rows() {
            let decision = match wanted {
                Wanted::First(_) => None,
                Wanted::Accepted(set) => {
                    match set.get(&(a.value(i).to_string(), b.value(i).to_string())) {
                        Some(d) => Some(*d),
                        None => continue,
                    }
                }
            };
            out.push(MinedPair {
                a: a.value(i).to_string(),
                b: b.value(i).to_string(),
                a_uri: au.value(i).to_string(),
                b_uri: bu.value(i).to_string(),
                clip: clip.value(i),
                dino: if dino.is_null(i) {
                    f32::NAN
                } else {
                    dino.value(i)
                },
                pattern: decision.map_or(String::new(), |d| {
                    if d.pattern.is_empty() {
                        String::new()
                    } else {
                        canonical(&d.pattern)
                    }
                }),
                note: decision.map_or(String::new(), |d| d.note.clone()),
            });
        }
    }
    Ok(out)
}

fn extension(uri: &str) -> &str {
    let name = uri.rsplit('/').next().unwrap_or(uri);
    let name = name.rsplit('#').next().unwrap_or(name);
    match name.rsplit_once('.') {
        Some((_, e)) if !e.is_empty() && e.len() <= 5 && !e.contains('=') => e,
        _ => "jpg",
    }
}

/// Exports mined pairs of `root` as an MMVP-format sheet at `out`, copying the images: the
/// first `limit` (all when `None`) pairs of near-duplicate groups (every pair with
/// `every_pair`), or, with `decisions_file`, exactly its accepted pairs.
pub async fn annotate(
    root: &Location,
    out: &Location,
    limit: Option<usize>,
    decisions_file: Option<&str>,
    every_pair: bool,
) -> Result<AnnotateSummary> {
    let (pairs, counts) = match decisions_file {
        None => (
            read_pairs(root, &Wanted::First(limit), every_pair).await?,
            None,
        ),
        Some(file) => {
            let all = read_decisions(file).await?;
            let counts = DecisionCounts {
                accepted: all.iter().filter(|d| d.decision == "accept").count(),
                rejected: all.iter().filter(|d| d.decision == "reject").count(),
                undecided: all.iter().filter(|d| d.decision.is_empty()).count(),
            };
            let accepted: HashMap<(String, String), &Decision> = all
                .iter()
                .filter(|d| d.decision == "accept")
                .map(|d| ((d.a.clone(), d.b.clone()), d))
                .collect();
            if accepted.is_empty() {
                return Err(Error::Usage(format!(
                    "decisions file {file} accepts no pair ({} rejected, {} undecided); accept pairs in the report's gallery (key a) and export again",
                    counts.rejected, counts.undecided
                )));
            }
            let mut pairs = read_pairs(root, &Wanted::Accepted(&accepted), true).await?;
            let found: HashSet<(&str, &str)> =
                pairs.iter().map(|p| (p.a.as_str(), p.b.as_str())).collect();
            let missing: Vec<String> = accepted
                .keys()
                .filter(|(a, b)| !found.contains(&(a.as_str(), b.as_str())))
                .map(|(a, b)| format!("{a} / {b}"))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Usage(format!(
                    "{} accepted pair(s) of {file} are not in the pairs table of {} (e.g. {}): the decisions come from the report of another run root",
                    missing.len(),
                    root.url,
                    missing[0]
                )));
            }
            pairs.truncate(limit.unwrap_or(usize::MAX));
            (pairs, Some(counts))
        }
    };
    write_sheet(out, &pairs).await?;
    out.put_json(
        crate::mmvp::PROVENANCE,
        &mining_provenance(root, pairs.len(), decisions_file).await?,
    )
    .await?;
    Ok(AnnotateSummary {
        pairs: pairs.len(),
        sheet: out.uri_of(&out.path(QUESTIONS)),
        decisions: counts,
    })
}

/// Where a sheet's pairs come from (`provenance.json`'s `mining`).
#[derive(Clone, Debug, Serialize)]
pub struct Mining {
    /// The run root.
    pub root: String,
    /// The candidates' CLIP minimum.
    pub clip_min: Option<f32>,
    /// The filter's DINOv2 maximum.
    pub dino_max: Option<f32>,
    /// The filter's near-duplicate threshold.
    pub dup_min: Option<f32>,
    /// The filter runs whose pairs these are.
    pub filter_runs: Vec<String>,
    /// Pairs exported.
    pub pairs_exported: usize,
    /// The review's decisions file, when one chose the pairs.
    pub decisions: Option<String>,
}

/// `provenance.json` of a sheet.
#[derive(Clone, Debug, Serialize)]
struct SheetProvenance {
    version: &'static str,
    mining: Mining,
}

/// Where the sheet's pairs come from: the run root, its thresholds (the candidates' CLIP
/// minimum, the filter's DINOv2 maximum and near-duplicate threshold) and filter runs, and the
/// review that chose them.
async fn mining_provenance(
    root: &Location,
    pairs: usize,
    decisions: Option<&str>,
) -> Result<SheetProvenance> {
    use crate::table::records::{CandidatesCommit, FilterCommit};
    let catalog = crate::table::Catalog::new(root);
    let filters = catalog.records::<FilterCommit>().await?;
    let candidates = catalog.records::<CandidatesCommit>().await?;
    // The one setting read back from the candidates' recorded settings.
    #[derive(serde::Deserialize)]
    struct Threshold {
        #[serde(alias = "clip-min")]
        clip_min: f32,
    }
    let clip_min = candidates
        .iter()
        .filter_map(|(_, r)| r.params.read::<Threshold>().ok())
        .map(|p| p.clip_min)
        .next();
    let runs: std::collections::BTreeSet<String> =
        filters.iter().map(|(_, r)| r.run_id.clone()).collect();
    Ok(SheetProvenance {
        version: crate::VERSION,
        mining: Mining {
            root: root.url.clone(),
            clip_min,
            dino_max: filters.first().map(|(_, r)| r.dino_max),
            dup_min: filters.first().map(|(_, r)| r.dup_min),
            filter_runs: runs.into_iter().collect(),
            pairs_exported: pairs,
            decisions: decisions.map(str::to_string),
        },
    })
}

async fn write_sheet(out: &Location, pairs: &[MinedPair]) -> Result<()> {
    // Every image, fetched again by uri (objects, URLs, tar members, Parquet rows).
    let wants: Vec<(String, usize)> = pairs
        .iter()
        .enumerate()
        .flat_map(|(k, p)| [(p.a_uri.clone(), 2 * k + 1), (p.b_uri.clone(), 2 * k + 2)])
        .collect();
    let fetcher = Arc::new(Fetcher::new(&FetchParams::default())?);
    let uris: HashMap<usize, String> = wants.iter().map(|(u, i)| (*i, u.clone())).collect();
    let (tx, mut rx) = mpsc::channel(16);
    let fetching = tokio::spawn(fetch_uris(fetcher, wants, None, tx));
    while let Some((index, got)) = rx.recv().await {
        let uri = &uris[&index];
        let bytes: Bytes = got.map_err(|e| {
            Error::Usage(format!(
                "cannot read image {uri} of item {index}: {} ({})",
                e.message, e.kind
            ))
        })?;
        out.put(&format!("{MMVP_IMAGES}/{index}.{}", extension(uri)), bytes)
            .await?;
    }
    fetching
        .await
        .map_err(|e| Error::Internal(format!("annotate fetch task: {e}")))?;
    let mut sheet = csv::Writer::from_writer(Vec::new());
    let header = [
        "Index",
        "Question",
        "Options",
        "Correct Answer",
        "Pattern",
        "key",
        "source",
        "note",
        "clip_sim",
        "dino_sim",
    ];
    let csv_err = |e: csv::Error| Error::table("annotation sheet", e);
    sheet.write_record(header).map_err(csv_err)?;
    for (k, p) in pairs.iter().enumerate() {
        for (j, (key, uri)) in [(&p.a, &p.a_uri), (&p.b, &p.b_uri)].into_iter().enumerate() {
            let index = 2 * k + j + 1;
            sheet
                .write_record([
                    index.to_string().as_str(),
                    "",
                    "",
                    "",
                    &sheet_text(&p.pattern),
                    &sheet_text(key),
                    &sheet_text(uri),
                    &sheet_text(&p.note),
                    &format!("{:.4}", p.clip),
                    &format!("{:.4}", p.dino),
                ])
                .map_err(csv_err)?;
        }
    }
    let text = sheet
        .into_inner()
        .map_err(|e| Error::table("annotation sheet", e.to_string()))?;
    out.put(QUESTIONS, Bytes::from(text)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_come_from_the_uri_or_default_to_jpg() {
        assert_eq!(extension("file:///a/b.tar#00001.png"), "png");
        assert_eq!(extension("s3://b/x.parquet#row=3"), "jpg");
        assert_eq!(extension("file:///a/img.webp"), "webp");
    }
}
