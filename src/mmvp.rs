//! The MMVP and MMVP-VLM benchmark formats on storage (`../shared/MMVP.md`): the names of the
//! question sheet and image folders. Shared by what reads benchmarks (`eval`) and what writes
//! them (`annotate`, the synthetic benchmarks), so neither imports the other.

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
