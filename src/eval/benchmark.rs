//! Loading MMVP-format benchmarks from any object store: MMVP (questions for MLLMs) and
//! MMVP-VLM (statements for vision encoders), as `../shared/MMVP.md` describes them. A
//! benchmark of one's own in either format loads the same way.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::{column, csv_headers, patterns};
use crate::storage::Location;

use crate::mmvp::{MMVP_IMAGES, QUESTIONS, VLM_IMAGES};
/// The items whose answers the original MMVP sheet has swapped (pairs 99/100 and 279/280).
pub const LABEL_FIXES: [(u32, u32); 2] = [(99, 100), (279, 280)];

/// Which labels an MMVP run used; recorded in every output row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    /// The sheet as published.
    #[default]
    Original,
    /// Items 99/100 and 279/280 with their answers swapped back (`--fix-labels`).
    Corrected,
}

impl Labels {
    /// The name written to the tables.
    pub fn name(self) -> &'static str {
        match self {
            Labels::Original => "original",
            Labels::Corrected => "corrected",
        }
    }
}

/// One MMVP question about one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// The 1-based `Index` of the sheet.
    pub index: u32,
    /// The pair it belongs to: rows 2k-1 and 2k are pair k.
    pub pair: u32,
    /// The question text.
    pub question: String,
    /// The options as one string, e.g. `(a) Open (b) Closed`.
    pub options: String,
    /// The correct answer as written, e.g. `(a)`.
    pub answer: String,
    /// The image, relative to the benchmark root.
    pub image: String,
    /// The visual pattern, when the sheet or a mapping gives one.
    pub pattern: Option<String>,
}

/// One MMVP-VLM statement describing one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// The `Question ID`.
    pub id: u32,
    /// The pair it belongs to: IDs 2k-1 and 2k are pair k.
    pub pair: u32,
    /// The pattern (`Type`), normalised to the MMVP-VLM names.
    pub pattern: String,
    /// The statement text.
    pub statement: String,
    /// The image, relative to the benchmark root.
    pub image: String,
}

/// An MMVP benchmark (questions for MLLMs).
#[derive(Clone, Debug)]
pub struct Mmvp {
    /// Where it was read from.
    pub root: Location,
    /// A short name for the tables (the last segment of its URL).
    pub name: String,
    /// The questions, in sheet order.
    pub questions: Vec<Question>,
    /// The labels used.
    pub labels: Labels,
}

/// An MMVP-VLM benchmark (statements for vision encoders).
#[derive(Clone, Debug)]
pub struct MmvpVlm {
    /// Where it was read from.
    pub root: Location,
    /// A short name for the tables.
    pub name: String,
    /// The statements, ordered by ID.
    pub statements: Vec<Statement>,
}

fn bad(root: &Location, reason: impl Into<String>) -> Error {
    Error::Benchmark {
        uri: root.url.clone(),
        reason: reason.into(),
    }
}

/// The last segment of a benchmark's URL, for naming its rows.
pub fn short_name(root: &Location) -> String {
    root.url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("benchmark")
        .to_string()
}

/// The sheet's rows as maps from (trimmed, BOM-free) header to cell.
pub(crate) async fn read_sheet(root: &Location) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let path = root.path(QUESTIONS);
    let bytes = match root.get_bytes(&path).await {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(bad(
                root,
                format!("no {QUESTIONS} here; point --benchmark at the folder that holds {QUESTIONS} and the image folder"),
            ))
        }
        Err(e) => return Err(Error::storage(root.uri_of(&path), e)),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_ref());
    let headers = csv_headers(&mut reader).map_err(|e| bad(root, format!("{QUESTIONS}: {e}")))?;
    let mut rows = Vec::new();
    for (n, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| bad(root, format!("{QUESTIONS} row {}: {e}", n + 2)))?;
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        rows.push(rec.iter().map(|c| c.trim().to_string()).collect());
    }
    Ok((headers, rows))
}

