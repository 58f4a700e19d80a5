//! Continuum normalisation of one arm, exactly as SPEC 2.3 (the original RRNet code).
//!
//! 1. Median test: `m = medfilt(f, 3)` (zero padding), `d = m - f`, `s = std(d)`;
//!    pixels with NOT (`d < 3 s` and `d > -4 s`) get `f = m` in place.
//! 2. `fs = (f - mean f) / std f`, `xs` = standardised `log10(grid)`.
//! 3. Repeat: least-squares degree-5 fit `p` of `fs` on `xs`, `r = p - fs`,
//!    `g = std(r)`; points with NOT (`r > -4 g` and `r < 3 g`) get `fs = p`;
//!    until none is outside or `max_iter` fits were made.
//! 4. Output `f / (p * std f + mean f)`.
//!
//! Speed (docs/preprocessing.md, "How the Rust fit is fast"): the grid is fixed, so
//! an orthonormal basis `Q` (n x 6, `V = Q R` for the Vandermonde matrix `V` of
//! `xs`) is computed once per arm; the fit is `p = Q a`. The loop works on
//! `fs = f - shift` instead of the standardised flux (the same decisions; the
//! continuum is `p + shift`), `a = R^-T V^T fs` comes from moments accumulated in
//! the median test's pass, clipping updates `a` incrementally (`a += Q[k, :] *
//! (p_k - fs_k)`), and blocks of 64 points that provably have no point outside
//! the bounds are skipped. Means and standard deviations are one-pass (shifted)
//! sums. On x86-64 with AVX2 and FMA the passes and the block evaluation use AVX2
//! vectors and fused multiply-adds; elsewhere the portable code runs. Results agree
//! with the NumPy reference to roundoff; only a threshold tie can flip a decision,
//! and the reference reports its margins so that tests can see ties.

use std::sync::OnceLock;

use crate::error::KernelError;
use crate::grid::Arm;
use crate::outliers::{is_bad_pixel, OutlierStats, RunCounter};

/// Coefficients of a degree-5 polynomial.
pub const N_COEF: usize = 6;
/// Default cap on the number of fits in the clipping loop.
pub const DEFAULT_MAX_ITER: u32 = 100;
const MEDIAN_UPPER_SIGMA: f64 = 3.0;
const MEDIAN_LOWER_SIGMA: f64 = 4.0;
const FIT_UPPER_SIGMA: f64 = 3.0;
const FIT_LOWER_SIGMA: f64 = 4.0;

/// What the degree-5 fit on one arm's fixed grid needs, computed once per grid.
#[derive(Debug, Clone)]
pub struct ArmBasis {
    /// Standardised `log10(grid)`.
    xs: Vec<f64>,
    /// Orthonormal columns (modified Gram-Schmidt of `xs^0 .. xs^5`): `V = Q R`.
    q: [Vec<f64>; N_COEF],
    /// `R^-1`: monomial coefficients `c = R^-1 a` from basis coefficients `a`.
    r_inv: [[f64; N_COEF]; N_COEF],
    /// Upper bounds of `|xs|^j` over the grid.
    xpow_max: [f64; N_COEF],
    /// `qmax[j][b]`: upper bound of `|Q[k, j]|` over the points `k` of block `b`.
    qmax: [Vec<f64>; N_COEF],
}

impl ArmBasis {
    /// Basis for `x = log10(grid)` standardised to zero mean and unit (population) std.
    pub fn new(grid: &[f64]) -> Result<Self, KernelError> {
        if grid.len() < N_COEF {
            return Err(KernelError::TooFewPoints {
                got: grid.len(),
                need: N_COEF,
            });
        }
        let x: Vec<f64> = grid.iter().map(|g| g.log10()).collect();
        let (mean, std) = mean_std(&x);
        if !(std > 0.0 && std.is_finite()) {
            return Err(KernelError::InvalidArgument(
                "grid must hold distinct finite positive wavelengths".into(),
            ));
        }
        let xs: Vec<f64> = x.iter().map(|v| (v - mean) / std).collect();
        let mut q: [Vec<f64>; N_COEF] = Default::default();
        let mut r = [[0.0f64; N_COEF]; N_COEF];
        for j in 0..N_COEF {
            let mut v: Vec<f64> = xs.iter().map(|x| x.powi(j as i32)).collect();
            // Modified Gram-Schmidt, twice for orthogonality to roundoff.
            for _ in 0..2 {
                for (k, qk) in q[..j].iter().enumerate() {
                    let proj = dot(qk, &v);
                    r[k][j] += proj;
                    v.iter_mut().zip(qk).for_each(|(vi, qi)| *vi -= proj * qi);
                }
            }
            let norm = dot(&v, &v).sqrt();
            r[j][j] = norm;
            v.iter_mut().for_each(|vi| *vi /= norm);
            q[j] = v;
        }
        // Upper bounds of |xs|^j, with room for the roundoff of powi.
        let xpow_max = std::array::from_fn(|j| {
            let m = xs.iter().fold(0.0f64, |m, x| m.max(x.abs().powi(j as i32)));
            m * (1.0 + 1e-12)
        });
        // Q and R^-1 agree with each other to roundoff (~1e-15): the margin covers it.
        let qmax = q.clone().map(|qj| {
            qj.chunks(BLOCK)
                .map(|qb| qb.iter().fold(0.0f64, |m, v| m.max(v.abs())) * (1.0 + 1e-9) + 1e-12)
                .collect()
        });
        Ok(ArmBasis {
            xs,
            q,
            r_inv: invert_upper(&r),
            xpow_max,
            qmax,
        })
    }

