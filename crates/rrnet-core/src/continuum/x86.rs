//! The AVX2 + FMA build of the continuum kernel (x86-64 only): the runtime check of
//! the CPU, the whole algorithm compiled with those features (`Build<true>`), and the
//! vector kernels it uses in place of the portable ones.
//!
//! Every function here with `#[target_feature]` runs only below [`normalize_arm`],
//! after the CPU was found to have AVX2 and FMA.

use std::arch::x86_64::*;

use super::basis::ArmBasis;
use super::blocks::{self, BlockRanges, Fit, Step, BLOCK};
use super::median::{self, MedianBlock, MedianSums, MedianTest, Sums};
use super::{normalize_arm_impl, ArmReport, Build, Job, Kernels, N_COEF};
use crate::error::KernelError;

/// The runtime dispatch: the AVX2 + FMA build if the CPU has both features, else
/// the portable one.
pub(super) fn normalize_arm(job: Job, report: &mut ArmReport) -> Result<(), KernelError> {
    let bits = is_x86_feature_detected!("popcnt") && is_x86_feature_detected!("bmi1");
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && bits {
        // SAFETY: the CPU supports AVX2, FMA, POPCNT and BMI1, checked just above.
        unsafe { normalize_arm_avx2(job, report) }
    } else {
        normalize_arm_impl::<false>(job, report)
    }
}

/// [`normalize_arm_impl`] compiled for AVX2 with fused multiply-adds: wider vectors
/// and one rounding per multiply-add (results differ from the portable build by
/// roundoff only); bit counts and scans of the block masks in single instructions
/// (POPCNT, BMI1: every CPU with AVX2 has them).
#[target_feature(enable = "avx2,fma,popcnt,bmi1")]
fn normalize_arm_avx2(job: Job, report: &mut ArmReport) -> Result<(), KernelError> {
    normalize_arm_impl::<true>(job, report)
}

/// The vector kernels; sound because `Build<true>` is only instantiated by
/// [`normalize_arm_avx2`], which runs only on a CPU with AVX2 and FMA.
impl Kernels for Build<true> {
    #[inline(always)]
    fn eval_block(xs: &[f64], fs: &[f64], fit: &Fit) -> (u64, f64, f64) {
        // SAFETY: see the impl.
        unsafe { eval_block(xs, fs, fit) }
    }

    #[inline(always)]
    fn select_blocks(step: &Step, basis: &ArmBasis, ranges: BlockRanges, todo: &mut [u64]) {
        // SAFETY: see the impl.
        unsafe { select_blocks(step, basis, ranges, todo) }
    }

    #[inline(always)]
    fn replace_block(block: MedianBlock, test: &MedianTest, acc: &mut Sums) -> u64 {
        // SAFETY: see the impl.
        unsafe { replace_block(block, test, acc) }
    }

    #[inline(always)]
    fn median_interior(flux: &[f32], m: &mut [f64], sums: &mut MedianSums, bad: &mut u32) -> usize {
        // SAFETY: see the impl.
        unsafe { median_interior(flux, m, sums, bad) }
    }

    #[inline(always)]
    fn output(f: &[f64], xs: &[f64], c: &[f64; N_COEF], shift: f64, out: &mut [f32]) -> f64 {
        // SAFETY: see the impl.
        unsafe { output(f, xs, c, shift, out) }
    }
}

/// The polynomial with coefficients `cv` (lowest first) at four points: Horner's rule
/// with fused multiply-adds, in `horner::<true>`'s order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn horner(cv: &[__m256d; N_COEF], x: __m256d) -> __m256d {
    let mut p = cv[N_COEF - 1];
    for &c in cv[..N_COEF - 1].iter().rev() {
        p = _mm256_fmadd_pd(p, x, c);
    }
    p
}

