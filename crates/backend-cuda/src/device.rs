//! The device: a CUDA context and stream on one GPU, its properties, raw device/pinned buffers, and
//! the kernels compiled for it (loaded lazily, one NVRTC program per kernel source and variant).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::compile::{kernel_source, Compiler};
use crate::error::{CudaError, DriverContext};
use crate::facts::{DeviceFacts, KernelRef, Occupancy, Target};
use crate::params::GemmParams;

/// A device pointer (`CUdeviceptr`).
pub type DevPtr = u64;

/// One GPU opened for braid: a CUDA context, one stream that all work of this device runs on, and the
/// kernels compiled for the device's architecture. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct CudaDevice {
    pub(crate) inner: Arc<DeviceInner>,
}

pub(crate) struct DeviceInner {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    name: String,
    compute_capability: (i32, i32),
    sm_count: u32,
    compiler: Mutex<Option<Arc<Compiler>>>,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
    /// The cuBLAS handle of this device, created on the first GEMM.
    cublas: Mutex<Option<Arc<Cublas>>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.inner.name)
            .field("arch", &self.arch())
            .field("sm_count", &self.inner.sm_count)
            .finish()
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal` (0 for the first).
    ///
    /// Event tracking of cudarc is switched off for this context before anything is allocated: braid
    /// runs everything on one stream, and per-allocation events would break CUDA graph capture.
    ///
    /// Errors: [`CudaError::NoDevice`] ("no CUDA device: &lt;reason&gt;") when libcuda cannot be loaded,
    /// the driver fails to initialise, or there is no device `ordinal`.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        // SAFETY: only tries to dlopen libcuda; no driver function is called.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDevice(format!(
                "libcuda could not be loaded (searched {:?}); is the NVIDIA driver installed?",
                cudarc::get_lib_name_candidates("cuda")
            )));
        }
        result::init().map_err(|e| CudaError::NoDevice(format!("cuInit failed: {e}")))?;
        let count = CudaContext::device_count()
            .map_err(|e| CudaError::NoDevice(format!("cuDeviceGetCount failed: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice(format!(
                "device {ordinal} asked for, but the driver sees {count} device(s)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            CudaError::NoDevice(format!("creating a context on device {ordinal}: {e}"))
        })?;
        // SAFETY: no CudaSlice exists yet in this context; all work goes to one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| {
            CudaError::NoDevice(format!("creating a stream on device {ordinal}: {e}"))
        })?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".to_string());
        let compute_capability = ctx
            .compute_capability()
            .ctx(|| "reading the compute capability".into())?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .ctx(|| "reading the multiprocessor count".into())? as u32;
        Ok(CudaDevice {
            inner: Arc::new(DeviceInner {
                ctx,
                stream,
                name,
                compute_capability,
                sm_count,
                compiler: Mutex::new(None),
                modules: Mutex::new(HashMap::new()),
                cublas: Mutex::new(None),
            }),
        })
    }

    /// The device's name, e.g. `NVIDIA H200`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The architecture kernels are compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        let (major, minor) = self.inner.compute_capability;
        format!("sm_{major}{minor}")
    }

    /// The compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }

    /// Number of streaming multiprocessors.
    pub fn sm_count(&self) -> u32 {
        self.inner.sm_count
    }

    /// The facts of this device, read from the driver.
    ///
    /// Errors: a driver attribute query fails.
    pub fn facts(&self) -> Result<DeviceFacts, CudaError> {
        use cudarc::driver::sys::CUdevice_attribute as A;
        let a = |attr| self.attribute(attr).map(|v| v.max(0) as u32);
        Ok(DeviceFacts {
            name: self.name().to_string(),
            compute_capability: self.compute_capability(),
            sm_count: self.sm_count(),
            smem_per_block_optin: a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
            smem_per_sm: a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?,
            regs_per_sm: a(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR)?,
            max_threads_per_sm: a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
            max_blocks_per_sm: a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR)?,
        })
    }

    /// This device as a lowering target: its facts, and the driver's occupancy for the kernels as
    /// compiled for it.
    ///
    /// Errors: a driver attribute query fails.
    pub fn target(&self) -> Result<Target<'static>, CudaError> {
        Ok(Target {
            facts: self.facts()?,
            occupancy: Box::new(self.clone()),
        })
    }

    /// A device attribute (`cuDeviceGetAttribute`).
    pub(crate) fn attribute(&self, attr: CUdevice_attribute) -> Result<i32, CudaError> {
        self.inner
            .ctx
            .attribute(attr)
            .ctx(|| format!("reading the device attribute {attr:?}"))
    }

    /// The compiled kernel `k`, allowed to use `smem` bytes of dynamic shared memory: beyond the
    /// default 48 KiB the kernel's limit is raised to the device's opt-in maximum (the attribute is
    /// per kernel, and launches of one kernel may need different amounts: set the maximum once
    /// rather than one launch's need).
    ///
    /// Errors: compilation, or the driver refusing the attribute.
    pub(crate) fn function(&self, k: &KernelRef, smem: u32) -> Result<CudaFunction, CudaError> {
        let func = self.kernel(k.file, &k.name, &k.define_pairs())?;
        if smem > 48 * 1024 {
            let max = self.attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?;
            let mut fixed = 0i32;
            // SAFETY: `func` is a live kernel handle; `fixed` is valid for writes.
            unsafe {
                sys::cuFuncGetAttribute(
                    &mut fixed,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                    func.cu_function(),
                )
            }
            .result()
            .ctx(|| format!("reading the static shared memory of kernel `{k}`"))?;
            let max = max - fixed;
            // SAFETY: `func` is a live kernel handle; the attribute takes a byte count.
            unsafe {
                sys::cuFuncSetAttribute(
                    func.cu_function(),
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    max,
                )
            }
            .result()
            .ctx(|| format!("allowing {max} bytes of shared memory for kernel `{k}`"))?;
        }
        Ok(func)
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize), CudaError> {
        self.inner
            .ctx
            .mem_get_info()
            .ctx(|| "reading free device memory".into())
    }

    /// Makes this device's context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<(), CudaError> {
        self.inner
            .ctx
            .bind_to_thread()
            .ctx(|| "binding the CUDA context to this thread".into())
    }

    /// The raw stream all of this device's work runs on.
    pub(crate) fn cu_stream(&self) -> sys::CUstream {
        self.inner.stream.cu_stream()
    }

    /// Waits for all work on the device's stream; `what` names the work for the error.
    pub(crate) fn sync(&self, what: &str) -> Result<(), CudaError> {
        self.inner
            .stream
            .synchronize()
            .ctx(|| format!("waiting for {what} (a kernel may have faulted)"))
    }

    /// The kernel `name` of `kernels/{file}`, compiled with `defines` (cached per device).
    ///
    /// Errors: NVRTC unavailable or failing ([`CudaError::Compile`]), or the module lacking `name`.
    pub fn kernel(
        &self,
        file: &str,
        name: &str,
        defines: &[(&str, &str)],
    ) -> Result<CudaFunction, CudaError> {
        let key = format!(
            "{file}|{}",
            defines
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let module = {
            let cached = self
                .inner
                .modules
                .lock()
                .map_err(|_| poisoned("kernel module cache"))?
                .get(&key)
                .cloned();
            match cached {
                Some(m) => m,
                None => {
                    let src = kernel_source(file).ok_or_else(|| {
                        CudaError::Graph(format!("no kernel source kernels/{file} is embedded"))
                    })?;
                    let cubin = self.compiler()?.cubin(src, defines)?;
                    self.bind()?;
                    let m = self
                        .inner
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                        .ctx(|| format!("loading the compiled module of kernels/{file}"))?;
                    self.inner
                        .modules
                        .lock()
                        .map_err(|_| poisoned("kernel module cache"))?
                        .insert(key, m.clone());
                    m
                }
            }
        };
        module
            .load_function(name)
            .ctx(|| format!("looking up kernel `{name}` in kernels/{file}"))
    }

    /// The device's cuBLAS handle (created on first use), bound to the device's stream with a
    /// workspace of its own, so GEMMs can be captured in CUDA graphs.
    ///
    /// Errors: [`CudaError::CublasUnavailable`] when libcublas (and the libcublasLt it needs) cannot
    /// be loaded; [`CudaError::Cublas`] when cuBLAS fails to initialise.
    pub(crate) fn cublas(&self) -> Result<Arc<Cublas>, CudaError> {
        let mut slot = self
            .inner
            .cublas
            .lock()
            .map_err(|_| poisoned("cuBLAS handle"))?;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(Cublas::new(self)?);
        *slot = Some(c.clone());
        Ok(c)
    }

    fn compiler(&self) -> Result<Arc<Compiler>, CudaError> {
        let mut slot = self
            .inner
            .compiler
            .lock()
            .map_err(|_| poisoned("kernel compiler"))?;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(Compiler::new(&self.arch(), true)?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Allocates `bytes` of device memory (rounded up to 256, at least 256), zeroed.
    pub(crate) fn alloc_zeroed(&self, bytes: usize, what: &str) -> Result<DevBuf, CudaError> {
        self.bind()?;
        let len = bytes.max(1).div_ceil(256) * 256;
        // SAFETY: plain cuMemAlloc; freed in DevBuf's Drop.
        let ptr = unsafe { result::malloc_sync(len) }
            .ctx(|| format!("allocating {len} bytes of device memory for {what}"))?;
        let buf = DevBuf {
            ptr,
            len,
            ctx: self.inner.ctx.clone(),
        };
        // SAFETY: `ptr` is a live allocation of `len` bytes.
        unsafe { result::memset_d8_async(ptr, 0, len, self.cu_stream()) }
            .ctx(|| format!("zeroing {what}"))?;
        self.sync(&format!("zeroing {what}"))?;
        Ok(buf)
    }

    /// Allocates `bytes` of page-locked host memory (zeroed), for copies captured in a CUDA graph.
    pub(crate) fn alloc_pinned(&self, bytes: usize, what: &str) -> Result<PinnedBuf, CudaError> {
        self.bind()?;
        let len = bytes.max(16);
        // SAFETY: plain cuMemHostAlloc with no flags; freed in PinnedBuf's Drop.
        let ptr = unsafe { result::malloc_host(len, 0) }
            .ctx(|| format!("allocating {len} bytes of pinned host memory for {what}"))?
            as *mut u8;
        // SAFETY: `ptr` points to `len` writable bytes.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedBuf {
            ptr,
            len,
            ctx: self.inner.ctx.clone(),
        })
    }
}

/// The driver's occupancy of the kernel as compiled for this device.
impl Occupancy for CudaDevice {
    fn blocks_per_sm(
        &self,
        kernel: &KernelRef,
        threads: u32,
        dyn_smem: u32,
    ) -> Result<usize, CudaError> {
        let func = self.function(kernel, dyn_smem)?;
        Ok(func
            .occupancy_max_active_blocks_per_multiprocessor(threads, dyn_smem as usize, None)
            .ctx(|| format!("querying the occupancy of kernel `{kernel}`"))?
            .max(1) as usize)
    }
}

/// A cuBLAS handle on one device's stream, with the workspace it runs in (cuBLAS must not allocate
/// while a CUDA graph is being captured). GEMMs are enqueued through [`Cublas::gemm`].
pub(crate) struct Cublas {
    handle: Mutex<CublasHandle>,
    _workspace: DevBuf,
    ctx: Arc<CudaContext>,
}

/// The raw handle. cuBLAS handles may move between threads; the mutex keeps calls one at a time.
struct CublasHandle(cudarc::cublas::sys::cublasHandle_t);

// SAFETY: a cuBLAS handle is not tied to the thread that created it (cuBLAS docs, "Thread
// Safety"); every use goes through the `Mutex` in `Cublas`, so it is never used concurrently.
unsafe impl Send for CublasHandle {}

/// Bytes of the cuBLAS workspace (cuBLAS's own default on Hopper is 32 MiB).
const CUBLAS_WORKSPACE: usize = 32 << 20;

impl Cublas {
    fn new(dev: &CudaDevice) -> Result<Self, CudaError> {
        use cudarc::cublas::{result as cr, sys as cs};
        // SAFETY: only tries to dlopen the library; no cuBLAS function is called.
        if !unsafe { cs::is_culib_present() } {
            return Err(CudaError::CublasUnavailable(format!(
                "libcublas (and the libcublasLt it loads) could not be loaded (searched {:?}); put \
                 the CUDA toolkit's lib64 (e.g. /usr/local/cuda/lib64) on LD_LIBRARY_PATH",
                cudarc::get_lib_name_candidates("cublas")
            )));
        }
        dev.bind()?;
        let fail = |what: &str, e: cr::CublasError| CudaError::Cublas {
            what: what.to_string(),
            status: format!("{e}"),
        };
        let handle = cr::create_handle().map_err(|e| fail("creating a cuBLAS handle", e))?;
        let workspace = dev.alloc_zeroed(CUBLAS_WORKSPACE, "the cuBLAS workspace");
        let set = |workspace: &DevBuf| -> Result<(), CudaError> {
            // SAFETY: `handle` is live; the stream belongs to this device's context and outlives
            // the handle (both are owned by the device); the workspace is a live allocation of
            // `len` bytes kept as long as the handle. cublasSetStream resets the workspace, so
            // the workspace is set after it.
            unsafe {
                cr::set_stream(handle, dev.cu_stream() as cs::cudaStream_t)
                    .map_err(|e| fail("binding cuBLAS to the device's stream", e))?;
                cs::cublasSetWorkspace_v2(
                    handle,
                    workspace.ptr as *mut std::ffi::c_void,
                    workspace.len,
                )
                .result()
                .map_err(|e| fail("giving cuBLAS its workspace", e))
            }
        };
        let ready = workspace.and_then(|w| set(&w).map(|_| w));
        match ready {
            Ok(w) => Ok(Cublas {
                handle: Mutex::new(CublasHandle(handle)),
                _workspace: w,
                ctx: dev.inner.ctx.clone(),
            }),
            Err(e) => {
                // SAFETY: the handle was created above and is destroyed once, here.
                let _ = unsafe { cr::destroy_handle(handle) };
                Err(e)
            }
        }
    }

    /// Enqueues `c [m, n] = b [m, k] · aᵀ + beta · c` ([`GemmParams`], row-major, every pointer a
    /// device address) on the device's stream. Row-major `C = B · Aᵀ` is column-major
    /// `Cᵀ (n x m) = op(A) · Bᵀ` with `A` read transposed: `cublasGemmEx(T, N, n, m, k, A, lda = k,
    /// B, ldb = k, C, ldc = n)`, bf16 operands, f32 output, `CUBLAS_COMPUTE_32F`.
    ///
    /// The caller has bound the device's context to this thread. Errors: [`CudaError::Cublas`]
    /// naming `what` (the node and the GEMM shape).
    pub(crate) fn gemm(&self, p: &GemmParams, what: &dyn Fn() -> String) -> Result<(), CudaError> {
        use cudarc::cublas::sys as cs;
        use std::ffi::c_void;
        let h = self.handle.lock().map_err(|_| poisoned("cuBLAS handle"))?;
        let (alpha, beta) = (1.0f32, p.beta);
        // SAFETY: the handle is live and used by this thread alone (the mutex); `a`, `b` and `c`
        // are device addresses of buffers the caller's executor owns, sized by the plan for
        // `[n, k]` bf16, `[m, k]` bf16 and `[m, n]` f32; alpha and beta are host scalars read
        // during the call (host pointer mode).
        unsafe {
            cs::cublasGemmEx(
                h.0,
                cs::cublasOperation_t::CUBLAS_OP_T,
                cs::cublasOperation_t::CUBLAS_OP_N,
                p.n,
                p.m,
                p.k,
                &alpha as *const f32 as *const c_void,
                p.a.raw() as *const c_void,
                cs::cudaDataType::CUDA_R_16BF,
                p.k,
                p.b.raw() as *const c_void,
                cs::cudaDataType::CUDA_R_16BF,
                p.k,
                &beta as *const f32 as *const c_void,
                p.c.raw() as *mut c_void,
                cs::cudaDataType::CUDA_R_32F,
                p.n,
                cs::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cs::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .result()
        .map_err(|e| CudaError::Cublas {
            what: what(),
            status: format!("{e}"),
        })
    }
}

impl Drop for Cublas {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        if let Ok(h) = self.handle.lock() {
            // SAFETY: the handle was created by `Cublas::new` and is destroyed once, here.
            let _ = unsafe { cudarc::cublas::result::destroy_handle(h.0) };
        }
    }
}

fn poisoned(what: &str) -> CudaError {
    CudaError::Graph(format!("the {what} lock was poisoned by a panic"))
}

/// A device allocation (`cuMemAlloc`), freed on drop.
pub(crate) struct DevBuf {
    pub(crate) ptr: DevPtr,
    pub(crate) len: usize,
    ctx: Arc<CudaContext>,
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `ptr` came from cuMemAlloc and is freed once, here.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}

/// Page-locked host memory (`cuMemHostAlloc`), freed on drop.
pub(crate) struct PinnedBuf {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    ctx: Arc<CudaContext>,
}

impl PinnedBuf {
    /// Writes `bytes` at `offset`. The caller makes sure no copy from this buffer is in flight.
    pub(crate) fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.len,
            "pinned write out of bounds"
        );
        // SAFETY: bounds checked above; the buffer is live and not aliased by a Rust reference.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
    }

    /// Reads `n` bytes at `offset`. The caller has synchronised with copies into this buffer.
    pub(crate) fn read(&self, offset: usize, n: usize) -> Vec<u8> {
        assert!(offset + n <= self.len, "pinned read out of bounds");
        let mut out = vec![0u8; n];
        // SAFETY: bounds checked above.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), n) };
        out
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `ptr` came from cuMemHostAlloc and is freed once, here.
        let _ = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}
