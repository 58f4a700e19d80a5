//! The orthonormal polynomial basis of one arm's fixed grid (`V = Q R`), computed once
//! per grid, and Horner's rule for evaluating a fit.

use std::sync::OnceLock;

use super::blocks::BLOCK;
use super::sums::{dot, mean_std};
use super::N_COEF;
use crate::error::KernelError;
use crate::grid::Arm;

/// What the degree-5 fit on one arm's fixed grid needs, computed once per grid.
#[derive(Debug, Clone)]
pub struct ArmBasis {
    /// Standardised `log10(grid)`.
    pub(super) xs: Vec<f64>,
    /// `R^-1`: monomial coefficients `c = R^-1 a` from basis coefficients `a`.
    pub(super) r_inv: [[f64; N_COEF]; N_COEF],
    /// Upper bounds of `|xs|^j` over the grid.
    xpow_max: [f64; N_COEF],
    /// `qmax[j][b]`: upper bound of `|Q[k, j]|` over the points `k` of block `b`.
    pub(super) qmax: [Vec<f64>; N_COEF],
    /// The rows of `Q`, orthonormal columns (modified Gram-Schmidt of `xs^0 .. xs^5`,
    /// `V = Q R`), zero-padded to 8: the clipping update reads a row per point, one
    /// cache line instead of six columns.
    rows: Vec<QRow>,
}

/// Row `k` of `Q`, zero-padded to 8 values.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct QRow(pub(super) [f64; 8]);

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
        // Upper bounds of |xs|^j, with room for the roundoff of powi.
        let xpow_max = std::array::from_fn(|j| {
            let m = xs.iter().fold(0.0f64, |m, x| m.max(x.abs().powi(j as i32)));
            m * (1.0 + 1e-12)
        });
        // Q and R^-1 agree with each other to roundoff (~1e-15): the margin covers it.
        let qmax = q.clone().map(|qj| {
            qj.chunks(BLOCK)
                .map(|qb| qb.iter().fold(0.0f64, |m, v| m.max(v.abs())) * (1.0 + 1e-9) + 1e-12)
                .collect()
        });
        let rows = (0..xs.len())
            .map(|k| {
                QRow(std::array::from_fn(
                    |j| if j < N_COEF { q[j][k] } else { 0.0 },
                ))
            })
            .collect();
        Ok(ArmBasis {
            xs,
            rows,
            r_inv: invert_upper(&r),
            xpow_max,
            qmax,
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

    /// Bound on `sum_j |c_j| max|xs|^j` for `c = R^-1 a` however the products in
    /// [`Self::monomial`] cancel: the scale of the roundoff of evaluating the fit.
    #[inline(always)]
    pub(super) fn size(&self, a: &[f64; N_COEF]) -> f64 {
        let mut size = 0.0;
        for (r_row, xp) in self.r_inv.iter().zip(&self.xpow_max) {
            size += xp * r_row.iter().zip(a).map(|(r, a)| (r * a).abs()).sum::<f64>();
        }
        size
    }

    /// Monomial coefficients (ascending powers of `xs`) of the fit `Q a`.
    #[inline(always)]
    pub(super) fn monomial(&self, a: &[f64; N_COEF]) -> [f64; N_COEF] {
        std::array::from_fn(|i| (i..N_COEF).map(|j| self.r_inv[i][j] * a[j]).sum())
    }

    /// Row `k` of `Q`, zero-padded to 8 values.
    #[inline(always)]
    pub(super) fn row(&self, k: usize) -> &[f64; 8] {
        &self.rows[k].0
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

/// `p = poly(c, x)` by Horner's rule: the single expression every fit value uses
/// (with fused multiply-adds where the CPU has them, `FMA`).
#[inline(always)]
pub(super) fn horner<const FMA: bool>(c: &[f64; N_COEF], x: f64) -> f64 {
    if FMA {
        let p = c[5].mul_add(x, c[4]).mul_add(x, c[3]).mul_add(x, c[2]);
        p.mul_add(x, c[1]).mul_add(x, c[0])
    } else {
        ((((c[5] * x + c[4]) * x + c[3]) * x + c[2]) * x + c[1]) * x + c[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_is_orthonormal() {
        let b = ArmBasis::for_arm(Arm::Red);
        let col = |j: usize| -> Vec<f64> { (0..b.len()).map(|k| b.row(k)[j]).collect() };
        for i in 0..N_COEF {
            for j in 0..N_COEF {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot(&col(i), &col(j)) - want).abs() < 1e-12);
            }
            assert!((0..b.len()).all(|k| b.row(k)[N_COEF..] == [0.0, 0.0]));
        }
    }
}