/// Image objects under `folder`, by (subfolder, file stem).
pub(crate) async fn images_by_stem(
    root: &Location,
    folder: &str,
) -> Result<HashMap<(String, String), String>> {
    let mut out = HashMap::new();
    for meta in root.list(folder).await? {
        let rel = root.relative(&meta.location);
        let inner = rel
            .strip_prefix(folder)
            .unwrap_or(&rel)
            .trim_start_matches('/');
        let (dir, file) = inner.rsplit_once('/').unwrap_or(("", inner));
        let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
        out.insert((dir.to_string(), stem.to_string()), rel.clone());
    }
    Ok(out)
}

fn parse_id(root: &Location, value: &str, what: &str, row: usize) -> Result<u32> {
    value.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
        bad(
            root,
            format!("{QUESTIONS} row {row}: {what} {value:?} is not a positive whole number"),
        )
    })
}

/// A sheet in one of the two formats, for the messages about it.
struct Format {
    /// Its name and columns, e.g. "an MMVP sheet has Index, Question, Options, Correct Answer".
    has: &'static str,
    /// A column only the other format has, and the command that reads that one.
    other: (&'static str, &'static str),
}

const MMVP: Format = Format {
    has: "an MMVP sheet has Index, Question, Options, Correct Answer",
    other: (
        "Statement",
        "this looks like MMVP-VLM: use `blindspot eval vlm`",
    ),
};

const MMVP_VLM: Format = Format {
    has: "an MMVP-VLM sheet has Question ID, Type, Statement",
    other: ("Options", "this looks like MMVP: use `blindspot eval mllm`"),
};

impl Format {
    /// The position of the first of `names` among `headers`, or an error that says what the
    /// sheet should have.
    fn need(&self, root: &Location, headers: &[String], names: &[&str]) -> Result<usize> {
        column(headers, names).ok_or_else(|| {
            let hint = if column(headers, &[self.other.0]).is_some() {
                format!(" ({})", self.other.1)
            } else {
                String::new()
            };
            bad(
                root,
                format!(
                    "{QUESTIONS} has no {:?} column (columns: {}); {}{hint}",
                    names[0],
                    headers.join(", "),
                    self.has
                ),
            )
        })
    }
}

/// The error for items whose images are missing, if any are.
fn missing_images(
    root: &Location,
    missing: &[u32],
    (what, ids): (&str, &str),
    layout: &str,
) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(bad(
        root,
        format!(
            "{} {what} have no image ({ids} {}); {layout}",
            missing.len(),
            list_head(missing)
        ),
    ))
}

/// Loads an MMVP benchmark. `fix_labels` applies the known fix of items 99/100 and 279/280.
pub async fn load_mmvp(root: &Location, fix_labels: bool) -> Result<Mmvp> {
    let (headers, rows) = read_sheet(root).await?;
    let need = |names: &[&str]| MMVP.need(root, &headers, names);
    let (ci, cq, co, ca) = (
        need(&["Index", "lndex"])?,
        need(&["Question"])?,
        need(&["Options"])?,
        need(&["Correct Answer"])?,
    );
    let cp = column(&headers, &["Pattern", "Type"]);
    // An explicit `Pair` column groups rows (NaturalBench's two questions about two images);
    // without one, rows 2k-1 and 2k are pair k.
    let cpair = column(&headers, &["Pair"]);
    let images = images_by_stem(root, MMVP_IMAGES).await?;
    let mut questions = Vec::new();
    let mut missing = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let cell = |c: usize| row.get(c).cloned().unwrap_or_default();
        let index = parse_id(root, &cell(ci), "Index", n + 2)?;
        let Some(image) = images.get(&(String::new(), index.to_string())) else {
            missing.push(index);
            continue;
        };
        let pair = match cpair {
            Some(c) => parse_id(root, &cell(c), "Pair", n + 2)?,
            None => index.div_ceil(2),
        };
        questions.push(Question {
            index,
            pair,
            question: cell(cq),
            options: cell(co),
            answer: cell(ca),
            image: image.clone(),
            pattern: cp
                .map(cell)
                .filter(|p| !p.is_empty())
                .map(|p| patterns::canonical(&p)),
        });
    }
    missing_images(
        root,
        &missing,
        ("question(s)", "indices"),
        &format!("each Index N needs {MMVP_IMAGES}/N.jpg"),
    )?;
    match cpair {
        None => check_pairs(root, questions.iter().map(|q| q.index))?,
        Some(_) => check_groups(root, &questions)?,
    }
    let labels = if fix_labels {
        apply_label_fix(&mut questions);
        Labels::Corrected
    } else {
        Labels::Original
    };
    Ok(Mmvp {
        root: root.clone(),
        name: short_name(root),
        questions,
        labels,
    })
}

