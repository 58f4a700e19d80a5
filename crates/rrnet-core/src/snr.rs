//! Signal-to-noise estimates of one arm from FLUX and IVAR.

use crate::error::KernelError;

/// A key of `v` whose unsigned order is `f64::total_cmp`'s (equal keys: equal bits).
#[inline(always)]
fn total_key(v: f64) -> u64 {
    let bits = v.to_bits();
    // Negative: all bits flipped; positive: the sign bit set.
    bits ^ (((bits as i64) >> 63) as u64 | 1 << 63)
}

/// The value of a [`total_key`].
#[inline(always)]
fn from_total_key(key: u64) -> f64 {
    f64::from_bits(key ^ (((key >> 63) ^ 1).wrapping_neg() | 1 << 63))
}

/// Median (mean of the two middle values for an even count; NaN if empty) of the
/// values whose [`total_key`]s are `keys`: the selection compares integers (the same
/// element as selecting with `total_cmp`). Reorders `keys`.
pub fn median_of_keys(keys: &mut [u64]) -> f64 {
    let n = keys.len();
    if n == 0 {
        return f64::NAN;
    }
    let (lower, &mut upper_key, _) = keys.select_nth_unstable(n / 2);
    let upper_mid = from_total_key(upper_key);
    if n % 2 == 1 {
        upper_mid
    } else {
        // The largest of the lower half (by key; where f64::max might pick -0.0 over
        // +0.0, the mean with upper_mid >= +0.0 is the same).
        let lower_mid = from_total_key(lower.iter().copied().max().unwrap_or(0));
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
    scratch: &mut Vec<u64>,
) -> Result<f64, KernelError> {
    if wave.len() != flux.len() || ivar.len() != flux.len() {
        return Err(KernelError::LengthMismatch {
            what: "flux and ivar",
            a: flux.len(),
            b: ivar.len(),
        });
    }
    // Written by index into a buffer of at least full length (grown, never cleared:
    // its old values are overwritten or not read), not pushed: no capacity check
    // per pixel, and the count stays in a register.
    if scratch.len() < flux.len() {
        scratch.resize(flux.len(), 0);
    }
    let mut len = 0;
    for ((&w, &f), &iv) in wave.iter().zip(flux).zip(ivar) {
        // Finite f, finite iv > 0, as float compares (NaN fails each): fewer
        // instructions than is_finite's bit tests.
        if w >= lo && w <= hi && f.abs() < f32::INFINITY && iv > 0.0 && iv < f32::INFINITY {
            scratch[len] = total_key(f64::from(f) * f64::from(iv).sqrt());
            len += 1;
        }
    }
    Ok(median_of_keys(&mut scratch[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn median(values: &[f64]) -> f64 {
        let mut keys: Vec<u64> = values.iter().map(|&v| total_key(v)).collect();
        median_of_keys(&mut keys)
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn keys_follow_total_cmp() {
        let values = [
            f64::NEG_INFINITY,
            -3.5,
            -1e-300,
            -0.0,
            0.0,
            5e-324,
            1.0,
            2.5e300,
            f64::INFINITY,
        ];
        for (i, &a) in values.iter().enumerate() {
            assert_eq!(from_total_key(total_key(a)).to_bits(), a.to_bits());
            for &b in &values[i..] {
                assert_eq!(total_key(a).cmp(&total_key(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
        assert_eq!(median(&[-0.0, 0.0, -1.0, 3.0]), 0.0);
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
