//! What the report shows, read from the run root's tables with SQL: the mined pairs (streamed,
//! with captions, duplicate counts and connected components), the candidates' similarity
//! distribution and yield grid (aggregated by DataFusion, so no candidate is held in memory),
//! and the evaluations' scores, intervals, correlations and settings.

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sql;

/// A session over the run root and the names of its tables.
pub struct Tables {
    /// The DataFusion session.
    pub ctx: SessionContext,
    /// Registered table names.
    pub names: Vec<String>,
    /// The run root, for the stage records.
    pub root: Option<crate::storage::Location>,
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
    /// `a`'s near-duplicate group, if it is in one.
    pub a_group: Option<i64>,
    /// `b`'s group.
    pub b_group: Option<i64>,
    /// Images in `a`'s group (1 for an image in none).
    pub a_size: u64,
    /// Images in `b`'s group.
    pub b_size: u64,
    /// The pairs between the two groups this row stands for (1 for a pair of lone images).
    pub member_pairs: u64,
}

/// The near-duplicate groups as the report shows them (from the `groups` table), and the
/// counts of pairs and group pairs.
#[derive(Debug, Default)]
pub struct Groups {
    /// Images per group, by group id (0 is the largest).
    pub sizes: Vec<u64>,
    /// The listed groups' (the largest few) representatives and some members, sorted.
    pub members: Vec<Vec<String>>,
    /// Pairs with a member in each listed group.
    pub pairs_of: Vec<u64>,
    /// Pairs in the table.
    pub pairs: u64,
    /// Rows of `group_pairs`: pairs of groups (an image in no group is a group of one).
    pub group_pairs: u64,
}

/// The groups, their sizes and the largest `listed` in detail; memory grows with the number
/// of groups, never with the pairs (the counts are DataFusion aggregates).
pub async fn groups(t: &Tables, listed: usize) -> Result<Groups> {
    let mut out = Groups::default();
    let count = |q: &'static str| async move {
        let r = t.rows(q).await?;
        Ok::<u64, Error>(i64s(&r[0], "n")?[0].unwrap_or(0).max(0) as u64)
    };
    out.pairs = count("SELECT count(*) AS n FROM pairs").await?;
    out.group_pairs = count("SELECT count(*) AS n FROM group_pairs").await?;
    if !t.has("groups") {
        return Ok(out);
    }
    for b in &t
        .rows("SELECT \"group\" AS g, max(size) AS size FROM groups GROUP BY \"group\" ORDER BY \"group\"")
        .await?
    {
        out.sizes.extend(i64s(b, "size")?.into_iter().map(|s| s.unwrap_or(0).max(0) as u64));
    }
    let listed = listed.min(out.sizes.len());
    out.members = vec![Vec::new(); listed];
    out.pairs_of = vec![0; listed];
    for b in &t
        .rows(&format!(
            "SELECT \"group\" AS g, key FROM (SELECT \"group\", key, row_number() OVER (PARTITION BY \"group\" ORDER BY key) AS r FROM groups WHERE \"group\" < {listed}) WHERE r <= 8"
        ))
        .await?
    {
        let (g, k) = (i64s(b, "g")?, strs(b, "key")?);
        for i in 0..b.num_rows() {
            if let (Some(g), Some(k)) = (g[i], k[i].clone()) {
                out.members[g as usize].push(k);
            }
        }
    }
    for m in &mut out.members {
        m.sort();
    }
    for b in &t
        .rows(&format!(
            "SELECT g, count(*) AS n FROM (SELECT a_group AS g FROM pairs WHERE a_group < {listed} \
             UNION ALL SELECT b_group AS g FROM pairs WHERE b_group < {listed} AND (a_group IS NULL OR a_group <> b_group)) \
             GROUP BY g"
        ))
        .await?
    {
        let (g, n) = (i64s(b, "g")?, i64s(b, "n")?);
        for i in 0..b.num_rows() {
            if let Some(g) = g[i] {
                out.pairs_of[g as usize] = n[i].unwrap_or(0).max(0) as u64;
            }
        }
    }
    Ok(out)
}

