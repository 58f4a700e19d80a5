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
//! Speed: the grid is fixed, so an orthonormal basis `Q` (n x 6, `V = Q R` for the
//! Vandermonde matrix `V` of `xs`) is computed once per arm; the fit is `p = Q a`
//! with `a = Q^T fs`. Clipping changes `fs` at few points `k`, so `a` is updated
//! incrementally, `a += Q[k, :] * (p_k - fs_k)`, instead of refitting; `p` is
//! evaluated by Horner's rule from the monomial coefficients `R^-1 a` in one fused
//! pass that also counts the points outside the bounds.

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
    /// Per block of [`BLOCK`] points: upper bounds of `|xs|^j` over the block.
    xpow_max: Vec<[f64; N_COEF]>,
    /// Per block: its centre `x0` and upper bounds of `|xs - x0|^j` over the block.
    centre: Vec<(f64, [f64; N_COEF])>,
    /// `Q` by groups of 4 points: `q4[g][j][l] = Q[4 g + l, j]` (the projection pass).
    q4: Vec<[[f64; 4]; N_COEF]>,
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
        // Upper bounds of |xs|^j per block, with room for the roundoff of powi.
        let xpow_max = xs
            .chunks(BLOCK)
            .map(|xb| {
                std::array::from_fn(|j| {
                    let m = xb.iter().fold(0.0f64, |m, x| m.max(x.abs().powi(j as i32)));
                    m * (1.0 + 1e-12)
                })
            })
            .collect();
        let centre = xs
            .chunks(BLOCK)
            .map(|xb| {
                let lo = xb.iter().fold(f64::INFINITY, |m, &x| m.min(x));
                let hi = xb.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
                let x0 = 0.5 * (lo + hi);
                let h = xb.iter().fold(0.0f64, |m, &x| m.max((x - x0).abs()));
                let h = h * (1.0 + 1e-12) + 1e-300;
                (
                    x0,
                    std::array::from_fn(|j| h.powi(j as i32) * (1.0 + 1e-12)),
                )
            })
            .collect();
        let q4 = (0..xs.len() / 4)
            .map(|g| std::array::from_fn(|j| std::array::from_fn(|l| q[j][4 * g + l])))
            .collect();
        Ok(ArmBasis {
            xs,
            q,
            r_inv: invert_upper(&r),
            xpow_max,
            centre,
            q4,
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

/// `p = poly(c, x)` by Horner's rule: the single expression every fit value uses.
#[inline(always)]
fn horner(c: &[f64; N_COEF], x: f64) -> f64 {
    ((((c[5] * x + c[4]) * x + c[3]) * x + c[2]) * x + c[1]) * x + c[0]
}

/// Evaluate one block of the clipping loop: `p = poly(c, xs)` (Horner) into `p`;
/// returns the number of points with NOT (`lower < p - fs < upper`) and the
/// smallest and largest residual `p - fs` of the block.
#[inline(always)]
fn eval_block(
    xs: &[f64],
    fs: &[f64],
    c: &[f64; N_COEF],
    lower: f64,
    upper: f64,
    p: &mut [f64],
) -> (u32, f64, f64) {
    let n = p.len().min(xs.len()).min(fs.len()).min(BLOCK);
    let (p, xs, fs) = (&mut p[..n], &xs[..n], &fs[..n]);
    let mut n_out = 0u64; // 64-bit lanes match the f64 compare masks
    let mut res = [0.0f64; BLOCK];
    for (((pi, &x), &f), ri) in p.iter_mut().zip(xs).zip(fs).zip(res.iter_mut()) {
        let v = horner(c, x);
        *pi = v;
        let r = v - f;
        *ri = r;
        n_out += u64::from(!(r > lower && r < upper));
    }
    // Smallest and largest residual by a tree (independent lanes, no long chain);
    // a short block is padded with its first residual.
    let first = res[0];
    res[n..].iter_mut().for_each(|r| *r = first);
    let (mut lo, mut hi) = (res, res);
    let mut w = BLOCK / 2;
    while w > 0 {
        for i in 0..w {
            lo[i] = if lo[i + w] < lo[i] { lo[i + w] } else { lo[i] };
            hi[i] = if hi[i + w] > hi[i] { hi[i + w] } else { hi[i] };
        }
        w /= 2;
    }
    (n_out as u32, lo[0], hi[0]) // at most BLOCK
}

/// Mask of the points of a block with NOT (`lower < p - fs < upper`), bit `i` for point `i`.
#[inline(always)]
fn outside_mask(p: &[f64], fs: &[f64], lower: f64, upper: f64) -> u64 {
    let mut mask = 0u64;
    for (i, (&pi, &f)) in p.iter().zip(fs).enumerate() {
        let r = pi - f;
        mask |= u64::from(!(r > lower && r < upper)) << i;
    }
    mask
}

/// Relative tolerance of the block bounds: far above the roundoff of a Horner
/// evaluation of degree 5 (about 1e-15 of `sum |c_j| |x|^j`), far below any margin
/// that matters.
const BOUND_TOL: f64 = 1e-12;

/// Working buffers of one arm, reused across spectra (one per thread).
#[derive(Debug, Clone, Default)]
pub struct ArmScratch {
    f: Vec<f64>,
    m: Vec<f64>,
    fs: Vec<f64>,
    p: Vec<f64>,
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
        for buf in [&mut self.f, &mut self.m, &mut self.fs, &mut self.p] {
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
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        let result =
            unsafe { normalize_arm_avx2(flux, basis, max_iter, scratch, out, &mut report) };
        return (report, result);
    }
    let result = normalize_arm_impl(flux, basis, max_iter, scratch, out, &mut report);
    (report, result)
}

/// [`normalize_arm_impl`] compiled for AVX2: wider vectors, the same arithmetic (no
/// FMA contraction, fixed summation order), so results do not depend on the CPU.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn normalize_arm_avx2(
    flux: &[f32],
    basis: &ArmBasis,
    max_iter: u32,
    scratch: &mut ArmScratch,
    out: &mut [f32],
    report: &mut ArmReport,
) -> Result<(), KernelError> {
    normalize_arm_impl(flux, basis, max_iter, scratch, out, report)
}

/// The algorithm of [`normalize_arm`] on validated lengths (`scratch` sized to `n`).
///
/// The clipping loop evaluates the fit block by block, and skips a block when it
/// can prove that none of its points is outside the bounds: each block keeps the
/// range of its residuals at its last evaluation and a bound on how far they may
/// have moved since (`sum_j |c_j - c'_j| max |xs|^j` per iteration, plus roundoff
/// with a wide margin). The decisions are exactly those of a full pass; `p` is
/// evaluated everywhere once, at the end, with the last coefficients.
#[inline(always)]
fn normalize_arm_impl(
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
        p,
        mask,
        r_lo,
        r_hi,
        slack,
    } = scratch;
    // Non-finite f32: all exponent bits set (an integer test, so that it vectorises).
    const EXP: u32 = 0x7f80_0000;
    let mut non_finite = 0u32;
    for (a, &b) in f.iter_mut().zip(flux) {
        non_finite |= u32::from(b.to_bits() & EXP == EXP);
        *a = f64::from(b);
    }
    if non_finite != 0 {
        return Err(KernelError::NonFiniteFlux);
    }
    // The replaced flux goes to `p` (free until the loop), then becomes `f`.
    let (outliers, f_mean) = median_replace(f, m, p, mask);
    report.outliers = outliers;
    std::mem::swap(f, p);

    let f_std = (sum_pairs(f, f, |v, _| (v - f_mean) * (v - f_mean)) / n as f64).sqrt();
    if !(f_std > 0.0 && f_std.is_finite()) {
        return Err(KernelError::DegenerateArm);
    }
    // fs = (f - mean f) / std f, a = Q^T fs and |fs|^2 in one pass.
    let (mut a, mut fs_sq) = standardize_project(f, f_mean, f_std, basis, fs);

    // The residual r = p - fs of a least-squares fit with an intercept has mean 0
    // and is orthogonal to p, so std(r)^2 = (|fs|^2 - |a|^2) / n: O(1) per iteration
    // once |fs|^2 is tracked. Where that difference loses too many digits to
    // cancellation (near-exact fits) std(r) is computed directly.
    let xs = &basis.xs[..];
    let n_f = n as f64;
    slack.fill(f64::INFINITY);
    let mut c = [0.0f64; N_COEF];
    for iteration in 1..=max_iter {
        report.iterations = iteration;
        let a_sq: f64 = a.iter().map(|v| v * v).sum();
        let g = if fs_sq - a_sq > 1e-6 * fs_sq {
            ((fs_sq - a_sq) / n_f).sqrt()
        } else {
            f64::NAN // computed below from p
        };
        let c_prev = c;
        c = basis.monomial(&a);
        if iteration > 1 {
            widen_slack(&c_prev, &c, basis, slack);
        }
        let g = if g.is_nan() {
            // Every block, fit values only: the bounds are not known yet.
            let (inf, blocks) = (f64::INFINITY, p.chunks_mut(BLOCK).enumerate());
            for (b, pb) in blocks {
                let span = b * BLOCK..b * BLOCK + pb.len();
                let (_, lo, hi) = eval_block(&xs[span.clone()], &fs[span], &c, -inf, inf, pb);
                (r_lo[b], r_hi[b]) = (lo, hi);
                slack[b] = eval_slack(&c, &basis.xpow_max[b], lo, hi);
            }
            residual_mean_std(p, fs).1
        } else {
            g
        };
        if !(g > 0.0) {
            break; // exact fit: no point can be outside
        }
        let (lower, upper) = (-FIT_LOWER_SIGMA * g, FIT_UPPER_SIGMA * g);
        let tol = BOUND_TOL * (upper - lower);
        let mut total = 0;
        for (b, pb) in p.chunks_mut(BLOCK).enumerate() {
            if r_hi[b] + slack[b] + tol < upper && r_lo[b] - slack[b] - tol > lower {
                mask[b] = 0; // provably no point outside
                continue;
            }
            let span = b * BLOCK..b * BLOCK + pb.len();
            let fb = &fs[span.clone()];
            let (count, lo, hi) = eval_block(&xs[span], fb, &c, lower, upper, pb);
            (r_lo[b], r_hi[b]) = (lo, hi);
            slack[b] = eval_slack(&c, &basis.xpow_max[b], lo, hi);
            mask[b] = if count > 0 {
                outside_mask(pb, fb, lower, upper)
            } else {
                0
            };
            total += count;
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
                let delta = p[k] - fs[k];
                if !(delta > lower && delta < upper) {
                    fs_sq += p[k] * p[k] - fs[k] * fs[k];
                    fs[k] = p[k];
                    a.iter_mut()
                        .zip(basis.row(k))
                        .for_each(|(aj, qj)| *aj += qj * delta);
                }
            }
            slack[b] = f64::INFINITY; // fs changed: evaluate again
        }
    }

    // Output with the fit of the last iteration: p = poly(c, xs) everywhere.
    let mut mins = [f64::INFINITY; 4];
    let continuum = |x: f64| horner(&c, x) * f_std + f_mean;
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

