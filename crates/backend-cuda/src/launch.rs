//! One kernel launch bound to an executor's buffers: the compiled kernel, its launch shape and its
//! parameter struct with device addresses. A plan's cuBLAS GEMM entries bind to the device's
//! cuBLAS handle instead of a kernel ([`Launch::is_gemm`]).
//!
//! Launches are bound once per executor, after every buffer exists, so the same list serves the
//! eager executor (with CUDA events around each launch) and the CUDA graph capture.

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction};

use std::sync::Arc;

use crate::device::{Cublas, CudaDevice, DevPtr};
use crate::error::{CudaError, DriverContext};
use crate::facts::KernelRef;
use crate::params::{Params, Region};
use crate::plan::PlannedLaunch;

/// One kernel launch: what it computes (the op and the value it defines, for profiles and errors),
/// the kernel, its launch shape and parameters, and the bytes it moves (for GB/s in profiles).
#[derive(Clone)]
pub struct Launch {
    /// The op's name, e.g. `fused_rms_norm_matmul`.
    pub op: &'static str,
    /// The value the launch computes, as printed (`%12`).
    pub node: String,
    /// The kernel's name, e.g. `gemv_bf16` (`cublas_gemm_bf16` for a GEMM).
    pub kernel: String,
    pub(crate) work: Work,
    /// Grid dimensions (blocks).
    pub grid: (u32, u32, u32),
    /// Block dimensions (threads).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub smem: u32,
    /// Thread-block cluster dimensions (blocks; sm_90+), or `None`.
    pub cluster: Option<(u32, u32, u32)>,
    /// The kernel's parameter struct, every pointer a device address.
    pub params: Params,
    /// Bytes of device memory read and written by one launch, KV-cache rows aside.
    pub bytes: usize,
    /// Bytes read per attended KV-cache row (attention reads `position + 1` rows).
    pub bytes_per_kv_row: usize,
    /// Shape details for reports, e.g. `4096x1024`.
    pub detail: String,
}

/// What a launch runs: one of our kernels, or a cuBLAS GEMM.
#[derive(Clone)]
pub(crate) enum Work {
    Kernel(CudaFunction),
    Gemm(Arc<Cublas>),
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("op", &self.op)
            .field("node", &self.node)
            .field("kernel", &self.kernel)
            .field("grid", &self.grid)
            .field("block", &self.block)
            .field("smem", &self.smem)
            .field("cluster", &self.cluster)
            .field("params", &self.params)
            .finish()
    }
}

impl Launch {
    /// Binds planned launch `p`: compiles its kernel and resolves its symbolic pointers with
    /// `resolve(region, offset)`.
    ///
    /// Errors: compilation or a driver attribute call.
    pub(crate) fn bind(
        dev: &CudaDevice,
        p: &PlannedLaunch,
        resolve: &dyn Fn(Region, usize) -> DevPtr,
    ) -> Result<Launch, CudaError> {
        let work = if p.is_gemm() {
            Work::Gemm(dev.cublas()?)
        } else {
            Work::Kernel(dev.function(&p.kernel, p.smem)?)
        };
        Ok(Launch {
            op: p.op,
            node: p.node.clone(),
            kernel: p.kernel.name.clone(),
            work,
            grid: p.grid,
            block: p.block,
            smem: p.smem,
            cluster: p.cluster,
            params: p.params.bind(resolve),
            bytes: p.bytes,
            bytes_per_kv_row: p.bytes_per_kv_row,
            detail: p.detail.clone(),
        })
    }

    /// A launch outside any plan (the roofline probe, the decode loop's advance step): `params`
    /// must hold device addresses only.
    pub(crate) fn direct(
        dev: &CudaDevice,
        op: &'static str,
        kernel: &KernelRef,
        grid: (u32, u32, u32),
        block: u32,
        params: Params,
        bytes: usize,
    ) -> Result<Launch, CudaError> {
        Ok(Launch {
            op,
            node: "-".into(),
            kernel: kernel.name.clone(),
            work: Work::Kernel(dev.function(kernel, 0)?),
            grid,
            block: (block, 1, 1),
            smem: 0,
            cluster: None,
            params,
            bytes,
            bytes_per_kv_row: 0,
            detail: String::new(),
        })
    }

