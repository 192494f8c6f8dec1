//! `blindspot eval ...` and `blindspot annotate`: arguments, then one library call, then a
//! summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use blindspot::encoder::SessionParams;
use blindspot::eval::client::{Chat, ClientParams, OpenAiClient};
use blindspot::eval::correlate::{CorrelateParams, CorrelateSummary};
use blindspot::eval::grade::Grader;
use blindspot::eval::mllm::{MllmParams, PatternSource, Template};
use blindspot::eval::vlm::VlmParams;
use blindspot::eval::{EvalSummary, Metric};
use blindspot::runtime::Device;
use blindspot::spec::MllmEntry;
use blindspot::storage::Location;
use clap::{Args, Subcommand};

use super::{progress, report};

/// The eval commands.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Ask an MLLM (OpenAI-compatible endpoint) every MMVP question; grade and score.
    Mllm(MllmArgs),
    /// Score CLIP image + text towers (ONNX) on an MMVP-VLM benchmark.
    Vlm(VlmArgs),
    /// Correlate encoders' and MLLMs' per-pattern scores; write tables and PNG plots.
    Correlate(CorrelateArgs),
}

/// How to reach an endpoint (shared by the evaluated model and the judge).
#[derive(Args, Debug, Clone)]
pub struct EndpointArgs {
    /// Seconds before one request is given up (and retried).
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Retries after the first attempt on 429, 5xx, timeouts and malformed replies.
    #[arg(long, default_value_t = ClientParams::default().retries)]
    pub retries: u32,
    /// First backoff in seconds (doubled per retry; Retry-After wins when sent).
    #[arg(long, default_value_t = 1.0)]
    pub backoff: f64,
    /// Environment variable holding the API key (sent as a bearer token when set).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
}

