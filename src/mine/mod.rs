//! Mining: from the `embeddings` table to the CLIP-blind `pairs`.
//!
//! ```text
//! index (usearch HNSW over unique CLIP vectors, exact duplicates collapsed)
//!   -> candidates (every pair above the CLIP threshold)
//!   -> filter (sql/pairs.sql: the candidates below the DINOv2 threshold)
//! ```
//!
//! The three stages share two helpers and nothing else: `vectors` (the unique CLIP vectors of
//! a run root, read through the catalog) and `ann` (the index files: settings, build, save,
//! open). Each stage reads its inputs from the catalog, never from another stage.

pub mod ann;
pub mod candidates;
pub mod filter;
pub mod index;
pub mod vectors;