    /// The precomputed basis of one arm's fixed grid.
    pub fn for_arm(arm: Arm) -> &'static ArmBasis {
        static BASES: OnceLock<[ArmBasis; 2]> = OnceLock::new();
        let bases = BASES.get_or_init(|| {
            Arm::BOTH.map(|a| ArmBasis::new(a.grid()).expect("the fixed grids are valid"))
        });
        &bases[arm as usize]
    }

    /// Pixels of the grid.
    pub fn len(&self) -> usize {
        self.xs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }

    /// Bound on `sum_j |c_j| max|xs|^j` for `c = R^-1 a` however the products in
    /// [`Self::monomial`] cancel: the scale of the roundoff of evaluating the fit.
    #[inline(always)]
    fn size(&self, a: &[f64; N_COEF]) -> f64 {
        let mut size = 0.0;
        for (r_row, xp) in self.r_inv.iter().zip(&self.xpow_max) {
            size += xp * r_row.iter().zip(a).map(|(r, a)| (r * a).abs()).sum::<f64>();
        }
        size
    }

    /// Monomial coefficients (ascending powers of `xs`) of the fit `Q a`.
    #[inline(always)]
    fn monomial(&self, a: &[f64; N_COEF]) -> [f64; N_COEF] {
        std::array::from_fn(|i| (i..N_COEF).map(|j| self.r_inv[i][j] * a[j]).sum())
    }

    /// Row `k` of `Q`.
    fn row(&self, k: usize) -> [f64; N_COEF] {
        std::array::from_fn(|j| self.q[j][k])
    }
}

/// Inverse of an upper-triangular matrix with non-zero diagonal (back substitution).
#[allow(clippy::needless_range_loop)] // index form mirrors the textbook formula
fn invert_upper(r: &[[f64; N_COEF]; N_COEF]) -> [[f64; N_COEF]; N_COEF] {
    let mut inv = [[0.0f64; N_COEF]; N_COEF];
    for col in 0..N_COEF {
        for i in (0..=col).rev() {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let s: f64 = (i + 1..=col).map(|k| r[i][k] * inv[k][col]).sum();
            inv[i][col] = (rhs - s) / r[i][i];
        }
    }
    inv
}

/// Points per block of the outside-point counts (the update pass skips clean blocks).
const BLOCK: usize = 64;
const _: () = assert!(
    BLOCK <= 64 && BLOCK.is_multiple_of(4),
    "block masks are u64, lanes of 4"
);

/// `p = poly(c, x)` by Horner's rule: the single expression every fit value uses
/// (with fused multiply-adds where the CPU has them, `FMA`).
#[inline(always)]
fn horner<const FMA: bool>(c: &[f64; N_COEF], x: f64) -> f64 {
    if FMA {
        let p = c[5].mul_add(x, c[4]).mul_add(x, c[3]).mul_add(x, c[2]);
        p.mul_add(x, c[1]).mul_add(x, c[0])
    } else {
        ((((c[5] * x + c[4]) * x + c[3]) * x + c[2]) * x + c[1]) * x + c[0]
    }
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
fn eval_block<const FMA: bool>(
    xs: &[f64],
    fs: &[f64],
    c: &[f64; N_COEF],
    lower: f64,
    upper: f64,
) -> (u64, f64, f64) {
    let mut res = [0.0f64; BLOCK];
    let (lo, hi) = block_residuals::<FMA>(xs, fs, c, &mut res);
    if lo > lower && hi < upper {
        (0, lo, hi)
    } else {
        clip_block(&res, xs.len().min(fs.len()), lower, upper)
    }
}

/// [`eval_block`] with AVX2 vectors: Horner's rule with fused multiply-adds (as
/// `horner::<true>`), masks by movemask, the range in vector accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn eval_block_avx2(
    xs: &[f64],
    fs: &[f64],
    c: &[f64; N_COEF],
    lower: f64,
    upper: f64,
) -> (u64, f64, f64) {
    use std::arch::x86_64::*;
    let n = xs.len().min(fs.len()).min(BLOCK);
    if !n.is_multiple_of(4) {
        return eval_block::<true>(xs, fs, c, lower, upper);
    }
    let cv = c.map(|cj| _mm256_set1_pd(cj));
    let (lo_b, up_b) = (_mm256_set1_pd(lower), _mm256_set1_pd(upper));
    let mut lo = _mm256_set1_pd(f64::INFINITY);
    let mut hi = _mm256_set1_pd(f64::NEG_INFINITY);
    let mut mask = 0u64;
    for i in (0..n).step_by(4) {
        // SAFETY: i + 4 <= n <= the length of both slices.
        let (x, f) = unsafe {
            (
                _mm256_loadu_pd(xs.as_ptr().add(i)),
                _mm256_loadu_pd(fs.as_ptr().add(i)),
            )
        };
        let mut p = _mm256_fmadd_pd(cv[5], x, cv[4]);
        p = _mm256_fmadd_pd(p, x, cv[3]);
        p = _mm256_fmadd_pd(p, x, cv[2]);
        p = _mm256_fmadd_pd(p, x, cv[1]);
        p = _mm256_fmadd_pd(p, x, cv[0]);
        let r = _mm256_sub_pd(p, f);
        // NOT (r > lower and r < upper), true for NaN as in the scalar test.
        let outside = _mm256_or_pd(
            _mm256_cmp_pd::<_CMP_NGT_UQ>(r, lo_b),
            _mm256_cmp_pd::<_CMP_NLT_UQ>(r, up_b),
        );
        mask |= (_mm256_movemask_pd(outside) as u64) << i;
        let kept = _mm256_andnot_pd(outside, r); // 0 where the point is replaced
        lo = _mm256_min_pd(lo, kept);
        hi = _mm256_max_pd(hi, kept);
    }
    let (mut l, mut h) = ([0.0f64; 4], [0.0f64; 4]);
    // SAFETY: 4 f64 each.
    unsafe {
        _mm256_storeu_pd(l.as_mut_ptr(), lo);
        _mm256_storeu_pd(h.as_mut_ptr(), hi);
    }
    let range = (
        l[0].min(l[1]).min(l[2].min(l[3])),
        h[0].max(h[1]).max(h[2].max(h[3])),
    );
    (mask, range.0, range.1)
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
fn residual_std<const FMA: bool>(xs: &[f64], fs: &[f64], c: &[f64; N_COEF]) -> f64 {
    let n = xs.len().min(fs.len()) as f64;
    let r = |x: f64, f: f64| horner::<FMA>(c, x) - f;
    let mean = sum_pairs(xs, fs, r) / n;
    (sum_pairs(xs, fs, |x, f| (r(x, f) - mean) * (r(x, f) - mean)) / n).sqrt()
}

/// Relative tolerance of the block bounds: far above the roundoff of a Horner
/// evaluation of degree 5 (about 1e-15 of `sum |c_j| |x|^j`), far below any margin
/// that matters.
const BOUND_TOL: f64 = 1e-12;

/// Working buffers of one arm, reused across spectra (one per thread).
#[derive(Debug, Clone, Default)]
pub struct ArmScratch {
    /// The flux after the median test.
    f: Vec<f64>,
    /// Its 3-point median.
    m: Vec<f64>,
    /// `f - shift`, clipped in place by the fit loop.
    fs: Vec<f64>,
    /// Per block of [`BLOCK`] points: outside-point (or replaced-pixel) mask.
    mask: Vec<u64>,
    /// Per block: smallest and largest residual `p - fs` at its last evaluation.
    r_lo: Vec<f64>,
    r_hi: Vec<f64>,
    /// Per block: bound on how far any residual may have moved since (infinite:
    /// the block must be evaluated).
    slack: Vec<f64>,
}

impl ArmScratch {
    fn resize(&mut self, n: usize) {
        for buf in [&mut self.f, &mut self.m, &mut self.fs] {
            buf.resize(n, 0.0);
        }
        let nb = n.div_ceil(BLOCK);
        self.mask.resize(nb, 0);
        for buf in [&mut self.r_lo, &mut self.r_hi, &mut self.slack] {
            buf.resize(nb, 0.0);
        }
    }
}

/// Diagnostics of one normalised arm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArmReport {
    /// Fits made in the clipping loop.
    pub iterations: u32,
    /// True if the loop stopped at `max_iter` with points still outside.
    pub cap_hit: bool,
    /// Pixels replaced by the median test.
    pub outliers: OutlierStats,
}

