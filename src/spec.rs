//! Pipeline specs (`pipelines/*.toml`): what a run reads, where it writes, which encoders and
//! stages, and their settings. Parsing is strict (`deny_unknown_fields`, kebab-case);
//! resolving checks everything (paths, manifests, encoders, dimensions) and reports every
//! problem at once, before any data moves. Relative paths resolve against the spec's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::embed::EmbedParams;
use crate::encoder::runtime::Device;
use crate::encoder::{self, OnnxEncoder, SessionParams};
use crate::error::{Error, Result};
use crate::eval::mllm::MllmEntry;
use crate::mine::ann::IndexParams;
use crate::mine::candidates::CandidateParams;
use crate::mine::partition::PartitionParams;
use crate::sift::dino::DinoParams;
use crate::sift::filter::FilterParams;
use crate::stage::Stage;
use crate::storage::Location;
use crate::synth::SynthParams;

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
    pub embed: crate::embed::EmbedSettings,
    /// Synthetic corpus settings (the `synth` stage).
    #[serde(default)]
    pub synth: SynthParams,
    /// Index settings.
    #[serde(default)]
    pub index: IndexParams,
    /// Partition settings.
    #[serde(default)]
    pub partition: PartitionParams,
    /// Candidates settings.
    #[serde(default)]
    pub candidates: CandidateParams,
    /// Filter settings.
    #[serde(default)]
    pub filter: FilterParams,
    /// Evaluation settings (the `eval` stage).
    #[serde(default)]
    pub eval: EvalSection,
    /// Report settings (the `report` stage).
    #[serde(default)]
    pub report: crate::report::ReportSettings,
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

/// A spec with everything checked and the encoders loaded: the stages to run, in order, each
/// with its typed settings.
pub struct Resolved {
    /// The spec as parsed (with resolved paths).
    pub spec: Spec,
    /// The input location.
    pub input: Location,
    /// The run root.
    pub root: Location,
    /// What to run, in order.
    pub jobs: Vec<Job>,
}

/// One stage of a spec, resolved: its settings (checked) and what it needs loaded. A spec has
/// a handful, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// A synthetic corpus under the input.
    Synth(SynthParams),
    /// Embed the input with CLIP, and DINOv2 unless CLIP-first.
    Embed {
        /// Settings.
        params: EmbedParams,
        /// The CLIP encoder.
        clip: OnnxEncoder,
        /// The DINOv2 encoder (None: CLIP-first).
        dino: Option<OnnxEncoder>,
    },
    /// Place vectors on cells.
    Partition(PartitionParams),
    /// Build the HNSW index.
    Index(IndexParams),
    /// Mine candidate pairs.
    Candidates(CandidateParams),
    /// DINOv2 for candidate images.
    Dino {
        /// Settings.
        params: DinoParams,
        /// The DINOv2 encoder.
        encoder: OnnxEncoder,
    },
    /// Filter the candidates through DINOv2.
    Filter(FilterParams),
    /// The `[eval]` section's evaluations (its settings stay in `spec.eval`).
    Eval,
    /// The static site, written to the folder named.
    Report(crate::report::ReportParams, String),
}

impl Job {
    /// Its stage.
    pub fn stage(&self) -> Stage {
        match self {
            Job::Synth(_) => Stage::Synth,
            Job::Embed { .. } => Stage::Embed,
            Job::Partition(_) => Stage::Partition,
            Job::Index(_) => Stage::Index,
            Job::Candidates(_) => Stage::Candidates,
            Job::Dino { .. } => Stage::Dino,
            Job::Filter(_) => Stage::Filter,
            Job::Eval => Stage::Eval,
            Job::Report(..) => Stage::Report,
        }
    }

