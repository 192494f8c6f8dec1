//! Drafted questions for mined pairs: the step that limited MMVP to 150 pairs, done by a model
//! and checked by a model, so that people only verify (the way NaturalBench reached 10,000
//! items).
//!
//! `blindspot draft` reads an annotation sheet (`blindspot annotate`: `Questions.csv` with two
//! rows per pair and `MMVP Images/`). For each pair it asks an OpenAI-compatible MLLM, with
//! both images, for the visual difference, its pattern and one two-option question whose
//! answer differs between the images; a reply that is not the JSON asked for, has other than
//! two options or gives both images the same answer is asked again (saying what was wrong),
//! then recorded as a failed draft with the reason. Each draft is then verified: a second
//! model (or the same) answers the question about each image separately (`verified` when both
//! answers are the draft's, `disputed` otherwise), and once with no image at all
//! (`blind-answerable` when it commits to an option without seeing anything).
//!
//! The drafts go to `drafts.json` beside the sheet, and verified drafts that are not
//! blind-answerable fill the sheet's empty questions, so `eval mllm` reads it as a benchmark;
//! `provenance.json` says which models and templates wrote it. Replies are cached in the
//! sheet's `_draft/` folder: a rerun pays for nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::client::{Chat, ClientParams, Image, OpenAiClient};
use super::grade::{self, Choice};
use super::review::ReviewCounts;
use crate::error::{Error, Result};
use crate::mmvp::{canonical, sheet_text_back, MMVP_IMAGES, PATTERNS, PROVENANCE, QUESTIONS};
use crate::progress::Progress;
use crate::review_files::{Draft, DraftsFile, PairDraft, Review, SecondQuestion, Verification};
use crate::stage::Stage;
use crate::storage::Location;

/// The shipped drafting prompt (`{patterns}` and `{hint}` are replaced).
pub const DRAFT_TEMPLATE: &str = include_str!("prompts/draft.txt");
/// The shipped verification prompt, asked with one image.
pub const VERIFY_TEMPLATE: &str = include_str!("prompts/verify.txt");
/// The shipped text-only prompt.
pub const BLIND_TEMPLATE: &str = include_str!("prompts/blind.txt");
/// The drafts, beside the sheet.
pub const DRAFTS: &str = "drafts.json";
/// The reply cache's folder under the sheet.
pub const CACHE_DIR: &str = "_draft";
/// How the request for a second question begins (after the drafting prompt).
pub const SECOND_QUESTION: &str = "A first question was already written for these images";

/// Settings of `blindspot draft`.
#[derive(Clone, Debug, clap::Args)]
pub struct DraftSettings {
    /// The drafting model's base URL, e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    pub base_url: String,
    /// The drafting model.
    #[arg(long)]
    pub model: String,
    /// Environment variable holding the API key (sent as a bearer token when set).
    #[arg(long, default_value_t = default_key_env())]
    pub api_key_env: String,
    /// The verifying model's base URL [default: base-url].
    #[arg(long)]
    pub verify_url: Option<String>,
    /// The verifying model [default: model].
    #[arg(long)]
    pub verify_model: Option<String>,
    /// Environment variable with the verifier's API key [default: api-key-env].
    #[arg(long)]
    pub verify_api_key_env: Option<String>,
    /// Drafting prompt: `default` (the shipped one) or a file with {patterns} and {hint}.
    #[arg(long, default_value_t = default_name())]
    pub template: String,
    /// Verification prompt: `default` or a file with {question}, {option_a} and {option_b}.
    #[arg(long, default_value_t = default_name())]
    pub verify_template: String,
    /// Drafts asked per pair at most: a reply that cannot be used is asked again, saying why.
    #[arg(long, default_value_t = default_attempts())]
    pub attempts: u32,
    /// Pairs drafted at once.
    #[arg(long, default_value_t = default_concurrency())]
    pub concurrency: usize,
    /// Seconds before one request is given up (and retried).
    #[arg(long, default_value_t = default_timeout())]
    pub timeout: f64,
    /// Retries of one request on 429, 5xx, timeouts and malformed replies.
    #[arg(long, default_value_t = default_retries())]
    pub retries: u32,
    /// Also fill the sheet with drafts the text-only check answered (blind-answerable).
    #[arg(long)]
    pub keep_blind: bool,
    /// Also write the pairs that fill the sheet as an MMVP-format benchmark here (Questions.csv
    /// with Index, Question, Options, Correct Answer, Pattern; MMVP Images/; provenance.json),
    /// which `eval mllm --benchmark` reads as it reads MMVP.
    #[arg(long)]
    pub benchmark: Option<String>,
    /// The decisions exported from the report built with `--drafts` (CSV or JSON): approved,
    /// edited and written questions fill the sheet, rejected pairs leave it. Replaces the
    /// review of an earlier run; without it, that review is kept.
    #[arg(long)]
    pub review: Option<String>,
    /// Questions drafted per pair: 1 (MMVP's shape), or 2 (NaturalBench's: a second question
    /// about the same two images, verified the same way, which the benchmark adds as two more
    /// rows under the pair's `Pair` number, so Q-Acc, I-Acc and G-Acc are scored).
    #[arg(long, default_value_t = 1)]
    pub questions: u32,
}

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_name() -> String {
    "default".into()
}
fn default_attempts() -> u32 {
    3
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    4
}