/// Bound on how far the residuals of a block evaluated with `c` may be from their
/// exact values: roundoff of Horner's rule and of `p - fs`, with a wide margin.
#[inline(always)]
fn eval_slack(c: &[f64; N_COEF], xpow_max: &[f64; N_COEF], lo: f64, hi: f64) -> f64 {
    let size: f64 = c.iter().zip(xpow_max).map(|(cj, xj)| cj.abs() * xj).sum();
    BOUND_TOL * (size + lo.abs().max(hi.abs()))
}

/// Add to each block's slack how far its residuals may move when the coefficients
/// go from `c_prev` to `c` (fs unchanged). The change of the fit is the polynomial
/// with coefficients `c - c_prev`; re-expanded about the block's centre `x0` (Taylor
/// shift) its size on the block is at most `sum_j |d_j| h^j` (`h` the half width).
/// Added: the roundoff of that shift and of evaluating with `c`, with a wide margin.
#[inline(always)]
fn widen_slack(c_prev: &[f64; N_COEF], c: &[f64; N_COEF], basis: &ArmBasis, slack: &mut [f64]) {
    let dc: [f64; N_COEF] = std::array::from_fn(|j| c[j] - c_prev[j]);
    let blocks = basis.xpow_max.iter().zip(&basis.centre);
    for (s, (xm, (x0, hpow))) in slack.iter_mut().zip(blocks) {
        let mut d = dc;
        for k in 0..N_COEF - 1 {
            for i in (k..N_COEF - 1).rev() {
                d[i] += x0 * d[i + 1];
            }
        }
        let (mut move_bound, mut size) = (0.0, 0.0);
        for j in 0..N_COEF {
            move_bound += d[j].abs() * hpow[j];
            size += (c[j].abs() + dc[j].abs()) * xm[j];
        }
        *s += (move_bound + BOUND_TOL * size) * (1.0 + BOUND_TOL);
    }
}

