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
        Ok(ArmBasis {
            xs,
            q,
            r_inv: invert_upper(&r),
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

    /// Least-squares coefficients `a = Q^T fs`.
    #[inline(always)]
    fn project(&self, fs: &[f64]) -> [f64; N_COEF] {
        std::array::from_fn(|j| dot(&self.q[j], fs))
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

/// One pass of the clipping loop: `p = poly(c, xs)` (Horner) into `p`; per block of
/// [`BLOCK`] points, the number with NOT (`lower < p - fs < upper`) into `outside`.
/// Returns the total.
#[inline(always)]
fn fit_pass(
    xs: &[f64],
    fs: &[f64],
    c: &[f64; N_COEF],
    lower: f64,
    upper: f64,
    p: &mut [f64],
    outside: &mut [u32],
) -> u32 {
    let mut total = 0;
    let blocks = p
        .chunks_mut(BLOCK)
        .zip(xs.chunks(BLOCK))
        .zip(fs.chunks(BLOCK));
    for (((pb, xb), fb), count) in blocks.zip(outside.iter_mut()) {
        let mut n_out = 0u64; // 64-bit lanes match the f64 compare masks
        for ((pi, &x), &f) in pb.iter_mut().zip(xb).zip(fb) {
            let v = ((((c[5] * x + c[4]) * x + c[3]) * x + c[2]) * x + c[1]) * x + c[0];
            *pi = v;
            let r = v - f;
            n_out += u64::from(!(r > lower && r < upper));
        }
        *count = n_out as u32; // at most BLOCK
        total += n_out as u32;
    }
    total
}

/// Working buffers of one arm, reused across spectra (one per thread).
#[derive(Debug, Clone, Default)]
pub struct ArmScratch {
    f: Vec<f64>,
    m: Vec<f64>,
    fs: Vec<f64>,
    p: Vec<f64>,
    /// Outside-point count per block of [`BLOCK`] points.
    outside: Vec<u32>,
}

impl ArmScratch {
    fn resize(&mut self, n: usize) {
        for buf in [&mut self.f, &mut self.m, &mut self.fs, &mut self.p] {
            buf.resize(n, 0.0);
        }
        self.outside.resize(n.div_ceil(BLOCK), 0);
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
    if !flux.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Err(KernelError::NonFiniteFlux);
    }
    let ArmScratch {
        f,
        m,
        fs,
        p,
        outside,
    } = scratch;
    f.iter_mut().zip(flux).for_each(|(a, &b)| *a = f64::from(b));
    report.outliers = median_replace(f, m, outside);

    let (f_mean, f_std) = mean_std(f);
    if !(f_std > 0.0 && f_std.is_finite()) {
        return Err(KernelError::DegenerateArm);
    }
    fs.iter_mut()
        .zip(f.iter())
        .for_each(|(s, &v)| *s = (v - f_mean) / f_std);

    // The residual r = p - fs of a least-squares fit with an intercept has mean 0
    // and is orthogonal to p, so std(r)^2 = (|fs|^2 - |a|^2) / n: O(1) per iteration
    // once |fs|^2 is tracked. Where that difference loses too many digits to
    // cancellation (near-exact fits) std(r) is computed directly.
    let mut a = basis.project(fs);
    let mut fs_sq = dot(fs, fs);
    let n_f = n as f64;
    for iteration in 1..=max_iter {
        report.iterations = iteration;
        let a_sq: f64 = a.iter().map(|v| v * v).sum();
        let g = if fs_sq - a_sq > 1e-6 * fs_sq {
            ((fs_sq - a_sq) / n_f).sqrt()
        } else {
            f64::NAN // computed below from p
        };
        let c = basis.monomial(&a);
        let g = if g.is_nan() {
            fit_pass(
                &basis.xs,
                fs,
                &c,
                f64::NEG_INFINITY,
                f64::INFINITY,
                p,
                outside,
            );
            residual_mean_std(p, fs).1
        } else {
            g
        };
        if !(g > 0.0) {
            fit_pass(
                &basis.xs,
                fs,
                &c,
                f64::NEG_INFINITY,
                f64::INFINITY,
                p,
                outside,
            );
            break; // exact fit: no point can be outside
        }
        let (lower, upper) = (-FIT_LOWER_SIGMA * g, FIT_UPPER_SIGMA * g);
        if fit_pass(&basis.xs, fs, &c, lower, upper, p, outside) == 0 {
            break;
        }
        if iteration == max_iter {
            report.cap_hit = true;
            break;
        }
        let dirty = outside.iter().enumerate().filter(|(_, &count)| count > 0);
        for k in dirty.flat_map(|(b, _)| b * BLOCK..((b + 1) * BLOCK).min(n)) {
            let delta = p[k] - fs[k];
            if !(delta > lower && delta < upper) {
                fs_sq += p[k] * p[k] - fs[k] * fs[k];
                fs[k] = p[k];
                a.iter_mut()
                    .zip(basis.row(k))
                    .for_each(|(aj, qj)| *aj += qj * delta);
            }
        }
    }

    let mut min_continuum = f64::INFINITY;
    for ((o, &v), &pv) in out.iter_mut().zip(f.iter()).zip(p.iter()) {
        let continuum = pv * f_std + f_mean;
        min_continuum = min_continuum.min(continuum);
        *o = (v / continuum) as f32;
    }
    if !(min_continuum > 0.0) {
        return Err(KernelError::NonPositiveContinuum);
    }
    Ok(())
}

/// Median test of SPEC 2.3.1: replace the pixels it rejects by the 3-point median,
/// and count the *outlier* (bad) pixels among them (see [`crate::outliers`]).
///
/// A branch-free pass counts candidates per block of [`BLOCK`] pixels; only blocks
/// with candidates are revisited to replace them and track runs.
#[inline(always)]
fn median_replace(f: &mut [f64], m: &mut [f64], outside: &mut [u32]) -> OutlierStats {
    medfilt3(f, m);
    let (_, s) = residual_mean_std(m, f);
    // With s == 0, d == 0 everywhere: replacing would change nothing.
    let test = s > 0.0;
    let (lower, upper) = (-MEDIAN_LOWER_SIGMA * s, MEDIAN_UPPER_SIGMA * s);
    let is_replaced = |fi: f64, mi: f64| {
        let d = mi - fi;
        test && !(d < upper && d > lower)
    };
    let is_outlier = |fi: f64, mi: f64| is_bad_pixel(fi, mi - fi, lower, test);
    for ((fb, mb), count) in f.chunks(BLOCK).zip(m.chunks(BLOCK)).zip(outside.iter_mut()) {
        *count = fb
            .iter()
            .zip(mb)
            .map(|(&fi, &mi)| u32::from(is_replaced(fi, mi) | (fi <= 0.0)))
            .sum();
    }
    let mut counter = RunCounter::default();
    for ((fb, mb), &count) in f.chunks_mut(BLOCK).zip(m.chunks(BLOCK)).zip(outside.iter()) {
        if count == 0 {
            counter.push(false); // a clean block ends any run
            continue;
        }
        for (fi, &mi) in fb.iter_mut().zip(mb) {
            counter.push(is_outlier(*fi, mi));
            if is_replaced(*fi, mi) {
                *fi = mi;
            }
        }
    }
    counter.finish()
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
