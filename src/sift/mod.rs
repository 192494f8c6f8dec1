//! Sifting: the stages after mining, which sift the `candidates` through DINOv2.
//!
//! ```text
//! candidates
//!   -> dino (DINOv2 vectors for candidate images only, when shards were embedded CLIP-first)
//!   -> filter (per unit of work, sql/similarities.sql then sql/pairs.sql: the candidates below
//!      the DINOv2 threshold, with each unit's aggregates and near-duplicate edges)
//!   -> groups (the near-duplicate groups: connected components of those edges)
//! ```
//!
//! `dino` and `filter` are stages; `aggregates` and `groups` are the filter's helpers. They read
//! the mining layout's cells (`mine::cells`) and the catalog, never another stage.

pub mod aggregates;
pub mod dino;
pub mod filter;
pub mod groups;
