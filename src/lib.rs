//! blindspot: mines CLIP-blind image pairs from object-storage corpora and measures how that
//! blindness carries into multimodal LLMs. The library holds every stage; `main.rs` only
//! parses arguments and dispatches.
//!
//! The tree follows the pipeline. Stages never import one another: each reads its inputs and
//! writes its outputs through the run root's catalog (`table`), and only the command line
//! (`cli`, in the binary) and the spec runner (`spec`) know the order of stages.
//!
//! - shared: `storage` (object stores, run-root lock), `lease` (units claimed by elastic workers),
//!   `units` (the unit-of-work runner every stage with units uses), `table` (the catalog, schemas, streaming
//!   reads and writes), `encoder` (ONNX encoders, decoding and preprocessing), `sql` (DataFusion
//!   over the catalog), `mmvp` (the benchmark formats on storage), `progress`, `rng` (seeded draws), `error`;
//! - stages: `embed` (ingest, decode once, both encoders), `mine` (`partition`, `index`,
//!   `candidates`, `filter`), `eval` (MLLMs, vision encoders, correlation), `annotate`;
//! - around them: `synth` (synthetic corpora with known pairs), `spec` (pipeline specs),
//!   `status` (units done, leased and pending per stage), `cluster` (Ballista scheduler and
//!   executors with blindspot's functions and stores).

pub mod annotate;
pub mod cluster;
pub mod cosine;
pub mod embed;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod ingest;
pub mod lease;
pub mod mine;
pub mod mmvp;
pub mod plot;
pub mod progress;
pub mod report;
pub mod review_files;
pub mod rng;
pub mod sift;
pub mod spec;
pub mod sql;
pub mod stage;
pub mod status;
pub mod storage;
pub mod synth;
pub mod table;
pub mod units;

pub use error::{Error, Result};

/// The blindspot version, recorded in every output's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
