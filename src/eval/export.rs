//! `eval export`: a run root's MLLM evaluations in the layouts other harnesses write, so
//! results can be set beside published runs and read by their tooling.
//!
//! - `lmms-eval`: per evaluation, `<out>/<model>/<date>_samples_<task>.jsonl` (one JSON object
//!   per item: `doc_id`, `doc`, `target`, `arguments`, `resps`, `filtered_resps`, the per-item
//!   metric) and `<out>/<model>/<date>_results.json` (`results.<task>."<metric>,none"`,
//!   `n-samples`, `config`, `configs`, `versions`, `higher_is_better`), as lmms-eval's
//!   `--output_path --log_samples` writes them.
//! - `vlmevalkit`: `<out>/<model>/<model>_<DATASET>.tsv`, VLMEvalKit's prediction sheet
//!   (`index`, `question`, `A`, `B`, `answer`, `category`, `prediction`, `hit`), and
//!   `<model>_<DATASET>_acc.csv` (overall and per category accuracy, percent).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sql;
use crate::storage::{segment_id, Location};

/// Which harness's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// lmms-eval's samples JSONL and results JSON.
    #[value(name = "lmms-eval")]
    LmmsEval,
    /// VLMEvalKit's prediction TSV and accuracy CSV.
    #[value(name = "vlmevalkit")]
    Vlmevalkit,
}

/// What `eval export` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    /// The layout.
    pub format: Format,
    /// Evaluations exported.
    pub evaluations: usize,
    /// Items over all of them.
    pub items: usize,
    /// Files written.
    pub files: Vec<String>,
    /// Vision-encoder evaluations left out (neither harness has a format for them).
    pub skipped_vlm: usize,
}

#[derive(Clone, Debug)]
struct Item {
    item: u32,
    pair: u32,
    pattern: String,
    prompt: String,
    image: String,
    response: Option<String>,
    choice: Option<String>,
    answer: String,
    correct: bool,
    settings: String,
}

/// The options of an MMVP prompt: the text after `(a)` and after `(b)`.
pub fn options(prompt: &str) -> (String, String) {
    let lower = prompt.to_ascii_lowercase();
    match (lower.rfind("(a)"), lower.rfind("(b)")) {
        (Some(a), Some(b)) if a < b => {
            let first = prompt[a + 3..b].trim().to_string();
            let rest = &prompt[b + 3..];
            // The second option ends at the line or sentence the template adds after it.
            let second = rest
                .split(['\n'])
                .next()
                .unwrap_or(rest)
                .split(" Answer with")
                .next()
                .unwrap_or(rest)
                .trim()
                .to_string();
            (first, second)
        }
        _ => (String::new(), String::new()),
    }
}

/// An option letter however it is written (`b`, `(b)`, `B`), lower case.
fn letter(s: &str) -> String {
    s.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim()
        .to_ascii_lowercase()
}

fn question(prompt: &str) -> String {
    let lower = prompt.to_ascii_lowercase();
    lower
        .rfind("(a)")
        .map_or(prompt, |a| &prompt[..a])
        .trim()
        .to_string()
}

/// Writes every MLLM evaluation of `root` in `format` under `out`.
pub async fn export(root: &Location, out: &Location, format: Format) -> Result<ExportSummary> {
    let (ctx, tables) = sql::session(root).await?;
    if !tables.iter().any(|t| t == "answers") {
        return Err(Error::Usage(format!(
            "{} has no evaluations to export; run `blindspot eval mllm` first",
            root.url
        )));
    }
    let q = "SELECT kind, benchmark, model, template, grader, labels, item, pair, pattern, prompt, image, \
             response, choice, answer, correct, settings FROM answers ORDER BY model, benchmark, template, grader, labels, item";
    let batches = sql::collect(sql::query(&ctx, &tables, q).await?).await?;
    let (evals, skipped) = group_answers(&batches)?;
    if evals.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no MLLM evaluation to export ({} vision-encoder evaluation(s); lmms-eval and VLMEvalKit formats are for MLLMs)",
            root.url,
            skipped.len()
        )));
    }
    let date = crate::storage::now_unix();
    let mut files = Vec::new();
    let mut items = 0;
    // Two evaluations of one model share its folder; their files differ by task name.
    for ((model, bench, template, grader, labels), rows) in &evals {
        items += rows.len();
        let dir = segment_id(model);
        let task = segment_id(&format!("{bench}_{template}_{grader}_{labels}"));
        match format {
            Format::LmmsEval => {
                files.extend(write_lmms(out, &dir, &task, model, date, rows).await?);
            }
            Format::Vlmevalkit => {
                files.extend(write_vlmevalkit(out, &dir, &task, model, rows).await?);
            }
        }
    }
    Ok(ExportSummary {
        format,
        evaluations: evals.len(),
        items,
        files,
        skipped_vlm: skipped.len(),
    })
}

