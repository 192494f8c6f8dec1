//! Does an MLLM fail where its vision encoder is blind? Per pattern, every encoder's and
//! every MLLM's accuracy; Pearson and Spearman correlation across patterns for each
//! (encoder, MLLM) pair and for encoder groups averaged first (the paper's CLIP line is the
//! mean of three encoders); written as the `correlations` table and drawn as PNG plots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array};
use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::{
    column, csv_headers, patterns, read_scores, read_text, stats, Kind, Metric, ModelScores,
};
use crate::plot::{self, Bars, Scatter, Series};
use crate::stage::Stage;
use crate::storage::{segment_id, Location};
use crate::table::{self, io, schema, Catalog, Commit, CommitSet};
use crate::units;
/// Where the plots go.
pub const PLOTS: &str = "eval/plots";

/// What `eval correlate` needs besides the run root.
#[derive(Clone, Debug, Default)]
pub struct CorrelateParams {
    /// Pair or question accuracy.
    pub metric: Metric,
    /// Encoder groups, averaged per pattern before correlating: (name, member models).
    pub groups: Vec<(String, Vec<String>)>,
    /// Extra scores from CSV files (local paths or URLs), e.g. published numbers.
    pub csv: Vec<String>,
    /// Draw the PNG plots.
    pub plots: bool,
}

/// One row of `correlations`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Correlation {
    /// The encoder, or the group's name.
    pub encoder: String,
    /// Whether `encoder` is a group.
    pub group: bool,
    /// The MLLM.
    pub mllm: String,
    /// Pearson's r across the shared patterns; null when undefined.
    pub pearson: Option<f64>,
    /// Spearman's rho; null when undefined.
    pub spearman: Option<f64>,
    /// Patterns both have scores for.
    pub n: u32,
    /// Those patterns.
    pub patterns: Vec<String>,
    /// The Fisher-z 95% interval of `pearson` (null below 4 patterns).
    pub pearson_interval: Option<(f64, f64)>,
}

/// How correlations' intervals are computed, as the table and the report state it.
pub const FISHER_NOTE: &str =
    "95% Fisher-z interval of Pearson's r: tanh(atanh(r) ± 1.96/sqrt(n-3)), n patterns";

/// The note under per-pattern bar charts.
pub const INTERVAL_NOTE: &str =
    "whiskers: percentile bootstrap intervals over pairs (see the scores table's interval_method column)";

impl Correlation {
    /// `r = 0.81 [0.31, 0.96] (n = 9)`, or what is known of it.
    pub fn pearson_note(&self) -> Option<String> {
        let r = self.pearson?;
        Some(plot::r_note(r, self.pearson_interval, self.n as u64))
    }
}

/// What `eval correlate` found.
#[derive(Clone, Debug, Serialize)]
pub struct CorrelateSummary {
    /// The metric compared.
    pub metric: Metric,
    /// Patterns in table order.
    pub patterns: Vec<String>,
    /// Every model's (and group's) per-pattern accuracy, as (kind, name, values by pattern).
    pub table: Vec<(String, String, Vec<Option<f64>>)>,
    /// The correlations.
    pub correlations: Vec<Correlation>,
    /// Plots written.
    pub plots: Vec<String>,
    /// Why there is nothing to correlate, when that is so.
    pub note: Option<String>,
}

