//! The eval stage: MLLMs (`mllm`) and vision encoders (`vlm`) on MMVP-format benchmarks,
//! per-pattern scores, and their correlation across patterns (`correlate`). Every evaluation
//! commits one `answers` and one `scores` object under the run root, named after what was
//! evaluated, so evaluations of many models accumulate and a rerun replaces its own.

pub mod benchmark;
pub mod client;
pub mod compare;
pub mod correlate;
pub mod draft;
pub mod export;
pub mod grade;
pub mod mllm;
pub mod patterns;
pub mod review;
pub mod scripted;

pub mod stats;
pub mod synthetic;
pub mod vlm;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::stage::Stage;
use crate::storage::{segment_id, Location};
pub use crate::table::records::{EvalCommit, EvalKind as Kind};
use crate::table::{self, io, schema, Catalog, Commit, CommitSet};

/// One row of `answers`: one benchmark item asked of one model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerRow {
    /// The benchmark's short name.
    pub benchmark: String,
    /// The model (MLLM name, or `image-id+text-id` for encoders).
    pub model: String,
    /// The item's index (MMVP `Index`, MMVP-VLM `Question ID`).
    pub item: u32,
    /// Its pair.
    pub pair: u32,
    /// Its visual pattern.
    pub pattern: String,
    /// The prompt template's name.
    pub template: String,
    /// The prompt as sent.
    pub prompt: String,
    /// The image's URI.
    pub image: String,
    /// The raw response; null when none came.
    pub response: Option<String>,
    /// The choice the grader extracted (an option letter, or `1`/`2` for an image).
    pub choice: Option<String>,
    /// The correct choice.
    pub answer: String,
    /// Whether it was answered correctly.
    pub correct: bool,
    /// The grader used.
    pub grader: String,
    /// Which labels (MMVP: `original` or `corrected`).
    pub labels: String,
    /// HTTP requests this run made for it (0 when cached).
    pub attempts: u32,
    /// Milliseconds of its last request.
    pub latency_ms: u64,
    /// Whether the response came from the cache.
    pub cached: bool,
    /// Why there is no response or no grade.
    pub error: Option<String>,
    /// The LLM judge's reply, with the judge grader.
    pub judge: Option<String>,
    /// Decoding settings as JSON.
    pub settings: String,
    /// The endpoint asked, without credentials.
    pub endpoint: String,
    /// With `--repeats`: every sample's choice, the scored one first (not stored).
    pub samples: Vec<Option<char>>,
    /// blake3 of the image's bytes, which tells two rows showing the same image (not stored;
    /// the uri when the bytes were not read).
    pub image_digest: String,
}

/// One row of `scores`: one model on one pattern (or `all`).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRow {
    /// The benchmark's short name.
    pub benchmark: String,
    /// The model.
    pub model: String,
    /// The pattern, or `all`.
    pub pattern: String,
    /// Items scored.
    pub questions: u32,
    /// Pairs scored.
    pub pairs: u32,
    /// Percent of items right.
    pub question_accuracy: f64,
    /// Percent of pairs with both items right (the headline metric).
    pub pair_accuracy: f64,
    /// Items without a usable response (counted as wrong).
    pub errors: u32,
    /// The bootstrap interval of `question_accuracy`, where computed.
    pub question_interval: Option<(f64, f64)>,
    /// The bootstrap interval of `pair_accuracy`, where computed.
    pub pair_interval: Option<(f64, f64)>,
    /// Answer bias: the percent of answered items whose choice is (a) (50 for an unbiased
    /// model on a balanced benchmark; NaN when none was answered).
    pub a_share: f64,
    /// With `--repeats`: the mean, over items, of the percent of samples that agree with the
    /// item's most frequent choice (NaN without repeats).
    pub agreement: f64,
    /// With `--repeats`: the percent of items whose samples do not all agree.
    pub flip_share: f64,
    /// Bootstrap intervals over pairs of `a_share`, `agreement` and `flip_share`.
    pub bias_intervals: [Option<(f64, f64)>; 3],
    /// NaturalBench's scores where a pair asks two questions of its two images (NaN
    /// elsewhere): question accuracy over both images (Q-Acc), image accuracy over both
    /// questions (I-Acc) and group accuracy, all four right (G-Acc).
    pub natural: NaturalScores,
}