impl DraftSettings {
    /// An endpoint and model with every other setting at its default.
    pub fn new(base_url: &str, model: &str) -> DraftSettings {
        DraftSettings {
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key_env: default_key_env(),
            verify_url: None,
            verify_model: None,
            verify_api_key_env: None,
            template: default_name(),
            verify_template: default_name(),
            attempts: default_attempts(),
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            retries: default_retries(),
            keep_blind: false,
            benchmark: None,
            review: None,
            questions: 1,
        }
    }

    /// Every problem with these settings, by name.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.attempts == 0 {
            problems.push("attempts must be at least 1".into());
        }
        if self.concurrency == 0 {
            problems.push("concurrency must be at least 1".into());
        }
        if !(1..=2).contains(&self.questions) {
            problems.push(format!("questions {} must be 1 or 2", self.questions));
        }
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            problems.push(format!(
                "timeout {} must be a positive number of seconds",
                self.timeout
            ));
        }
        problems
    }

    fn client(&self, url: &str, model: &str, key_env: &str, max_tokens: u32) -> ClientParams {
        ClientParams {
            base_url: url.to_string(),
            model: model.to_string(),
            api_key_env: key_env.to_string(),
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            retries: self.retries,
            max_tokens,
            ..ClientParams::default()
        }
    }
}

/// A prompt template by name: the shipped text, or a file's.
#[derive(Clone, Debug, Serialize)]
pub struct Prompt {
    /// `default` or the file.
    pub name: String,
    /// blake3 of the text (what provenance records).
    pub digest: String,
    #[serde(skip)]
    text: String,
}

impl Prompt {
    /// `default` (the shipped `text`) or the file `spec`, which must hold every placeholder
    /// of `needs`.
    pub fn resolve(spec: &str, shipped: &str, needs: &[&str]) -> Result<Prompt> {
        let text = match spec {
            "default" => shipped.to_string(),
            path => std::fs::read_to_string(path)
                .map_err(|e| Error::Usage(format!("prompt template {path}: {e}")))?,
        };
        if let Some(missing) = needs.iter().find(|n| !text.contains(*n)) {
            return Err(Error::Usage(format!(
                "prompt template {spec} has no {missing}; it needs {}",
                needs.join(", ")
            )));
        }
        Ok(Prompt {
            name: spec.to_string(),
            digest: blake3::hash(text.as_bytes()).to_hex()[..16].to_string(),
            text,
        })
    }

    fn render(&self, fields: &[(&str, &str)]) -> String {
        fields
            .iter()
            .fold(self.text.clone(), |t, (k, v)| t.replace(k, v))
    }
}

/// What the drafting model is asked to reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DraftReply {
    /// The visual difference, in one sentence.
    #[serde(default)]
    pub difference: String,
    /// One of the nine patterns, or `other`.
    #[serde(default)]
    pub pattern: String,
    /// With `other`: the difference's own name.
    #[serde(default)]
    pub pattern_name: String,
    /// The question.
    #[serde(default)]
    pub question: String,
    /// Its two options.
    #[serde(default)]
    pub options: Vec<String>,
    /// The right option for image A: `a` or `b`.
    #[serde(default)]
    pub answer_a: String,
    /// The right option for image B.
    #[serde(default)]
    pub answer_b: String,
}

/// Reads a drafting reply: the JSON object (also inside a code fence or after a sentence),
/// checked: a question, exactly two options, and answers `a`/`b` that differ between the images.
pub fn parse_draft(reply: &str) -> std::result::Result<Draft, String> {
    let start = reply.find('{').ok_or("the reply holds no JSON object")?;
    let end = reply
        .rfind('}')
        .ok_or("the reply's JSON object is not closed")?;
    let json = reply
        .get(start..=end)
        .ok_or("the reply holds no JSON object")?;
    let r: DraftReply = serde_json::from_str(json)
        .map_err(|e| format!("the reply is not the JSON asked for: {e}"))?;
    check_draft(r)
}

