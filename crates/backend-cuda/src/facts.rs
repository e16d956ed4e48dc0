//! What the lowering needs to know about a device, as plain data: its limits ([`DeviceFacts`]) and
//! how many blocks of a kernel fit on one multiprocessor ([`Occupancy`]). Both come from a live GPU
//! ([`CudaDevice::target`](crate::CudaDevice::target)) or from a record ([`Target::h200`]), so a plan for an H200 can be built and
//! snapshot-tested on a machine without one.

use std::fmt;

use crate::error::CudaError;

/// One kernel as the lowering picks it: its source file in `kernels/`, its name, and the
/// preprocessor defines that select its variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelRef {
    /// File name in `kernels/`, e.g. `gemv.cu`.
    pub file: &'static str,
    /// The `extern "C"` kernel name, e.g. `gemv_direct4_bf16`.
    pub name: String,
    /// `-DNAME=value` defines (empty value: `-DNAME`).
    pub defines: Vec<(&'static str, String)>,
}

impl KernelRef {
    /// A kernel compiled without defines.
    pub fn plain(file: &'static str, name: impl Into<String>) -> KernelRef {
        KernelRef {
            file,
            name: name.into(),
            defines: Vec::new(),
        }
    }

    /// The defines as `(&str, &str)` pairs, as [`CudaDevice::kernel`] takes them.
    pub fn define_pairs(&self) -> Vec<(&str, &str)> {
        self.defines.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

impl fmt::Display for KernelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A device's limits that decide launch shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device's name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Most dynamic + static shared memory one block may opt into, in bytes.
    pub smem_per_block_optin: u32,
    /// Shared memory per multiprocessor, in bytes.
    pub smem_per_sm: u32,
    /// 32-bit registers per multiprocessor.
    pub regs_per_sm: u32,
    /// Resident threads per multiprocessor.
    pub max_threads_per_sm: u32,
    /// Resident blocks per multiprocessor.
    pub max_blocks_per_sm: u32,
}

impl DeviceFacts {
    /// An NVIDIA H200 SXM (the GPU machine of `GPU.md`): sm_90, 132 multiprocessors, 227 KiB of
    /// shared memory per block (opt-in), 228 KiB per multiprocessor, 64 Ki registers, 2,048 threads
    /// and 32 blocks per multiprocessor (CUDA programming guide, compute capability 9.0 table;
    /// read off the device with `cuDeviceGetAttribute`, `GPU.md`).
    pub fn h200() -> DeviceFacts {
        DeviceFacts {
            name: "NVIDIA H200".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            smem_per_block_optin: 227 * 1024,
            smem_per_sm: 228 * 1024,
            regs_per_sm: 65536,
            max_threads_per_sm: 2048,
            max_blocks_per_sm: 32,
        }
    }