    /// The encoders it loaded, by role.
    pub fn encoders(&self) -> Vec<(&'static str, &OnnxEncoder)> {
        match self {
            Job::Embed { clip, dino, .. } => std::iter::once(("clip", clip))
                .chain(dino.iter().map(|d| ("dino", d)))
                .collect(),
            Job::Dino { encoder, .. } => vec![("dino", encoder)],
            _ => Vec::new(),
        }
    }
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
    resolve_paths(&base, &mut spec);
    let mut problems = Vec::new();
    check_eval(&spec, &mut problems);
    let stages = check_stages(&spec.run.stages, &mut problems);
    let (input, root) = open_locations(&spec, &stages, &mut problems).await;
    let device = spec
        .encoders
        .device
        .parse::<Device>()
        .map_err(|e| problems.push(format!("[encoders] device: {e}")))
        .ok();
    problems.extend(section_problems(&spec));
    let jobs = jobs(&spec, &stages, device, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Spec {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(Resolved {
        input: input.expect("no problems"),
        root: root.expect("no problems"),
        jobs,
        spec,
    })
}

/// Paths in the spec, relative to its folder, made absolute.
fn resolve_paths(base: &Path, spec: &mut Spec) {
    if !spec.run.input.is_empty() {
        spec.run.input = resolve_path(base, &spec.run.input);
    }
    spec.run.root = resolve_path(base, &spec.run.root);
    spec.encoders.clip = PathBuf::from(resolve_path(base, &spec.encoders.clip.to_string_lossy()));
    spec.encoders.dino = PathBuf::from(resolve_path(base, &spec.encoders.dino.to_string_lossy()));
    resolve_eval_paths(base, &mut spec.eval);
    if let Some(out) = &mut spec.report.out {
        *out = resolve_path(base, out);
    }
    if let Some(drafts) = &mut spec.report.drafts {
        *drafts = resolve_path(base, drafts);
    }
}

/// `[run] stages`: known, in pipeline order, not empty.
fn check_stages(names: &[String], problems: &mut Vec<String>) -> Vec<Stage> {
    let mut last = None;
    let known = spec_stage_names();
    for s in names {
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
    if names.is_empty() {
        problems.push(format!(
            "[run] stages is empty; name at least one of {known:?}"
        ));
    }
    named(names)
}

/// The input and the run root, opened; the input listed when the embed stage reads it.
async fn open_locations(
    spec: &Spec,
    stages: &[Stage],
    problems: &mut Vec<String>,
) -> (Option<Location>, Option<Location>) {
    let reads_input = stages.contains(&Stage::Synth)
        || stages.contains(&Stage::Embed)
        || spec.eval.synthetic_benchmarks;
    if spec.run.input.is_empty() && reads_input {
        problems.push(
            "[run] input is not set; the synth and embed stages and synthetic benchmarks need it"
                .into(),
        );
    }
    let input_url = match spec.run.input.is_empty() {
        true => &spec.run.root,
        false => &spec.run.input,
    };
    let input = Location::open(input_url)
        .map_err(|e| problems.push(format!("[run] input: {e}")))
        .ok();
    let root = Location::open(&spec.run.root)
        .map_err(|e| problems.push(format!("[run] root: {e}")))
        .ok();
    let makes_input = stages.contains(&Stage::Synth);
    if let (Some(input), false, true) = (&input, makes_input, stages.contains(&Stage::Embed)) {
        if let Err(e) = crate::ingest::list_shards(input, &spec.embed.params().ingest).await {
            problems.push(format!("[run] input: {e}"));
        }
    }
    (input, root)
}

/// Every section's problems, as its settings' `check()` says them, under the section's name.
fn section_problems(spec: &Spec) -> Vec<String> {
    let partition = PartitionParams {
        clip_min: spec.candidates.clip_min,
        ..spec.partition.clone()
    };
    let sections = [
        ("embed", spec.embed.check()),
        ("index", spec.index.check()),
        // The threshold is [candidates]', which says so itself.
        (
            "partition",
            partition
                .check()
                .into_iter()
                .filter(|p| !p.starts_with("clip-min"))
                .collect(),
        ),
        ("candidates", spec.candidates.check()),
        ("filter", spec.filter.check()),
        ("synth", spec.synth.check()),
        ("report", spec.report.check()),
    ];
    sections
        .into_iter()
        .flat_map(|(section, problems)| {
            problems
                .into_iter()
                .map(move |p| format!("[{section}] {p}"))
        })
        .collect()
}

/// The jobs of `stages`, their encoders loaded on `device` (problems for any that fail).
fn jobs(
    spec: &Spec,
    stages: &[Stage],
    device: Option<Device>,
    problems: &mut Vec<String>,
) -> Vec<Job> {
    let mut load = |what: &str, path: &Path| -> Option<OnnxEncoder> {
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
    let embed = spec.embed.params();
    let mut jobs = Vec::new();
    let mut unrunnable = Vec::new();
    for stage in stages {
        let job = match stage {
            Stage::Synth => Some(Job::Synth(spec.synth.clone())),
            Stage::Embed => {
                let clip = load("clip", &spec.encoders.clip);
                let dino = match spec.embed.clip_only() {
                    true => Some(None),
                    false => load("dino", &spec.encoders.dino).map(Some),
                };
                clip.zip(dino).map(|(clip, dino)| Job::Embed {
                    params: embed.clone(),
                    clip,
                    dino,
                })
            }
            Stage::Partition => Some(Job::Partition(PartitionParams {
                clip_min: spec.candidates.clip_min,
                ..spec.partition.clone()
            })),
            Stage::Index => Some(Job::Index(spec.index.clone())),
            Stage::Candidates => Some(Job::Candidates(CandidateParams {
                method: spec.candidates.method(),
                exact: false,
                ..spec.candidates.clone()
            })),
            Stage::Dino => {
                let encoder = load("dino", &spec.encoders.dino);
                encoder.map(|encoder| Job::Dino {
                    params: DinoParams {
                        batch_size: spec.embed.batch_size,
                        float: None,
                        decode: embed.decode.clone(),
                        image_column: spec.embed.ingest.image_column.clone(),
                        fetch: embed.ingest.fetch.clone(),
                        ..Default::default()
                    },
                    encoder,
                })
            }
            Stage::Filter => Some(Job::Filter(spec.filter.clone())),
            Stage::Eval => Some(Job::Eval),
            Stage::Report => Some(Job::Report(
                spec.report.params(),
                spec.report.out_for(&spec.run.root),
            )),
            other => {
                unrunnable.push(*other);
                None
            }
        };
        jobs.extend(job);
    }
    for stage in unrunnable {
        problems.push(format!("[run] stages: {stage} does not run from a spec"));
    }
    jobs
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

    #[test]
    fn report_paths_resolve_against_the_spec_folder() {
        let text = "[run]\nroot = \"run\"\nstages = [\"report\"]\n\n[encoders]\nclip = \"c.toml\"\ndino = \"d.toml\"\n\n[report]\nout = \"site\"\ndrafts = \"sheet/drafts.json\"\n";
        let mut spec = parse(Path::new("/p/x.toml"), text).unwrap();
        resolve_paths(Path::new("/p"), &mut spec);
        assert_eq!(spec.report.drafts.as_deref(), Some("/p/sheet/drafts.json"));
        assert_eq!(
            spec.report.params().drafts.as_deref(),
            Some("/p/sheet/drafts.json")
        );
        assert_eq!(spec.report.out.as_deref(), Some("/p/site"));
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

    /// Issue 21: a stage's section is its `Params`, and its one `check()` speaks for both the
    /// spec (with the section's name) and the command line.
    #[tokio::test]
    async fn each_section_is_checked_by_its_params_once() {
        let text = r#"
[run]
root = "memory://spec-sections/root"
stages = ["partition", "index", "candidates", "filter"]

[encoders]
clip = "c.toml"
dino = "d.toml"

[partition]
cells = 0
max-copies = 0.5

[index]
connectivity = 1

[candidates]
k = 0

[filter]
dino-max = 0.7
dup-min = 0.5
"#;
        let spec = parse(Path::new("x.toml"), text).unwrap();
        let Err(Error::Spec { problems, .. }) = resolve(Path::new("x.toml"), spec).await else {
            panic!("problems expected")
        };
        let all = problems.join("\n");
        for needle in [
            "[partition] cells must be at least 1",
            "[partition] max-copies 0.5 must be at least 1",
            "[index] connectivity 1 must be at least 2",
            "[candidates] k must be at least 1",
            "[filter] dup-min 0.5 is below dino-max 0.7",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        // The same check refuses the same settings from the command line's side.
        let index = IndexParams {
            connectivity: 1,
            ..Default::default()
        };
        let err = Stage::Index
            .settings(index.check())
            .unwrap_err()
            .to_string();
        assert!(err.contains("index settings: connectivity 1"), "{err}");
        // Unknown keys are refused by the section, as before.
        let bad =
            "[run]\nroot='r'\nstages=[]\n[encoders]\nclip='c'\ndino='d'\n[index]\niterations = 3\n";
        assert!(parse(Path::new("x.toml"), bad).is_err());
    }

    /// `[embed]` is `EmbedSettings`, the flags of `blindspot embed`: its ingest keys sit in
    /// the same table, and a key no setting has is refused by its check.
    #[test]
    fn the_embed_section_is_the_embed_flags() {
        let base = "[run]\ninput='a'\nroot='b'\nstages=[]\n[encoders]\nclip='c'\ndino='d'\n";
        let text = format!(
            "{base}[embed]\nencoders = 'clip'\nfetch-timeout = 5.0\ninput-format = 'manifest'\nbatch-size = 8\n"
        );
        let spec = parse(Path::new("x.toml"), &text).unwrap();
        assert!(spec.embed.clip_only());
        assert!(spec.embed.check().is_empty(), "{:?}", spec.embed.check());
        let p = spec.embed.params();
        assert_eq!(p.batch_size, 8);
        assert_eq!(p.ingest.fetch.timeout, std::time::Duration::from_secs(5));
        assert_eq!(p.ingest.format, crate::ingest::InputFormat::Manifest);
        let text = format!("{base}[embed]\nbatch = 8\nfetch-timeout = 0.0\n");
        let spec = parse(Path::new("x.toml"), &text).unwrap();
        let problems = spec.embed.check().join("\n");
        assert!(problems.contains("unknown field `batch`"), "{problems}");
        assert!(problems.contains("fetch-timeout 0 must be"), "{problems}");
        // The command line parses into the same shape.
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: crate::embed::EmbedSettings,
        }
        let cli = Cli::parse_from([
            "x",
            "--encoders",
            "clip",
            "--fetch-timeout",
            "5",
            "--no-dct-scaling",
        ]);
        assert!(cli.settings.clip_only() && !cli.settings.dct_scaling);
        assert_eq!(
            cli.settings.params().ingest.fetch.timeout,
            p.ingest.fetch.timeout
        );
    }

    #[test]
    fn the_filter_unit_of_work_budget_is_read_and_defaults_to_64_mib() {
        let base = "[run]\ninput='a'\nroot='b'\nstages=[]\n[encoders]\nclip='c'\ndino='d'\n";
        let text = format!("{base}[filter]\nwork-mib = 8\n");
        let spec = parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(spec.filter.work_bytes, 8 << 20);
        let spec = parse(Path::new("x.toml"), base).unwrap();
        assert_eq!(
            spec.filter.work_bytes,
            crate::sift::filter::DEFAULT_WORK_MIB << 20
        );
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