/// Checks a draft (a model's reply or a reviewer's edit): a question, exactly two options,
/// nothing a spreadsheet would run, answers `a`/`b` that differ between the images, and a
/// pattern (one of the nine, or another with its name).
pub fn check_draft(r: DraftReply) -> std::result::Result<Draft, String> {
    if r.options.len() != 2 {
        return Err(format!("{} options, not two", r.options.len()));
    }
    if r.question.trim().is_empty() || r.options.iter().any(|o| o.trim().is_empty()) {
        return Err("an empty question or option".into());
    }
    if r.options[0]
        .trim()
        .eq_ignore_ascii_case(r.options[1].trim())
    {
        return Err(format!(
            "both options read {:?}: the question cannot tell the images apart",
            r.options[0].trim()
        ));
    }
    // The text goes into a sheet people open in spreadsheets: nothing a spreadsheet would
    // run as a formula (OWASP's leading characters).
    let formula = |t: &str| {
        t.trim_start_matches(' ')
            .starts_with(['=', '+', '-', '@', '\t', '\r'])
    };
    if formula(&r.question) || r.options.iter().any(|o| formula(o)) {
        return Err("a question or option starting with =, +, -, @, a tab or a carriage return (a spreadsheet formula)".into());
    }
    let letter = |s: &str| -> std::result::Result<char, String> {
        let t = s
            .trim()
            .trim_matches(|c| c == '(' || c == ')')
            .to_ascii_lowercase();
        match t.as_str() {
            "a" => Ok('a'),
            "b" => Ok('b'),
            _ => Err(format!("answer {s:?} is not a or b")),
        }
    };
    let (a, b) = (letter(&r.answer_a)?, letter(&r.answer_b)?);
    if a == b {
        return Err(format!(
            "both images get answer ({a}): the question does not tell them apart"
        ));
    }
    let named = canonical(&r.pattern);
    let pattern = match PATTERNS.contains(&named.as_str()) {
        true => named,
        false => "other".to_string(),
    };
    let pattern_name = match (pattern.as_str(), r.pattern_name.trim()) {
        ("other", "") => r.pattern.trim().to_string(),
        (_, name) => name.to_string(),
    };
    if pattern == "other" && pattern_name.is_empty() {
        return Err("pattern other without a name".into());
    }
    if formula(&pattern_name) {
        return Err(format!(
            "pattern name {pattern_name:?} starts like a spreadsheet formula"
        ));
    }
    Ok(Draft {
        difference: r.difference.trim().to_string(),
        pattern,
        pattern_name,
        question: r.question.trim().to_string(),
        option_a: r.options[0].trim().to_string(),
        option_b: r.options[1].trim().to_string(),
        answer_a: a,
        answer_b: b,
    })
}

/// What a draft run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DraftSummary {
    /// Pairs in the sheet.
    pub pairs: usize,
    /// Pairs with a usable draft.
    pub drafted: usize,
    /// Pairs without one (reasons in drafts.json).
    pub failed: usize,
    /// Drafts both images confirmed.
    pub verified: usize,
    /// Drafts an image contradicted or left unanswered.
    pub disputed: usize,
    /// Drafts answered without any image.
    pub blind_answerable: usize,
    /// Pairs whose questions now fill the sheet.
    pub in_sheet: usize,
    /// With `--questions 2`: second questions that join the benchmark.
    pub second_questions: usize,
    /// HTTP requests made (0 on a rerun: every reply is cached).
    pub requests: u64,
    /// Replies that came from the cache.
    pub cached: u64,
    /// With `--review`: how the review met the drafts.
    pub review: Option<ReviewCounts>,
    /// drafts.json.
    pub drafts: String,
    /// Wall time.
    pub seconds: f64,
}

/// One pair as the sheet lists it.
#[derive(Clone, Debug)]
struct SheetPair {
    index: u32,
    a: String,
    b: String,
    hint: String,
    images: [String; 2],
    /// A person wrote its question: it is not drafted.
    written: bool,
}

/// The sheet's rows: the header and each row's cells.
struct Sheet {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Sheet {
    /// The sheet as the benchmark loader reads it (headers trimmed, blank rows skipped),
    /// every row as wide as the header.
    async fn read(sheet: &Location) -> Result<Sheet> {
        if !sheet.exists(QUESTIONS).await? {
            return Err(Error::Usage(format!(
                "no annotation sheet at {}: it has no {QUESTIONS}; write one with `blindspot annotate --root ROOT --out {}`",
                sheet.url, sheet.url
            )));
        }
        let (header, mut rows) = super::benchmark::read_sheet(sheet).await?;
        for row in &mut rows {
            row.resize(header.len(), String::new());
        }
        Ok(Sheet { header, rows })
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::Usage(format!(
                "the sheet has no {name} column (columns: {}); draft reads the sheets `blindspot annotate` writes",
                self.header.join(", ")
            ))
        })
    }

    /// The pairs: rows 2k and 2k+1, each with its image file. A pair that an earlier run
    /// filled keeps that run's hint; one whose question a person wrote is marked `written`.
    fn pairs(
        &self,
        images: &BTreeMap<u32, String>,
        previous: &BTreeMap<u32, PairDraft>,
    ) -> Result<Vec<SheetPair>> {
        let (index, key) = (self.column("Index")?, self.column("key")?);
        let question = self.column("Question")?;
        let (pattern, note) = (self.column("Pattern")?, self.column("note").ok());
        if self.rows.is_empty() || self.rows.len() % 2 == 1 {
            return Err(Error::Usage(format!(
                "the sheet has {} rows; an annotation sheet has two per pair",
                self.rows.len()
            )));
        }
        self.rows
            .chunks(2)
            .map(|two| {
                let n = |row: &Vec<String>| -> Result<u32> {
                    row[index].trim().parse().map_err(|_| {
                        Error::Usage(format!(
                            "the sheet's Index {:?} is not a number",
                            row[index]
                        ))
                    })
                };
                let (ia, ib) = (n(&two[0])?, n(&two[1])?);
                let image = |i: u32| {
                    images.get(&i).cloned().ok_or_else(|| {
                        Error::Usage(format!("the sheet has no image {i} in {MMVP_IMAGES}/"))
                    })
                };
                let asked = two[0][question].trim();
                let ours = previous
                    .get(&ia)
                    .filter(|d| d.in_sheet && d.question().is_some_and(|d| d.question == asked));
                let hint = match previous.get(&ia) {
                    Some(d) => d.hint.clone(),
                    None => [
                        sheet_text_back(two[0][pattern].trim()),
                        note.map_or("", |c| sheet_text_back(two[0][c].trim())),
                    ]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
                };
                Ok(SheetPair {
                    index: ia,
                    a: sheet_text_back(&two[0][key]).to_string(),
                    b: sheet_text_back(&two[1][key]).to_string(),
                    hint,
                    images: [image(ia)?, image(ib)?],
                    written: !asked.is_empty() && ours.is_none(),
                })
            })
            .collect()
    }
}