/// The first `limit` rows of the gallery, most CLIP-blind first: one per pair of near-duplicate
/// groups (`group_pairs`, its most blind member pair), or every pair with `every_pair`; with
/// captions and duplicate counts, as a stream of batches for `parse_pairs`.
pub async fn pairs(
    t: &Tables,
    limit: usize,
    every_pair: bool,
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
    let source = match every_pair {
        true => "SELECT q.*, q.a_group_size AS a_size, q.b_group_size AS b_size, CAST(1 AS BIGINT) AS member_pairs FROM pairs q",
        false => "SELECT * FROM group_pairs",
    };
    let query = format!(
        "{with}SELECT p.a, p.b, p.a_uri, p.b_uri, p.clip_sim, p.dino_sim, p.a_group, p.b_group, \
         p.a_size, p.b_size, p.member_pairs, {cap_a}, {cap_b}, {}, {} \
         FROM ({source}) p {cap_join} {joins} \
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
    let (ag, bg) = (i64s(b, "a_group")?, i64s(b, "b_group")?);
    let (asz, bsz, mp) = (
        i64s(b, "a_size")?,
        i64s(b, "b_size")?,
        i64s(b, "member_pairs")?,
    );
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
            a_group: ag[i],
            b_group: bg[i],
            a_size: asz[i].unwrap_or(1).max(1) as u64,
            b_size: bsz[i].unwrap_or(1).max(1) as u64,
            member_pairs: mp[i].unwrap_or(1).max(1) as u64,
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
    /// The candidates' recall as `candidates` measured it (approximate layouts), if it did.
    pub recall: Option<crate::table::records::RecallCommit>,
}

/// Bins of the density plot along each axis, at most.
pub const DENSITY_BINS: usize = 60;

/// Aggregates the filter units' `similarity_grid` and `image_minima` (never the candidates
/// themselves): the density of (CLIP, DINOv2) similarity and the yield at every (CLIP min,
/// DINOv2 max) of the grids, exact where the grids' values lie on the aggregates' grids.
/// `None` when the root has no candidates.
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
    if let Some(root) = &t.root {
        let recall = crate::table::Catalog::new(root)
            .record_of::<crate::table::records::RecallCommit>("")
            .await;
        out.recall = recall.ok().flatten().map(|(_, r)| r);
    }
    if candidates == 0 || !t.has("similarity_grid") {
        return Ok(Some(out));
    }
    let grid = similarity_grid(t).await?;
    out.with_dino = grid.iter().map(|g| g.2).sum();
    if out.with_dino == 0 {
        return Ok(Some(out));
    }
    out.density(&grid);
    out.clip_grid = clip_grid.to_vec();
    out.dino_grid = dino_grid.to_vec();
    let (per_key, image_sums) = out.yield_pairs(&grid)?;
    if image_sums.is_empty() || !t.has("image_minima") {
        return Ok(Some(out));
    }
    // An image is in the yield at (c, d) when some pair of it has clip > c and dino < d: its
    // smallest DINOv2 similarity over the CLIP bins above c is below d. One row per image that
    // has candidates, aggregated by DataFusion (never the candidates).
    let query = format!(
        "WITH m AS (SELECT key, {} FROM image_minima GROUP BY key) SELECT {} FROM m",
        per_key.join(", "),
        image_sums.join(", ")
    );
    let i = image_yield(t, &query).await?;
    for ci in 0..clip_grid.len() {
        let mut irow = Vec::new();
        for di in 0..dino_grid.len() {
            irow.push(i64s(&i[0], &format!("i{ci}_{di}"))?[0].unwrap_or(0).max(0) as u64);
        }
        out.yield_images.push(irow);
    }
    Ok(Some(out))
}

/// The summed `similarity_grid`: (CLIP bin, DINOv2 bin, candidates).
async fn similarity_grid(t: &Tables) -> Result<Vec<(i64, i64, u64)>> {
    let cells = t
        .rows("SELECT clip_bin, dino_bin, sum(n) AS n FROM similarity_grid GROUP BY clip_bin, dino_bin")
        .await?;
    let mut grid: Vec<(i64, i64, u64)> = Vec::new();
    for b in &cells {
        let (c, d, n) = (i64s(b, "clip_bin")?, i64s(b, "dino_bin")?, i64s(b, "n")?);
        for k in 0..b.num_rows() {
            grid.push((
                c[k].unwrap_or(0),
                d[k].unwrap_or(0),
                n[k].unwrap_or(0).max(0) as u64,
            ));
        }
    }
    Ok(grid)
}

/// The image yield's query, in a session of its own that spills the per-image aggregate to
/// disk past IMAGE_MINIMA_MEMORY (one row per image with candidates), where the root is known.
async fn image_yield(t: &Tables, query: &str) -> Result<Vec<RecordBatch>> {
    match &t.root {
        Some(root) => {
            let ctx = sql::spilling_session(root, IMAGE_MINIMA_MEMORY)?;
            let paths = crate::table::Catalog::new(root)
                .paths(&crate::table::MINIMA, crate::table::Generations::All)
                .await?;
            sql::register_objects(&ctx, root, "image_minima", &paths).await?;
            let df = ctx
                .sql(query)
                .await
                .map_err(|e| Error::table("image_minima", e))?;
            sql::collect(df).await
        }
        None => t.rows(query).await,
    }
}