/// Reads scores from a CSV in wide form: `model`, `kind` (`vlm`/`encoder` or `mllm`), then
/// one column per pattern (percent); `avg`/`average` columns are ignored.
pub fn parse_scores_csv(text: &str, origin: &str) -> Result<Vec<ModelScores>> {
    let bad = |reason: String| Error::Usage(format!("scores csv {origin}: {reason}"));
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers = csv_headers(&mut reader).map_err(|e| bad(e.to_string()))?;
    let (Some(cm), Some(ck)) = (column(&headers, &["model"]), column(&headers, &["kind"])) else {
        return Err(bad(format!(
            "needs `model` and `kind` columns, then one column per pattern (found: {})",
            headers.join(", ")
        )));
    };
    let pattern_cols: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter(|(i, h)| {
            *i != cm
                && *i != ck
                && !["avg", "average", "mean"].contains(&h.to_ascii_lowercase().as_str())
        })
        .map(|(i, h)| (i, patterns::canonical(h)))
        .collect();
    let mut out = Vec::new();
    for (n, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| bad(format!("row {}: {e}", n + 2)))?;
        let kind = match rec
            .get(ck)
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "vlm" | "encoder" => Kind::Vlm,
            "mllm" => Kind::Mllm,
            other => {
                return Err(bad(format!(
                    "row {}: kind {other:?} must be vlm (or encoder) or mllm",
                    n + 2
                )))
            }
        };
        let mut by_pattern = BTreeMap::new();
        for (i, p) in &pattern_cols {
            let cell = rec.get(*i).unwrap_or("").trim();
            if cell.is_empty() {
                continue;
            }
            let v: f64 = cell
                .parse()
                .map_err(|_| bad(format!("row {}: {p} value {cell:?} is not a number", n + 2)))?;
            by_pattern.insert(p.clone(), v);
        }
        out.push(ModelScores {
            intervals: BTreeMap::new(),
            kind,
            model: rec.get(cm).unwrap_or("").trim().to_string(),
            by_pattern,
        });
    }
    Ok(out)
}

/// Correlations of every encoder and group with every MLLM, over the patterns both have
/// (the `unassigned` pattern never counts).
pub fn correlations(
    models: &[ModelScores],
    groups: &[(String, Vec<String>)],
) -> Result<(Vec<ModelScores>, Vec<Correlation>)> {
    let encoders: Vec<&ModelScores> = models.iter().filter(|m| m.kind == Kind::Vlm).collect();
    let mut group_scores = Vec::new();
    for (name, members) in groups {
        let mut rows = Vec::new();
        for m in members {
            let found = encoders.iter().find(|e| &e.model == m).ok_or_else(|| {
                Error::Usage(format!(
                    "group {name}: no encoder scores for {m:?} (encoders: {})",
                    encoders
                        .iter()
                        .map(|e| e.model.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            rows.push(*found);
        }
        // The group has a pattern only where every member has it.
        let shared: BTreeSet<&String> = rows
            .iter()
            .map(|r| r.by_pattern.keys().collect::<BTreeSet<_>>())
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .unwrap_or_default();
        let mut by_pattern = BTreeMap::new();
        for p in shared {
            let sum: f64 = rows.iter().map(|r| r.by_pattern[p]).sum();
            by_pattern.insert(p.clone(), sum / rows.len() as f64);
        }
        group_scores.push(ModelScores {
            intervals: BTreeMap::new(),
            kind: Kind::Vlm,
            model: name.clone(),
            by_pattern,
        });
    }
    let mut out = Vec::new();
    let sides: Vec<(&ModelScores, bool)> = encoders
        .iter()
        .map(|e| (*e, false))
        .chain(group_scores.iter().map(|g| (g, true)))
        .collect();
    for (enc, group) in sides {
        for mllm in models.iter().filter(|m| m.kind == Kind::Mllm) {
            let shared: Vec<&String> = enc
                .by_pattern
                .keys()
                .filter(|p| p.as_str() != patterns::UNASSIGNED && mllm.by_pattern.contains_key(*p))
                .collect();
            let x: Vec<f64> = shared.iter().map(|p| enc.by_pattern[*p]).collect();
            let y: Vec<f64> = shared.iter().map(|p| mllm.by_pattern[*p]).collect();
            let pearson = stats::pearson(&x, &y);
            out.push(Correlation {
                encoder: enc.model.clone(),
                group,
                mllm: mllm.model.clone(),
                pearson,
                pearson_interval: pearson.and_then(|r| stats::fisher_interval(r, x.len(), 0.95)),
                spearman: stats::spearman(&x, &y),
                n: shared.len() as u32,
                patterns: shared.into_iter().cloned().collect(),
            });
        }
    }
    Ok((group_scores, out))
}

/// Patterns in the paper's order first, then any others alphabetically.
fn pattern_order(models: &[ModelScores]) -> Vec<String> {
    let all: BTreeSet<&String> = models.iter().flat_map(|m| m.by_pattern.keys()).collect();
    let mut out: Vec<String> = patterns::PATTERNS
        .iter()
        .filter(|p| all.iter().any(|a| a == p))
        .map(|p| p.to_string())
        .collect();
    out.extend(
        all.into_iter()
            .filter(|a| !patterns::PATTERNS.contains(&a.as_str()))
            .cloned(),
    );
    out
}

fn batch(rows: &[Correlation], metric: Metric) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Correlation) -> String| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        s(&|r| r.encoder.clone()),
        Arc::new(rows.iter().map(|r| Some(r.group)).collect::<BooleanArray>()),
        s(&|r| r.mllm.clone()),
        s(&|_| metric.name().to_string()),
        Arc::new(rows.iter().map(|r| r.pearson).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.spearman).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.n).collect::<UInt32Array>()),
        s(&|r| r.patterns.join(", ")),
        Arc::new(
            rows.iter()
                .map(|r| r.pearson_interval.map(|i| i.0))
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.pearson_interval.map(|i| i.1))
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.pearson_interval.map(|_| FISHER_NOTE))
                .collect::<StringArray>(),
        ),
    ];
    RecordBatch::try_new(schema::correlations(), columns)
        .map_err(|e| Error::table("correlations", e))
}

