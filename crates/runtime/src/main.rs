//! `braid`: the runner binary. See `braid --help`.

use std::process::ExitCode;

use braid_runtime::cli::{Cli, Command};
use braid_runtime::commands;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