impl Thresholds {
    /// The density plot of the grid: the plotted ranges start at a hundredth (CLIP) or a
    /// tenth (DINOv2) below the lowest value, and each plotted bin is a whole number of the
    /// grid's bins.
    fn density(&mut self, grid: &[(i64, i64, u64)]) {
        use crate::sift::aggregates::{CLIP_STEPS, DINO_STEPS};
        let out = self;
        let c_min = grid.iter().map(|g| g.0).min().unwrap_or(0);
        let d_min = grid.iter().map(|g| g.1).min().unwrap_or(0);
        let c_lo = (c_min.div_euclid(10) * 10).min(CLIP_STEPS as i64 - 10);
        let d_lo = (d_min.div_euclid(10) * 10).clamp(-(DINO_STEPS as i64), DINO_STEPS as i64 - 10);
        let per = |lo: i64, steps: i64| ((steps - lo) as usize).div_ceil(DENSITY_BINS).max(1);
        let (cw, dw) = (per(c_lo, CLIP_STEPS as i64), per(d_lo, DINO_STEPS as i64));
        let (nc, nd) = (
            ((CLIP_STEPS as i64 - c_lo) as usize).div_ceil(cw),
            ((DINO_STEPS as i64 - d_lo) as usize).div_ceil(dw),
        );
        out.clip_range = (
            c_lo as f64 / CLIP_STEPS as f64,
            (c_lo + (nc * cw) as i64) as f64 / CLIP_STEPS as f64,
        );
        out.dino_range = (
            d_lo as f64 / DINO_STEPS as f64,
            (d_lo + (nd * dw) as i64) as f64 / DINO_STEPS as f64,
        );
        out.density = vec![vec![0; nd]; nc];
        for (c, d, n) in grid {
            let i = (((c - c_lo).max(0) as usize) / cw).min(nc - 1);
            let j = (((d - d_lo).max(0) as usize) / dw).min(nd - 1);
            out.density[i][j] += n;
        }
    }

    /// The pair yield at every (CLIP min, DINOv2 max) of the grids; the image yield's
    /// per-image columns and sums, for the query over `image_minima`.
    fn yield_pairs(&mut self, grid: &[(i64, i64, u64)]) -> Result<(Vec<String>, Vec<String>)> {
        use crate::sift::aggregates::{on_grid, CLIP_STEPS, COARSE_STEPS, DINO_STEPS};
        let out = self;
        let (clip_grid, dino_grid) = (out.clip_grid.clone(), out.dino_grid.clone());
        let mut per_key = Vec::new();
        let mut image_sums = Vec::new();
        for (ci, c) in clip_grid.iter().enumerate() {
            let (Some(fine), Some(coarse)) = (on_grid(*c, CLIP_STEPS), on_grid(*c, COARSE_STEPS))
            else {
                return Err(Error::Usage(format!(
                "clip-grid {c}: the yield is counted on CLIP thresholds in hundredths (0.95, 0.96, ...)"
            )));
            };
            let mut prow = Vec::new();
            per_key.push(format!(
                "min(CASE WHEN clip_bin >= {coarse} THEN min_dino END) AS m{ci}"
            ));
            for (di, d) in dino_grid.iter().enumerate() {
                let Some(j) = on_grid(*d, DINO_STEPS) else {
                    return Err(Error::Usage(format!(
                    "dino-grid {d}: the yield is counted on DINOv2 thresholds in hundredths (0.55, 0.6, ...)"
                )));
                };
                prow.push(
                    grid.iter()
                        .filter(|g| g.0 >= fine as i64 && g.1 < j as i64)
                        .map(|g| g.2)
                        .sum(),
                );
                image_sums.push(format!(
                    "sum(CASE WHEN m{ci} < {} THEN 1 ELSE 0 END) AS i{ci}_{di}",
                    literal(*d)
                ));
            }
            out.yield_pairs.push(prow);
        }
        Ok((per_key, image_sums))
    }
}

/// Memory the image yield's per-image aggregate may hold before it spills to disk.
const IMAGE_MINIMA_MEMORY: usize = 512 << 20;

fn literal(v: f64) -> String {
    format!("{v:?}")
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
    /// Answer bias: percent of answered items that chose (a).
    pub a_share: Option<f64>,
    /// With repeats: agreement across samples and the share of items that flip.
    pub agreement: Option<(f64, f64)>,
    /// NaturalBench's Q-Acc, I-Acc and G-Acc, where they apply.
    pub natural: Option<(f64, f64, f64)>,
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
        out.scores = scores(t).await?;
    }
    if t.has("correlations") {
        out.correlations = correlations(t).await?;
    }
    if t.has("answers") {
        out.settings = settings(t).await?;
    }
    Ok(out)
}

/// Every row of `scores`, in the pages' order.
async fn scores(t: &Tables) -> Result<Vec<Score>> {
    let mut out = Evaluations::default();
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
        let a_share = opt("a_share")?;
        let (agree, flips) = (opt("agreement")?, opt("flip_share")?);
        let (qn, inn, gn) = (opt("q_acc")?, opt("i_acc")?, opt("g_acc")?);
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
                a_share: a_share[i],
                agreement: agree[i].zip(flips[i]),
                natural: qn[i].zip(inn[i]).zip(gn[i]).map(|((q, im), g)| (q, im, g)),
            });
        }
    }
    Ok(out.scores)
}

/// Every row of `correlations`.
async fn correlations(t: &Tables) -> Result<Vec<Corr>> {
    let mut out = Evaluations::default();
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
    Ok(out.correlations)
}

/// The settings of each evaluation in `answers`, with an example prompt.
async fn settings(t: &Tables) -> Result<Vec<Setting>> {
    let mut out = Evaluations::default();
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
    Ok(out.settings)
}
