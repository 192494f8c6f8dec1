//! What the report shows, read from the run root's tables with SQL: the mined pairs (streamed,
//! with captions, duplicate counts and connected components), the candidates' similarity
//! distribution and yield grid (aggregated by DataFusion, so no candidate is held in memory),
//! and the evaluations' scores, intervals, correlations and settings.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use petgraph::unionfind::UnionFind;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sql;

/// A session over the run root and the names of its tables.
pub struct Tables {
    /// The DataFusion session.
    pub ctx: SessionContext,
    /// Registered table names.
    pub names: Vec<String>,
}

impl Tables {
    /// Whether the root has a table of that name.
    pub fn has(&self, name: &str) -> bool {
        // Views (`dino_vectors`) are registered but not listed among the tables.
        self.names.iter().any(|t| t == name) || self.ctx.table_exist(name).unwrap_or(false)
    }

    /// Runs a query and collects its (small) result.
    pub async fn rows(&self, query: &str) -> Result<Vec<RecordBatch>> {
        let df = sql::query(&self.ctx, &self.names, query).await?;
        sql::collect(df).await
    }

    /// Runs a query and hands its batches to `each` as they come.
    pub async fn stream(
        &self,
        query: &str,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let df = sql::query(&self.ctx, &self.names, query).await?;
        let mut s = df
            .execute_stream()
            .await
            .map_err(|e| Error::table("report", e))?;
        while let Some(b) = s.try_next().await.map_err(|e| Error::table("report", e))? {
            each(&b)?;
        }
        Ok(())
    }
}

fn column_as(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::table("report", format!("query result has no column {name}")))?;
    cast(c, to).map_err(|e| Error::table("report", e))
}

/// A column as optional floats.
pub fn f64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let a = column_as(batch, name, &DataType::Float64)?;
    let a = a
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("cast to Float64");
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

/// A column as optional integers.
pub fn i64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let a = column_as(batch, name, &DataType::Int64)?;
    let a = a
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("cast to Int64");
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

/// A column as optional strings.
pub fn strs(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let a = column_as(batch, name, &DataType::Utf8)?;
    let a = a
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8");
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

/// One mined pair as the gallery shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pair {
    /// Keys, `a < b`.
    pub a: String,
    /// Second key.
    pub b: String,
    /// Where the bytes are.
    pub a_uri: String,
    /// Where the bytes are.
    pub b_uri: String,
    /// CLIP cosine similarity.
    pub clip: f64,
    /// DINOv2 cosine similarity.
    pub dino: f64,
    /// Captions, where the input had them.
    pub a_caption: Option<String>,
    /// Caption of `b`.
    pub b_caption: Option<String>,
    /// Byte-identical copies of `a` collapsed before mining.
    pub a_duplicates: u64,
    /// Copies of `b`.
    pub b_duplicates: u64,
}

/// The pair graph's connected components: a component id per key, sizes, and edge counts.
#[derive(Debug, Default)]
pub struct Components {
    /// Key -> component id (dense, 0-based, largest component first).
    pub of_key: HashMap<String, u32>,
    /// Images per component.
    pub sizes: Vec<u64>,
    /// Pairs per component.
    pub edges: Vec<u64>,
    /// Pairs in the table.
    pub pairs: u64,
}

/// Connected components of the `pairs` graph, streamed once over (a, b).
pub async fn components(t: &Tables) -> Result<Components> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut uf: UnionFind<u32> = UnionFind::new_empty();
    let mut edges: Vec<(u32, u32)> = Vec::new();
    t.stream("SELECT a, b FROM pairs", |b| {
        let (a, bb) = (strs(b, "a")?, strs(b, "b")?);
        for (x, y) in a.into_iter().zip(bb) {
            let mut id = |k: Option<String>| {
                let k = k.unwrap_or_default();
                *ids.entry(k).or_insert_with(|| uf.new_set())
            };
            let (i, j) = (id(x), id(y));
            uf.union(i, j);
            edges.push((i, j));
        }
        Ok(())
    })
    .await?;
    let labels = uf.into_labeling();
    // Dense ids, largest component first (ties by smallest root label, so stable).
    let mut size_of_root: HashMap<u32, u64> = HashMap::new();
    for l in &labels {
        *size_of_root.entry(*l).or_default() += 1;
    }
    let mut roots: Vec<(u32, u64)> = size_of_root.into_iter().collect();
    roots.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let dense: HashMap<u32, u32> = roots
        .iter()
        .enumerate()
        .map(|(i, (r, _))| (*r, i as u32))
        .collect();
    let mut out = Components {
        sizes: roots.iter().map(|(_, s)| *s).collect(),
        edges: vec![0; roots.len()],
        pairs: edges.len() as u64,
        ..Default::default()
    };
    for (i, _) in &edges {
        out.edges[dense[&labels[*i as usize]] as usize] += 1;
    }
    out.of_key = ids
        .into_iter()
        .map(|(k, i)| (k, dense[&labels[i as usize]]))
        .collect();
    Ok(out)
}

