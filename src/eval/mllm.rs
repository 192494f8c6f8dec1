//! MLLM evaluation on MMVP: every question asked of an OpenAI-compatible endpoint with its
//! image, with bounded concurrency; each reply graded, recorded as an `answers` row with its
//! prompt, raw response, latency and attempt count; and scores per pattern.

use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::eval::benchmark::{self, Mmvp, Question};
use crate::eval::client::{Chat, ClientParams, Image, OpenAiClient, Reply};
use crate::eval::grade::{self, Grader};
use crate::eval::patterns::{self, Mapping};
use crate::eval::stats::Bootstrap;
use crate::eval::{self as ev, read_text, AnswerRow, EvalSummary, Kind};
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::{segment_id, Location};
use crate::units;

/// One `[[eval.mllm]]`, and the flags of `blindspot eval mllm`: an OpenAI-compatible
/// endpoint and how to ask and grade. One struct for both, so the two never drift apart.
#[derive(Clone, Debug, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MllmEntry {
    /// The endpoint's base URL, e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    pub base_url: String,
    /// The model name the endpoint serves.
    #[arg(long)]
    pub model: String,
    /// Environment variable holding the API key (sent as a bearer token when set).
    #[serde(default = "default_key_env")]
    #[arg(long, default_value_t = default_key_env())]
    pub api_key_env: String,
    /// Prompt template: `paper` (question + " " + options), `letter` (asks for the option
    /// letter) or a file with {question} and {options}.
    #[serde(default = "default_template")]
    #[arg(long, default_value_t = default_template())]
    pub template: String,
    /// Grader: exact (the reply is a letter), rules (finds the option in free text) or judge
    /// (an LLM says yes or no, as in the paper).
    #[serde(default = "default_grader")]
    #[arg(long, default_value_t = default_grader(), value_parser = ["exact", "rules", "judge"])]
    pub grader: String,
    /// The judge's model (for the judge grader and for categorising).
    #[serde(default)]
    #[arg(long)]
    pub judge_model: Option<String>,
    /// The judge's base URL [default: base-url].
    #[serde(default)]
    #[arg(long)]
    pub judge_url: Option<String>,
    /// Environment variable with the judge's API key [default: api-key-env], so that a hosted
    /// judge's key is not sent to a local model server.
    #[serde(default)]
    #[arg(long)]
    pub judge_api_key_env: Option<String>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    #[arg(long, default_value_t = default_concurrency())]
    pub concurrency: usize,
    /// Seconds before one request is given up (and retried).
    #[serde(default = "default_timeout")]
    #[arg(long, default_value_t = default_timeout())]
    pub timeout: f64,
    /// Retries after the first attempt on 429, 5xx, timeouts and malformed replies.
    #[serde(default = "default_retries")]
    #[arg(long, default_value_t = default_retries())]
    pub retries: u32,
    /// First backoff in seconds (doubled per retry; Retry-After wins when sent).
    #[serde(default = "default_backoff")]
    #[arg(long, default_value_t = default_backoff())]
    pub backoff: f64,
    /// Sampling temperature (0: greedy decoding).
    #[serde(default)]
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Longest reply in tokens.
    #[serde(default = "default_max_tokens")]
    #[arg(long, default_value_t = default_max_tokens())]
    pub max_tokens: u32,
    /// Apply the known MMVP label fix (items 99/100 and 279/280); recorded in the outputs.
    #[serde(default)]
    #[arg(long)]
    pub fix_labels: bool,
    /// Pattern mapping file (CSV with index,pattern) for sheets without a pattern column.
    #[serde(default)]
    #[arg(long, conflicts_with = "categorise")]
    pub patterns: Option<String>,
    /// Ask the judge (or the model) for each pair's pattern; saved under the run root.
    #[serde(default)]
    #[arg(long)]
    pub categorise: bool,
    /// Bootstrap resamples for the scores' confidence intervals (0: none).
    #[serde(default = "default_bootstrap")]
    #[arg(long, default_value_t = default_bootstrap())]
    pub bootstrap: u32,
    /// The bootstrap's seed.
    #[serde(default)]
    #[arg(long, default_value_t = 0)]
    pub bootstrap_seed: u64,
    /// Ask every question without its image: the text-only baseline, scored as model
    /// `<model> [no image]` beside the real one (a model that scores the same without the
    /// image is not looking).
    #[serde(default)]
    #[arg(long)]
    pub no_image: bool,
    /// Ask every two-option question with its options swapped (the answer follows), scored as
    /// model `<model> [swapped]`; `eval compare` of the two runs gives the debiased pair
    /// accuracy (pairs right in both orders).
    #[serde(default)]
    #[arg(long)]
    pub swap_options: bool,
    /// Ask every question this many times (with --temperature above 0): the summary and
    /// `scores` give per-item agreement across the samples and the share of items whose
    /// answer flips. The first sample is the one scored.
    #[serde(default = "default_repeats")]
    #[arg(long, default_value_t = default_repeats())]
    pub repeats: u32,
}

