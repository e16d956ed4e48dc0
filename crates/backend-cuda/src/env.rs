//! Everything the backend reads from the process environment, in one place: the tuning knobs
//! (`BRAID_*`, see [`crate::tuning`]), the CUDA toolkit (`CUDA_HOME`) and the kernel cache
//! directory (`BRAID_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME`).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::CudaError;
use crate::tuning::{Tuning, KNOBS};

fn var_os(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

impl Tuning {
    /// The defaults with every `BRAID_*` knob that is set in the environment applied.
    ///
    /// Errors: [`CudaError::BadArgument`] naming the variable, its value and what was expected
    /// (a knob that is set but not valid is never silently ignored).
    pub fn from_env() -> Result<Tuning, CudaError> {
        let mut t = Tuning::default();
        for name in KNOBS {
            if let Some(v) = var_os(name) {
                let v = v
                    .to_str()
                    .ok_or_else(|| CudaError::BadArgument(format!("{name} is not valid UTF-8")))?;
                t.set(name, v).map_err(CudaError::BadArgument)?;
            }
        }
        Ok(t)
    }
}

/// `$CUDA_HOME/include`, or `/usr/local/cuda/include` when `CUDA_HOME` is unset.
pub fn cuda_include_dir() -> PathBuf {
    var_os("CUDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"))
        .join("include")
}

/// The on-disk kernel cache directory: `$BRAID_CACHE_DIR/kernels`, else
/// `$XDG_CACHE_HOME/braid/kernels`, else `~/.cache/braid/kernels`; `None` when no home is known.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = var_os("BRAID_CACHE_DIR") {
        return Some(PathBuf::from(d).join("kernels"));
    }
    if let Some(d) = var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("braid").join("kernels"));
    }
    var_os("HOME").map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("braid")
            .join("kernels")
    })
}
