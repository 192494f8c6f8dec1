//! The MMVP and MMVP-VLM benchmark formats on storage (`../shared/MMVP.md`): the names of the
//! question sheet and image folders. Shared by what reads benchmarks (`eval`) and what writes
//! them (`annotate`, the synthetic benchmarks), so neither imports the other.

/// A text cell of a sheet people open in spreadsheets (the annotation sheet): OWASP's rule
/// against formula injection puts an apostrophe before text that begins with `=`, `+`, `-`,
/// `@`, a tab or a carriage return, and before text that begins with an apostrophe, so that
/// [`sheet_text_back`] takes exactly one off. Corpus keys and URIs are anyone's text.
pub fn sheet_text(s: &str) -> std::borrow::Cow<'_, str> {
    match s.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) {
        true => format!("'{s}").into(),
        false => s.into(),
    }
}

/// A text cell as [`sheet_text`] wrote it, back as it was.
pub fn sheet_text_back(s: &str) -> &str {
    s.strip_prefix('\'').unwrap_or(s)
}

/// The question sheet of both formats.
pub const QUESTIONS: &str = "Questions.csv";
/// Where a sheet or benchmark says where it came from (`annotate`, `draft`).
pub const PROVENANCE: &str = "provenance.json";
/// MMVP's image folder.
pub const MMVP_IMAGES: &str = "MMVP Images";
/// MMVP-VLM's image folder (one subfolder per type).
pub const VLM_IMAGES: &str = "MLLM_VLM Images";

/// The patterns, by the names MMVP-VLM uses for its `Type` column (and folders), in its order.
pub const PATTERNS: [&str; 9] = [
    "Orientation",
    "Presence",
    "State",
    "Quantity",
    "Spatial",
    "Color",
    "Structural Character",
    "Text",
    "Camera Perspective",
];

/// The paper's long names of the same patterns, in the same order.
pub const LONG_NAMES: [&str; 9] = [
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural and Physical Characteristics",
    "Text",
    "Viewpoint and Perspective",
];

/// The MMVP-VLM name for any spelling of a pattern (long name, short name, `Colour`,
/// `Viewpoint`, any case); names it does not know are kept as written, so benchmarks with
/// patterns of their own work too.
pub fn canonical(name: &str) -> String {
    let n = name.trim();
    let lower = n.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "colour" | "colour and appearance" => Some("Color"),
        "viewpoint" | "perspective" => Some("Camera Perspective"),
        "structural" | "structure" => Some("Structural Character"),
        "position" | "positional" | "spatial relation" => Some("Spatial"),
        "count" | "counting" => Some("Quantity"),
        _ => None,
    };
    if let Some(a) = alias {
        return a.to_string();
    }
    for (short, long) in PATTERNS.iter().zip(LONG_NAMES) {
        if lower == short.to_ascii_lowercase() || lower == long.to_ascii_lowercase() {
            return short.to_string();
        }
    }
    n.to_string()
}

#[cfg(test)]
mod sheet_text_tests {
    use super::*;

    #[test]
    fn formula_text_is_neutralised_and_comes_back() {
        for (raw, cell) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@a", "'@a"),
            ("\tx", "'\tx"),
            ("'quoted", "''quoted"),
            ("part-00000/a", "part-00000/a"),
        ] {
            assert_eq!(sheet_text(raw), cell);
            assert_eq!(sheet_text_back(&sheet_text(raw)), raw);
        }
    }
}