/// NaturalBench's accuracies, in percent (NaN without pairs of two questions and two images).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NaturalScores {
    /// A question right for both images.
    pub q_acc: f64,
    /// An image right for both questions.
    pub i_acc: f64,
    /// All four items of a pair right.
    pub g_acc: f64,
    /// Pairs of two questions and two images.
    pub groups: usize,
    /// Percentile-bootstrap intervals of q_acc, i_acc and g_acc (resampling those pairs).
    pub intervals: Option<[(f64, f64); 3]>,
}

/// NaturalBench's scores over `pairs` (each: its items); only pairs of exactly two images
/// and two questions (four items, each question asked of each image) count.
pub fn natural_scores(pairs: &[Vec<&AnswerRow>], boot: &stats::Bootstrap) -> NaturalScores {
    let (mut q, mut qn, mut i, mut in_, mut g) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut groups = 0usize;
    // Per group: questions right (of 2), images right (of 2), all right.
    let mut per_group: Vec<[usize; 3]> = Vec::new();
    for items in pairs {
        let image = |r: &&AnswerRow| match r.image_digest.is_empty() {
            true => r.image.clone(),
            false => r.image_digest.clone(),
        };
        let images: std::collections::BTreeSet<String> = items.iter().map(image).collect();
        let prompts: std::collections::BTreeSet<&str> =
            items.iter().map(|r| r.prompt.as_str()).collect();
        if items.len() != 4 || images.len() != 2 || prompts.len() != 2 {
            continue;
        }
        groups += 1;
        let mut one = [0usize; 3];
        for p in &prompts {
            qn += 1;
            one[0] += usize::from(items.iter().filter(|r| r.prompt == *p).all(|r| r.correct));
        }
        for im in &images {
            in_ += 1;
            one[1] += usize::from(items.iter().filter(|r| image(r) == *im).all(|r| r.correct));
        }
        one[2] = usize::from(items.iter().all(|r| r.correct));
        (q, i, g) = (q + one[0], i + one[1], g + one[2]);
        per_group.push(one);
    }
    let pct = |n: usize, d: usize| match d {
        0 => f64::NAN,
        d => 100.0 * n as f64 / d as f64,
    };
    NaturalScores {
        q_acc: pct(q, qn),
        i_acc: pct(i, in_),
        g_acc: pct(g, groups),
        groups,
        intervals: natural_intervals(&per_group, boot),
    }
}

/// Percentile-bootstrap intervals of Q-Acc, I-Acc and G-Acc, resampling whole groups (one
/// seed, so the three draw the same resamples).
fn natural_intervals(per_group: &[[usize; 3]], boot: &stats::Bootstrap) -> Option<[(f64, f64); 3]> {
    // Two questions and two images per group, one group.
    let ratio = |k: usize, of: f64| {
        let v: Vec<(f64, f64)> = per_group.iter().map(|g| (g[k] as f64, of)).collect();
        stats::ratio_interval(&v, boot)
    };
    Some([ratio(0, 2.0)?, ratio(1, 2.0)?, ratio(2, 1.0)?])
}

