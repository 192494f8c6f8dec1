//! Pipeline specs (`pipelines/*.toml`): what a run reads, where it writes, which encoders and
//! stages, and their settings. Parsing is strict (`deny_unknown_fields`, kebab-case);
//! resolving checks everything (paths, manifests, encoders, dimensions) and reports every
//! problem at once, before any data moves. Relative paths resolve against the spec's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::embed::EmbedParams;
use crate::encoder::preprocess::DecodeParams;
use crate::encoder::runtime::Device;
use crate::encoder::{self, OnnxEncoder, SessionParams};
use crate::error::{Error, Result};
use crate::eval::mllm::MllmEntry;
use crate::mine::ann::{IndexParams, Quantization};
use crate::mine::candidates::{CandidateParams, Method};
use crate::mine::partition::PartitionParams;
use crate::stage::Stage;
use crate::storage::Location;
use crate::synth::{SynthFormat, SynthParams};
use crate::table::schema::FloatType;

/// The names of the stages a spec can name, in pipeline order (`Stage::SPEC`).
fn spec_stage_names() -> Vec<&'static str> {
    Stage::SPEC.iter().map(|s| s.name()).collect()
}

/// The spec stages `stages` names (unknown names left out: `resolve` reports them).
fn named(stages: &[String]) -> Vec<Stage> {
    stages
        .iter()
        .filter_map(|s| Stage::parse(s).filter(|st| Stage::SPEC.contains(st)))
        .collect()
}

/// A pipeline spec as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Spec {
    /// Input, output and stages.
    pub run: RunSection,
    /// The two encoders and where they run.
    pub encoders: EncodersSection,
    /// Embed settings.
    #[serde(default)]
    pub embed: EmbedSection,
    /// Synthetic corpus settings (the `synth` stage).
    #[serde(default)]
    pub synth: SynthSection,
    /// Index settings.
    #[serde(default)]
    pub index: IndexSection,
    /// Partition settings.
    #[serde(default)]
    pub partition: PartitionSection,
    /// Candidates settings.
    #[serde(default)]
    pub candidates: CandidatesSection,
    /// Filter settings.
    #[serde(default)]
    pub filter: FilterSection,
    /// Evaluation settings (the `eval` stage).
    #[serde(default)]
    pub eval: EvalSection,
    /// Report settings (the `report` stage).
    #[serde(default)]
    pub report: ReportSection,
}

/// `[report]`: where the site goes and how much it shows; every field has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ReportSection {
    /// The site's folder or URL (default: `<root>-report`, beside the run root).
    pub out: Option<String>,
    /// Pairs in the gallery at most.
    pub max_pairs: usize,
    /// Pairs whose images get thumbnails.
    pub thumbnails: usize,
    /// Longest side of a thumbnail.
    pub thumb_size: u32,
}

impl Default for ReportSection {
    fn default() -> Self {
        let d = crate::report::ReportParams::default();
        ReportSection {
            out: None,
            max_pairs: d.max_pairs,
            thumbnails: d.thumbnails,
            thumb_size: d.thumbs.size,
        }
    }
}

impl ReportSection {
    /// The report's settings.
    pub fn params(&self) -> crate::report::ReportParams {
        let d = crate::report::ReportParams::default();
        crate::report::ReportParams {
            max_pairs: self.max_pairs,
            thumbnails: self.thumbnails,
            thumbs: crate::report::thumbs::ThumbParams {
                size: self.thumb_size.max(16),
                ..d.thumbs.clone()
            },
            ..d
        }
    }

    /// Where the site goes for run root `root`.
    pub fn out_for(&self, root: &str) -> String {
        self.out
            .clone()
            .unwrap_or_else(|| format!("{}-report", root.trim_end_matches('/')))
    }
}

