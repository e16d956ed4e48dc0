//! What the runner shows a person: standard output that a closed pipe ends quietly, notes and
//! warnings on standard error, and progress (indicatif) on standard error when it is a terminal.
//!
//! A closed standard output (`braid graph | head -1`) is not an error: writes report
//! [`std::io::ErrorKind::BrokenPipe`], [`is_broken_pipe`] recognises it in an error chain, and the
//! binary then exits with status 0 without a message.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// When progress bars, spinners and the one-line model summary are shown on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// When standard error is a terminal.
    Auto,
    /// Always (as plain lines when standard error is not a terminal).
    Always,
    /// Never.
    Never,
}

static MODE: OnceLock<ProgressMode> = OnceLock::new();

/// Sets the progress mode for the process (the first call wins).
pub fn set_progress(mode: ProgressMode) {
    let _ = MODE.set(mode);
}

fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether progress and the model summary are shown.
pub fn progress_shown() -> bool {
    match MODE.get().copied().unwrap_or(ProgressMode::Auto) {
        ProgressMode::Auto => stderr_is_terminal(),
        ProgressMode::Always => true,
        ProgressMode::Never => false,
    }
}

/// Writes one line to stderr; a closed or broken stderr is ignored (there is nowhere else to say
/// anything).
pub fn eprint_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A warning on stderr (always shown): `warning: {msg}`.
pub fn warn(msg: &str) {
    eprint_line(&format!("warning: {msg}"));
}

/// A note on stderr (always shown): `note: {msg}`.
pub fn note(msg: &str) {
    eprint_line(&format!("note: {msg}"));
}

/// An informational line on stderr, shown only with progress ([`progress_shown`]).
pub fn info(msg: &str) {
    if progress_shown() {
        eprint_line(msg);
    }
}

/// Whether `err`'s chain holds an I/O error of kind `BrokenPipe` (stdout closed by the reader).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A task shown on stderr while it runs: a spinner (or a byte bar with [`Task::bytes`]) on a
/// terminal, one line when progress is forced on a non-terminal, nothing otherwise. Finishing
/// (or dropping) it clears the spinner.
pub struct Task {
    bar: Option<ProgressBar>,
}

impl Task {
    /// A spinner with message `msg`.
    pub fn spinner(msg: &str) -> Task {
        if !progress_shown() {
            return Task { bar: None };
        }
        if !stderr_is_terminal() {
            eprint_line(&format!("{msg} ..."));
            return Task { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(msg.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Task { bar: Some(bar) }
    }

    /// A bar over `total` bytes with message `msg`; advance it with [`Task::inc`].
    pub fn bytes(msg: &str, total: u64) -> Task {
        if !progress_shown() {
            return Task { bar: None };
        }
        if !stderr_is_terminal() {
            eprint_line(&format!("{msg} ..."));
            return Task { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(msg.to_string());
        Task { bar: Some(bar) }
    }

    /// Advances a byte bar by `n`.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Clears the spinner or bar.
    pub fn finish(self) {}
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Bytes as a short human figure (`1.19 GB`, `20.3 MB`, `512 B`), decimal units.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.2} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
