//! Drafted questions in the gallery: `report --drafts drafts.json` (written by `blindspot
//! draft`) puts each pair's draft on its card, oriented to the card's images, for review.
//!
//! The drafts file holds one entry per pair of an annotation sheet, so it is bounded by what
//! people review (thousands of pairs), not by the corpus; it is held in memory while the
//! gallery is written and each draft is given to the first card of its pair.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::review_files::{DraftsFile, PairDraft};

/// A drafts file larger than this is refused (the demo's drafts.json takes 1.5 KB a pair with
/// two questions and the verifier's replies, so 100,000 pairs are about 150 MB).
pub const MAX_DRAFTS_BYTES: u64 = 512 << 20;

/// The drafts of a `--drafts` file, by the keys of their pair.
#[derive(Default)]
pub struct GalleryDrafts {
    file: String,
    by_keys: HashMap<(String, String), PairDraft>,
    total: usize,
    shown: usize,
    example: Option<(String, String)>,
}

/// How the drafts met the gallery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DraftsShown {
    /// The drafts file.
    pub file: String,
    /// Pairs in it.
    pub pairs: usize,
    /// Pairs shown on a card.
    pub shown: usize,
}

impl GalleryDrafts {
    /// Reads `drafts.json` at `file` (a path or URL).
    pub async fn load(file: &str) -> Result<GalleryDrafts> {
        let bytes = crate::storage::get_url_bounded(file, MAX_DRAFTS_BYTES, "drafts file").await?;
        let parsed: DraftsFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Usage(format!(
                "drafts file {file} is not a drafts.json of `blindspot draft`: {e}"
            ))
        })?;
        let total = parsed.pairs.len();
        if total == 0 {
            return Err(Error::Usage(format!("drafts file {file} lists no pairs")));
        }
        let example = parsed.pairs.first().map(|d| (d.a.clone(), d.b.clone()));
        let by_keys = parsed
            .pairs
            .into_iter()
            .map(|d| ((d.a.clone(), d.b.clone()), d))
            .collect();
        Ok(GalleryDrafts {
            file: file.to_string(),
            by_keys,
            total,
            shown: 0,
            example,
        })
    }

    /// Whether a drafts file was given.
    pub fn given(&self) -> bool {
        !self.file.is_empty()
    }

    /// The draft of the card showing `a` and `b` (in either order), as the gallery reads it,
    /// or null. Each draft goes to one card.
    pub fn card(&mut self, a: &str, b: &str) -> serde_json::Value {
        let key = (a.to_string(), b.to_string());
        if let Some(d) = self.by_keys.remove(&key) {
            self.shown += 1;
            return card_json(&d, false);
        }
        let reversed = (b.to_string(), a.to_string());
        match self.by_keys.remove(&reversed) {
            Some(d) => {
                self.shown += 1;
                card_json(&d, true)
            }
            None => serde_json::Value::Null,
        }
    }

    /// How many were shown; an error when a file was given and none of its pairs is in the
    /// gallery.
    pub fn finish(self, gallery_rows: u64) -> Result<Option<DraftsShown>> {
        if !self.given() {
            return Ok(None);
        }
        if self.shown == 0 {
            let (a, b) = self.example.unwrap_or_default();
            return Err(Error::Usage(format!(
                "none of the {} drafted pairs of {} is a card of this gallery ({} cards; e.g. {a} / {b} is not): the drafts come from a sheet of another run root, or their pairs are beyond --max-pairs (annotate --decisions takes the pairs from this report's cards)",
                self.total, self.file, gallery_rows
            )));
        }
        Ok(Some(DraftsShown {
            file: self.file,
            pairs: self.total,
            shown: self.shown,
        }))
    }
}

/// A card's draft as the gallery's filters read it: empty (none), `failed`, `kept`, or the
/// verification (`verified`, `disputed`, `unverified`), with `+blind` when the question was
/// answered without the image.
pub fn code(card: &serde_json::Value) -> String {
    if card.is_null() {
        return String::new();
    }
    let v = &card["verification"];
    match v["status"].as_str() {
        Some(status) if v["blind_answerable"] == true => format!("{status}+blind"),
        Some(status) => status.to_string(),
        None => card["status"].as_str().unwrap_or("").to_string(),
    }
}

