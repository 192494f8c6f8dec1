//! Every stage's record in its commits, and the names of units of work: the catalog's
//! vocabulary. A stage writes its record type and any other stage or the report reads it from
//! here, typed ([`Catalog::records`](super::Catalog::records)), so no reader imports the stage
//! that wrote it or digs into a commit's JSON. Fields added after a record first shipped carry
//! `#[serde(default)]`, so run roots written by older binaries still read
//! (`tests/fixtures/legacy-root`, `tests/fixtures/catalog-root`).

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{Commit, CommitSet};
use crate::error::{Error, Result};

/// A stage's record: the type of the stage's own fields in the commits of one commit set.
pub trait Record: Serialize + DeserializeOwned {
    /// Where its commits live.
    const SET: CommitSet;

    /// Whether `commit` (of [`Record::SET`]) holds this kind of record; a set that holds two
    /// kinds tells them apart here.
    fn holds(_commit: &Commit) -> bool {
        true
    }
}

/// A stage's settings as its commit recorded them. Only the stage that wrote them reads them
/// back ([`Settings::read`]); to every other reader they are opaque.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Settings(serde_json::Value);

impl Settings {
    /// `params` as recorded.
    pub fn of<T: Serialize>(params: &T) -> Settings {
        Settings(serde_json::to_value(params).unwrap_or_default())
    }

    /// The settings as the writing stage's type.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.0.clone())
            .map_err(|e| Error::table("commit", format!("recorded settings: {e}")))
    }
}

/// Recall measured on a sample of query images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recall {
    /// Query images in the sample.
    pub sample: usize,
    /// Pairs above the threshold involving them (brute force).
    pub exact_pairs: u64,
    /// Of those, in the `candidates` table.
    pub found: u64,
    /// found / exact_pairs (1.0 when there are none).
    pub recall: f64,
}

/// The recall of the candidates table, measured after the join, in `_commits/recall.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecallCommit {
    /// The measurement.
    pub recall: Recall,
    /// The threshold measured at.
    pub clip_min: f32,
    /// How the table was made (`partitioned`, `index`, `exact`).
    pub method: String,
    /// The layout's probe (partitioned; None: exact placement).
    pub probe: Option<usize>,
    /// The recall the probe was chosen for, when partition chose it.
    pub target_recall: Option<f64>,
    /// Pairs in the table when measured.
    pub table_pairs: u64,
    /// The blindspot version.
    pub version: String,
}

/// The embed stage's record in a shard's commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbedCommit {
    /// The shard, relative to the input.
    pub shard: String,
    /// Where the shard is.
    pub shard_uri: String,
    /// The shard's output id.
    pub id: String,
    /// The embeddings object, relative to the run root (before the catalog named objects).
    #[serde(default)]
    pub embeddings: String,
    /// The errors object, relative to the run root (before the catalog named objects).
    #[serde(default)]
    pub errors: String,
    /// Rows in the embeddings object.
    pub rows: u64,
    /// Rows in the errors object.
    pub error_rows: u64,
    /// Encoder ids, `clip` then `dino` (the second empty when only CLIP ran). Absent in
    /// records written before encoders were recorded (those shards have both).
    #[serde(default)]
    pub encoders: Option<[String; 2]>,
    /// Input rows skipped because img2dataset did not download them.
    #[serde(default)]
    pub skipped_rows: u64,
    /// The blindspot version that wrote it.
    pub version: String,
}

/// The dino stage's record in a commit: a shard's vectors, or (with `candidates`) a
/// finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DinoCommit {
    /// The input shard whose images these are; empty for a run's closing commit.
    pub shard: String,
    /// Vectors written.
    pub rows: u64,
    /// Images that could not be fetched or decoded.
    pub error_rows: u64,
    /// The DINOv2 encoder id.
    pub encoder: String,
    /// A finished run's closing commit: the candidate units (`unit@generation`) covered.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// The blindspot version.
    pub version: String,
}

