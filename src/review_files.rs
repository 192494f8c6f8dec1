//! The files people and stages hand each other around review, shared so that no stage
//! imports another: the decisions the report's gallery exports (`decisions.csv` or `.json`,
//! read by `annotate --decisions` and `draft --review`) and the drafts `blindspot draft` writes
//! (`drafts.json`, shown on the gallery's cards by `report --drafts`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One reviewer decision, as the report exports it (CSV columns or JSON fields).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Decision {
    /// First key.
    pub a: String,
    /// Second key.
    pub b: String,
    /// `accept`, `reject` or empty.
    #[serde(default)]
    pub decision: String,
    /// One of the nine patterns, or empty.
    #[serde(default)]
    pub pattern: String,
    /// Free text.
    #[serde(default)]
    pub note: String,
    /// The pair's drafted question as the reviewer left it (approved with key v, or edited in
    /// the gallery), for `draft --review`; answers are for the card's images a and b.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<DraftEdit>,
}

/// A reviewed draft: the question, its two options and each image's answer (`a` or `b`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct DraftEdit {
    /// The question.
    #[serde(default)]
    pub question: String,
    /// Option (a).
    #[serde(default)]
    pub option_a: String,
    /// Option (b).
    #[serde(default)]
    pub option_b: String,
    /// The right option for image a.
    #[serde(default)]
    pub answer_a: String,
    /// The right option for image b.
    #[serde(default)]
    pub answer_b: String,
}

/// The decisions CSV's columns of a reviewed draft (empty when the pair's draft was not
/// reviewed).
pub const DRAFT_COLUMNS: [&str; 5] = ["question", "option_a", "option_b", "answer_a", "answer_b"];

/// A decisions file larger than this is refused (an entry with a reviewed draft took 477 bytes
/// in the browser test's JSON export, so 200,000 such entries are about 95 MB).
pub const MAX_DECISIONS_BYTES: u64 = 256 << 20;

/// Reads and parses the decisions file at `file` (a path or URL), bounded in size.
pub async fn read_decisions(file: &str) -> Result<Vec<Decision>> {
    let bytes =
        crate::storage::get_url_bounded(file, MAX_DECISIONS_BYTES, "decisions file").await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::Usage(format!("decisions file {file} is not UTF-8 text")))?;
    parse_decisions(&text, file)
}

#[derive(Deserialize)]
struct DecisionsDoc {
    decisions: Vec<Decision>,
}

/// Reads a decisions file: the report's JSON (`{"decisions": [...]}`, or a bare list) or CSV
/// (`a,b,decision,pattern,note,...`).
pub fn parse_decisions(text: &str, origin: &str) -> Result<Vec<Decision>> {
    let bad = |why: String| {
        Error::Usage(format!(
            "decisions file {origin}: {why} (export it from the report's gallery: Export CSV or Export JSON)"
        ))
    };
    let t = text.trim_start_matches('\u{feff}').trim_start();
    let rows: Vec<Decision> = if t.starts_with('{') || t.starts_with('[') {
        match serde_json::from_str::<DecisionsDoc>(t) {
            Ok(d) => d.decisions,
            Err(_) => serde_json::from_str::<Vec<Decision>>(t).map_err(|e| bad(e.to_string()))?,
        }
    } else {
        let mut r = csv::ReaderBuilder::new().from_reader(t.as_bytes());
        let headers: Vec<String> = r
            .headers()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let col = |n: &str| headers.iter().position(|h| h == n);
        let (Some(ca), Some(cb)) = (col("a"), col("b")) else {
            return Err(bad(format!(
                "needs columns a, b, decision (found: {})",
                headers.join(", ")
            )));
        };
        let (cd, cp, cn) = (col("decision"), col("pattern"), col("note"));
        let mut out = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| bad(e.to_string()))?;
            // The report's export puts an apostrophe before a text cell a spreadsheet would
            // run as a formula (and before one that begins with an apostrophe): one is removed.
            let get = |c: Option<usize>| {
                let v = c.and_then(|c| rec.get(c)).unwrap_or("");
                v.strip_prefix('\'').unwrap_or(v).to_string()
            };
            let [question, option_a, option_b, answer_a, answer_b] =
                DRAFT_COLUMNS.map(|c| get(col(c)));
            let draft = DraftEdit {
                question,
                option_a,
                option_b,
                answer_a,
                answer_b,
            };
            out.push(Decision {
                a: get(Some(ca)),
                b: get(Some(cb)),
                decision: get(cd),
                pattern: get(cp),
                note: get(cn),
                draft: (draft != DraftEdit::default()).then_some(draft),
            });
        }
        out
    };
    for (n, d) in rows.iter().enumerate() {
        if d.a.is_empty() || d.b.is_empty() {
            return Err(bad(format!("entry {} has no keys", n + 1)));
        }
        if !matches!(d.decision.as_str(), "" | "accept" | "reject") {
            return Err(bad(format!(
                "entry {} ({} / {}): decision {:?} is not accept, reject or empty",
                n + 1,
                d.a,
                d.b,
                d.decision
            )));
        }
    }
    Ok(rows)
}

/// A usable draft: the reply, checked and normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    /// The visual difference.
    pub difference: String,
    /// A pattern of MMVP's nine (canonical name), or `other`.
    pub pattern: String,
    /// With `other`: the model's name for it.
    pub pattern_name: String,
    /// The question.
    pub question: String,
    /// Option (a).
    pub option_a: String,
    /// Option (b).
    pub option_b: String,
    /// `a` or `b`: right for image A.
    pub answer_a: char,
    /// The other letter: right for image B.
    pub answer_b: char,
}