/// `[eval]`: which benchmarks, which encoders and MLLMs, and how to correlate them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EvalSection {
    /// Generate MMVP-VLM and MMVP benchmarks from the synthetic corpus's truth file (under
    /// `<root>/benchmarks/`) and use them where no benchmark is named.
    #[serde(default)]
    pub synthetic_benchmarks: bool,
    /// Colour names for the synthetic benchmarks' statements.
    #[serde(default)]
    pub colour_names: Option<String>,
    /// The MMVP-VLM benchmark (folder or URL).
    #[serde(default)]
    pub vlm_benchmark: Option<String>,
    /// The MMVP benchmark (folder or URL).
    #[serde(default)]
    pub mllm_benchmark: Option<String>,
    /// Vision encoders to score: `[[eval.vlm]]`.
    #[serde(default)]
    pub vlm: Vec<VlmEntry>,
    /// MLLMs to ask: `[[eval.mllm]]`.
    #[serde(default)]
    pub mllm: Vec<MllmEntry>,
    /// `[eval.correlate]`.
    #[serde(default)]
    pub correlate: CorrelateSection,
}

/// One `[[eval.vlm]]`: an image tower and its text tower.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VlmEntry {
    /// The image tower's manifest.
    pub image: String,
    /// The text tower's manifest.
    pub text: String,
    /// Bootstrap resamples for the scores' intervals (0: none).
    #[serde(default = "crate::eval::mllm::default_bootstrap")]
    pub bootstrap: u32,
    /// The bootstrap's seed.
    #[serde(default)]
    pub bootstrap_seed: u64,
}

/// `[eval.correlate]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CorrelateSection {
    /// Encoder groups averaged before correlating: `{ clip = ["a", "b", "c"] }`.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Extra score CSVs (e.g. published numbers).
    pub scores: Vec<String>,
    /// `pair` or `question`.
    pub metric: crate::eval::Metric,
    /// Draw PNG plots.
    pub plots: bool,
}

impl Default for CorrelateSection {
    fn default() -> Self {
        CorrelateSection {
            groups: Default::default(),
            scores: Vec::new(),
            metric: Default::default(),
            plots: true,
        }
    }
}

/// `[index]`; every field has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct IndexSection {
    /// `f16`, `f32` or `i8`.
    pub quantization: Quantization,
    /// HNSW connectivity (M).
    pub connectivity: usize,
    /// Expansion while adding.
    pub expansion_add: usize,
    /// Expansion while searching.
    pub expansion_search: usize,
    /// Build threads; 0 means one per core.
    pub threads: usize,
}

impl Default for IndexSection {
    fn default() -> Self {
        let p = IndexParams::default();
        IndexSection {
            quantization: p.quantization,
            connectivity: p.connectivity,
            expansion_add: p.expansion_add,
            expansion_search: p.expansion_search,
            threads: p.threads,
        }
    }
}

/// `[candidates]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CandidatesSection {
    /// CLIP threshold (strict `>`).
    pub clip_min: f32,
    /// First k.
    pub k: usize,
    /// `partitioned` (the cells of the partition stage), `index` or `exact`.
    pub method: Method,
    /// Older specs' way to say `method = "exact"`.
    pub exact: bool,
}

impl Default for CandidatesSection {
    fn default() -> Self {
        let p = CandidateParams::default();
        CandidatesSection {
            clip_min: p.clip_min,
            k: p.k,
            method: p.method,
            exact: false,
        }
    }
}

/// `[partition]`; every field has a default. Its CLIP threshold is `[candidates] clip-min`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PartitionSection {
    /// Cells (default about sqrt(n)).
    pub cells: Option<usize>,
    /// Vectors sampled to train the centroids.
    pub sample: Option<usize>,
    /// Seed of the sample and of k-means.
    pub seed: u64,
    /// Guest copies capped at the K nearest cells (approximate).
    pub probe: Option<usize>,
    /// Cells whose block is estimated above this many rows are split.
    pub max_block_rows: usize,
    /// Exact placement is given up above this average copy factor.
    pub max_copies: f64,
    /// Demand exact placement (refuse above max-copies instead of choosing probes).
    pub exact: bool,
    /// The recall probes are chosen for when exact placement is impractical.
    pub target_recall: f64,
    /// Retrain when new vectors fit this much worse than the training sample.
    pub drift_max: f64,
    /// Train new centroids on every run.
    pub retrain: bool,
}