/// The partition stage's record in its commit: one per generation of vectors placed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionCommit {
    /// The generation whose training made the centroids (equal to this commit's own generation
    /// when it trained them).
    pub layout: u64,
    /// Cells.
    pub cells: usize,
    /// CLIP dimension.
    pub dim: usize,
    /// The CLIP threshold the guest radius was computed for; candidates must not go lower.
    pub clip_min: f32,
    /// Every vector's norm is at most this (checked), part of the guest radius.
    pub norm_bound: f32,
    /// Guests capped at the nearest `probe` cells (approximate), or every cell a pair can be in.
    pub probe: Option<usize>,
    /// The probes were chosen by partition for this recall (exact placement was impractical).
    #[serde(default)]
    pub auto_probe: Option<f64>,
    /// The recall the chosen probes give on the exact pairs of the training sample.
    #[serde(default)]
    pub estimated_recall: Option<f64>,
    /// The k-means seed.
    pub seed: u64,
    /// Embed units (input shards) placed by this generation, with the generation of their commit.
    pub shards: BTreeMap<String, u64>,
    /// Home rows written (one per embedding row).
    pub home: u64,
    /// Guest placements (a vector that is a guest of two cells counts twice).
    pub guests: u64,
    /// Guests are runs of other cells' home rows, listed in the `guests` table (every vector
    /// is written once). False: an older generation that copied its guests into `cells`; such a
    /// layout is placed again on its centroids.
    #[serde(default)]
    pub guests_in_place: bool,
    /// Runs of home rows listed in the `guests` table.
    #[serde(default)]
    pub guest_runs: u64,
    /// Per cell: home rows and guest placements this generation added.
    pub cell_rows: Vec<[u64; 2]>,
    /// Mean cosine of these vectors to their home centroid.
    pub fit: f64,
    /// Mean cosine of the training sample to its centroids (the layout's own fit).
    pub train_fit: f64,
    /// `train_fit - fit` when these vectors were placed on existing centroids.
    pub drift: Option<f64>,
    /// Why the centroids were (re)trained, when this generation trained them.
    pub trained: Option<String>,
    /// The blindspot version.
    pub version: String,
}

impl PartitionCommit {
    /// Guest copies per home row (1.0: no guests).
    pub fn copy_factor(&self) -> f64 {
        (self.home + self.guests) as f64 / self.home.max(1) as f64
    }
}

/// Which cell a candidates commit covers: the part of its record that the stages after it
/// need (the candidates stage writes these fields; the index and exact methods leave them out).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct UnitCell {
    /// The cell.
    #[serde(default)]
    pub cell: Option<u32>,
    /// The partition generation whose new vectors the commit covers.
    #[serde(default)]
    pub partition: Option<u64>,
}

impl UnitCell {
    /// The cell and the partition generation its block is read through, when a cell.
    pub fn of(commit: &Commit) -> Option<(u32, u64)> {
        let unit: UnitCell = commit.record().ok()?;
        unit.cell.zip(unit.partition)
    }
}

/// The candidates stage's record in each commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CandidatesCommit {
    /// Pairs written.
    pub pairs: u64,
    /// Exact duplicates collapsed.
    #[serde(default)]
    pub duplicates: u64,
    /// The settings used (`mine::candidates::CandidateParams`).
    pub params: Settings,
    /// The table this commit belongs to: commits of another epoch (another method, layout
    /// or threshold) are retracted when a run starts.
    #[serde(default)]
    pub epoch: String,
    /// The partition generation whose new vectors this commit covers (partitioned).
    #[serde(default)]
    pub partition: Option<u64>,
    /// The cell (partitioned).
    #[serde(default)]
    pub cell: Option<u32>,
    /// Rows of the cell block joined (partitioned).
    #[serde(default)]
    pub block_rows: u64,
    /// The blindspot version.
    pub version: String,
}