/// The first `limit` pairs in the annotate order (most CLIP-blind first), with captions and
/// duplicate counts, as a stream of batches for `parse_pairs`.
pub async fn pairs(
    t: &Tables,
    limit: usize,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
    let dups = |side: &str| {
        if t.has("duplicates") {
            format!("COALESCE(d{side}.n, 0) AS {side}_dups")
        } else {
            format!("0 AS {side}_dups")
        }
    };
    let (with, joins) = if t.has("duplicates") {
        (
            "WITH dups AS (SELECT duplicate_of AS key, count(*) AS n FROM duplicates GROUP BY duplicate_of) ",
            "LEFT JOIN dups da ON da.key = p.a LEFT JOIN dups db ON db.key = p.b",
        )
    } else {
        ("", "")
    };
    // Captions through a join (keys are unique in embeddings).
    let (cap_join, cap_a, cap_b) = if t.has("embeddings") {
        (
            "LEFT JOIN embeddings ea ON ea.key = p.a LEFT JOIN embeddings eb ON eb.key = p.b",
            "ea.caption AS a_caption",
            "eb.caption AS b_caption",
        )
    } else {
        (
            "",
            "CAST(NULL AS VARCHAR) AS a_caption",
            "CAST(NULL AS VARCHAR) AS b_caption",
        )
    };
    let query = format!(
        "{with}SELECT p.a, p.b, p.a_uri, p.b_uri, p.clip_sim, p.dino_sim, {cap_a}, {cap_b}, {}, {} \
         FROM pairs p {cap_join} {joins} \
         ORDER BY p.dino_sim ASC NULLS LAST, p.a, p.b LIMIT {limit}",
        dups("a"),
        dups("b"),
    );
    let df = sql::query(&t.ctx, &t.names, &query).await?;
    df.execute_stream()
        .await
        .map_err(|e| Error::table("pairs", e))
}

/// The pairs of one batch of `pairs`' stream.
pub fn parse_pairs(b: &RecordBatch) -> Result<Vec<Pair>> {
    let (a, bb) = (strs(b, "a")?, strs(b, "b")?);
    let (au, bu) = (strs(b, "a_uri")?, strs(b, "b_uri")?);
    let (clip, dino) = (f64s(b, "clip_sim")?, f64s(b, "dino_sim")?);
    let (ac, bc) = (strs(b, "a_caption")?, strs(b, "b_caption")?);
    let (ad, bd) = (i64s(b, "a_dups")?, i64s(b, "b_dups")?);
    Ok((0..b.num_rows())
        .map(|i| Pair {
            a: a[i].clone().unwrap_or_default(),
            b: bb[i].clone().unwrap_or_default(),
            a_uri: au[i].clone().unwrap_or_default(),
            b_uri: bu[i].clone().unwrap_or_default(),
            clip: clip[i].unwrap_or(f64::NAN),
            dino: dino[i].unwrap_or(f64::NAN),
            a_caption: ac[i].clone().filter(|c| !c.is_empty()),
            b_caption: bc[i].clone().filter(|c| !c.is_empty()),
            a_duplicates: ad[i].unwrap_or(0).max(0) as u64,
            b_duplicates: bd[i].unwrap_or(0).max(0) as u64,
        })
        .collect())
}

/// The candidates' similarities under both encoders, aggregated.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Thresholds {
    /// Candidate pairs in the table.
    pub candidates: u64,
    /// Of those, pairs with a DINOv2 vector for both images (the rest cannot be filtered yet).
    pub with_dino: u64,
    /// The CLIP range of the density plot.
    pub clip_range: (f64, f64),
    /// The DINOv2 range.
    pub dino_range: (f64, f64),
    /// Counts per (CLIP bin, DINOv2 bin).
    pub density: Vec<Vec<u64>>,
    /// The CLIP minimums of the yield grid (pairs need clip_sim > it).
    pub clip_grid: Vec<f64>,
    /// The DINOv2 maximums (pairs need dino_sim < it).
    pub dino_grid: Vec<f64>,
    /// Pairs at `[clip][dino]`.
    pub yield_pairs: Vec<Vec<u64>>,
    /// Distinct images in those pairs.
    pub yield_images: Vec<Vec<u64>>,
}