/// One pair's draft for its card: `swap` when the card shows the pair's images the other
/// way round (answers for image A are then the draft's for image B).
fn card_json(d: &PairDraft, swap: bool) -> serde_json::Value {
    let order = |x: serde_json::Value, y: serde_json::Value| match swap {
        true => (y, x),
        false => (x, y),
    };
    let letter = |c: Option<char>| c.map(String::from);
    let v = d.verification.as_ref();
    let (va, vb) = order(
        serde_json::json!(v.and_then(|v| letter(v.answer_a))),
        serde_json::json!(v.and_then(|v| letter(v.answer_b))),
    );
    let verification = v.map(|v| {
        serde_json::json!({
            "status": v.status, "answer_a": va, "answer_b": vb,
            "text_only": letter(v.text_only), "blind_answerable": v.blind_answerable,
        })
    });
    let question = |x: &crate::review_files::Draft| {
        let (aa, ab) = order(
            serde_json::json!(x.answer_a.to_string()),
            serde_json::json!(x.answer_b.to_string()),
        );
        let pattern = match x.pattern.as_str() {
            "other" => x.pattern_name.clone(),
            p => p.to_string(),
        };
        serde_json::json!({
            "difference": x.difference, "pattern": pattern, "question": x.question,
            "option_a": x.option_a, "option_b": x.option_b, "answer_a": aa, "answer_b": ab,
        })
    };
    // A second question (draft --questions 2) is shown as drafted, with its status.
    let second = d.second.as_ref().and_then(|q| {
        let mut x = question(q.draft.as_ref()?);
        x["status"] = serde_json::json!(q.verification.as_ref().map(|v| v.status.clone()));
        x["in_benchmark"] = serde_json::json!(q.in_benchmark);
        Some(x)
    });
    serde_json::json!({
        "status": d.status, "reason": d.reason, "in_sheet": d.in_sheet,
        "draft": d.draft.as_ref().map(question), "verification": verification, "second": second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review_files::{Draft, Verification};

    fn pair(a: &str, b: &str) -> PairDraft {
        PairDraft {
            status: "drafted".into(),
            attempts: 1,
            draft: Some(Draft {
                difference: "d".into(),
                pattern: "other".into(),
                pattern_name: "Shadow".into(),
                question: "Q?".into(),
                option_a: "x".into(),
                option_b: "y".into(),
                answer_a: 'a',
                answer_b: 'b',
            }),
            verification: Some(Verification {
                status: "disputed".into(),
                answer_a: Some('a'),
                answer_b: None,
                text_only: None,
                blind_answerable: false,
                replies: Default::default(),
            }),
            ..PairDraft::undrafted(1, a, b, "")
        }
    }

    #[test]
    fn a_draft_goes_to_one_card_oriented_to_its_images() {
        let mut g = GalleryDrafts {
            file: "d.json".into(),
            by_keys: [pair("k/1", "k/2"), pair("k/3", "k/4")]
                .into_iter()
                .map(|d| ((d.a.clone(), d.b.clone()), d))
                .collect(),
            total: 2,
            ..Default::default()
        };
        let same = g.card("k/1", "k/2");
        assert_eq!(same["draft"]["answer_a"], "a");
        assert_eq!(same["draft"]["pattern"], "Shadow");
        assert!(g.card("k/1", "k/2").is_null(), "one card per draft");
        let turned = g.card("k/4", "k/3");
        assert_eq!(
            (&turned["draft"]["answer_a"], &turned["draft"]["answer_b"]),
            (&serde_json::json!("b"), &serde_json::json!("a"))
        );
        assert_eq!(turned["verification"]["answer_b"], "a");
        assert_eq!(code(&turned), "disputed");
        assert_eq!(code(&serde_json::Value::Null), "");
        assert!(turned["verification"]["answer_a"].is_null());
        let shown = g.finish(10).unwrap().unwrap();
        assert_eq!((shown.pairs, shown.shown), (2, 2));
        let unmatched = GalleryDrafts {
            file: "d.json".into(),
            total: 1,
            example: Some(("p".into(), "q".into())),
            ..Default::default()
        };
        let err = unmatched.finish(3).unwrap_err().to_string();
        assert!(err.contains("p / q") && err.contains("3 cards"), "{err}");
    }
}
