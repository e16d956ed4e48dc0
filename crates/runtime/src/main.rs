//! `braid`: the runner binary. See `braid --help`.
//!
//! Exit status: 0 on success and when standard output is closed early (`braid graph | head -1`),
//! 1 on an error (one `error:` line on stderr), 2 for a command line clap rejects.

use std::io::IsTerminal;
use std::process::ExitCode;

use braid_runtime::cli::{Cli, Command};
use braid_runtime::{commands, ui};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Levels a bare `--log` directive may name.
const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
/// Targets a bare `--log` directive may name (a bare target enables all its levels).
const TARGETS: &[&str] = &[
    "braid_runtime",
    "braid_passes",
    "braid_ir",
    "braid_backend_cuda",
    "braid",
    "egg",
];

/// The tracing filter for `--log`: the user's directives (`warn` when there are none), plus
/// `egg=off` unless they name the `egg` target themselves (egg logs every iteration at info level).
///
/// Errors: a directive tracing cannot parse, or a bare word that is neither a level nor one of
/// braid's targets (`--log verbose` would otherwise silently enable a target called `verbose`).
fn log_filter(spec: &str) -> Result<EnvFilter, String> {
    let mut directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    for d in &directives {
        let bare = !d.contains(['=', '[', ':']);
        let known = LEVELS.contains(&d.to_ascii_lowercase().as_str())
            || TARGETS
                .iter()
                .any(|t| d == t || d.starts_with(&format!("{t}::")));
        if bare && !known {
            return Err(format!(
                "--log {spec}: `{d}` is neither a level ({}) nor one of braid's log targets ({}); \
                 write LEVEL or TARGET=LEVEL, e.g. `info` or `braid_passes=debug`",
                LEVELS.join(", "),
                TARGETS.join(", ")
            ));
        }
        EnvFilter::builder()
            .with_regex(false)
            .parse(d)
            .map_err(|e| {
                format!(
                "--log {spec}: `{d}` is not a tracing filter directive ({e}); expected LEVEL or \
                 TARGET=LEVEL, e.g. `info` or `braid_passes=debug`"
            )
            })?;
    }
    if directives.is_empty() {
        directives.push("warn");
    }
    if !directives.iter().any(|d| d.starts_with("egg")) {
        directives.push("egg=off");
    }
    EnvFilter::builder()
        .with_regex(false)
        .parse(directives.join(","))
        .map_err(|e| format!("--log {spec}: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match log_filter(&cli.log) {
        Ok(f) => f,
        Err(msg) => {
            ui::eprint_line(&format!("error: {msg}"));
            return ExitCode::FAILURE;
        }
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    ui::set_progress(cli.progress);
    let result = match &cli.command {
        Command::Generate(a) => commands::generate::generate(a),
        Command::Graph(a) => commands::graph::graph(a),
        Command::Opt(a) => commands::graph::opt(a),
        Command::Bench(a) => commands::bench::bench(a),
        Command::Profile(a) => commands::bench::profile(a),
        Command::Check(a) => commands::check::check(a),
        Command::Plan(a) => commands::plan::plan(a),
        Command::Serve(a) => commands::serve::serve(a),
        Command::Chat(a) => commands::chat::chat(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if ui::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            ui::eprint_line(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