/// Bins of the density plot along each axis.
pub const DENSITY_BINS: usize = 60;

const SIMS: &str = "WITH s AS (SELECT c.a, c.b, CAST(c.clip_sim AS DOUBLE) AS clip_sim, \
    CAST(cosine_sim(da.dino, db.dino) AS DOUBLE) AS dino_sim FROM candidates c \
    JOIN dino_vectors da ON da.key = c.a JOIN dino_vectors db ON db.key = c.b) ";

fn literal(v: f64) -> String {
    format!("{v:?}")
}

/// Aggregates the candidates table: the density of (CLIP, DINOv2) similarity and the yield
/// at every (CLIP min, DINOv2 max) of the grids. `None` when the root has no candidates.
pub async fn thresholds(
    t: &Tables,
    clip_grid: &[f64],
    dino_grid: &[f64],
) -> Result<Option<Thresholds>> {
    if !t.has("candidates") {
        return Ok(None);
    }
    let total = t.rows("SELECT count(*) AS n FROM candidates").await?;
    let candidates = i64s(&total[0], "n")?[0].unwrap_or(0) as u64;
    let mut out = Thresholds {
        candidates,
        ..Default::default()
    };
    if candidates == 0 || !t.has("dino_vectors") {
        return Ok(Some(out));
    }
    let r = t
        .rows(&format!(
            "{SIMS}SELECT count(*) AS n, min(clip_sim) AS c0, min(dino_sim) AS d0, max(dino_sim) AS d1 FROM s"
        ))
        .await?;
    out.with_dino = i64s(&r[0], "n")?[0].unwrap_or(0) as u64;
    if out.with_dino == 0 {
        return Ok(Some(out));
    }
    let c0 = f64s(&r[0], "c0")?[0].unwrap_or(0.0);
    let d0 = f64s(&r[0], "d0")?[0].unwrap_or(-1.0);
    let c_lo = ((c0 * 100.0).floor() / 100.0).min(0.99);
    let d_lo = ((d0 * 10.0).floor() / 10.0).clamp(-1.0, 0.9);
    out.clip_range = (c_lo, 1.0);
    out.dino_range = (d_lo, 1.0);
    let n = DENSITY_BINS;
    let bin = |col: &str, lo: f64| {
        format!(
            "CASE WHEN {col} >= 1.0 THEN {last} ELSE CAST(floor(({col} - {lo}) / {w}) AS BIGINT) END",
            last = n - 1,
            lo = literal(lo),
            w = literal((1.0 - lo) / n as f64)
        )
    };
    let bins = t
        .rows(&format!(
            "{SIMS}SELECT {} AS i, {} AS j, count(*) AS n FROM s GROUP BY 1, 2",
            bin("clip_sim", c_lo),
            bin("dino_sim", d_lo)
        ))
        .await?;
    out.density = vec![vec![0; n]; n];
    for b in &bins {
        let (i, j, c) = (i64s(b, "i")?, i64s(b, "j")?, i64s(b, "n")?);
        for k in 0..b.num_rows() {
            let (i, j) = (
                i[k].unwrap_or(0).clamp(0, n as i64 - 1) as usize,
                j[k].unwrap_or(0).clamp(0, n as i64 - 1) as usize,
            );
            out.density[i][j] += c[k].unwrap_or(0) as u64;
        }
    }
    out.clip_grid = clip_grid.to_vec();
    out.dino_grid = dino_grid.to_vec();
    let mut pair_sums = Vec::new();
    let mut per_key = Vec::new();
    let mut image_sums = Vec::new();
    for (ci, c) in clip_grid.iter().enumerate() {
        per_key.push(format!(
            "min(CASE WHEN clip_sim > {} THEN dino_sim END) AS m{ci}",
            literal(*c)
        ));
        for (di, d) in dino_grid.iter().enumerate() {
            pair_sums.push(format!(
                "sum(CASE WHEN clip_sim > {} AND dino_sim < {} THEN 1 ELSE 0 END) AS p{ci}_{di}",
                literal(*c),
                literal(*d)
            ));
            image_sums.push(format!(
                "sum(CASE WHEN m{ci} < {} THEN 1 ELSE 0 END) AS i{ci}_{di}",
                literal(*d)
            ));
        }
    }
    if pair_sums.is_empty() {
        return Ok(Some(out));
    }
    let p = t
        .rows(&format!("{SIMS}SELECT {} FROM s", pair_sums.join(", ")))
        .await?;
    // An image is in the yield at (c, d) when some pair of it has clip > c and dino < d: its
    // smallest DINOv2 similarity among pairs with clip > c is below d.
    let i = t
        .rows(&format!(
            "{SIMS}, k AS (SELECT a AS key, clip_sim, dino_sim FROM s UNION ALL SELECT b AS key, clip_sim, dino_sim FROM s), \
             m AS (SELECT key, {} FROM k GROUP BY key) SELECT {} FROM m",
            per_key.join(", "),
            image_sums.join(", ")
        ))
        .await?;
    let get = |batches: &[RecordBatch], name: &str| -> Result<u64> {
        Ok(i64s(&batches[0], name)?[0].unwrap_or(0).max(0) as u64)
    };
    for ci in 0..clip_grid.len() {
        let mut prow = Vec::new();
        let mut irow = Vec::new();
        for di in 0..dino_grid.len() {
            prow.push(get(&p, &format!("p{ci}_{di}"))?);
            irow.push(get(&i, &format!("i{ci}_{di}"))?);
        }
        out.yield_pairs.push(prow);
        out.yield_images.push(irow);
    }
    Ok(Some(out))
}