    /// The architecture name, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

/// How many blocks of a kernel are resident on one multiprocessor at once.
pub trait Occupancy {
    /// Resident blocks of `kernel` with `threads` threads and `dyn_smem` bytes of dynamic shared
    /// memory per block (at least 1 when the kernel can run at all).
    ///
    /// Errors: the kernel cannot be compiled or is unknown to a recorded table.
    fn blocks_per_sm(
        &self,
        kernel: &KernelRef,
        threads: u32,
        dyn_smem: u32,
    ) -> Result<usize, CudaError>;
}

/// What ptxas reports for one kernel: registers per thread and static shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's name.
    pub name: &'static str,
    /// 32-bit registers per thread.
    pub registers: u32,
    /// Static shared memory per block, in bytes.
    pub static_smem: u32,
}

/// Registers and static shared memory of the kernels whose occupancy sizes launches (the GEMVs), as
/// NVRTC 13.0 compiles them for sm_90 (`ptxas -v`). CI checks this table against the kernels as
/// they compile now (`tests/nvrtc_compile.rs`), so it cannot go stale.
pub const SM90_KERNELS: &[KernelResources] = &[
    KernelResources {
        name: "gemv_bf16",
        registers: 80,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_argmax_bf16",
        registers: 64,
        static_smem: 272,
    },
    KernelResources {
        name: "gemv_scalar_bf16",
        registers: 32,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_direct4_bf16",
        registers: 64,
        static_smem: 64,
    },
    KernelResources {
        name: "gemv_direct2_bf16",
        registers: 80,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_direct2_glu_bf16",
        registers: 80,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_f16",
        registers: 80,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_argmax_f16",
        registers: 64,
        static_smem: 272,
    },
    KernelResources {
        name: "gemv_scalar_f16",
        registers: 32,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_direct4_f16",
        registers: 64,
        static_smem: 64,
    },
    KernelResources {
        name: "gemv_direct2_f16",
        registers: 80,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_direct2_glu_f16",
        registers: 80,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_f32",
        registers: 64,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_argmax_f32",
        registers: 80,
        static_smem: 272,
    },
    KernelResources {
        name: "gemv_scalar_f32",
        registers: 32,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_direct4_f32",
        registers: 62,
        static_smem: 64,
    },
    KernelResources {
        name: "gemv_direct2_f32",
        registers: 78,
        static_smem: 0,
    },
    KernelResources {
        name: "gemv_direct2_glu_f32",
        registers: 76,
        static_smem: 0,
    },
];

/// Resident blocks per multiprocessor of a kernel with `registers` per thread and `static_smem`
/// bytes, launched with `threads` threads and `dyn_smem` bytes of dynamic shared memory: the
/// smallest of the thread, block, register and shared-memory limits (CUDA occupancy calculator:
/// registers are allocated per warp in units of 256; each block reserves 1 KiB of shared memory on
/// sm_80 and later).
pub fn occupancy_of(
    facts: &DeviceFacts,
    registers: u32,
    static_smem: u32,
    threads: u32,
    dyn_smem: u32,
) -> usize {
    let warps = threads.div_ceil(32).max(1);
    let by_threads = facts.max_threads_per_sm / (warps * 32);
    let regs_per_warp = (registers.max(1) * 32).div_ceil(256) * 256;
    let by_regs = (facts.regs_per_sm / regs_per_warp) / warps;
    let smem = static_smem
        + dyn_smem
        + if facts.compute_capability.0 >= 8 {
            1024
        } else {
            0
        };
    let by_smem = facts.smem_per_sm.checked_div(smem).unwrap_or(u32::MAX);
    by_threads
        .min(by_regs)
        .min(by_smem)
        .min(facts.max_blocks_per_sm) as usize
}

/// Occupancy from a recorded table of kernel resources ([`SM90_KERNELS`]) and the device's facts.
pub struct RecordedOccupancy {
    facts: DeviceFacts,
    kernels: &'static [KernelResources],
}

impl Occupancy for RecordedOccupancy {
    fn blocks_per_sm(
        &self,
        kernel: &KernelRef,
        threads: u32,
        dyn_smem: u32,
    ) -> Result<usize, CudaError> {
        let k = self
            .kernels
            .iter()
            .find(|k| k.name == kernel.name)
            .ok_or_else(|| {
                CudaError::Graph(format!(
                    "no recorded resources for kernel `{}` on {} (plan on the GPU itself, or add it to \
                     facts::SM90_KERNELS)",
                    kernel.name, self.facts.name
                ))
            })?;
        Ok(occupancy_of(
            &self.facts,
            k.registers,
            k.static_smem,
            threads,
            dyn_smem,
        ))
    }
}

/// Where a plan will run: the device's facts and its occupancy oracle.
pub struct Target<'a> {
    pub facts: DeviceFacts,
    pub occupancy: Box<dyn Occupancy + 'a>,
}

impl Target<'static> {
    /// A recorded NVIDIA H200 (no GPU needed): [`DeviceFacts::h200`] and [`SM90_KERNELS`].
    pub fn h200() -> Target<'static> {
        let facts = DeviceFacts::h200();
        Target {
            occupancy: Box::new(RecordedOccupancy {
                facts: facts.clone(),
                kernels: SM90_KERNELS,
            }),
            facts,
        }
    }

    /// A recorded target by name (`h200`), for `braid plan --device-facts`.
    pub fn recorded(name: &str) -> Option<Target<'static>> {
        match name {
            "h200" => Some(Target::h200()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_follows_registers_threads_and_shared_memory() {
        let h = DeviceFacts::h200();
        // 64 registers x 256 threads: 16 Ki registers per block, 4 blocks.
        assert_eq!(occupancy_of(&h, 64, 64, 256, 4096), 4);
        // 80 registers: 20 Ki per block, 3 blocks.
        assert_eq!(occupancy_of(&h, 80, 0, 256, 0), 3);
        // 32 registers: the thread limit (8 blocks of 256).
        assert_eq!(occupancy_of(&h, 32, 0, 256, 0), 8);
        // 100 KiB of shared memory per block: 2 blocks.
        assert_eq!(occupancy_of(&h, 32, 0, 256, 100 * 1024), 2);
        let t = Target::h200();
        let k = KernelRef::plain("gemv.cu", "gemv_direct2_glu_bf16");
        assert_eq!(t.occupancy.blocks_per_sm(&k, 256, 4096).unwrap(), 3);
        let e = t
            .occupancy
            .blocks_per_sm(&KernelRef::plain("gemv.cu", "nope"), 256, 0)
            .unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
    }
}
