//! Progress reporting. The library never draws: a stage reports to a [`Progress`] handed in by
//! the caller, and the command line decides whether that is a bar, log lines or nothing.

/// Receives progress from a long-running stage. Implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    /// A unit of work of `total` items (when known) begins, e.g. "embed" over shards.
    fn start(&self, stage: &str, total: Option<u64>);
    /// `n` more items are done.
    fn advance(&self, n: u64);
    /// A line worth showing to the person watching, e.g. a shard that finished.
    fn message(&self, msg: &str);
    /// The unit of work is over.
    fn finish(&self);
}

/// Progress that goes nowhere, for tests and library callers that do not care.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn message(&self, _: &str) {}
    fn finish(&self) {}
}
