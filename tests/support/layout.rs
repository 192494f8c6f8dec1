//! The source tree keeps its one rule: stages talk through tables. No stage module imports
//! another stage, no module imports form a cycle, and the README's map of the tree lists
//! exactly the files under `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use blindspot::stage::Stage;

/// The stages, as module paths; a file belongs to the longest one its module path starts with.
const STAGES: &[&str] = &[
    "embed",
    "mine::partition",
    "mine::index",
    "mine::candidates",
    "sift::dino",
    "sift::filter",
    "eval",
    "annotate",
    "report",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, relative, with `/` separators.
fn rust_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src()).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The module path of a library file (`mine/ann.rs` -> `mine::ann`, `eval/mod.rs` -> `eval`).
fn module_of(file: &str) -> String {
    let trimmed = file
        .trim_end_matches(".rs")
        .trim_end_matches("/mod")
        .replace('/', "::");
    if trimmed == "lib" {
        String::new()
    } else {
        trimmed
    }
}

fn stage_of(module: &str) -> Option<&'static str> {
    STAGES
        .iter()
        .copied()
        .filter(|s| module == *s || module.starts_with(&format!("{s}::")))
        .max_by_key(|s| s.len())
}

/// The modules a file refers to through `crate::` and `super::` paths, resolved to modules
/// that exist.
fn references(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
        for (i, _) in code.match_indices(prefix) {
            if i > 0 {
                let before = code.as_bytes()[i - 1];
                if before.is_ascii_alphanumeric() || before == b'_' || before == b':' {
                    continue;
                }
            }
            let rest = &code[i + prefix.len()..];
            let head = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("");
            // `use crate::a::{b, c::d}` names a::b and a::c::d.
            let mut paths = vec![head.trim_end_matches(':').to_string()];
            if rest[head.len()..].starts_with('{') {
                let group = &rest[head.len() + 1..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let item = item.split_whitespace().next().unwrap_or("");
                    if !item.is_empty() && item != "self" {
                        paths.push(format!("{head}{item}"));
                    }
                }
            }
            for path in paths {
                let path: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
                // The longest prefix of the path that is a module.
                let mut best = None;
                for n in 1..=path.len() {
                    let candidate = join(&base, &path[..n].join("::"));
                    if modules.contains(&candidate) {
                        best = Some(candidate);
                    }
                }
                if let Some(m) = best {
                    if m != module && !m.is_empty() {
                        out.insert(m);
                    }
                }
            }
        }
    }
    out
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

fn join(base: &str, rest: &str) -> String {
    if base.is_empty() {
        rest.to_string()
    } else {
        format!("{base}::{rest}")
    }
}

/// Library modules (the binary's `cli` and `main` are the command line, outside the rule) and
/// the modules each one refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let files: Vec<String> = files
        .into_iter()
        .filter(|f| !f.starts_with("cli") && f != "main.rs")
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(src().join(f)).unwrap();
            let m = module_of(f);
            let refs = references(&m, &text, &modules);
            (m, refs)
        })
        .collect()
}

