//! Data movement: split and concat of row-major tensors along any axis (any element type, so they
//! serve f32 activations, upcast weights and i32 ids alike).

/// Splits `x` (row-major, `shape`) along `axis` into pieces of `sizes` (which sum to `shape[axis]`).
pub(super) fn split<T: Copy>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    sizes: &[usize],
) -> Vec<Vec<T>> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let dim = shape[axis];
    let mut offset = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &s in sizes {
        let mut piece = Vec::with_capacity(outer * s * inner);
        for b in 0..outer {
            let start = (b * dim + offset) * inner;
            piece.extend_from_slice(&x[start..start + s * inner]);
        }
        offset += s;
        outs.push(piece);
    }
    outs
}

/// Concatenates `parts` (row-major, with shapes `shapes`, equal outside `axis`) along `axis`.
pub(super) fn concat<T: Copy>(parts: &[&[T]], shapes: &[&[usize]], axis: usize) -> Vec<T> {
    let Some(first) = shapes.first() else {
        return Vec::new();
    };
    let outer: usize = first[..axis].iter().product();
    let inner: usize = first[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for b in 0..outer {
        for (p, shape) in parts.iter().zip(shapes) {
            let len = shape[axis] * inner;
            out.extend_from_slice(&p[b * len..(b + 1) * len]);
        }
    }
    out
}