/// `fs = (f - mean) / std` into `fs`; returns `a = Q^T fs` and `|fs|^2`, each summed
/// exactly as [`dot`] sums it (four interleaved accumulators), in one pass.
#[inline(always)]
fn standardize_project(
    f: &[f64],
    mean: f64,
    std: f64,
    basis: &ArmBasis,
    fs: &mut [f64],
) -> ([f64; N_COEF], f64) {
    let mut acc = [[0.0f64; 4]; N_COEF];
    let mut sq = [0.0f64; 4];
    let n4 = f.len().min(fs.len()) / 4 * 4;
    let (mut sc, mut fc) = (fs.chunks_exact_mut(4), f.chunks_exact(4));
    for ((s, x), qg) in (&mut sc).zip(&mut fc).zip(&basis.q4) {
        let mut v = [0.0f64; 4];
        for l in 0..4 {
            v[l] = (x[l] - mean) / std;
        }
        s.copy_from_slice(&v);
        for l in 0..4 {
            sq[l] += v[l] * v[l];
        }
        for (acc_j, q_j) in acc.iter_mut().zip(qg) {
            for l in 0..4 {
                acc_j[l] += q_j[l] * v[l];
            }
        }
    }
    // The last n % 4 points (none on the fixed grids).
    let rest = sc.into_remainder().iter_mut().zip(fc.remainder());
    for (l, (s, &x)) in rest.enumerate() {
        let v = (x - mean) / std;
        *s = v;
        sq[l] += v * v;
        for (acc_j, q_j) in acc.iter_mut().zip(&basis.q) {
            acc_j[l] += q_j.get(n4 + l).copied().unwrap_or(0.0) * v;
        }
    }
    let total = |s: [f64; 4]| (s[0] + s[1]) + (s[2] + s[3]);
    (acc.map(total), total(sq))
}