/// The correlate stage: reads the run root's scores (and CSVs), writes `correlations` and
/// plots.
pub async fn correlate(root: &Location, params: &CorrelateParams) -> Result<CorrelateSummary> {
    let mut models = read_scores(root, params.metric).await?;
    for f in &params.csv {
        models.extend(parse_scores_csv(&read_text(f).await?, f)?);
    }
    let (groups, rows) = correlations(&models, &params.groups)?;
    let mut all = models;
    all.extend(groups);
    let order = pattern_order(&all);
    let table = all
        .iter()
        .map(|m| {
            (
                m.kind.name().to_string(),
                m.model.clone(),
                order.iter().map(|p| m.by_pattern.get(p).copied()).collect(),
            )
        })
        .collect();
    let note = if rows.is_empty() {
        Some(format!(
            "nothing to correlate: {} encoder score set(s) and {} MLLM score set(s); correlations need at least one of each",
            all.iter().filter(|m| m.kind == Kind::Vlm).count(),
            all.iter().filter(|m| m.kind == Kind::Mllm).count()
        ))
    } else {
        None
    };
    let written = units::locked(
        root,
        Stage::EvalCorrelate,
        write(root, params, &all, &order, &rows),
    )
    .await;
    Ok(CorrelateSummary {
        metric: params.metric,
        patterns: order,
        table,
        correlations: rows,
        plots: written?,
        note,
    })
}

