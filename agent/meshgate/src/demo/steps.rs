//! The demo's headings: acts, steps, and how long each step took.

use std::time::Instant;

/// Prints headings and, when a step ends (at the next heading or `finish`), its duration.
#[derive(Debug, Default)]
pub(super) struct Steps {
    current: Option<Instant>,
}

impl Steps {
    pub(super) fn act(&mut self, title: &str) {
        self.finish();
        println!("\n### {title}");
    }

    pub(super) fn step(&mut self, text: &str) {
        self.finish();
        println!("\n== {text}");
        self.current = Some(Instant::now());
    }

    /// Ends the current step, printing its duration.
    pub(super) fn finish(&mut self) {
        if let Some(started) = self.current.take() {
            println!("   ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
}
