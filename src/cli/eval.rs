//! `blindspot eval ...` and `blindspot annotate`: arguments, then one library call, then a
//! summary.

use std::path::PathBuf;

use anyhow::Result;
use blindspot::encoder::runtime::Device;
use blindspot::encoder::SessionParams;
use blindspot::eval::correlate::{CorrelateParams, CorrelateSummary};
use blindspot::eval::mllm::MllmEntry;
use blindspot::eval::stats::Bootstrap;
use blindspot::eval::vlm::VlmParams;
use blindspot::eval::{EvalSummary, Metric};
use blindspot::storage::Location;
use clap::{Args, Subcommand};

use super::{progress, report};

/// The eval commands.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Ask an MLLM (OpenAI-compatible endpoint) every MMVP question; grade and score.
    Mllm(Box<MllmArgs>),
    /// Score CLIP image + text towers (ONNX) on an MMVP-VLM benchmark.
    Vlm(VlmArgs),
    /// Correlate encoders' and MLLMs' per-pattern scores; write tables and PNG plots.
    Correlate(CorrelateArgs),
    /// Write the MLLM evaluations in lmms-eval's or VLMEvalKit's output layout.
    Export(ExportArgs),
    /// Compare two MLLMs' pair accuracy on the pairs both answered: the difference with a
    /// paired bootstrap interval and McNemar's exact p, overall and per pattern.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run root with both models' evaluations.
    #[arg(long)]
    pub root: String,
    /// Model A.
    #[arg(long)]
    pub a: String,
    /// Model B.
    #[arg(long)]
    pub b: String,
    /// The benchmark (needed when both models answered several).
    #[arg(long)]
    pub benchmark: Option<String>,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Print the comparison as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The bootstrap flags of the commands that give intervals.
#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// Bootstrap resamples of the intervals (0: none).
    #[arg(long, default_value_t = blindspot::eval::mllm::default_bootstrap())]
    pub bootstrap: u32,
    /// The bootstrap's seed.
    #[arg(long, default_value_t = 0)]
    pub bootstrap_seed: u64,
}

impl BootstrapArgs {
    fn params(&self) -> Bootstrap {
        Bootstrap {
            resamples: self.bootstrap,
            seed: self.bootstrap_seed,
            ..Bootstrap::default()
        }
    }
}