/// The two models and prompts of a run.
struct Job {
    drafter: Arc<dyn Chat>,
    verifier: Arc<dyn Chat>,
    template: Prompt,
    verify: Prompt,
    blind: Prompt,
    attempts: u32,
    questions: u32,
    sheet: Location,
}

/// What asking for one draft came to.
#[derive(Default)]
struct Asked {
    draft: Option<Draft>,
    attempts: u32,
    reason: String,
}

/// Requests and cache hits of one pair.
#[derive(Default)]
struct Counts {
    requests: u64,
    cached: u64,
}

impl Counts {
    fn add(&mut self, r: &super::client::Reply) {
        self.requests += r.attempts as u64;
        self.cached += r.cached as u64;
    }
}

impl Job {
    async fn image(&self, rel: &str) -> Result<Image> {
        let path = self.sheet.path(rel);
        let bytes: Bytes = self
            .sheet
            .get_bytes(&path)
            .await
            .map_err(|e| Error::storage(self.sheet.uri_of(&path), e))?;
        Ok(Image::new(bytes, rel))
    }

    /// Drafts one pair (asking again with the reason while attempts last), then verifies it.
    async fn pair(&self, p: SheetPair) -> Result<(PairDraft, Counts)> {
        let mut counts = Counts::default();
        let mut out = PairDraft::undrafted(p.index, &p.a, &p.b, &p.hint);
        if p.written {
            out.status = "kept".into();
            out.reason = "the sheet already has a question for it; left as written".into();
            return Ok((out, counts));
        }
        let images = [
            self.image(&p.images[0]).await?,
            self.image(&p.images[1]).await?,
        ];
        let hint = match out.hint.is_empty() {
            true => String::new(),
            false => format!("A reviewer noted: {}.\n", out.hint),
        };
        let patterns = PATTERNS.join(", ");
        let base = self
            .template
            .render(&[("{patterns}", patterns.as_str()), ("{hint}", hint.as_str())]);
        let first = self.ask(&base, &images, &mut counts, None).await;
        out.attempts = first.attempts;
        out.reason = first.reason;
        out.draft = first.draft;
        if let Some(d) = &out.draft {
            out.status = "drafted".into();
            out.verification = Some(self.check(d, &images, &mut counts).await);
            if self.questions == 2 {
                let again = format!(
                    "{base}\n{SECOND_QUESTION}: \"{}\" (options: {} / {}). Write a different question about the difference, with its own two options, whose answer also differs between image A and image B.",
                    d.question, d.option_a, d.option_b
                );
                let second = self
                    .ask(&again, &images, &mut counts, Some(&d.question))
                    .await;
                let mut q = SecondQuestion {
                    reason: second.reason,
                    attempts: second.attempts,
                    ..SecondQuestion::default()
                };
                if let Some(x) = second.draft {
                    q.verification = Some(self.check(&x, &images, &mut counts).await);
                    q.draft = Some(x);
                }
                out.second = Some(q);
            }
        }
        Ok((out, counts))
    }

    /// Asks the drafter with `base`, again with the reason while attempts last; a draft whose
    /// question is `unlike` (the pair's first) is not usable.
    async fn ask(
        &self,
        base: &str,
        images: &[Image; 2],
        counts: &mut Counts,
        unlike: Option<&str>,
    ) -> Asked {
        let mut asked = Asked::default();
        let mut prompt = base.to_string();
        for _ in 0..self.attempts {
            asked.attempts += 1;
            let reply = self.drafter.chat(&prompt, images).await;
            counts.add(&reply);
            let Some(text) = reply.text else {
                asked.reason = reply.error.unwrap_or_else(|| "no reply".into());
                break;
            };
            let usable = parse_draft(&text).and_then(|d| match unlike {
                Some(q) if d.question.eq_ignore_ascii_case(q) => {
                    Err("the second question repeats the first".to_string())
                }
                _ => Ok(d),
            });
            match usable {
                Ok(d) => {
                    asked.reason.clear();
                    asked.draft = Some(d);
                    break;
                }
                Err(why) => {
                    // The attempt's number keeps each retry a prompt of its own (and a
                    // cache entry of its own).
                    prompt = format!(
                        "{base}\nYour previous reply could not be used: {why}. Reply with the JSON object only (attempt {} of {}).",
                        asked.attempts + 1,
                        self.attempts
                    );
                    asked.reason = why;
                }
            }
        }
        asked
    }