fn list_head(ids: &[u32]) -> String {
    let mut s: Vec<String> = ids.iter().take(8).map(u32::to_string).collect();
    if ids.len() > 8 {
        s.push("...".into());
    }
    s.join(", ")
}

/// Every index must be unique.
fn check_unique(
    root: &Location,
    ids: impl Iterator<Item = u32>,
) -> Result<std::collections::BTreeSet<u32>> {
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(bad(root, format!("{QUESTIONS} lists item {id} twice")));
        }
    }
    Ok(seen)
}

/// Every pair must be whole and every index unique: scoring by pairs depends on it.
fn check_pairs(root: &Location, ids: impl Iterator<Item = u32>) -> Result<()> {
    let seen = check_unique(root, ids)?;
    let lonely: Vec<u32> = seen
        .iter()
        .copied()
        .filter(|id| {
            let other = if id % 2 == 1 { id + 1 } else { id - 1 };
            !seen.contains(&other)
        })
        .collect();
    if !lonely.is_empty() {
        return Err(bad(
            root,
            format!(
                "items {} have no partner: items 2k-1 and 2k form pair k, so the sheet needs both",
                list_head(&lonely)
            ),
        ));
    }
    Ok(())
}

/// With a `Pair` column: indices unique, and every pair of at least two items.
fn check_groups(root: &Location, questions: &[Question]) -> Result<()> {
    check_unique(root, questions.iter().map(|q| q.index))?;
    let mut sizes: std::collections::BTreeMap<u32, usize> = Default::default();
    for q in questions {
        *sizes.entry(q.pair).or_default() += 1;
    }
    let lonely: Vec<u32> = sizes
        .iter()
        .filter(|(_, n)| **n < 2)
        .map(|(p, _)| *p)
        .collect();
    if !lonely.is_empty() {
        return Err(bad(
            root,
            format!(
                "pairs {} have one item: a pair needs two images",
                list_head(&lonely)
            ),
        ));
    }
    Ok(())
}

/// Swaps the answers of the items the original sheet has swapped.
fn apply_label_fix(questions: &mut [Question]) {
    for (a, b) in LABEL_FIXES {
        let pos = |i: u32| questions.iter().position(|q| q.index == i);
        if let (Some(x), Some(y)) = (pos(a), pos(b)) {
            let answer = questions[x].answer.clone();
            questions[x].answer = std::mem::replace(&mut questions[y].answer, answer);
        }
    }
}

