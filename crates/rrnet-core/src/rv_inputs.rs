//! The inputs of the RV fit ([`crate::rv_measure`]) made from the raw arms: the
//! normalised observed-frame row (NaN -> 1) and its inverse variance, the raw IVAR
//! interpolated onto the grid and scaled by the continuum squared, 0 where the
//! normaliser replaced the pixel.
//!
//! `rrnet.preprocess.rv.prepare` is the NumPy reference, one spectrum at a time; this
//! is the same arithmetic (`numpy.interp`'s rules included) for a batch, in parallel,
//! so that measuring RVs does not serialise a run on Python's lock. The caller passes
//! wavelengths, not log wavelengths: the reference's own `exp` makes them, so a grid
//! point that falls on a pixel does so in both (another `exp` may differ in the last bit).

use rayon::prelude::*;

use crate::error::KernelError;
use crate::grid::{Arm, N_PIX, N_PIX_ARM};

/// Reused per-thread buffers: one arm's sorted copy (when the file's is not sorted), its
/// flux and variance in float64, their slopes between pixels, and per grid point the
/// interpolated flux and variance, then the implied continuum's sort keys and medians.
#[derive(Default)]
struct Scratch {
    wave: Vec<f64>,
    flux: Vec<f64>,
    var: Vec<f64>,
    order: Vec<usize>,
    slope_flux: Vec<f64>,
    slope_var: Vec<f64>,
    raw: Vec<f64>,
    grid_var: Vec<f64>,
    key: Vec<f64>,
    median: Vec<f64>,
}

/// `numpy.interp(x, xp, fp)` for `xp[0] <= x <= xp[last]`, `j` the last index with
/// `xp[j] <= x` (NumPy's binary search), with NumPy's handling of non-finite slopes.
/// `slope[j]` is `(fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])`, NumPy's own expression
/// (division is correctly rounded, so computing it ahead gives the same bits).
#[inline(always)]
fn interp_at(x: f64, xp: &[f64], fp: &[f64], slope: &[f64], j: usize) -> f64 {
    if j + 1 == xp.len() || xp[j] == x {
        return fp[j];
    }
    let mut value = slope[j] * (x - xp[j]) + fp[j];
    if value.is_nan() {
        value = slope[j] * (x - xp[j + 1]) + fp[j + 1];
        if value.is_nan() && fp[j] == fp[j + 1] {
            value = fp[j];
        }
    }
    value
}

/// Slopes between neighbouring pixels, `(fp[i + 1] - fp[i]) / (xp[i + 1] - xp[i])`: one
/// contiguous pass, so the divisions run on vectors.
#[inline(always)]
fn slopes(xp: &[f64], fp: &[f64], out: &mut Vec<f64>) {
    let n = xp.len().min(fp.len());
    out.clear();
    if n < 2 {
        return;
    }
    out.extend(
        fp[1..n]
            .iter()
            .zip(&fp[..n - 1])
            .zip(xp[1..n].iter().zip(&xp[..n - 1]))
            .map(|((f1, f0), (x1, x0))| (f1 - f0) / (x1 - x0)),
    );
}

/// One arm of many spectra: wavelength [Angstrom], flux and IVAR, file pixel order.
#[derive(Debug, Clone, Copy)]
pub struct RawArms<'a> {
    pub wave: &'a [&'a [f64]],
    pub flux: &'a [&'a [f32]],
    pub ivar: &'a [&'a [f32]],
}

/// The variance of a pixel in float32, as the reference computes it; inf where bad.
/// Both sides are computed, so a pass over an arm has no branch and runs on vectors.
#[inline(always)]
fn variance(v: f32) -> f64 {
    let inverse = f64::from(1.0f32 / v.max(1e-30f32));
    if v > 0.0 {
        inverse
    } else {
        f64::INFINITY
    }
}

/// One arm of one spectrum: its raw pixels and its part of the normalised row.
#[derive(Clone, Copy)]
struct ArmRow<'a> {
    arm: Arm,
    wave: &'a [f64],
    flux: &'a [f32],
    ivar: &'a [f32],
    normalised: &'a [f32],
}

