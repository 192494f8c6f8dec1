//! The command line: arguments (checked by clap), then the real objects (which may fail),
//! then one library call per command, then a summary. Errors carry their chain to `main`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use blindspot::candidates::CandidateParams;
use blindspot::embed::{self, EmbedParams, EmbedSummary};
use blindspot::encoder::{self, OnnxEncoder, SessionParams};
use blindspot::index::{IndexParams, Quantization};
use blindspot::preprocess::{DecodeParams, Preprocessor, Transform};
use blindspot::progress::Progress;
use blindspot::runtime::Device;
use blindspot::schema::FloatType;
use blindspot::spec;
use blindspot::storage::Location;
use blindspot::synth::{self, SynthFormat, SynthParams};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod eval;

/// Mines CLIP-blind image pairs from image corpora in object storage.
#[derive(Parser, Debug)]
#[command(name = "blindspot", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text for people, json for schedulers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make the synthetic corpus, embed it with the tiny encoders and print a summary.
    Demo(DemoArgs),
    /// Write a synthetic corpus with known CLIP-blind pairs and its truth file.
    Synth(SynthArgs),
    /// Embed images (folders, prefixes or webdataset tars) with CLIP and DINOv2 into Parquet.
    Embed(EmbedArgs),
    /// Check a pipeline spec completely (paths, manifests, encoders) without running it.
    Validate {
        /// The spec (TOML).
        spec: PathBuf,
    },
    /// Run the stages a pipeline spec names.
    Run {
        /// The spec (TOML).
        spec: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Measure decode + preprocess throughput on a folder of images (for scripts/bench_preprocess.py).
    BenchPreprocess(BenchArgs),
    /// Build the usearch HNSW index over the CLIP embeddings of a run root.
    Index(IndexArgs),
    /// Find every pair with CLIP similarity above the threshold (index, or --exact brute force).
    Candidates(CandidatesArgs),
    /// Keep the candidate pairs whose DINOv2 similarity is below the threshold (DataFusion SQL).
    Filter(FilterArgs),
    /// Query the tables of a run root with SQL (read-only); an interactive prompt without QUERY.
    Sql(SqlArgs),
    /// Evaluate MLLMs and vision encoders on MMVP-format benchmarks; correlate their scores.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Export mined pairs as an MMVP-format sheet for people to write questions for.
    Annotate(eval::AnnotateArgs),
}

