//! A person's review of drafted questions, from the report's gallery back into the sheet.
//!
//! `report --drafts drafts.json` puts each draft on its pair's card; the reviewer approves it
//! (key v), edits its question, options, answers or pattern, writes one where drafting failed,
//! or rejects the pair, and exports the decisions. `draft SHEET --review FILE` (every reply
//! cached, so no request is paid twice) reads that file back by the pairs' keys: an approved,
//! edited or written question fills the sheet whatever the verifier said, a rejected pair
//! leaves it, and the edits are counted in the provenance.

use std::collections::HashMap;

use serde::Serialize;

use super::draft::{check_draft, DraftReply};
use crate::error::{Error, Result};
use crate::review_files::{Decision, Draft, PairDraft, Review};

/// How a review file met the sheet's drafts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReviewCounts {
    /// The decisions file.
    pub file: String,
    /// Entries in it.
    pub entries: usize,
    /// Pairs of the sheet it reviews.
    pub matched: usize,
    /// Drafts approved as drafted.
    pub approved: usize,
    /// Drafts with at least one change.
    pub edited: usize,
    /// Changes, counted by field (question, options, answers, pattern).
    pub fields_edited: usize,
    /// Questions written where drafting failed.
    pub written: usize,
    /// Pairs rejected.
    pub rejected: usize,
}

impl ReviewCounts {
    /// Counts one pair's review.
    pub fn add(&mut self, r: &Review) {
        self.rejected += (r.decision == "reject") as usize;
        self.written += r.edited.iter().any(|f| f == "written") as usize;
        let changed = r.edited.iter().filter(|f| *f != "written").count();
        self.fields_edited += changed;
        self.edited += (changed > 0) as usize;
        self.approved += (r.vouched && r.edited.is_empty()) as usize;
    }
}

/// The pattern as a reviewer or the sheet names it (`other` drafts by their own name).
fn pattern_name(d: &Draft) -> String {
    match d.pattern.as_str() {
        "other" => d.pattern_name.clone(),
        p => p.to_string(),
    }
}

/// The review of draft `d` by entry `e` (matched by keys, in either order).
pub fn review_of(d: &PairDraft, e: &Decision, file: &str) -> std::result::Result<Review, String> {
    let mut review = Review {
        decision: e.decision.clone(),
        file: file.to_string(),
        ..Review::default()
    };
    if e.decision == "reject" {
        return Ok(review);
    }
    let drafted = d.draft.as_ref();
    let chosen = e.pattern.trim();
    let pattern = match (chosen, drafted) {
        ("", Some(x)) => pattern_name(x),
        (p, _) => p.to_string(),
    };
    match (&e.draft, drafted) {
        (Some(edit), _) => {
            if pattern.is_empty() {
                return Err("a question with no pattern: choose one on its card (keys 1-9)".into());
            }
            // The gallery's answers are for its card's images; the sheet's for its own order.
            let (answer_a, answer_b) = match e.a == d.a {
                true => (edit.answer_a.clone(), edit.answer_b.clone()),
                false => (edit.answer_b.clone(), edit.answer_a.clone()),
            };
            let fin = check_draft(DraftReply {
                difference: drafted.map_or(String::new(), |x| x.difference.clone()),
                pattern,
                pattern_name: String::new(),
                question: edit.question.clone(),
                options: vec![edit.option_a.clone(), edit.option_b.clone()],
                answer_a,
                answer_b,
            })?;
            review.edited = match drafted {
                None => vec!["written".into()],
                Some(x) => changes(x, &fin),
            };
            review.vouched = true;
            review.draft = Some(fin);
        }
        (None, Some(x)) if !chosen.is_empty() && pattern_name(x) != pattern => {
            let fin = check_draft(DraftReply {
                difference: x.difference.clone(),
                pattern,
                pattern_name: String::new(),
                question: x.question.clone(),
                options: vec![x.option_a.clone(), x.option_b.clone()],
                answer_a: x.answer_a.to_string(),
                answer_b: x.answer_b.to_string(),
            })?;
            review.edited = changes(x, &fin);
            review.draft = Some(fin);
        }
        _ => {}
    }
    Ok(review)
}

/// The fields in which `fin` differs from `drafted`.
fn changes(drafted: &Draft, fin: &Draft) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |name: &str, yes: bool| {
        if yes {
            out.push(name.to_string());
        }
    };
    differs("question", drafted.question != fin.question);
    differs(
        "options",
        (&drafted.option_a, &drafted.option_b) != (&fin.option_a, &fin.option_b),
    );
    differs("answers", drafted.answer_a != fin.answer_a);
    differs(
        "pattern",
        (&drafted.pattern, &drafted.pattern_name) != (&fin.pattern, &fin.pattern_name),
    );
    out
}

