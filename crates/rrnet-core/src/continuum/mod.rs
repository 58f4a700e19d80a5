//! Continuum normalisation of one arm, exactly as method §2.3 (the original RRNet code).
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
//! (p_k - fs_k)`), and blocks of 32 points that provably have no point outside
//! the bounds are skipped. Means and standard deviations are one-pass (shifted)
//! sums. On x86-64 with AVX2 and FMA the passes and the block evaluation use AVX2
//! vectors and fused multiply-adds; elsewhere the portable code runs. Results agree
//! with the NumPy reference to roundoff; only a threshold tie can flip a decision,
//! and the reference reports its margins so that tests can see ties.
//!
//! Layout: `basis` (the orthonormal basis of a grid, Horner's rule), `median`
//! (the median test's two passes), `blocks` (block evaluation, and the selection of
//! the blocks to evaluate: one pass over the blocks' bounds per iteration), `sums`
//! (vectorisable sums), this module (the public API, the clipping loop and the
//! output) and `x86` (the AVX2 + FMA build and its runtime check, x86-64 only).
//! The algorithm is written once, generic over `FMA`; `Kernels` names the five
//! kernels that the AVX2 build replaces with vector code.

mod basis;
mod blocks;
mod median;
mod sums;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use basis::ArmBasis;
pub use sums::mean_std;

use crate::error::KernelError;
use crate::outliers::OutlierStats;
use basis::horner;
use blocks::{eval_block, residual_std, select_blocks, BlockRanges, Fit, Step, BLOCK, BOUND_TOL};
use median::{median_pass, median_replace, MedianBlock, MedianSums, MedianTest, Sums};

/// Coefficients of a degree-5 polynomial.
pub const N_COEF: usize = 6;
/// Default cap on the number of fits in the clipping loop.
pub const DEFAULT_MAX_ITER: u32 = 100;
const FIT_UPPER_SIGMA: f64 = 3.0;
const FIT_LOWER_SIGMA: f64 = 4.0;

/// One build of the algorithm: `Build<false>` is portable (plain multiplies and
/// adds), `Build<true>` uses fused multiply-adds and AVX2 ([`Kernels`] in `x86`).
struct Build<const FMA: bool>;

/// The kernels that the AVX2 build replaces with vector code (same results up to
/// the roundoff of fused multiply-adds).
trait Kernels {
    /// [`blocks::eval_block`].
    fn eval_block(xs: &[f64], fs: &[f64], fit: &Fit) -> (u64, f64, f64);
    /// [`blocks::select_blocks`].
    fn select_blocks(step: &Step, basis: &ArmBasis, ranges: BlockRanges, todo: &mut [u64]);
    /// [`median::replace_block`].
    fn replace_block(block: MedianBlock, test: &MedianTest, acc: &mut Sums) -> u64;
    /// Some interior points `1..k` of [`median_pass`]; returns `k`, where its scalar
    /// loop goes on.
    fn median_interior(flux: &[f32], m: &mut [f64], sums: &mut MedianSums, bad: &mut u32) -> usize;
    /// [`output`].
    fn output(f: &[f64], xs: &[f64], c: &[f64; N_COEF], shift: f64, out: &mut [f32]) -> f64;
}

/// The portable kernels: the scalar code, and no interior points done ahead.
impl Kernels for Build<false> {
    #[inline(always)]
    fn eval_block(xs: &[f64], fs: &[f64], fit: &Fit) -> (u64, f64, f64) {
        eval_block::<false>(xs, fs, fit)
    }

    #[inline(always)]
    fn select_blocks(step: &Step, basis: &ArmBasis, ranges: BlockRanges, todo: &mut [u64]) {
        select_blocks(step, basis, ranges, todo)
    }

    #[inline(always)]
    fn replace_block(block: MedianBlock, test: &MedianTest, acc: &mut Sums) -> u64 {
        median::replace_block::<false>(block, test, acc)
    }