impl Default for PartitionSection {
    fn default() -> Self {
        let p = PartitionParams::default();
        PartitionSection {
            cells: p.cells,
            sample: p.sample,
            seed: p.seed,
            probe: p.probe,
            max_block_rows: p.max_block_rows,
            max_copies: p.max_copies,
            exact: p.exact,
            target_recall: p.target_recall,
            drift_max: p.drift_max,
            retrain: p.retrain,
        }
    }
}

/// `[filter]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct FilterSection {
    /// DINOv2 threshold (strict `<`).
    pub dino_max: f32,
    /// Near-duplicate threshold (candidates at or above it are one group).
    pub dup_min: f32,
    /// Run the filter query on this Ballista cluster (`df://HOST:PORT`).
    pub cluster: Option<String>,
    /// The budget of a filter unit of work, in MiB.
    pub work_mib: u64,
}

impl Default for FilterSection {
    fn default() -> Self {
        FilterSection {
            dino_max: 0.6,
            dup_min: crate::mine::filter::DEFAULT_DUP_MIN,
            cluster: None,
            work_mib: crate::mine::filter::DEFAULT_WORK_MIB,
        }
    }
}

/// `[run]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunSection {
    /// Input URL or path: image folders, prefixes or webdataset tars (only the synth, embed
    /// and synthetic-benchmark steps read it).
    #[serde(default)]
    pub input: String,
    /// Run root URL or path: everything the run writes goes under it.
    pub root: String,
    /// Stages to run, in order (see [`Stage::SPEC`]).
    pub stages: Vec<String>,
}

/// `[encoders]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EncodersSection {
    /// The CLIP manifest.
    pub clip: PathBuf,
    /// The DINOv2 manifest.
    pub dino: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// ONNX Runtime intra-op threads per encoder; 0 lets ONNX Runtime choose.
    #[serde(default)]
    pub intra_threads: usize,
}

fn default_device() -> String {
    "cpu".into()
}

/// `[embed]`; every field has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EmbedSection {
    /// Images per inference batch.
    pub batch_size: usize,
    /// Decode threads; 0 means one per core.
    pub decode_threads: usize,
    /// Objects fetched at once.
    pub fetch_concurrency: usize,
    /// `f32` or `f16` embeddings.
    pub dtype: FloatType,
    /// Decompression-bomb limit in pixels.
    pub max_pixels: u64,
    /// Decode large JPEGs at reduced DCT scale.
    pub dct_scaling: bool,
    /// Rows per Parquet row group.
    pub rows_per_group: usize,
    /// `clip,dino` (both on every image) or `clip` (DINOv2 in the `dino` stage, on
    /// candidate images only).
    pub encoders: String,
    /// `auto`, `folder`, `tar`, `parquet` or `manifest`.
    pub input_format: crate::ingest::InputFormat,
    /// img2dataset Parquet: the image column.
    pub image_column: Option<String>,
    /// img2dataset Parquet and manifests: the key column.
    pub key_column: String,
    /// Manifests: rows per shard.
    pub rows_per_shard: Option<u64>,
    /// Seconds one HTTP fetch may take.
    pub fetch_timeout: f64,
    /// Retries of a failed fetch.
    pub fetch_retries: usize,
    /// What manifests may name besides http(s) URLs and objects under their folder.
    pub allow_uri: Vec<crate::ingest::fetch::UriKind>,
    /// HTTP to non-public addresses.
    pub allow_private: bool,
    /// The largest image read, in bytes.
    pub max_bytes: u64,
}

impl Default for EmbedSection {
    fn default() -> Self {
        let p = EmbedParams::default();
        EmbedSection {
            batch_size: p.batch_size,
            decode_threads: p.decode_threads,
            fetch_concurrency: p.fetch_concurrency,
            dtype: p.float,
            max_pixels: p.decode.max_pixels,
            dct_scaling: p.decode.dct_scaling,
            rows_per_group: p.rows_per_group,
            encoders: "clip,dino".into(),
            input_format: p.ingest.format,
            image_column: None,
            key_column: p.ingest.key_column.clone(),
            rows_per_shard: None,
            fetch_timeout: p.ingest.fetch.timeout.as_secs_f64(),
            fetch_retries: p.ingest.fetch.retries,
            allow_uri: Vec::new(),
            allow_private: false,
            max_bytes: p.ingest.fetch.max_bytes,
        }
    }
}

