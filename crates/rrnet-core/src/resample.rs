//! Linear resampling onto a fixed grid with `numpy.interp` semantics.

use crate::error::KernelError;

/// Check a wavelength array of `n` pixels and return whether it ascends.
///
/// Requires at least 2 pixels, all finite, strictly monotonic (either way).
pub fn check_wavelength(wave: &[f64]) -> Result<bool, KernelError> {
    if wave.len() < 2 {
        return Err(KernelError::TooFewPoints {
            got: wave.len(),
            need: 2,
        });
    }
    // One branch-free pass for the three tests (`all` in two passes branches per
    // element to stop early: about twice the instructions).
    let (mut finite, mut up, mut down) = (wave[0].is_finite(), true, true);
    for (&a, &b) in wave.iter().zip(&wave[1..]) {
        finite &= b.is_finite();
        up &= b > a;
        down &= b < a;
    }
    if !finite {
        return Err(KernelError::BadWavelength("wavelengths contain NaN or inf"));
    }
    let ascending = wave[1] > wave[0];
    let monotonic = if ascending { up } else { down };
    if monotonic {
        Ok(ascending)
    } else {
        Err(KernelError::BadWavelength(
            "wavelengths are not strictly monotonic",
        ))
    }
}

/// Interpolate `flux(wave)` linearly at each ascending `grid` point into `out`.
///
/// `wave` may ascend or descend (read in reverse without copying). The formula is
/// numpy's: `fp[j]` if `x == xp[j]`, else `slope * (x - xp[j]) + fp[j]`. A grid
/// point whose bracketing pixels are not both finite is NaN. Errors if the grid
/// leaves `[min(wave), max(wave)]`.
pub fn resample_into(
    wave: &[f64],
    flux: &[f32],
    grid: &[f64],
    out: &mut [f32],
) -> Result<(), KernelError> {
    if wave.len() != flux.len() {
        return Err(KernelError::LengthMismatch {
            what: "wavelength and flux",
            a: wave.len(),
            b: flux.len(),
        });
    }
    if grid.len() != out.len() {
        return Err(KernelError::InvalidArgument(format!(
            "output length {} differs from grid length {}",
            out.len(),
            grid.len()
        )));
    }
    let ascending = check_wavelength(wave)?;
    if ascending {
        interpolate::<true>(wave, flux, grid, out)
    } else {
        interpolate::<false>(wave, flux, grid, out)
    }
}

/// The interpolation of [`resample_into`] for a checked wavelength array that
/// ascends (`ASCENDING`) or descends (then read in reverse).
fn interpolate<const ASCENDING: bool>(
    wave: &[f64],
    flux: &[f32],
    grid: &[f64],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let n = wave.len();
    let w = |k: usize| wave[if ASCENDING { k } else { n - 1 - k }];
    let (Some(&grid_lo), Some(&grid_hi)) = (grid.first(), grid.last()) else {
        return Ok(());
    };
    if grid_lo < w(0) || grid_hi > w(n - 1) {
        return Err(KernelError::GridOutOfRange {
            grid_lo,
            grid_hi,
            obs_lo: w(0),
            obs_hi: w(n - 1),
        });
    }
    let pixels = wave.iter().copied().zip(flux.iter().copied());
    if ASCENDING {
        merge(pixels, grid, out);
    } else {
        merge(pixels.rev(), grid, out);
    }
    Ok(())
}

/// numpy's interpolation at each ascending `grid` point from `pixels` (wavelength,
/// flux) in ascending wavelength order, at least 2, covering the grid: `fp[j]` if
/// `x == xp[j]`, else `slope * (x - xp[j]) + fp[j]`; NaN unless both bracketing
/// pixels are finite.
///
/// The bracketing pair is carried in registers and advanced from the iterator
/// (no index arithmetic, reloads or bounds checks per grid point).
#[inline(always)]
fn merge(mut pixels: impl Iterator<Item = (f64, f32)>, grid: &[f64], out: &mut [f32]) {
    let (Some((mut w0, mut f0)), Some((mut w1, mut f1))) = (pixels.next(), pixels.next()) else {
        return;
    };
    for (o, &x) in out.iter_mut().zip(grid) {
        // Advance while x is at or past the pair's right end and a pixel follows.
        while w1 <= x {
            let Some(next) = pixels.next() else { break };
            (w0, f0) = (w1, f1);
            (w1, f1) = next;
        }
        // Now w0 <= x, and x < w1 unless x is the last wavelength.
        let value = if x == w0 {
            f64::from(f0)
        } else if x == w1 {
            f64::from(f1)
        } else {
            let (f0, f1) = (f64::from(f0), f64::from(f1));
            if f0.is_finite() && f1.is_finite() {
                (f1 - f0) / (w1 - w0) * (x - w0) + f0
            } else {
                f64::NAN
            }
        };
        *o = value as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_function_is_reproduced() {
        let wave: Vec<f64> = (0..11).map(|i| i as f64).collect();
        let flux: Vec<f32> = wave.iter().map(|&x| (2.0 * x + 1.0) as f32).collect();
        let grid = [0.0, 0.5, 3.25, 10.0];
        let mut out = [0.0f32; 4];
        resample_into(&wave, &flux, &grid, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 7.5, 21.0]);
    }

    #[test]
    fn descending_equals_ascending() {
        let wave: Vec<f64> = (0..20).map(|i| 100.0 + 0.7 * i as f64).collect();
        let flux: Vec<f32> = (0..20).map(|i| ((i * 7) % 5) as f32).collect();
        let grid: Vec<f64> = (0..50).map(|i| 100.0 + 0.26 * i as f64).collect();
        let (mut a, mut d) = (vec![0.0f32; 50], vec![0.0f32; 50]);
        resample_into(&wave, &flux, &grid, &mut a).unwrap();
        let wr: Vec<f64> = wave.iter().rev().copied().collect();
        let fr: Vec<f32> = flux.iter().rev().copied().collect();
        resample_into(&wr, &fr, &grid, &mut d).unwrap();
        assert_eq!(a, d);
    }

    #[test]
    fn out_of_range_and_bad_wavelengths_are_errors() {
        let mut out = [0.0f32; 2];
        let r = resample_into(&[1.0, 2.0], &[1.0, 1.0], &[0.5, 1.5], &mut out);
        assert!(matches!(r, Err(KernelError::GridOutOfRange { .. })));
        let r = resample_into(&[1.0, 2.0, 1.5], &[1.0; 3], &[1.0, 1.5], &mut out);
        assert!(matches!(r, Err(KernelError::BadWavelength(_))));
        let r = resample_into(&[1.0, f64::NAN], &[1.0; 2], &[1.0, 1.5], &mut out);
        assert!(matches!(r, Err(KernelError::BadWavelength(_))));
        let r = resample_into(&[1.0], &[1.0], &[1.0, 1.0], &mut out);
        assert!(matches!(r, Err(KernelError::TooFewPoints { .. })));
    }

    #[test]
    fn nan_flux_only_poisons_neighbouring_grid_points() {
        let wave = [0.0, 1.0, 2.0, 3.0];
        let flux = [1.0, f32::NAN, 1.0, 1.0];
        let grid = [0.0, 0.5, 1.5, 2.0, 2.5];
        let mut out = [0.0f32; 5];
        resample_into(&wave, &flux, &grid, &mut out).unwrap();
        assert_eq!(out[0], 1.0);
        assert!(out[1].is_nan() && out[2].is_nan());
        assert_eq!(&out[3..], &[1.0, 1.0]);
    }
}
