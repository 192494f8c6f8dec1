//! Every stage of blindspot, once: its name (as the run lock, the generations, the leases, the
//! `errors` table and a spec's `[run] stages` say it), its commit set and its place in the
//! pipeline. Nothing else types a stage's name.

use crate::table::CommitSet;

/// A stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// A synthetic corpus with known pairs.
    Synth,
    /// Synthetic vector tables written as committed embeddings (tests and benchmarks).
    SynthVectors,
    /// Decode, preprocess and embed images (CLIP, and DINOv2 unless CLIP-first).
    Embed,
    /// Bring in clip-retrieval's CLIP embeddings.
    Import,
    /// Place vectors on cells.
    Partition,
    /// An HNSW index over every vector (`--method index`).
    Index,
    /// Pairs above the CLIP threshold.
    Candidates,
    /// DINOv2 on candidate images only (CLIP-first runs).
    Dino,
    /// Pairs below the DINOv2 threshold, per unit of work.
    Filter,
    /// Near-duplicate groups, built at the end of filter.
    Groups,
    /// Questions drafted and verified by MLLMs for an annotation sheet's pairs.
    Draft,
    /// A spec's evaluation step: `eval mllm`, `eval vlm` and `eval correlate` as configured.
    Eval,
    /// MLLM answers on a benchmark.
    EvalMllm,
    /// Vision-encoder answers on MMVP-VLM.
    EvalVlm,
    /// Per-pattern correlation tables.
    EvalCorrelate,
    /// The static site.
    Report,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 16] = [
        Stage::Synth,
        Stage::SynthVectors,
        Stage::Embed,
        Stage::Import,
        Stage::Partition,
        Stage::Index,
        Stage::Candidates,
        Stage::Dino,
        Stage::Filter,
        Stage::Groups,
        Stage::Draft,
        Stage::Eval,
        Stage::EvalMllm,
        Stage::EvalVlm,
        Stage::EvalCorrelate,
        Stage::Report,
    ];

    /// The stages a pipeline spec's `[run] stages` may name, in the order they run.
    pub const SPEC: [Stage; 9] = [
        Stage::Synth,
        Stage::Embed,
        Stage::Partition,
        Stage::Index,
        Stage::Candidates,
        Stage::Dino,
        Stage::Filter,
        Stage::Eval,
        Stage::Report,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Synth => "synth",
            Stage::SynthVectors => "synth-vectors",
            Stage::Embed => "embed",
            Stage::Import => "import",
            Stage::Partition => "partition",
            Stage::Index => "index",
            Stage::Candidates => "candidates",
            Stage::Dino => "dino",
            Stage::Filter => "filter",
            Stage::Groups => "groups",
            Stage::Draft => "draft",
            Stage::Eval => "eval",
            Stage::EvalMllm => "eval mllm",
            Stage::EvalVlm => "eval vlm",
            Stage::EvalCorrelate => "eval correlate",
            Stage::Report => "report",
        }
    }

    /// The stage of `name`.
    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The commits it makes, if it makes any (`Import` and `SynthVectors` write embed's; `Eval` names the
    /// answers of both `eval mllm` and `eval vlm`).
    pub fn commits(self) -> Option<CommitSet> {
        match self {
            Stage::Embed | Stage::Import | Stage::SynthVectors => Some(CommitSet::EMBED),
            Stage::Partition => Some(CommitSet::PARTITION),
            Stage::Index => Some(CommitSet::INDEX),
            Stage::Candidates => Some(CommitSet::CANDIDATES),
            Stage::Dino => Some(CommitSet::DINO),
            Stage::Filter => Some(CommitSet::FILTER),
            Stage::Groups => Some(CommitSet::GROUPS),
            Stage::Eval | Stage::EvalMllm | Stage::EvalVlm => Some(CommitSet::EVAL),
            Stage::EvalCorrelate => Some(CommitSet::CORRELATE),
            Stage::Synth | Stage::Draft | Stage::Report => None,
        }
    }

    /// The folder of `_leases/` its claiming workers use, if its units can be claimed.
    pub fn leases(self) -> Option<&'static str> {
        match self {
            Stage::Embed | Stage::Candidates | Stage::Filter => Some(self.name()),
            _ => None,
        }
    }

    /// Its settings as their `check()` found them: every problem at once, or Ok.
    pub fn settings(self, problems: Vec<String>) -> crate::Result<()> {
        match problems.is_empty() {
            true => Ok(()),
            false => Err(crate::Error::Usage(format!(
                "{self} settings: {}",
                problems.join("; ")
            ))),
        }
    }

    /// The error for a run root at `url` that lacks this stage's output: which command to run
    /// first.
    pub fn run_first(self, url: &str) -> crate::Error {
        let what = match self {
            Stage::Partition => "mining cells",
            Stage::Embed | Stage::Import | Stage::SynthVectors => "embeddings",
            Stage::Filter => "pairs",
            Stage::Eval | Stage::EvalMllm | Stage::EvalVlm => "evaluations",
            _ => self.name(),
        };
        crate::Error::Usage(format!(
            "{url} has no {what}; run `blindspot {self} --root {url}` first"
        ))
    }

    /// The stages `blindspot status` reports (those with units), with their commit sets.
    pub fn with_units() -> impl Iterator<Item = (Stage, CommitSet)> {
        [
            Stage::Embed,
            Stage::Partition,
            Stage::Index,
            Stage::Candidates,
            Stage::Dino,
            Stage::Filter,
            Stage::Eval,
            Stage::EvalCorrelate,
        ]
        .into_iter()
        .filter_map(|s| Some((s, s.commits()?)))
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let names: std::collections::HashSet<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Stage::ALL.len());
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()), Some(s));
        }
        assert_eq!(Stage::parse("nope"), None);
        // ALL is in pipeline order, and the spec's stages keep that order.
        assert!(Stage::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Stage::SPEC.windows(2).all(|w| w[0] < w[1]));
    }
}