/// `[synth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SynthSection {
    /// `folder` or `tar`.
    pub format: SynthFormat,
    /// Images per shard.
    pub per_shard: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthSection {
    fn default() -> Self {
        let p = SynthParams::default();
        SynthSection {
            format: p.format,
            per_shard: p.per_shard,
            seed: p.seed,
        }
    }
}

impl EmbedSection {
    /// The stage parameters these settings describe.
    pub fn params(&self) -> EmbedParams {
        EmbedParams {
            batch_size: self.batch_size,
            decode_threads: self.decode_threads,
            fetch_concurrency: self.fetch_concurrency,
            float: self.dtype,
            decode: DecodeParams {
                max_pixels: self.max_pixels,
                dct_scaling: self.dct_scaling,
            },
            rows_per_group: self.rows_per_group,
            ingest: crate::ingest::IngestParams {
                format: self.input_format,
                image_column: self.image_column.clone(),
                key_column: self.key_column.clone(),
                rows_per_shard: self.rows_per_shard,
                fetch: crate::ingest::fetch::FetchParams {
                    concurrency: self.fetch_concurrency,
                    timeout: std::time::Duration::from_secs_f64(
                        self.fetch_timeout.clamp(0.001, 86_400.0),
                    ),
                    retries: self.fetch_retries,
                    allow: self.allow_uri.clone(),
                    allow_private: self.allow_private,
                    max_bytes: self.max_bytes,
                    ..Default::default()
                },
            },
            ..EmbedParams::default()
        }
    }

    /// True when the embed stage runs CLIP only.
    pub fn clip_only(&self) -> bool {
        self.encoders == "clip"
    }
}

/// A spec with everything checked and the encoders loaded.
pub struct Resolved {
    /// The spec as parsed (with resolved paths).
    pub spec: Spec,
    /// The input location.
    pub input: Location,
    /// The run root.
    pub root: Location,
    /// Stages to run, in order.
    pub stages: Vec<Stage>,
    /// The CLIP encoder, loaded when the embed stage runs.
    pub clip: Option<OnnxEncoder>,
    /// The DINOv2 encoder, loaded when the embed (both encoders) or dino stage runs.
    pub dino: Option<OnnxEncoder>,
    /// Embed settings.
    pub embed: EmbedParams,
    /// Index settings.
    pub index: IndexParams,
    /// Partition settings.
    pub partition: PartitionParams,
    /// Candidates settings.
    pub candidates: CandidateParams,
    /// The DINOv2 threshold of the filter stage.
    pub dino_max: f32,
    /// The near-duplicate threshold of the filter stage.
    pub dup_min: f32,
    /// The Ballista cluster the filter query runs on, if any.
    pub cluster: Option<String>,
    /// The filter's unit-of-work budget, in MiB.
    pub work_mib: u64,
}

fn resolve_path(base: &Path, p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        p.to_string()
    } else {
        base.join(p).to_string_lossy().into_owned()
    }
}

fn resolve_eval_paths(base: &Path, e: &mut EvalSection) {
    let fix = |p: &mut String| *p = resolve_path(base, p);
    for o in [
        &mut e.colour_names,
        &mut e.vlm_benchmark,
        &mut e.mllm_benchmark,
    ]
    .into_iter()
    .flatten()
    {
        fix(o);
    }
    for v in &mut e.vlm {
        fix(&mut v.image);
        fix(&mut v.text);
    }
    for m in &mut e.mllm {
        if !matches!(m.template.as_str(), "paper" | "letter") {
            fix(&mut m.template);
        }
        if let Some(p) = &mut m.patterns {
            fix(p);
        }
    }
    for c in &mut e.correlate.scores {
        fix(c);
    }
}