fn default_repeats() -> u32 {
    1
}

/// The default number of bootstrap resamples.
pub fn default_bootstrap() -> u32 {
    Bootstrap::default().resamples
}

impl MllmEntry {
    /// An endpoint with every other setting at its default.
    pub fn new(base_url: &str, model: &str) -> MllmEntry {
        MllmEntry {
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key_env: default_key_env(),
            template: default_template(),
            grader: default_grader(),
            judge_model: None,
            judge_url: None,
            judge_api_key_env: None,
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            retries: default_retries(),
            backoff: default_backoff(),
            temperature: 0.0,
            max_tokens: default_max_tokens(),
            fix_labels: false,
            patterns: None,
            categorise: false,
            bootstrap: default_bootstrap(),
            bootstrap_seed: 0,
            no_image: false,
            swap_options: false,
            repeats: default_repeats(),
        }
    }
}

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_template() -> String {
    "paper".into()
}
fn default_grader() -> String {
    "rules".into()
}
fn default_concurrency() -> usize {
    8
}
fn default_timeout() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    4
}
fn default_backoff() -> f64 {
    1.0
}
fn default_max_tokens() -> u32 {
    256
}

/// A prompt template: `{question}` and `{options}` are replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// Its name in the tables.
    pub name: String,
    /// The text.
    pub text: String,
}

impl Template {
    /// The paper's prompt: the question, a space, the options.
    pub fn paper() -> Template {
        Template {
            name: "paper".into(),
            text: "{question} {options}".into(),
        }
    }

    /// Asks for the option's letter only (the LLaVA evaluation prompt).
    pub fn letter() -> Template {
        Template {
            name: "letter".into(),
            text: "{question} {options}\nAnswer with the option's letter from the given choices directly.".into(),
        }
    }

    /// A built-in template by name, or a file whose stem names it.
    pub fn resolve(spec: &str) -> Result<Template> {
        match spec {
            "paper" => return Ok(Template::paper()),
            "letter" => return Ok(Template::letter()),
            _ => {}
        }
        let path = PathBuf::from(spec);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Usage(format!(
                "template {spec:?} is neither `paper`, `letter` nor a readable file: {e}"
            ))
        })?;
        if !text.contains("{question}") {
            return Err(Error::Usage(format!(
                "template {spec} must contain {{question}} (and usually {{options}})"
            )));
        }
        let name = path
            .file_stem()
            .map_or("custom".into(), |s| s.to_string_lossy().to_string());
        Ok(Template {
            name,
            text: text.trim_end_matches('\n').to_string(),
        })
    }

    /// The prompt for one question.
    pub fn render(&self, q: &Question) -> String {
        self.text
            .replace("{question}", &q.question)
            .replace("{options}", &q.options)
    }
}

/// Where patterns come from when the sheet has none.
#[derive(Clone, Debug, Default)]
pub enum PatternSource {
    /// Items stay `unassigned`.
    #[default]
    None,
    /// A mapping file (`index,pattern` CSV), local path or URL.
    File(String),
    /// Ask the LLM judge's client (or the evaluated model) and save the mapping under the run
    /// root for review; an existing saved mapping is reused.
    Categorise,
}

