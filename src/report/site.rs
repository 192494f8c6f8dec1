//! The report's pages: a shared layout, the gallery shell (its behaviour is `assets/app.js`),
//! and the thresholds and evaluation pages, rendered here with their SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::data::{Evaluations, Groups, Thresholds};
use super::{pattern_order, pattern_series, svg_file, ReportParams};
use crate::error::Result;
use crate::plot::{Bars, Density, Histogram, Scatter};
use crate::storage::Location;

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The static assets every report carries.
pub fn assets() -> [(&'static str, &'static str); 2] {
    [("assets/app.js", APP_JS), ("assets/style.css", STYLE_CSS)]
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text from the corpus (a key, a caption), escaped and in its own bidi isolate: right-to-left
/// overrides inside it cannot reorder the page around it.
pub fn bdi(s: &str) -> String {
    format!("<bdi>{}</bdi>", esc(s))
}

/// A page in the shared layout.
pub fn page(title: &str, active: &str, root: &Location, body: &str, scripts: &str) -> String {
    let nav = [
        ("index.html", "gallery", "Pairs"),
        ("thresholds.html", "thresholds", "Thresholds"),
        ("evaluation.html", "evaluation", "Evaluation"),
    ]
    .iter()
    .map(|(href, id, label)| {
        let class = if *id == active {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    })
    .collect::<Vec<_>>()
    .join("");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · blindspot</title><link rel=\"stylesheet\" href=\"assets/style.css\"></head>\
         <body><header><span class=\"brand\">blindspot</span><nav>{nav}</nav>\
         <span class=\"root\" title=\"run root\">{root}</span></header><main>{body}</main>\
         <footer>blindspot {v} · report of {root}</footer>{scripts}</body></html>\n",
        t = esc(title),
        root = esc(&root.url),
        v = crate::VERSION,
    )
}

/// The gallery: controls and an empty grid the app fills.
pub fn gallery_page(root: &Location, groups: &Groups, params: &ReportParams, shown: u64) -> String {
    let every_pair = params.every_pair;
    let patterns: String = super::PATTERNS
        .iter()
        .map(|p| format!("<option value=\"{0}\">{0}</option>", esc(p)))
        .collect();
    let (rows, what) = match every_pair {
        true => (groups.pairs, "pairs"),
        false => (groups.group_pairs, "pairs of near-duplicate groups"),
    };
    let mut capped = match every_pair {
        true => format!("<p class=\"note\">One card per pair: {} pairs.</p>", fmt_count(groups.pairs)),
        false => format!(
            "<p class=\"note\">One card per pair of near-duplicate groups (an image in no group is a group of one), showing its most CLIP-blind member pair and how many pairs it stands for: {} pairs of groups for {} pairs (<code>report --every-pair</code> shows every pair).</p>",
            fmt_count(groups.group_pairs),
            fmt_count(groups.pairs)
        ),
    };
    if shown < rows {
        capped += &format!(
            "<p class=\"note\">The gallery holds the {shown} most CLIP-blind of {rows} {what} \
             (<code>--max-pairs</code>); the thresholds page covers every candidate.</p>"
        );
    }
    let (draft_filter, draft_help) = draft_controls(params.drafts.is_some());
    let body = format!(
        r#"<h1>Mined pairs</h1>{capped}
<section class="controls" id="controls">
  <label>Sort <select id="sort">
    <option value="dino-asc">DINOv2 similarity, lowest first</option>
    <option value="dino-desc">DINOv2 similarity, highest first</option>
    <option value="clip-desc">CLIP similarity, highest first</option>
    <option value="clip-asc">CLIP similarity, lowest first</option>
    <option value="gap-desc">gap (CLIP − DINOv2), largest first</option>
    <option value="comp-desc">member pairs, most first</option>
  </select></label>
  <label>CLIP ≥ <input id="clip-min" type="number" step="0.01" min="-1" max="1"></label>
  <label>CLIP ≤ <input id="clip-max" type="number" step="0.01" min="-1" max="1"></label>
  <label>DINOv2 ≥ <input id="dino-min" type="number" step="0.01" min="-1" max="1"></label>
  <label>DINOv2 ≤ <input id="dino-max" type="number" step="0.01" min="-1" max="1"></label>
  <label>Pattern <select id="pattern"><option value="">any</option><option value="-">none yet</option>{patterns}</select></label>
  <label>Decision <select id="decision"><option value="">any</option><option value="undecided">undecided</option><option value="accept">accepted</option><option value="reject">rejected</option></select></label>
  {draft_filter}<label>Group <input id="comp" type="number" min="0" step="1" placeholder="any"></label>
  <label>Per page <select id="page-size"><option>12</option><option>24</option><option selected>48</option><option>96</option></select></label>
  <button id="reset" type="button">Reset</button>
</section>
<section class="bar">
  <span id="count" data-count="0">loading…</span>
  <span class="pager"><button id="prev" type="button">◀ prev</button> <span id="page-info"></span> <button id="next" type="button">next ▶</button></span>
  <span class="review-tools"><span id="decided"></span>
    <button id="export-csv" type="button">Export CSV</button>
    <button id="export-json" type="button">Export JSON</button>
    <label class="import">Import <input id="import" type="file" accept=".json,.csv,application/json,text/csv"></label>
    <button id="help-toggle" type="button">Keys (?)</button></span>
</section>
<section id="help" hidden><p><kbd>j</kbd>/<kbd>→</kbd> next pair, <kbd>k</kbd>/<kbd>←</kbd> previous,
<kbd>a</kbd> accept, <kbd>r</kbd> reject, <kbd>u</kbd> undecide, <kbd>1</kbd>–<kbd>9</kbd> pattern
(in the order of the Pattern list), <kbd>0</kbd> no pattern, <kbd>n</kbd> write a note
(<kbd>Enter</kbd> keeps it), <kbd>]</kbd>/<kbd>[</kbd> next/previous page. Decisions are kept in
this browser (local storage, per report) until exported; Import reads an exported file back (by
keys, so into a rebuilt report too); <code>blindspot annotate --decisions FILE</code>
turns the accepted pairs into benchmark items with their pattern.</p>{draft_help}</section>
<p id="error" class="error" hidden></p>
<section id="grid" class="grid"></section>"#
    );
    let scripts = "<script src=\"data/meta.js\"></script><script src=\"data/index.js\"></script>\
                   <script src=\"assets/app.js\"></script>";
    page("Pairs", "gallery", root, &body, scripts)
}

/// The gallery's Draft filter and the help on reviewing drafts, with `report --drafts`.
fn draft_controls(drafts: bool) -> (&'static str, &'static str) {
    match drafts {
        false => ("", ""),
        true => (
            r#"<label>Draft <select id="draft-filter"><option value="">any</option><option value="drafted">drafted</option><option value="verified">verified</option><option value="disputed">disputed or unanswered</option><option value="blind">answerable without the image</option><option value="failed">failed</option><option value="reviewed">reviewed</option><option value="none">no draft</option></select></label>
  "#,
            r#"<p>Drafted questions (<code>report --drafts</code>): <kbd>e</kbd> edit the question
(<kbd>Tab</kbd> to the options and answers, <kbd>Enter</kbd> keeps the edit), <kbd>s</kbd> swap the
two images' answers, <kbd>v</kbd> approve the draft as it is, <kbd>z</kbd> back to the draft;
<kbd>1</kbd>–<kbd>9</kbd> set its pattern. Edits are kept with the decisions and exported with
them; <code>blindspot draft SHEET --review FILE</code> puts them into the sheet and the
benchmark.</p>"#,
        ),
    }
}

fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The bins of component sizes: 2, 3, 4, 5-8, 9-16, ... (powers of two).
pub fn size_bins(sizes: &[u64]) -> (Vec<String>, Vec<u64>) {
    let mut labels = vec!["2".to_string(), "3".into(), "4".into()];
    let mut counts = vec![0u64; 3];
    let max = sizes.iter().copied().max().unwrap_or(2);
    let mut lo = 5u64;
    while lo <= max {
        labels.push(format!("{lo}-{}", lo * 2 - 2));
        counts.push(0);
        lo = lo * 2 - 1;
    }
    for s in sizes {
        let i = match s {
            0..=2 => 0,
            3 => 1,
            4 => 2,
            s => {
                // Bin k >= 3 spans [2^(k-1)+1, 2^k].
                let mut k = 3;
                let mut hi = 8;
                while *s > hi {
                    k += 1;
                    hi *= 2;
                }
                k
            }
        };
        if i < counts.len() {
            counts[i] += 1;
        } else {
            *counts.last_mut().expect("bins") += 1;
        }
    }
    (labels, counts)
}

/// The thresholds page's body and its chart files.
pub fn thresholds_body(
    t: Option<&Thresholds>,
    groups: &Groups,
) -> Result<(String, Vec<(String, String)>)> {
    let mut files = Vec::new();
    let mut h = String::from("<h1>Thresholds</h1>");
    match t {
        None => h.push_str("<p class=\"note\">This run root has no candidates table yet: run <code>blindspot candidates</code>.</p>"),
        Some(t) if t.with_dino == 0 => {
            let _ = write!(
                h,
                "<p class=\"note\">{} candidate pairs, none with a DINOv2 similarity yet: run <code>blindspot filter</code> (after <code>blindspot dino</code> where the shards were embedded with CLIP only).</p>",
                fmt_count(t.candidates)
            );
        }
        Some(t) => candidates_section(&mut h, &mut files, t)?,
    }
    groups_section(&mut h, &mut files, groups)?;
    Ok((h, files))
}

/// How the candidates' recall was measured, as a paragraph.
fn recall_note(r: &crate::table::records::RecallCommit) -> String {
    format!(
        "<p id=\"recall\">Recall of the candidates against brute force: <b>{:.5}</b> ({} of {} pairs above CLIP {} found, for a sample of {} images; method {}{}).</p>",
        r.recall.recall,
        fmt_count(r.recall.found),
        fmt_count(r.recall.exact_pairs),
        r.clip_min,
        r.recall.sample,
        esc(&r.method),
        match (r.probe, r.target_recall) {
            (Some(p), Some(t)) => format!(", probe {p} chosen by partition for a target recall of {t}"),
            (Some(p), None) => format!(", probe {p}"),
            _ => String::new(),
        }
    )
}

/// The candidates' density, histograms and yield table.
fn candidates_section(
    h: &mut String,
    files: &mut Vec<(String, String)>,
    t: &Thresholds,
) -> Result<()> {
    let _ = write!(
        h,
        "<p>{} candidate pairs (CLIP similarity above the candidates threshold); {} with DINOv2 vectors for both images, shown here.</p>",
        fmt_count(t.candidates),
        fmt_count(t.with_dino)
    );
    if let Some(r) = &t.recall {
        h.push_str(&recall_note(r));
    }
    let density = Density {
        title: "Candidates: CLIP vs DINOv2 similarity".into(),
        x_label: "CLIP cosine similarity".into(),
        y_label: "DINOv2 cosine similarity".into(),
        x_range: t.clip_range,
        y_range: t.dino_range,
        counts: t.density.clone(),
        x_line: None,
        y_line: Some(0.6),
    };
    h.push_str("<section class=\"charts\">");
    h.push_str(&svg_file(
        files,
        "density",
        &density,
        "density of candidates",
    )?);
    let (nc, nd) = (t.density.len(), t.density.first().map_or(0, Vec::len));
    let marginal = |clip: bool| -> Vec<u64> {
        match clip {
            true => t.density.iter().map(|r| r.iter().sum()).collect(),
            false => (0..nd)
                .map(|k| t.density.iter().map(|r| r[k]).sum())
                .collect(),
        }
    };
    let labels = |(lo, hi): (f64, f64), n: usize| -> Vec<String> {
        (0..n)
            .map(|k| format!("{:.3}", lo + (hi - lo) * k as f64 / n as f64))
            .collect()
    };
    for (name, clip, range, c, n) in [
        ("clip-histogram", true, t.clip_range, 0, nc),
        ("dino-histogram", false, t.dino_range, 1, nd),
    ] {
        let chart = Histogram {
            title: format!(
                "{} similarity of candidates",
                if clip { "CLIP" } else { "DINOv2" }
            ),
            x_label: "cosine similarity (bin start)".into(),
            y_label: "pairs".into(),
            bins: labels(range, n),
            counts: marginal(clip),
            log: false,
            colour: c,
        };
        h.push_str(&svg_file(files, name, &chart, name)?);
    }
    h.push_str("</section>");
    yield_table(h, t);
    Ok(())
}

/// The yield at every (CLIP min, DINOv2 max) of the grids, pairs and images.
fn yield_table(h: &mut String, t: &Thresholds) {
    h.push_str("<h2>Yield</h2><p>Pairs (and distinct images) with CLIP similarity above the row's minimum and DINOv2 similarity below the column's maximum, counted exactly from every filter unit's aggregates (pairs on a grid of 0.001 in CLIP and 0.01 in DINOv2; images from each image's lowest DINOv2 similarity per hundredth of CLIP).</p>");
    h.push_str("<table class=\"yield\" id=\"yield\"><thead><tr><th>CLIP &gt;</th>");
    for d in &t.dino_grid {
        let _ = write!(h, "<th>DINOv2 &lt; {d}</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for (ci, c) in t.clip_grid.iter().enumerate() {
        let _ = write!(h, "<tr><th>{c}</th>");
        for di in 0..t.dino_grid.len() {
            let _ = write!(
                h,
                "<td data-pairs=\"{p}\" data-images=\"{i}\">{pf} <small>({if_} images)</small></td>",
                p = t.yield_pairs[ci][di],
                i = t.yield_images[ci][di],
                pf = fmt_count(t.yield_pairs[ci][di]),
                if_ = fmt_count(t.yield_images[ci][di]),
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
}

/// The near-duplicate groups: their sizes and a table of the largest.
fn groups_section(
    h: &mut String,
    files: &mut Vec<(String, String)>,
    groups: &Groups,
) -> Result<()> {
    h.push_str("<h2>Near-duplicate groups</h2>");
    if groups.sizes.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\">No near-duplicate groups{}.</p>",
            if groups.pairs == 0 {
                " and no mined pairs yet"
            } else {
                ": no two candidate images are near-duplicates in DINOv2 (at or above <code>--dup-min</code>)"
            }
        );
        return Ok(());
    }
    let _ = write!(
        h,
        "<p>Candidates at or above the near-duplicate threshold in DINOv2 join {} images into {} groups (connected components); the largest has {} images. {} pairs fall into {} pairs of groups.</p>",
        fmt_count(groups.sizes.iter().sum()),
        fmt_count(groups.sizes.len() as u64),
        fmt_count(groups.sizes[0]),
        fmt_count(groups.pairs),
        fmt_count(groups.group_pairs),
    );
    let (labels, counts) = size_bins(&groups.sizes);
    let chart = Histogram {
        title: "Group sizes".into(),
        x_label: "images in the group".into(),
        y_label: "groups".into(),
        bins: labels,
        counts,
        log: true,
        colour: 2,
    };
    h.push_str(&svg_file(files, "components", &chart, "group sizes")?);
    h.push_str("<table class=\"components\" id=\"components\"><thead><tr><th>group</th><th>images</th><th>pairs</th><th>some members</th></tr></thead><tbody>");
    for (c, keys) in groups.members.iter().enumerate() {
        let more = (groups.sizes[c] as usize).saturating_sub(keys.len());
        let shown: Vec<String> = keys.iter().map(|k| bdi(k)).collect();
        let _ = write!(
            h,
            "<tr><td><a href=\"index.html#comp={c}\">#{c}</a></td><td>{}</td><td>{}</td><td><code>{}</code>{}</td></tr>",
            groups.sizes[c],
            groups.pairs_of[c],
            shown.join("</code> <code>"),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
    }
    h.push_str("</tbody></table>");
    Ok(())
}

/// What a score cell adds below its accuracies: answer bias, agreement across samples and
/// NaturalBench's scores, where the evaluation has them.
fn extras(r: &super::data::Score) -> String {
    let mut t = String::new();
    if let Some(s) = r.a_share {
        let _ = write!(t, " · (a) {s:.0}%");
    }
    if let Some((agree, flips)) = r.agreement {
        let _ = write!(t, " · agree {agree:.0}%, flips {flips:.0}%");
    }
    if let Some((q, i, g)) = r.natural {
        let _ = write!(t, " · Q/I/G {q:.0}/{i:.0}/{g:.0}");
    }
    t
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn interval(i: Option<(f64, f64)>) -> String {
    i.map_or(String::new(), |(l, h)| {
        format!(" <small>[{l:.1}, {h:.1}]</small>")
    })
}

/// One kind's bars per pattern and its model x pattern table.
fn kind_section(
    h: &mut String,
    files: &mut Vec<(String, String)>,
    e: &Evaluations,
    (kind, title): (&str, &str),
    order: &[String],
    method: &str,
) -> Result<()> {
    let series = pattern_series(&e.scores, kind, order);
    if series.is_empty() {
        return Ok(());
    }
    let _ = write!(h, "<h2>{title}</h2>");
    let chart = Bars {
        title: format!("{title}: pair accuracy per pattern"),
        y_label: "pair accuracy (%)".into(),
        categories: order.to_vec(),
        series,
        y_max: 100.0,
        note: Some(format!("whiskers: {method}")),
    };
    h.push_str(&svg_file(
        files,
        &format!("patterns-{kind}"),
        &chart,
        title,
    )?);
    // Model x pattern table.
    let mut models: BTreeMap<(String, String), Vec<&super::data::Score>> = BTreeMap::new();
    for s in e.scores.iter().filter(|s| s.kind == kind) {
        models
            .entry((s.model.clone(), s.benchmark.clone()))
            .or_default()
            .push(s);
    }
    let _ = write!(
        h,
        "<table class=\"scores\" data-kind=\"{kind}\"><thead><tr><th>model</th><th>benchmark</th>"
    );
    for p in order.iter().map(String::as_str).chain(["all"]) {
        let _ = write!(h, "<th>{}</th>", esc(p));
    }
    h.push_str("</tr></thead><tbody>");
    for ((model, bench), rows) in &models {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td>", esc(model), esc(bench));
        for p in order.iter().map(String::as_str).chain(["all"]) {
            match rows.iter().find(|r| r.pattern == p) {
                Some(r) => {
                    let _ = write!(
                        h,
                        "<td><b>{}</b>{}<br><small>questions {}{} · {} pairs{}</small></td>",
                        pct(r.pair_accuracy),
                        interval(r.pair_interval),
                        pct(r.question_accuracy),
                        interval(r.question_interval),
                        r.pairs,
                        extras(r)
                    );
                }
                None => h.push_str("<td>–</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table><p class=\"note\">Bold: pair accuracy (%), both questions of a pair right; below: question accuracy (%) and pairs; brackets: intervals; (a): the share of answers that chose option (a), the answer bias; agree and flips: with --repeats, agreement across samples and the share of items whose answer flips; Q/I/G: NaturalBench's question, image and group accuracy where pairs ask two questions of two images. Runs with [no image] or [swapped] are models of their own: the text-only baseline and the swapped options.</p>");
    Ok(())
}

/// The encoder vs MLLM correlations: a table and a scatter per pair.
fn correlations_section(
    h: &mut String,
    files: &mut Vec<(String, String)>,
    e: &Evaluations,
    order: &[String],
) -> Result<()> {
    h.push_str("<h2>Encoder vs MLLM</h2><table class=\"correlations\"><thead><tr><th>encoder</th><th>MLLM</th><th>metric</th><th>Pearson r</th><th>Spearman ρ</th><th>patterns</th></tr></thead><tbody>");
    for c in &e.correlations {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.encoder),
            esc(&c.mllm),
            esc(&c.metric),
            c.pearson.map_or("–".into(), |r| format!("{r:.2}")),
            c.pearson_interval.map_or(String::new(), |(l, h)| format!(
                " <small>[{l:.2}, {h:.2}]</small>"
            )),
            c.spearman.map_or("–".into(), |r| format!("{r:.2}")),
            c.n
        );
    }
    let fisher = e
        .correlations
        .iter()
        .find_map(|c| c.interval.clone())
        .unwrap_or_else(|| "no intervals".into());
    let _ = write!(
        h,
        "</tbody></table><p class=\"method\">r's interval: {}.</p>",
        esc(&fisher)
    );
    h.push_str("<section class=\"charts\">");
    for (i, c) in e.correlations.iter().enumerate() {
        let value = |model: &str, p: &str| {
            e.scores
                .iter()
                .find(|s| s.model == model && s.pattern == p)
                .and_then(|s| {
                    if c.metric == "question" {
                        s.question_accuracy
                    } else {
                        s.pair_accuracy
                    }
                })
        };
        let points: Vec<(String, f64, f64)> = order
            .iter()
            .filter_map(|p| Some((p.clone(), value(&c.encoder, p)?, value(&c.mllm, p)?)))
            .collect();
        if points.len() < 2 {
            continue;
        }
        let note = c
            .pearson
            .map(|r| crate::plot::r_note(r, c.pearson_interval, c.n as u64));
        let chart = Scatter {
            title: format!("{} vs {}", c.encoder, c.mllm),
            x_label: format!("{} {} accuracy (%)", c.encoder, c.metric),
            y_label: format!("{} {} accuracy (%)", c.mllm, c.metric),
            points,
            note,
        };
        h.push_str(&svg_file(
            files,
            &format!("scatter-{i}"),
            &chart,
            &chart.title,
        )?);
    }
    h.push_str("</section>");
    Ok(())
}

/// Every evaluation's settings, with a prompt as sent.
fn settings_table(h: &mut String, e: &Evaluations) {
    h.push_str("<h2>Settings</h2><table class=\"settings\"><thead><tr><th>kind</th><th>model</th><th>benchmark</th><th>template</th><th>grader</th><th>labels</th><th>decoding</th><th>endpoint</th><th>items</th><th>a prompt as sent</th></tr></thead><tbody>");
    for s in &e.settings {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><details><summary>show</summary><pre>{}</pre></details></td></tr>",
            esc(&s.kind),
            esc(&s.model),
            esc(&s.benchmark),
            esc(&s.template),
            esc(&s.grader),
            esc(&s.labels),
            esc(&s.settings),
            esc(&s.endpoint),
            s.items,
            esc(&s.example_prompt)
        );
    }
    h.push_str("</tbody></table>");
}

/// The evaluation page's body and its chart files.
pub fn evaluation_body(e: &Evaluations) -> Result<(String, Vec<(String, String)>)> {
    let mut files = Vec::new();
    let mut h = String::from("<h1>Evaluation</h1>");
    if e.scores.is_empty() {
        h.push_str("<p class=\"note\">No evaluations in this run root yet: run <code>blindspot eval vlm</code> or <code>blindspot eval mllm</code>.</p>");
        return Ok((h, files));
    }
    let method = e
        .scores
        .iter()
        .find_map(|s| s.interval.clone())
        .unwrap_or_else(|| "no intervals (the scores were written without --bootstrap)".into());
    let _ = write!(
        h,
        "<p class=\"method\" id=\"method\">Intervals: {}. Each pattern's pairs are resampled with replacement and the accuracy recomputed; the interval is the 2.5th to 97.5th percentile of the resampled accuracies. One pair of MMVP's 150 is worth 0.67 points of pair accuracy.</p>",
        esc(&method)
    );
    let order = pattern_order(e.scores.iter().map(|s| s.pattern.clone()));
    for (kind, title) in [
        ("vlm", "Vision encoders (MMVP-VLM)"),
        ("mllm", "MLLMs (MMVP)"),
    ] {
        kind_section(&mut h, &mut files, e, (kind, title), &order, &method)?;
    }
    if !e.correlations.is_empty() {
        correlations_section(&mut h, &mut files, e, &order)?;
    }
    if !e.settings.is_empty() {
        settings_table(&mut h, e);
    }
    Ok((h, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_size_bins() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let (labels, counts) = size_bins(&[2, 2, 3, 4, 5, 8, 9, 16, 17, 40]);
        assert_eq!(labels, ["2", "3", "4", "5-8", "9-16", "17-32", "33-64"]);
        assert_eq!(counts, [2, 1, 1, 2, 2, 1, 1]);
        assert_eq!(fmt_count(1234567), "1,234,567");
    }
}