#[test]
fn no_stage_imports_another_stage() {
    let mut wrong = Vec::new();
    for (module, refs) in graph() {
        let Some(stage) = stage_of(&module) else {
            continue;
        };
        for r in refs {
            if let Some(other) = stage_of(&r) {
                if other != stage {
                    wrong.push(format!(
                        "{module} (stage {stage}) imports {r} (stage {other})"
                    ));
                }
            }
            if r == "spec" || r.starts_with("spec::") {
                wrong.push(format!("{module} imports the spec runner"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "stages must talk through tables:\n{}",
        wrong.join("\n")
    );
}

/// Depth-first search for a back edge from `n`: the cycle it closes, if any.
fn visit(
    n: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    state: &mut BTreeMap<String, u8>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    match state.get(n) {
        Some(2) => return None,
        Some(1) => {
            let start = path.iter().position(|p| p == n).unwrap();
            let mut cycle = path[start..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        _ => {}
    }
    state.insert(n.to_string(), 1);
    path.push(n.to_string());
    for next in edges.get(n).into_iter().flatten() {
        if let Some(c) = visit(next, edges, state, path) {
            return Some(c);
        }
    }
    path.pop();
    state.insert(n.to_string(), 2);
    None
}

fn assert_no_cycle(edges: &BTreeMap<String, BTreeSet<String>>) {
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        let cycle = visit(n, edges, &mut state, &mut Vec::new());
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn module_imports_form_no_cycle() {
    // Submodules collapse into their top-level module, except the stages inside `mine`, so a
    // cycle between two stages of one phase is caught too.
    let node = |m: &str| -> String {
        if let Some(stage) = stage_of(m) {
            return stage.to_string();
        }
        m.split("::").next().unwrap_or("").to_string()
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, refs) in graph() {
        let from = node(&module);
        for r in refs {
            let to = node(&r);
            // A module refers to its own submodules and helpers freely.
            if to != from && !to.is_empty() && !from.is_empty() {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    assert_no_cycle(&edges);
    // The graph is not empty by accident: the stages do depend on the catalog.
    assert!(edges["embed"].contains("table"), "{edges:?}");
    assert!(edges["sift::filter"].contains("sql"), "{edges:?}");
    // Phases sit in pipeline order: mining reaches neither the cluster (the filter's), nor the
    // stages after it, nor evaluation.
    for (from, to) in &edges {
        if from == "mine" || from.starts_with("mine::") {
            for later in ["cluster", "sift", "eval", "report"] {
                assert!(
                    !to.iter()
                        .any(|t| t == later || t.starts_with(&format!("{later}::"))),
                    "{from} reaches {later}: {to:?}"
                );
            }
        }
    }
}

#[test]
fn the_readme_map_lists_exactly_the_source_files() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- tree -->")
        .expect("README.md has a <!-- tree --> block in Development");
    let end = readme[start..].find("<!-- /tree -->").unwrap() + start;
    // Lines of the block name files as `path/`, `file.rs` under the folders above them.
    let mut listed = BTreeSet::new();
    let mut dirs: Vec<(usize, String)> = Vec::new();
    for line in readme[start..end].lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !(name.ends_with(".rs") || name.ends_with('/')) || name == "src/" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        while dirs.last().is_some_and(|(i, _)| *i >= indent) {
            dirs.pop();
        }
        let prefix: String = dirs.iter().map(|(_, d)| d.as_str()).collect();
        if name.ends_with('/') {
            dirs.push((indent, name.to_string()));
        } else {
            listed.insert(format!("{prefix}{name}"));
        }
    }
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let files: BTreeSet<String> = files.into_iter().collect();
    let missing: Vec<_> = files.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&files).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README's tree is out of date: not listed {missing:?}, listed but absent {stale:?}"
    );
}

/// Issue 21: a stage is named through `blindspot::stage::Stage`, never typed as a string where
/// the protocol takes one: the run lock, a generation, claims, leases and progress. A string
/// literal as the first argument of those calls, outside `src/stage.rs` and outside tests, is
/// refused with the place it is at.
#[test]
fn stage_names_are_never_typed_at_the_protocol_calls() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let calls = [
        "RunLock::acquire(",
        ".begin(",
        "Claims::new(",
        "lease::leases(",
        "progress.start(",
    ];
    let mut found = Vec::new();
    let mut calls_seen = 0;
    for file in files.iter().filter(|f| f.as_str() != "stage.rs") {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        // Unit tests at the end of a file may name what they like.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for call in calls {
            for (at, _) in code.match_indices(call) {
                calls_seen += 1;
                let args = &code[at + call.len()..];
                // The first argument that is not the root or the catalog.
                let first = args
                    .split(',')
                    .map(str::trim)
                    .find(|a| {
                        !a.starts_with('&') && !a.starts_with("root") && !a.starts_with("catalog")
                    })
                    .unwrap_or("");
                // A name built with format! is typed as a string too (a label built from a
                // `Stage` is not).
                let mut depth = 1;
                let end = args
                    .char_indices()
                    .find(|(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(args.len(), |(i, _)| i);
                let head = &args[..end];
                let built = head.contains("format!(") && !head.contains("Stage::");
                if first.starts_with('"') || built {
                    let line = code[..at].lines().count() + 1;
                    let first = first.split(')').next().unwrap_or(first);
                    found.push(format!("src/{file}:{line}: {call}{first}"));
                }
            }
        }
    }
    // And anywhere a line speaks of a stage: a stage's name as a string literal there.
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    for file in files.iter().filter(|f| f.as_str() != "stage.rs") {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let speaks = line.to_lowercase().contains("stage") && !line.trim().starts_with("//");
            let literals = line.split('"').skip(1).step_by(2);
            for literal in literals.filter(|l| speaks && names.contains(l)) {
                found.push(format!(
                    "src/{file}:{}: {literal:?} in {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        calls_seen > 20,
        "the calls are where this test looks ({calls_seen})"
    );
    assert!(
        found.is_empty(),
        "stage names typed as strings (use Stage::..):\n{}",
        found.join("\n")
    );
}

/// Issue 21: the binary's modules (`src/cli/`) form no import cycle either (`cli::eval` and
/// `cli::run` used to import each other).
#[test]
fn the_binarys_modules_form_no_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let files: Vec<String> = files.into_iter().filter(|f| f.starts_with("cli")).collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(src().join(f)).unwrap();
        let m = module_of(f);
        for r in references(&m, &text, &modules) {
            if r != m && r != "cli" && m != "cli" {
                edges.entry(m.clone()).or_default().insert(r);
            }
        }
    }
    assert_no_cycle(&edges);
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 3,
        "the commands do import each other's helpers: {edges:?}"
    );
}

/// Issue 21: a commit's stage record is read typed, through `table::records` (each record type
/// tied to its commit set), never as JSON. Outside the catalog (`src/table/`), a file that
/// handles commits may not hold a `serde_json::Value` or `Map`, call `from_value`, or reach
/// into a commit's fields by name.
#[test]
fn commit_records_are_read_typed_outside_the_catalog() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = Vec::new();
    let mut handling = 0;
    for file in files.iter().filter(|f| !f.starts_with("table/")) {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let commits = [
            "Commit",
            "commits_of(",
            "commit_of(",
            "records::<",
            "record_of::<",
        ];
        let handles = code.lines().any(|l| {
            commits.iter().any(|c| {
                l.match_indices(c).any(|(i, _)| {
                    // `Commit` as a word (not `FilterCommit`, `commit_once`).
                    let before = l[..i].chars().last();
                    let after = l[i + c.len()..].chars().next();
                    c.ends_with(['(', '<'])
                        || (!before.is_some_and(|b| b.is_alphanumeric() || b == '_')
                            && !after.is_some_and(|a| a.is_alphanumeric() || a == '_'))
                })
            })
        });
        if !handles {
            continue;
        }
        handling += 1;
        for (n, line) in code.lines().enumerate() {
            let raw = [
                "serde_json::Value",
                "serde_json::Map",
                "serde_json::from_value",
                ".info[",
                ".info.get(",
            ];
            for r in raw.iter().filter(|r| line.contains(*r)) {
                found.push(format!("src/{file}:{}: {r} in {}", n + 1, line.trim()));
            }
        }
    }
    assert!(handling > 15, "files that handle commits: {handling}");
    assert!(
        found.is_empty(),
        "commit records read as JSON outside the catalog (add the field to a type in src/table/records.rs):\n{}",
        found.join("\n")
    );
}