#[derive(Args, Debug)]
struct IndexArgs {
    /// Run root.
    #[arg(long)]
    root: String,
    #[command(flatten)]
    params: IndexParamArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
struct IndexParamArgs {
    /// Vector storage in the index.
    #[arg(long, value_enum, default_value_t = Quantization::F16)]
    quantization: Quantization,
    /// HNSW connectivity (M).
    #[arg(long, default_value_t = IndexParams::default().connectivity)]
    connectivity: usize,
    /// HNSW expansion while adding (efConstruction).
    #[arg(long, default_value_t = IndexParams::default().expansion_add)]
    expansion_add: usize,
    /// HNSW expansion while searching (ef).
    #[arg(long, default_value_t = IndexParams::default().expansion_search)]
    expansion_search: usize,
    /// Build threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl IndexParamArgs {
    fn params(&self) -> IndexParams {
        IndexParams {
            quantization: self.quantization,
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
            threads: self.threads,
        }
    }
}

#[derive(Args, Debug)]
struct CandidatesArgs {
    /// Run root (indexed first with `blindspot index`, unless --exact).
    #[arg(long)]
    root: String,
    /// Keep pairs with CLIP similarity strictly above this.
    #[arg(long, default_value_t = CandidateParams::default().clip_min)]
    clip_min: f32,
    /// Neighbours asked for first; doubled while all pass.
    #[arg(long, default_value_t = CandidateParams::default().k)]
    k: usize,
    /// Brute force over every pair (the ground truth) instead of the index.
    #[arg(long)]
    exact: bool,
    /// Also measure the index's recall against brute force on a sample of images.
    #[arg(long)]
    recall: bool,
    /// Query images in the recall sample.
    #[arg(long, default_value_t = 1000)]
    recall_sample: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FilterArgs {
    /// Run root (with candidates).
    #[arg(long)]
    root: String,
    /// Keep pairs with DINOv2 similarity strictly below this.
    #[arg(long, default_value_t = 0.6)]
    dino_max: f32,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SqlArgs {
    /// Run root whose tables are registered.
    #[arg(long)]
    root: String,
    /// The query; without it, an interactive prompt reads queries ending in `;`.
    query: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write the result to this file instead of stdout (required for parquet).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Where the demo writes its corpus (`corpus/`) and run root (`run/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Corpus layout.
    #[arg(long, value_enum, default_value_t = SynthFormat::Folder)]
    format: SynthFormat,
    /// Also evaluate an MLLM at this OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1).
    #[arg(long, requires = "mllm_model")]
    mllm_url: Option<String>,
    /// The model name the --mllm-url endpoint serves.
    #[arg(long, requires = "mllm_url")]
    mllm_model: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Output URL or path: writes `images/` and `truth.json` under it.
    #[arg(long)]
    out: String,
    /// Corpus layout.
    #[arg(long, value_enum, default_value_t = SynthFormat::Folder)]
    format: SynthFormat,
    /// Images per shard.
    #[arg(long, default_value_t = SynthParams::default().per_shard)]
    per_shard: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = SynthParams::default().seed)]
    seed: u64,
}

#[derive(Args, Debug, Clone)]
struct EncoderArgs {
    /// CLIP encoder manifest [default: models/tiny/clip-tiny.toml of this checkout].
    #[arg(long)]
    clip: Option<PathBuf>,
    /// DINOv2 encoder manifest [default: models/tiny/dino-tiny.toml of this checkout].
    #[arg(long)]
    dino: Option<PathBuf>,
    /// Where the encoders run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// ONNX Runtime intra-op threads per encoder (0: ONNX Runtime decides).
    #[arg(long, default_value_t = 0)]
    intra_threads: usize,
}

#[derive(Args, Debug)]
struct EmbedArgs {
    /// Input: a folder, a prefix URL, a .tar or an image (file://, s3://, gs://, az://, memory://).
    input: String,
    /// Run root: outputs go under it.
    #[arg(long)]
    out: String,
    #[command(flatten)]
    encoders: EncoderArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = EmbedParams::default().batch_size)]
    batch_size: usize,
    /// Decode threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
    /// Objects fetched at once.
    #[arg(long, default_value_t = EmbedParams::default().fetch_concurrency)]
    fetch_concurrency: usize,
    /// Embedding float type: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: FloatType,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeParams::default().max_pixels)]
    max_pixels: u64,
    /// Always decode JPEGs at full size (no DCT scaling).
    #[arg(long)]
    no_dct_scaling: bool,
    /// Only this worker's shards, as i/N (e.g. a Kubernetes indexed Job or Slurm array).
    #[arg(long, value_parser = parse_worker)]
    worker: Option<(u32, u32)>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Folder of images (top level only).
    #[arg(long)]
    images: PathBuf,
    /// CLIP manifest (only its preprocessing is used; the model is not loaded).
    #[arg(long)]
    clip: PathBuf,
    /// DINOv2 manifest (only its preprocessing is used).
    #[arg(long)]
    dino: PathBuf,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Passes over the images.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Always decode JPEGs at full size.
    #[arg(long)]
    no_dct_scaling: bool,
}

fn parse_worker(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("use i/N, e.g. 0/8")?;
    let (i, n): (u32, u32) = (
        i.parse().map_err(|_| "i is not a number")?,
        n.parse().map_err(|_| "N is not a number")?,
    );
    if n == 0 || i >= n {
        return Err(format!("worker {i}/{n}: need 0 <= i < N"));
    }
    Ok((i, n))
}

/// Exit codes, as documented in the README.
pub mod exit {
    /// The command did what it was asked (per-image errors included).
    pub const OK: i32 = 0;
    /// The run failed while working (storage, inference, a bug).
    pub const FAILED: i32 = 1;
    /// The command was wrong before any data moved: arguments, spec, manifest, encoder set-up.
    pub const CONFIG: i32 = 2;
    /// Another run holds the run root.
    pub const LOCKED: i32 = 3;
}

/// Maps an error chain to its exit code.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    use blindspot::Error as E;
    match err.chain().find_map(|e| e.downcast_ref::<E>()) {
        Some(E::Locked { .. }) => exit::LOCKED,
        Some(
            E::Spec { .. }
            | E::Manifest { .. }
            | E::Usage(_)
            | E::Url { .. }
            | E::Benchmark { .. }
            | E::Endpoint { .. }
            | E::Encoder { .. }
            | E::Runtime(_),
        ) => exit::CONFIG,
        _ => exit::FAILED,
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    // ONNX Runtime's own logs are noisy at info.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},ort=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Parses arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => demo(a).await,
        Command::Synth(a) => synth_cmd(a).await,
        Command::Embed(a) => embed_cmd(a).await,
        Command::Validate { spec } => validate(&spec).await,
        Command::Run { spec, json } => run(&spec, json).await,
        Command::BenchPreprocess(a) => bench_preprocess(a),
        Command::Index(a) => {
            let root = Location::open(&a.root)?;
            let s = blindspot::index::index(&root, &a.params.params(), progress()).await?;
            report(a.json, &s, || {
                format!("index: {} -> {} unique vectors ({} rows, {} exact duplicates collapsed) in {:.1}s", root.url, s.vectors, s.rows, s.duplicates, s.seconds)
            });
            Ok(())
        }
        Command::Candidates(a) => {
            let root = Location::open(&a.root)?;
            let params = CandidateParams {
                clip_min: a.clip_min,
                k: a.k,
                exact: a.exact,
                ..Default::default()
            };
            let s = blindspot::candidates::candidates(
                &root,
                &params,
                a.recall.then_some(a.recall_sample),
                progress(),
            )
            .await?;
            report(a.json, &s, || {
                let mut text = format!(
                    "candidates ({}): {} pairs with clip > {} among {} images in {:.1}s",
                    s.mode, s.pairs, a.clip_min, s.images, s.seconds
                );
                if let Some(r) = &s.recall {
                    text += &format!(
                        "\n  index recall on {} sampled images: {:.4} ({} of {} exact pairs)",
                        r.sample, r.recall, r.found, r.exact_pairs
                    );
                }
                text
            });
            Ok(())
        }
        Command::Filter(a) => {
            let root = Location::open(&a.root)?;
            let s = blindspot::filter::filter(&root, a.dino_max).await?;
            report(a.json, &s, || {
                format!(
                    "filter: {} CLIP-blind pairs (dino < {}) in {:.1}s, run {}",
                    s.pairs, a.dino_max, s.seconds, s.run_id
                )
            });
            Ok(())
        }
        Command::Sql(a) => sql_cmd(a).await,
        Command::Eval(c) => eval::dispatch(c).await,
        Command::Annotate(a) => eval::annotate(a).await,
    }
}

/// The checkout this binary was built from: the default home of the tiny encoders.
fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_encoders(args: &EncoderArgs) -> Result<(OnnxEncoder, OnnxEncoder)> {
    let clip = args
        .clip
        .clone()
        .unwrap_or_else(|| checkout().join("models/tiny/clip-tiny.toml"));
    let dino = args
        .dino
        .clone()
        .unwrap_or_else(|| checkout().join("models/tiny/dino-tiny.toml"));
    let params = SessionParams {
        device: args.device,
        intra_threads: args.intra_threads,
    };
    let c = OnnxEncoder::load(encoder::load_manifest(&clip)?, &params)
        .context("loading the CLIP encoder")?;
    let d = OnnxEncoder::load(encoder::load_manifest(&dino)?, &params)
        .context("loading the DINOv2 encoder")?;
    tracing::info!(clip = %c.manifest().id, dino = %d.manifest().id, device = %args.device, "encoders loaded");
    Ok((c, d))
}

async fn embed_cmd(a: EmbedArgs) -> Result<()> {
    let input = Location::open(&a.input)?;
    let root = Location::open(&a.out)?;
    let (clip, dino) = load_encoders(&a.encoders)?;
    let params = EmbedParams {
        batch_size: a.batch_size,
        decode_threads: a.decode_threads,
        fetch_concurrency: a.fetch_concurrency,
        float: a.dtype,
        decode: DecodeParams {
            max_pixels: a.max_pixels,
            dct_scaling: !a.no_dct_scaling,
        },
        worker: a.worker,
        ..EmbedParams::default()
    };
    let summary = embed::embed(&input, &root, clip, dino, &params, progress()).await?;
    report_embed(&summary, &input, &root, a.json);
    Ok(())
}

fn report_embed(s: &EmbedSummary, input: &Location, root: &Location, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    let rate = if s.seconds > 0.0 {
        s.images as f64 / s.seconds
    } else {
        0.0
    };
    println!("embed: {} -> {}", input.url, root.url);
    println!(
        "  shards     {} ({} committed now, {} already committed)",
        s.shards, s.committed, s.skipped
    );
    println!(
        "  images     {} embedded in {:.1}s ({rate:.1} images/s)",
        s.images, s.seconds
    );
    println!("  errors     {}", s.errors);
    for (kind, n) in &s.errors_by_kind {
        println!("    {kind:<14} {n}");
    }
}

async fn synth_cmd(a: SynthArgs) -> Result<()> {
    let out = Location::open(&a.out)?;
    let params = SynthParams {
        format: a.format,
        per_shard: a.per_shard,
        seed: a.seed,
        ..Default::default()
    };
    let truth = synth::synth(&out, &params).await?;
    println!(
        "synth: {} images in {} ({} blind pairs, {} near-duplicates, {} exact duplicates); truth in {}/truth.json",
        truth.keys.len(),
        truth.images,
        truth.blind_pairs.len(),
        truth.near_duplicates.len(),
        truth.exact_duplicates.len(),
        out.url
    );
    Ok(())
}

async fn validate(path: &Path) -> Result<()> {
    let resolved = load_spec(path).await?;
    println!(
        "{}: ok (stages {:?}; input {}; root {})",
        path.display(),
        resolved.stages,
        resolved.input.url,
        resolved.root.url
    );
    if let Some((c, d)) = &resolved.encoders {
        println!(
            "  clip {} (dim {}), dino {} (dim {})",
            c.manifest().id,
            c.manifest().dim,
            d.manifest().id,
            d.manifest().dim
        );
    }
    Ok(())
}

async fn load_spec(path: &Path) -> Result<spec::Resolved> {
    let text = std::fs::read_to_string(path).map_err(|e| blindspot::Error::Spec {
        path: path.to_path_buf(),
        problems: vec![format!("cannot read it: {e}")],
    })?;
    let parsed = spec::parse(path, &text)?;
    Ok(spec::resolve(path, parsed).await?)
}

async fn run(path: &Path, json: bool) -> Result<()> {
    let resolved = load_spec(path).await?;
    run_resolved(resolved, json).await
}

/// The synthetic corpus of an input: one level above `images/`, where synth puts the images
/// (and `truth.json` beside them).
fn corpus_of(input: &Location) -> String {
    input
        .url
        .strip_suffix("/images")
        .unwrap_or(&input.url)
        .to_string()
}

async fn run_resolved(mut r: spec::Resolved, json: bool) -> Result<()> {
    for stage in r.stages.clone() {
        tracing::info!(stage = %stage, "stage starts");
        match stage.as_str() {
            "synth" => {
                let out = Location::open(&corpus_of(&r.input))?;
                let params = SynthParams {
                    format: r.spec.synth.format,
                    per_shard: r.spec.synth.per_shard,
                    seed: r.spec.synth.seed,
                    ..Default::default()
                };
                let truth = synth::synth(&out, &params).await?;
                if !json {
                    println!(
                        "synth: {} images, {} known blind pairs, in {}",
                        truth.keys.len(),
                        truth.blind_pairs.len(),
                        truth.images
                    );
                }
            }
            "embed" => {
                let (clip, dino) = r
                    .encoders
                    .take()
                    .context("the embed stage needs encoders")?;
                let summary =
                    embed::embed(&r.input, &r.root, clip, dino, &r.embed, progress()).await?;
                report_embed(&summary, &r.input, &r.root, json);
            }
            "index" => {
                let s = blindspot::index::index(&r.root, &r.index, progress()).await?;
                report(json, &s, || {
                    format!(
                        "index: {} unique vectors ({} exact duplicates collapsed) in {:.1}s",
                        s.vectors, s.duplicates, s.seconds
                    )
                });
            }
            "candidates" => {
                let s = blindspot::candidates::candidates(&r.root, &r.candidates, None, progress())
                    .await?;
                report(json, &s, || {
                    format!(
                        "candidates ({}): {} pairs with clip > {} among {} images in {:.1}s",
                        s.mode, s.pairs, r.candidates.clip_min, s.images, s.seconds
                    )
                });
            }
            "filter" => {
                let s = blindspot::filter::filter(&r.root, r.dino_max).await?;
                report(json, &s, || {
                    format!(
                        "filter: {} CLIP-blind pairs (dino < {}) in {:.1}s",
                        s.pairs, r.dino_max, s.seconds
                    )
                });
            }
            "eval" => eval::run_stage(&r, json).await?,
            other => anyhow::bail!("unknown stage {other:?}"),
        }
    }
    Ok(())
}

async fn demo(a: DemoArgs) -> Result<()> {
    let spec_path = checkout().join("pipelines/demo.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    let mut parsed = spec::parse(&spec_path, &text)?;
    if let Some(out) = &a.out {
        let out = std::path::absolute(out).context("resolving --out")?;
        parsed.run.input = out.join("corpus/images").to_string_lossy().into_owned();
        parsed.run.root = out.join("run").to_string_lossy().into_owned();
    }
    parsed.synth.format = a.format;
    if let (Some(url), Some(model)) = (&a.mllm_url, &a.mllm_model) {
        parsed.eval.mllm.push(spec::MllmEntry::new(url, model));
    }
    let resolved = spec::resolve(&spec_path, parsed).await?;
    let root = resolved.root.clone();
    let corpus = corpus_of(&resolved.input);
    run_resolved(resolved, a.json).await?;
    if !a.json {
        print_demo_summary(&root, &corpus).await?;
    }
    Ok(())
}

/// Reads back what the demo wrote: the known pairs' similarities under both tiny encoders.
async fn print_demo_summary(root: &Location, corpus: &str) -> Result<()> {
    let truth = synth::read_truth(&Location::open(corpus)?).await?;
    let vectors = blindspot::embed::read_vectors(root).await?;
    println!("\nknown pairs under the tiny encoders (CLIP-blind: clip > 0.95 and dino < 0.6):");
    println!(
        "  {:<16} {:<34} {:<34} {:>6} {:>6}  blind?",
        "kind", "a", "b", "clip", "dino"
    );
    let groups = [
        ("blind", &truth.blind_pairs),
        ("near-duplicate", &truth.near_duplicates),
        ("exact-duplicate", &truth.exact_duplicates),
    ];
    for (_, pairs) in groups {
        for p in pairs {
            let (Some(a), Some(b)) = (vectors.get(&p.a), vectors.get(&p.b)) else {
                continue;
            };
            let clip = dot(&a.0, &b.0);
            let dino = dot(&a.1, &b.1);
            let blind = clip > 0.95 && dino < 0.6;
            println!(
                "  {:<16} {:<34} {:<34} {clip:>6.3} {dino:>6.3}  {}",
                p.kind,
                p.a,
                p.b,
                if blind { "yes" } else { "no" }
            );
        }
    }
    print_mined_pairs(root, &truth).await?;
    println!("\noutputs under {}: embeddings/, errors/, index/, duplicates/, candidates/, pairs/ (query them with `blindspot sql --root {}`)", root.url, root.url);
    Ok(())
}

/// The mined pairs next to the truth file's blind pairs.
async fn print_mined_pairs(root: &Location, truth: &synth::Truth) -> Result<()> {
    let (ctx, tables) = blindspot::sql::session(root).await?;
    let df = blindspot::sql::query(
        &ctx,
        &tables,
        "SELECT a, b, clip_sim, dino_sim FROM pairs ORDER BY a, b",
    )
    .await?;
    let known: std::collections::BTreeSet<(String, String)> = truth
        .blind_pairs
        .iter()
        .map(|p| (p.a.clone(), p.b.clone()))
        .collect();
    let mut mined = std::collections::BTreeSet::new();
    println!("\nmined CLIP-blind pairs (candidates -> filter) against truth.json:");
    println!(
        "  {:<34} {:<34} {:>6} {:>6}  in truth?",
        "a", "b", "clip", "dino"
    );
    for batch in blindspot::sql::collect(df).await? {
        let a = blindspot::tables::strings(&batch, "a")?;
        let b = blindspot::tables::strings(&batch, "b")?;
        let clip = batch
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .context("clip_sim")?;
        let dino = batch
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .context("dino_sim")?;
        for i in 0..batch.num_rows() {
            let pair = (a.value(i).to_string(), b.value(i).to_string());
            let hit = if known.contains(&pair) { "yes" } else { "NO" };
            println!(
                "  {:<34} {:<34} {:>6.3} {:>6.3}  {hit}",
                pair.0,
                pair.1,
                clip.value(i),
                dino.value(i)
            );
            mined.insert(pair);
        }
    }
    let found = known.intersection(&mined).count();
    println!(
        "  {} pairs mined; {found} of {} known blind pairs found; {} mined pairs not in the truth file",
        mined.len(),
        known.len(),
        mined.difference(&known).count()
    );
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn bench_preprocess(a: BenchArgs) -> Result<()> {
    let clip = encoder::load_manifest_unchecked(&a.clip)?;
    let dino = encoder::load_manifest_unchecked(&a.dino)?;
    let transforms = vec![Transform::new(&clip), Transform::new(&dino)];
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&a.images).with_context(|| format!("reading {}", a.images.display()))?
    {
        let path = entry?.path();
        if path.is_file() && blindspot::ingest::is_image_name(&path.to_string_lossy()) {
            files.push(path);
        }
    }
    files.sort();
    let images: Vec<bytes::Bytes> = files
        .iter()
        .map(|p| std::fs::read(p).map(bytes::Bytes::from))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!images.is_empty(), "no images in {}", a.images.display());
    let decode = DecodeParams {
        dct_scaling: !a.no_dct_scaling,
        ..DecodeParams::default()
    };
    let threads = a.threads.max(1);
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (images, transforms, decode, done) = (&images, transforms.clone(), &decode, &done);
            s.spawn(move || {
                let mut pre = Preprocessor::new(transforms);
                let min_side = pre.min_side();
                for r in 0..a.repeat {
                    for (i, img) in images.iter().enumerate() {
                        if (i + r * images.len()) % threads == t
                            && embed::prepare(&mut pre, img, min_side, decode).is_ok()
                        {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let n = done.into_inner();
    println!(
        "{}",
        serde_json::json!({"images": n, "seconds": seconds, "images_per_sec": n as f64 / seconds, "threads": threads})
    );
    Ok(())
}

/// A progress bar when stderr is a terminal, periodic log lines otherwise.
fn progress() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(BarProgress::default())
    } else {
        Arc::new(LogProgress::default())
    }
}

#[derive(Default)]
struct BarProgress {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for BarProgress {
    fn start(&self, stage: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &*self.bar.lock().expect("progress lock") {
            b.inc(n);
        }
    }
    fn message(&self, msg: &str) {
        if let Some(b) = &*self.bar.lock().expect("progress lock") {
            b.set_message(msg.to_string());
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}

/// Logs progress at most every ten seconds, for logs and schedulers.
struct LogProgress {
    state: std::sync::Mutex<(String, u64, Option<u64>, Instant)>,
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress {
            state: std::sync::Mutex::new((String::new(), 0, None, Instant::now())),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, stage: &str, total: Option<u64>) {
        *self.state.lock().expect("progress lock") = (stage.to_string(), 0, total, Instant::now());
    }
    fn advance(&self, n: u64) {
        let mut s = self.state.lock().expect("progress lock");
        s.1 += n;
        if s.3.elapsed() >= Duration::from_secs(10) {
            s.3 = Instant::now();
            match s.2 {
                Some(total) => tracing::info!(stage = %s.0, done = s.1, total, "progress"),
                None => tracing::info!(stage = %s.0, done = s.1, "progress"),
            }
        }
    }
    fn message(&self, msg: &str) {
        tracing::debug!("{msg}");
    }
    fn finish(&self) {}
}

/// Prints a stage summary: JSON on one line, or the text `human` builds.
fn report<T: serde::Serialize>(json: bool, summary: &T, human: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(summary).unwrap_or_default());
    } else {
        println!("{}", human());
    }
}

async fn sql_cmd(a: SqlArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let (ctx, tables) = blindspot::sql::session(&root).await?;
    if a.format == OutputFormat::Parquet && a.output.is_none() {
        anyhow::bail!(blindspot::Error::Usage(
            "--format parquet needs --output FILE".into()
        ));
    }
    if let Some(q) = &a.query {
        return run_query(&ctx, &tables, q, a.format, a.output.as_deref()).await;
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "blindspot sql on {} (tables: {}); end queries with `;`, \\q to quit",
            root.url,
            tables.join(", ")
        );
    }
    let mut pending = String::new();
    let mut line = String::new();
    loop {
        if interactive {
            eprint!(
                "{}",
                if pending.is_empty() {
                    "blindspot> "
                } else {
                    "      ...> "
                }
            );
        }
        line.clear();
        if std::io::stdin().read_line(&mut line)? == 0 {
            break;
        }
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit") {
            break;
        }
        pending.push_str(&line);
        if trimmed.ends_with(';') {
            let q = std::mem::take(&mut pending);
            if let Err(e) = run_query(
                &ctx,
                &tables,
                q.trim().trim_end_matches(';'),
                a.format,
                None,
            )
            .await
            {
                eprintln!("error: {e:#}");
            }
        }
    }
    if !pending.trim().is_empty() {
        run_query(
            &ctx,
            &tables,
            pending.trim().trim_end_matches(';'),
            a.format,
            None,
        )
        .await?;
    }
    Ok(())
}

async fn run_query(
    ctx: &datafusion::prelude::SessionContext,
    tables: &[String],
    q: &str,
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<()> {
    let df = blindspot::sql::query(ctx, tables, q).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = blindspot::sql::collect(df).await?;
    let mut out: Box<dyn std::io::Write + Send> = match output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    match format {
        OutputFormat::Table => writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(&batches)?
        )?,
        OutputFormat::Csv => {
            let mut w = arrow::csv::Writer::new(out);
            for b in &batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
            for b in &batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(())
}