/// [`super::output`] with AVX2 vectors: the continuum by Horner's rule with fused
/// multiply-adds then `+ shift` (as `horner::<true>`), four divisions at once, the
/// smallest continuum by `min` in the same operand order (NaN passed over).
#[target_feature(enable = "avx2,fma")]
fn output(f: &[f64], xs: &[f64], c: &[f64; N_COEF], shift: f64, out: &mut [f32]) -> f64 {
    let n = f.len().min(xs.len()).min(out.len());
    let n4 = n / 4 * 4;
    let cv = c.map(|cj| _mm256_set1_pd(cj));
    let sh = _mm256_set1_pd(shift);
    let mut mins = _mm256_set1_pd(f64::INFINITY);
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= n4 <= the length of every slice.
        unsafe {
            let x = _mm256_loadu_pd(xs.as_ptr().add(i));
            let cont = _mm256_add_pd(horner(&cv, x), sh);
            mins = _mm256_min_pd(cont, mins); // cont < min ? cont : min
            let q = _mm256_div_pd(_mm256_loadu_pd(f.as_ptr().add(i)), cont);
            _mm_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtpd_ps(q));
        }
    }
    let mut m = [0.0f64; 4];
    // SAFETY: 4 f64.
    unsafe { _mm256_storeu_pd(m.as_mut_ptr(), mins) };
    let tail = super::output::<true>(&f[n4..n], &xs[n4..n], c, shift, &mut out[n4..n]);
    m[0].min(m[1]).min(m[2].min(m[3])).min(tail)
}

/// [`blocks::eval_block`] with AVX2 vectors: Horner's rule with fused multiply-adds (as
/// `horner::<true>`), masks by movemask, the range in vector accumulators.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn eval_block(xs: &[f64], fs: &[f64], fit: &Fit) -> (u64, f64, f64) {
    let n = xs.len().min(fs.len()).min(BLOCK);
    if n == BLOCK {
        eval_lanes(&xs[..BLOCK], &fs[..BLOCK], fit) // a fixed count: unrolled
    } else if n.is_multiple_of(4) {
        eval_lanes(&xs[..n], &fs[..n], fit)
    } else {
        blocks::eval_block::<true>(xs, fs, fit)
    }
}

/// [`eval_block`] on a multiple of 4 points (at most [`BLOCK`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn eval_lanes(xs: &[f64], fs: &[f64], fit: &Fit) -> (u64, f64, f64) {
    let n = xs.len().min(fs.len()) / 4 * 4;
    let cv = fit.c.map(|cj| _mm256_set1_pd(cj));
    let (lo_b, up_b) = (_mm256_set1_pd(fit.lower), _mm256_set1_pd(fit.upper));
    let mut lo = _mm256_set1_pd(f64::INFINITY);
    let mut hi = _mm256_set1_pd(f64::NEG_INFINITY);
    let mut mask = 0u64;
    for k in 0..n / 4 {
        let i = 4 * k;
        // SAFETY: i + 4 <= n <= the length of both slices.
        let (x, f) = unsafe {
            (
                _mm256_loadu_pd(xs.as_ptr().add(i)),
                _mm256_loadu_pd(fs.as_ptr().add(i)),
            )
        };
        let r = _mm256_sub_pd(horner(&cv, x), f);
        // NOT (r > lower and r < upper), true for NaN as in the scalar test.
        let outside = _mm256_or_pd(
            _mm256_cmp_pd::<_CMP_NGT_UQ>(r, lo_b),
            _mm256_cmp_pd::<_CMP_NLT_UQ>(r, up_b),
        );
        mask |= (_mm256_movemask_pd(outside) as u64) << i;
        let kept = _mm256_andnot_pd(outside, r); // 0 where the point is replaced
        lo = _mm256_min_pd(lo, kept);
        hi = _mm256_max_pd(hi, kept);
    }
    // Horizontal min and max in vector registers (no NaN here: a NaN residual is
    // outside, kept as 0; which zero a tie keeps does not matter to the bounds).
    (mask, hmin(lo), hmax(hi))
}

/// Smallest of four lanes (no NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmin(v: __m256d) -> f64 {
    let m = _mm_min_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_min_sd(m, _mm_unpackhi_pd(m, m)))
}

/// Largest of four lanes (no NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmax(v: __m256d) -> f64 {
    let m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)))
}