/// One row of `scores` as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Score {
    /// `mllm` or `vlm`.
    pub kind: String,
    /// The benchmark.
    pub benchmark: String,
    /// The model.
    pub model: String,
    /// The pattern, or `all`.
    pub pattern: String,
    /// Items.
    pub questions: i64,
    /// Pairs.
    pub pairs: i64,
    /// Percent.
    pub question_accuracy: Option<f64>,
    /// Percent.
    pub pair_accuracy: Option<f64>,
    /// Interval of question accuracy.
    pub question_interval: Option<(f64, f64)>,
    /// Interval of pair accuracy.
    pub pair_interval: Option<(f64, f64)>,
    /// How the intervals were computed.
    pub interval: Option<String>,
    /// The grader.
    pub grader: String,
    /// The template.
    pub template: String,
    /// The labels.
    pub labels: String,
}

/// One row of `correlations`.
#[derive(Clone, Debug, Serialize)]
pub struct Corr {
    /// Encoder or group.
    pub encoder: String,
    /// The MLLM.
    pub mllm: String,
    /// `pair` or `question`.
    pub metric: String,
    /// Pearson's r.
    pub pearson: Option<f64>,
    /// Its interval.
    pub pearson_interval: Option<(f64, f64)>,
    /// Spearman's rho.
    pub spearman: Option<f64>,
    /// Patterns compared.
    pub n: i64,
    /// How the interval was computed.
    pub interval: Option<String>,
}

/// The settings of one evaluation, from its answers.
#[derive(Clone, Debug, Serialize)]
pub struct Setting {
    /// `mllm` or `vlm`.
    pub kind: String,
    /// The benchmark.
    pub benchmark: String,
    /// The model.
    pub model: String,
    /// The prompt template's name.
    pub template: String,
    /// The grader.
    pub grader: String,
    /// Labels used.
    pub labels: String,
    /// Decoding settings (JSON).
    pub settings: String,
    /// The endpoint.
    pub endpoint: String,
    /// Items.
    pub items: i64,
    /// One prompt as sent.
    pub example_prompt: String,
}

/// The evaluations of a run root.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Evaluations {
    /// Every `scores` row.
    pub scores: Vec<Score>,
    /// Every `correlations` row.
    pub correlations: Vec<Corr>,
    /// Every evaluation's settings.
    pub settings: Vec<Setting>,
}

fn pair_of(lo: Option<f64>, hi: Option<f64>) -> Option<(f64, f64)> {
    Some((lo?, hi?))
}

