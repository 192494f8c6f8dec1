//! Every Arrow schema blindspot writes, and the Parquet metadata keys that go with them.
//! Column names and types here are the contract of `../shared/DESIGN.md` (Tables). The
//! `pairs` schema is whatever `sql/pairs.sql` returns.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The content hash of an imported row (clip-retrieval has no image bytes): a per-row stand-in
/// after this prefix, so exact duplicates are not collapsed before mining.
pub const IMPORTED_HASH: &str = "imported:";

/// Float type of the embedding columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    /// 32-bit floats (the default).
    #[default]
    F32,
    /// 16-bit floats: half the storage, about 3 significant digits.
    F16,
}

impl FloatType {
    /// The Arrow element type.
    pub fn arrow(self) -> DataType {
        match self {
            FloatType::F32 => DataType::Float32,
            FloatType::F16 => DataType::Float16,
        }
    }
}

impl std::str::FromStr for FloatType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(FloatType::F32),
            "f16" | "float16" => Ok(FloatType::F16),
            other => Err(format!("unknown float type {other:?}: use f32 or f16")),
        }
    }
}

/// A `FixedSizeList<item: float, dim>` field for an embedding column.
pub fn vector_field(name: &str, float: FloatType, dim: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", float.arrow(), false)),
            dim as i32,
        ),
        false,
    )
}

/// What the `embeddings` table records about one encoder in its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderMeta {
    /// The encoder's id from its manifest.
    pub id: String,
    /// blake3 of the manifest and the model file, so changed weights are noticed.
    pub digest: String,
    /// Embedding dimension.
    pub dim: usize,
}

/// Metadata keys on the `embeddings` Parquet files.
pub mod meta {
    /// The blindspot version that wrote the file.
    pub const VERSION: &str = "blindspot.version";
    /// Prefix of the per-column encoder keys: `blindspot.clip.id`, `.digest`, `.dim`.
    pub const ENCODER_PREFIX: &str = "blindspot";
}

/// The `embeddings` schema for the given encoders and float type, with its metadata. Without
/// a DINOv2 encoder (`embed --encoders clip`, `import clip-retrieval`) there is no `dino`
/// column: those vectors come later, in the `dino` table.
pub fn embeddings(clip: &EncoderMeta, dino: Option<&EncoderMeta>, float: FloatType) -> SchemaRef {
    let mut metadata = HashMap::new();
    metadata.insert(meta::VERSION.to_string(), crate::VERSION.to_string());
    for (column, enc) in [("clip", Some(clip)), ("dino", dino)] {
        let Some(enc) = enc else { continue };
        let key = |k: &str| format!("{}.{column}.{k}", meta::ENCODER_PREFIX);
        metadata.insert(key("id"), enc.id.clone());
        metadata.insert(key("digest"), enc.digest.clone());
        metadata.insert(key("dim"), enc.dim.to_string());
    }
    let mut fields = vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("shard", DataType::Utf8, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("content_hash", DataType::Utf8, false),
        vector_field("clip", float, clip.dim),
    ];
    if let Some(dino) = dino {
        fields.push(vector_field("dino", float, dino.dim));
    }
    fields.push(Field::new("caption", DataType::Utf8, true));
    fields.push(Field::new("url", DataType::Utf8, true));
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// The `dino` table: DINOv2 vectors computed after mining, only for images in a candidate
/// pair (`blindspot dino`), keyed like `embeddings`.
pub fn dino(dino: &EncoderMeta, float: FloatType) -> SchemaRef {
    let mut metadata = HashMap::new();
    metadata.insert(meta::VERSION.to_string(), crate::VERSION.to_string());
    metadata.insert(format!("{}.dino.id", meta::ENCODER_PREFIX), dino.id.clone());
    metadata.insert(
        format!("{}.dino.digest", meta::ENCODER_PREFIX),
        dino.digest.clone(),
    );
    metadata.insert(
        format!("{}.dino.dim", meta::ENCODER_PREFIX),
        dino.dim.to_string(),
    );
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("uri", DataType::Utf8, false),
            Field::new("content_hash", DataType::Utf8, false),
            vector_field("dino", float, dino.dim),
        ],
        metadata,
    ))
}

/// The `errors` schema.
pub fn errors() -> SchemaRef {
    let mut metadata = HashMap::new();
    metadata.insert(meta::VERSION.to_string(), crate::VERSION.to_string());
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("uri", DataType::Utf8, false),
            Field::new("shard", DataType::Utf8, false),
            Field::new("stage", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
        ],
        metadata,
    ))
}

/// The `candidates` schema: `a < b`, exact f32 CLIP similarity.
pub fn candidates() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Utf8, false),
        Field::new("b", DataType::Utf8, false),
        Field::new("clip_sim", DataType::Float32, false),
    ]))
}

/// The `pairs` schema, as `sql/pairs.sql` returns it: both keys and uris, both similarities
/// and the run id.
pub fn pairs() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Utf8, false),
        Field::new("b", DataType::Utf8, false),
        Field::new("a_uri", DataType::Utf8, true),
        Field::new("b_uri", DataType::Utf8, true),
        Field::new("clip_sim", DataType::Float32, false),
        Field::new("dino_sim", DataType::Float32, true),
        Field::new("run_id", DataType::Utf8, true),
    ]))
}

/// The `similarity_grid` schema: candidates per (CLIP bin, DINOv2 bin) of one filter unit.
pub fn grid() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("clip_bin", DataType::Int32, false),
        Field::new("dino_bin", DataType::Int32, false),
        Field::new("n", DataType::Int64, false),
    ]))
}