/// Loads an MMVP-VLM benchmark.
pub async fn load_vlm(root: &Location) -> Result<MmvpVlm> {
    let (headers, rows) = read_sheet(root).await?;
    let need = |name: &str| MMVP_VLM.need(root, &headers, &[name]);
    let (ci, ct, cs) = (need("Question ID")?, need("Type")?, need("Statement")?);
    let images = images_by_stem(root, VLM_IMAGES).await?;
    let mut statements = Vec::new();
    let mut missing = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let cell = |c: usize| row.get(c).cloned().unwrap_or_default();
        let id = parse_id(root, &cell(ci), "Question ID", n + 2)?;
        let folder = cell(ct);
        let Some(image) = images.get(&(folder.clone(), id.to_string())) else {
            missing.push(id);
            continue;
        };
        statements.push(Statement {
            id,
            pair: id.div_ceil(2),
            pattern: patterns::canonical(&folder),
            statement: cell(cs),
            image: image.clone(),
        });
    }
    missing_images(
        root,
        &missing,
        ("statement(s)", "IDs"),
        &format!("ID N of type T needs {VLM_IMAGES}/T/N.jpg"),
    )?;
    check_pairs(root, statements.iter().map(|s| s.id))?;
    statements.sort_by_key(|s| s.id);
    Ok(MmvpVlm {
        root: root.clone(),
        name: short_name(root),
        statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use object_store::ObjectStoreExt;

    async fn put(root: &Location, rel: &str, text: &str) {
        root.put(rel, Bytes::from(text.as_bytes().to_vec()))
            .await
            .unwrap();
    }

    async fn mmvp(name: &str, header: &str) -> Location {
        let root = Location::open(&format!("memory://{name}")).unwrap();
        let mut sheet = format!("{header},Question,Options,Correct Answer\n");
        for i in 1..=4 {
            sheet.push_str(&format!(
                "{i},Is the door open?,(a) Open (b) Closed,{}\n",
                if i % 2 == 1 { "(a)" } else { "(b)" }
            ));
            put(&root, &format!("{MMVP_IMAGES}/{i}.jpg"), "x").await;
        }
        put(&root, QUESTIONS, &sheet).await;
        root
    }

    #[tokio::test]
    async fn both_spellings_of_index_load() {
        for (name, header) in [("bm-index", "Index"), ("bm-lndex", "\u{feff}lndex")] {
            let b = load_mmvp(&mmvp(name, header).await, false).await.unwrap();
            assert_eq!(b.questions.len(), 4);
            assert_eq!(b.questions[3].pair, 2);
            assert_eq!(b.questions[2].image, "MMVP Images/3.jpg");
            assert_eq!(b.labels, Labels::Original);
        }
    }

    #[tokio::test]
    async fn the_label_fix_swaps_only_the_known_items() {
        let mut qs: Vec<Question> = (97..=102)
            .map(|i| Question {
                index: i,
                pair: i.div_ceil(2),
                question: String::new(),
                options: String::new(),
                answer: format!("ans{i}"),
                image: String::new(),
                pattern: None,
            })
            .collect();
        apply_label_fix(&mut qs);
        let answers: Vec<&str> = qs.iter().map(|q| q.answer.as_str()).collect();
        assert_eq!(
            answers,
            ["ans97", "ans98", "ans100", "ans99", "ans101", "ans102"]
        );
    }

    #[tokio::test]
    async fn a_missing_image_or_partner_is_a_clear_error() {
        let root = mmvp("bm-missing", "Index").await;
        root.store
            .delete(&root.path(&format!("{MMVP_IMAGES}/3.jpg")))
            .await
            .unwrap();
        let err = load_mmvp(&root, false).await.unwrap_err().to_string();
        assert!(
            err.contains("indices 3") && err.contains("MMVP Images/N.jpg"),
            "{err}"
        );
        put(
            &root,
            QUESTIONS,
            "Index,Question,Options,Correct Answer\n1,q,(a) x (b) y,(a)\n",
        )
        .await;
        let err = load_mmvp(&root, false).await.unwrap_err().to_string();
        assert!(err.contains("no partner"), "{err}");
    }

    #[tokio::test]
    async fn a_vlm_sheet_loads_with_images_per_type_and_is_refused_as_mmvp() {
        let root = Location::open("memory://bm-vlm").unwrap();
        let mut sheet = String::from("Question ID,Type,Statement\n");
        for (id, ty) in [
            (1, "Orientation"),
            (2, "Orientation"),
            (3, "Color"),
            (4, "Color"),
        ] {
            sheet.push_str(&format!("{id},{ty},\"a thing, number {id}\"\n"));
            put(&root, &format!("{VLM_IMAGES}/{ty}/{id}.jpg"), "x").await;
        }
        put(&root, QUESTIONS, &sheet).await;
        let b = load_vlm(&root).await.unwrap();
        assert_eq!(b.statements.len(), 4);
        assert_eq!(b.statements[2].pattern, "Color");
        assert_eq!(b.statements[2].statement, "a thing, number 3");
        assert_eq!(b.statements[3].image, "MLLM_VLM Images/Color/4.jpg");
        let err = load_mmvp(&root, false).await.unwrap_err().to_string();
        assert!(err.contains("eval vlm"), "{err}");
    }
}