/// The filter stage's record in the commit of one unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FilterCommit {
    /// Pairs written.
    pub pairs: u64,
    /// The DINOv2 threshold used.
    pub dino_max: f32,
    /// The run id stamped on the rows.
    pub run_id: String,
    /// The candidates unit covered, as `unit@generation`.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// The table this commit belongs to (its threshold); commits of another are withdrawn.
    #[serde(default)]
    pub epoch: String,
    /// Candidate pairs read.
    #[serde(default)]
    pub candidate_rows: u64,
    /// DINOv2 vectors gathered for them.
    #[serde(default)]
    pub vectors: u64,
    /// Keys named by the candidates with no DINOv2 vector anywhere (their pairs are left out,
    /// as the join of `sql/pairs.sql` leaves them out).
    #[serde(default)]
    pub missing: u64,
    /// The vectors were found by scanning the vector tables, not in the cell.
    #[serde(default)]
    pub scanned: bool,
    /// The near-duplicate threshold of `dup_edges`.
    #[serde(default)]
    pub dup_min: f32,
    /// Near-duplicate edges kept (a spanning forest of the unit's near-duplicate candidates).
    #[serde(default)]
    pub dup_edges: u64,
    /// Candidates whose DINOv2 similarity is undefined (a zero vector).
    #[serde(default)]
    pub undefined: u64,
    /// The blindspot version.
    pub version: String,
}

/// The groups stage's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupsCommit {
    /// The filter units whose edges it was built from, hashed (`unit@generation`, sorted).
    pub covers: String,
    /// The near-duplicate threshold of those edges.
    pub dup_min: f32,
    /// Groups.
    pub groups: u64,
    /// Images in a group.
    pub grouped: u64,
    /// Members of the largest group.
    pub largest: u64,
    /// Edges read.
    pub edges: u64,
    /// The blindspot version.
    pub version: String,
}

/// The index stage's record in its commit: what the index covers and how it was built.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexCommit {
    /// Unique vectors in the index.
    pub vectors: u64,
    /// Rows collapsed as exact duplicates.
    pub duplicates: u64,
    /// Vector dimension.
    pub dim: usize,
    /// The settings it was built with (`mine::ann::IndexParams`).
    pub params: Settings,
    /// The embed shards it covers, by id: a later embed run makes the index stale.
    pub shards: Vec<String>,
    /// The blindspot version that built it.
    pub version: String,
}

/// What was evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalKind {
    /// A multimodal LLM on MMVP.
    Mllm,
    /// A vision encoder (image + text tower) on MMVP-VLM.
    Vlm,
}

impl EvalKind {
    /// The name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            EvalKind::Mllm => "mllm",
            EvalKind::Vlm => "vlm",
        }
    }
}

/// The evaluation's record in its commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalCommit {
    /// `mllm` or `vlm`.
    pub kind: EvalKind,
    /// The model.
    pub model: String,
    /// The benchmark.
    pub benchmark: String,
    /// The `answers` object, relative to the run root.
    pub answers: String,
    /// The `scores` object.
    pub scores: String,
    /// The prompt template's name.
    pub template: String,
    /// The grader.
    pub grader: String,
    /// How the scores' intervals were computed.
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// The blindspot version that wrote it.
    pub version: String,
}

/// How confidence intervals of accuracies are computed: a percentile bootstrap over pairs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Resamples drawn (0: no intervals).
    pub resamples: u32,
    /// The generator's seed (splitmix64, `crate::rng`), so intervals are the same on every run.
    pub seed: u64,
    /// The interval's coverage, e.g. 0.95.
    pub level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: 2000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// The correlate stage's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CorrelateCommit {
    /// Rows of `correlations`.
    #[serde(default)]
    pub rows: u64,
    /// The blindspot version.
    pub version: String,
}

/// Ties each record type to its commit set.
macro_rules! records {
    ($($record:ty => $set:ident),* $(,)?) => {
        $(impl Record for $record {
            const SET: CommitSet = CommitSet::$set;
        })*
    };
}

records! {
    EmbedCommit => EMBED,
    PartitionCommit => PARTITION,
    IndexCommit => INDEX,
    CandidatesCommit => CANDIDATES,
    DinoCommit => DINO,
    FilterCommit => FILTER,
    GroupsCommit => GROUPS,
    RecallCommit => RECALL,
    EvalCommit => EVAL,
    CorrelateCommit => CORRELATE,
}

impl EmbedCommit {
    /// True when the shard has no DINOv2 vectors (`embed --encoders clip`, or
    /// `import clip-retrieval`): the second encoder id is empty.
    pub fn without_dino(&self) -> bool {
        self.encoders.as_ref().is_some_and(|e| e[1].is_empty())
    }
}