async fn write(
    root: &Location,
    params: &CorrelateParams,
    all: &[ModelScores],
    order: &[String],
    rows: &[Correlation],
) -> Result<Vec<String>> {
    let catalog = Catalog::new(root);
    let generation = catalog.begin(Stage::EvalCorrelate.name()).await?;
    let objects = io::write_batches(
        root,
        &format!("{}/correlations", table::CORRELATIONS.dir),
        &schema::correlations(),
        &[batch(rows, params.metric)?],
    )
    .await?;
    let record = crate::table::records::CorrelateCommit {
        rows: rows.len() as u64,
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new("", generation, &record)?.with(&table::CORRELATIONS, objects);
    catalog.commit(CommitSet::CORRELATE, &commit).await?;
    match params.plots && !all.is_empty() {
        true => plots(root, params, all, order, rows).await,
        false => Ok(Vec::new()),
    }
}

/// The per-pattern bars and a scatter per correlation, as PNG files under the run root.
async fn plots(
    root: &Location,
    params: &CorrelateParams,
    all: &[ModelScores],
    order: &[String],
    rows: &[Correlation],
) -> Result<Vec<String>> {
    let mut plots = Vec::new();
    let series: Vec<Series> = all
        .iter()
        .map(|m| Series {
            name: format!("{} ({})", m.model, m.kind.name()),
            values: order
                .iter()
                .map(|p| m.by_pattern.get(p).copied().unwrap_or(f64::NAN))
                .collect(),
            intervals: order.iter().map(|p| m.intervals.get(p).copied()).collect(),
        })
        .collect();
    let metric = format!("{} accuracy (%)", params.metric.name());
    let bars = Bars {
        title: format!("Per-pattern {metric}"),
        y_label: metric.clone(),
        categories: order.to_vec(),
        series,
        y_max: 100.0,
        note: all
            .iter()
            .any(|m| !m.intervals.is_empty())
            .then(|| INTERVAL_NOTE.to_string()),
    };
    let rel = format!("{PLOTS}/patterns.png");
    root.put(&rel, Bytes::from(plot::png(&bars)?)).await?;
    plots.push(root.uri_of(&root.path(&rel)));
    for r in rows {
        let (Some(enc), Some(mllm)) = (
            all.iter()
                .find(|m| m.model == r.encoder && m.kind == Kind::Vlm),
            all.iter()
                .find(|m| m.model == r.mllm && m.kind == Kind::Mllm),
        ) else {
            continue;
        };
        let chart = Scatter {
            title: format!("{} vs {}", r.encoder, r.mllm),
            x_label: format!("{} {metric}", r.encoder),
            y_label: format!("{} {metric}", r.mllm),
            points: r
                .patterns
                .iter()
                .map(|p| (p.clone(), enc.by_pattern[p], mllm.by_pattern[p]))
                .collect(),
            note: r.pearson_note(),
        };
        let rel = format!(
            "{PLOTS}/scatter-{}--{}.png",
            segment_id(&r.encoder),
            segment_id(&r.mllm)
        );
        root.put(&rel, Bytes::from(plot::png(&chart)?)).await?;
        plots.push(root.uri_of(&root.path(&rel)));
    }
    Ok(plots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(kind: Kind, model: &str, values: &[(&str, f64)]) -> ModelScores {
        ModelScores {
            intervals: BTreeMap::new(),
            kind,
            model: model.into(),
            by_pattern: values.iter().map(|(p, v)| (p.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn correlations_use_shared_patterns_and_groups_average_first() {
        let models = vec![
            scores(
                Kind::Vlm,
                "e1",
                &[
                    ("Color", 60.0),
                    ("Text", 10.0),
                    ("State", 30.0),
                    ("unassigned", 5.0),
                ],
            ),
            scores(
                Kind::Vlm,
                "e2",
                &[("Color", 40.0), ("Text", 30.0), ("State", 50.0)],
            ),
            scores(
                Kind::Mllm,
                "m",
                &[
                    ("Color", 80.0),
                    ("Text", 20.0),
                    ("State", 44.0),
                    ("Quantity", 1.0),
                    ("unassigned", 9.0),
                ],
            ),
        ];
        let groups = vec![("clip".to_string(), vec!["e1".to_string(), "e2".to_string()])];
        let (g, rows) = correlations(&models, &groups).unwrap();
        assert_eq!(g[0].by_pattern["Color"], 50.0);
        assert_eq!(g[0].by_pattern.len(), 3);
        let e1 = rows.iter().find(|r| r.encoder == "e1").unwrap();
        assert_eq!(e1.n, 3);
        // Three patterns are too few for a Fisher interval (it needs n - 3 > 0).
        assert!(e1.pearson_interval.is_none());
        // e1 and m are exactly affine on the shared patterns: r = 1.
        assert!((e1.pearson.unwrap() - 1.0).abs() < 1e-12);
        let grp = rows.iter().find(|r| r.group).unwrap();
        let want = stats::pearson(&[50.0, 40.0, 20.0], &[80.0, 44.0, 20.0]).unwrap();
        assert_eq!(grp.patterns, ["Color", "State", "Text"]);
        assert!((grp.pearson.unwrap() - want).abs() < 1e-12);
        let err = correlations(&models, &[("x".into(), vec!["nope".into()])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("e1, e2"), "{err}");
    }

    #[test]
    fn wide_csvs_parse_with_any_pattern_spelling() {
        let csv = "model,kind,Orientation,Colour,Viewpoint,avg\nclip,vlm,13.3,53.3,13.3,19.3\nllava,mllm,20,,40,\n";
        let m = parse_scores_csv(csv, "s.csv").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].by_pattern["Color"], 53.3);
        assert_eq!(m[0].by_pattern["Camera Perspective"], 13.3);
        assert!(!m[0].by_pattern.contains_key("avg"));
        assert_eq!(m[1].kind, Kind::Mllm);
        assert_eq!(m[1].by_pattern.len(), 2);
        assert!(parse_scores_csv("model,kind,Color\nx,robot,1\n", "s.csv").is_err());
        assert!(parse_scores_csv("name,Color\nx,1\n", "s.csv").is_err());
    }
}