/// Normalise one arm's resampled flux into `out` (SPEC 2.3).
///
/// Returns the diagnostics gathered so far even on error (a degenerate arm still
/// reports its outliers); on error `out` is unspecified and the batch layer writes
/// NaN rows. `max_iter` must be at least 1.
pub fn normalize_arm(
    flux: &[f32],
    basis: &ArmBasis,
    max_iter: u32,
    scratch: &mut ArmScratch,
    out: &mut [f32],
) -> (ArmReport, Result<(), KernelError>) {
    let mut report = ArmReport::default();
    let n = basis.len();
    if flux.len() != n || out.len() != n {
        return (
            report,
            Err(KernelError::InvalidArgument(format!(
                "arm flux and output must have {n} pixels, got {} and {}",
                flux.len(),
                out.len()
            ))),
        );
    }
    if max_iter == 0 {
        let err = KernelError::InvalidArgument("max_iter must be >= 1".into());
        return (report, Err(err));
    }
    scratch.resize(n);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        let result =
            unsafe { normalize_arm_avx2(flux, basis, max_iter, scratch, out, &mut report) };
        return (report, result);
    }
    let result = normalize_arm_impl::<false>(flux, basis, max_iter, scratch, out, &mut report);
    (report, result)
}

/// [`normalize_arm_impl`] compiled for AVX2 with fused multiply-adds: wider vectors
/// and one rounding per multiply-add (results differ from the portable build by
/// roundoff only).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn normalize_arm_avx2(
    flux: &[f32],
    basis: &ArmBasis,
    max_iter: u32,
    scratch: &mut ArmScratch,
    out: &mut [f32],
    report: &mut ArmReport,
) -> Result<(), KernelError> {
    normalize_arm_impl::<true>(flux, basis, max_iter, scratch, out, report)
}

