//! The median test of method §2.3.1 in two passes: the 3-point median and the sums for
//! its threshold ([`median_pass`]), then the replacement of the rejected pixels with
//! the moments of the first fit ([`median_replace`]).

use super::basis::ArmBasis;
use super::{Build, Kernels, N_COEF};
use crate::outliers::{is_bad_pixel, OutlierStats, RunCounter};

/// Pixels per block of the median test (its bad-pixel masks are u64; fewer, longer
/// blocks than the clipping loop's, whose skipping gains from short ones).
const BLOCK: usize = 64;

const MEDIAN_UPPER_SIGMA: f64 = 3.0;
const MEDIAN_LOWER_SIGMA: f64 = 4.0;

/// Four-lane sums of `f`, `d = m - f` and `d^2` (the first pass).
pub(super) type MedianSums = [[f64; 4]; 3];

/// What the first pass over an arm learns.
pub(super) struct FirstPass {
    pub(super) non_finite: bool,
    /// Mean of the 3-point medians `m` (the shift of the later one-pass sums: a level
    /// of the flux that one enormous pixel does not move).
    pub(super) m_mean: f64,
    /// Population std of `d = m - f`.
    pub(super) d_std: f64,
}

/// First pass: `m = medfilt(flux, 3)` (zero padding; the median of float32 values
/// is one of them, so it is taken before widening), whether any value is not
/// finite, and the sums for the mean of `m` and the std of `d = m - f`.
#[inline(always)]
pub(super) fn median_pass<const FMA: bool>(flux: &[f32], m: &mut [f64]) -> FirstPass
where
    Build<FMA>: Kernels,
{
    let n = flux.len().min(m.len());
    assert!(n >= 2, "arms have at least N_COEF pixels");
    let (flux, m) = (&flux[..n], &mut m[..n]);
    let mut sums: MedianSums = [[0.0f64; 4]; 3];
    let mut bad = is_non_finite(flux[0]) | is_non_finite(flux[n - 1]);
    m[0] = f64::from(median3_f32(0.0, flux[0], flux[1]));
    m[n - 1] = f64::from(median3_f32(flux[n - 2], flux[n - 1], 0.0));
    add_median_sums(&mut sums, 0, f64::from(flux[0]), m[0]);
    add_median_sums(&mut sums, 1, f64::from(flux[n - 1]), m[n - 1]);
    // Interior points 1..n-1; the AVX2 build takes them 8 at a time first.
    let start = Build::<FMA>::median_interior(flux, m, &mut sums, &mut bad);
    for i in start..n - 1 {
        bad |= is_non_finite(flux[i]);
        m[i] = f64::from(median3_f32(flux[i - 1], flux[i], flux[i + 1]));
        add_median_sums(&mut sums, i % 4, f64::from(flux[i]), m[i]);
    }
    let [s_m, s_d, s_dd] = sums.map(|s| (s[0] + s[1]) + (s[2] + s[3]));
    let n_f = n as f64;
    let d_mean = s_d / n_f;
    // One pass suffices: |mean d| is not large against std d (medians sit inside the data).
    let d_var = (s_dd / n_f - d_mean * d_mean).max(0.0);
    FirstPass {
        non_finite: bad != 0,
        m_mean: s_m / n_f,
        d_std: d_var.sqrt(),
    }
}

/// Non-finite f32: all exponent bits set (an integer test).
#[inline(always)]
pub(super) fn is_non_finite(v: f32) -> u32 {
    const EXP: u32 = 0x7f80_0000;
    u32::from(v.to_bits() & EXP == EXP)
}

/// Add a pixel (flux `f`, median `m`) to lane `l` of the sums of `m`, `d`, `d^2`.
#[inline(always)]
pub(super) fn add_median_sums(sums: &mut MedianSums, l: usize, f: f64, m: f64) {
    let d = m - f;
    sums[0][l] += m;
    sums[1][l] += d;
    sums[2][l] += d * d;
}

/// Median of three finite values.
#[inline(always)]
fn median3_f32(a: f32, b: f32, c: f32) -> f32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let t = if hi < c { hi } else { c };
    if lo > t {
        lo
    } else {
        t
    }
}