/// The eval section's own problems (files exist, names parse, a benchmark for each kind).
fn check_eval(spec: &Spec, problems: &mut Vec<String>) {
    let e = &spec.eval;
    if !named(&spec.run.stages).contains(&Stage::Eval) {
        return;
    }
    let local_missing = |p: &str| !p.contains("://") && !Path::new(p).exists();
    for (i, v) in e.vlm.iter().enumerate() {
        for (what, p) in [("image", &v.image), ("text", &v.text)] {
            if local_missing(p) {
                problems.push(format!(
                    "[[eval.vlm]] #{}: {what} manifest {p} does not exist",
                    i + 1
                ));
            }
        }
    }
    if !e.vlm.is_empty() && e.vlm_benchmark.is_none() && !e.synthetic_benchmarks {
        problems
            .push("[eval] vlm-benchmark is not set (or set synthetic-benchmarks = true)".into());
    }
    if !e.mllm.is_empty() && e.mllm_benchmark.is_none() && !e.synthetic_benchmarks {
        problems
            .push("[eval] mllm-benchmark is not set (or set synthetic-benchmarks = true)".into());
    }
    for (what, b) in [
        ("vlm-benchmark", &e.vlm_benchmark),
        ("mllm-benchmark", &e.mllm_benchmark),
    ] {
        if let Some(b) = b
            .as_deref()
            .filter(|b| local_missing(&format!("{b}/Questions.csv")))
        {
            problems.push(format!(
                "[eval] {what}: {b}/Questions.csv does not exist; point it at the benchmark's folder"
            ));
        }
    }
    if e.synthetic_benchmarks && e.colour_names.as_deref().is_none_or(local_missing) {
        problems.push(
            "[eval] synthetic-benchmarks needs colour-names (models/tiny/colour-names.json)".into(),
        );
    }
    for (i, m) in e.mllm.iter().enumerate() {
        let at = format!("[[eval.mllm]] #{} ({})", i + 1, m.model);
        if let Err(err) = m.grader.parse::<crate::eval::grade::Grader>() {
            problems.push(format!("{at}: grader: {err}"));
        }
        if let Err(err) = crate::eval::mllm::Template::resolve(&m.template) {
            problems.push(format!("{at}: {err}"));
        }
        if m.grader == "judge" && m.judge_model.is_none() {
            problems.push(format!("{at}: the judge grader needs judge-model"));
        }
        if m.concurrency == 0 {
            problems.push(format!("{at}: concurrency must be at least 1"));
        }
        if url::Url::parse(&m.base_url).is_err() {
            problems.push(format!("{at}: base-url {:?} is not a URL", m.base_url));
        }
    }
}

/// Parses a spec file (syntax and unknown keys only).
pub fn parse(path: &Path, text: &str) -> Result<Spec> {
    toml::from_str(text).map_err(|e| Error::Spec {
        path: path.to_path_buf(),
        problems: vec![e.to_string()],
    })
}