/// The algorithm of [`normalize_arm`] on validated lengths (`scratch` sized to `n`).
///
/// The clipping loop evaluates the fit block by block, and skips a block when it
/// can prove that none of its points is outside the bounds: each block keeps the
/// range of its residuals at its last evaluation and a bound on how far they may
/// have moved since (`sum_j |a_j - a'_j| max |Q[:, j]|` per iteration, plus
/// roundoff with a wide margin). The decisions are exactly those of a full pass;
/// `p` is evaluated everywhere once, at the end, with the last coefficients.
#[inline(always)]
fn normalize_arm_impl<const FMA: bool>(
    flux: &[f32],
    basis: &ArmBasis,
    max_iter: u32,
    scratch: &mut ArmScratch,
    out: &mut [f32],
    report: &mut ArmReport,
) -> Result<(), KernelError> {
    let n = basis.len();
    let ArmScratch {
        f,
        m,
        fs,
        mask,
        r_lo,
        r_hi,
        slack,
    } = scratch;
    let first = median_pass::<FMA>(flux, m);
    if first.non_finite {
        return Err(KernelError::NonFiniteFlux);
    }
    // SPEC 2.3.2 standardises f before the fit. The fit is linear and the clipping
    // decisions compare residuals with multiples of their own std, so both are the
    // same on `f - shift` without the division: the loop works on fs = f - shift
    // (shift = the input's mean, against cancellation) and the continuum is
    // `p + shift`. The median test's pass also yields a = Q^T fs and |fs|^2.
    let shift = first.f_mean;
    let replaced = median_replace::<FMA>(flux, m, basis, shift, first.d_std, f, fs);
    report.outliers = replaced.outliers;
    if !is_spread(replaced.mean, replaced.std) {
        return Err(KernelError::DegenerateArm);
    }
    let (mut a, mut fs_sq) = (replaced.a, replaced.fs_sq);

    // The residual r = p - fs of a least-squares fit with an intercept has mean 0
    // and is orthogonal to p, so std(r)^2 = (|fs|^2 - |a|^2) / n: O(1) per iteration
    // once |fs|^2 is tracked. Where that difference loses too many digits to
    // cancellation (near-exact fits) std(r) is computed directly.
    let xs = &basis.xs[..];
    let n_f = n as f64;
    slack.fill(f64::INFINITY);
    let (mut c, mut a_prev, mut size_prev) = ([0.0f64; N_COEF], a, 0.0);
    for iteration in 1..=max_iter {
        report.iterations = iteration;
        let a_sq: f64 = a.iter().map(|v| v * v).sum();
        let g = if fs_sq - a_sq > 1e-6 * fs_sq {
            ((fs_sq - a_sq) / n_f).sqrt()
        } else {
            f64::NAN // computed below from the residuals
        };
        c = basis.monomial(&a);
        let size = basis.size(&a);
        if iteration > 1 {
            widen_slack(&a_prev, &a, BOUND_TOL * (size + size_prev), basis, slack);
        }
        (a_prev, size_prev) = (a, size);
        let g = if g.is_nan() {
            residual_std::<FMA>(xs, fs, &c) // near-exact fit: directly
        } else {
            g
        };
        if !(g > 0.0) {
            break; // exact fit: no point can be outside
        }
        let (lower, upper) = (-FIT_LOWER_SIGMA * g, FIT_UPPER_SIGMA * g);
        let tol = BOUND_TOL * (upper - lower);
        let mut total = 0;
        for (b, (xb, fb)) in xs.chunks(BLOCK).zip(fs.chunks(BLOCK)).enumerate() {
            if r_hi[b] + slack[b] + tol < upper && r_lo[b] - slack[b] - tol > lower {
                mask[b] = 0; // provably no point outside
                continue;
            }
            let (lo, hi);
            (mask[b], lo, hi) = if FMA {
                // SAFETY: FMA = true only in the AVX2+FMA build, on a CPU that has both.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    eval_block_avx2(xb, fb, &c, lower, upper)
                }
                #[cfg(not(target_arch = "x86_64"))]
                eval_block::<FMA>(xb, fb, &c, lower, upper)
            } else {
                eval_block::<FMA>(xb, fb, &c, lower, upper)
            };
            (r_lo[b], r_hi[b]) = (lo, hi);
            slack[b] = BOUND_TOL * (size + lo.abs().max(hi.abs()));
            total += mask[b].count_ones();
        }
        if total == 0 {
            break;
        }
        if iteration == max_iter {
            report.cap_hit = true;
            break;
        }
        for (b, &block_mask) in mask.iter().enumerate() {
            if block_mask == 0 {
                continue;
            }
            let mut bits = block_mask;
            while bits != 0 {
                let k = b * BLOCK + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // Outside (the mask's own arithmetic): fs = p there.
                let pk = horner::<FMA>(&c, xs[k]);
                let delta = pk - fs[k];
                fs_sq += pk * pk - fs[k] * fs[k];
                fs[k] = pk;
                a.iter_mut()
                    .zip(basis.row(k))
                    .for_each(|(aj, qj)| *aj += qj * delta);
            }
        }
    }

    // Output with the fit of the last iteration: p = poly(c, xs) everywhere.
    let mut mins = [f64::INFINITY; 4];
    let continuum = |x: f64| horner::<FMA>(&c, x) + shift;
    // (array::from_fn is not always inlined here: plain lane loops instead)
    let mut oc = out.chunks_exact_mut(4);
    let (mut fc, mut xc) = (f.chunks_exact(4), xs.chunks_exact(4));
    for ((o, fv), x) in (&mut oc).zip(&mut fc).zip(&mut xc) {
        let mut cont = [0.0f64; 4];
        for l in 0..4 {
            cont[l] = continuum(x[l]);
        }
        for l in 0..4 {
            mins[l] = if cont[l] < mins[l] { cont[l] } else { mins[l] };
            o[l] = (fv[l] / cont[l]) as f32;
        }
    }
    let rest = oc
        .into_remainder()
        .iter_mut()
        .zip(fc.remainder())
        .zip(xc.remainder());
    for (l, ((o, &fv), &x)) in rest.enumerate() {
        let cont = continuum(x);
        mins[l] = if cont < mins[l] { cont } else { mins[l] };
        *o = (fv / cont) as f32;
    }
    let min_continuum = mins[0].min(mins[1]).min(mins[2].min(mins[3]));
    if !(min_continuum > 0.0) {
        return Err(KernelError::NonPositiveContinuum);
    }
    Ok(())
}