/// One arm's IVAR on the grid into `out`.
///
/// In passes, so that every division runs on vectors: the variances, the slopes between
/// pixels, then per grid point the interpolation (the only serial pass: a walk through
/// the pixels, multiplications and additions), then the continuum and the IVAR.
#[inline(always)]
fn arm_ivar_impl(a: ArmRow<'_>, s: &mut Scratch, out: &mut [f32]) -> Result<(), KernelError> {
    let ArmRow {
        arm,
        wave,
        flux,
        ivar,
        normalised,
    } = a;
    let n = wave.len();
    if n == 0 || flux.len() != n || ivar.len() != n {
        return Err(KernelError::InvalidArgument(format!(
            "an arm needs equal, non-empty wavelength, flux and ivar; got {}, {} and {}",
            n,
            flux.len(),
            ivar.len()
        )));
    }
    s.flux.clear();
    s.var.clear();
    let sorted = wave.windows(2).all(|w| w[1] > w[0]);
    if sorted {
        s.flux.extend(flux.iter().map(|&f| f64::from(f)));
        s.var.extend(ivar.iter().map(|&v| variance(v)));
    } else {
        // LAMOST's coadds ascend and its single exposures' red arms descend (reversed
        // here, the order a sort would give); anything else is sorted (NaN last).
        s.order.clear();
        if wave.windows(2).all(|w| w[1] < w[0]) {
            s.order.extend((0..n).rev());
        } else {
            s.order.extend(0..n);
            s.order.sort_by(|&a, &b| wave[a].total_cmp(&wave[b]));
        }
        s.wave.clear();
        s.wave.extend(s.order.iter().map(|&k| wave[k]));
        s.flux.extend(s.order.iter().map(|&k| f64::from(flux[k])));
        s.var.extend(s.order.iter().map(|&k| variance(ivar[k])));
    }
    let Scratch {
        wave: sorted_wave,
        flux: fp,
        var,
        slope_flux,
        slope_var,
        raw,
        grid_var,
        key,
        median,
        ..
    } = s;
    let wave: &[f64] = if sorted { wave } else { sorted_wave };
    slopes(wave, fp, slope_flux);
    slopes(wave, var, slope_var);
    let grid = arm.grid();
    raw.resize(grid.len(), 0.0);
    grid_var.resize(grid.len(), 0.0);
    let (first, last) = (wave[0], wave[n - 1]);
    let mut j = 0;
    for ((&x, raw), grid_var) in grid.iter().zip(raw.iter_mut()).zip(grid_var.iter_mut()) {
        if !(x >= first && x <= last) {
            // outside the arm (or NaN wavelengths): no information
            (*raw, *grid_var) = (f64::NAN, f64::NAN);
            continue;
        }
        while j + 1 < n && wave[j + 1] <= x {
            j += 1;
        }
        *raw = interp_at(x, wave, fp, slope_flux, j);
        *grid_var = interp_at(x, wave, var, slope_var, j);
    }
    // the implied continuum, kept in `raw`'s place, and its median of 5 around each pixel
    for (c, &norm) in raw.iter_mut().zip(normalised) {
        *c /= f64::from(norm);
    }
    let cont: &[f64] = raw;
    medians_of_five(cont, key, median);
    for (((o, &c), &var), &med) in out
        .iter_mut()
        .zip(cont)
        .zip(grid_var.iter())
        .zip(median.iter())
    {
        let iv = c * c / var;
        let keep =
            var.is_finite() && var > 0.0 && iv.is_finite() && iv.abs() <= f64::from(f32::MAX);
        // not replaced by the normaliser's median test (`rrnet.preprocess.rv.replaced_pixels`)
        let kept = (c - med).abs() <= REPLACED_TOLERANCE * med.abs();
        *o = if keep && kept { iv as f32 } else { 0.0 };
    }
    Ok(())
}

/// Relative departure of a pixel's implied continuum (`raw / normalised`) from the median
/// of the 5 pixels around it beyond which the normaliser's median test replaced it
/// (`rrnet.preprocess.rv.REPLACED_TOLERANCE`): such a pixel's IVAR is not its
/// replacement's, and it gets none.
pub const REPLACED_TOLERANCE: f64 = 3e-3;

/// The median of the 5 values around each of `values` (windows clamped at the ends;
/// non-finite values as +inf), as `numpy.sort(window)[2]`: a min/max network, so the
/// pass runs on vectors.
#[inline(always)]
fn medians_of_five(values: &[f64], key: &mut Vec<f64>, median: &mut Vec<f64>) {
    let n = values.len();
    key.clear();
    key.extend(
        values
            .iter()
            .map(|&v| if v.is_finite() { v } else { f64::INFINITY }),
    );
    median.clear();
    median.resize(n, f64::INFINITY);
    if n < 5 {
        let mut window = key.clone();
        window.sort_unstable_by(f64::total_cmp);
        median.fill(window[n / 2]);
        return;
    }
    let windows = key[..n - 4]
        .iter()
        .zip(&key[1..n - 3])
        .zip(&key[2..n - 2])
        .zip(&key[3..n - 1])
        .zip(&key[4..]);
    for (m, ((((&a, &b), &c), &d), &e)) in median[2..n - 2].iter_mut().zip(windows) {
        let low = a.min(b).max(c.min(d)); // the larger of two pairs' minima
        let high = a.max(b).min(c.max(d)); // the smaller of their maxima
        *m = e.min(low).max(e.max(low).min(high)); // the median of e, low, high
    }
    (median[0], median[1]) = (median[2], median[2]);
    (median[n - 1], median[n - 2]) = (median[n - 3], median[n - 3]);
}