/// What `eval mllm` needs besides the clients, benchmark and run root.
#[derive(Clone, Debug)]
pub struct MllmParams {
    /// The prompt template.
    pub template: Template,
    /// The grader.
    pub grader: Grader,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Apply the known MMVP label fix.
    pub fix_labels: bool,
    /// Where patterns come from.
    pub patterns: PatternSource,
    /// How the scores' intervals are computed.
    pub bootstrap: Bootstrap,
    /// The text-only baseline: no image is sent.
    pub no_image: bool,
    /// Every question's two options swapped.
    pub swap_options: bool,
    /// Samples per question (1: one).
    pub repeats: u32,
}

impl Default for MllmParams {
    fn default() -> Self {
        MllmParams {
            template: Template::paper(),
            grader: Grader::Rules,
            concurrency: 8,
            fix_labels: false,
            no_image: false,
            swap_options: false,
            repeats: 1,
            patterns: PatternSource::None,
            bootstrap: Bootstrap::default(),
        }
    }
}

/// Client settings for one endpoint of an entry.
fn client_params(
    m: &MllmEntry,
    base_url: &str,
    model: &str,
    api_key_env: &str,
    temperature: f32,
    max_tokens: u32,
) -> ClientParams {
    ClientParams {
        base_url: base_url.to_string(),
        model: model.to_string(),
        api_key_env: api_key_env.to_string(),
        timeout: std::time::Duration::from_secs_f64(m.timeout.max(0.001)),
        retries: m.retries,
        backoff: std::time::Duration::from_secs_f64(m.backoff.max(0.0)),
        temperature,
        max_tokens,
        ..ClientParams::default()
    }
}

/// Runs one `[[eval.mllm]]` (or the flags of `blindspot eval mllm`): builds the model's client
/// and the judge's, both caching under `root`, and evaluates the MMVP benchmark at `bench`.
pub async fn eval_entry(
    m: &MllmEntry,
    bench: &Location,
    root: &Location,
    progress: &dyn Progress,
) -> Result<EvalSummary> {
    if m.repeats > 1 && m.temperature <= 0.0 {
        return Err(Error::Usage(format!(
            "--repeats {} needs --temperature above 0: greedy decoding gives the same answer every time",
            m.repeats
        )));
    }
    let chat = OpenAiClient::new(
        client_params(
            m,
            &m.base_url,
            &m.model,
            &m.api_key_env,
            m.temperature,
            m.max_tokens,
        ),
        Some(root.clone()),
    )?;
    let judge = match &m.judge_model {
        // The paper's judge: temperature 0.2, a one-word reply.
        Some(j) => Some(OpenAiClient::new(
            client_params(
                m,
                m.judge_url.as_deref().unwrap_or(&m.base_url),
                j,
                m.judge_api_key_env.as_deref().unwrap_or(&m.api_key_env),
                0.2,
                16,
            ),
            Some(root.clone()),
        )?),
        None => None,
    };
    let params = MllmParams {
        template: Template::resolve(&m.template)?,
        grader: m.grader.parse().map_err(Error::Usage)?,
        concurrency: m.concurrency,
        fix_labels: m.fix_labels,
        patterns: match (&m.patterns, m.categorise) {
            (Some(f), _) => PatternSource::File(f.clone()),
            (None, true) => PatternSource::Categorise,
            (None, false) => PatternSource::None,
        },
        bootstrap: Bootstrap {
            resamples: m.bootstrap,
            seed: m.bootstrap_seed,
            ..Bootstrap::default()
        },
        no_image: m.no_image,
        swap_options: m.swap_options,
        repeats: m.repeats.max(1),
    };
    let judge = judge.as_ref().map(|j| j as &dyn Chat);
    eval_mllm(bench, root, &chat, judge, &params, progress).await
}

/// Where a categorisation's mapping is saved under the run root.
pub fn saved_mapping(benchmark: &str) -> String {
    format!("eval/patterns/{}.csv", segment_id(benchmark))
}