/// Add to each block's slack how far its residuals may move when the basis
/// coefficients go from `a_prev` to `a` (fs unchanged): the fit changes by
/// `sum_j (a_j - a_prev_j) Q[:, j]`, at most `sum_j |a_j - a_prev_j| max|Q[:, j]|` on
/// the block; plus `round`, the roundoff of evaluating both fits (Horner's rule on
/// `R^-1 a`, and `p - fs`, with a wide margin). A block's slack starts, at its
/// evaluation, as the roundoff of that evaluation.
#[inline(always)]
fn widen_slack(
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

/// Whether an arm's (median-replaced) flux varies: a standard deviation that is
/// zero, or below 1e-10 of the mean (roundoff of a constant; any real variation of
/// float32 data is far larger), leaves nothing to fit.
#[inline(always)]
pub fn is_spread(mean: f64, std: f64) -> bool {
    std > 1e-10 * mean.abs() && std > 0.0 && std.is_finite()
}

/// What the first pass over an arm learns.
struct FirstPass {
    non_finite: bool,
    /// Mean of the input flux (the shift of the later one-pass sums).
    f_mean: f64,
    /// Population std of `d = m - f`.
    d_std: f64,
}

/// First pass: `m = medfilt(flux, 3)` (zero padding; the median of float32 values
/// is one of them, so it is taken before widening), whether any value is not
/// finite, and the sums for the mean of the flux and the std of `d = m - f`.
#[inline(always)]
fn median_pass<const FMA: bool>(flux: &[f32], m: &mut [f64]) -> FirstPass {
    let n = flux.len().min(m.len());
    assert!(n >= 2, "arms have at least N_COEF pixels");
    let (flux, m) = (&flux[..n], &mut m[..n]);
    let mut sums = [[0.0f64; 4]; 3];
    let mut bad = is_non_finite(flux[0]) | is_non_finite(flux[n - 1]);
    m[0] = f64::from(median3_f32(0.0, flux[0], flux[1]));
    m[n - 1] = f64::from(median3_f32(flux[n - 2], flux[n - 1], 0.0));
    add_median_sums(&mut sums, 0, f64::from(flux[0]), m[0]);
    add_median_sums(&mut sums, 1, f64::from(flux[n - 1]), m[n - 1]);
    // Interior points 1..n-1; the AVX2 build takes them 8 at a time first.
    #[cfg(target_arch = "x86_64")]
    let start = if FMA {
        // SAFETY: FMA = true only in the AVX2+FMA build, on a CPU that has both.
        unsafe { median_interior_avx2(flux, m, &mut sums, &mut bad) }
    } else {
        1
    };
    #[cfg(not(target_arch = "x86_64"))]
    let start = 1;
    for i in start..n - 1 {
        bad |= is_non_finite(flux[i]);
        m[i] = f64::from(median3_f32(flux[i - 1], flux[i], flux[i + 1]));
        add_median_sums(&mut sums, i % 4, f64::from(flux[i]), m[i]);
    }
    let [s_f, s_d, s_dd] = sums.map(|s| (s[0] + s[1]) + (s[2] + s[3]));
    let n_f = n as f64;
    let d_mean = s_d / n_f;
    // One pass suffices: |mean d| is not large against std d (medians sit inside the data).
    let d_var = (s_dd / n_f - d_mean * d_mean).max(0.0);
    FirstPass {
        non_finite: bad != 0,
        f_mean: s_f / n_f,
        d_std: d_var.sqrt(),
    }
}

/// Non-finite f32: all exponent bits set (an integer test).
#[inline(always)]
fn is_non_finite(v: f32) -> u32 {
    const EXP: u32 = 0x7f80_0000;
    u32::from(v.to_bits() & EXP == EXP)
}

/// Add a pixel (flux `f`, median `m`) to lane `l` of the sums of `f`, `d`, `d^2`.
#[inline(always)]
fn add_median_sums(sums: &mut [[f64; 4]; 3], l: usize, f: f64, m: f64) {
    let d = m - f;
    sums[0][l] += f;
    sums[1][l] += d;
    sums[2][l] += d * d;
}

/// The interior points `1..1 + 8 k` of [`median_pass`] with AVX2 vectors (the
/// median of 8 float32 at once); returns where the scalar loop goes on.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn median_interior_avx2(
    flux: &[f32],
    m: &mut [f64],
    sums: &mut [[f64; 4]; 3],
    bad: &mut u32,
) -> usize {
    use std::arch::x86_64::*;
    let n = flux.len().min(m.len());
    let end = 1 + n.saturating_sub(2) / 8 * 8; // exclusive; i + 8 < n for every group
    let exp = _mm256_set1_epi32(0x7f80_0000);
    // SAFETY (all loads and stores): for i < end, i - 1 >= 0 and i + 9 <= end + 1 <= n.
    let load = |v: &[f64; 4]| unsafe { _mm256_loadu_pd(v.as_ptr()) };
    let mut acc = sums.each_ref().map(load);
    let mut not_finite = 0;
    for i in (1..end).step_by(8) {
        unsafe {
            let a = _mm256_loadu_ps(flux.as_ptr().add(i - 1));
            let b = _mm256_loadu_ps(flux.as_ptr().add(i));
            let c = _mm256_loadu_ps(flux.as_ptr().add(i + 1));
            let bits = _mm256_and_si256(_mm256_castps_si256(b), exp);
            not_finite |= _mm256_movemask_epi8(_mm256_cmpeq_epi32(bits, exp));
            let med = _mm256_max_ps(_mm256_min_ps(a, b), _mm256_min_ps(_mm256_max_ps(a, b), c));
            for (half, (fv, mv)) in [
                (_mm256_castps256_ps128(b), _mm256_castps256_ps128(med)),
                (
                    _mm256_extractf128_ps::<1>(b),
                    _mm256_extractf128_ps::<1>(med),
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let (f, mm) = (_mm256_cvtps_pd(fv), _mm256_cvtps_pd(mv));
                _mm256_storeu_pd(m.as_mut_ptr().add(i + 4 * half), mm);
                let d = _mm256_sub_pd(mm, f);
                acc[0] = _mm256_add_pd(acc[0], f);
                acc[1] = _mm256_add_pd(acc[1], d);
                acc[2] = _mm256_fmadd_pd(d, d, acc[2]);
            }
        }
    }
    for (dst, v) in sums.iter_mut().zip(acc) {
        unsafe { _mm256_storeu_pd(dst.as_mut_ptr(), v) };
    }
    *bad |= u32::from(not_finite != 0);
    end
}

/// Median of three finite values.
#[inline(always)]
fn median3_f32(a: f32, b: f32, c: f32) -> f32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let t = if hi < c { hi } else { c };
    if lo > t {
        lo
    } else {
        t
    }
}

