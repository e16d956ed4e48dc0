//! One kernel launch of a decode step, with every argument resolved to a value or a device pointer.
//!
//! The launch list is built once per executor, after all buffers exist, so the same list serves the
//! eager executor (with CUDA events around each launch) and the CUDA graph capture.

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction};

use crate::device::DevPtr;
use crate::error::{CudaError, DriverContext};

/// A kernel argument. Every kind is stored in a 64-bit slot; the driver reads as many bytes as the
/// kernel's parameter has (4 for `int` / `float`, 8 for pointers), little-endian.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KArg {
    /// A device pointer (0 for a null pointer).
    Ptr(DevPtr),
    /// A 32-bit signed integer.
    I32(i32),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit unsigned integer.
    U64(u64),
}

impl KArg {
    fn slot(self) -> u64 {
        match self {
            KArg::Ptr(p) | KArg::U64(p) => p,
            KArg::I32(v) => v as u32 as u64,
            KArg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// One kernel launch: what it computes (the op and the value it defines, for profiles and errors),
/// the kernel, its launch shape and its arguments, and the bytes it moves (for GB/s in profiles).
#[derive(Clone)]
pub struct Launch {
    /// The op's name, e.g. `fused_rms_norm_matmul`.
    pub op: &'static str,
    /// The value the launch computes, as printed (`%12`).
    pub node: String,
    /// The kernel's name, e.g. `gemv_bf16`.
    pub kernel: String,
    pub(crate) func: CudaFunction,
    /// Grid dimensions (blocks).
    pub grid: (u32, u32, u32),
    /// Block dimensions (threads).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub smem: u32,
    /// Thread-block cluster dimensions (blocks; sm_90+), or `None` for independent blocks. The grid
    /// is a whole number of clusters.
    pub cluster: Option<(u32, u32, u32)>,
    /// Arguments in kernel parameter order.
    pub args: Vec<KArg>,
    /// Bytes of device memory read and written by one launch, KV-cache rows aside.
    pub bytes: usize,
    /// Bytes read per attended KV-cache row (attention reads `position + 1` rows).
    pub bytes_per_kv_row: usize,
    /// Index in `args` of the kernel's L2-prefetch pointer (the byte count follows it), for kernels
    /// that can pull a later kernel's weights into L2.
    pub prefetch_arg: Option<usize>,
    /// The constant weight bytes this launch streams (`(pointer, bytes)`), for L2 prefetch planning.
    pub weight_range: Option<(DevPtr, usize)>,
    /// Shape details for reports, e.g. `4096x1024` for a GEMV.
    pub detail: String,
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
            .field("args", &self.args)
            .finish()
    }
}

impl Launch {
    /// Bytes this launch moves at decode position `position`.
    pub fn bytes_at(&self, position: usize) -> usize {
        self.bytes + self.bytes_per_kv_row * (position + 1)
    }

    /// Enqueues the launch on `stream`. With `pdl`, the launch carries the programmatic stream
    /// serialization attribute: it may start while the previous kernel finishes, and waits for it at
    /// the kernel's `griddepcontrol.wait` (kernels/common.cuh `pdl_wait`). A launch with `cluster`
    /// carries the cluster dimension attribute.
    ///
    /// The caller has bound the device's context to this thread.
    pub(crate) fn enqueue(&self, stream: sys::CUstream, pdl: bool) -> Result<(), CudaError> {
        let slots: Vec<u64> = self.args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut c_void> = slots
            .iter()
            .map(|s| s as *const u64 as *mut c_void)
            .collect();
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
        // SAFETY: `func` is a live kernel handle (its module is kept alive by `CudaFunction`);
        // `params` holds one pointer per kernel parameter, each to a slot at least as wide as the
        // parameter, alive for the call (the driver copies arguments at launch); every device pointer
        // argument points into a buffer the executor owns for as long as launches can run.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                self.func.cu_function(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_slots_hold_the_little_endian_value() {
        assert_eq!(KArg::I32(-1).slot(), 0xffff_ffff);
        assert_eq!(KArg::F32(1.0).slot(), 0x3f80_0000);
        assert_eq!(KArg::Ptr(0x7f00_0000_1000).slot(), 0x7f00_0000_1000);
        assert_eq!(KArg::U64(u64::MAX).slot(), u64::MAX);
    }
}
