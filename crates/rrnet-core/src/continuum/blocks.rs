//! The clipping loop's blocks of [`BLOCK`] points: evaluating a block (residuals,
//! outside-point mask, residual range) and the bounds that let a block be skipped.

use super::basis::{horner, ArmBasis};
use super::sums::sum_pairs;
use super::N_COEF;

/// Points per block of the outside-point counts (the update pass skips clean blocks).
pub(super) const BLOCK: usize = 64;
const _: () = assert!(
    BLOCK <= 64 && BLOCK.is_multiple_of(4),
    "block masks are u64, lanes of 4"
);

/// Relative tolerance of the block bounds: far above the roundoff of a Horner
/// evaluation of degree 5 (about 1e-15 of `sum |c_j| |x|^j`), far below any margin
/// that matters.
pub(super) const BOUND_TOL: f64 = 1e-12;

/// One iteration's fit: monomial coefficients `c` (ascending powers of `xs`) and the
/// bounds a residual `r = poly(c, xs) - fs` must lie strictly between.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fit {
    pub(super) c: [f64; N_COEF],
    pub(super) lower: f64,
    pub(super) upper: f64,
}

/// Residuals `poly(c, xs) - fs` of one block of the clipping loop into `res`, and
/// their smallest and largest value.
#[inline(always)]
fn block_residuals<const FMA: bool>(
    xs: &[f64],
    fs: &[f64],
    c: &[f64; N_COEF],
    res: &mut [f64; BLOCK],
) -> (f64, f64) {
    let n = xs.len().min(fs.len()).min(BLOCK);
    for ((ri, &x), &f) in res[..n].iter_mut().zip(&xs[..n]).zip(&fs[..n]) {
        *ri = horner::<FMA>(c, x) - f;
    }
    // Smallest and largest residual by a tree (independent lanes, no long chain);
    // a short block is padded with its first residual.
    let first = res[0];
    res[n..].iter_mut().for_each(|r| *r = first);
    range(res)
}

/// Evaluate one block of the clipping loop: the bit mask of its points with NOT
/// (`lower < r < upper`), `r = poly(c, xs) - fs`, and the range of the residuals
/// the block will hold once those points are replaced by the fit (residual 0), so
/// that it need not be evaluated again.
#[inline(always)]
pub(super) fn eval_block<const FMA: bool>(xs: &[f64], fs: &[f64], fit: &Fit) -> (u64, f64, f64) {
    let (lower, upper) = (fit.lower, fit.upper);
    let mut res = [0.0f64; BLOCK];
    let (lo, hi) = block_residuals::<FMA>(xs, fs, &fit.c, &mut res);
    if lo > lower && hi < upper {
        (0, lo, hi)
    } else {
        clip_block(&res, xs.len().min(fs.len()), lower, upper)
    }
}

/// Smallest and largest of 64 values, by a tree (independent lanes, no long chain).
#[inline(always)]
fn range(values: &[f64; BLOCK]) -> (f64, f64) {
    let (mut lo, mut hi) = (*values, *values);
    let mut w = BLOCK / 2;
    while w > 0 {
        for i in 0..w {
            lo[i] = if lo[i + w] < lo[i] { lo[i + w] } else { lo[i] };
            hi[i] = if hi[i + w] > hi[i] { hi[i + w] } else { hi[i] };
        }
        w /= 2;
    }
    (lo[0], hi[0])
}

/// Points of a block with NOT (`lower < r < upper`), bit `i` for point `i`, and the
/// range of the residuals once those points are replaced by the fit (residual 0).
#[inline(always)]
fn clip_block(res: &[f64; BLOCK], n: usize, lower: f64, upper: f64) -> (u64, f64, f64) {
    let mut mask = 0u64;
    let mut kept = [0.0f64; BLOCK];
    for (i, (&r, k)) in res.iter().zip(kept.iter_mut()).enumerate() {
        let outside = !(r > lower && r < upper) && i < n;
        mask |= u64::from(outside) << i;
        *k = if outside { 0.0 } else { r };
    }
    let (lo, hi) = range(&kept);
    (mask, lo, hi)
}

/// Population std of the residuals `poly(c, xs) - fs` (two passes).
#[inline(always)]
pub(super) fn residual_std<const FMA: bool>(xs: &[f64], fs: &[f64], c: &[f64; N_COEF]) -> f64 {
    let n = xs.len().min(fs.len()) as f64;
    let r = |x: f64, f: f64| horner::<FMA>(c, x) - f;
    let mean = sum_pairs(xs, fs, r) / n;
    (sum_pairs(xs, fs, |x, f| (r(x, f) - mean) * (r(x, f) - mean)) / n).sqrt()
}

/// Add to each block's slack how far its residuals may move when the basis
/// coefficients go from `a_prev` to `a` (fs unchanged): the fit changes by
/// `sum_j (a_j - a_prev_j) Q[:, j]`, at most `sum_j |a_j - a_prev_j| max|Q[:, j]|` on
/// the block; plus `round`, the roundoff of evaluating both fits (Horner's rule on
/// `R^-1 a`, and `p - fs`, with a wide margin). A block's slack starts, at its
/// evaluation, as the roundoff of that evaluation.
#[inline(always)]
pub(super) fn widen_slack(
    a_prev: &[f64; N_COEF],
    a: &[f64; N_COEF],
    round: f64,
    basis: &ArmBasis,
    slack: &mut [f64],
) {
    let da: [f64; N_COEF] = std::array::from_fn(|j| (a[j] - a_prev[j]).abs() * (1.0 + 1e-12));
    let q = &basis.qmax;
    let n = slack.len();
    let qs = q.each_ref().map(|qj| &qj[..n]);
    for (b, s) in slack.iter_mut().enumerate() {
        let mut bound = round;
        for j in 0..N_COEF {
            bound += da[j] * qs[j][b];
        }
        *s += bound;
    }
}