/// Over items with repeated samples: the mean percent of samples agreeing with the item's
/// most frequent choice, and the percent of items whose samples differ; NaN without samples.
fn agreement(items: &[&AnswerRow]) -> (f64, f64) {
    let sampled: Vec<&Vec<Option<char>>> = items
        .iter()
        .map(|r| &r.samples)
        .filter(|s| s.len() > 1)
        .collect();
    if sampled.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut agree = 0.0;
    let mut flipped = 0usize;
    for s in &sampled {
        let mut counts: BTreeMap<Option<char>, usize> = BTreeMap::new();
        for c in s.iter() {
            *counts.entry(*c).or_default() += 1;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        agree += top as f64 / s.len() as f64;
        flipped += usize::from(counts.len() > 1);
    }
    let n = sampled.len() as f64;
    (100.0 * agree / n, 100.0 * flipped as f64 / n)
}

/// The percent of answered items that chose (a); NaN when none was answered.
fn a_share(items: &[&AnswerRow]) -> f64 {
    let answered = items.iter().filter(|r| r.choice.is_some()).count();
    let a = items
        .iter()
        .filter(|r| r.choice.as_deref() == Some("(a)"))
        .count();
    match answered {
        0 => f64::NAN,
        n => 100.0 * a as f64 / n as f64,
    }
}

/// Bootstrap intervals, resampling pairs, of the answer bias, the agreement across samples
/// and the share of items that flip.
fn bias_intervals<'a>(
    pairs: impl Iterator<Item = &'a [&'a AnswerRow]>,
    boot: &stats::Bootstrap,
) -> [Option<(f64, f64)>; 3] {
    let (mut a, mut agree, mut flips) = (Vec::new(), Vec::new(), Vec::new());
    for items in pairs {
        let answered = items.iter().filter(|r| r.choice.is_some()).count() as f64;
        let chose_a = items
            .iter()
            .filter(|r| r.choice.as_deref() == Some("(a)"))
            .count() as f64;
        a.push((chose_a, answered));
        let sampled: Vec<&&AnswerRow> = items.iter().filter(|r| r.samples.len() > 1).collect();
        let (agreeing, flipped) = sampled.iter().fold((0.0, 0.0), |(g, f), r| {
            let (one, flip) = agreement(&[r]);
            (g + one / 100.0, f + flip / 100.0)
        });
        agree.push((agreeing, sampled.len() as f64));
        flips.push((flipped, sampled.len() as f64));
    }
    [
        stats::ratio_interval(&a, boot),
        stats::ratio_interval(&agree, boot),
        stats::ratio_interval(&flips, boot),
    ]
}

/// The pattern name of the overall row of `scores`.
pub const ALL: &str = "all";

/// What an evaluation did.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    /// `mllm` or `vlm`.
    pub kind: Kind,
    /// The model.
    pub model: String,
    /// The benchmark.
    pub benchmark: String,
    /// Items answered.
    pub questions: u32,
    /// Overall question accuracy, percent.
    pub question_accuracy: f64,
    /// Overall pair accuracy, percent.
    pub pair_accuracy: f64,
    /// Answer bias: percent of answered items that chose (a).
    pub a_share: f64,
    /// With `--repeats`: mean percent of samples agreeing with each item's most frequent choice.
    pub agreement: f64,
    /// With `--repeats`: percent of items whose answer flips between samples.
    pub flip_share: f64,
    /// NaturalBench's Q-Acc, I-Acc and G-Acc, where pairs ask two questions of two images.
    pub natural: NaturalScores,
    /// Items without a usable response.
    pub errors: u32,
    /// HTTP requests made (MLLMs).
    pub requests: u64,
    /// Responses taken from the cache (MLLMs).
    pub cached: u32,
    /// Per-pattern scores.
    pub patterns: Vec<PatternScore>,
    /// The answers object written.
    pub answers: String,
    /// Wall time.
    pub seconds: f64,
}

/// One pattern's scores in a summary.
#[derive(Clone, Debug, Serialize)]
pub struct PatternScore {
    /// The pattern.
    pub pattern: String,
    /// Pairs.
    pub pairs: u32,
    /// Percent of items right.
    pub question_accuracy: f64,
    /// Percent of pairs right.
    pub pair_accuracy: f64,
    /// Its bootstrap interval.
    pub pair_interval: Option<(f64, f64)>,
}