    #[inline(always)]
    fn median_interior(_: &[f32], _: &mut [f64], _: &mut MedianSums, _: &mut u32) -> usize {
        1
    }

    #[inline(always)]
    fn output(f: &[f64], xs: &[f64], c: &[f64; N_COEF], shift: f64, out: &mut [f32]) -> f64 {
        output::<false>(f, xs, c, shift, out)
    }
}

/// Working buffers of one arm, reused across spectra (one per thread).
#[derive(Debug, Clone, Default)]
pub struct ArmScratch {
    /// The flux after the median test.
    f: Vec<f64>,
    /// Its 3-point median.
    m: Vec<f64>,
    /// `f - shift`, clipped in place by the fit loop.
    fs: Vec<f64>,
    /// Per block of [`BLOCK`] points: outside-point mask (of the blocks evaluated
    /// in the iteration).
    mask: Vec<u64>,
    /// Bit per block: the blocks evaluated in the iteration.
    todo: Vec<u64>,
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
        self.todo.resize(nb.div_ceil(64), 0);
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

/// Normalise one arm's resampled flux into `out` (method §2.3).
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
    let job = Job {
        flux,
        basis,
        max_iter,
        scratch,
        out,
    };
    // The AVX2 + FMA build where the CPU has both (checked in `x86`), else portable.
    #[cfg(target_arch = "x86_64")]
    let result = x86::normalize_arm(job, &mut report);
    #[cfg(not(target_arch = "x86_64"))]
    let result = normalize_arm_impl::<false>(job, &mut report);
    (report, result)
}

/// One call of [`normalize_arm_impl`]: the arm's flux, basis and cap on the fits, and
/// where the results go.
struct Job<'a> {
    flux: &'a [f32],
    basis: &'a ArmBasis,
    max_iter: u32,
    scratch: &'a mut ArmScratch,
    out: &'a mut [f32],
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
fn normalize_arm_impl<const FMA: bool>(job: Job, report: &mut ArmReport) -> Result<(), KernelError>
where
    Build<FMA>: Kernels,
{
    let Job {
        flux,
        basis,
        max_iter,
        scratch,
        out,
    } = job;
    let n = basis.len();
    let ArmScratch {
        f,
        m,
        fs,
        mask,
        todo,
        r_lo,
        r_hi,
        slack,
    } = scratch;
    let first = median_pass::<FMA>(flux, m);
    if first.non_finite {
        return Err(KernelError::NonFiniteFlux);
    }
    // Method §2.3.2 standardises f before the fit. The fit is linear and the clipping
    // decisions compare residuals with multiples of their own std, so both are the
    // same on `f - shift` without the division: the loop works on fs = f - shift
    // (shift = the mean of the 3-point medians, against cancellation: the input's
    // mean, with one pixel of 1e30 that the median test replaces, was ~3e26 and
    // f - shift kept no digit of the flux) and the continuum is
    // `p + shift`. The median test's pass also yields a = Q^T fs and |fs|^2.
    let shift = first.m_mean;
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
    // Plain slices in the loop (no reloads of the vectors' pointers and lengths).
    let nb = n.div_ceil(BLOCK);
    let (mask, todo, fs) = (&mut mask[..nb], &mut todo[..], &mut fs[..n]);
    let (r_lo, r_hi, slack) = (&mut r_lo[..nb], &mut r_hi[..nb], &mut slack[..nb]);
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
        let g = if g.is_nan() {
            residual_std::<FMA>(xs, fs, &c) // near-exact fit: directly
        } else {
            g
        };
        if !(g > 0.0) {
            break; // exact fit: no point can be outside
        }
        let (lower, upper) = (-FIT_LOWER_SIGMA * g, FIT_UPPER_SIGMA * g);
        let fit = Fit { c, lower, upper };
        // The blocks that may have a point outside (all in the first iteration: the
        // slack is infinite); the others provably have none.
        let step = Step::new(&a_prev, &a, BOUND_TOL * (size + size_prev), &fit);
        (a_prev, size_prev) = (a, size);
        let ranges = BlockRanges {
            lo: r_lo,
            hi: r_hi,
            slack,
        };
        Build::<FMA>::select_blocks(&step, basis, ranges, todo);
        let mut total = 0;
        for (w, &word) in todo.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let span = b * BLOCK..((b + 1) * BLOCK).min(n);
                let (block_mask, lo, hi) =
                    Build::<FMA>::eval_block(&xs[span.clone()], &fs[span], &fit);
                (mask[b], r_lo[b], r_hi[b]) = (block_mask, lo, hi);
                let reach = if lo.abs() > hi.abs() {
                    lo.abs()
                } else {
                    hi.abs()
                };
                slack[b] = BOUND_TOL * (size + reach);
                total += block_mask.count_ones();
            }
        }
        if total == 0 {
            break;
        }
        if iteration == max_iter {
            report.cap_hit = true;
            break;
        }
        // `a` padded to 8 lanes: two vector multiplies and adds per point (each lane
        // the same operations as one coefficient alone).
        let mut a8 = [0.0f64; 8];
        a8[..N_COEF].copy_from_slice(&a);
        for_each_bit(todo, |b| {
            for_each_bit(&[mask[b]], |i| {
                let k = b * BLOCK + i;
                // Outside (the mask's own arithmetic): fs = p there.
                let pk = horner::<FMA>(&c, xs[k]);
                let delta = pk - fs[k];
                fs_sq += pk * pk - fs[k] * fs[k];
                fs[k] = pk;
                a8.iter_mut()
                    .zip(basis.row(k))
                    .for_each(|(aj, qj)| *aj += qj * delta);
            });
        });
        a.copy_from_slice(&a8[..N_COEF]);
    }

    // Output with the fit of the last iteration: p = poly(c, xs) everywhere.
    let min_continuum = Build::<FMA>::output(f, xs, &c, shift, out);
    if !(min_continuum > 0.0) {
        return Err(KernelError::NonPositiveContinuum);
    }
    Ok(())
}