#[derive(Args, Debug)]
pub struct MllmArgs {
    /// The MMVP benchmark: a folder or URL holding Questions.csv and `MMVP Images/`.
    #[arg(long)]
    pub benchmark: String,
    /// The endpoint's base URL, e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    pub base_url: String,
    /// The model name the endpoint serves.
    #[arg(long)]
    pub model: String,
    /// Run root: answers, scores and the response cache go under it.
    #[arg(long, alias = "root")]
    pub out: String,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Prompt template: `paper` (question + " " + options), `letter` (asks for the option
    /// letter) or a file with {question} and {options}.
    #[arg(long, default_value = "paper")]
    pub template: String,
    /// Grader: exact (the reply is a letter), rules (finds the option in free text) or
    /// judge (an LLM says yes or no, as in the paper).
    #[arg(long, default_value = "rules")]
    pub grader: Grader,
    /// The judge's model (for --grader judge and --categorise).
    #[arg(long)]
    pub judge_model: Option<String>,
    /// The judge's base URL [default: --base-url].
    #[arg(long)]
    pub judge_url: Option<String>,
    /// Environment variable with the judge's API key [default: --api-key-env], so that a
    /// hosted judge's key is not sent to a local model server.
    #[arg(long)]
    pub judge_api_key_env: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Sampling temperature (0: greedy decoding).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Longest reply in tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Apply the known MMVP label fix (items 99/100 and 279/280); recorded in the outputs.
    #[arg(long)]
    pub fix_labels: bool,
    /// Pattern mapping file (CSV with index,pattern) for sheets without a pattern column.
    #[arg(long, conflicts_with = "categorise")]
    pub patterns: Option<String>,
    /// Ask the judge (or the model) for each pair's pattern; saved under the run root.
    #[arg(long)]
    pub categorise: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VlmArgs {
    /// The MMVP-VLM benchmark: a folder or URL holding Questions.csv and `MLLM_VLM Images/`.
    #[arg(long)]
    pub benchmark: String,
    /// The image tower's manifest.
    #[arg(long)]
    pub image: PathBuf,
    /// The text tower's manifest.
    #[arg(long)]
    pub text: PathBuf,
    /// Run root.
    #[arg(long, alias = "root")]
    pub out: String,
    /// Where the encoders run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CorrelateArgs {
    /// Run root with committed scores.
    #[arg(long)]
    pub root: String,
    /// Extra scores from a CSV (model, kind, then one column per pattern); repeatable.
    #[arg(long = "scores")]
    pub scores: Vec<String>,
    /// An encoder group averaged per pattern first: NAME=model1,model2,...; repeatable.
    #[arg(long = "group", value_parser = parse_group)]
    pub groups: Vec<(String, Vec<String>)>,
    /// Which accuracy to correlate.
    #[arg(long, value_enum, default_value_t = Metric::Pair)]
    pub metric: Metric,
    /// Do not draw the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AnnotateArgs {
    /// Run root with mined pairs.
    #[arg(long)]
    pub root: String,
    /// Where the MMVP-format sheet and images go.
    #[arg(long)]
    pub out: String,
    /// Export at most this many pairs (the lowest DINOv2 similarity first).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_group(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, members) = s
        .split_once('=')
        .ok_or("use NAME=model1,model2 (e.g. clip=vit-l-224,vit-l-336,eva01-g)")?;
    let members: Vec<String> = members
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if name.trim().is_empty() || members.is_empty() {
        return Err("a group needs a name and at least one model".into());
    }
    Ok((name.trim().to_string(), members))
}

/// Client settings from the command line.
pub fn client_params(
    base_url: &str,
    model: &str,
    e: &EndpointArgs,
    temperature: f32,
    max_tokens: u32,
) -> ClientParams {
    ClientParams {
        base_url: base_url.to_string(),
        model: model.to_string(),
        api_key_env: e.api_key_env.clone(),
        timeout: Duration::from_secs_f64(e.timeout.max(0.001)),
        retries: e.retries,
        backoff: Duration::from_secs_f64(e.backoff.max(0.0)),
        temperature,
        max_tokens,
        ..ClientParams::default()
    }
}

/// Runs one eval command.
pub async fn dispatch(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Mllm(a) => {
            let root = Location::open(&a.out)?;
            let entry = MllmEntry {
                base_url: a.base_url,
                model: a.model,
                api_key_env: a.endpoint.api_key_env,
                template: a.template,
                grader: a.grader.name().to_string(),
                judge_model: a.judge_model,
                judge_url: a.judge_url,
                judge_api_key_env: a.judge_api_key_env,
                concurrency: a.concurrency,
                timeout: a.endpoint.timeout,
                retries: a.endpoint.retries,
                backoff: a.endpoint.backoff,
                temperature: a.temperature,
                max_tokens: a.max_tokens,
                fix_labels: a.fix_labels,
                patterns: a.patterns,
                categorise: a.categorise,
            };
            let s = run_mllm_entry(&entry, &a.benchmark, &root).await?;
            report(a.json, &s, || eval_text(&s));
            Ok(())
        }
        EvalCommand::Vlm(a) => {
            let s = run_vlm(&a.benchmark, &a.image, &a.text, &a.out, a.device).await?;
            report(a.json, &s, || eval_text(&s));
            Ok(())
        }
        EvalCommand::Correlate(a) => {
            let s = run_correlate(
                &a.root,
                CorrelateParams {
                    metric: a.metric,
                    groups: a.groups,
                    csv: a.scores,
                    plots: !a.no_plots,
                },
            )
            .await?;
            report(a.json, &s, || correlate_text(&s));
            Ok(())
        }
    }
}

/// `eval vlm` as the CLI, the spec and the demo run it.
pub async fn run_vlm(
    benchmark: &str,
    image: &std::path::Path,
    text: &std::path::Path,
    out: &str,
    device: Device,
) -> Result<EvalSummary> {
    let root = Location::open(out)?;
    let bench = Location::open(benchmark)?;
    let params = VlmParams {
        image: image.to_path_buf(),
        text: text.to_path_buf(),
        session: SessionParams {
            device,
            intra_threads: 0,
        },
    };
    Ok(blindspot::eval::vlm::eval_vlm(&bench, &root, &params, &*progress()).await?)
}

/// `eval correlate` as the CLI, the spec and the demo run it.
pub async fn run_correlate(root: &str, params: CorrelateParams) -> Result<CorrelateSummary> {
    let root = Location::open(root)?;
    Ok(blindspot::eval::correlate::correlate(&root, &params).await?)
}

/// `blindspot annotate`.
pub async fn annotate(a: AnnotateArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let out = Location::open(&a.out)?;
    let s = blindspot::annotate::annotate(&root, &out, a.limit).await?;
    report(a.json, &s, || {
        format!(
            "annotate: {} pairs -> {} (fill in Question, Options, Correct Answer and Pattern, then `blindspot eval mllm --benchmark {}`)",
            s.pairs, s.sheet, out.url
        )
    });
    Ok(())
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:5.1}")
    } else {
        "    -".into()
    }
}