    /// Asks the verifier the draft's question about each image alone, and with no image.
    async fn check(&self, d: &Draft, images: &[Image; 2], counts: &mut Counts) -> Verification {
        let fields = [
            ("{question}", d.question.as_str()),
            ("{option_a}", d.option_a.as_str()),
            ("{option_b}", d.option_b.as_str()),
        ];
        let (ask, blind) = (self.verify.render(&fields), self.blind.render(&fields));
        let choices: Vec<Choice> =
            grade::parse_options(&format!("(a) {} (b) {}", d.option_a, d.option_b))
                .unwrap_or_default();
        let mut letters = [None; 3];
        let mut replies: [String; 3] = Default::default();
        let asks: [(&str, &[Image]); 3] = [
            (&ask, std::slice::from_ref(&images[0])),
            (&ask, std::slice::from_ref(&images[1])),
            (&blind, &[]),
        ];
        for (k, (prompt, imgs)) in asks.into_iter().enumerate() {
            let reply = self.verifier.chat(prompt, imgs).await;
            counts.add(&reply);
            let text = reply.text.unwrap_or_default();
            letters[k] = grade::rules(&text, &choices);
            replies[k] = text;
        }
        let status = match (letters[0], letters[1]) {
            (Some(x), Some(y)) if x == d.answer_a && y == d.answer_b => "verified",
            (None, _) | (_, None) => "unverified",
            _ => "disputed",
        };
        Verification {
            status: status.into(),
            answer_a: letters[0],
            answer_b: letters[1],
            text_only: letters[2],
            blind_answerable: letters[2].is_some(),
            replies,
        }
    }
}

