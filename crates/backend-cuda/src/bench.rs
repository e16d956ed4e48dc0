//! The roofline probes: how fast this device reads a buffer the size of the model's weights, and
//! how fast cuBLAS runs a large bf16 GEMM (the compute floor of a prefill).

use cudarc::driver::sys;

use crate::device::CudaDevice;
use crate::error::{CudaError, DriverContext};
use crate::facts::KernelRef;
use crate::launch::Launch;
use crate::params::{BenchFillParams, BenchReadParams, GemmParams, Params, Ptr};

/// Measures the device's read bandwidth in bytes per second: fills a fresh buffer of `bytes` (rounded
/// up to 16) with a non-zero pattern, then times one read pass with 16-byte loads (kernels/bench.cu,
/// the access a GEMV makes to its weights) with CUDA events: 3 warm-up passes, then the median of 15.
/// Pass the executor's [`crate::CudaExecutor::weight_bytes`] to get the roofline of a decode step:
/// a step cannot take less than `weight_bytes / bandwidth`.
///
/// Errors: allocation of `bytes` fails, or a kernel fails.
pub fn measure_read_bandwidth(dev: &CudaDevice, bytes: usize) -> Result<f64, CudaError> {
    let n16 = bytes.div_ceil(16).max(1);
    let buf = dev.alloc_zeroed(n16 * 16, "the bandwidth probe")?;
    let sink = dev.alloc_zeroed(16, "the bandwidth probe's sink")?;
    let grid = (dev.sm_count() * 8, 1, 1);
    let fill = Launch::direct(
        dev,
        "bench",
        &KernelRef::plain("bench.cu", "bench_fill_u32"),
        grid,
        256,
        Params::BenchFill(BenchFillParams {
            p: Ptr::device(buf.ptr),
            n: (n16 * 4) as u64,
            seed: 0x5eed,
            pad_: 0,
        }),
        n16 * 16,
    )?;
    let read = Launch::direct(
        dev,
        "bench",
        &KernelRef::plain("bench.cu", "bench_read"),
        grid,
        256,
        Params::BenchRead(BenchReadParams {
            p: Ptr::device(buf.ptr),
            sink: Ptr::device(sink.ptr),
            n16: n16 as u64,
        }),
        n16 * 16,
    )?;
    dev.bind()?;
    let stream = dev.cu_stream();
    fill.enqueue(stream, false)?;
    let ctx = dev.inner.ctx.clone();
    let ev = |_| ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT));
    let (start, end) = (
        ev(0).ctx(|| "creating an event".into())?,
        ev(1).ctx(|| "creating an event".into())?,
    );
    let mut times = Vec::new();
    for i in 0..18 {
        start
            .record(&dev.inner.stream)
            .ctx(|| "recording an event".into())?;
        read.enqueue(stream, false)?;
        end.record(&dev.inner.stream)
            .ctx(|| "recording an event".into())?;
        dev.sync("the bandwidth probe")?;
        let ms = start
            .elapsed_ms(&end)
            .ctx(|| "reading the probe time".into())? as f64;
        if i >= 3 {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok((n16 * 16) as f64 / (median * 1e-3))
}

/// Measures cuBLAS's bf16 GEMM rate on this device in floating-point operations per second: an
/// `m x n x k` GEMM (`c [m, n] f32 = b [m, k] · a [n, k]ᵀ`, bf16 operands filled with values in
/// [-1, 1), f32 accumulation: the prefill GEMMs' own configuration, [`crate::lower::gemm`]),
/// timed with CUDA events: 3 warm-up runs, then the median of 10. With `m = n = k = 8192` this is
/// the compute ceiling a prefill's matmul FLOPs are set against.
///
/// Errors: allocation fails, cuBLAS is missing ([`CudaError::CublasUnavailable`]) or fails.
pub fn measure_gemm_rate(dev: &CudaDevice, m: usize, n: usize, k: usize) -> Result<f64, CudaError> {
    let too_big = |x: usize| i32::try_from(x).is_err();
    if m == 0 || n == 0 || k == 0 || too_big(m * k) || too_big(n * k) || too_big(m * n) {
        return Err(CudaError::BadArgument(format!(
            "a {m}x{n}x{k} GEMM probe: every operand must have 1..2^31 elements"
        )));
    }
    let a = dev.alloc_zeroed(n * k * 2, "the GEMM probe's weights")?;
    let b = dev.alloc_zeroed(m * k * 2, "the GEMM probe's activations")?;
    let c = dev.alloc_zeroed(m * n * 4, "the GEMM probe's output")?;
    let grid = (dev.sm_count() * 8, 1, 1);
    for (buf, len, seed) in [(&a, n * k, 0x5eedu32), (&b, m * k, 0xb0b)] {
        let fill = Launch::direct(
            dev,
            "bench",
            &KernelRef::plain("bench.cu", "bench_fill_bf16"),
            grid,
            256,
            Params::BenchFill(BenchFillParams {
                p: Ptr::device(buf.ptr),
                n: len as u64,
                seed,
                pad_: 0,
            }),
            len * 2,
        )?;
        dev.bind()?;
        fill.enqueue(dev.cu_stream(), false)?;
    }
    let cublas = dev.cublas()?;
    let params = GemmParams {
        a: Ptr::device(a.ptr),
        b: Ptr::device(b.ptr),
        c: Ptr::device(c.ptr),
        m: m as i32,
        n: n as i32,
        k: k as i32,
        beta: 0.0,
    };
    let what = || format!("the GEMM-rate probe ({m}x{n}x{k})");
    let ctx = dev.inner.ctx.clone();
    let ev = || ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT));
    let (start, end) = (
        ev().ctx(|| "creating an event".into())?,
        ev().ctx(|| "creating an event".into())?,
    );
    let mut times = Vec::new();
    for i in 0..13 {
        start
            .record(&dev.inner.stream)
            .ctx(|| "recording an event".into())?;
        cublas.gemm(&params, &what)?;
        end.record(&dev.inner.stream)
            .ctx(|| "recording an event".into())?;
        dev.sync("the GEMM-rate probe")?;
        let ms = start
            .elapsed_ms(&end)
            .ctx(|| "reading the probe time".into())? as f64;
        if i >= 3 {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(params.flops() / (median * 1e-3))
}