/// How a draft fared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// `verified` (both images answered as drafted), `disputed` or `unverified` (no answer).
    pub status: String,
    /// The verifier's letter for image A (None: no letter found).
    pub answer_a: Option<char>,
    /// For image B.
    pub answer_b: Option<char>,
    /// With no image at all (None: it declined, as asked when it cannot tell).
    pub text_only: Option<char>,
    /// The text-only check committed to an option without seeing anything.
    pub blind_answerable: bool,
    /// The verifier's replies, as sent: A, B, text only.
    pub replies: [String; 3],
}

/// One pair of the sheet and its draft.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairDraft {
    /// The sheet's index of image A (image B is the next).
    pub index: u32,
    /// The keys of the two images.
    pub a: String,
    /// Second key.
    pub b: String,
    /// `drafted`, `failed`, or `kept` (a person had written its question: left as written).
    pub status: String,
    /// What the drafting prompt was told of the pair (the sheet's pattern and note).
    #[serde(default)]
    pub hint: String,
    /// Why it failed (the last attempt's reason).
    #[serde(default)]
    pub reason: String,
    /// Drafts asked.
    pub attempts: u32,
    /// The draft, when one was usable.
    #[serde(default)]
    pub draft: Option<Draft>,
    /// Its verification.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// Whether it fills the sheet.
    #[serde(default)]
    pub in_sheet: bool,
    /// A person's review from the report (`draft --review`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// With `draft --questions 2`: a second question about the same two images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<SecondQuestion>,
}

/// A second question about a pair's two images (NaturalBench's shape: two questions, two
/// images, each question's answer differing between the images).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SecondQuestion {
    /// The draft, when one was usable.
    pub draft: Option<Draft>,
    /// Its verification.
    pub verification: Option<Verification>,
    /// Why it failed (the last attempt's reason).
    #[serde(default)]
    pub reason: String,
    /// Drafts asked.
    pub attempts: u32,
    /// It joins the benchmark: verified, not blind-answerable (unless kept), and its pair's
    /// first question in the sheet and not rejected.
    #[serde(default)]
    pub in_benchmark: bool,
}

impl PairDraft {
    /// Pair `a`, `b` at sheet index `index`, not drafted yet: `failed` until a draft is usable.
    pub fn undrafted(index: u32, a: &str, b: &str, hint: &str) -> PairDraft {
        PairDraft {
            index,
            a: a.to_string(),
            b: b.to_string(),
            status: "failed".into(),
            hint: hint.to_string(),
            reason: String::new(),
            attempts: 0,
            draft: None,
            verification: None,
            in_sheet: false,
            review: None,
            second: None,
        }
    }

    /// The question that fills the sheet: the reviewer's where they changed it, else the draft.
    pub fn question(&self) -> Option<&Draft> {
        self.review
            .as_ref()
            .and_then(Review::question)
            .or(self.draft.as_ref())
    }
}

/// The whole `drafts.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DraftsFile {
    /// The drafting model.
    pub model: String,
    /// The verifying model.
    pub verify_model: String,
    /// Every pair, in sheet order.
    pub pairs: Vec<PairDraft>,
}

/// A person's review of one pair's draft.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// The gallery's decision: `accept`, `reject` or empty.
    pub decision: String,
    /// The question as the reviewer left it (approved, edited or written, or with the pattern
    /// they chose); None when they left the draft as drafted.
    pub draft: Option<Draft>,
    /// A person vouches for the question (approved, edited or wrote it): it fills the sheet
    /// whatever the verification said.
    pub vouched: bool,
    /// What the reviewer changed (`question`, `options`, `answers`, `pattern`), or `written`
    /// for a question written where drafting failed.
    pub edited: Vec<String>,
    /// The decisions file.
    pub file: String,
}

impl Review {
    /// The question this review leaves, if it changed the draft's.
    pub fn question(&self) -> Option<&Draft> {
        self.draft.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_parse_from_the_reports_csv_and_json() {
        let csv = "a,b,decision,pattern,note,clip_sim,dino_sim,reviewed\nx/1,x/2,accept,Color,\"red, not blue\",0.97,0.2,t\nx/3,x/4,reject,,,0.96,0.5,t\nx/5,x/6,,Text,,0.99,0.1,t\n";
        let d = parse_decisions(csv, "d.csv").unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].note, "red, not blue");
        assert_eq!(d[0].pattern, "Color");
        assert_eq!(d[1].decision, "reject");
        let json = r#"{"report_id":"r","decisions":[{"a":"x/1","b":"x/2","decision":"accept","pattern":"Color","note":"","clip_sim":0.97}]}"#;
        let j = parse_decisions(json, "d.json").unwrap();
        assert_eq!(
            j,
            vec![Decision {
                note: String::new(),
                ..d[0].clone()
            }]
        );
        // Cells the export neutralised against spreadsheet formulas come back as they were.
        let csv = "a,b,decision,pattern,note\n'=cmd|x,'@y,accept,,'-1 pair\n'', ok,reject,,\n";
        let d = parse_decisions(csv, "d.csv").unwrap();
        assert_eq!((d[0].a.as_str(), d[0].b.as_str()), ("=cmd|x", "@y"));
        assert_eq!(d[0].note, "-1 pair");
        assert_eq!(d[1].a, "'");
        assert!(parse_decisions("key,decision\nx,accept\n", "d.csv")
            .unwrap_err()
            .to_string()
            .contains("needs columns a, b"));
        assert!(parse_decisions("a,b,decision\nx,y,maybe\n", "d.csv")
            .unwrap_err()
            .to_string()
            .contains("\"maybe\""));
    }
}
