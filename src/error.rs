//! The library's one error type, grouped by what failed and naming the object it failed on.

use std::path::PathBuf;

/// Everything that can stop a blindspot stage. Per-image problems are not errors of this kind:
/// they become rows of the `errors` table and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL or path that names no store blindspot can open.
    #[error("invalid url {url:?}: {reason}")]
    Url { url: String, reason: String },

    /// An object store call that failed after its retries.
    #[error("storage {uri}: {source}")]
    Storage {
        uri: String,
        #[source]
        source: object_store::Error,
    },

    /// A local file that could not be read or written.
    #[error("file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An encoder manifest that is missing, malformed or inconsistent.
    #[error("manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },

    /// ONNX Runtime could not be loaded, or a session could not be created or run.
    #[error("encoder {id}: {reason}")]
    Encoder { id: String, reason: String },

    /// The ONNX Runtime shared library itself.
    #[error("onnx runtime: {0}")]
    Runtime(String),

    /// A pipeline spec with one or more problems, all listed.
    #[error("spec {}: {} problem(s):\n  - {}", path.display(), problems.len(), problems.join("\n  - "))]
    Spec {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// Arrow or Parquet failed to encode or decode a table.
    #[error("table {table}: {reason}")]
    Table { table: String, reason: String },

    /// Another run holds the run root.
    #[error("run root {root} is in use by another run ({holder}); wait for it to finish, or delete {lock} if that run is dead")]
    Locked {
        root: String,
        holder: String,
        lock: String,
    },

    /// A benchmark that is missing or not in the MMVP or MMVP-VLM format.
    #[error("benchmark {uri}: {reason}")]
    Benchmark { uri: String, reason: String },

    /// An MLLM endpoint that cannot be used at all (per-item failures become `answers` rows).
    #[error("endpoint {url}: {reason}")]
    Endpoint { url: String, reason: String },

    /// Bad arguments that got past the command line parser.
    #[error("{0}")]
    Usage(String),

    /// A background task panicked or was cancelled.
    #[error("internal: {0}")]
    Internal(String),
}

/// Shorthand used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error from Arrow or Parquet on the named table.
    pub fn table(table: &str, err: impl std::fmt::Display) -> Self {
        Error::Table {
            table: table.to_string(),
            reason: err.to_string(),
        }
    }

    /// An error from an object store call on the named object.
    pub fn storage(uri: impl std::fmt::Display, source: object_store::Error) -> Self {
        Error::Storage {
            uri: uri.to_string(),
            source,
        }
    }
}
