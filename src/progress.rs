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

/// The peak resident set of this process so far (`VmHWM` on Linux), for stage summaries; `None`
/// where `/proc` does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Says when a periodic progress line is due: at most once per period.
pub struct Every {
    last: std::time::Instant,
    period: std::time::Duration,
}

impl Every {
    /// Lines at most once per `period`, the first one `period` from now.
    pub fn new(period: std::time::Duration) -> Every {
        Every {
            last: std::time::Instant::now(),
            period,
        }
    }

    /// True when a period has passed since the last line (which this one then is).
    pub fn due(&mut self) -> bool {
        let due = self.last.elapsed() >= self.period;
        if due {
            self.last = std::time::Instant::now();
        }
        due
    }
}