/// Scores per pattern and overall: question accuracy over items, pair accuracy over pairs
/// whose items are all right, and their bootstrap intervals (resampling pairs). A pair's
/// pattern is its first item's.
pub fn score(rows: &[AnswerRow], bootstrap: &stats::Bootstrap) -> Vec<ScoreRow> {
    let mut by_pattern: BTreeMap<&str, Vec<&AnswerRow>> = BTreeMap::new();
    for r in rows {
        by_pattern.entry(ALL).or_default().push(r);
        by_pattern.entry(&r.pattern).or_default().push(r);
    }
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    // Pairs by their pattern: the first item's, so a pair is never split between two rows.
    let mut pair_pattern: BTreeMap<u32, &str> = BTreeMap::new();
    // Per pair: (items right, items).
    let mut pair_counts: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    let mut sorted: Vec<&AnswerRow> = rows.iter().collect();
    sorted.sort_by_key(|r| r.item);
    let mut pair_items: BTreeMap<u32, Vec<&AnswerRow>> = BTreeMap::new();
    for r in &sorted {
        pair_items.entry(r.pair).or_default().push(r);
    }
    for r in sorted {
        pair_pattern.entry(r.pair).or_insert(&r.pattern);
        let c = pair_counts.entry(r.pair).or_insert((0, 0));
        c.0 += u32::from(r.correct);
        c.1 += 1;
    }
    let pct = |n: usize, d: usize| {
        if d == 0 {
            f64::NAN
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    by_pattern
        .into_iter()
        .map(|(pattern, items)| {
            let pairs: Vec<(u32, u32)> = pair_counts
                .iter()
                .filter(|(p, _)| pattern == ALL || pair_pattern[p] == pattern)
                .map(|(_, c)| *c)
                .collect();
            let intervals = stats::bootstrap_accuracy(&pairs, bootstrap);
            let agreed = agreement(&items);
            ScoreRow {
                benchmark: first.benchmark.clone(),
                model: first.model.clone(),
                pattern: pattern.to_string(),
                questions: items.len() as u32,
                pairs: pairs.len() as u32,
                question_accuracy: pct(items.iter().filter(|r| r.correct).count(), items.len()),
                pair_accuracy: pct(pairs.iter().filter(|(r, a)| r == a).count(), pairs.len()),
                errors: items.iter().filter(|r| r.error.is_some()).count() as u32,
                question_interval: intervals.map(|i| i.question),
                pair_interval: intervals.map(|i| i.pair),
                a_share: a_share(&items),
                agreement: agreed.0,
                flip_share: agreed.1,
                bias_intervals: bias_intervals(
                    pair_items
                        .iter()
                        .filter(|(p, _)| pattern == ALL || pair_pattern[p] == pattern)
                        .map(|(_, v)| v.as_slice()),
                    bootstrap,
                ),
                natural: natural_scores(
                    &pair_items
                        .iter()
                        .filter(|(p, _)| pattern == ALL || pair_pattern[p] == pattern)
                        .map(|(_, v)| v.clone())
                        .collect::<Vec<_>>(),
                    bootstrap,
                ),
            }
        })
        .collect()
}

fn utf8(values: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn answers_batch(kind: Kind, rows: &[AnswerRow]) -> Result<RecordBatch> {
    let s = |f: fn(&AnswerRow) -> &str| utf8(rows.iter().map(|r| Some(f(r).to_string())));
    let o = |f: fn(&AnswerRow) -> &Option<String>| utf8(rows.iter().map(|r| f(r).clone()));
    let columns: Vec<ArrayRef> = vec![
        utf8(rows.iter().map(|_| Some(kind.name().to_string()))),
        s(|r| &r.benchmark),
        s(|r| &r.model),
        Arc::new(rows.iter().map(|r| r.item).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| r.pair).collect::<UInt32Array>()),
        s(|r| &r.pattern),
        s(|r| &r.template),
        s(|r| &r.prompt),
        s(|r| &r.image),
        o(|r| &r.response),
        o(|r| &r.choice),
        s(|r| &r.answer),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.correct))
                .collect::<BooleanArray>(),
        ),
        s(|r| &r.grader),
        s(|r| &r.labels),
        Arc::new(rows.iter().map(|r| r.attempts).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| r.latency_ms).collect::<UInt64Array>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.cached))
                .collect::<BooleanArray>(),
        ),
        o(|r| &r.error),
        o(|r| &r.judge),
        s(|r| &r.settings),
        s(|r| &r.endpoint),
    ];
    RecordBatch::try_new(schema::answers(), columns).map_err(|e| Error::table("answers", e))
}

/// A bound of one of the bias intervals (null where there is none).
fn bias(rows: &[ScoreRow], k: usize, high: bool) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(|r| r.bias_intervals[k].map(|(l, h)| if high { h } else { l }))
            .collect::<Float64Array>(),
    )
}

