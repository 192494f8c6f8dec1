//! `blindspot validate`, `run` and `demo`: the spec runner, which alone (with the spec) knows
//! the order of stages.

use blindspot::report::ReportParams;
use blindspot::stage::Stage;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use blindspot::eval::mllm::MllmEntry;
use blindspot::spec;
use blindspot::storage::Location;
use blindspot::synth::{self, SynthFormat};
use clap::Args;

use super::embed::report_embed;
use super::{checkout, eval, progress, report};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the demo writes its corpus (`corpus/`) and run root (`run/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Corpus layout.
    #[arg(long, value_enum, default_value_t = SynthFormat::Folder)]
    pub format: SynthFormat,
    /// Also evaluate an MLLM at this OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1).
    #[arg(long, requires = "mllm_model")]
    pub mllm_url: Option<String>,
    /// The model name the --mllm-url endpoint serves.
    #[arg(long, requires = "mllm_url")]
    pub mllm_model: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn validate(path: &Path) -> Result<()> {
    let resolved = load_spec(path).await?;
    let stages: Vec<Stage> = resolved.jobs.iter().map(spec::Job::stage).collect();
    println!(
        "{}: ok (stages {:?}; input {}; root {})",
        path.display(),
        stages,
        resolved.input.url,
        resolved.root.url
    );
    let mut shown = std::collections::BTreeSet::new();
    for (what, e) in resolved.jobs.iter().flat_map(spec::Job::encoders) {
        if shown.insert(what) {
            println!("  {what} {} (dim {})", e.manifest().id, e.manifest().dim);
        }
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

pub async fn run(path: &Path, json: bool) -> Result<()> {
    let resolved = load_spec(path).await?;
    run_resolved(resolved, json).await
}

async fn run_resolved(mut r: spec::Resolved, json: bool) -> Result<()> {
    use spec::Job;
    for job in std::mem::take(&mut r.jobs) {
        tracing::info!(stage = %job.stage(), "stage starts");
        match job {
            Job::Synth(params) => {
                let out = Location::open(&synth::corpus_of(&r.input))?;
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
            Job::Embed { params, clip, dino } => {
                let summary =
                    blindspot::embed::embed(&r.input, &r.root, clip, dino, &params, progress())
                        .await?;
                report_embed(&summary, &r.input, &r.root, json);
            }
            Job::Index(params) => {
                let s = blindspot::mine::index::index(&r.root, &params, progress()).await?;
                report(json, &s, || {
                    format!(
                        "index: {} unique vectors ({} exact duplicates collapsed) in {:.1}s",
                        s.vectors, s.duplicates, s.seconds
                    )
                });
            }
            Job::Partition(params) => {
                let s = blindspot::mine::partition::partition(&r.root, &params, progress()).await?;
                report(json, &s, || super::mine::partition_text(&s));
            }
            Job::Candidates(params) => {
                let s = blindspot::mine::candidates::candidates(
                    &r.root,
                    &params,
                    None,
                    None,
                    None,
                    progress(),
                )
                .await?;
                report(json, &s, || {
                    super::mine::candidates_text(&s, params.clip_min)
                });
            }
            Job::Dino { params, encoder } => {
                let s = blindspot::sift::dino::dino(&r.root, encoder, &params, progress()).await?;
                report(json, &s, || super::sift::dino_text(&s));
            }
            Job::Filter(params) => {
                let s = blindspot::sift::filter::filter_with(&r.root, &params, progress()).await?;
                report(json, &s, || super::sift::filter_text(&s, params.dino_max));
            }
            Job::Eval => eval::run_stage(&r, json).await?,
            Job::Report(params, out) => {
                let s = super::report::run_report(&r.root.url, &out, &params).await?;
                report(json, &s, || super::report::report_text(&s));
            }
        }
    }
    Ok(())
}

pub async fn demo(a: DemoArgs) -> Result<()> {
    let spec_path = checkout().join("pipelines/demo.toml");
    let text = std::fs::read_to_string(&spec_path).with_context(|| {
        format!(
            "reading {} (the demo needs the checkout's pipelines/ and models/tiny/: set BLINDSPOT_HOME to a folder that has them)",
            spec_path.display()
        )
    })?;
    let mut parsed = spec::parse(&spec_path, &text)?;
    if let Some(out) = &a.out {
        let out = std::path::absolute(out).context("resolving --out")?;
        parsed.run.input = out.join("corpus/images").to_string_lossy().into_owned();
        parsed.run.root = out.join("run").to_string_lossy().into_owned();
    }
    parsed.synth.format = a.format;
    if let (Some(url), Some(model)) = (&a.mllm_url, &a.mllm_model) {
        parsed.eval.mllm.push(MllmEntry::new(url, model));
    }
    let resolved = spec::resolve(&spec_path, parsed).await?;
    let root = resolved.root.clone();
    let input = resolved.input.url.clone();
    let corpus = synth::corpus_of(&resolved.input);
    let colours = resolved.spec.eval.colour_names.clone();
    run_resolved(resolved, a.json).await?;
    if !a.json {
        print_demo_summary(&root, &corpus).await?;
    }
    clip_first(&input, &root, a.json).await?;
    // Beside the first root (`<out>/run`): `<out>/sheet`, `<out>/benchmark`, `<out>/report`.
    let base = match root.url.strip_suffix("/run") {
        Some(base) => base.to_string(),
        None => root.url.trim_end_matches('/').to_string(),
    };
    let endpoint = Endpoint::of(&a, &corpus, colours.as_deref()).await?;
    let drafts = drafted_loop(&endpoint, &root, &base, a.json).await?;
    let site = match root.url.strip_suffix("/run") {
        Some(base) => format!("{base}/report"),
        None => format!("{}-report", root.url.trim_end_matches('/')),
    };
    let params = ReportParams {
        drafts: Some(drafts),
        ..ReportParams::default()
    };
    let s = super::report::run_report(&root.url, &site, &params).await?;
    super::report(a.json, &s, || {
        format!("\n{}", super::report::report_text(&s))
    });
    Ok(())
}

/// Who drafts, verifies and answers in the demo's last leg: the `--mllm-url` model for all
/// three, or the scripted endpoint (not a model), which the demo labels as such.
struct Endpoint {
    url: String,
    drafter: String,
    verifier: String,
    mllm: String,
    /// The scripted endpoint, kept running while the demo needs it.
    scripted: Option<blindspot::eval::scripted::Scripted>,
}

impl Endpoint {
    async fn of(a: &DemoArgs, corpus: &str, colours: Option<&str>) -> Result<Endpoint> {
        if let (Some(url), Some(model)) = (&a.mllm_url, &a.mllm_model) {
            return Ok(Endpoint {
                url: url.clone(),
                drafter: model.clone(),
                verifier: model.clone(),
                mllm: model.clone(),
                scripted: None,
            });
        }
        use blindspot::eval::{scripted, synthetic};
        let corpus = Location::open(corpus)?;
        let truth = synth::read_truth(&corpus).await?;
        let names = colours.context("the demo spec names no colour-names file")?;
        let names = synthetic::ColourNames::load(Path::new(names))?;
        let server =
            scripted::start(synthetic::known_images(&corpus, &truth, &names).await?).await?;
        Ok(Endpoint {
            url: server.url.clone(),
            drafter: scripted::DRAFTER.into(),
            verifier: scripted::VERIFIER.into(),
            mllm: scripted::MLLM.into(),
            scripted: Some(server),
        })
    }
}

/// The demo's last leg: mined pairs -> an annotation sheet -> drafted, verified questions ->
/// a benchmark -> an evaluation with every metric (sampled three times, without the image,
/// with the options swapped) and the debiased comparison. Returns the drafts file for the
/// report.
async fn drafted_loop(e: &Endpoint, root: &Location, base: &str, json: bool) -> Result<String> {
    use blindspot::eval::draft::{draft, DraftSettings};
    if !json {
        println!("\nfrom mined pairs to a benchmark (annotate -> draft -> eval mllm):");
        match &e.scripted {
            Some(s) => println!(
                "  no --mllm-url: drafting, verification and answers come from blindspot's SCRIPTED endpoint at {} — a script that knows the synthetic corpus, NOT a model ({}, {}, {}; the last is scripted to be blind to orientation)",
                s.url, e.drafter, e.verifier, e.mllm
            ),
            None => println!("  the model {} at {} drafts, verifies and answers", e.mllm, e.url),
        }
    }
    let sheet = Location::open(&format!("{base}/sheet"))?;
    let bench = format!("{base}/benchmark");
    let s = blindspot::annotate::annotate(root, &sheet, None, None, false).await?;
    report(json, &s, || {
        format!("  annotate: {} pairs -> {}", s.pairs, sheet.url)
    });
    let mut settings = DraftSettings::new(&e.url, &e.drafter);
    settings.verify_model = Some(e.verifier.clone());
    settings.questions = 2;
    let d = draft(&sheet, &settings, &*progress()).await?;
    report(json, &d, || {
        format!(
            "  draft: {} pairs, {} drafted ({} failed), {} verified, {} blind-answerable; {} fill the sheet, {} with a second question (reasons and answers in {})",
            d.pairs, d.drafted, d.failed, d.verified, d.blind_answerable, d.in_sheet, d.second_questions, d.drafts
        )
    });
    if d.in_sheet == 0 {
        // A model that drafted nothing usable is a finding, not a failure of the demo.
        if !json {
            println!("  no draft was verified, so no benchmark was written and nothing evaluated on one; review the drafts in the report");
        }
        return Ok(d.drafts);
    }
    let items =
        blindspot::eval::draft::write_sheet_benchmark(&sheet, &Location::open(&bench)?).await?;
    if !json {
        println!(
            "  benchmark: {items} items for {} pairs, {} of them with a second question -> {bench}",
            d.in_sheet, d.second_questions
        );
    }
    evaluate_drafted(e, root, &bench, json).await?;
    Ok(d.drafts)
}

/// The drafted benchmark evaluated three ways (sampled with repeats, no image, options
/// swapped), then the model against its swapped run.
async fn evaluate_drafted(e: &Endpoint, root: &Location, bench: &str, json: bool) -> Result<()> {
    let mut benchmark = None;
    for (repeats, no_image, swap) in [(3, false, false), (1, true, false), (1, false, true)] {
        let mut m = MllmEntry::new(&e.url, &e.mllm);
        (m.temperature, m.repeats, m.no_image, m.swap_options) = (0.7, repeats, no_image, swap);
        let s = eval::run_mllm_entry(&m, bench, root).await?;
        report(json, &s, || eval::eval_text(&s));
        benchmark.get_or_insert(s.benchmark);
    }
    let swapped = format!("{} [swapped]", e.mllm);
    let boot = blindspot::eval::stats::Bootstrap::default();
    let c = blindspot::eval::compare::compare(root, &e.mllm, &swapped, benchmark.as_deref(), &boot)
        .await?;
    report(json, &c, || eval::compare_text(&c));
    Ok(())
}

/// The demo's second order: `pipelines/clip-first.toml` on the same corpus (CLIP on every
/// image, DINOv2 on candidate images only), into `<root>-clip-first`; its pairs must equal
/// the first run's.
async fn clip_first(input: &str, root: &Location, json: bool) -> Result<()> {
    let spec_path = checkout().join("pipelines/clip-first.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    let mut parsed = spec::parse(&spec_path, &text)?;
    parsed.run.input = input.to_string();
    parsed.run.root = format!("{}-clip-first", root.url);
    if !json {
        println!(
            "
the other order, {} (CLIP on every image, DINOv2 on candidate images only):",
            spec_path.display()
        );
    }
    let resolved = spec::resolve(&spec_path, parsed).await?;
    let second = resolved.root.clone();
    run_resolved(resolved, json).await?;
    let (a, b) = (pair_rows(root).await?, pair_rows(&second).await?);
    if a != b {
        anyhow::bail!(
            "the two orders disagree: {} pairs in {} but {} in {}",
            a.len(),
            root.url,
            b.len(),
            second.url
        );
    }
    if !json {
        println!(
            "  both orders give the same {} pairs, similarities bit for bit ({} and {})",
            a.len(),
            root.url,
            second.url
        );
    }
    Ok(())
}

/// The `pairs` of a root as (a, b, clip_sim bits, dino_sim bits), sorted.
async fn pair_rows(root: &Location) -> Result<Vec<(String, String, u32, u32)>> {
    let (ctx, tables) = blindspot::sql::session(root).await?;
    let df = blindspot::sql::query(
        &ctx,
        &tables,
        "SELECT a, b, clip_sim, dino_sim FROM pairs ORDER BY a, b",
    )
    .await?;
    let mut out = Vec::new();
    for batch in blindspot::sql::collect(df).await? {
        let a = blindspot::table::io::strings(&batch, "a")?;
        let b = blindspot::table::io::strings(&batch, "b")?;
        let c = blindspot::table::io::floats(&batch, "clip_sim")?;
        let d = blindspot::table::io::floats(&batch, "dino_sim")?;
        for i in 0..batch.num_rows() {
            out.push((
                a.value(i).to_string(),
                b.value(i).to_string(),
                c.value(i).to_bits(),
                d.value(i).to_bits(),
            ));
        }
    }
    Ok(out)
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
    println!("\noutputs under {}: embeddings/, errors/, partition/, duplicates/, candidates/, pairs/ (query them with `blindspot sql --root {}`)", root.url, root.url);
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
        let a = blindspot::table::io::strings(&batch, "a")?;
        let b = blindspot::table::io::strings(&batch, "b")?;
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