/// Checks every part of a spec and loads its encoders; all problems are reported together.
pub async fn resolve(path: &Path, mut spec: Spec) -> Result<Resolved> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut problems = Vec::new();
    if !spec.run.input.is_empty() {
        spec.run.input = resolve_path(&base, &spec.run.input);
    }
    spec.run.root = resolve_path(&base, &spec.run.root);
    spec.encoders.clip = PathBuf::from(resolve_path(&base, &spec.encoders.clip.to_string_lossy()));
    spec.encoders.dino = PathBuf::from(resolve_path(&base, &spec.encoders.dino.to_string_lossy()));

    resolve_eval_paths(&base, &mut spec.eval);
    if let Some(out) = &mut spec.report.out {
        *out = resolve_path(&base, out);
    }
    check_eval(&spec, &mut problems);

    let mut last = None;
    let known = spec_stage_names();
    for s in &spec.run.stages {
        match known.iter().position(|k| k == s) {
            None => problems.push(format!(
                "[run] stages: unknown stage {s:?}; known stages are {known:?}"
            )),
            Some(i) if last.is_some_and(|l| i <= l) => problems.push(format!(
                "[run] stages: {s:?} is out of order or repeated; the order is {known:?}"
            )),
            Some(i) => last = Some(i),
        }
    }
    if spec.run.stages.is_empty() {
        problems.push(
            "[run] stages is empty; name at least one of ".to_string() + &format!("{known:?}"),
        );
    }
    let stages = named(&spec.run.stages);
    let reads_input = stages.contains(&Stage::Synth)
        || stages.contains(&Stage::Embed)
        || spec.eval.synthetic_benchmarks;
    if spec.run.input.is_empty() && reads_input {
        problems.push(
            "[run] input is not set; the synth and embed stages and synthetic benchmarks need it"
                .into(),
        );
    }
    let input_url = if spec.run.input.is_empty() {
        &spec.run.root
    } else {
        &spec.run.input
    };
    let input = Location::open(input_url)
        .map_err(|e| problems.push(format!("[run] input: {e}")))
        .ok();
    let root = Location::open(&spec.run.root)
        .map_err(|e| problems.push(format!("[run] root: {e}")))
        .ok();
    let makes_input = stages.contains(&Stage::Synth);
    let embeds = stages.contains(&Stage::Embed);
    if let (Some(input), false, true) = (&input, makes_input, embeds) {
        if let Err(e) = crate::ingest::list_shards(input, &spec.embed.params().ingest).await {
            problems.push(format!("[run] input: {e}"));
        }
    }
    let device = spec
        .encoders
        .device
        .parse::<Device>()
        .map_err(|e| problems.push(format!("[encoders] device: {e}")))
        .ok();
    if spec.embed.batch_size == 0 {
        problems.push("[embed] batch-size must be at least 1".into());
    }
    if !matches!(spec.embed.encoders.as_str(), "clip,dino" | "clip") {
        problems.push(format!(
            "[embed] encoders {:?}: use \"clip,dino\" (both on every image) or \"clip\" (DINOv2 in the dino stage)",
            spec.embed.encoders
        ));
    }
    if spec.embed.fetch_timeout.is_nan() || spec.embed.fetch_timeout <= 0.0 {
        problems.push("[embed] fetch-timeout must be a positive number of seconds".into());
    }
    if spec.embed.fetch_concurrency == 0 {
        problems.push("[embed] fetch-concurrency must be at least 1".into());
    }
    if spec.index.connectivity < 2 {
        problems.push("[index] connectivity must be at least 2".into());
    }
    if !(spec.candidates.clip_min > -1.0 && spec.candidates.clip_min < 1.0) {
        problems.push(format!(
            "[candidates] clip-min {} must be between -1 and 1",
            spec.candidates.clip_min
        ));
    }
    if spec.candidates.k == 0 {
        problems.push("[candidates] k must be at least 1".into());
    }
    if !(-1.0..=1.0).contains(&spec.filter.dino_max) {
        problems.push(format!(
            "[filter] dino-max {} must be between -1 and 1",
            spec.filter.dino_max
        ));
    }
    if let Err(e) = crate::mine::filter::check_thresholds(spec.filter.dino_max, spec.filter.dup_min)
    {
        problems.push(format!("[filter] {e}"));
    }
    if let Some(url) = &spec.filter.cluster {
        if let Err(e) = crate::cluster::scheduler_url(url) {
            problems.push(format!("[filter] cluster: {e}"));
        }
    }
    if spec.synth.per_shard == 0 {
        problems.push("[synth] per-shard must be at least 1".into());
    }

    let has = |stage: Stage| stages.contains(&stage);
    let needs_clip = has(Stage::Embed);
    let needs_dino = (has(Stage::Embed) && !spec.embed.clip_only()) || has(Stage::Dino);
    let mut load = |what: &str, path: &Path, needed: bool| -> Option<OnnxEncoder> {
        if !needed {
            return None;
        }
        let manifest = encoder::load_manifest(path)
            .map_err(|e| problems.push(format!("[encoders] {what}: {e}")))
            .ok()?;
        let params = SessionParams {
            device: device?,
            intra_threads: spec.encoders.intra_threads,
        };
        OnnxEncoder::load(manifest, &params)
            .map_err(|e| problems.push(format!("[encoders] {what}: {e}")))
            .ok()
    };
    let clip = load("clip", &spec.encoders.clip, needs_clip);
    let dino = load("dino", &spec.encoders.dino, needs_dino);
    if !problems.is_empty() {
        return Err(Error::Spec {
            path: path.to_path_buf(),
            problems,
        });
    }
    let embed = spec.embed.params();
    let i = &spec.index;
    let index = IndexParams {
        quantization: i.quantization,
        connectivity: i.connectivity,
        expansion_add: i.expansion_add,
        expansion_search: i.expansion_search,
        threads: i.threads,
    };
    let candidates = CandidateParams {
        clip_min: spec.candidates.clip_min,
        k: spec.candidates.k,
        method: if spec.candidates.exact {
            Method::Exact
        } else {
            spec.candidates.method
        },
        ..Default::default()
    };
    let p = &spec.partition;
    let partition = PartitionParams {
        cells: p.cells,
        sample: p.sample,
        seed: p.seed,
        probe: p.probe,
        clip_min: spec.candidates.clip_min,
        retrain: p.retrain,
        max_block_rows: p.max_block_rows,
        max_copies: p.max_copies,
        exact: p.exact,
        target_recall: p.target_recall,
        drift_max: p.drift_max,
        ..Default::default()
    };
    let dino_max = spec.filter.dino_max;
    Ok(Resolved {
        index,
        partition,
        candidates,
        dino_max,
        dup_min: spec.filter.dup_min,
        cluster: spec.filter.cluster.clone(),
        work_mib: spec.filter.work_mib,
        stages: stages.clone(),
        input: input.expect("no problems"),
        root: root.expect("no problems"),
        clip,
        dino,
        embed,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_problem_is_reported_at_once() {
        let text = r#"
[run]
input = "memory://spec-test/nothing"
root = "memory://spec-test/root"
stages = ["embed", "sorcery"]

[encoders]
clip = "no/such/clip.toml"
dino = "no/such/dino.toml"
device = "tpu"

[embed]
batch-size = 0
"#;
        let spec = parse(Path::new("x.toml"), text).unwrap();
        let err = resolve(Path::new("x.toml"), spec)
            .await
            .err()
            .expect("problems");
        let Error::Spec { problems, .. } = &err else {
            panic!("{err}")
        };
        let all = problems.join("\n");
        for needle in ["sorcery", "input", "device", "batch-size", "clip", "dino"] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[tokio::test]
    async fn eval_problems_are_reported_with_the_rest() {
        let text = r#"
[run]
root = "memory://spec-eval/root"
stages = ["eval"]

[encoders]
clip = "c.toml"
dino = "d.toml"

[eval]
mllm-benchmark = "/no/such/MMVP"

[[eval.vlm]]
image = "/no/such/image.toml"
text = "/no/such/text.toml"

[[eval.mllm]]
base-url = "not a url"
model = "m"
grader = "psychic"
template = "/no/such/template.txt"
concurrency = 0
"#;
        let spec = parse(Path::new("x.toml"), text).unwrap();
        let Err(Error::Spec { problems, .. }) = resolve(Path::new("x.toml"), spec).await else {
            panic!("problems expected")
        };
        let all = problems.join("\n");
        for needle in [
            "image manifest",
            "text manifest",
            "vlm-benchmark is not set",
            "MMVP/Questions.csv does not exist",
            "grader",
            "template",
            "concurrency",
            "base-url",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        // An eval-only spec needs no input and no encoders loaded.
        assert!(!all.contains("[run] input"), "{all}");
    }

    #[test]
    fn the_filter_unit_of_work_budget_is_read_and_defaults_to_64_mib() {
        let base = "[run]\ninput='a'\nroot='b'\nstages=[]\n[encoders]\nclip='c'\ndino='d'\n";
        let text = format!("{base}[filter]\nwork-mib = 8\n");
        let spec = parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(spec.filter.work_mib, 8);
        let spec = parse(Path::new("x.toml"), base).unwrap();
        assert_eq!(spec.filter.work_mib, crate::mine::filter::DEFAULT_WORK_MIB);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse(
            Path::new("x.toml"),
            "[run]\ninput='a'\nroot='b'\nstages=[]\nbatch=3\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