/// A comparison as a table, with what it means.
pub fn compare_text(s: &blindspot::eval::compare::CompareSummary) -> String {
    let mut t = format!(
        "eval compare on {}: A = {}, B = {} (intervals: {})\n{:<28} {:>5} {:>7} {:>7} {:>8} {:>18} {:>6} {:>6} {:>9} {:>7}",
        s.benchmark, s.a, s.b, s.interval, "pattern", "pairs", "A %", "B %", "A-B", "interval", "A only", "B only", "McNemar p", "both %"
    );
    for r in &s.rows {
        let interval = r
            .interval
            .map_or("-".to_string(), |(l, h)| format!("[{l:+.1}, {h:+.1}]"));
        t.push_str(&format!(
            "\n{:<28} {:>5} {:>7.1} {:>7.1} {:>+8.1} {:>18} {:>6} {:>6} {:>9.4} {:>7.1}",
            r.pattern,
            r.pairs,
            r.a_accuracy,
            r.b_accuracy,
            r.difference,
            interval,
            r.only_a,
            r.only_b,
            r.mcnemar_p,
            r.both_accuracy
        ));
    }
    if let Some(all) = s.rows.first() {
        let spans_zero = all.interval.is_none_or(|(l, h)| l <= 0.0 && 0.0 <= h);
        t.push_str(&match (all.mcnemar_p < 0.05, spans_zero) {
            (true, false) => format!(
                "\nOverall the difference of {:+.1} points is unlikely to be noise (p = {:.4}).",
                all.difference, all.mcnemar_p
            ),
            _ => format!(
                "\nOverall the difference of {:+.1} points over {} pairs is within the noise (p = {:.4}{}).",
                all.difference,
                all.pairs,
                all.mcnemar_p,
                if spans_zero { "; the interval spans 0" } else { "" }
            ),
        });
    }
    t
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run root with committed evaluations.
    #[arg(long)]
    pub root: String,
    /// Which harness's layout.
    #[arg(long)]
    pub format: blindspot::eval::export::Format,
    /// Where the files go (a folder or URL).
    #[arg(long)]
    pub out: String,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MllmArgs {
    /// The MMVP benchmark: a folder or URL holding Questions.csv and `MMVP Images/`.
    #[arg(long)]
    pub benchmark: String,
    /// Run root: answers, scores and the response cache go under it.
    #[arg(long, alias = "root")]
    pub out: String,
    #[command(flatten)]
    pub entry: MllmEntry,
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
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
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
    /// A decisions file exported from the report's gallery (CSV or JSON): export exactly its
    /// accepted pairs, with the pattern and note the reviewer gave each.
    #[arg(long)]
    pub decisions: Option<String>,
    /// Export every pair, instead of one pair per pair of near-duplicate groups (its most
    /// CLIP-blind member pair).
    #[arg(long)]
    pub every_pair: bool,
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

/// Runs one eval command.
pub async fn dispatch(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Mllm(a) => {
            let root = Location::open(&a.out)?;
            let s = run_mllm_entry(&a.entry, &a.benchmark, &root).await?;
            report(a.json, &s, || eval_text(&s));
            Ok(())
        }
        EvalCommand::Vlm(a) => {
            let bootstrap = a.bootstrap.params();
            let s = run_vlm(&a.benchmark, &a.image, &a.text, &a.out, a.device, bootstrap).await?;
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
        EvalCommand::Compare(a) => {
            let root = Location::open(&a.root)?;
            let boot = a.bootstrap.params();
            let s =
                blindspot::eval::compare::compare(&root, &a.a, &a.b, a.benchmark.as_deref(), &boot)
                    .await?;
            report(a.json, &s, || compare_text(&s));
            Ok(())
        }
        EvalCommand::Export(a) => {
            let root = Location::open(&a.root)?;
            let out = Location::open(&a.out)?;
            let s = blindspot::eval::export::export(&root, &out, a.format).await?;
            report(a.json, &s, || {
                let mut t = format!(
                    "eval export: {} MLLM evaluation(s), {} items -> {}",
                    s.evaluations, s.items, out.url
                );
                if s.skipped_vlm > 0 {
                    t.push_str(&format!(
                        " ({} vision-encoder evaluation(s) left out: neither format has them)",
                        s.skipped_vlm
                    ));
                }
                for f in &s.files {
                    t.push_str(&format!("\n  {f}"));
                }
                t
            });
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
    bootstrap: Bootstrap,
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
        bootstrap,
    };
    Ok(blindspot::eval::vlm::eval_vlm(&bench, &root, &params, &*progress()).await?)
}

/// `eval correlate` as the CLI, the spec and the demo run it.
pub async fn run_correlate(root: &str, params: CorrelateParams) -> Result<CorrelateSummary> {
    let root = Location::open(root)?;
    Ok(blindspot::eval::correlate::correlate(&root, &params).await?)
}

/// `blindspot annotate`.
#[derive(Args, Debug)]
pub struct DraftArgs {
    /// The annotation sheet (`blindspot annotate --out`): Questions.csv and MMVP Images/.
    pub sheet: String,
    #[command(flatten)]
    pub settings: blindspot::eval::draft::DraftSettings,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn draft(a: DraftArgs) -> Result<()> {
    let sheet = Location::open(&a.sheet)?;
    let s = blindspot::eval::draft::draft(&sheet, &a.settings, &*progress()).await?;
    report(a.json, &s, || {
        format!(
            "draft: {} pairs: {} drafted ({} failed), {} verified, {} disputed or unanswered, {} answerable without the image; {} fill the sheet ({} requests, {} cached) -> {}",
            s.pairs,
            s.drafted,
            s.failed,
            s.verified,
            s.disputed,
            s.blind_answerable,
            s.in_sheet,
            s.requests,
            s.cached,
            s.drafts
        )
    });
    if s.drafted == 0 {
        anyhow::bail!(blindspot::Error::Usage(format!(
            "no pair of {} got a usable draft; the reasons are in {}",
            a.sheet, s.drafts
        )));
    }
    Ok(())
}

pub async fn annotate(a: AnnotateArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let out = Location::open(&a.out)?;
    let s =
        blindspot::annotate::annotate(&root, &out, a.limit, a.decisions.as_deref(), a.every_pair)
            .await?;
    report(a.json, &s, || {
        let from = s.decisions.as_ref().map_or(String::new(), |d| {
            format!(
                " (accepted in the decisions file; {} rejected, {} undecided left out)",
                d.rejected, d.undecided
            )
        });
        format!(
            "annotate: {} pairs{from} -> {} (fill in Question, Options, Correct Answer and Pattern, then `blindspot eval mllm --benchmark {}`)",
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
        t += &format!(
            "\n  answer bias: {}% of answers chose (a)",
            pct(s.a_share).trim()
        );
        if s.agreement.is_finite() {
            t += &format!(
                "; repeats agree {}% with each item's most frequent answer, {}% of items flip",
                pct(s.agreement).trim(),
                pct(s.flip_share).trim()
            );
        }
        let n = &s.natural;
        t += &match n.groups {
            0 => "\n  NaturalBench Q-Acc, I-Acc, G-Acc: none (no pair asks two questions of two images)".to_string(),
            g => format!(
                "\n  NaturalBench over {g} pairs of two questions and two images: Q-Acc {}%, I-Acc {}%, G-Acc {}%",
                pct(n.q_acc).trim(),
                pct(n.i_acc).trim(),
                pct(n.g_acc).trim()
            ),
        };
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
    let metric = s.metric.name();
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

/// One `[[eval.mllm]]` (or the flags of `eval mllm`, or the demo's `--mllm-url`).
pub async fn run_mllm_entry(
    m: &MllmEntry,
    benchmark: &str,
    root: &Location,
) -> Result<EvalSummary> {
    let bench = Location::open(benchmark)?;
    Ok(blindspot::eval::mllm::eval_entry(m, &bench, root, &*progress()).await?)
}

/// The `eval` stage of a pipeline spec: synthetic benchmarks when asked for, every encoder,
/// every MLLM, then the correlation.
pub async fn run_stage(r: &blindspot::spec::Resolved, json: bool) -> Result<()> {
    let e = &r.spec.eval;
    let root = &r.root;
    let device: Device = r.spec.encoders.device.parse().map_err(anyhow::Error::msg)?;
    let (mut vlm_bench, mut mllm_bench) = (e.vlm_benchmark.clone(), e.mllm_benchmark.clone());
    if e.synthetic_benchmarks {
        let corpus_url = blindspot::synth::corpus_of(&r.input);
        let corpus = Location::open(&corpus_url)?;
        let truth = blindspot::synth::read_truth(&corpus).await?;
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
            Bootstrap {
                resamples: v.bootstrap,
                seed: v.bootstrap_seed,
                ..Bootstrap::default()
            },
        )
        .await?;
        report(json, &s, || eval_text(&s));
    }
    if e.mllm.is_empty() && !json {
        println!("eval mllm on {}: skipped, no MLLM endpoint configured ([[eval.mllm]] in the spec, or `blindspot demo --mllm-url URL --mllm-model NAME`)", mllm_bench.as_deref().unwrap_or("the MMVP benchmark"));
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
