//! A one-line progress bar on stderr (only when stderr is a terminal), redrawn with `\r`.

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

const WIDTH: usize = 30;

/// Steps done of a known total, with an estimate of the time left.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    enabled: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            total: total.max(1),
            done: 0,
            start: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Shows `what` as the step now running.
    pub fn show(&self, what: &str) {
        if self.enabled {
            let line = bar(
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64(),
                what,
            );
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line:<100}");
            let _ = err.flush();
        }
    }

    pub fn step(&mut self) {
        self.done = (self.done + 1).min(self.total);
    }

    /// Clears the line.
    pub fn finish(&self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\r{:<100}\r", "");
        }
    }
}

fn bar(done: usize, total: usize, elapsed: f64, what: &str) -> String {
    let filled = WIDTH * done / total;
    let eta = if done == 0 {
        "?".to_owned()
    } else {
        format!("{:.0}s", elapsed / done as f64 * (total - done) as f64)
    };
    format!(
        "[{}{}] {done}/{total} ETA {eta} {what}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_fills_and_estimates() {
        let b = super::bar(1, 3, 10.0, "plain @ 64 B");
        assert!(
            b.starts_with("[##########....................] 1/3 ETA 20s plain"),
            "{b}"
        );
        assert!(super::bar(0, 3, 0.0, "x").contains("ETA ?"));
    }
}