/// What the median test's pass yields.
struct Replaced {
    outliers: OutlierStats,
    /// Mean and population std of the replaced flux.
    mean: f64,
    std: f64,
    /// `a = Q^T fs` and `|fs|^2` for `fs = f - shift`.
    a: [f64; N_COEF],
    fs_sq: f64,
}

/// The median test on one block (at most 64 pixels): `o` = the flux with the
/// rejected pixels replaced by their median `m`, `u = o - shift`, added to `acc`;
/// returns the bit mask of the bad pixels. `bounds` = (lower, upper, shift); the
/// bounds are infinite when the test does not apply.
#[inline(always)]
fn replace_block<const FMA: bool>(
    flux: &[f32],
    m: &[f64],
    xs: &[f64],
    o: &mut [f64],
    u: &mut [f64],
    (lower, upper, shift): (f64, f64, f64),
    acc: &mut Sums,
) -> u64 {
    let mut bad = 0u64;
    let pixels = flux.iter().zip(m).zip(o.iter_mut().zip(u.iter_mut()));
    for (i, ((&fv, &mv), (oi, ui))) in pixels.enumerate() {
        let fi = f64::from(fv);
        let d = mv - fi;
        bad |= u64::from(is_bad_pixel(fi, d, lower)) << i;
        *oi = if (d >= upper) | (d <= lower) { mv } else { fi };
        *ui = *oi - shift;
    }
    acc.add_block::<FMA>(xs, u);
    bad
}

/// [`replace_block`] with AVX2 vectors (the compiler does not vectorise the masks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn replace_block_avx2(
    flux: &[f32],
    m: &[f64],
    xs: &[f64],
    o: &mut [f64],
    u: &mut [f64],
    (lower, upper, shift): (f64, f64, f64),
    acc: &mut Sums,
) -> u64 {
    use std::arch::x86_64::*;
    let n = flux
        .len()
        .min(m.len())
        .min(xs.len())
        .min(o.len())
        .min(u.len())
        .min(64);
    let n4 = n / 4 * 4;
    let (lo, up, sh) = (
        _mm256_set1_pd(lower),
        _mm256_set1_pd(upper),
        _mm256_set1_pd(shift),
    );
    let zero = _mm256_setzero_pd();
    // SAFETY (all loads and stores): i + 4 <= n4 <= the length of every slice; the
    // accumulators are [f64; 4].
    let load = |v: &[f64; 4]| unsafe { _mm256_loadu_pd(v.as_ptr()) };
    let mut mom = acc.moments.each_ref().map(load);
    let mut sq = load(&acc.sum_sq);
    let mut bad = 0u64;
    for i in (0..n4).step_by(4) {
        unsafe {
            let fi = _mm256_cvtps_pd(_mm_loadu_ps(flux.as_ptr().add(i)));
            let mv = _mm256_loadu_pd(m.as_ptr().add(i));
            let d = _mm256_sub_pd(mv, fi);
            let below = _mm256_cmp_pd::<_CMP_LE_OQ>(d, lo);
            let above = _mm256_cmp_pd::<_CMP_GE_OQ>(d, up);
            let dead = _mm256_cmp_pd::<_CMP_LE_OQ>(fi, zero);
            bad |= (_mm256_movemask_pd(_mm256_or_pd(below, dead)) as u64) << i;
            let oi = _mm256_blendv_pd(fi, mv, _mm256_or_pd(below, above));
            let ui = _mm256_sub_pd(oi, sh);
            _mm256_storeu_pd(o.as_mut_ptr().add(i), oi);
            _mm256_storeu_pd(u.as_mut_ptr().add(i), ui);
            // Moments sum x^j u and sum u^2.
            let x = _mm256_loadu_pd(xs.as_ptr().add(i));
            let x2 = _mm256_mul_pd(x, x);
            let x4 = _mm256_mul_pd(x2, x2);
            let powers = [x, x2, _mm256_mul_pd(x2, x), x4, _mm256_mul_pd(x4, x)];
            mom[0] = _mm256_add_pd(mom[0], ui);
            for (mj, pj) in mom[1..].iter_mut().zip(powers) {
                *mj = _mm256_fmadd_pd(pj, ui, *mj);
            }
            sq = _mm256_fmadd_pd(ui, ui, sq);
        }
    }
    for (dst, v) in acc.moments.iter_mut().zip(mom) {
        unsafe { _mm256_storeu_pd(dst.as_mut_ptr(), v) };
    }
    unsafe { _mm256_storeu_pd(acc.sum_sq.as_mut_ptr(), sq) };
    let (o, u) = (&mut o[n4..n], &mut u[n4..n]);
    let tail = (&flux[n4..n], &m[n4..n], &xs[n4..n]);
    let bounds = (lower, upper, shift);
    bad | replace_block::<true>(tail.0, tail.1, tail.2, o, u, bounds, acc) << n4
}

