//! The fixed rest-frame wavelength grids, built bit for bit as `numpy.arange` builds them.

use std::sync::OnceLock;

/// Pixels per arm.
pub const N_PIX_ARM: usize = 3600;
/// Pixels of a preprocessed spectrum (blue then red).
pub const N_PIX: usize = 2 * N_PIX_ARM;
/// Speed of light [km/s].
pub const C_KMS: f64 = 299_792.458;

/// The two spectrograph arms, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Blue = 0,
    Red = 1,
}

impl Arm {
    pub const BOTH: [Arm; 2] = [Arm::Blue, Arm::Red];

    /// This arm's grid [Angstrom]: `arange(4968, 5328, 0.1)` or `arange(6339, 6699, 0.1)`.
    pub fn grid(self) -> &'static [f64] {
        static GRIDS: OnceLock<[Vec<f64>; 2]> = OnceLock::new();
        let grids =
            GRIDS.get_or_init(|| [arange(4968.0, 5328.0, 0.1), arange(6339.0, 6699.0, 0.1)]);
        &grids[self as usize]
    }
}

/// `numpy.arange(start, stop, step)` for float64, reproducing its rounding: the
/// length is `ceil((stop - start) / step)` and element `i` is
/// `start + i * ((start + step) - start)` (numpy's `DOUBLE_fill`).
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if !(len > 0.0) {
        return Vec::new();
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_have_3600_pixels_and_expected_ends() {
        for arm in Arm::BOTH {
            let g = arm.grid();
            assert_eq!(g.len(), N_PIX_ARM);
            assert!(g.windows(2).all(|w| w[1] > w[0]));
        }
        assert_eq!(Arm::Blue.grid()[0], 4968.0);
        assert!((Arm::Blue.grid()[N_PIX_ARM - 1] - 5327.9).abs() < 1e-6);
        assert!((Arm::Red.grid()[N_PIX_ARM - 1] - 6698.9).abs() < 1e-6);
    }

    #[test]
    fn arange_small_cases() {
        assert_eq!(arange(0.0, 3.0, 1.0), vec![0.0, 1.0, 2.0]);
        assert_eq!(arange(0.0, 2.5, 1.0), vec![0.0, 1.0, 2.0]);
        assert!(arange(1.0, 0.0, 1.0).is_empty());
    }
}
