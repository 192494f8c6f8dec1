//! Progress for people and for schedulers: a bar when stderr is a terminal, periodic log
//! lines otherwise. The library only reports through the `Progress` trait.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindspot::progress::Progress;

/// A progress bar when stderr is a terminal, periodic log lines otherwise.
pub fn progress() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(BarProgress::default())
    } else {
        Arc::new(LogProgress::default())
    }
}

#[derive(Default)]
struct BarProgress {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for BarProgress {
    fn start(&self, stage: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &*self.bar.lock().expect("progress lock") {
            b.inc(n);
        }
    }
    fn message(&self, msg: &str) {
        if let Some(b) = &*self.bar.lock().expect("progress lock") {
            b.set_message(msg.to_string());
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}

/// Logs progress at most every ten seconds, for logs and schedulers.
struct LogProgress {
    state: std::sync::Mutex<(String, u64, Option<u64>, Instant)>,
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress {
            state: std::sync::Mutex::new((String::new(), 0, None, Instant::now())),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, stage: &str, total: Option<u64>) {
        *self.state.lock().expect("progress lock") = (stage.to_string(), 0, total, Instant::now());
    }
    fn advance(&self, n: u64) {
        let mut s = self.state.lock().expect("progress lock");
        s.1 += n;
        if s.3.elapsed() >= Duration::from_secs(10) {
            s.3 = Instant::now();
            match s.2 {
                Some(total) => tracing::info!(stage = %s.0, done = s.1, total, "progress"),
                None => tracing::info!(stage = %s.0, done = s.1, "progress"),
            }
        }
    }
    fn message(&self, msg: &str) {
        tracing::debug!("{msg}");
    }
    fn finish(&self) {}
}