/// What the median test's pass yields.
pub(super) struct Replaced {
    pub(super) outliers: OutlierStats,
    /// Mean and population std of the replaced flux.
    pub(super) mean: f64,
    pub(super) std: f64,
    /// `a = Q^T fs` and `|fs|^2` for `fs = f - shift`.
    pub(super) a: [f64; N_COEF],
    pub(super) fs_sq: f64,
}

/// Bounds of the median test on `d = m - f` (infinite when it does not apply) and
/// the shift of the one-pass sums.
#[derive(Debug, Clone, Copy)]
pub(super) struct MedianTest {
    pub(super) lower: f64,
    pub(super) upper: f64,
    pub(super) shift: f64,
}

/// One block (at most 64 pixels) of the replacement pass: the flux, its median and
/// `xs` in; `o` (the replaced flux) and `u = o - shift` out.
pub(super) struct MedianBlock<'a> {
    pub(super) flux: &'a [f32],
    pub(super) m: &'a [f64],
    pub(super) xs: &'a [f64],
    pub(super) o: &'a mut [f64],
    pub(super) u: &'a mut [f64],
}

/// The median test on one block (at most 64 pixels): `o` = the flux with the
/// rejected pixels replaced by their median `m`, `u = o - shift`, added to `acc`;
/// returns the bit mask of the bad pixels.
#[inline(always)]
pub(super) fn replace_block<const FMA: bool>(
    block: MedianBlock,
    test: &MedianTest,
    acc: &mut Sums,
) -> u64 {
    let MedianBlock { flux, m, xs, o, u } = block;
    let MedianTest {
        lower,
        upper,
        shift,
    } = *test;
    let mut bad = 0u64;
    let pixels = flux.iter().zip(m).zip(o.iter_mut().zip(u.iter_mut()));
    for (i, ((&fv, &mv), (oi, ui))) in pixels.enumerate() {
        let fi = f64::from(fv);
        let d = mv - fi;
        bad |= u64::from(is_bad_pixel(fi, d, lower)) << i;
        *oi = if (d >= upper) | (d <= lower) { mv } else { fi };
        *ui = *oi - shift;
    }
    acc.add_block::<FMA>(xs, u);
    bad
}

/// Four-lane sums of `u^2` and `x^j u` (the moments of the projection; `j = 0`: the sum).
#[derive(Default)]
pub(super) struct Sums {
    pub(super) sum_sq: [f64; 4],
    pub(super) moments: [[f64; 4]; N_COEF],
}

impl Sums {
    /// Add the points of a block.
    #[inline(always)]
    fn add_block<const FMA: bool>(&mut self, xs: &[f64], u: &[f64]) {
        let (mut xc, mut uc) = (xs.chunks_exact(4), u.chunks_exact(4));
        for (x, u) in (&mut xc).zip(&mut uc) {
            self.add::<FMA>(x, u);
        }
        for (l, (&x, &u)) in xc.remainder().iter().zip(uc.remainder()).enumerate() {
            let (mut xl, mut ul) = ([0.0; 4], [0.0; 4]);
            (xl[l], ul[l]) = (x, u);
            self.add::<FMA>(&xl, &ul); // zero lanes add nothing
        }
    }

    /// Add four points (a lane each).
    #[allow(clippy::needless_range_loop)] // lanes: the form the vectoriser needs
    #[inline(always)]
    fn add<const FMA: bool>(&mut self, x: &[f64], u: &[f64]) {
        let madd = |a: f64, b: f64, c: f64| if FMA { a.mul_add(b, c) } else { a * b + c };
        let mut pw = [[0.0f64; 4]; N_COEF];
        for l in 0..4 {
            let x2 = x[l] * x[l];
            let x4 = x2 * x2;
            pw[0][l] = 1.0;
            pw[1][l] = x[l];
            pw[2][l] = x2;
            pw[3][l] = x2 * x[l];
            pw[4][l] = x4;
            pw[5][l] = x4 * x[l];
        }
        for l in 0..4 {
            self.sum_sq[l] = madd(u[l], u[l], self.sum_sq[l]);
        }
        for (mom, pw_j) in self.moments.iter_mut().zip(&pw) {
            for l in 0..4 {
                mom[l] = madd(pw_j[l], u[l], mom[l]);
            }
        }
    }
}

