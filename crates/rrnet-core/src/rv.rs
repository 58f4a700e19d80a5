//! Radial-velocity correction of log10 wavelengths.

use crate::grid::C_KMS;

/// Rest-frame wavelength [Angstrom] of one pixel: `10**loglam / (1 + rv/c)`.
#[inline]
pub fn rest_wavelength(loglam: f64, rv_kms: f64) -> f64 {
    10f64.powf(loglam) / (1.0 + rv_kms / C_KMS)
}

/// Rest-frame wavelengths [Angstrom] of `loglam` (log10 observed Angstrom) at `rv_kms`,
/// written into `out` (same length).
pub fn rv_correct_into<T: Copy + Into<f64>>(loglam: &[T], rv_kms: f64, out: &mut [f64]) {
    for (w, &l) in out.iter_mut().zip(loglam) {
        *w = rest_wavelength(l.into(), rv_kms);
    }
}

/// Allocating form of [`rv_correct_into`].
pub fn rv_correct<T: Copy + Into<f64>>(loglam: &[T], rv_kms: f64) -> Vec<f64> {
    let mut out = vec![0.0; loglam.len()];
    rv_correct_into(loglam, rv_kms, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rv_is_plain_power_of_ten() {
        assert_eq!(rv_correct(&[3.0f64, 4.0], 0.0), vec![1000.0, 10000.0]);
    }

    #[test]
    fn positive_rv_shifts_blue() {
        let w = rv_correct(&[4.0f64], C_KMS * 0.01)[0];
        assert!((w - 10000.0 / 1.01).abs() < 1e-9);
    }
}
