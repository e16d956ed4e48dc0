//! `braid serve`: the OpenAI-compatible HTTP server (see `crate::serve`).

use anyhow::{Context, Result};

use crate::cli::ServeArgs;
use crate::serve::engine_thread::EngineConfig;
use crate::serve::ServeConfig;

/// Runs `braid serve` until Ctrl-C or SIGTERM.
///
/// Errors: the address cannot be bound, the model fails to load, the runtime cannot start.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let config = ServeConfig {
        engine: EngineConfig {
            model: args.model.model.clone(),
            served_name: args.served_model_name.clone(),
            device: args.device.into(),
            passes: args.model.build.passes.clone(),
            max_context: args.model.build.context(),
            max_queue: args.max_queue as usize,
            exec: crate::pipeline::exec_options(!args.no_graph)?,
        },
        host: args.host.clone(),
        port: args.port,
        max_body_bytes: args.max_body_bytes,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(crate::serve::run(config))
}