/// [`blocks::select_blocks`] with AVX2 vectors, four blocks at a time (the same
/// arithmetic; the rest of the blocks by the portable code).
#[target_feature(enable = "avx2,fma")]
fn select_blocks(step: &Step, basis: &ArmBasis, ranges: BlockRanges, todo: &mut [u64]) {
    let BlockRanges { lo, hi, slack } = ranges;
    let n = slack.len().min(lo.len()).min(hi.len());
    let n4 = n / 4 * 4;
    let q = basis.qmax.each_ref().map(|qj| &qj[..n]);
    let da = step.da.map(|d| _mm256_set1_pd(d));
    let (round, tol) = (_mm256_set1_pd(step.round), _mm256_set1_pd(step.tol));
    let (lower, upper) = (_mm256_set1_pd(step.lower), _mm256_set1_pd(step.upper));
    todo.fill(0);
    for b in (0..n4).step_by(4) {
        // SAFETY (all loads and stores): b + 4 <= n4 <= the length of every slice.
        unsafe {
            let mut bound = round;
            for (dj, qj) in da.iter().zip(&q) {
                bound = _mm256_add_pd(
                    bound,
                    _mm256_mul_pd(*dj, _mm256_loadu_pd(qj.as_ptr().add(b))),
                );
            }
            let s = _mm256_add_pd(_mm256_loadu_pd(slack.as_ptr().add(b)), bound);
            _mm256_storeu_pd(slack.as_mut_ptr().add(b), s);
            let h = _mm256_add_pd(_mm256_add_pd(_mm256_loadu_pd(hi.as_ptr().add(b)), s), tol);
            let l = _mm256_sub_pd(_mm256_sub_pd(_mm256_loadu_pd(lo.as_ptr().add(b)), s), tol);
            let inside = _mm256_and_pd(
                _mm256_cmp_pd::<_CMP_LT_OQ>(h, upper),
                _mm256_cmp_pd::<_CMP_GT_OQ>(l, lower),
            );
            let need = (!_mm256_movemask_pd(inside) & 0xf) as u64;
            todo[b / 64] |= need << (b % 64);
        }
    }
    for b in n4..n {
        let need = step.widen_and_check(basis, b, lo[b], hi[b], &mut slack[b]);
        todo[b / 64] |= u64::from(need) << (b % 64);
    }
}

/// [`median::replace_block`] with AVX2 vectors (the compiler does not vectorise the masks).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn replace_block(block: MedianBlock, test: &MedianTest, acc: &mut Sums) -> u64 {
    let MedianBlock { flux, m, xs, o, u } = block;
    let n = flux
        .len()
        .min(m.len())
        .min(xs.len())
        .min(o.len())
        .min(u.len())
        .min(64);
    let n4 = n / 4 * 4;
    let (lo, up, sh) = (
        _mm256_set1_pd(test.lower),
        _mm256_set1_pd(test.upper),
        _mm256_set1_pd(test.shift),
    );
    let zero = _mm256_setzero_pd();
    // SAFETY (all loads and stores): i + 4 <= n4 <= the length of every slice; the
    // accumulators are [f64; 4].
    let load = |v: &[f64; 4]| unsafe { _mm256_loadu_pd(v.as_ptr()) };
    let mut mom = acc.moments.each_ref().map(load);
    let mut sq = load(&acc.sum_sq);
    let mut bad = 0u64;
    for i in (0..n4).step_by(4) {
        unsafe {
            let fi = _mm256_cvtps_pd(_mm_loadu_ps(flux.as_ptr().add(i)));
            let mv = _mm256_loadu_pd(m.as_ptr().add(i));
            let d = _mm256_sub_pd(mv, fi);
            let below = _mm256_cmp_pd::<_CMP_LE_OQ>(d, lo);
            let above = _mm256_cmp_pd::<_CMP_GE_OQ>(d, up);
            let dead = _mm256_cmp_pd::<_CMP_LE_OQ>(fi, zero);
            bad |= (_mm256_movemask_pd(_mm256_or_pd(below, dead)) as u64) << i;
            let oi = _mm256_blendv_pd(fi, mv, _mm256_or_pd(below, above));
            let ui = _mm256_sub_pd(oi, sh);
            _mm256_storeu_pd(o.as_mut_ptr().add(i), oi);
            _mm256_storeu_pd(u.as_mut_ptr().add(i), ui);
            // Moments sum x^j u and sum u^2.
            let x = _mm256_loadu_pd(xs.as_ptr().add(i));
            let x2 = _mm256_mul_pd(x, x);
            let x4 = _mm256_mul_pd(x2, x2);
            let powers = [x, x2, _mm256_mul_pd(x2, x), x4, _mm256_mul_pd(x4, x)];
            mom[0] = _mm256_add_pd(mom[0], ui);
            for (mj, pj) in mom[1..].iter_mut().zip(powers) {
                *mj = _mm256_fmadd_pd(pj, ui, *mj);
            }
            sq = _mm256_fmadd_pd(ui, ui, sq);
        }
    }
    for (dst, v) in acc.moments.iter_mut().zip(mom) {
        unsafe { _mm256_storeu_pd(dst.as_mut_ptr(), v) };
    }
    unsafe { _mm256_storeu_pd(acc.sum_sq.as_mut_ptr(), sq) };
    let tail = MedianBlock {
        flux: &flux[n4..n],
        m: &m[n4..n],
        xs: &xs[n4..n],
        o: &mut o[n4..n],
        u: &mut u[n4..n],
    };
    // A full block has an empty tail: a shift by 64 would overflow (debug builds panic).
    let tail_bad = median::replace_block::<true>(tail, test, acc);
    bad | tail_bad.checked_shl(n4 as u32).unwrap_or(0)
}