/// Call `f(i)` for each set bit `i` of `words` (bit `i % 64` of word `i / 64`), in order.
#[inline(always)]
fn for_each_bit(words: &[u64], mut f: impl FnMut(usize)) {
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            f(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
}

/// Output `f / (poly(c, xs) + shift)` as float32 into `out`; returns the smallest
/// continuum `poly(c, xs) + shift` (NaN values are passed over).
#[inline(always)]
fn output<const FMA: bool>(
    f: &[f64],
    xs: &[f64],
    c: &[f64; N_COEF],
    shift: f64,
    out: &mut [f32],
) -> f64 {
    let mut mins = [f64::INFINITY; 4];
    let continuum = |x: f64| horner::<FMA>(c, x) + shift;
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
    mins[0].min(mins[1]).min(mins[2].min(mins[3]))
}

/// Whether an arm's (median-replaced) flux varies: a standard deviation that is
/// zero, or below 1e-10 of the mean (roundoff of a constant; any real variation of
/// float32 data is far larger), leaves nothing to fit.
#[inline(always)]
pub fn is_spread(mean: f64, std: f64) -> bool {
    std > 1e-10 * mean.abs() && std > 0.0 && std.is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Arm;

    fn run(flux: &[f32]) -> Result<(Vec<f32>, ArmReport), KernelError> {
        let mut out = vec![0.0f32; flux.len()];
        let basis = ArmBasis::for_arm(Arm::Blue);
        let (report, result) =
            normalize_arm(flux, basis, 100, &mut ArmScratch::default(), &mut out);
        result?;
        Ok((out, report))
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
        let job = Job {
            flux: &flux,
            basis,
            max_iter: 100,
            scratch: &mut scratch,
            out: &mut portable,
        };
        normalize_arm_impl::<false>(job, &mut report).unwrap();
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