/// Reads `scores`, `correlations` and the settings in `answers`.
pub async fn evaluations(t: &Tables) -> Result<Evaluations> {
    let mut out = Evaluations::default();
    if t.has("scores") {
        for b in &t
            .rows("SELECT * FROM scores ORDER BY kind, model, benchmark, pattern")
            .await?
        {
            let s = |n| strs(b, n);
            let (kind, bench, model, pattern) =
                (s("kind")?, s("benchmark")?, s("model")?, s("pattern")?);
            let (grader, template, labels) = (s("grader")?, s("template")?, s("labels")?);
            let has = |n: &str| b.column_by_name(n).is_some();
            let opt = |n: &str| -> Result<Vec<Option<f64>>> {
                if has(n) {
                    f64s(b, n)
                } else {
                    Ok(vec![None; b.num_rows()])
                }
            };
            let (ql, qh, pl, ph) = (
                opt("question_accuracy_low")?,
                opt("question_accuracy_high")?,
                opt("pair_accuracy_low")?,
                opt("pair_accuracy_high")?,
            );
            let interval = if has("interval_method") {
                s("interval_method")?
            } else {
                vec![None; b.num_rows()]
            };
            let (qa, pa) = (f64s(b, "question_accuracy")?, f64s(b, "pair_accuracy")?);
            let (nq, np) = (i64s(b, "questions")?, i64s(b, "pairs")?);
            for i in 0..b.num_rows() {
                let text = |v: &[Option<String>]| v[i].clone().unwrap_or_default();
                out.scores.push(Score {
                    kind: text(&kind),
                    benchmark: text(&bench),
                    model: text(&model),
                    pattern: text(&pattern),
                    questions: nq[i].unwrap_or(0),
                    pairs: np[i].unwrap_or(0),
                    question_accuracy: qa[i],
                    pair_accuracy: pa[i],
                    question_interval: pair_of(ql[i], qh[i]),
                    pair_interval: pair_of(pl[i], ph[i]),
                    interval: interval[i].clone(),
                    grader: text(&grader),
                    template: text(&template),
                    labels: text(&labels),
                });
            }
        }
    }
    if t.has("correlations") {
        for b in &t
            .rows("SELECT * FROM correlations ORDER BY encoder, mllm")
            .await?
        {
            let has = |n: &str| b.column_by_name(n).is_some();
            let (enc, mllm, metric) = (strs(b, "encoder")?, strs(b, "mllm")?, strs(b, "metric")?);
            let (r, rho, n) = (f64s(b, "pearson")?, f64s(b, "spearman")?, i64s(b, "n")?);
            let none = vec![None; b.num_rows()];
            let (lo, hi) = if has("pearson_low") {
                (f64s(b, "pearson_low")?, f64s(b, "pearson_high")?)
            } else {
                (none.clone(), none.clone())
            };
            let interval = if has("interval_method") {
                strs(b, "interval_method")?
            } else {
                vec![None; b.num_rows()]
            };
            for i in 0..b.num_rows() {
                out.correlations.push(Corr {
                    encoder: enc[i].clone().unwrap_or_default(),
                    mllm: mllm[i].clone().unwrap_or_default(),
                    metric: metric[i].clone().unwrap_or_default(),
                    pearson: r[i],
                    pearson_interval: pair_of(lo[i], hi[i]),
                    spearman: rho[i],
                    n: n[i].unwrap_or(0),
                    interval: interval[i].clone(),
                });
            }
        }
    }
    if t.has("answers") {
        for b in &t
            .rows(
                "SELECT kind, benchmark, model, template, grader, labels, settings, endpoint, \
                 count(*) AS items, min(prompt) AS example_prompt FROM answers \
                 GROUP BY kind, benchmark, model, template, grader, labels, settings, endpoint \
                 ORDER BY kind, model, benchmark",
            )
            .await?
        {
            let cols: Vec<Vec<Option<String>>> = [
                "kind",
                "benchmark",
                "model",
                "template",
                "grader",
                "labels",
                "settings",
                "endpoint",
                "example_prompt",
            ]
            .iter()
            .map(|c| strs(b, c))
            .collect::<Result<_>>()?;
            let items = i64s(b, "items")?;
            for i in 0..b.num_rows() {
                let v = |k: usize| cols[k][i].clone().unwrap_or_default();
                out.settings.push(Setting {
                    kind: v(0),
                    benchmark: v(1),
                    model: v(2),
                    template: v(3),
                    grader: v(4),
                    labels: v(5),
                    settings: v(6),
                    endpoint: v(7),
                    items: items[i].unwrap_or(0),
                    example_prompt: v(8),
                });
            }
        }
    }
    Ok(out)
}
