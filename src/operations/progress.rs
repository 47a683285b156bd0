//! Progress of a long task: a bar on a terminal, a log line every few seconds otherwise
//! (containers, CI, `systemd` journals).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the log-line form reports.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    bar: Option<ProgressBar>,
    last_log: Instant,
}

impl Progress {
    /// `interactive`: draw a bar (only honoured when stderr is a terminal).
    pub fn new(what: &'static str, total: u64, interactive: bool) -> Self {
        let bar = (interactive && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        });
        Self {
            what,
            total,
            done: 0,
            bar,
            last_log: Instant::now(),
        }
    }

    pub fn advance(&mut self) {
        self.set_done(self.done + 1);
    }

    /// Moves to `done` of the total, for work that advances by more than one at a time.
    pub fn set_done(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(done = self.done, total = self.total, "{}", self.what);
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