/// A NaturalBench column of `scores` (null where it does not apply).
fn natural(rows: &[ScoreRow], f: fn(&NaturalScores) -> f64) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(|r| Some(f(&r.natural)).filter(|v| v.is_finite()))
            .collect::<Float64Array>(),
    )
}

fn scores_batch(
    kind: Kind,
    rows: &[ScoreRow],
    first: &AnswerRow,
    bootstrap: &stats::Bootstrap,
) -> Result<RecordBatch> {
    let same = |v: &str| utf8(rows.iter().map(|_| Some(v.to_string())));
    let bound = |f: fn(&ScoreRow) -> Option<(f64, f64)>, high: bool| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| f(r).map(|(l, h)| if high { h } else { l }))
                .collect::<Float64Array>(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        same(kind.name()),
        utf8(rows.iter().map(|r| Some(r.benchmark.clone()))),
        utf8(rows.iter().map(|r| Some(r.model.clone()))),
        utf8(rows.iter().map(|r| Some(r.pattern.clone()))),
        Arc::new(rows.iter().map(|r| r.questions).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| r.pairs).collect::<UInt32Array>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.question_accuracy).filter(|v| v.is_finite()))
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.pair_accuracy).filter(|v| v.is_finite()))
                .collect::<Float64Array>(),
        ),
        Arc::new(rows.iter().map(|r| r.errors).collect::<UInt32Array>()),
        same(&first.grader),
        same(&first.labels),
        same(&first.template),
        bound(|r| r.question_interval, false),
        bound(|r| r.question_interval, true),
        bound(|r| r.pair_interval, false),
        bound(|r| r.pair_interval, true),
        utf8(
            rows.iter()
                .map(|r| r.pair_interval.map(|_| bootstrap.describe())),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.a_share).filter(|v| v.is_finite()))
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.agreement).filter(|v| v.is_finite()))
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.flip_share).filter(|v| v.is_finite()))
                .collect::<Float64Array>(),
        ),
        bias(rows, 0, false),
        bias(rows, 0, true),
        bias(rows, 1, false),
        bias(rows, 1, true),
        bias(rows, 2, false),
        bias(rows, 2, true),
        natural(rows, |n| n.q_acc),
        natural(rows, |n| n.i_acc),
        natural(rows, |n| n.g_acc),
        natural(rows, |n| n.intervals.map_or(f64::NAN, |i| i[0].0)),
        natural(rows, |n| n.intervals.map_or(f64::NAN, |i| i[0].1)),
        natural(rows, |n| n.intervals.map_or(f64::NAN, |i| i[1].0)),
        natural(rows, |n| n.intervals.map_or(f64::NAN, |i| i[1].1)),
        natural(rows, |n| n.intervals.map_or(f64::NAN, |i| i[2].0)),
        natural(rows, |n| n.intervals.map_or(f64::NAN, |i| i[2].1)),
    ];
    RecordBatch::try_new(schema::scores(), columns).map_err(|e| Error::table("scores", e))
}