/// Fills in the pattern of every question that the sheet left without one.
async fn assign_patterns(
    b: &mut Mmvp,
    source: &PatternSource,
    root: &Location,
    categoriser: &dyn Chat,
) -> Result<()> {
    let mapping: Mapping = match source {
        PatternSource::None => Mapping::new(),
        PatternSource::File(f) => patterns::parse_mapping(&read_text(f).await?, f)?,
        PatternSource::Categorise => {
            // The saved mapping is reused for the items it covers; only the rest are asked,
            // so a rerun fills the gaps a failed categorisation left.
            let rel = saved_mapping(&b.name);
            let uri = root.uri_of(&root.path(&rel));
            let mut m = match root.get_bytes(&root.path(&rel)).await {
                Ok(bytes) => patterns::parse_mapping(&String::from_utf8_lossy(&bytes), &rel)?,
                Err(object_store::Error::NotFound { .. }) => Mapping::new(),
                Err(e) => return Err(Error::storage(uri, e)),
            };
            let asked = categorise(b, &m, categoriser).await?;
            if !asked.is_empty() {
                m.extend(asked);
                let rows: Vec<(u32, String, String)> = b
                    .questions
                    .iter()
                    .filter_map(|q| {
                        m.get(&q.index)
                            .map(|p| (q.index, p.clone(), q.question.clone()))
                    })
                    .collect();
                root.put(&rel, bytes::Bytes::from(patterns::mapping_csv(&rows)))
                    .await?;
                tracing::info!(
                    "patterns saved to {uri}: edit it and pass it with --patterns to reuse"
                );
            }
            m
        }
    };
    for q in &mut b.questions {
        if q.pattern.is_none() {
            q.pattern = mapping.get(&q.index).cloned();
        }
    }
    Ok(())
}

