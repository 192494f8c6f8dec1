//! The nine visual patterns of the MMVP paper, and where an item's pattern comes from: the
//! benchmark itself, a mapping file, or an LLM categorisation whose output is saved as such a
//! mapping file so that people can review, edit and reuse it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

pub use crate::mmvp::{canonical, LONG_NAMES, PATTERNS};

/// The pattern of items that have none.
pub const UNASSIGNED: &str = "unassigned";

/// A pattern per item index, as read from or written to a mapping file: a CSV with columns
/// `index,pattern` (more columns, such as the question, are allowed and ignored).
pub type Mapping = BTreeMap<u32, String>;

/// Parses a mapping file's text.
pub fn parse_mapping(text: &str, origin: &str) -> Result<Mapping> {
    let bad = |reason: String| Error::Usage(format!("pattern mapping {origin}: {reason}"));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = crate::eval::csv_headers(&mut reader).map_err(|e| bad(e.to_string()))?;
    let find = |names: &[&str]| crate::eval::column(&headers, names);
    let (Some(ci), Some(cp)) = (
        find(&["index", "lndex", "question id", "item"]),
        find(&["pattern", "type"]),
    ) else {
        return Err(bad(format!(
            "needs an `index` and a `pattern` column (found: {})",
            headers.join(", ")
        )));
    };
    let mut out = Mapping::new();
    for (n, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| bad(format!("row {}: {e}", n + 2)))?;
        let index = rec.get(ci).unwrap_or("").trim();
        let pattern = rec.get(cp).unwrap_or("").trim();
        if index.is_empty() && pattern.is_empty() {
            continue;
        }
        let index: u32 = index
            .parse()
            .map_err(|_| bad(format!("row {}: index {index:?} is not a number", n + 2)))?;
        if pattern.is_empty() {
            return Err(bad(format!("row {}: item {index} has no pattern", n + 2)));
        }
        out.insert(index, canonical(pattern));
    }
    Ok(out)
}

/// Writes a mapping file, with the question beside each index so it reads on its own.
pub fn mapping_csv(rows: &[(u32, String, String)]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["index", "pattern", "question"]);
    for (index, pattern, question) in rows {
        let _ = w.write_record([index.to_string().as_str(), pattern, question]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The prompt that asks an LLM for one question's pattern.
pub fn categorise_prompt(question: &str, options: &str) -> String {
    let list: Vec<String> = LONG_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}. {n}", i + 1))
        .collect();
    format!(
        "Classify this visual question about an image into exactly one of these visual patterns:\n{}\n\nQuestion: {question}\nOptions: {options}\n\nReply with the number of the pattern only.",
        list.join("\n")
    )
}

/// Reads an LLM's categorisation reply: a pattern number 1-9 or a pattern's name.
pub fn parse_category(reply: &str) -> Option<String> {
    let t = reply.trim();
    let digits: String = t
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    if let Ok(n) = digits.parse::<usize>() {
        if (1..=9).contains(&n) {
            return Some(PATTERNS[n - 1].to_string());
        }
    }
    let lower = t.to_ascii_lowercase();
    LONG_NAMES
        .iter()
        .zip(PATTERNS)
        .find(|(long, short)| {
            lower.contains(&long.to_ascii_lowercase())
                || lower.contains(&short.to_ascii_lowercase())
        })
        .map(|(_, short)| short.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_short_and_odd_spellings_meet() {
        assert_eq!(canonical("Orientation and Direction"), "Orientation");
        assert_eq!(canonical("viewpoint and perspective"), "Camera Perspective");
        assert_eq!(canonical("Colour"), "Color");
        assert_eq!(canonical(" Structural Character "), "Structural Character");
        assert_eq!(canonical("My Own Pattern"), "My Own Pattern");
    }

    #[test]
    fn mappings_round_trip_and_bad_ones_say_why() {
        let text = mapping_csv(&[
            (1, "Color".into(), "What colour, exactly?".into()),
            (2, "Text".into(), "q2".into()),
        ]);
        let m = parse_mapping(&text, "m.csv").unwrap();
        assert_eq!(m[&1], "Color");
        assert_eq!(m.len(), 2);
        let err = parse_mapping("id,kind\n1,x\n", "m.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`index`") && err.contains("m.csv"), "{err}");
        let err = parse_mapping("index,pattern\nx,Color\n", "m.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 2"), "{err}");
    }

    #[test]
    fn category_replies_parse_by_number_or_name() {
        assert_eq!(parse_category("6").as_deref(), Some("Color"));
        assert_eq!(
            parse_category("Pattern 9.").as_deref(),
            Some("Camera Perspective")
        );
        assert_eq!(
            parse_category("State and Condition").as_deref(),
            Some("State")
        );
        assert_eq!(parse_category("none of them"), None);
        assert_eq!(parse_category("12"), None);
        assert!(categorise_prompt("Is it open?", "(a) yes (b) no").contains("9. Viewpoint"));
    }
}
