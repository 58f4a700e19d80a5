//! The clipping loop's blocks of [`BLOCK`] points: evaluating a block (residuals,
//! outside-point mask, residual range) and the bounds that let a block be skipped.

use super::basis::{horner, ArmBasis};
use super::sums::sum_pairs;
use super::N_COEF;

/// Points per block of the outside-point counts (the update pass skips clean blocks).
/// 32: fewer points evaluated than with 64 (a block is evaluated when any of its
/// points may be outside), 3-5 % faster; 16 was slower (per-block overhead).
pub(super) const BLOCK: usize = 32;
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

/// Smallest and largest of a block's values, by a tree (independent lanes, no long chain).
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

/// The blocks' state between evaluations: per block, the range `lo..=hi` of the
/// residuals at its last evaluation and `slack`, a bound on how far they may have
/// moved since (infinite: the block must be evaluated).
pub(super) struct BlockRanges<'a> {
    pub(super) lo: &'a [f64],
    pub(super) hi: &'a [f64],
    pub(super) slack: &'a mut [f64],
}

/// One step of the clipping loop for [`select_blocks`]: `da[j]` bounds
/// `|a_j - a_prev_j|` (basis coefficients of this fit and the last), `round` the
/// roundoff of evaluating both fits; `lower`/`upper` the bounds and `tol` their
/// tolerance.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) da: [f64; N_COEF],
    pub(super) round: f64,
    pub(super) lower: f64,
    pub(super) upper: f64,
    pub(super) tol: f64,
}

impl Step {
    /// The step from `a_prev` to `a`: `da` with a margin for the roundoff of `|a - a_prev|`.
    pub(super) fn new(a_prev: &[f64; N_COEF], a: &[f64; N_COEF], round: f64, fit: &Fit) -> Self {
        let (lower, upper) = (fit.lower, fit.upper);
        Step {
            da: std::array::from_fn(|j| (a[j] - a_prev[j]).abs() * (1.0 + 1e-12)),
            round,
            lower,
            upper,
            tol: BOUND_TOL * (upper - lower),
        }
    }

    /// Widen block `b`'s `slack` by the step, and whether the block may have a point
    /// outside the bounds (its residuals had the range `lo..=hi`).
    #[inline(always)]
    pub(super) fn widen_and_check(
        &self,
        basis: &ArmBasis,
        b: usize,
        lo: f64,
        hi: f64,
        slack: &mut f64,
    ) -> bool {
        let mut bound = self.round;
        for (dj, qj) in self.da.iter().zip(&basis.qmax) {
            bound += dj * qj[b];
        }
        *slack += bound;
        !(hi + *slack + self.tol < self.upper && lo - *slack - self.tol > self.lower)
    }
}

/// Widen each block's slack by how far its residuals may move in `step` (`fs`
/// unchanged): the fit changes by `sum_j (a_j - a_prev_j) Q[:, j]`, at most
/// `sum_j |a_j - a_prev_j| max|Q[:, j]|` on the block, plus `round` (a block's slack
/// starts, at its evaluation, as the roundoff of that evaluation); then set bit `b`
/// of `todo` for each block `b` that may have a point outside the bounds (the others
/// provably have none). `todo` has a word per 64 blocks.
#[inline(always)]
pub(super) fn select_blocks(step: &Step, basis: &ArmBasis, ranges: BlockRanges, todo: &mut [u64]) {
    let BlockRanges { lo, hi, slack } = ranges;
    todo.fill(0);
    for (b, s) in slack.iter_mut().enumerate() {
        let need = step.widen_and_check(basis, b, lo[b], hi[b], s);
        todo[b / 64] |= u64::from(need) << (b % 64);
    }
}
