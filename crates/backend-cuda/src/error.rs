//! The backend's error type: every message names the kernel, op, tensor or file involved and says
//! what was expected.

use thiserror::Error;

/// An error of the CUDA backend.
#[derive(Debug, Error)]
pub enum CudaError {
    /// libcuda could not be loaded, or there is no usable device at the ordinal asked for.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// libnvrtc could not be loaded (kernels cannot be compiled).
    #[error("NVRTC is not available: {0}")]
    NvrtcUnavailable(String),
    /// NVRTC rejected a kernel source; `log` is NVRTC's own log.
    #[error("NVRTC failed to compile kernels/{file} for {arch} ({code}):\n{log}")]
    Compile {
        file: String,
        arch: String,
        code: String,
        log: String,
    },
    /// A header a kernel includes is missing from the CUDA include directory.
    #[error(
        "kernels/{file} needs the CUDA header `{header}`, which is not in {include_dir} \
         (set CUDA_HOME to a CUDA toolkit, or to a directory holding include/{header})"
    )]
    MissingHeader {
        file: String,
        header: String,
        include_dir: String,
    },
    /// libcublas could not be loaded (prefill GEMMs need it).
    #[error("cuBLAS is not available: {0}")]
    CublasUnavailable(String),
    /// A cuBLAS call failed; `what` names the node and the GEMM shape.
    #[error("cuBLAS error while {what}: {status}")]
    Cublas { what: String, status: String },
    /// A CUDA driver call failed; `what` says what the backend was doing (kernel, op, tensor).
    #[error("CUDA driver error while {what}: {source}")]
    Driver {
        what: String,
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// The graph holds something the backend cannot execute; `node` is the value as printed (`%7`).
    #[error("{node} = {op}: {msg}")]
    Unsupported {
        node: String,
        op: String,
        msg: String,
    },
    /// A weight is missing from the weight source or does not match the graph's declaration.
    #[error("weight `{name}`: {msg}")]
    Weight { name: String, msg: String },
    /// The graph is malformed (fails the IR verifier) or lacks what a decode step needs.
    #[error("graph: {0}")]
    Graph(String),
    /// A step argument is out of range (token id, position).
    #[error("{0}")]
    BadArgument(String),
    /// A bounded wait on the device passed its bound; the message names what waited, on what, and
    /// what it saw.
    #[error("the GPU step timed out: {0}")]
    Timeout(String),
}

/// Attaches "while `what`" context to a driver result.
pub(crate) trait DriverContext<T> {
    /// Maps a [`cudarc::driver::DriverError`] to [`CudaError::Driver`] with the given context.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, CudaError>;
}

impl<T> DriverContext<T> for Result<T, cudarc::driver::DriverError> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, CudaError> {
        self.map_err(|source| CudaError::Driver {
            what: what(),
            source,
        })
    }
}