/// Median test of SPEC 2.3.1: the pixels it rejects replaced by the 3-point median
/// into `f_new` (`f` keeps the input), and the *outlier* (bad) pixels among them
/// counted (see [`crate::outliers`]). Returns the counts and the mean of `f_new`
/// (summed as [`mean_std`] sums).
///
/// One branch-free pass replaces, sums and counts bad pixels per block of [`BLOCK`];
/// only blocks with bad pixels are revisited to track runs.
#[inline(always)]
fn median_replace(
    f: &[f64],
    m: &mut [f64],
    f_new: &mut [f64],
    counts: &mut [u64],
) -> (OutlierStats, f64) {
    medfilt3(f, m);
    let (_, s) = residual_mean_std(m, f);
    // With s == 0, d == 0 everywhere: replacing would change nothing.
    let test = s > 0.0;
    let (lower, upper) = (-MEDIAN_LOWER_SIGMA * s, MEDIAN_UPPER_SIGMA * s);
    let mut acc = [0.0f64; 4];
    let mut pixel = |l: usize, fi: f64, mi: f64, ni: &mut f64, bad: &mut [u64; 4]| {
        let d = mi - fi;
        bad[l] += u64::from(is_bad_pixel(fi, d, lower, test));
        let replaced = test && !(d < upper && d > lower);
        let v = if replaced { mi } else { fi };
        *ni = v;
        acc[l] += v;
    };
    let blocks = f
        .chunks(BLOCK)
        .zip(m.chunks(BLOCK))
        .zip(f_new.chunks_mut(BLOCK));
    for (((fb, mb), nb), count) in blocks.zip(counts.iter_mut()) {
        let mut bad = [0u64; 4];
        // BLOCK is a multiple of 4: lane l is lane i % 4 of sum_pairs.
        let (fc, mc, mut nc) = (
            fb.chunks_exact(4),
            mb.chunks_exact(4),
            nb.chunks_exact_mut(4),
        );
        let (fr, mr) = (fc.remainder(), mc.remainder());
        for ((fc, mc), nc) in fc.zip(mc).zip(&mut nc) {
            for l in 0..4 {
                pixel(l, fc[l], mc[l], &mut nc[l], &mut bad);
            }
        }
        let rest = fr.iter().zip(mr).zip(nc.into_remainder());
        for (l, ((&fi, &mi), ni)) in rest.enumerate() {
            pixel(l, fi, mi, ni, &mut bad);
        }
        *count = bad[0] + bad[1] + bad[2] + bad[3];
    }
    let mut counter = RunCounter::default();
    for ((fb, mb), &count) in f.chunks(BLOCK).zip(m.chunks(BLOCK)).zip(counts.iter()) {
        if count == 0 {
            counter.push(false); // a clean block ends any run
            continue;
        }
        for (&fi, &mi) in fb.iter().zip(mb) {
            counter.push(is_bad_pixel(fi, mi - fi, lower, test));
        }
    }
    let mean = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / f.len() as f64;
    (counter.finish(), mean)
}

