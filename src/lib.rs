//! blindspot: mines CLIP-blind image pairs from object-storage corpora and measures how that
//! blindness carries into multimodal LLMs. The library holds every stage; `main.rs` only
//! parses arguments and dispatches.

pub mod annotate;
pub mod candidates;
pub mod embed;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod filter;
pub mod index;
pub mod ingest;
pub mod preprocess;
pub mod progress;
pub mod runtime;
pub mod schema;
pub mod spec;
pub mod sql;
pub mod storage;
pub mod synth;
pub mod tables;

pub use error::{Error, Result};

/// The blindspot version, recorded in every output's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
