//! Signal-to-noise estimates of one arm from FLUX and IVAR.

use crate::error::KernelError;

/// Median of `values` (mean of the two middle values for an even count); NaN if empty.
/// Reorders `values`.
pub fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let cmp = |a: &f64, b: &f64| a.total_cmp(b);
    let (lower, &mut upper_mid, _) = values.select_nth_unstable_by(n / 2, cmp);
    if n % 2 == 1 {
        upper_mid
    } else {
        let lower_mid = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower_mid + upper_mid) / 2.0
    }
}

/// Median per-pixel S/N `flux * sqrt(ivar)` over pixels with rest wavelength in
/// `[lo, hi]` Angstrom, finite flux and finite `ivar > 0`; NaN if none qualifies.
///
/// `scratch` is reused between calls to avoid allocation.
pub fn snr_ivar(
    wave: &[f64],
    flux: &[f32],
    ivar: &[f32],
    lo: f64,
    hi: f64,
    scratch: &mut Vec<f64>,
) -> Result<f64, KernelError> {
    if wave.len() != flux.len() || ivar.len() != flux.len() {
        return Err(KernelError::LengthMismatch {
            what: "flux and ivar",
            a: flux.len(),
            b: ivar.len(),
        });
    }
    scratch.clear();
    for ((&w, &f), &iv) in wave.iter().zip(flux).zip(ivar) {
        if w >= lo && w <= hi && f.is_finite() && iv.is_finite() && iv > 0.0 {
            scratch.push(f64::from(f) * f64::from(iv).sqrt());
        }
    }
    Ok(median_in_place(scratch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median_in_place(&mut []).is_nan());
    }

    #[test]
    fn snr_uses_window_and_valid_ivar() {
        let wave = [1.0, 2.0, 3.0, 4.0, 5.0];
        let flux = [10.0, 10.0, 20.0, 30.0, 1000.0];
        let ivar = [1.0, 0.0, 4.0, 1.0, 1.0];
        let mut s = Vec::new();
        // window [1, 4]: pixels 0, 2, 3 valid -> S/N 10, 40, 30 -> median 30
        assert_eq!(snr_ivar(&wave, &flux, &ivar, 1.0, 4.0, &mut s), Ok(30.0));
        assert!(snr_ivar(&wave, &flux, &ivar, 10.0, 20.0, &mut s)
            .unwrap()
            .is_nan());
    }
}