/// `scipy.signal.medfilt(f, 3)`: 3-point running median, zero beyond both ends.
/// `m` must be as long as `f`.
#[inline(always)]
pub fn medfilt3(f: &[f64], m: &mut [f64]) {
    let n = f.len().min(m.len());
    match n {
        0 => {}
        1 => m[0] = median3(0.0, f[0], 0.0),
        _ => {
            m[0] = median3(0.0, f[0], f[1]);
            for (mi, w) in m[1..n - 1].iter_mut().zip(f.windows(3)) {
                *mi = median3(w[0], w[1], w[2]);
            }
            m[n - 1] = median3(f[n - 2], f[n - 1], 0.0);
        }
    }
}

#[inline]
fn median3(a: f64, b: f64, c: f64) -> f64 {
    a.min(b).max(a.max(b).min(c))
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

/// Mean and population std of `a - b` without storing the difference.
#[inline(always)]
fn residual_mean_std(a: &[f64], b: &[f64]) -> (f64, f64) {
    let n = a.len() as f64;
    let mean = sum_pairs(a, b, |x, y| x - y) / n;
    let var = sum_pairs(a, b, |x, y| {
        let d = x - y - mean;
        d * d
    }) / n;
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
    fn medfilt3_zero_pads() {
        let f = [5.0, 1.0, 9.0, 2.0];
        let mut m = [0.0; 4];
        medfilt3(&f, &mut m);
        assert_eq!(m, [1.0, 5.0, 2.0, 2.0]);
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