/// Drafts and verifies a question for every pair of the annotation sheet at `sheet`, writes
/// `drafts.json` and `provenance.json` beside it, and fills the sheet's questions with the
/// verified drafts (not blind-answerable ones, unless `keep_blind`).
pub async fn draft(
    sheet: &Location,
    settings: &DraftSettings,
    progress: &dyn Progress,
) -> Result<DraftSummary> {
    let started = Instant::now();
    Stage::Draft.settings(settings.check())?;
    let mut table = Sheet::read(sheet).await?;
    let images = sheet_images(sheet).await?;
    let previous = previous_drafts(sheet).await;
    let pairs = table.pairs(&images, &previous)?;
    let job = Job::new(sheet, settings)?;
    progress.start(Stage::Draft.name(), Some(pairs.len() as u64));
    let mut summary = DraftSummary {
        pairs: pairs.len(),
        ..Default::default()
    };
    let mut done: Vec<PairDraft> = Vec::new();
    let mut runs = futures::stream::iter(pairs.into_iter().map(|p| job.pair(p)))
        .buffered(settings.concurrency.max(1));
    while let Some(run) = runs.next().await {
        let (mut d, counts) = run?;
        summary.requests += counts.requests;
        summary.cached += counts.cached;
        // An earlier run's review stands unless a review file replaces it.
        d.review = previous
            .get(&d.index)
            .filter(|p| (&p.a, &p.b) == (&d.a, &d.b) && d.status != "kept")
            .and_then(|p| p.review.clone());
        done.push(d);
        progress.advance(1);
    }
    drop(runs);
    progress.finish();
    if let Some(file) = &settings.review {
        let entries = crate::review_files::read_decisions(file).await?;
        summary.review = Some(super::review::apply(&mut done, &entries, file)?);
    }
    for d in &mut done {
        d.in_sheet = fills_sheet(d, settings.keep_blind);
        let rejected = d.review.as_ref().is_some_and(|r| r.decision == "reject");
        let keep = d.in_sheet && !rejected;
        if let Some(q) = &mut d.second {
            q.in_benchmark = keep
                && q.verification.as_ref().is_some_and(|v| {
                    v.status == "verified" && (settings.keep_blind || !v.blind_answerable)
                });
        }
    }
    for d in &done {
        let v = d.verification.as_ref();
        summary.drafted += d.draft.is_some() as usize;
        summary.failed += (d.status == "failed") as usize;
        summary.verified += v.is_some_and(|v| v.status == "verified") as usize;
        summary.disputed += v.is_some_and(|v| v.status != "verified") as usize;
        summary.blind_answerable += v.is_some_and(|v| v.blind_answerable) as usize;
        summary.in_sheet += d.in_sheet as usize;
        summary.second_questions += d.second.as_ref().is_some_and(|q| q.in_benchmark) as usize;
    }
    fill(&mut table, &done)?;
    let provenance = write_outputs(sheet, &table, &done, &job, settings, &summary).await?;
    if let Some(url) = &settings.benchmark {
        if summary.in_sheet == 0 {
            return Err(Error::Usage(format!(
                "no draft of {} was verified (and not answerable without the image), so there is no benchmark to write; see {}",
                sheet.url,
                sheet.uri_of(&sheet.path(DRAFTS))
            )));
        }
        let seconds = second_questions(&done);
        let out = Location::open(url)?;
        write_benchmark(&out, sheet, &table, &images, &provenance, &seconds).await?;
    }
    summary.drafts = sheet.uri_of(&sheet.path(DRAFTS));
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The sheet's images by index.
async fn sheet_images(sheet: &Location) -> Result<BTreeMap<u32, String>> {
    Ok(super::benchmark::images_by_stem(sheet, MMVP_IMAGES)
        .await?
        .into_iter()
        .filter(|((dir, _), _)| dir.is_empty())
        .filter_map(|((_, stem), rel)| Some((stem.parse().ok()?, rel)))
        .collect())
}

/// The drafts of an earlier run on the sheet, by index (none when there are none).
async fn previous_drafts(sheet: &Location) -> BTreeMap<u32, PairDraft> {
    match sheet.get_bytes(&sheet.path(DRAFTS)).await {
        Ok(bytes) => serde_json::from_slice::<DraftsFile>(&bytes)
            .map(|f| f.pairs.into_iter().map(|d| (d.index, d)).collect())
            .unwrap_or_default(),
        Err(_) => BTreeMap::new(),
    }
}

impl Job {
    /// The drafter and verifier (caching in the sheet's `_draft/`) and the prompts.
    fn new(sheet: &Location, settings: &DraftSettings) -> Result<Job> {
        let cache = Location::open(&format!("{}/{CACHE_DIR}", sheet.url.trim_end_matches('/')))?;
        let client = |url: &str, model: &str, key: &str, tokens: u32| -> Result<Arc<dyn Chat>> {
            let params = settings.client(url, model, key, tokens);
            Ok(Arc::new(OpenAiClient::new(params, Some(cache.clone()))?))
        };
        let verify_url = settings.verify_url.as_deref().unwrap_or(&settings.base_url);
        let verify_model = settings.verify_model.as_deref().unwrap_or(&settings.model);
        let verify_key = settings
            .verify_api_key_env
            .as_deref()
            .unwrap_or(&settings.api_key_env);
        Ok(Job {
            drafter: client(
                &settings.base_url,
                &settings.model,
                &settings.api_key_env,
                512,
            )?,
            verifier: client(verify_url, verify_model, verify_key, 64)?,
            template: Prompt::resolve(&settings.template, DRAFT_TEMPLATE, &[])?,
            verify: Prompt::resolve(
                &settings.verify_template,
                VERIFY_TEMPLATE,
                &["{question}", "{option_a}", "{option_b}"],
            )?,
            blind: Prompt::resolve("default", BLIND_TEMPLATE, &[])?,
            attempts: settings.attempts,
            questions: settings.questions,
            sheet: sheet.clone(),
        })
    }
}

/// Whether it fills the sheet: a question a person vouched for does, a rejected pair does
/// not; otherwise a verified draft that is not blind-answerable (or any with `keep_blind`).
fn fills_sheet(d: &PairDraft, keep_blind: bool) -> bool {
    match &d.review {
        Some(r) if r.decision == "reject" => false,
        Some(r) if r.vouched => true,
        _ => d
            .verification
            .as_ref()
            .is_some_and(|v| v.status == "verified" && (keep_blind || !v.blind_answerable)),
    }
}

/// Fills the sheet's question, options, answers and pattern of every pair in the sheet.
fn fill(table: &mut Sheet, done: &[PairDraft]) -> Result<()> {
    let col = |n: &str| table.column(n);
    let (index, q, o, a, p) = (
        col("Index")?,
        col("Question")?,
        col("Options")?,
        col("Correct Answer")?,
        col("Pattern")?,
    );
    let by_index: BTreeMap<u32, &PairDraft> = done.iter().map(|d| (d.index, d)).collect();
    for k in 0..table.rows.len() / 2 {
        let first: u32 = table.rows[2 * k][index].trim().parse().unwrap_or(0);
        let Some(d) = by_index.get(&first).filter(|d| d.in_sheet) else {
            continue;
        };
        let Some(draft) = d.question() else {
            continue;
        };
        let options = format!("(a) {} (b) {}", draft.option_a, draft.option_b);
        let pattern = match draft.pattern.as_str() {
            "other" => draft.pattern_name.clone(),
            named => named.to_string(),
        };
        for (j, answer) in [draft.answer_a, draft.answer_b].into_iter().enumerate() {
            let row = &mut table.rows[2 * k + j];
            row[q] = draft.question.clone();
            row[o] = options.clone();
            row[a] = format!("({answer})");
            row[p] = pattern.clone();
        }
    }
    Ok(())
}

/// Writes drafts.json, provenance.json and the filled sheet; returns the provenance.
async fn write_outputs(
    sheet: &Location,
    table: &Sheet,
    done: &[PairDraft],
    job: &Job,
    settings: &DraftSettings,
    summary: &DraftSummary,
) -> Result<serde_json::Value> {
    let file = DraftsFile {
        model: settings.model.clone(),
        verify_model: job.verifier.model().to_string(),
        pairs: done.to_vec(),
    };
    sheet.put_json(DRAFTS, &file).await?;
    // The sheet's own provenance (where `annotate` found its pairs) is kept.
    let mining = match sheet.get_bytes(&sheet.path(PROVENANCE)).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mining").cloned()),
        Err(_) => None,
    };
    let provenance = serde_json::json!({
        "version": crate::VERSION,
        "mining": mining,
        "drafting": {"model": settings.model, "endpoint": job.drafter.endpoint(), "template": job.template},
        "verification": {"model": job.verifier.model(), "endpoint": job.verifier.endpoint(), "template": job.verify, "text_only": job.blind},
        "pairs": summary.pairs,
        "drafted": summary.drafted,
        "verified": summary.verified,
        "disputed": summary.disputed,
        "blind_answerable": summary.blind_answerable,
        "in_sheet": summary.in_sheet,
        "questions": settings.questions,
        "second_questions": summary.second_questions,
        "keep_blind": settings.keep_blind,
        "review": review_provenance(done, summary.review.as_ref()),
    });
    sheet.put_json(PROVENANCE, &provenance).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::table("annotation sheet", e);
    w.write_record(&table.header).map_err(csv_err)?;
    for row in &table.rows {
        w.write_record(row).map_err(csv_err)?;
    }
    let text = w
        .into_inner()
        .map_err(|e| Error::table("annotation sheet", e.to_string()))?;
    sheet.put(QUESTIONS, Bytes::from(text)).await?;
    Ok(provenance)
}