/// A human summary of one evaluation.
pub fn eval_text(s: &EvalSummary) -> String {
    let mut t = format!(
        "eval {}: {} on {}: pair accuracy {}%, question accuracy {}% ({} items, {} without a usable answer) in {:.1}s",
        s.kind.name(),
        s.model,
        s.benchmark,
        pct(s.pair_accuracy).trim(),
        pct(s.question_accuracy).trim(),
        s.questions,
        s.errors,
        s.seconds
    );
    if s.kind == blindspot::eval::Kind::Mllm {
        t += &format!(
            "\n  requests {} ({} answers from the cache)",
            s.requests, s.cached
        );
    }
    t += &format!(
        "\n  {:<22} {:>6} {:>9} {:>9}",
        "pattern", "pairs", "pair %", "quest. %"
    );
    for p in &s.patterns {
        t += &format!(
            "\n  {:<22} {:>6} {:>9} {:>9}",
            p.pattern,
            p.pairs,
            pct(p.pair_accuracy),
            pct(p.question_accuracy)
        );
    }
    t += &format!("\n  answers: {}", s.answers);
    t
}

/// The per-pattern table and the correlations, for people.
pub fn correlate_text(s: &CorrelateSummary) -> String {
    let metric = format!("{:?}", s.metric).to_lowercase();
    let mut t = format!("per-pattern {metric} accuracy (%):\n  {:<34}", "model");
    for p in &s.patterns {
        t += &format!(" {:>8}", p.chars().take(8).collect::<String>());
    }
    for (kind, model, values) in &s.table {
        t += &format!("\n  {:<34}", format!("{model} ({kind})"));
        for v in values {
            t += &format!(" {:>8}", v.map_or("-".into(), pct));
        }
    }
    let r = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:+.3}"));
    t += &format!(
        "\n\ncorrelation across patterns:\n  {:<34} {:<26} {:>8} {:>8} {:>3}",
        "encoder", "mllm", "pearson", "spearman", "n"
    );
    for c in &s.correlations {
        t += &format!(
            "\n  {:<34} {:<26} {:>8} {:>8} {:>3}",
            if c.group {
                format!("{} (group)", c.encoder)
            } else {
                c.encoder.clone()
            },
            c.mllm,
            r(c.pearson),
            r(c.spearman),
            c.n
        );
    }
    if let Some(note) = &s.note {
        t += &format!("\n  {note}");
    }
    for p in &s.plots {
        t += &format!("\n  plot: {p}");
    }
    t
}