    /// Bytes this launch moves at decode position `position`.
    pub fn bytes_at(&self, position: usize) -> usize {
        self.bytes + self.bytes_per_kv_row * (position + 1)
    }

    /// Whether this launch is a cuBLAS GEMM (not one of our kernels; it takes no PDL attribute,
    /// and the kernel after it waits for it plainly).
    pub fn is_gemm(&self) -> bool {
        matches!(self.work, Work::Gemm(_))
    }

    /// Enqueues the launch on `stream`. With `pdl`, the launch carries the programmatic stream
    /// serialization attribute: it may start while the previous kernel finishes, and waits for it at
    /// the kernel's `griddepcontrol.wait` (kernels/common.cuh `pdl_wait`). A launch with `cluster`
    /// carries the cluster dimension attribute.
    ///
    /// The caller has bound the device's context to this thread.
    pub(crate) fn enqueue(&self, stream: sys::CUstream, pdl: bool) -> Result<(), CudaError> {
        let func = match &self.work {
            Work::Kernel(f) => f,
            Work::Gemm(cublas) => {
                // cuBLAS runs on the device's one stream, the stream every executor enqueues on.
                let Params::Gemm(g) = &self.params else {
                    return Err(CudaError::Graph(format!(
                        "{} = {}: a cuBLAS launch without GEMM parameters",
                        self.node, self.op
                    )));
                };
                return cublas.gemm(g, &|| {
                    format!(
                        "running the GEMM of {} = {} ({}: m {} x n {} x k {}, bf16 x bf16 -> f32)",
                        self.node, self.op, self.detail, g.m, g.n, g.k
                    )
                });
            }
        };
        let bytes = self.params.bytes();
        // The kernel has one parameter, its struct: one pointer to the struct's bytes.
        let mut params: [*mut c_void; 1] = [bytes.as_ptr() as *mut c_void];
        let mut attrs: Vec<sys::CUlaunchAttribute> = Vec::with_capacity(2);
        if pdl {
            // SAFETY: an all-zero launch attribute is a valid "ignore" value; its fields are set here.
            let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attr.id =
                sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            attrs.push(attr);
        }
        if let Some((x, y, z)) = self.cluster {
            // SAFETY: as above.
            let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            attr.value.clusterDim.x = x;
            attr.value.clusterDim.y = y;
            attr.value.clusterDim.z = z;
            attrs.push(attr);
        }
        let config = sys::CUlaunchConfig {
            gridDimX: self.grid.0,
            gridDimY: self.grid.1,
            gridDimZ: self.grid.2,
            blockDimX: self.block.0,
            blockDimY: self.block.1,
            blockDimZ: self.block.2,
            sharedMemBytes: self.smem,
            hStream: stream,
            attrs: if attrs.is_empty() {
                std::ptr::null_mut()
            } else {
                attrs.as_mut_ptr()
            },
            numAttrs: attrs.len() as u32,
        };
        // SAFETY: `func` is a live kernel handle (its module is kept alive by `CudaFunction`); the
        // kernel's single parameter is the struct whose bytes `params[0]` points to (the same
        // #[repr(C)] layout, checked against kernels/params.cuh in CI), alive for the call (the
        // driver copies arguments at launch); every device pointer in it points into a buffer the
        // executor owns for as long as launches can run.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                func.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .ctx(|| {
            format!(
                "launching kernel `{}` for {} = {} (grid {:?}, block {:?}, cluster {:?}, {} bytes shared memory)",
                self.kernel, self.node, self.op, self.grid, self.block, self.cluster, self.smem
            )
        })
    }
}
