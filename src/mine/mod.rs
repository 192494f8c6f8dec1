//! Mining: from the `embeddings` table to the `candidates` above the CLIP threshold (the
//! stages after it, through DINOv2, are in `sift`).
//!
//! ```text
//! partition (spherical k-means cells; each vector at home in one cell, a guest where it can pair)
//!   -> candidates (every pair above the CLIP threshold, cell by cell; or through `index`, the
//!      usearch HNSW graph, or by brute force)
//! ```
//!
//! The stages share helpers and nothing else: `vectors` (the unique CLIP vectors, in memory,
//! for the index and exact methods), `ann` (the index files), `kmeans` and `join` (the
//! centroids and the threshold join kernel), `cells` (the layout: schemas, the partition
//! record, reading a cell) and `recall` (any method's table against brute force). Each stage
//! reads its inputs from the catalog, never from another stage.

pub mod ann;
pub mod by_cell;
pub mod candidates;
pub mod cells;
pub mod guests;
pub mod index;
pub mod join;
pub mod kmeans;
pub mod partition;
pub mod recall;
pub mod vectors;

/// What is wrong with a CLIP threshold (`clip-min`), if anything: it must lie strictly
/// between -1 and 1. Partition and candidates check it alike.
pub fn clip_min_problem(clip_min: f32) -> Option<String> {
    match clip_min > -1.0 && clip_min < 1.0 {
        true => None,
        false => Some(format!("clip-min {clip_min} must be between -1 and 1")),
    }
}