/// An exported evaluation: model, benchmark, template, grader and labels.
type EvalKey = (String, String, String, String, String);

/// The MLLM answers by evaluation, and the vision-encoder evaluations left out.
#[allow(clippy::type_complexity)]
fn group_answers(
    batches: &[arrow::array::RecordBatch],
) -> Result<(
    BTreeMap<EvalKey, Vec<Item>>,
    std::collections::BTreeSet<EvalKey>,
)> {
    let mut evals: BTreeMap<EvalKey, Vec<Item>> = BTreeMap::new();
    let mut skipped = std::collections::BTreeSet::new();
    for b in batches {
        let s = |n: &str| crate::table::io::strings(b, n);
        let (kind, bench, model) = (s("kind")?, s("benchmark")?, s("model")?);
        let (template, grader, labels) = (s("template")?, s("grader")?, s("labels")?);
        let (pattern, prompt, image, answer, settings) = (
            s("pattern")?,
            s("prompt")?,
            s("image")?,
            s("answer")?,
            s("settings")?,
        );
        let (response, choice) = (s("response")?, s("choice")?);
        let u32s = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt32Array>())
                .cloned()
                .ok_or_else(|| Error::table("answers", format!("no {n} column")))
        };
        let (item, pair) = (u32s("item")?, u32s("pair")?);
        let correct = b
            .column_by_name("correct")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::BooleanArray>())
            .cloned()
            .ok_or_else(|| Error::table("answers", "no correct column"))?;
        use arrow::array::Array;
        for i in 0..b.num_rows() {
            let key = (
                model.value(i).to_string(),
                bench.value(i).to_string(),
                template.value(i).to_string(),
                grader.value(i).to_string(),
                labels.value(i).to_string(),
            );
            if kind.value(i) != "mllm" {
                skipped.insert(key);
                continue;
            }
            let opt = |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_string());
            evals.entry(key).or_default().push(Item {
                item: item.value(i),
                pair: pair.value(i),
                pattern: pattern.value(i).to_string(),
                prompt: prompt.value(i).to_string(),
                image: image.value(i).to_string(),
                response: opt(response),
                choice: opt(choice),
                answer: answer.value(i).to_string(),
                correct: correct.value(i),
                settings: settings.value(i).to_string(),
            });
        }
    }
    Ok((evals, skipped))
}

fn pair_accuracy(rows: &[Item]) -> f64 {
    let mut pairs: BTreeMap<u32, bool> = BTreeMap::new();
    for r in rows {
        *pairs.entry(r.pair).or_insert(true) &= r.correct;
    }
    pairs.values().filter(|ok| **ok).count() as f64 / pairs.len().max(1) as f64
}