/// What people changed: the review file's counts, or those of the reviews an earlier run
/// applied (null when no draft was reviewed).
fn review_provenance(done: &[PairDraft], file: Option<&ReviewCounts>) -> serde_json::Value {
    if let Some(c) = file {
        return serde_json::json!(c);
    }
    let reviews: Vec<&Review> = done.iter().filter_map(|d| d.review.as_ref()).collect();
    if reviews.is_empty() {
        return serde_json::Value::Null;
    }
    let mut files: Vec<&str> = reviews.iter().map(|r| r.file.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    let mut counts = ReviewCounts {
        file: files.join(", "),
        entries: reviews.len(),
        matched: reviews.len(),
        ..ReviewCounts::default()
    };
    reviews.iter().for_each(|r| counts.add(r));
    serde_json::json!(counts)
}

/// One row of a written benchmark: the sheet's image index and the row's fields.
struct BenchItem {
    image: u32,
    pair: usize,
    fields: [String; 4],
}

/// The benchmark's rows: each complete pair of the sheet (two rows with a question, options
/// and an answer, drafted or written), then, where `seconds` has one, its second question
/// about the same two images.
fn bench_items(table: &Sheet, seconds: &BTreeMap<u32, Draft>) -> Result<Vec<BenchItem>> {
    let col = |n: &str| table.column(n);
    let (index, q, o, a, p) = (
        col("Index")?,
        col("Question")?,
        col("Options")?,
        col("Correct Answer")?,
        col("Pattern")?,
    );
    let complete = |r: &Vec<String>| [q, o, a].iter().all(|&c| !r[c].trim().is_empty());
    let mut items = Vec::new();
    let pairs = table
        .rows
        .chunks(2)
        .filter(|two| two.len() == 2 && two.iter().all(complete));
    for (pair, two) in pairs.enumerate() {
        let image = |r: &Vec<String>| r[index].trim().parse::<u32>().unwrap_or(0);
        for r in two {
            let fields = [&r[q], &r[o], &r[a], &r[p]].map(|f| f.to_string());
            items.push(BenchItem {
                image: image(r),
                pair: pair + 1,
                fields,
            });
        }
        let Some(d) = seconds.get(&image(&two[0])) else {
            continue;
        };
        let options = format!("(a) {} (b) {}", d.option_a, d.option_b);
        for (r, answer) in two.iter().zip([d.answer_a, d.answer_b]) {
            let fields = [
                d.question.clone(),
                options.clone(),
                format!("({answer})"),
                r[p].clone(),
            ];
            items.push(BenchItem {
                image: image(r),
                pair: pair + 1,
                fields,
            });
        }
    }
    Ok(items)
}

/// The second questions that join the benchmark, by their pair's first sheet index.
fn second_questions(done: &[PairDraft]) -> BTreeMap<u32, Draft> {
    done.iter()
        .filter_map(|d| {
            let q = d.second.as_ref().filter(|q| q.in_benchmark)?;
            Some((d.index, q.draft.clone()?))
        })
        .collect()
}

/// The sheet's filled pairs as an MMVP-format benchmark at `out`: indexes 1..n, two rows per
/// pair with opposite answers (four, under a `Pair` column, where a pair has a second
/// question), the images copied, and the provenance (with the sheet it came from).
async fn write_benchmark(
    out: &Location,
    sheet: &Location,
    table: &Sheet,
    images: &BTreeMap<u32, String>,
    provenance: &serde_json::Value,
    seconds: &BTreeMap<u32, Draft>,
) -> Result<u32> {
    let items = bench_items(table, seconds)?;
    let paired = items.len() > 2 * items.last().map_or(0, |i| i.pair);
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::table("benchmark", e);
    let mut header = vec!["Index", "Question", "Options", "Correct Answer", "Pattern"];
    if paired {
        header.push("Pair");
    }
    w.write_record(&header).map_err(csv_err)?;
    for (n, item) in (1u32..).zip(&items) {
        let rel = images
            .get(&item.image)
            .ok_or_else(|| Error::Usage(format!("the sheet has no image {}", item.image)))?;
        let ext = rel.rsplit('.').next().unwrap_or("jpg");
        let bytes = sheet
            .get_bytes(&sheet.path(rel))
            .await
            .map_err(|e| Error::storage(sheet.uri_of(&sheet.path(rel)), e))?;
        out.put(&format!("{MMVP_IMAGES}/{n}.{ext}"), bytes).await?;
        let mut row = vec![n.to_string()];
        row.extend(item.fields.iter().cloned());
        if paired {
            row.push(item.pair.to_string());
        }
        w.write_record(&row).map_err(csv_err)?;
    }
    let text = w
        .into_inner()
        .map_err(|e| Error::table("benchmark", e.to_string()))?;
    out.put(QUESTIONS, Bytes::from(text)).await?;
    let n = items.len() as u32;
    let pairs = items.last().map_or(0, |i| i.pair);
    let mut provenance = provenance.clone();
    provenance["sheet"] = serde_json::json!(sheet.url);
    provenance["items"] = serde_json::json!(n);
    provenance["benchmark_pairs"] = serde_json::json!(pairs);
    provenance["second_questions"] = serde_json::json!((items.len() - 2 * pairs) / 2);
    out.put_json(PROVENANCE, &provenance).await?;
    Ok(n)
}

/// Writes the complete pairs of the annotation sheet at `sheet` (drafted, reviewed or written
/// by hand) as an MMVP-format benchmark at `out`, with the sheet's provenance; returns its
/// items.
pub async fn write_sheet_benchmark(sheet: &Location, out: &Location) -> Result<u32> {
    let table = Sheet::read(sheet).await?;
    let images = sheet_images(sheet).await?;
    let provenance = match sheet.get_bytes(&sheet.path(PROVENANCE)).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
    let provenance = match provenance {
        serde_json::Value::Object(_) => provenance,
        _ => serde_json::json!({}),
    };
    let seconds = second_questions(
        &previous_drafts(sheet)
            .await
            .into_values()
            .collect::<Vec<_>>(),
    );
    write_benchmark(out, sheet, &table, &images, &provenance, &seconds).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_are_checked_for_two_options_and_different_answers() {
        let good = r#"Sure: ```json
{"difference": "The L faces right in A, left in B.", "pattern": "Orientation and Direction",
 "question": "Which way does the foot of the L point?", "options": ["right", "left"],
 "answer_a": "(a)", "answer_b": "b"}
```"#;
        let d = parse_draft(good).unwrap();
        assert_eq!(d.pattern, "Orientation");
        assert_eq!((d.answer_a, d.answer_b), ('a', 'b'));
        assert_eq!(
            (d.option_a.as_str(), d.option_b.as_str()),
            ("right", "left")
        );
        let same = good.replace("\"answer_b\": \"b\"", "\"answer_b\": \"a\"");
        assert!(parse_draft(&same)
            .unwrap_err()
            .contains("does not tell them apart"));
        let three = good.replace("[\"right\", \"left\"]", "[\"right\", \"left\", \"up\"]");
        assert!(parse_draft(&three).unwrap_err().contains("3 options"));
        assert!(parse_draft("I cannot help with that.")
            .unwrap_err()
            .contains("no JSON"));
        let other = good.replace(
            "Orientation and Direction",
            "other\", \"pattern_name\": \"Shadow",
        );
        let d = parse_draft(&other).unwrap();
        assert_eq!(
            (d.pattern.as_str(), d.pattern_name.as_str()),
            ("other", "Shadow")
        );
        let twins = good.replace("\"right\", \"left\"", "\"Left\", \"left\"");
        assert!(parse_draft(&twins)
            .unwrap_err()
            .contains("both options read"));
        let named = good.replace("Orientation and Direction", "=cmd|x");
        assert!(parse_draft(&named)
            .unwrap_err()
            .contains("spreadsheet formula"));
        let formula = good.replace("\"right\", \"left\"", "\"=HYPERLINK(1)\", \"left\"");
        assert!(parse_draft(&formula).unwrap_err().contains("formula"));
        let bad_letter = good.replace("\"answer_a\": \"(a)\"", "\"answer_a\": \"c\"");
        assert!(parse_draft(&bad_letter).unwrap_err().contains("not a or b"));
    }

    #[test]
    fn sheet_keys_and_hints_come_back_from_their_spreadsheet_guard() {
        // annotate writes `'=...` for a key a spreadsheet would run; draft reads the key.
        let header = [
            "Index",
            "Question",
            "Options",
            "Correct Answer",
            "Pattern",
            "key",
            "note",
        ];
        let row = |i: &str, key: &str| {
            vec![i, "", "", "", "'+Color", key, "'=look left"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let sheet = Sheet {
            header: header.map(String::from).to_vec(),
            rows: vec![row("1", "'=cmd|a"), row("2", "plain/b")],
        };
        let images = [(1, "MMVP Images/1.png"), (2, "MMVP Images/2.png")]
            .map(|(i, p)| (i, p.to_string()))
            .into_iter()
            .collect();
        let pairs = sheet.pairs(&images, &BTreeMap::new()).unwrap();
        assert_eq!(
            (pairs[0].a.as_str(), pairs[0].b.as_str()),
            ("=cmd|a", "plain/b")
        );
        assert_eq!(pairs[0].hint, "+Color; =look left");
    }

    #[test]
    fn a_template_file_needs_its_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.txt");
        std::fs::write(&f, "{question} only").unwrap();
        let err = Prompt::resolve(
            f.to_str().unwrap(),
            VERIFY_TEMPLATE,
            &["{question}", "{option_a}"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("{option_a}"), "{err}");
        let shipped = Prompt::resolve(
            "default",
            VERIFY_TEMPLATE,
            &["{question}", "{option_a}", "{option_b}"],
        )
        .unwrap();
        assert_eq!(
            shipped
                .render(&[
                    ("{question}", "Q?"),
                    ("{option_a}", "x"),
                    ("{option_b}", "y")
                ])
                .lines()
                .next(),
            Some("Q?")
        );
    }
}
