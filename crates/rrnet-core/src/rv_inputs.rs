//! The inputs of the RV fit ([`crate::rv_measure`]) made from the raw arms: the
//! normalised observed-frame row (NaN -> 1) and its inverse variance, the raw IVAR
//! interpolated onto the grid and scaled by the continuum squared.
//!
//! `rrnet.preprocess.rv.prepare` is the NumPy reference, one spectrum at a time; this
//! is the same arithmetic (`numpy.interp`'s rules included) for a batch, in parallel,
//! so that measuring RVs does not serialise a run on Python's lock. The caller passes
//! wavelengths, not log wavelengths: the reference's own `exp` makes them, so a grid
//! point that falls on a pixel does so in both (another `exp` may differ in the last bit).

use rayon::prelude::*;

use crate::error::KernelError;
use crate::grid::{Arm, N_PIX, N_PIX_ARM};

/// Reused per-thread buffers: one arm's wavelengths, flux and variance, sorted.
#[derive(Default)]
struct Scratch {
    wave: Vec<f64>,
    flux: Vec<f64>,
    var: Vec<f64>,
    order: Vec<usize>,
}

/// `numpy.interp(x, xp, fp)` for `xp[0] <= x <= xp[last]`, `j` the last index with
/// `xp[j] <= x` (NumPy's binary search), with NumPy's handling of non-finite slopes.
fn interp_at(x: f64, xp: &[f64], fp: &[f64], j: usize) -> f64 {
    if j + 1 == xp.len() || xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    let mut value = slope * (x - xp[j]) + fp[j];
    if value.is_nan() {
        value = slope * (x - xp[j + 1]) + fp[j + 1];
        if value.is_nan() && fp[j] == fp[j + 1] {
            value = fp[j];
        }
    }
    value
}

/// One arm of many spectra: wavelength [Angstrom], flux and IVAR, file pixel order.
#[derive(Debug, Clone, Copy)]
pub struct RawArms<'a> {
    pub wave: &'a [&'a [f64]],
    pub flux: &'a [&'a [f32]],
    pub ivar: &'a [&'a [f32]],
}

/// One arm's IVAR on the grid into `out` (`normalised` is this arm's part of the row).
fn arm_ivar(
    arm: Arm,
    wave: &[f64],
    flux: &[f32],
    ivar: &[f32],
    normalised: &[f32],
    s: &mut Scratch,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let n = wave.len();
    if n == 0 || flux.len() != n || ivar.len() != n {
        return Err(KernelError::InvalidArgument(format!(
            "an arm needs equal, non-empty wavelength, flux and ivar; got {}, {} and {}",
            n,
            flux.len(),
            ivar.len()
        )));
    }
    // The variance of a pixel in float32, as the reference computes it; inf where bad.
    let variance = |v: f32| {
        if v > 0.0 {
            f64::from(1.0f32 / v.max(1e-30f32))
        } else {
            f64::INFINITY
        }
    };
    s.wave.clear();
    s.wave.extend_from_slice(wave);
    s.flux.clear();
    s.var.clear();
    if s.wave.windows(2).all(|w| w[1] > w[0]) {
        s.flux.extend(flux.iter().map(|&f| f64::from(f)));
        s.var.extend(ivar.iter().map(|&v| variance(v)));
    } else {
        // LAMOST arms come sorted; others are sorted by wavelength (NaN last).
        s.order.clear();
        s.order.extend(0..n);
        let wave_of = &s.wave;
        s.order.sort_by(|&a, &b| wave_of[a].total_cmp(&wave_of[b]));
        let sorted: Vec<f64> = s.order.iter().map(|&k| s.wave[k]).collect();
        s.wave = sorted;
        s.flux.extend(s.order.iter().map(|&k| f64::from(flux[k])));
        s.var.extend(s.order.iter().map(|&k| variance(ivar[k])));
    }
    let (first, last) = (s.wave[0], s.wave[n - 1]);
    let mut j = 0;
    for ((&x, &norm), o) in arm.grid().iter().zip(normalised).zip(out.iter_mut()) {
        *o = 0.0;
        if !(x >= first && x <= last) {
            continue; // outside the arm (or NaN wavelengths): no information
        }
        while j + 1 < n && s.wave[j + 1] <= x {
            j += 1;
        }
        let raw = interp_at(x, &s.wave, &s.flux, j);
        let var = interp_at(x, &s.wave, &s.var, j);
        if !(var.is_finite() && var > 0.0) {
            continue;
        }
        let cont = raw / f64::from(norm);
        let iv = cont * cont / var;
        if iv.is_finite() && iv.abs() <= f64::from(f32::MAX) {
            *o = iv as f32;
        }
    }
    Ok(())
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
                arm_ivar(
                    arm,
                    batch.wave[i],
                    batch.flux[i],
                    batch.ivar[i],
                    &row[span.clone()],
                    s,
                    &mut ivar_row[span],
                )?;
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
        assert_eq!(interp_at(1.5, &xp, &[0.0, 2.0, 4.0], 0), 1.0);
        assert_eq!(interp_at(2.0, &xp, &[0.0, 2.0, f64::INFINITY], 1), 2.0);
        assert!(interp_at(2.5, &xp, &[0.0, 2.0, f64::INFINITY], 1).is_infinite());
        assert_eq!(interp_at(3.0, &xp, &[0.0, 2.0, 4.0], 2), 4.0);
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
