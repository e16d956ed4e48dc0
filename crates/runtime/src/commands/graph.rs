//! `braid graph` and `braid opt`: print decode-step IR, run passes over IR text.

use std::io::Read;

use anyhow::{Context, Result};
use braid_ir::Graph;

use crate::cli::{Format, GraphArgs, OptArgs, OutputArgs};
use crate::load::LoadedModel;
use crate::pipeline::run_passes;

/// `--print-after`: the graph after a pass, to stderr.
fn print_graph(pass: &str, g: &Graph) {
    eprintln!("# after {pass}\n{}", braid_ir::text::print(g));
}

fn emit(g: &Graph, out: &OutputArgs) -> String {
    if out.stats {
        return braid_ir::stats::stats(g).to_text();
    }
    match out.format {
        Format::Text => braid_ir::text::print(g),
        Format::Dot => braid_ir::dot::to_dot(g),
    }
}

/// `braid graph`: lower the model's decode step (or, with `--prefill T`, its prefill step over `T`
/// tokens), run passes, print.
pub fn graph(args: &GraphArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model.model)?;
    let opts = args
        .step
        .options(args.model.max_context, braid_ir::DType::F32);
    let mut g = model.lower_with(opts)?;
    run_passes(
        &mut g,
        &args.model.passes,
        &args.output.print_after,
        &mut print_graph,
    )?;
    print!("{}", emit(&g, &args.output));
    Ok(())
}

/// `braid opt`: parse IR text, verify, run passes, print.
pub fn opt(args: &OptArgs) -> Result<()> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading IR text from standard input")?;
        ("<stdin>".to_string(), s)
    } else {
        let s = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading IR text from {}", args.file.display()))?;
        (args.file.display().to_string(), s)
    };
    let mut g = braid_ir::text::parse(&text).map_err(|e| anyhow::anyhow!("{name}:{e}"))?;
    braid_ir::verify(&g).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    run_passes(
        &mut g,
        &args.passes,
        &args.output.print_after,
        &mut print_graph,
    )?;
    print!("{}", emit(&g, &args.output));
    Ok(())
}