/// Writes an evaluation's `answers` and `scores` and then its commit; returns its summary.
pub async fn commit(
    root: &Location,
    kind: Kind,
    rows: Vec<AnswerRow>,
    bootstrap: &stats::Bootstrap,
    started: Instant,
) -> Result<EvalSummary> {
    let first = rows
        .first()
        .cloned()
        .ok_or_else(|| Error::Usage("the benchmark has no items".into()))?;
    let scores = score(&rows, bootstrap);
    let id = eval_id(kind, &first);
    let catalog = Catalog::new(root);
    let stage = match kind {
        Kind::Mllm => Stage::EvalMllm,
        Kind::Vlm => Stage::EvalVlm,
    };
    let generation = catalog.begin(stage.name()).await?;
    let answers = io::write_batches(
        root,
        &format!("{}/{id}", table::ANSWERS.dir),
        &schema::answers(),
        &[answers_batch(kind, &rows)?],
    )
    .await?;
    let scores_objects = io::write_batches(
        root,
        &format!("{}/{id}", table::SCORES.dir),
        &schema::scores(),
        &[scores_batch(kind, &scores, &first, bootstrap)?],
    )
    .await?;
    let answers_rel = answers[0].path.clone();
    let record = EvalCommit {
        kind,
        model: first.model.clone(),
        benchmark: first.benchmark.clone(),
        answers: answers_rel.clone(),
        scores: scores_objects[0].path.clone(),
        template: first.template.clone(),
        grader: first.grader.clone(),
        bootstrap: Some(*bootstrap),
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new(&id, generation, &record)?
        .with(&table::ANSWERS, answers)
        .with(&table::SCORES, scores_objects);
    catalog.commit(CommitSet::EVAL, &commit).await?;
    let overall = scores.iter().find(|s| s.pattern == ALL);
    Ok(EvalSummary {
        kind,
        model: first.model.clone(),
        benchmark: first.benchmark.clone(),
        questions: rows.len() as u32,
        question_accuracy: overall.map_or(f64::NAN, |s| s.question_accuracy),
        pair_accuracy: overall.map_or(f64::NAN, |s| s.pair_accuracy),
        a_share: overall.map_or(f64::NAN, |s| s.a_share),
        agreement: overall.map_or(f64::NAN, |s| s.agreement),
        flip_share: overall.map_or(f64::NAN, |s| s.flip_share),
        natural: overall.map_or(natural_scores(&[], bootstrap), |s| s.natural),
        errors: rows.iter().filter(|r| r.error.is_some()).count() as u32,
        requests: rows.iter().map(|r| r.attempts as u64).sum(),
        cached: rows.iter().filter(|r| r.cached).count() as u32,
        patterns: pattern_scores(&scores),
        answers: root.uri_of(&root.path(&answers_rel)),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// An evaluation's unit: readable by kind and model; the hash keeps evaluations that differ
/// in anything else (benchmark, template, grader, labels) apart.
fn eval_id(kind: Kind, first: &AnswerRow) -> String {
    let settings = format!(
        "{}|{}|{}|{}|{}|{}",
        kind.name(),
        first.model,
        first.benchmark,
        first.template,
        first.grader,
        first.labels
    );
    format!(
        "{}-{}-{}",
        kind.name(),
        segment_id(&first.model),
        &blake3::hash(settings.as_bytes()).to_hex()[..8]
    )
}

/// The summary's per-pattern scores (all but the overall row).
fn pattern_scores(scores: &[ScoreRow]) -> Vec<PatternScore> {
    scores
        .iter()
        .filter(|s| s.pattern != ALL)
        .map(|s| PatternScore {
            pattern: s.pattern.clone(),
            pairs: s.pairs,
            question_accuracy: s.question_accuracy,
            pair_accuracy: s.pair_accuracy,
            pair_interval: s.pair_interval,
        })
        .collect()
}

/// A CSV's headers with any byte-order mark and surrounding spaces removed: sheets saved by
/// spreadsheet programs carry both.
pub(crate) fn csv_headers<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
) -> csv::Result<Vec<String>> {
    Ok(reader
        .headers()?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect())
}

/// The position of the first header equal to one of `names`, ignoring ASCII case.
pub(crate) fn column(headers: &[String], names: &[&str]) -> Option<usize> {
    headers
        .iter()
        .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
}

/// Reads a whole text object from a local path or URL.
pub(crate) async fn read_text(url_or_path: &str) -> Result<String> {
    let bytes = crate::storage::get_url(url_or_path).await?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::Usage(format!("{url_or_path} is not UTF-8 text")))
}

/// Every committed evaluation of a run root, in path order, with the commit naming its
/// tables.
pub async fn commits(root: &Location) -> Result<Vec<(EvalCommit, Commit)>> {
    Catalog::new(root)
        .commits_of(CommitSet::EVAL)
        .await?
        .into_iter()
        .map(|c| Ok((c.record::<EvalCommit>()?, c)))
        .collect()
}

/// A model's per-pattern scores, as `correlate` uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelScores {
    /// `mllm` or `vlm`.
    pub kind: Kind,
    /// The model.
    pub model: String,
    /// Accuracy (percent) per pattern; the overall row is left out.
    pub by_pattern: BTreeMap<String, f64>,
    /// Its bootstrap interval per pattern, where the table has one.
    pub intervals: BTreeMap<String, (f64, f64)>,
}

/// Reads the committed `scores` of a run root, choosing pair or question accuracy.
pub async fn read_scores(root: &Location, metric: Metric) -> Result<Vec<ModelScores>> {
    let mut out: Vec<ModelScores> = Vec::new();
    for (c, commit) in commits(root).await? {
        let paths = commit
            .objects(&table::SCORES)
            .into_iter()
            .map(|o| o.path)
            .collect();
        // Every column: tables written before the intervals existed lack those.
        let batches: Vec<RecordBatch> = io::scan_objects(root, paths, &[], io::SCAN_BATCH_ROWS)
            .try_collect()
            .await?;
        let mut entry = ModelScores {
            kind: c.kind,
            model: c.model.clone(),
            by_pattern: BTreeMap::new(),
            intervals: BTreeMap::new(),
        };
        for b in &batches {
            let bound = |suffix: &str| {
                b.column_by_name(&format!("{}_{suffix}", metric.column()))
                    .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                    .cloned()
            };
            let (low, high) = (bound("low"), bound("high"));
            let patterns = io::strings(b, "pattern")?;
            let col = b
                .column_by_name(metric.column())
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .ok_or_else(|| Error::table("scores", format!("no {} column", metric.column())))?;
            for i in 0..b.num_rows() {
                if patterns.value(i) != ALL && !col.is_null(i) {
                    entry
                        .by_pattern
                        .insert(patterns.value(i).to_string(), col.value(i));
                    if let (Some(l), Some(h)) = (&low, &high) {
                        if l.is_valid(i) && h.is_valid(i) {
                            entry
                                .intervals
                                .insert(patterns.value(i).to_string(), (l.value(i), h.value(i)));
                        }
                    }
                }
            }
        }
        // A model evaluated twice (another benchmark, template or grader) keeps one entry per
        // evaluation, named by what differs.
        if out
            .iter()
            .any(|m| m.model == entry.model && m.kind == entry.kind)
        {
            entry.model = format!(
                "{} ({}, {}, {})",
                entry.model, c.benchmark, c.template, c.grader
            );
        }
        out.push(entry);
    }
    Ok(out)
}

/// Which accuracy `correlate` compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Pair accuracy (the paper's metric for both benchmarks).
    #[default]
    Pair,
    /// Question accuracy.
    Question,
}

