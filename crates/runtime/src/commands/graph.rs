//! `braid graph` and `braid opt`: print decode-step IR, run passes over IR text.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use braid_ir::Graph;

use crate::cli::{Format, GraphArgs, OptArgs, OutputArgs};
use crate::load::LoadedModel;
use crate::pipeline::run_passes;
use crate::ui;

/// `--print-after`: the graph after a pass, to stderr.
fn print_graph(pass: &str, g: &Graph) {
    ui::eprint_line(&format!("# after {pass}\n{}", braid_ir::text::print(g)));
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

/// Writes `text` to stdout; a closed pipe comes back as a `BrokenPipe` error (the binary exits 0).
fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .context("writing to stdout")
}

/// `braid graph`: lower the model's decode step (or, with `--prefill T`, its prefill step over `T`
/// tokens), run passes, print.
pub fn graph(args: &GraphArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model.model)?;
    let max_context = args.model.build.max_context(&model.config)?;
    ui::info(&format!("model {}", model.summary()));
    let opts = args.step.options(max_context, braid_ir::DType::F32);
    let mut g = model.lower_with(opts)?;
    {
        let _task = ui::Task::spinner(if opts.tokens > 1 {
            "fusing the prefill step"
        } else {
            "fusing the decode step"
        });
        run_passes(
            &mut g,
            &args.model.build.passes,
            &args.output.print_after,
            &mut print_graph,
        )?;
    }
    write_stdout(&emit(&g, &args.output))
}

/// The most IR text `braid opt` reads (the unfused decode step of 4096 layers prints to about 10 MB).
pub const MAX_IR_BYTES: u64 = 256 << 20;

/// Reads at most [`MAX_IR_BYTES`] from `reader`; `name` names it in errors.
fn read_ir(reader: impl Read, name: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_IR_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading IR text from {name}"))?;
    if bytes.len() as u64 > MAX_IR_BYTES {
        anyhow::bail!(
            "{name}: more than {} MiB of IR text (the largest decode step is a few tens of MB)",
            MAX_IR_BYTES >> 20
        );
    }
    Ok(bytes)
}

/// `braid opt`: parse IR text, verify, run passes, print.
pub fn opt(args: &OptArgs) -> Result<()> {
    let (name, bytes) = if args.file.as_os_str() == "-" {
        let bytes = read_ir(std::io::stdin().lock(), "<stdin>")?;
        ("<stdin>".to_string(), bytes)
    } else {
        let name = args.file.display().to_string();
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("reading IR text from {name}"))?;
        (name.clone(), read_ir(file, &name)?)
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let mut g = braid_ir::text::parse(&text).map_err(|e| anyhow::anyhow!("{name}:{e}"))?;
    braid_ir::verify(&g).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    run_passes(
        &mut g,
        &args.passes,
        &args.output.print_after,
        &mut print_graph,
    )?;
    write_stdout(&emit(&g, &args.output))
}