/// Applies the decisions of `file` to the sheet's drafts by their keys (replacing earlier
/// reviews); pairs whose question a person wrote in the sheet are left alone.
pub fn apply(pairs: &mut [PairDraft], entries: &[Decision], file: &str) -> Result<ReviewCounts> {
    let mut by_keys: HashMap<(&str, &str), &Decision> = HashMap::new();
    for e in entries {
        by_keys.insert((e.a.as_str(), e.b.as_str()), e);
    }
    let mut counts = ReviewCounts {
        file: file.to_string(),
        entries: entries.len(),
        ..ReviewCounts::default()
    };
    let mut problems = Vec::new();
    for d in pairs.iter_mut().filter(|d| d.status != "kept") {
        let entry = by_keys
            .get(&(d.a.as_str(), d.b.as_str()))
            .or_else(|| by_keys.get(&(d.b.as_str(), d.a.as_str())));
        d.review = None;
        let Some(e) = entry else { continue };
        counts.matched += 1;
        match review_of(d, e, file) {
            Ok(r) => {
                counts.add(&r);
                d.review = Some(r);
            }
            Err(why) => problems.push(format!("{} / {}: {why}", d.a, d.b)),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "review {file}: {} reviewed question(s) cannot go into the sheet; fix them in the gallery and export again:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    if counts.matched == 0 {
        let example = entries
            .first()
            .map_or("none".to_string(), |e| format!("{} / {}", e.a, e.b));
        return Err(Error::Usage(format!(
            "review {file}: none of its {} entries is a pair of this sheet (e.g. {example}); export the decisions from the report built with --drafts of this sheet's drafts.json",
            entries.len()
        )));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review_files::DraftEdit;

    fn drafted() -> PairDraft {
        PairDraft {
            status: "drafted".into(),
            attempts: 1,
            draft: Some(Draft {
                difference: "d".into(),
                pattern: "Color".into(),
                pattern_name: String::new(),
                question: "What colour is the car?".into(),
                option_a: "red".into(),
                option_b: "blue".into(),
                answer_a: 'a',
                answer_b: 'b',
            }),
            ..PairDraft::undrafted(1, "k/1", "k/2", "")
        }
    }

    fn entry(a: &str, b: &str, decision: &str, pattern: &str, edit: Option<DraftEdit>) -> Decision {
        Decision {
            a: a.into(),
            b: b.into(),
            decision: decision.into(),
            pattern: pattern.into(),
            note: String::new(),
            draft: edit,
        }
    }

    fn edit(q: &str, a: &str, b: &str) -> DraftEdit {
        DraftEdit {
            question: q.into(),
            option_a: "red".into(),
            option_b: "blue".into(),
            answer_a: a.into(),
            answer_b: b.into(),
        }
    }

    #[test]
    fn edits_are_applied_by_keys_in_either_order_and_counted() {
        let mut pairs = vec![drafted(), drafted(), drafted(), drafted()];
        for (k, p) in pairs.iter_mut().enumerate() {
            p.a = format!("k/{}", 2 * k);
            p.b = format!("k/{}", 2 * k + 1);
        }
        pairs[3].draft = None;
        pairs[3].status = "failed".into();
        let entries = vec![
            // Approved as drafted.
            entry(
                "k/0",
                "k/1",
                "accept",
                "",
                Some(edit("What colour is the car?", "a", "b")),
            ),
            // Edited on a card that shows the pair the other way round: its answers are for
            // the card's images, so (b, a) there is (a, b) here... and a new question.
            entry(
                "k/3",
                "k/2",
                "accept",
                "Text",
                Some(edit("Which colour is the car painted?", "a", "b")),
            ),
            entry("k/4", "k/5", "reject", "", None),
            entry(
                "k/7",
                "k/6",
                "accept",
                "State",
                Some(edit("Is the light on?", "b", "a")),
            ),
            entry("x/1", "x/2", "accept", "", None),
        ];
        let c = apply(&mut pairs, &entries, "d.json").unwrap();
        assert_eq!((c.entries, c.matched), (5, 4));
        assert_eq!((c.approved, c.edited, c.written, c.rejected), (1, 1, 1, 1));
        // Question, answers and pattern of the second.
        assert_eq!(c.fields_edited, 3);
        let r1 = pairs[1].review.as_ref().unwrap();
        let d1 = r1.question().unwrap();
        assert_eq!((d1.answer_a, d1.answer_b), ('b', 'a'));
        assert_eq!(d1.pattern, "Text");
        assert_eq!(r1.edited, ["question", "answers", "pattern"]);
        assert!(pairs[0].review.as_ref().unwrap().vouched);
        assert_eq!(pairs[2].review.as_ref().unwrap().decision, "reject");
        let w = pairs[3].review.as_ref().unwrap();
        assert_eq!(w.edited, ["written"]);
        assert_eq!(w.question().unwrap().answer_a, 'a');
    }

    #[test]
    fn a_review_that_cannot_go_into_the_sheet_says_which_pair_and_why() {
        let mut pairs = vec![drafted()];
        let same = vec![entry(
            "k/1",
            "k/2",
            "accept",
            "",
            Some(edit("Q?", "a", "a")),
        )];
        let err = apply(&mut pairs, &same, "d.csv").unwrap_err().to_string();
        assert!(
            err.contains("k/1 / k/2") && err.contains("does not tell them apart"),
            "{err}"
        );
        pairs[0].draft = None;
        let none = vec![entry(
            "k/1",
            "k/2",
            "accept",
            "",
            Some(edit("Q?", "a", "b")),
        )];
        let err = apply(&mut pairs, &none, "d.csv").unwrap_err().to_string();
        assert!(err.contains("no pattern"), "{err}");
        let elsewhere = vec![entry("z/1", "z/2", "accept", "", None)];
        let err = apply(&mut pairs, &elsewhere, "d.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("z/1 / z/2") && err.contains("none of its 1 entries"),
            "{err}"
        );
    }

    #[test]
    fn a_pattern_alone_changes_the_pattern_but_vouches_for_nothing() {
        let mut pairs = vec![drafted()];
        let c = apply(
            &mut pairs,
            &[entry("k/1", "k/2", "accept", "Quantity", None)],
            "d",
        )
        .unwrap();
        assert_eq!((c.edited, c.fields_edited, c.approved), (1, 1, 0));
        let r = pairs[0].review.as_ref().unwrap();
        assert!(!r.vouched);
        assert_eq!(r.question().unwrap().pattern, "Quantity");
        // The drafted pattern chosen again is no change.
        apply(
            &mut pairs,
            &[entry("k/1", "k/2", "accept", "Color", None)],
            "d",
        )
        .unwrap();
        assert_eq!(pairs[0].review.as_ref().unwrap().draft, None);
    }
}