/// Four-lane sums of `u^2` and `x^j u` (the moments of the projection; `j = 0`: the sum).
#[derive(Default)]
struct Sums {
    sum_sq: [f64; 4],
    moments: [[f64; 4]; N_COEF],
}

impl Sums {
    /// Add the points of a block.
    #[inline(always)]
    fn add_block<const FMA: bool>(&mut self, xs: &[f64], u: &[f64]) {
        let (mut xc, mut uc) = (xs.chunks_exact(4), u.chunks_exact(4));
        for (x, u) in (&mut xc).zip(&mut uc) {
            self.add::<FMA>(x, u);
        }
        for (l, (&x, &u)) in xc.remainder().iter().zip(uc.remainder()).enumerate() {
            let (mut xl, mut ul) = ([0.0; 4], [0.0; 4]);
            (xl[l], ul[l]) = (x, u);
            self.add::<FMA>(&xl, &ul); // zero lanes add nothing
        }
    }

    /// Add four points (a lane each).
    #[allow(clippy::needless_range_loop)] // lanes: the form the vectoriser needs
    #[inline(always)]
    fn add<const FMA: bool>(&mut self, x: &[f64], u: &[f64]) {
        let madd = |a: f64, b: f64, c: f64| if FMA { a.mul_add(b, c) } else { a * b + c };
        let mut pw = [[0.0f64; 4]; N_COEF];
        for l in 0..4 {
            let x2 = x[l] * x[l];
            let x4 = x2 * x2;
            pw[0][l] = 1.0;
            pw[1][l] = x[l];
            pw[2][l] = x2;
            pw[3][l] = x2 * x[l];
            pw[4][l] = x4;
            pw[5][l] = x4 * x[l];
        }
        for l in 0..4 {
            self.sum_sq[l] = madd(u[l], u[l], self.sum_sq[l]);
        }
        for (mom, pw_j) in self.moments.iter_mut().zip(&pw) {
            for l in 0..4 {
                mom[l] = madd(pw_j[l], u[l], mom[l]);
            }
        }
    }
}

/// Median test of SPEC 2.3.1 (`s` = std of `d = m - f`): the pixels it rejects
/// replaced by the 3-point median, giving `f`, and `fs = f - shift`; the *outlier*
/// (bad) pixels among them counted (see [`crate::outliers`]); the sums of `fs`,
/// `fs^2` and the moments `sum xs^j fs`, whence `a = Q^T fs = R^-T V^T fs`.
///
/// One branch-free pass per block of [`BLOCK`]; only blocks with bad pixels are
/// revisited to track runs.
#[allow(clippy::too_many_arguments)] // one pass, many outputs
#[inline(always)]
fn median_replace<const FMA: bool>(
    flux: &[f32],
    m: &[f64],
    basis: &ArmBasis,
    shift: f64,
    s: f64,
    f: &mut [f64],
    fs: &mut [f64],
) -> Replaced {
    let n = flux.len();
    let (m, xs) = (&m[..n], &basis.xs[..n]);
    let (f, fs) = (&mut f[..n], &mut fs[..n]);
    // With s == 0, d == 0 everywhere: replacing would change nothing, and no pixel
    // is a spike (infinite bounds say both; d is finite).
    let test = s > 0.0;
    let (lower, upper) = if test {
        (-MEDIAN_LOWER_SIGMA * s, MEDIAN_UPPER_SIGMA * s)
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    };
    let mut acc = Sums::default();
    let blocks = flux
        .chunks(BLOCK)
        .zip(m.chunks(BLOCK))
        .zip(xs.chunks(BLOCK))
        .zip(f.chunks_mut(BLOCK).zip(fs.chunks_mut(BLOCK)));
    let mut counter = RunCounter::default();
    for (((fb, mb), xb), (ob, ub)) in blocks {
        let bad = if FMA {
            // SAFETY: FMA = true only in the AVX2+FMA build, on a CPU that has both.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                replace_block_avx2(fb, mb, xb, ob, ub, (lower, upper, shift), &mut acc)
            }
            #[cfg(not(target_arch = "x86_64"))]
            replace_block::<FMA>(fb, mb, xb, ob, ub, (lower, upper, shift), &mut acc)
        } else {
            replace_block::<FMA>(fb, mb, xb, ob, ub, (lower, upper, shift), &mut acc)
        };
        counter.push_block(bad, fb.len());
    }
    let total = |s: [f64; 4]| (s[0] + s[1]) + (s[2] + s[3]);
    let n_f = n as f64;
    let dev = total(acc.moments[0]) / n_f; // x^0 u
    let fs_sq = total(acc.sum_sq);
    let var = (fs_sq / n_f - dev * dev).max(0.0);
    let moments = acc.moments.map(total);
    // a_i = sum_j (R^-1)_{j i} m_j; R^-1 is upper triangular.
    let a = std::array::from_fn(|i| (0..=i).map(|j| basis.r_inv[j][i] * moments[j]).sum());
    Replaced {
        outliers: counter.finish(),
        mean: shift + dev,
        std: var.sqrt(),
        a,
        fs_sq,
    }
}

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    sum_pairs(a, b, |x, y| x * y)
}