/// [`arm_ivar_impl`] compiled for AVX2: the same operations in the same order on wider
/// vectors (no fused multiply-adds), so the results are bitwise the portable build's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn arm_ivar_avx2(a: ArmRow<'_>, s: &mut Scratch, out: &mut [f32]) -> Result<(), KernelError> {
    arm_ivar_impl(a, s, out)
}

/// One arm's IVAR on the grid: [`arm_ivar_impl`] on AVX2 where the CPU has it.
fn arm_ivar(a: ArmRow<'_>, s: &mut Scratch, out: &mut [f32]) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { arm_ivar_avx2(a, s, out) };
    }
    arm_ivar_impl(a, s, out)
}

/// `numpy.nan_to_num(x, nan=1.0)` for float32.
fn finite_or_one(x: f32) -> f32 {
    if x.is_nan() {
        1.0
    } else {
        x.clamp(f32::MIN, f32::MAX)
    }
}

/// RV-fit inputs of `n` spectra: `normalised` is their unshifted, normalised rows
/// `[n, 7200]`; rows not `usable` get flux 1 and IVAR 0 (fitted as all masked).
pub fn rv_inputs_batch(
    arms: &[RawArms<'_>; 2],
    normalised: &[f32],
    usable: &[bool],
    flux_out: &mut [f32],
    ivar_out: &mut [f32],
) -> Result<(), KernelError> {
    let n = usable.len();
    for batch in arms {
        let counts = [batch.wave.len(), batch.flux.len(), batch.ivar.len()];
        if counts.iter().any(|&c| c != n) {
            return Err(KernelError::InvalidArgument(format!(
                "every input must hold {n} spectra, got {counts:?}"
            )));
        }
    }
    let size = n * N_PIX;
    if normalised.len() != size || flux_out.len() != size || ivar_out.len() != size {
        return Err(KernelError::InvalidArgument(format!(
            "normalised rows and outputs must be {n} x {N_PIX}"
        )));
    }
    flux_out
        .par_chunks_mut(N_PIX)
        .zip(ivar_out.par_chunks_mut(N_PIX))
        .enumerate()
        .try_for_each_init(Scratch::default, |s, (i, (flux_row, ivar_row))| {
            let row = &normalised[i * N_PIX..(i + 1) * N_PIX];
            if !usable[i] {
                flux_row.fill(1.0);
                ivar_row.fill(0.0);
                return Ok(());
            }
            for (o, &x) in flux_row.iter_mut().zip(row) {
                *o = finite_or_one(x);
            }
            for arm in Arm::BOTH {
                let batch = &arms[arm as usize];
                let span = arm as usize * N_PIX_ARM..(arm as usize + 1) * N_PIX_ARM;
                let one = ArmRow {
                    arm,
                    wave: batch.wave[i],
                    flux: batch.flux[i],
                    ivar: batch.ivar[i],
                    normalised: &row[span.clone()],
                };
                arm_ivar(one, s, &mut ivar_row[span])?;
            }
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_follows_numpy_on_exact_and_non_finite_points() {
        let xp = [1.0, 2.0, 3.0];
        let at = |x: f64, fp: &[f64], j: usize| {
            let mut slope = Vec::new();
            slopes(&xp, fp, &mut slope);
            interp_at(x, &xp, fp, &slope, j)
        };
        assert_eq!(at(1.5, &[0.0, 2.0, 4.0], 0), 1.0);
        assert_eq!(at(2.0, &[0.0, 2.0, f64::INFINITY], 1), 2.0);
        assert!(at(2.5, &[0.0, 2.0, f64::INFINITY], 1).is_infinite());
        assert_eq!(at(3.0, &[0.0, 2.0, 4.0], 2), 4.0);
    }

    #[test]
    fn a_flat_arm_gives_its_ivar_times_the_continuum_squared() {
        // flux 2 everywhere, normalised 1: continuum 2, IVAR = 4 * ivar inside the arm.
        let grid = Arm::Blue.grid();
        let wave: Vec<f64> = (0..4000).map(|k| grid[0] - 5.0 + k as f64 * 0.1).collect();
        let flux = vec![2.0f32; 4000];
        let ivar = vec![0.25f32; 4000];
        let normalised = vec![1.0f32; N_PIX];
        let (w, f, v) = ([&wave[..]], [&flux[..]], [&ivar[..]]);
        let batch = RawArms {
            wave: &w,
            flux: &f,
            ivar: &v,
        };
        let mut out_f = vec![0.0f32; N_PIX];
        let mut out_v = vec![0.0f32; N_PIX];
        rv_inputs_batch(
            &[batch, batch],
            &normalised,
            &[true],
            &mut out_f,
            &mut out_v,
        )
        .unwrap();
        assert!(out_v[..N_PIX_ARM].iter().all(|&x| (x - 1.0).abs() < 1e-5));
        assert!(out_v[N_PIX_ARM..].iter().all(|&x| x == 0.0)); // blue pixels: outside red
        assert!(out_f.iter().all(|&x| x == 1.0));
    }
}
