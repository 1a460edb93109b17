//! A progress bar for long commands: on a terminal only, never with `--json`,
//! on stderr (stdout keeps the result), redrawn at most ten times a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A progress bar over `total` items (a no-op when not shown).
pub struct Progress {
    what: &'static str,
    total: usize,
    shown: bool,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    /// A bar for `total` items called `what`, shown if stderr is a terminal and
    /// the output is not JSON.
    pub fn new(what: &'static str, total: usize, json: bool) -> Progress {
        let shown = !json && total > 0 && std::io::stderr().is_terminal();
        Progress { what, total, shown, started: Instant::now(), drawn: None }
    }

    /// `done` items are done.
    pub fn set(&mut self, done: usize) {
        if !self.shown {
            return;
        }
        let now = Instant::now();
        if done < self.total && self.drawn.is_some_and(|t| now - t < Duration::from_millis(100)) {
            return;
        }
        self.drawn = Some(now);
        let width = 30;
        let filled = (done * width).checked_div(self.total).unwrap_or(width).min(width);
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {done}/{} {} ({rate:.0}/s) ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.total,
            self.what
        );
        if done >= self.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}
