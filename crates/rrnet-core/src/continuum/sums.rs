//! Vectorisable sums over pairs of slices: dot products, means and standard
//! deviations (four interleaved accumulators).

/// Dot product of two slices.
#[inline(always)]
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    sum_pairs(a, b, |x, y| x * y)
}

/// `sum(term(a[i], b[i]))` with four interleaved accumulators over fixed-size
/// chunks, so that the compiler vectorises it.
#[inline(always)]
pub(super) fn sum_pairs(a: &[f64], b: &[f64], term: impl Fn(f64, f64) -> f64) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += term(x[l], y[l]);
        }
    }
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += term(x, y);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// Mean and population standard deviation (two passes, like numpy).
#[inline(always)]
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = sum_pairs(x, x, |v, _| v) / n;
    let var = sum_pairs(x, x, |v, _| (v - mean) * (v - mean)) / n;
    (mean, var.sqrt())
}
