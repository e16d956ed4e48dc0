//! The roofline probe: how fast this device reads a buffer the size of the model's weights.

use cudarc::driver::sys;

use crate::device::CudaDevice;
use crate::error::{CudaError, DriverContext};
use crate::facts::KernelRef;
use crate::launch::Launch;
use crate::params::{BenchFillParams, BenchReadParams, Params, Ptr};

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