impl DinoCommit {
    /// True for a run's closing commit (it names the candidates units covered; no vectors).
    pub fn is_closing(commit: &Commit) -> bool {
        UnitId::is_dino_closing(&commit.unit)
    }
}

/// The name of a unit of work (a commit's `unit`) or of a generation's objects. Every such
/// name is made and parsed here: zero-padded generations sort as numbers do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(String);

impl UnitId {
    /// The objects folder or unit of generation `g`: `g0000000007` (a `groups` commit, a
    /// generation's centroids and cells).
    pub fn generation(g: u64) -> UnitId {
        UnitId(format!("g{g:010}"))
    }

    /// A partition commit: the vectors placed by generation `g`.
    pub fn partition(g: u64) -> UnitId {
        UnitId(format!("p{g:010}"))
    }

    /// The epoch of a candidates table made by a whole-table method (`index`, `exact`) in
    /// generation `g`; it is also that table's one unit.
    pub fn method_epoch(method: &str, g: u64) -> UnitId {
        UnitId(format!("{method}-g{g:010}"))
    }

    /// The epoch of a partitioned candidates table: the cells of layout `layout` at the
    /// threshold whose tag is `tag` (the first 8 characters are kept).
    pub fn cells_epoch(layout: u64, tag: &str) -> UnitId {
        let tag = tag.get(..8).unwrap_or(tag);
        UnitId(format!("cells-L{layout:010}-{tag}"))
    }

    /// A candidates unit: `cell`'s pairs among the vectors partition generation `g` placed.
    pub fn cell(epoch: &str, g: u64, cell: u32) -> UnitId {
        UnitId(format!("{epoch}-p{g:010}-c{cell:06}"))
    }

    /// A cell's objects under an epoch folder, as `cell` names its unit without the epoch.
    pub fn cell_stem(g: u64, cell: u32) -> UnitId {
        UnitId(format!("p{g:010}-c{cell:06}"))
    }

    /// A filter unit of work, named after the first candidates unit it covers (`unit` of
    /// generation `g`).
    pub fn filter(candidates_unit: &str, g: u64) -> UnitId {
        UnitId(format!("{candidates_unit}-g{g:010}"))
    }

    /// A `dino` commit of one input shard (its `segment_id`) in generation `g`.
    pub fn dino_shard(g: u64, segment: &str) -> UnitId {
        UnitId(format!("g{g:010}-{segment}"))
    }

    /// The closing commit of the `dino` run of generation `g`.
    pub fn dino_closing(g: u64) -> UnitId {
        UnitId(format!("{DINO_CLOSING}g{g:010}"))
    }

    /// Whether `unit` is a `dino` run's closing commit (not a unit of work).
    pub fn is_dino_closing(unit: &str) -> bool {
        unit.starts_with(DINO_CLOSING)
    }

    /// How other records cite a commit: `unit@generation`.
    pub fn cited(unit: &str, g: u64) -> UnitId {
        UnitId(format!("{unit}@{g}"))
    }

    /// The unit and generation of a citation.
    pub fn parse_cited(cited: &str) -> Option<(&str, u64)> {
        let (unit, g) = cited.rsplit_once('@')?;
        Some((unit, g.parse().ok()?))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The prefix of a `dino` run's closing commit.
const DINO_CLOSING: &str = "covered-";

impl std::ops::Deref for UnitId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UnitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<UnitId> for String {
    fn from(u: UnitId) -> String {
        u.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_sort_by_generation_and_parse_back() {
        assert!(UnitId::partition(9) < UnitId::partition(10));
        assert_eq!(
            UnitId::cell(&UnitId::cells_epoch(2, "46b91ddcffff"), 2, 3).as_str(),
            "cells-L0000000002-46b91ddc-p0000000002-c000003"
        );
        let cited = UnitId::cited("cells-L1-x-p2-c3", 17);
        assert_eq!(UnitId::parse_cited(&cited), Some(("cells-L1-x-p2-c3", 17)));
        assert_eq!(UnitId::parse_cited("no-generation"), None);
        assert!(UnitId::is_dino_closing(&UnitId::dino_closing(4)));
        assert!(!UnitId::is_dino_closing(&UnitId::dino_shard(
            4,
            "part-00000"
        )));
    }
}
