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

/// Pixels between two exact anchors of [`rv_correct_incremental_into`]: bounds the
/// accumulated roundoff to ~`ANCHOR_EVERY` ulp (about 1e-14 relative).
pub const ANCHOR_EVERY: usize = 64;

/// [`rv_correct_into`] without a `pow` per pixel: `w[i] = w[i-1] * 10**(l[i] - l[i-1])`,
/// with an exact `pow` every [`ANCHOR_EVERY`] pixels.
///
/// LAMOST LOGLAM steps take a handful of distinct values (float32 quantisation of
/// a constant step), so the factor `10**step` comes from a 4-entry cache keyed by
/// the step's bits in >99 % of pixels. The result equals [`rv_correct_into`] to
/// ~1e-14 relative; non-finite LOGLAM still gives non-finite wavelengths.
pub fn rv_correct_incremental_into<T: Copy + Into<f64>>(
    loglam: &[T],
    rv_kms: f64,
    out: &mut [f64],
) {
    let shift = 1.0 + rv_kms / C_KMS;
    let mut cache = [(f64::NAN.to_bits(), f64::NAN); 4];
    let mut slot = 0usize;
    let (mut prev_l, mut prev_w) = (f64::NAN, f64::NAN);
    for (i, (w, &l)) in out.iter_mut().zip(loglam).enumerate() {
        let l: f64 = l.into();
        if i % ANCHOR_EVERY == 0 {
            *w = 10f64.powf(l) / shift;
        } else {
            let step = l - prev_l;
            let key = step.to_bits();
            let factor = match cache.iter().find(|(k, _)| *k == key) {
                Some(&(_, f)) => f,
                None => {
                    let f = 10f64.powf(step);
                    cache[slot] = (key, f);
                    slot = (slot + 1) % cache.len();
                    f
                }
            };
            *w = prev_w * factor;
        }
        (prev_l, prev_w) = (l, *w);
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
    fn incremental_form_equals_pow_to_roundoff() {
        // A float32-quantised constant step (as in LAMOST files), both orders,
        // plus an irregular array.
        let mut arrays: Vec<Vec<f64>> = vec![
            (0..4136)
                .map(|i| f64::from((3.69 + 1.0e-5 * f64::from(i)) as f32))
                .collect(),
            (0..3000)
                .map(|i| 3.8 - 2.0e-5 * f64::from(i) + 1e-7 * f64::from(i % 7))
                .collect(),
        ];
        arrays.push(arrays[0].iter().rev().copied().collect());
        for loglam in &arrays {
            for rv in [-300.0, 0.0, 57.3] {
                let want = rv_correct(loglam, rv);
                let mut got = vec![0.0; loglam.len()];
                rv_correct_incremental_into(loglam, rv, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!(((g - w) / w).abs() < 2e-14, "{g} vs {w}");
                }
            }
        }
        let mut out = [0.0; 3];
        rv_correct_incremental_into(&[3.7, f64::NAN, 3.8], 0.0, &mut out);
        assert!(out[1].is_nan() && !out[2].is_finite());
    }

    #[test]
    fn positive_rv_shifts_blue() {
        let w = rv_correct(&[4.0f64], C_KMS * 0.01)[0];
        assert!((w - 10000.0 / 1.01).abs() < 1e-9);
    }
}