/// Median test of method §2.3.1 (`s` = std of `d = m - f`): the pixels it rejects
/// replaced by the 3-point median, giving `f`, and `fs = f - shift`; the *outlier*
/// (bad) pixels among them counted (see [`crate::outliers`]); the sums of `fs`,
/// `fs^2` and the moments `sum xs^j fs`, whence `a = Q^T fs = R^-T V^T fs`.
///
/// One branch-free pass per block of [`BLOCK`]; only blocks with bad pixels are
/// revisited to track runs.
#[allow(clippy::too_many_arguments)] // one pass, many outputs
#[inline(always)]
pub(super) fn median_replace<const FMA: bool>(
    flux: &[f32],
    m: &[f64],
    basis: &ArmBasis,
    shift: f64,
    s: f64,
    f: &mut [f64],
    fs: &mut [f64],
) -> Replaced
where
    Build<FMA>: Kernels,
{
    let n = flux.len();
    let (m, xs) = (&m[..n], &basis.xs[..n]);
    let (f, fs) = (&mut f[..n], &mut fs[..n]);
    // With s == 0, d == 0 everywhere: replacing would change nothing, and no pixel
    // is a spike (infinite bounds say both; d is finite).
    let (lower, upper) = if s > 0.0 {
        (-MEDIAN_LOWER_SIGMA * s, MEDIAN_UPPER_SIGMA * s)
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    };
    let test = MedianTest {
        lower,
        upper,
        shift,
    };
    let mut acc = Sums::default();
    let blocks = flux
        .chunks(BLOCK)
        .zip(m.chunks(BLOCK))
        .zip(xs.chunks(BLOCK))
        .zip(f.chunks_mut(BLOCK).zip(fs.chunks_mut(BLOCK)));
    let mut counter = RunCounter::default();
    for (((fb, mb), xb), (ob, ub)) in blocks {
        let block = MedianBlock {
            flux: fb,
            m: mb,
            xs: xb,
            o: ob,
            u: ub,
        };
        let bad = Build::<FMA>::replace_block(block, &test, &mut acc);
        counter.push_block(bad, fb.len());
    }
    let total = |s: [f64; 4]| (s[0] + s[1]) + (s[2] + s[3]);
    let n_f = n as f64;
    let dev = total(acc.moments[0]) / n_f; // x^0 u
    let fs_sq = total(acc.sum_sq);
    let var = (fs_sq / n_f - dev * dev).max(0.0);
    let moments = acc.moments.map(total);
    // a_i = sum_j (R^-1)_{j i} m_j; R^-1 is upper triangular.
    let a = std::array::from_fn(|i| (0..=i).map(|j| basis.r_inv[j][i] * moments[j]).sum());
    Replaced {
        outliers: counter.finish(),
        mean: shift + dev,
        std: var.sqrt(),
        a,
        fs_sq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_pass_zero_pads_and_counts() {
        let flux = [5.0f32, 1.0, 9.0, 2.0, -3.0, 4.0, 4.0];
        let mut m = [0.0; 7];
        let first = median_pass::<false>(&flux, &mut m);
        assert_eq!(m, [1.0, 5.0, 2.0, 2.0, 2.0, 4.0, 4.0]);
        assert!(!first.non_finite);
        let d: Vec<f64> = m.iter().zip(flux).map(|(m, f)| m - f64::from(f)).collect();
        let mean = d.iter().sum::<f64>() / 7.0;
        let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 7.0;
        assert!((first.d_std - var.sqrt()).abs() < 1e-12);
        assert!((first.m_mean - 20.0 / 7.0).abs() < 1e-12);
        for at in [0, 3, 6] {
            let mut inf = flux;
            inf[at] = f32::INFINITY;
            assert!(median_pass::<false>(&inf, &mut m).non_finite);
        }
    }
}