/// The interior points `1..1 + 8 k` of [`median::median_pass`] with AVX2 vectors (the
/// median of 8 float32 at once); returns where the scalar loop goes on.
#[target_feature(enable = "avx2,fma")]
fn median_interior(flux: &[f32], m: &mut [f64], sums: &mut MedianSums, bad: &mut u32) -> usize {
    let n = flux.len().min(m.len());
    let end = 1 + n.saturating_sub(2) / 8 * 8; // exclusive; i + 8 < n for every group
    let exp = _mm256_set1_epi32(0x7f80_0000);
    // SAFETY (all loads and stores): for i < end, i - 1 >= 0 and i + 9 <= end + 1 <= n.
    let load = |v: &[f64; 4]| unsafe { _mm256_loadu_pd(v.as_ptr()) };
    let mut acc = sums.each_ref().map(load);
    let mut not_finite = 0;
    for i in (1..end).step_by(8) {
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(flux.as_ptr().wrapping_add(i + 512).cast::<i8>());
            let a = _mm256_loadu_ps(flux.as_ptr().add(i - 1));
            let b = _mm256_loadu_ps(flux.as_ptr().add(i));
            let c = _mm256_loadu_ps(flux.as_ptr().add(i + 1));
            let bits = _mm256_and_si256(_mm256_castps_si256(b), exp);
            not_finite |= _mm256_movemask_epi8(_mm256_cmpeq_epi32(bits, exp));
            let med = _mm256_max_ps(_mm256_min_ps(a, b), _mm256_min_ps(_mm256_max_ps(a, b), c));
            for (half, (fv, mv)) in [
                (_mm256_castps256_ps128(b), _mm256_castps256_ps128(med)),
                (
                    _mm256_extractf128_ps::<1>(b),
                    _mm256_extractf128_ps::<1>(med),
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let (f, mm) = (_mm256_cvtps_pd(fv), _mm256_cvtps_pd(mv));
                _mm256_storeu_pd(m.as_mut_ptr().add(i + 4 * half), mm);
                let d = _mm256_sub_pd(mm, f);
                acc[0] = _mm256_add_pd(acc[0], mm);
                acc[1] = _mm256_add_pd(acc[1], d);
                acc[2] = _mm256_fmadd_pd(d, d, acc[2]);
            }
        }
    }
    for (dst, v) in sums.iter_mut().zip(acc) {
        unsafe { _mm256_storeu_pd(dst.as_mut_ptr(), v) };
    }
    *bad |= u32::from(not_finite != 0);
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::continuum::N_COEF;

    /// Uniform values in `[lo, hi)` from a fixed-seed LCG.
    fn uniform(state: &mut u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                *state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((*state >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    }

    fn has_avx2_fma() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[test]
    fn vector_block_evaluation_matches_the_scalar_fma_one() {
        if !has_avx2_fma() {
            return; // nothing to compare on this CPU
        }
        let mut state = 1u64;
        for trial in 0..400 {
            // Full blocks, short ones (scalar tail) and lengths not a multiple of 4.
            let n = [BLOCK, BLOCK - 4, BLOCK - 27, 4][trial % 4];
            let xs = uniform(&mut state, n, -1.8, 1.8);
            let fs = uniform(&mut state, n, -2.0, 2.0);
            let c: [f64; N_COEF] = uniform(&mut state, N_COEF, -1.0, 1.0).try_into().unwrap();
            let width = [0.5, 2.0, 50.0][trial % 3]; // many, some or no points outside
            let fit = Fit {
                c,
                lower: -4.0 / 3.0 * width,
                upper: width,
            };
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let vector = unsafe { eval_block(&xs, &fs, &fit) };
            let scalar = blocks::eval_block::<true>(&xs, &fs, &fit);
            if n == BLOCK {
                assert_eq!(vector, scalar, "trial {trial}");
            } else {
                // The scalar code pads a short block with its first residual, kept in
                // its range even when that point is outside: a wider (still valid)
                // range. The masks agree; the vector range lies inside it.
                assert_eq!(vector.0, scalar.0, "trial {trial}");
                assert!(
                    vector.1 >= scalar.1 && vector.2 <= scalar.2,
                    "trial {trial}"
                );
                if scalar.0 & 1 == 0 {
                    assert_eq!(vector, scalar, "trial {trial}");
                }
            }
        }
    }

    #[test]
    fn vector_median_replacement_matches_the_scalar_fma_one() {
        if !has_avx2_fma() {
            return;
        }
        let mut state = 2u64;
        for trial in 0..200 {
            let n = [64, 61, 6][trial % 3];
            let mut flux: Vec<f32> = uniform(&mut state, n, -0.5, 20.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            flux[trial % n] = 0.0; // a dead pixel
            let m = uniform(&mut state, n, 0.0, 20.0);
            let xs = uniform(&mut state, n, -1.8, 1.8);
            let test = MedianTest {
                lower: -4.0,
                upper: 3.0,
                shift: 9.5,
            };
            let run = |vector: bool| {
                let (mut o, mut u, mut acc) = (vec![0.0; n], vec![0.0; n], Sums::default());
                let block = MedianBlock {
                    flux: &flux,
                    m: &m,
                    xs: &xs,
                    o: &mut o,
                    u: &mut u,
                };
                let bad = if vector {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { replace_block(block, &test, &mut acc) }
                } else {
                    median::replace_block::<true>(block, &test, &mut acc)
                };
                (bad, o, u, acc.sum_sq, acc.moments)
            };
            assert_eq!(run(true), run(false), "trial {trial}");
        }
    }

    #[test]
    fn vector_median_pass_matches_the_portable_one() {
        if !has_avx2_fma() {
            return;
        }
        let mut state = 3u64;
        for n in [6, 7, 9, 10, 17, 100, 3001] {
            let mut flux: Vec<f32> = uniform(&mut state, n, 0.0, 10.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let (mut m_vec, mut m_port) = (vec![0.0; n], vec![0.0; n]);
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let vector = unsafe { median_pass_avx2(&flux, &mut m_vec) };
            let portable = median::median_pass::<false>(&flux, &mut m_port);
            assert_eq!(m_vec, m_port, "n = {n}");
            assert!(!vector.non_finite && !portable.non_finite);
            // The sums differ by the roundoff of fused multiply-adds only.
            assert!((vector.m_mean - portable.m_mean).abs() <= 1e-12 * portable.m_mean.abs());
            assert!((vector.d_std - portable.d_std).abs() <= 1e-12 * portable.d_std);
            // A non-finite pixel anywhere (vector part, scalar tail, ends) is seen.
            for at in [0, n / 2, n - 2, n - 1] {
                let keep = flux[at];
                flux[at] = f32::INFINITY;
                // SAFETY: as above.
                assert!(unsafe { median_pass_avx2(&flux, &mut m_vec) }.non_finite);
                flux[at] = keep;
            }
        }
    }

    /// [`median::median_pass`] of the AVX2 build, compiled with its features.
    #[target_feature(enable = "avx2,fma")]
    fn median_pass_avx2(flux: &[f32], m: &mut [f64]) -> median::FirstPass {
        median::median_pass::<true>(flux, m)
    }
}