impl Metric {
    /// Its name in the tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Pair => "pair",
            Metric::Question => "question",
        }
    }

    /// The `scores` column it reads.
    pub fn column(self) -> &'static str {
        match self {
            Metric::Pair => "pair_accuracy",
            Metric::Question => "question_accuracy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(item: u32, pattern: &str, correct: bool) -> AnswerRow {
        AnswerRow {
            item,
            pair: item.div_ceil(2),
            pattern: pattern.into(),
            correct,
            ..Default::default()
        }
    }

    #[test]
    fn pair_accuracy_needs_both_items_and_patterns_follow_the_first_item() {
        let rows = vec![
            row(1, "Color", true),
            row(2, "Color", true),
            row(3, "Color", true),
            row(4, "Color", false),
            row(5, "Text", false),
            row(6, "Text", false),
            row(7, "Text", true),
            // A stray label on the second item does not split pair 4.
            row(8, "Color", true),
        ];
        let s = score(&rows, &stats::Bootstrap::default());
        let get = |p: &str| s.iter().find(|r| r.pattern == p).unwrap();
        assert_eq!(get(ALL).questions, 8);
        assert_eq!(get(ALL).pairs, 4);
        assert!((get(ALL).question_accuracy - 62.5).abs() < 1e-9);
        assert!((get(ALL).pair_accuracy - 50.0).abs() < 1e-9);
        assert_eq!(get("Color").pairs, 2);
        assert!((get("Color").pair_accuracy - 50.0).abs() < 1e-9);
        assert_eq!(get("Text").pairs, 2);
        assert!((get("Text").pair_accuracy - 50.0).abs() < 1e-9);
        assert_eq!(get("Text").questions, 3);
    }
}
