//! `y = x · wᵀ` on the CPU: each output is a contiguous dot product over one row of `w` (`[n, k]`,
//! HF `nn.Linear` layout), so `w` streams through the cache once; large weights are split across
//! threads by output rows.

/// Below this many weight elements (`n * k`) a matmul runs on the calling thread: spawning costs
/// more than it saves.
const PARALLEL_MIN_ELEMS: usize = 1 << 20;

/// `x [rows, k] · w [n, k]ᵀ -> [rows, n]`, f32 accumulation.
pub(super) fn matmul(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * n];
    if k == 0 || n == 0 {
        return out;
    }
    let threads = if n * k >= PARALLEL_MIN_ELEMS {
        std::thread::available_parallelism().map_or(1, |t| t.get())
    } else {
        1
    };
    for (xr, yr) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        gemv(xr, w, k, yr, threads);
    }
    out
}

/// One row: `y[j] = x · w[j, :]` for every row `j` of `w`, over `threads` threads (the calling
/// thread takes the first chunk).
fn gemv(x: &[f32], w: &[f32], k: usize, y: &mut [f32], threads: usize) {
    let chunk = y.len().div_ceil(threads.max(1));
    if threads <= 1 || chunk == 0 {
        gemv_serial(x, w, k, y);
        return;
    }
    std::thread::scope(|s| {
        let mut chunks = y.chunks_mut(chunk).zip(w.chunks(chunk * k));
        let first = chunks.next();
        for (yc, wc) in chunks {
            s.spawn(move || gemv_serial(x, wc, k, yc));
        }
        if let Some((yc, wc)) = first {
            gemv_serial(x, wc, k, yc);
        }
    });
}

fn gemv_serial(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    for (yj, wr) in y.iter_mut().zip(w.chunks_exact(k)) {
        *yj = dot(x, wr);
    }
}

/// `Σ a[i]·b[i]` (equal lengths), with 8 independent f32 partial sums (vectorisable, and
/// less rounding error than one running sum).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
