//! `braid plan`: the CUDA backend's plan for a model's decode step, printed.

use anyhow::{bail, Context, Result};
use braid_backend_cuda::lower::lower;
use braid_backend_cuda::Target;

use crate::cli::PlanArgs;
use crate::load::LoadedModel;
use crate::pipeline;

/// Lowers the model's fused decode step (or, with `--prefill T`, its prefill step) with a bf16 KV
/// cache, as on the GPU, for the chosen device and prints the plan
/// ([`braid_backend_cuda::Plan::text`]).
pub fn plan(args: &PlanArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model.model)?;
    let opts = args.step.options(
        args.model.build.max_context(&model.config)?,
        pipeline::kv_dtype(true),
    );
    let g = pipeline::fused_step_graph(&model, &args.model.build.passes, opts)?;
    let tuning = pipeline::tuning()?;
    let plan = match args.device_facts.as_str() {
        "live" => {
            let dev = pipeline::open_gpu().context("--device-facts live needs a GPU")?;
            let target = dev.target()?;
            lower(&g, &target, &tuning)?
        }
        name => match Target::recorded(name) {
            Some(t) => lower(&g, &t, &tuning)?,
            None => bail!("--device-facts {name}: unknown device (expected `h200` or `live`)"),
        },
    };
    println!(
        "model     {} (passes `{}`)",
        model.source, args.model.build.passes
    );
    print!("{}", plan.text(args.verbose));
    Ok(())
}
