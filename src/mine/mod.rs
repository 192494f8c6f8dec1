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
pub mod candidates;
pub mod cells;
pub mod index;
pub mod join;
pub mod kmeans;
pub mod partition;
pub mod recall;
pub mod vectors;