/// `sum(term(a[i], b[i]))` with four interleaved accumulators over fixed-size
/// chunks, so that the compiler vectorises it.
#[inline(always)]
fn sum_pairs(a: &[f64], b: &[f64], term: impl Fn(f64, f64) -> f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flux: &[f32]) -> Result<(Vec<f32>, ArmReport), KernelError> {
        let mut out = vec![0.0f32; flux.len()];
        let basis = ArmBasis::for_arm(Arm::Blue);
        let (report, result) =
            normalize_arm(flux, basis, 100, &mut ArmScratch::default(), &mut out);
        result?;
        Ok((out, report))
    }

    #[test]
    fn median_pass_zero_pads_and_counts() {
        let flux = [5.0f32, 1.0, 9.0, 2.0, -3.0, 4.0, 4.0];
        let mut m = [0.0; 7];
        let first = median_pass::<false>(&flux, &mut m);
        assert_eq!(m, [1.0, 5.0, 2.0, 2.0, 2.0, 4.0, 4.0]);
        assert!(!first.non_finite);
        let d: Vec<f64> = m.iter().zip(flux).map(|(m, f)| m - f64::from(f)).collect();
        let mean = d.iter().sum::<f64>() / 7.0;
        let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 7.0;
        assert!((first.d_std - var.sqrt()).abs() < 1e-12);
        assert!((first.f_mean - 22.0 / 7.0).abs() < 1e-12);
        for at in [0, 3, 6] {
            let mut inf = flux;
            inf[at] = f32::INFINITY;
            assert!(median_pass::<false>(&inf, &mut m).non_finite);
        }
    }

    #[test]
    fn basis_is_orthonormal() {
        let b = ArmBasis::for_arm(Arm::Red);
        for i in 0..N_COEF {
            for j in 0..N_COEF {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot(&b.q[i], &b.q[j]) - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn polynomial_continuum_normalises_to_one() {
        // A smooth positive quadratic in wavelength is reproduced by the fit; the
        // end pixels are touched by the zero-padded median only.
        let grid = Arm::Blue.grid();
        let flux: Vec<f32> = grid
            .iter()
            .map(|w| (100.0 + 0.05 * (w - 5100.0) + 1e-4 * (w - 5100.0).powi(2)) as f32)
            .collect();
        let (out, report) = run(&flux).unwrap();
        assert!(report.iterations >= 1 && !report.cap_hit);
        for &v in &out[1..out.len() - 1] {
            assert!((v - 1.0).abs() < 1e-4, "{v}");
        }
    }

    #[test]
    fn spike_is_counted_and_removed() {
        let mut flux = vec![10.0f32; Arm::Blue.grid().len()];
        for (i, v) in flux.iter_mut().enumerate() {
            *v += (i as f32 * 0.37).sin() * 0.1;
        }
        flux[1000] = 500.0;
        flux[2000] = 400.0;
        flux[2001] = 450.0;
        let (out, report) = run(&flux).unwrap();
        // A 3-point median sees only one pixel of a 2-pixel spike (the higher one):
        // at 2000 the median of (~10, 400, 450) is 400 itself.
        assert_eq!(report.outliers.count, 2);
        assert_eq!(report.outliers.max_run, 1);
        assert!((out[1000] - 1.0).abs() < 0.05);
    }

    #[test]
    fn dips_are_replaced_but_dead_pixels_only_are_outliers() {
        let mut flux = vec![10.0f32; Arm::Blue.grid().len()];
        for (i, v) in flux.iter_mut().enumerate() {
            *v += (i as f32 * 0.37).sin() * 0.1;
        }
        flux[500] = 5.0; // a one-pixel dip: replaced, but not a bad pixel
        for v in &mut flux[1000..1012] {
            *v = 0.0; // a dead segment: 12 bad pixels in a row
        }
        let (_, report) = run(&flux).unwrap();
        assert_eq!(report.outliers.count, 12);
        assert_eq!(report.outliers.max_run, 12);
    }

    #[test]
    fn portable_build_agrees_with_the_dispatched_one() {
        // normalize_arm dispatches to AVX2+FMA where the CPU has it; the portable
        // path (other CPUs) must make the same decisions and agree to roundoff.
        let grid = Arm::Red.grid();
        let mut state = 12345u64;
        let flux: Vec<f32> = grid
            .iter()
            .enumerate()
            .map(|(i, w)| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.02;
                let line = 0.4 * (-((w - 6563.0) / 1.5).powi(2)).exp();
                let spike = if i % 997 == 5 { 3.0 } else { 0.0 };
                ((1.0 + 1e-3 * (w - 6500.0)) * (1.0 - line + noise + spike)) as f32
            })
            .collect();
        let basis = ArmBasis::for_arm(Arm::Red);
        let (mut portable, mut dispatched) = (vec![0.0f32; flux.len()], vec![0.0f32; flux.len()]);
        let mut report = ArmReport::default();
        let mut scratch = ArmScratch::default();
        scratch.resize(flux.len());
        normalize_arm_impl::<false>(&flux, basis, 100, &mut scratch, &mut portable, &mut report)
            .unwrap();
        let (fast, result) = normalize_arm(&flux, basis, 100, &mut scratch, &mut dispatched);
        result.unwrap();
        assert_eq!(report, fast);
        assert!(report.iterations > 2 && report.outliers.count >= 3);
        for (a, b) in portable.iter().zip(&dispatched) {
            assert!((a - b).abs() <= 1e-6 * a.abs(), "{a} {b}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let n = Arm::Blue.grid().len();
        assert_eq!(run(&vec![0.0; n]).unwrap_err(), KernelError::DegenerateArm);
        assert_eq!(run(&vec![3.5; n]).unwrap_err(), KernelError::DegenerateArm);
        let mut nan = vec![1.0; n];
        nan[7] = f32::NAN;
        assert_eq!(run(&nan).unwrap_err(), KernelError::NonFiniteFlux);
        assert!(matches!(
            run(&[1.0; 10]),
            Err(KernelError::InvalidArgument(_))
        ));
    }
}
