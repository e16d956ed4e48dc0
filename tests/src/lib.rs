//! Shared helpers of the workspace-level integration tests in `tests/tests/`.

use std::path::PathBuf;

use braid_runtime::load::LoadedModel;
use braid_runtime::pipeline::{open_backend, BackendRequest, Device};

/// Path of a committed fixture under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Teacher-forces `tokens` through the model's decode step on the CPU with the given passes and
/// returns the logits at every position (`[T][vocab]`).
pub fn cpu_logits(model: &LoadedModel, passes: &str, tokens: &[u32]) -> Vec<Vec<f32>> {
    let req = BackendRequest::new(Device::Cpu, passes, tokens.len().max(8));
    let mut backend = open_backend(model, &req).expect("open the CPU backend");
    backend.reset().expect("reset");
    tokens
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            backend
                .step(t, pos, true)
                .expect("decode step")
                .logits
                .expect("logits")
        })
        .collect()
}
