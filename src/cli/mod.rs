//! The command line: arguments (checked by clap), then the real objects (which may fail),
//! then one library call per command, then a summary. Errors carry their chain to `main`.
//! One file per command group: `embed` (synth, embed, bench-preprocess), `mine` (index,
//! candidates, filter), `sql`, `eval` (eval and annotate), and `run` (validate, run, demo: the
//! spec runner, the one place besides the spec that knows the order of stages).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

mod deploy;
mod embed;
mod eval;
mod mine;
mod progress;
mod report;
mod run;
mod sift;
mod sql;

pub use progress::progress;

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
    Demo(run::DemoArgs),
    /// Write a synthetic corpus with known CLIP-blind pairs and its truth file.
    Synth(embed::SynthArgs),
    /// Write synthetic CLIP/DINOv2 vectors as committed embeddings (mining tests, benchmarks).
    SynthVectors(embed::SynthVectorsArgs),
    /// Embed images (folders, webdataset tars, img2dataset Parquet, URI manifests) with CLIP
    /// and DINOv2 (or CLIP only) into Parquet.
    Embed(embed::EmbedArgs),
    /// Read embeddings computed elsewhere (clip-retrieval's img_emb/ + metadata/ layout).
    #[command(subcommand)]
    Import(embed::ImportCommand),
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
    BenchPreprocess(embed::BenchArgs),
    /// Cluster the CLIP embeddings into mining cells (each vector at home, a guest where it can pair); new shards only.
    Partition(mine::PartitionArgs),
    /// Build the usearch HNSW index over the CLIP embeddings (for candidates --method index).
    Index(mine::IndexArgs),
    /// Find every pair with CLIP similarity above the threshold, cell by cell (or --method
    /// index|exact).
    Candidates(mine::CandidatesArgs),
    /// Embed with DINOv2 only the candidate images that have no DINOv2 vector yet.
    Dino(sift::DinoArgs),
    /// Keep the candidate pairs whose DINOv2 similarity is below the threshold (DataFusion SQL).
    Filter(sift::FilterArgs),
    /// Query the tables of a run root with SQL (read-only); an interactive prompt without QUERY.
    Sql(sql::SqlArgs),
    /// Evaluate MLLMs and vision encoders on MMVP-format benchmarks; correlate their scores.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Export mined pairs as an MMVP-format sheet for people to write questions for.
    Annotate(eval::AnnotateArgs),
    /// Draft a two-option question for every pair of an annotation sheet with an MLLM, verify
    /// each with the images one at a time and without any, and fill the sheet with the
    /// verified ones.
    Draft(eval::DraftArgs),
    /// Write the HTML report: pair gallery with review, thresholds, evaluation with intervals.
    Report(report::ReportArgs),
    /// Where a run root stands: units done, leased and pending per stage; rows so far.
    Status(sql::StatusArgs),
    /// Ballista's scheduler and executors with blindspot's functions and stores, for SQL
    /// (`sql --cluster`, `filter --cluster`) on many machines.
    #[command(subcommand)]
    Cluster(sql::ClusterCommand),
}

/// Claiming units with leases, shared by `embed` and `candidates`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClaimArgs {
    /// Take unclaimed units one at a time with leases on the run root, so any number of
    /// workers may start and stop at any time; the worker exits when every unit is committed.
    #[arg(long, conflicts_with = "worker")]
    pub claim: bool,
    /// Seconds a lease lives after each renewal; a worker that stops renewing loses its unit
    /// to another after this long. Renewed every third of it.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120,
        requires = "claim"
    )]
    pub lease_ttl: u64,
    /// This worker's id in leases and `blindspot status` (default: <host>-<pid>).
    #[arg(long, requires = "claim")]
    pub worker_id: Option<String>,
}

impl ClaimArgs {
    /// The claim settings, when claiming.
    pub fn params(&self) -> Option<blindspot::lease::ClaimParams> {
        self.claim.then(|| blindspot::lease::ClaimParams {
            worker: self.worker_id.clone(),
            ttl: std::time::Duration::from_secs(self.lease_ttl),
        })
    }
}

pub fn parse_worker(s: &str) -> Result<(u32, u32), String> {
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
            eprintln!("error: {}", said_once(&e));
            exit_code(&e)
        }
    }
}

/// The most an error line shows of one cause (a storage server's XML body can be kilobytes).
const CAUSE_CHARS: usize = 600;

/// An error and its causes on one line, each said once: an object store error repeats its
/// source's text in its own, and the chain would print it again and again (four copies of an
/// S3 server's XML body).
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        let mut short: String = text.chars().take(CAUSE_CHARS).collect();
        if short.len() < text.len() {
            short.push_str(" [...]");
        }
        out.push_str(&short);
    }
    out
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => run::demo(a).await,
        Command::Synth(a) => embed::synth_cmd(a).await,
        Command::SynthVectors(a) => embed::synth_vectors_cmd(a).await,
        Command::Embed(a) => embed::embed_cmd(a).await,
        Command::Import(c) => embed::import_cmd(c).await,
        Command::Dino(a) => sift::dino_cmd(a).await,
        Command::Validate { spec } => run::validate(&spec).await,
        Command::Run { spec, json } => run::run(&spec, json).await,
        Command::BenchPreprocess(a) => embed::bench_preprocess(a),
        Command::Partition(a) => mine::partition_cmd(a).await,
        Command::Index(a) => mine::index_cmd(a).await,
        Command::Candidates(a) => mine::candidates_cmd(a).await,
        Command::Filter(a) => sift::filter_cmd(a).await,
        Command::Sql(a) => sql::sql_cmd(a).await,
        Command::Eval(c) => eval::dispatch(c).await,
        Command::Annotate(a) => eval::annotate(a).await,
        Command::Draft(a) => eval::draft(a).await,
        Command::Report(a) => report::report_cmd(a).await,
        Command::Status(a) => sql::status_cmd(a).await,
        Command::Cluster(c) => sql::cluster_cmd(c).await,
    }
}

/// The checkout this binary was built from: the default home of the tiny encoders.
/// Where the demo's pipelines and the tiny encoders are: `$BLINDSPOT_HOME` when set (an
/// installed binary, e.g. the container image's `/opt/blindspot`), else the checkout the
/// binary was built from.
pub fn checkout() -> PathBuf {
    match std::env::var_os("BLINDSPOT_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Prints a stage summary: JSON on one line, or the text `human` builds.
pub fn report<T: serde::Serialize>(json: bool, summary: &T, human: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(summary).unwrap_or_default());
    } else {
        println!("{}", human());
    }
}

#[cfg(test)]
mod said_once_tests {
    use super::*;

    #[derive(Debug)]
    struct Body(String);

    impl std::fmt::Display for Body {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Body {}

    #[test]
    fn a_storage_error_says_the_servers_message_once() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let source = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Body(format!(
                "Client error with status 403 Forbidden: {xml}"
            ))),
        };
        let e = anyhow::Error::from(blindspot::Error::storage("s3://b/x.parquet", source));
        let line = said_once(&e);
        assert_eq!(line.matches("AccessDenied").count(), 1, "{line}");
        assert!(line.starts_with("storage s3://b/x.parquet"), "{line}");
        // `{:#}` said it more than once.
        assert!(format!("{e:#}").matches("AccessDenied").count() > 1);
        // A cause of kilobytes is cut.
        let long = anyhow::Error::from(Body("x".repeat(5000))).context("reading");
        assert!(said_once(&long).len() < 700);
    }
}
