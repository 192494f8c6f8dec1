//! The MMVP and MMVP-VLM benchmark formats on storage (`../shared/MMVP.md`): the names of the
//! question sheet and image folders. Shared by what reads benchmarks (`eval`) and what writes
//! them (`annotate`, the synthetic benchmarks), so neither imports the other.

/// The question sheet of both formats.
pub const QUESTIONS: &str = "Questions.csv";
/// MMVP's image folder.
pub const MMVP_IMAGES: &str = "MMVP Images";
/// MMVP-VLM's image folder (one subfolder per type).
pub const VLM_IMAGES: &str = "MLLM_VLM Images";
