//! L2 prefetch (off by default: on an H200 it cost 3-6% of the step, `BENCHMARKS.md`): a GEMV or
//! attention launch can pull a later launch's weights into L2 while it runs (`l2_prefetch_share` in
//! `kernels/common.cuh`).

use crate::plan::PlannedLaunch;

/// Largest weight range one launch prefetches into L2 (the L2 is 50-60 MB on Hopper).
pub const L2_PREFETCH_MAX: usize = 24 << 20;

/// Points launch `j - distance` (or the nearest earlier launch that can prefetch and has no
/// assignment yet) at the weights of every launch `j` that streams constant weights, capped at
/// [`L2_PREFETCH_MAX`] bytes. `distance` 0 turns prefetch off.
pub(super) fn assign(launches: &mut [PlannedLaunch], distance: usize) {
    if distance == 0 {
        return;
    }
    let mut taken = vec![false; launches.len()];
    for j in 0..launches.len() {
        let Some((ptr, bytes)) = launches[j].weight_range else {
            continue;
        };
        let Some(first) = j.checked_sub(distance) else {
            continue;
        };
        let Some(i) = (0..=first)
            .rev()
            .find(|&i| launches[i].can_prefetch && !taken[i])
        else {
            continue;
        };
        if let Some((pf, pf_bytes)) = launches[i].params.prefetch_mut() {
            *pf = ptr;
            *pf_bytes = bytes.min(L2_PREFETCH_MAX) as u64 & !15;
            taken[i] = true;
        }
    }
}