async fn write_lmms(
    out: &Location,
    dir: &str,
    task: &str,
    model: &str,
    date: u64,
    rows: &[Item],
) -> Result<Vec<String>> {
    let mut jsonl = String::new();
    for (doc_id, r) in rows.iter().enumerate() {
        let (a, b) = options(&r.prompt);
        let line = serde_json::json!({
            "doc_id": doc_id,
            "doc": {"index": r.item, "question": question(&r.prompt), "options": [a, b],
                    "answer": format!("({})", letter(&r.answer)), "pattern": r.pattern, "pair": r.pair, "image": r.image},
            "target": format!("({})", letter(&r.answer)),
            "arguments": [[r.prompt, serde_json::from_str::<serde_json::Value>(&r.settings).unwrap_or(serde_json::Value::Null)]],
            "resps": [[r.response.clone().unwrap_or_default()]],
            "filtered_resps": [r.choice.as_deref().map(|c| format!("({})", letter(c))).unwrap_or_default()],
            "question_accuracy": if r.correct { 1.0 } else { 0.0 },
            "pair_id": r.pair,
        });
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let qa = rows.iter().filter(|r| r.correct).count() as f64 / rows.len().max(1) as f64;
    let results = serde_json::json!({
        "results": {task: {
            "alias": task,
            "question_accuracy,none": qa,
            "question_accuracy_stderr,none": "N/A",
            "pair_accuracy,none": pair_accuracy(rows),
            "pair_accuracy_stderr,none": "N/A",
        }},
        "group_subtasks": {task: []},
        "configs": {task: {"task": task, "output_type": "generate_until", "metric_list": [
            {"metric": "question_accuracy", "aggregation": "mean", "higher_is_better": true},
            {"metric": "pair_accuracy", "aggregation": "mmvp_pairs", "higher_is_better": true}]}},
        "versions": {task: 0},
        "n-shot": {task: 0},
        "higher_is_better": {task: {"question_accuracy": true, "pair_accuracy": true}},
        "n-samples": {task: {"original": rows.len(), "effective": rows.len()}},
        "config": {"model": "openai_compatible", "model_args": format!("model_version={model}"),
                   "batch_size": 1, "gen_kwargs": rows.first().map(|r| r.settings.clone()).unwrap_or_default()},
        "model_name": model,
        "date": date,
        "exported_by": format!("blindspot {}", crate::VERSION),
    });
    let samples = format!("{dir}/{date}_samples_{task}.jsonl");
    let res = format!("{dir}/{date}_results.json");
    out.put(&samples, Bytes::from(jsonl)).await?;
    out.put(
        &res,
        Bytes::from(serde_json::to_string_pretty(&results).unwrap_or_default()),
    )
    .await?;
    Ok(vec![
        out.uri_of(&out.path(&samples)),
        out.uri_of(&out.path(&res)),
    ])
}

async fn write_vlmevalkit(
    out: &Location,
    dir: &str,
    task: &str,
    model: &str,
    rows: &[Item],
) -> Result<Vec<String>> {
    let name = segment_id(model);
    let dataset = task.to_ascii_uppercase();
    let mut tsv = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .from_writer(Vec::new());
    let err = |e: csv::Error| Error::table("vlmevalkit tsv", e);
    tsv.write_record([
        "index",
        "question",
        "A",
        "B",
        "answer",
        "category",
        "prediction",
        "hit",
    ])
    .map_err(err)?;
    let mut by_cat: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in rows {
        let (a, b) = options(&r.prompt);
        tsv.write_record([
            r.item.to_string().as_str(),
            &question(&r.prompt),
            &a,
            &b,
            &letter(&r.answer).to_ascii_uppercase(),
            &r.pattern,
            r.response.as_deref().unwrap_or(""),
            if r.correct { "1" } else { "0" },
        ])
        .map_err(err)?;
        let c = by_cat.entry(&r.pattern).or_default();
        c.0 += usize::from(r.correct);
        c.1 += 1;
    }
    let tsv = tsv
        .into_inner()
        .map_err(|e| Error::table("vlmevalkit tsv", e.to_string()))?;
    let overall = rows.iter().filter(|r| r.correct).count() as f64 / rows.len().max(1) as f64;
    let mut acc = String::from("split,Overall");
    for c in by_cat.keys() {
        acc.push_str(&format!(",{c}"));
    }
    acc.push_str(&format!("\nnone,{:.2}", 100.0 * overall));
    for (ok, n) in by_cat.values() {
        acc.push_str(&format!(",{:.2}", 100.0 * *ok as f64 / *n as f64));
    }
    acc.push('\n');
    let p = format!("{dir}/{name}_{dataset}.tsv");
    let a = format!("{dir}/{name}_{dataset}_acc.csv");
    out.put(&p, Bytes::from(tsv)).await?;
    out.put(&a, Bytes::from(acc)).await?;
    Ok(vec![out.uri_of(&out.path(&p)), out.uri_of(&out.path(&a))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_questions_come_out_of_mmvp_prompts() {
        let p = "Are the butterfly's wings closer to being open or closed? (a) Open (b) Closed";
        assert_eq!(options(p), ("Open".into(), "Closed".into()));
        assert_eq!(
            question(p),
            "Are the butterfly's wings closer to being open or closed?"
        );
        let l = "Is it red? (a) Yes (b) No\nAnswer with the option's letter from the given choices directly.";
        assert_eq!(options(l), ("Yes".into(), "No".into()));
        assert_eq!(options("no options"), (String::new(), String::new()));
        assert_eq!(
            (letter("(b)"), letter("B"), letter(" a ")),
            ("b".into(), "b".into(), "a".into())
        );
    }
}
