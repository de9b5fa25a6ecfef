//! Progress, in one place: for staged work (build) on a terminal an
//! indicatif spinner with `[i/n] stage`, elapsed time and the tail of the
//! current tool's output, otherwise one plain line per stage on stderr
//! (nothing at `-q`); for byte streams (snapshot, restore) [`bytes_bar`].

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A byte-count bar with rate and time left, or `None` when it should not
/// show: `enabled` decides, else it shows on a terminal unless `-q`.
pub fn bytes_bar(total: u64, enabled: Option<bool>) -> Option<ProgressBar> {
    let on =
        enabled.unwrap_or_else(|| crate::exec::verbosity() > 0 && std::io::stderr().is_terminal());
    if !on {
        return None;
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left",
        )
        .expect("valid template"),
    );
    Some(b)
}

#[derive(Debug)]
pub struct Progress {
    total: usize,
    index: usize,
    bar: Option<ProgressBar>,
    stage_start: Instant,
    pub timings: Vec<(String, f64)>,
    quiet: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        let quiet = crate::exec::verbosity() == 0;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{prefix}] {elapsed:>4} {msg:.dim}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Self {
            total,
            index: 0,
            bar,
            stage_start: Instant::now(),
            timings: Vec::new(),
            quiet,
        }
    }

    fn close_stage(&mut self) {
        if let Some((_, t)) = self.timings.last_mut()
            && *t < 0.0
        {
            *t = self.stage_start.elapsed().as_secs_f64();
        }
    }

    /// Begin the next stage.
    pub fn stage(&mut self, name: &str) {
        self.close_stage();
        self.index += 1;
        self.stage_start = Instant::now();
        self.timings.push((name.to_string(), -1.0));
        let prefix = format!("{}/{} {name}", self.index, self.total);
        match &self.bar {
            Some(b) => {
                b.set_prefix(prefix);
                b.set_message("");
                b.reset_elapsed();
            }
            None if !self.quiet => eprintln!("nfsroot: [{prefix}]"),
            None => {}
        }
    }

    /// A line of output from the current stage's tool.
    pub fn line(&mut self, l: &str) {
        match &self.bar {
            Some(b) => {
                let l: String = l.chars().take(100).collect();
                b.set_message(l);
            }
            None if crate::exec::verbosity() >= 2 => eprintln!("  {l}"),
            None => {}
        }
    }

    /// Print a message without disturbing the spinner.
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None if !self.quiet => eprintln!("{msg}"),
            None => {}
        }
    }

    pub fn finish(&mut self) {
        self.close_stage();
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
    }
}
