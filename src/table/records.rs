//! Stage records that another stage or the report reads: they are the catalog's vocabulary,
//! so a reader never imports the stage that wrote them.

use serde::{Deserialize, Serialize};

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

/// What other stages read of an embed shard's commit record (`embed::ShardCommit` writes it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbedShard {
    /// The shard, relative to the input, as its rows' `shard` column holds it.
    pub shard: String,
    /// Rows embedded.
    #[serde(default)]
    pub rows: u64,
    /// The CLIP and DINOv2 encoder ids; the second is empty for a shard embedded with CLIP
    /// only (its DINOv2 vectors come from `blindspot dino`). Absent in records written before
    /// encoders were recorded (those shards have both).
    #[serde(default)]
    pub encoders: Option<[String; 2]>,
}

/// What other stages read of a `dino` run's closing commit: the candidates units it covered
/// (`unit@generation`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DinoCovered {
    /// The candidates units whose images have DINOv2 vectors.
    #[serde(default)]
    pub candidates: Vec<String>,
}

impl DinoCovered {
    /// The unit name of the closing commit of the `dino` run of `generation`.
    pub fn unit(generation: u64) -> String {
        format!("{}g{generation:010}", Self::PREFIX)
    }

    /// Whether `unit` names such a closing commit (not a unit of work).
    pub fn is_closing(unit: &str) -> bool {
        unit.starts_with(Self::PREFIX)
    }

    const PREFIX: &'static str = "covered-";
}