/// Builds the clients and parameters of one `[[eval.mllm]]` (or the demo's `--mllm-url`) and
/// runs it.
pub async fn run_mllm_entry(
    m: &MllmEntry,
    benchmark: &str,
    root: &Location,
) -> Result<EvalSummary> {
    let endpoint = EndpointArgs {
        timeout: m.timeout,
        retries: m.retries,
        backoff: m.backoff,
        api_key_env: m.api_key_env.clone(),
    };
    let chat: Arc<dyn Chat> = Arc::new(OpenAiClient::new(
        client_params(
            &m.base_url,
            &m.model,
            &endpoint,
            m.temperature,
            m.max_tokens,
        ),
        Some(root.clone()),
    )?);
    let judge_endpoint = EndpointArgs {
        api_key_env: m
            .judge_api_key_env
            .clone()
            .unwrap_or_else(|| m.api_key_env.clone()),
        ..endpoint.clone()
    };
    let judge: Option<Arc<dyn Chat>> = match &m.judge_model {
        // The paper's judge: temperature 0.2, a one-word reply.
        Some(j) => Some(Arc::new(OpenAiClient::new(
            client_params(
                m.judge_url.as_deref().unwrap_or(&m.base_url),
                j,
                &judge_endpoint,
                0.2,
                16,
            ),
            Some(root.clone()),
        )?)),
        None => None,
    };
    let params = MllmParams {
        template: Template::resolve(&m.template)?,
        grader: m.grader.parse::<Grader>().map_err(anyhow::Error::msg)?,
        concurrency: m.concurrency,
        fix_labels: m.fix_labels,
        patterns: match (&m.patterns, m.categorise) {
            (Some(f), _) => PatternSource::File(f.clone()),
            (None, true) => PatternSource::Categorise,
            (None, false) => PatternSource::None,
        },
    };
    let bench = Location::open(benchmark)?;
    Ok(blindspot::eval::mllm::eval_mllm(&bench, root, chat, judge, &params, &*progress()).await?)
}

/// The `eval` stage of a pipeline spec: synthetic benchmarks when asked for, every encoder,
/// every MLLM, then the correlation.
pub async fn run_stage(r: &blindspot::spec::Resolved, json: bool) -> Result<()> {
    let e = &r.spec.eval;
    let root = &r.root;
    let device: Device = r.spec.encoders.device.parse().map_err(anyhow::Error::msg)?;
    let (mut vlm_bench, mut mllm_bench) = (e.vlm_benchmark.clone(), e.mllm_benchmark.clone());
    if e.synthetic_benchmarks {
        let corpus_url = super::corpus_of(&r.input);
        let corpus = Location::open(&corpus_url)?;
        let bytes = corpus
            .get_bytes(&corpus.path("truth.json"))
            .await
            .map_err(|err| blindspot::Error::storage(format!("{corpus_url}/truth.json"), err))?;
        let truth: blindspot::synth::Truth = serde_json::from_slice(&bytes)?;
        let names_path = e
            .colour_names
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("synthetic benchmarks need colour-names"))?;
        let names =
            blindspot::eval::synthetic::ColourNames::load(std::path::Path::new(names_path))?;
        let (vlm_url, mllm_url) = (
            format!("{}/benchmarks/mmvp-vlm", root.url),
            format!("{}/benchmarks/mmvp", root.url),
        );
        let n = blindspot::eval::synthetic::write_benchmarks(
            &corpus,
            &truth,
            &names,
            &Location::open(&vlm_url)?,
            &Location::open(&mllm_url)?,
        )
        .await?;
        if !json {
            println!("benchmarks: {n} pairs from {corpus_url}/truth.json -> {vlm_url} (MMVP-VLM), {mllm_url} (MMVP)");
        }
        vlm_bench.get_or_insert(vlm_url);
        mllm_bench.get_or_insert(mllm_url);
    }
    for v in &e.vlm {
        let bench = vlm_bench
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("[eval] vlm-benchmark is not set"))?;
        let s = run_vlm(
            bench,
            std::path::Path::new(&v.image),
            std::path::Path::new(&v.text),
            &root.url,
            device,
        )
        .await?;
        report(json, &s, || eval_text(&s));
    }
    if e.mllm.is_empty() && !json {
        println!("eval mllm: skipped, no MLLM endpoint configured ([[eval.mllm]] in the spec, or `blindspot demo --mllm-url URL --mllm-model NAME`)");
    }
    for m in &e.mllm {
        let bench = mllm_bench
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("[eval] mllm-benchmark is not set"))?;
        let s = run_mllm_entry(m, bench, root).await?;
        report(json, &s, || eval_text(&s));
    }
    let c = &e.correlate;
    let s = run_correlate(
        &root.url,
        CorrelateParams {
            metric: c.metric,
            groups: c.groups.clone().into_iter().collect(),
            csv: c.scores.clone(),
            plots: c.plots,
        },
    )
    .await?;
    report(json, &s, || correlate_text(&s));
    Ok(())
}