/// The `image_minima` schema: an image's lowest DINOv2 similarity among its candidates whose
/// CLIP similarity falls in `clip_bin` (of the coarse grid), in one filter unit.
pub fn minima() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("clip_bin", DataType::Int32, false),
        Field::new("min_dino", DataType::Float32, false),
    ]))
}

/// The `dup_edges` schema: two images whose candidate pair is at or above the near-duplicate
/// threshold.
pub fn dup_edges() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Utf8, false),
        Field::new("b", DataType::Utf8, false),
    ]))
}

/// The `groups` schema: each image of a near-duplicate group, its group (0 is the largest),
/// the group's size and representative (its smallest key).
pub fn groups() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("group", DataType::Int64, false),
        Field::new("size", DataType::Int64, false),
        Field::new("representative", DataType::Utf8, false),
    ]))
}

/// The `duplicates` schema: `key` is byte-identical to `duplicate_of`, the copy kept for
/// mining.
pub fn duplicates() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("duplicate_of", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
    ]))
}

/// The schema of the index's label map: usearch label -> key.
pub fn index_labels() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("label", DataType::UInt64, false),
        Field::new("key", DataType::Utf8, false),
    ]))
}

fn with_version(fields: Vec<Field>) -> SchemaRef {
    let mut metadata = HashMap::new();
    metadata.insert(meta::VERSION.to_string(), crate::VERSION.to_string());
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// The `answers` schema: one row per benchmark item, model and evaluation.
pub fn answers() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let o = |n: &str| Field::new(n, DataType::Utf8, true);
    with_version(vec![
        s("kind"),
        s("benchmark"),
        s("model"),
        Field::new("item", DataType::UInt32, false),
        Field::new("pair", DataType::UInt32, false),
        s("pattern"),
        s("template"),
        s("prompt"),
        s("image"),
        o("response"),
        o("choice"),
        s("answer"),
        Field::new("correct", DataType::Boolean, false),
        s("grader"),
        s("labels"),
        Field::new("attempts", DataType::UInt32, false),
        Field::new("latency_ms", DataType::UInt64, false),
        Field::new("cached", DataType::Boolean, false),
        o("error"),
        o("judge"),
        s("settings"),
        s("endpoint"),
    ])
}

/// The `scores` schema: per model and pattern (`all` for overall), accuracies in percent.
pub fn scores() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    with_version(vec![
        s("kind"),
        s("benchmark"),
        s("model"),
        s("pattern"),
        Field::new("questions", DataType::UInt32, false),
        Field::new("pairs", DataType::UInt32, false),
        Field::new("question_accuracy", DataType::Float64, true),
        Field::new("pair_accuracy", DataType::Float64, true),
        Field::new("errors", DataType::UInt32, false),
        s("grader"),
        s("labels"),
        s("template"),
        // Bootstrap intervals over pairs (null in tables written before they existed).
        Field::new("question_accuracy_low", DataType::Float64, true),
        Field::new("question_accuracy_high", DataType::Float64, true),
        Field::new("pair_accuracy_low", DataType::Float64, true),
        Field::new("pair_accuracy_high", DataType::Float64, true),
        Field::new("interval_method", DataType::Utf8, true),
        // Answer bias: percent of answered items that chose (a) (null in older tables).
        Field::new("a_share", DataType::Float64, true),
        // With --repeats: agreement across samples and the share of items that flip.
        Field::new("agreement", DataType::Float64, true),
        Field::new("flip_share", DataType::Float64, true),
        Field::new("a_share_low", DataType::Float64, true),
        Field::new("a_share_high", DataType::Float64, true),
        Field::new("agreement_low", DataType::Float64, true),
        Field::new("agreement_high", DataType::Float64, true),
        Field::new("flip_share_low", DataType::Float64, true),
        Field::new("flip_share_high", DataType::Float64, true),
        // NaturalBench's accuracies, where pairs ask two questions of two images.
        Field::new("q_acc", DataType::Float64, true),
        Field::new("i_acc", DataType::Float64, true),
        Field::new("g_acc", DataType::Float64, true),
        Field::new("q_acc_low", DataType::Float64, true),
        Field::new("q_acc_high", DataType::Float64, true),
        Field::new("i_acc_low", DataType::Float64, true),
        Field::new("i_acc_high", DataType::Float64, true),
        Field::new("g_acc_low", DataType::Float64, true),
        Field::new("g_acc_high", DataType::Float64, true),
    ])
}

/// The `correlations` schema: per (vision encoder or group, MLLM), across patterns.
pub fn correlations() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    with_version(vec![
        s("encoder"),
        Field::new("group", DataType::Boolean, false),
        s("mllm"),
        s("metric"),
        Field::new("pearson", DataType::Float64, true),
        Field::new("spearman", DataType::Float64, true),
        Field::new("n", DataType::UInt32, false),
        s("patterns"),
        // The Fisher-z interval of `pearson` (null below 4 patterns).
        Field::new("pearson_low", DataType::Float64, true),
        Field::new("pearson_high", DataType::Float64, true),
        Field::new("interval_method", DataType::Utf8, true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_schema_records_encoders() {
        let clip = EncoderMeta {
            id: "c".into(),
            digest: "d1".into(),
            dim: 4,
        };
        let dino = EncoderMeta {
            id: "d".into(),
            digest: "d2".into(),
            dim: 6,
        };
        let s = embeddings(&clip, Some(&dino), FloatType::F16);
        assert_eq!(s.metadata()["blindspot.dino.dim"], "6");
        assert_eq!(s.metadata()["blindspot.clip.id"], "c");
        match s.field_with_name("dino").unwrap().data_type() {
            DataType::FixedSizeList(item, 6) => assert_eq!(item.data_type(), &DataType::Float16),
            other => panic!("unexpected {other:?}"),
        }
    }
}