/// Asks the categoriser for the pattern of each pair's first question that neither the sheet
/// nor `known` gives; both questions of a pair share it. An unreachable categoriser stops the
/// run before any question is asked.
async fn categorise(b: &Mmvp, known: &Mapping, chat: &dyn Chat) -> Result<Mapping> {
    let mut out = Mapping::new();
    for q in b
        .questions
        .iter()
        .filter(|q| q.pattern.is_none() && q.index % 2 == 1 && !known.contains_key(&q.index))
    {
        let reply = chat
            .chat(&patterns::categorise_prompt(&q.question, &q.options), &[])
            .await;
        if reply.unreachable {
            return Err(unreachable(chat, reply));
        }
        match reply.text.as_deref().and_then(patterns::parse_category) {
            Some(p) => {
                out.insert(q.index, p.clone());
                out.insert(q.index + 1, p);
            }
            None => tracing::warn!(
                "item {}: no pattern in the categoriser's reply {:?}{}; a rerun asks again",
                q.index,
                reply.text.unwrap_or_default(),
                reply.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        }
    }
    Ok(out)
}

/// The error for an endpoint no connection could be made to.
fn unreachable(chat: &dyn Chat, reply: Reply) -> Error {
    Error::Endpoint {
        url: chat.endpoint().to_string(),
        reason: format!(
            "{}; is the server running and its base URL right?",
            reply.error.unwrap_or_default()
        ),
    }
}

/// Asks every question of an MMVP benchmark, grades the replies and commits `answers` and
/// `scores`. `judge` grades with the judge grader and categorises patterns when asked to.
pub async fn eval_mllm(
    bench: &Location,
    root: &Location,
    chat: &dyn Chat,
    judge: Option<&dyn Chat>,
    params: &MllmParams,
    progress: &dyn Progress,
) -> Result<EvalSummary> {
    let started = Instant::now();
    let mut b = benchmark::load_mmvp(bench, params.fix_labels).await?;
    if params.swap_options {
        swap_options(&mut b, bench)?;
    }
    if params.grader == Grader::Judge && judge.is_none() {
        return Err(Error::Usage(
            "the judge grader needs a judge: pass --judge-model (and --judge-url if it is served elsewhere)".into(),
        ));
    }
    // Every answer key must parse before any request is paid for.
    let mut keys = Vec::with_capacity(b.questions.len());
    for q in &b.questions {
        if q.question.is_empty() || q.options.is_empty() || q.answer.is_empty() {
            return Err(Error::Benchmark {
                uri: bench.url.clone(),
                reason: format!(
                    "item {} has no question, options or correct answer; an annotation sheet needs its questions, options and answers filled in",
                    q.index
                ),
            });
        }
        let choices = grade::parse_options(&q.options).map_err(|e| Error::Benchmark {
            uri: bench.url.clone(),
            reason: format!("item {}: options {:?}: {e}", q.index, q.options),
        })?;
        let answer = grade::parse_answer(&q.answer, &choices).ok_or_else(|| Error::Benchmark {
            uri: bench.url.clone(),
            reason: format!(
                "item {}: correct answer {:?} names none of the options {:?}",
                q.index, q.answer, q.options
            ),
        })?;
        keys.push((choices, answer));
    }
    let categoriser = judge.unwrap_or(chat);
    let body = async {
        assign_patterns(&mut b, &params.patterns, root, categoriser).await?;
        progress.start(Stage::EvalMllm.name(), Some(b.questions.len() as u64));
        let rows = ask_all(&b, &keys, chat, judge, params, progress).await?;
        progress.finish();
        ev::commit(root, Kind::Mllm, rows, &params.bootstrap, started).await
    };
    units::locked(root, Stage::EvalMllm, body).await
}

/// The model name a run is scored as: `[no image]` and `[swapped]` runs are models of their
/// own, beside the real one.
fn scored_as(model: &str, params: &MllmParams) -> String {
    let tags: Vec<&str> = [
        params.no_image.then_some("no image"),
        params.swap_options.then_some("swapped"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match tags.is_empty() {
        true => model.to_string(),
        false => format!("{model} [{}]", tags.join(", ")),
    }
}

/// Swaps the two options of every question (the correct answer follows its option); a
/// question without exactly two options is refused.
fn swap_options(b: &mut Mmvp, bench: &Location) -> Result<()> {
    for q in &mut b.questions {
        let choices = grade::parse_options(&q.options).map_err(|e| Error::Benchmark {
            uri: bench.url.clone(),
            reason: format!("item {}: options {:?}: {e}", q.index, q.options),
        })?;
        let [a, bb] = choices.as_slice() else {
            return Err(Error::Usage(format!(
                "--swap-options needs two options per question; item {} of {} has {}",
                q.index,
                bench.url,
                choices.len()
            )));
        };
        let answer = grade::parse_answer(&q.answer, &choices);
        q.options = format!("(a) {} (b) {}", bb.text, a.text);
        q.answer = match answer {
            Some('a') => "(b)".into(),
            Some('b') => "(a)".into(),
            _ => q.answer.clone(),
        };
    }
    Ok(())
}

async fn ask_all(
    b: &Mmvp,
    keys: &[(Vec<grade::Choice>, char)],
    chat: &dyn Chat,
    judge: Option<&dyn Chat>,
    params: &MllmParams,
    progress: &dyn Progress,
) -> Result<Vec<AnswerRow>> {
    // The first question alone: an endpoint that cannot be reached fails the run now, rather
    // than every question after its retries.
    let Some((q0, (c0, a0))) = b.questions.iter().zip(keys).next() else {
        return Ok(Vec::new());
    };
    let (first, reply) = ask_one(b, q0, c0, *a0, chat, judge, params).await?;
    progress.advance(1);
    if reply.unreachable {
        return Err(unreachable(chat, reply));
    }
    let tasks = b
        .questions
        .iter()
        .zip(keys)
        .skip(1)
        .map(|(q, (choices, answer))| async move {
            let row = ask_one(b, q, choices, *answer, chat, judge, params).await;
            progress.advance(1);
            row.map(|(row, _)| row)
        });
    let mut rows: Vec<AnswerRow> = futures::stream::iter(tasks)
        .buffer_unordered(params.concurrency.max(1))
        .collect::<Vec<Result<AnswerRow>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    rows.push(first);
    rows.sort_by_key(|r| r.item);
    Ok(rows)
}

/// A question's image, read from the benchmark.
async fn read_image(b: &Mmvp, q: &Question) -> Result<Image> {
    let path = b.root.path(&q.image);
    let bytes = b
        .root
        .get_bytes(&path)
        .await
        .map_err(|e| Error::storage(b.root.uri_of(&path), e))?;
    Ok(Image::new(bytes, &q.image))
}

async fn ask_one(
    b: &Mmvp,
    q: &Question,
    choices: &[grade::Choice],
    answer: char,
    chat: &dyn Chat,
    judge: Option<&dyn Chat>,
    params: &MllmParams,
) -> Result<(AnswerRow, Reply)> {
    let path = b.root.path(&q.image);
    let prompt = params.template.render(q);
    // The image is read (and its digest kept, which groups NaturalBench's pairs) even when
    // it is not sent.
    let image = read_image(b, q).await?;
    let digest = image.digest.clone();
    let images = match params.no_image {
        true => Vec::new(),
        false => vec![image],
    };
    let reply = chat.chat(&prompt, &images).await;
    let mut row = AnswerRow {
        benchmark: b.name.clone(),
        model: scored_as(chat.model(), params),
        item: q.index,
        pair: q.pair,
        pattern: q
            .pattern
            .clone()
            .unwrap_or_else(|| patterns::UNASSIGNED.to_string()),
        template: params.template.name.clone(),
        prompt,
        image: b.root.uri_of(&path),
        response: reply.text.clone(),
        answer: format!("({answer})"),
        grader: params.grader.name().to_string(),
        labels: b.labels.name().to_string(),
        attempts: reply.attempts,
        latency_ms: reply.latency_ms,
        cached: reply.cached,
        error: reply.error.clone(),
        settings: chat.settings(),
        endpoint: chat.endpoint().to_string(),
        image_digest: digest,
        ..Default::default()
    };
    let Some(text) = reply.text.clone() else {
        return Ok((row, reply));
    };
    let letter = match params.grader {
        Grader::Exact => grade::exact_letter(&text, choices),
        Grader::Rules | Grader::Judge => grade::rules(&text, choices),
    };
    row.choice = letter.map(|l| format!("({l})"));
    row.correct = letter == Some(answer);
    // Further samples of the same prompt: only their choices are kept, for agreement.
    if params.repeats > 1 {
        row.samples.push(letter);
        for n in 1..params.repeats {
            let again = chat.sample(&row.prompt, &images, n).await;
            row.attempts += again.attempts;
            let text = again.text.unwrap_or_default();
            row.samples.push(match params.grader {
                Grader::Exact => grade::exact_letter(&text, choices),
                Grader::Rules | Grader::Judge => grade::rules(&text, choices),
            });
        }
    }
    if params.grader == Grader::Judge {
        let Some(judge) = judge else {
            return Err(Error::Internal("judge grader without a judge".into()));
        };
        judged(&mut row, judge, q, &text).await;
    }
    Ok((row, reply))
}

/// Asks the judge whether `text` answers `q` as its answer does, into `row`.
async fn judged(row: &mut AnswerRow, judge: &dyn Chat, q: &Question, text: &str) {
    let prompt = grade::judge_prompt(&q.question, &q.options, &q.answer, text);
    let verdict = judge.chat(&prompt, &[]).await;
    row.attempts += verdict.attempts;
    row.judge = verdict.text.clone();
    match verdict.text.as_deref().map(grade::parse_judge) {
        Some(Some(yes)) => row.correct = yes,
        Some(None) => {
            row.correct = false;
            row.error = Some("the judge replied neither yes nor no".into());
        }
        None => {
            row.correct = false;
            row.error = Some(format!(
                "judge: {}",
                verdict.error.unwrap_or_else(|| "no reply".into())
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_custom_ones_are_checked() {
        let q = Question {
            index: 1,
            pair: 1,
            question: "Is the door open?".into(),
            options: "(a) Open (b) Closed".into(),
            answer: "(a)".into(),
            image: String::new(),
            pattern: None,
        };
        assert_eq!(
            Template::paper().render(&q),
            "Is the door open? (a) Open (b) Closed"
        );
        assert!(Template::letter().render(&q).ends_with("directly."));
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("short.txt");
        std::fs::write(&good, "Q: {question}\nChoices: {options}\n").unwrap();
        let t = Template::resolve(good.to_str().unwrap()).unwrap();
        assert_eq!(t.name, "short");
        assert_eq!(
            t.render(&q),
            "Q: Is the door open?\nChoices: (a) Open (b) Closed"
        );
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "no placeholders").unwrap();
        let err = Template::resolve(bad.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("{question}"), "{err}");
        assert!(Template::resolve("nonesuch").is_err());
    }
}
