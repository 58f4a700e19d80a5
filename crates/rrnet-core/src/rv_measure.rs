//! Radial velocities measured by a least-squares template fit in ln-wavelength.
//!
//! Why a template fit and not a plain FFT cross-correlation: the fit weights every
//! pixel by its IVAR, so masked pixels simply drop out and the curvature of chi2
//! gives a calibrated uncertainty. Per arm the model is `f = a + s * (T(u - v) - 1)`
//! (offset `a` and line strength `s` profiled analytically), so imperfect continuum
//! levels and line depths do not bias the velocity.
//!
//! Algorithm per spectrum (the NumPy reference `rrnet.preprocess.rv` mirrors it):
//! 1. coarse search: IVAR-weighted, mean-subtracted residuals binned on a uniform
//!    ln-wavelength grid of `coarse_kms` bins (counted from the arm's first grid pixel),
//!    cross-correlated with the mean template over +-window; the maximum gives `v0` (at
//!    the window's edge: `WINDOW_EDGE`);
//! 2. the start shift `s0`: `v0` rounded to whole template samples; a grid pixel's
//!    template position at v = 0 splits into `floor(pos)` and `f = pos - floor(pos)`
//!    (once per batch), and a fine step is a whole number of samples (`fine_kms`
//!    rounded), so step k reads sample `floor(pos) - s0 - k * step` with the same `f`
//!    for every step and every template;
//! 3. template choice: the template of least chi2 at `s0` (both usable arms, every 8th
//!    block of 64 usable pixels; all templates in one pass over templates interleaved by
//!    sample);
//! 4. fine search: chi2 of that template on the raw pixels at `s0 + k * step`, per arm, a
//!    step and its two neighbours in one pass; a parabola through the least point and its
//!    neighbours gives the sub-step minimum and the curvature `b` (converted to km/s at the
//!    minimum); `err = sqrt(max(1, chi2_red) / b)`.
//!    Blue, red and combined (summed chi2) are each located this way.
//!
//! The arms are kept on the whole grid, an unusable pixel with weight and residual 0 (it
//! adds exactly 0 to every sum), so everything that depends on the grid alone is computed
//! once per batch ([`Prepared`]). On x86-64 with AVX2 the fit runs in a build compiled
//! for AVX2 (runtime check), with the same operations in the same order: its results are
//! bitwise those of the portable build.

use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::grid::{Arm, C_KMS, N_PIX, N_PIX_ARM};

/// Outcome of one RV measurement (per arm or combined). Values are public interface.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RvStatus {
    Ok = 0,
    /// Fewer than `MIN_GOOD_FRACTION` of the arm's pixels have IVAR > 0 and finite flux.
    Masked = 1,
    /// The arm's usable flux has (almost) no variance: nothing to correlate.
    Flat = 2,
    /// No significant chi2 minimum (line signal below `MIN_DELTA_CHI2`).
    NoPeak = 3,
    /// The best velocity lies at the edge of the search window.
    WindowEdge = 4,
}

impl RvStatus {
    /// Every status with its name, in code order.
    pub const ALL: [(RvStatus, &'static str); 5] = [
        (RvStatus::Ok, "OK"),
        (RvStatus::Masked, "MASKED"),
        (RvStatus::Flat, "FLAT"),
        (RvStatus::NoPeak, "NO_PEAK"),
        (RvStatus::WindowEdge, "WINDOW_EDGE"),
    ];
}

/// Minimum usable fraction of an arm's pixels.
pub const MIN_GOOD_FRACTION: f64 = 0.2;
/// Minimum chi2 gain of the line model over a flat one for a detected peak.
pub const MIN_DELTA_CHI2: f64 = 25.0;
/// Most downhill steps of the fine walk.
const MAX_WALK: usize = 64;
/// Every how many pixels the template choice uses.
const TEMPLATE_STRIDE: usize = 8;
/// Pixels per block of the template choice.
const BLOCK: usize = 64;

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RvSettings {
    /// Half-width of the search window [km/s].
    pub window_kms: f64,
    /// Bin width of the coarse search [km/s].
    pub coarse_kms: f64,
    /// Step of the fine chi2 scan [km/s].
    pub fine_kms: f64,
}

impl Default for RvSettings {
    fn default() -> Self {
        RvSettings {
            window_kms: 600.0,
            coarse_kms: 15.0,
            fine_kms: 3.0,
        }
    }
}

/// Rest-frame templates: `data[m][arm][j]` at ln(wavelength) `ln0[arm] + j * dln`,
/// flattened row-major as `[m, 2, len]`, continuum-normalised (continuum 1).
#[derive(Debug, Clone, Copy)]
pub struct Templates<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub len: usize,
    pub ln0: [f64; 2],
    pub dln: f64,
}

impl<'a> Templates<'a> {
    /// Checked constructor.
    pub fn new(data: &'a [f32], n: usize, ln0: [f64; 2], dln: f64) -> Result<Self, String> {
        if n == 0 || data.is_empty() || !data.len().is_multiple_of(2 * n) {
            return Err("templates must have shape (m, 2, len) with m >= 1".into());
        }
        if !(dln > 0.0) || !dln.is_finite() || !ln0.iter().all(|x| x.is_finite()) {
            return Err("template step must be positive and starts finite".into());
        }
        let len = data.len() / (2 * n);
        if len < 2 {
            return Err("templates need at least 2 samples".into());
        }
        Ok(Templates {
            data,
            n,
            len,
            ln0,
            dln,
        })
    }

    fn row(&self, m: usize, arm: usize) -> &'a [f32] {
        let start = (m * 2 + arm) * self.len;
        &self.data[start..start + self.len]
    }
}

/// One measurement: velocity [km/s], 1-sigma error [km/s], reduced chi2, status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RvValue {
    pub rv: f64,
    pub err: f64,
    pub chi2_red: f64,
    pub status: RvStatus,
}

impl RvValue {
    fn failed(status: RvStatus) -> Self {
        RvValue {
            rv: f64::NAN,
            err: f64::NAN,
            chi2_red: f64::NAN,
            status,
        }
    }
}

/// Blue, red and combined measurements plus the best template (-1: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RvResult {
    pub values: [RvValue; 3],
    pub template: i32,
}

impl Default for RvResult {
    fn default() -> Self {
        let f = RvValue::failed(RvStatus::Masked);
        RvResult {
            values: [f; 3],
            template: -1,
        }
    }
}

/// Grid geometry of one arm at v = 0, the same for every spectrum (computed per batch).
struct ArmGrid {
    /// Template sample at or below each grid pixel's position `pos`: `floor(pos)`.
    jfl: Vec<i64>,
    /// The fraction `pos - floor(pos)`: the same at every whole-sample shift.
    frac: Vec<f64>,
    /// Coarse bin of each grid pixel, counted from the arm's first pixel.
    bin: Vec<u32>,
    /// Mean template minus one at the coarse bin centres: lag `l` puts bin `j` at
    /// `q = j - l + half`, `q < n_bins + 2 * half + 1`.
    centres: Vec<f32>,
    n_bins: usize,
}

impl ArmGrid {
    /// Pixels whose sample pair `jfl - shift`, `jfl - shift + 1` lies inside a row of
    /// `len` (`jfl` increases with the pixel, so they form one range).
    #[inline(always)]
    fn inside(&self, shift: i64, len: usize) -> Range<usize> {
        let lo = self.jfl.partition_point(|&j| j < shift);
        let hi = self.jfl.partition_point(|&j| j + 1 - shift < len as i64);
        lo..hi.max(lo)
    }
}

/// One arm of a spectrum on the whole grid: weight `w` (IVAR; 0 where the pixel is not
/// usable) and residual `d = f - 1` (0 there). Why not only the usable pixels: an unusable
/// pixel adds exactly 0 to every sum, and on the whole grid the positions, samples and
/// coarse bins are the batch's, not recomputed per spectrum.
#[derive(Default)]
struct ArmData {
    arm: usize,
    w: Vec<f64>,
    d: Vec<f64>,
    /// Usable pixels per [`BLOCK`] of grid pixels.
    count: Vec<u32>,
    /// Number of usable pixels.
    n: usize,
    /// `(sum w, sum w d, sum w d^2)` over the arm.
    sums: (f64, f64, f64),
    /// Grid ranges of the template choice: every [`TEMPLATE_STRIDE`]-th block of
    /// [`BLOCK`] usable pixels.
    blocks: Vec<Range<usize>>,
}

/// Per-thread buffers, reused from spectrum to spectrum (why: allocating them per
/// spectrum cost page faults).
#[derive(Default)]
struct Scratch {
    arms: [ArmData; 2],
    bins: Vec<f64>,
    bins32: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// ln(1 + v/c): the velocity's shift in ln(wavelength).
fn shift_of(v_kms: f64) -> f64 {
    (v_kms / C_KMS).ln_1p()
}

fn velocity_of(shift: f64) -> f64 {
    C_KMS * shift.exp_m1()
}

/// Fill `a` from one arm of a row (usable: finite flux and IVAR, IVAR > 0) and return
/// the status when too few pixels are usable or the flux is flat.
#[inline(always)]
fn arm_data(flux: &[f32], ivar: &[f32], a: &mut ArmData) -> Result<(), RvStatus> {
    let n = flux.len().min(ivar.len());
    a.w.resize(n, 0.0);
    a.d.resize(n, 0.0);
    // branch-free selects, then sums in lanes: both vectorise
    for ((w, d), (&f, &iv)) in
        a.w.iter_mut()
            .zip(a.d.iter_mut())
            .zip(flux.iter().zip(ivar))
    {
        let ok = f.is_finite() && iv.is_finite() && iv > 0.0;
        *w = if ok { iv as f64 } else { 0.0 };
        *d = if ok { f as f64 - 1.0 } else { 0.0 };
    }
    let mut acc = [[0.0f64; LANES]; 3];
    a.count.clear();
    for (ws, ds) in a.w.chunks(BLOCK).zip(a.d.chunks(BLOCK)) {
        // BLOCK is a multiple of LANES: lane p of a chunk is the pixel's lane
        let mut k = [0u32; LANES];
        for (w4, d4) in ws.chunks(LANES).zip(ds.chunks(LANES)) {
            for (l, (&w, &d)) in w4.iter().zip(d4).enumerate() {
                let wd = w * d;
                acc[0][l] += w;
                acc[1][l] += wd;
                acc[2][l] += wd * d;
                k[l] += (w > 0.0) as u32;
            }
        }
        a.count.push(k.iter().sum());
    }
    let [sw, sd, sdd] = total(&acc);
    a.n = a.count.iter().map(|&k| k as usize).sum();
    a.sums = (sw, sd, sdd);
    if (a.n as f64) < MIN_GOOD_FRACTION * n as f64 {
        return Err(RvStatus::Masked);
    }
    let mean = sd / sw;
    let mut var = [0.0f64; LANES];
    for (w4, d4) in a.w.chunks(LANES).zip(a.d.chunks(LANES)) {
        for (l, (&w, &d)) in w4.iter().zip(d4).enumerate() {
            var[l] += if w > 0.0 {
                (d - mean) * (d - mean)
            } else {
                0.0
            };
        }
    }
    if !((var[0] + var[1]) + (var[2] + var[3]) > 1e-12 * a.n as f64) {
        return Err(RvStatus::Flat);
    }
    a.blocks.clear();
    for b in (0..a.n).step_by(BLOCK * TEMPLATE_STRIDE) {
        let last = (b + BLOCK).min(a.n) - 1;
        a.blocks
            .push(nth_usable(&a.w, &a.count, b)..nth_usable(&a.w, &a.count, last) + 1);
    }
    Ok(())
}

/// Grid index of usable pixel number `r` (from 0) of weights `w`, with `count` the usable
/// pixels per [`BLOCK`] of the grid.
fn nth_usable(w: &[f64], count: &[u32], mut r: usize) -> usize {
    for (c, &k) in count.iter().enumerate() {
        if r < k as usize {
            for (i, &x) in w[c * BLOCK..].iter().enumerate() {
                if x > 0.0 {
                    if r == 0 {
                        return c * BLOCK + i;
                    }
                    r -= 1;
                }
            }
        }
        r -= k as usize;
    }
    w.len()
}

/// ln(wavelength) of the fixed grid of `arm`, computed once.
pub(crate) fn ln_grid(arm: Arm) -> &'static [f64] {
    static LN: OnceLock<[Vec<f64>; 2]> = OnceLock::new();
    let ln = LN.get_or_init(|| Arm::BOTH.map(|a| a.grid().iter().map(|x| x.ln()).collect()));
    &ln[arm as usize]
}

/// Template minus one at fractional sample `p` (linear interpolation, 0 outside).
#[inline]
fn line_at(row: &[f32], p: f64) -> f64 {
    if !(p >= 0.0) {
        return 0.0;
    }
    let j = p as usize;
    match (row.get(j), row.get(j + 1)) {
        (Some(&a), Some(&b)) => {
            let f = p - j as f64;
            (a as f64) * (1.0 - f) + (b as f64) * f - 1.0
        }
        _ => 0.0,
    }
}

/// Partial sums per lane: pixel `i` adds to lane `i % LANES` (why: independent lanes
/// vectorise and do not wait on one another; a pixel's lane does not depend on the range
/// it is summed in, so one fused pass equals separate passes bit for bit).
const LANES: usize = 4;

/// `(sum w t, sum w t^2, sum w d t)` in lanes.
type Acc = [[f64; LANES]; 3];

/// Add pixel `i` (template value `t`) to its lane.
#[inline(always)]
fn add_pixel(acc: &mut Acc, i: usize, w: f64, d: f64, t: f64) {
    let (l, wt) = (i % LANES, w * t);
    acc[0][l] += wt;
    acc[1][l] += wt * t;
    acc[2][l] += wt * d;
}

/// Template minus one at sample `j + f` of `row` (linear interpolation).
#[inline(always)]
fn lerp(row: &[f32], j: usize, f: f64) -> f64 {
    (row[j] as f64) * (1.0 - f) + (row[j + 1] as f64) * f - 1.0
}

/// Sums over the grid pixels `px`, the template row read at sample `jfl - shift` (the
/// pixels must lie inside the row at `shift`).
#[inline(always)]
fn template_sums(
    a: &ArmData,
    g: &ArmGrid,
    px: Range<usize>,
    row: &[f32],
    shift: i64,
    acc: &mut Acc,
) {
    for i in px {
        let t = lerp(row, (g.jfl[i] - shift) as usize, g.frac[i]);
        add_pixel(acc, i, a.w[i], a.d[i], t);
    }
}

/// The lanes summed: `(sum w t, sum w t^2, sum w d t)`.
#[inline(always)]
fn total(acc: &Acc) -> [f64; 3] {
    acc.map(|lanes| (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
}

/// Profiled chi2 of `a + s * t` and the chi2 of the flat model from the data sums and
/// the template sums (outside the row the template minus one is 0 and adds nothing).
#[inline(always)]
fn chi2_of(sums: (f64, f64, f64), acc: &Acc) -> (f64, f64) {
    let (sw, sd, sdd) = sums;
    let [st, stt, sdt] = total(acc);
    let var_d = sdd - sd * sd / sw;
    let cov_tt = stt - st * st / sw;
    let cov_dt = sdt - sd * st / sw;
    if cov_tt > 0.0 && cov_dt > 0.0 {
        (var_d - cov_dt * cov_dt / cov_tt, var_d)
    } else {
        (var_d, var_d)
    }
}

/// chi2 over all pixels at three shifts in one pass (why: the walk needs neighbouring
/// steps, and one pass reads each pixel and its template window once). Each shift's sums
/// are bit for bit those of a separate pass ([`LANES`]).
#[inline(always)]
fn chi2_three<const AVX2: bool>(
    a: &ArmData,
    g: &ArmGrid,
    row: &[f32],
    shifts: [i64; 3],
) -> [(f64, f64); 3] {
    let ranges = shifts.map(|sh| g.inside(sh, row.len()));
    let lo = ranges.iter().map(|r| r.start).max().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.end).min().unwrap_or(0).max(lo);
    // whole chunks of LANES pixels in the common range, scalar pixels around them
    let c_lo = lo.next_multiple_of(LANES).min(hi);
    let c_hi = c_lo + (hi - c_lo) / LANES * LANES;
    let mut acc = [[[0.0f64; LANES]; 3]; 3];
    for s in 0..3 {
        let r = &ranges[s];
        template_sums(a, g, r.start..c_lo.min(r.end), row, shifts[s], &mut acc[s]);
    }
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: only the AVX2 build instantiates AVX2 = true ([`measure_avx2`]); every
        // pixel of c_lo..c_hi lies inside the row at every shift.
        unsafe { x86::chunks(a, g, row, shifts, c_lo..c_hi, &mut acc) };
    } else {
        chunks(a, g, row, shifts, c_lo..c_hi, &mut acc);
    }
    #[cfg(not(target_arch = "x86_64"))]
    chunks(a, g, row, shifts, c_lo..c_hi, &mut acc);
    for s in 0..3 {
        let r = &ranges[s];
        template_sums(a, g, c_hi.max(r.start)..r.end, row, shifts[s], &mut acc[s]);
    }
    [0, 1, 2].map(|s| chi2_of(a.sums, &acc[s]))
}

/// The common range of [`chi2_three`] in whole chunks of [`LANES`] pixels.
#[inline(always)]
fn chunks(
    a: &ArmData,
    g: &ArmGrid,
    row: &[f32],
    shifts: [i64; 3],
    px: Range<usize>,
    acc: &mut [Acc; 3],
) {
    for c in px.step_by(LANES) {
        let jf: [i64; LANES] = g.jfl[c..c + LANES].try_into().unwrap();
        let f: [f64; LANES] = g.frac[c..c + LANES].try_into().unwrap();
        let w: [f64; LANES] = a.w[c..c + LANES].try_into().unwrap();
        let d: [f64; LANES] = a.d[c..c + LANES].try_into().unwrap();
        for (acc, &sh) in acc.iter_mut().zip(&shifts) {
            let mut t = [0.0f64; LANES];
            for p in 0..LANES {
                t[p] = lerp(row, (jf[p] - sh) as usize, f[p]);
            }
            for p in 0..LANES {
                let wt = w[p] * t[p];
                acc[0][p] += wt;
                acc[1][p] += wt * t[p];
                acc[2][p] += wt * d[p];
            }
        }
    }
}

/// Lags per pass of [`add_ccf`].
const LAGS: usize = 4;

/// `ccf[k] += sum_j bins[j] * centres[j + n_lag - 1 - k]` in f32, [`LAGS`] lags per pass
/// with eight accumulators each (why: each load of `bins` serves four lags, and the
/// fixed-size lanes vectorise).
#[inline(always)]
fn add_ccf(bins: &[f32], centres: &[f32], ccf: &mut [f64]) {
    let (nb, n_lag) = (bins.len(), ccf.len());
    let n8 = nb - nb % 8;
    for k0 in (0..n_lag).step_by(LAGS) {
        let lags = LAGS.min(n_lag - k0);
        let mut acc = [[0.0f32; 8]; LAGS];
        // each lag's window of the centres, exactly nb long (so no bounds checks remain)
        let mut win: [&[f32]; LAGS] = [bins; LAGS];
        for (l, w) in win.iter_mut().enumerate() {
            let off = n_lag - 1 - (k0 + l).min(n_lag - 1);
            *w = &centres[off..off + nb];
        }
        let [w0, w1, w2, w3] = win;
        let ys = w0
            .chunks_exact(8)
            .zip(w1.chunks_exact(8))
            .zip(w2.chunks_exact(8).zip(w3.chunks_exact(8)));
        for (x, ((y0, y1), (y2, y3))) in bins.chunks_exact(8).zip(ys) {
            for m in 0..8 {
                acc[0][m] += x[m] * y0[m];
                acc[1][m] += x[m] * y1[m];
                acc[2][m] += x[m] * y2[m];
                acc[3][m] += x[m] * y3[m];
            }
        }
        for l in 0..lags {
            let tail: f32 = (n8..nb).map(|j| bins[j] * win[l][j]).sum();
            ccf[k0 + l] += (acc[l].iter().sum::<f32>() + tail) as f64;
        }
    }
}

/// Coarse velocity [km/s] maximising the binned cross-correlation with the mean template
/// (refined by a parabola through the best lag), and whether it lies at the edge.
#[inline(always)]
fn coarse_search(
    arms: &[&ArmData],
    pre: &Prepared,
    bins: &mut Vec<f64>,
    bins32: &mut Vec<f32>,
) -> (f64, bool) {
    let half = pre.half;
    let n_lag = 2 * half + 1;
    let mut ccf = vec![0.0f64; n_lag];
    for a in arms {
        let g = &pre.grid[a.arm];
        let mean = a.sums.1 / a.sums.0;
        bins.clear();
        bins.resize(g.n_bins, 0.0);
        for ((&b, &w), &d) in g.bin.iter().zip(&a.w).zip(&a.d) {
            bins[b as usize] += w * (d - mean); // an unusable pixel adds 0
        }
        bins32.clear();
        bins32.extend(bins.iter().map(|&x| x as f32));
        add_ccf(bins32, &g.centres, &mut ccf);
    }
    let best = ccf
        .iter()
        .enumerate()
        .fold(0usize, |b, (k, &c)| if c > ccf[b] { k } else { b });
    let shift = |x: f64| (x - half as f64) * pre.bin * pre.dln;
    if best == 0 || best + 1 == n_lag {
        return (velocity_of(shift(best as f64)), true);
    }
    let (cm, c0, cp) = (ccf[best - 1], ccf[best], ccf[best + 1]);
    let curv = cm + cp - 2.0 * c0;
    let dx = if curv < 0.0 {
        (0.5 * (cm - cp) / curv).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    (velocity_of(shift(best as f64 + dx)), false)
}

/// Lazily evaluated chi2 per arm at shift `s0 + k * step` samples (shared by the three fits).
struct Scan<'a, const AVX2: bool> {
    arms: &'a [&'a ArmData],
    pre: &'a Prepared,
    rows: &'a [&'a [f32]],
    s0: i64,
    step: i64,
    s: &'a RvSettings,
    cache: Vec<(i64, usize, (f64, f64))>,
}

impl<const AVX2: bool> Scan<'_, AVX2> {
    #[inline(always)]
    fn at(&mut self, k: i64, sel: &[usize]) -> (f64, f64) {
        let mut sum = (0.0, 0.0);
        for &i in sel {
            let hit = self
                .cache
                .iter()
                .find(|c| c.0 == k && c.1 == i)
                .map(|c| c.2);
            let c = match hit {
                Some(c) => c,
                None => {
                    // evaluate the step and its two neighbours (the walk asks for them)
                    let ks = [k - 1, k, k + 1];
                    let shifts = ks.map(|k| self.s0 + k * self.step);
                    let a = self.arms[i];
                    let c3 = chi2_three::<AVX2>(a, &self.pre.grid[a.arm], self.rows[i], shifts);
                    for (kk, c) in ks.into_iter().zip(c3) {
                        if !self.cache.iter().any(|c| c.0 == kk && c.1 == i) {
                            self.cache.push((kk, i, c));
                        }
                    }
                    c3[1]
                }
            };
            sum = (sum.0 + c.0, sum.1 + c.1);
        }
        sum
    }

    /// Walk from step `k` downhill to a local minimum of the summed chi2 of `sel`, then
    /// fit a parabola (in steps; converted to km/s at its minimum); returns the value and
    /// the minimum's step.
    #[inline(always)]
    fn locate(&mut self, mut k: i64, sel: &[usize]) -> (RvValue, i64) {
        let n_pix: usize = sel.iter().map(|&i| self.arms[i].n).sum();
        let dln = self.pre.dln;
        let h = velocity_of(self.step as f64 * dln);
        let max_k = (2.0 * self.s.window_kms / h) as i64 + 2;
        for _ in 0..MAX_WALK {
            let c0 = self.at(k, sel); // first: a miss evaluates k - 1..=k + 1 in one pass
            let (cm, cp) = (self.at(k - 1, sel), self.at(k + 1, sel));
            if cm.0 < c0.0 || cp.0 < c0.0 {
                k += if cm.0 < cp.0 { -1 } else { 1 };
                if k.abs() > max_k {
                    break;
                }
                continue;
            }
            if c0.0 + MIN_DELTA_CHI2 > c0.1 {
                return (RvValue::failed(RvStatus::NoPeak), k);
            }
            let b = 0.5 * (cm.0 + cp.0 - 2.0 * c0.0); // chi2 per step^2
            if !(b > 0.0) {
                return (RvValue::failed(RvStatus::NoPeak), k);
            }
            let dx = (cm.0 - cp.0) / (4.0 * b);
            let chi2_red = (c0.0 - b * dx * dx) / (n_pix as f64 - 3.0).max(1.0);
            let u = (self.s0 as f64 + (k as f64 + dx) * self.step as f64) * dln;
            let rv = velocity_of(u);
            if rv.abs() > self.s.window_kms {
                // a peak beyond the window is not a measurement: no value, like other failures
                return (RvValue::failed(RvStatus::WindowEdge), k);
            }
            let dv_dstep = C_KMS * u.exp() * self.step as f64 * dln;
            let err = (chi2_red.max(1.0) / b).sqrt() * dv_dstep;
            return (
                RvValue {
                    rv,
                    err,
                    chi2_red,
                    status: RvStatus::Ok,
                },
                k,
            );
        }
        (RvValue::failed(RvStatus::NoPeak), k)
    }
}

/// Mean of all templates per arm (the coarse search's template).
pub fn mean_templates(t: &Templates) -> [Vec<f32>; 2] {
    let mut out = [vec![0.0f32; t.len], vec![0.0f32; t.len]];
    for (arm, o) in out.iter_mut().enumerate() {
        for m in 0..t.n {
            for (x, &y) in o.iter_mut().zip(t.row(m, arm)) {
                *x += y / t.n as f32;
            }
        }
    }
    out
}

/// The template of least chi2 at the start shift `s0` over the template-choice blocks of
/// the usable arms (all templates in one pass over the pixels).
#[inline(always)]
fn best_template(arms: &[&ArmData], t: &Templates, pre: &Prepared, s0: i64) -> usize {
    let mut chi2 = vec![0.0f64; t.n];
    for a in arms {
        let g = &pre.grid[a.arm];
        let inside = g.inside(s0, t.len);
        let (mut sw, mut sd, mut sdd) = (0.0, 0.0, 0.0);
        for r in &a.blocks {
            for (&w, &d) in a.w[r.clone()].iter().zip(&a.d[r.clone()]) {
                sw += w;
                sd += w * d;
                sdd += w * d * d;
            }
        }
        let var_d = sdd - sd * sd / sw;
        let px: Vec<Range<usize>> = a
            .blocks
            .iter()
            .map(|r| r.start.max(inside.start)..r.end.min(inside.end))
            .filter(|r| !r.is_empty())
            .collect();
        for (gi, group) in pre.groups[a.arm].chunks_exact(GROUP * t.len).enumerate() {
            let (mut st, mut stt, mut sdt) = ([0.0f64; GROUP], [0.0f64; GROUP], [0.0f64; GROUP]);
            for r in &px {
                let (jfl, frac) = (&g.jfl[r.clone()], &g.frac[r.clone()]);
                let (ws, ds) = (&a.w[r.clone()], &a.d[r.clone()]);
                for (((&jf, &f), &w), &d) in jfl.iter().zip(frac).zip(ws).zip(ds) {
                    let j = (jf - s0) as usize * GROUP;
                    let pair: &[f32; 2 * GROUP] = group[j..j + 2 * GROUP].try_into().unwrap();
                    for m in 0..GROUP {
                        let tm = (pair[m] as f64) * (1.0 - f) + (pair[GROUP + m] as f64) * f - 1.0;
                        let wt = w * tm;
                        st[m] += wt;
                        stt[m] += wt * tm;
                        sdt[m] += wt * d;
                    }
                }
            }
            for m in 0..GROUP.min(t.n.saturating_sub(gi * GROUP)) {
                let cov_tt = stt[m] - st[m] * st[m] / sw;
                let cov_dt = sdt[m] - sd * st[m] / sw;
                chi2[gi * GROUP + m] += if cov_tt > 0.0 && cov_dt > 0.0 {
                    var_d - cov_dt * cov_dt / cov_tt
                } else {
                    var_d
                };
            }
        }
    }
    chi2.iter()
        .enumerate()
        .fold(
            (0usize, f64::INFINITY),
            |b, (m, &c)| if c < b.1 { (m, c) } else { b },
        )
        .0
}

/// Templates per group of [`GROUP`] interleaved by sample: `[group][j][m]`.
const GROUP: usize = 8;

/// What every spectrum of a batch shares, computed once per batch: the grid pixels'
/// template samples and fractions at v = 0, their coarse bins and the mean template at
/// the bin centres, and the templates interleaved by sample (why: the template choice
/// read 14 rows far apart per pixel, mostly cache misses; interleaved, one pass reads
/// them as one stream).
pub struct Prepared {
    grid: [ArmGrid; 2],
    groups: [Vec<f32>; 2],
    /// Coarse lags either side of zero.
    half: usize,
    /// Coarse bin width [template samples].
    bin: f64,
    dln: f64,
}

impl Prepared {
    pub fn new(t: &Templates, s: &RvSettings) -> Self {
        let n_groups = t.n.div_ceil(GROUP);
        let groups = [0, 1].map(|arm| {
            let mut g = vec![1.0f32; n_groups * t.len * GROUP];
            for m in 0..t.n {
                let base = (m / GROUP) * t.len * GROUP + m % GROUP;
                for (j, &x) in t.row(m, arm).iter().enumerate() {
                    g[base + j * GROUP] = x;
                }
            }
            g
        });
        let bin = shift_of(s.coarse_kms) / t.dln;
        let half = (shift_of(s.window_kms) / t.dln / bin).ceil() as usize;
        let mean = mean_templates(t);
        let grid = Arm::BOTH.map(|arm| {
            let ln0 = t.ln0[arm as usize];
            let pos: Vec<f64> = ln_grid(arm).iter().map(|&l| (l - ln0) / t.dln).collect();
            let p0 = pos[0];
            let bins: Vec<u32> = pos.iter().map(|&p| ((p - p0) / bin) as u32).collect();
            let n_bins = bins.last().map_or(0, |&b| b as usize + 1);
            let row = &mean[arm as usize];
            let centres = (0..n_bins + 2 * half + 1)
                .map(|q| line_at(row, p0 + (q as f64 - half as f64 + 0.5) * bin) as f32)
                .collect();
            ArmGrid {
                jfl: pos.iter().map(|p| p.floor() as i64).collect(),
                frac: pos.iter().map(|p| p - p.floor()).collect(),
                bin: bins,
                centres,
                n_bins,
            }
        });
        Prepared {
            grid,
            groups,
            half,
            bin,
            dln: t.dln,
        }
    }
}

/// Measure one spectrum: `flux`, `ivar` of length 7200 on the fixed grids, read as
/// observed-frame wavelengths, continuum-normalised; `pre` is `Prepared::new(t, s)`.
pub fn measure_one(
    flux: &[f32],
    ivar: &[f32],
    t: &Templates,
    pre: &Prepared,
    s: &RvSettings,
) -> RvResult {
    if flux.len() != N_PIX || ivar.len() != N_PIX {
        return RvResult::default();
    }
    SCRATCH.with_borrow_mut(|sc| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { measure_avx2(sc, flux, ivar, t, pre, s) };
        }
        measure_impl::<false>(sc, flux, ivar, t, pre, s)
    })
}

/// [`measure_impl`] compiled for AVX2: the same operations in the same order on wider
/// vectors (no fused multiply-adds), so the results are bitwise those of the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn measure_avx2(
    sc: &mut Scratch,
    flux: &[f32],
    ivar: &[f32],
    t: &Templates,
    pre: &Prepared,
    s: &RvSettings,
) -> RvResult {
    measure_impl::<true>(sc, flux, ivar, t, pre, s)
}

/// The body of [`measure_one`]; every function of the fit is inlined into it, so each
/// build compiles them for its own target features (hence no closures on the hot path:
/// a closure would be compiled on its own, for the baseline target).
#[inline(always)]
fn measure_impl<const AVX2: bool>(
    sc: &mut Scratch,
    flux: &[f32],
    ivar: &[f32],
    t: &Templates,
    pre: &Prepared,
    s: &RvSettings,
) -> RvResult {
    let mut res = RvResult::default();
    let Scratch { arms, bins, bins32 } = sc;
    let mut good: Vec<&ArmData> = Vec::with_capacity(2);
    for (arm, a) in arms.iter_mut().enumerate() {
        let px = arm * N_PIX_ARM..(arm + 1) * N_PIX_ARM;
        a.arm = arm;
        match arm_data(&flux[px.clone()], &ivar[px], a) {
            Ok(()) => good.push(a),
            Err(st) => res.values[arm] = RvValue::failed(st),
        }
    }
    fit::<AVX2>(&good, t, pre, s, &mut res, (bins, bins32));
    res
}

/// The fit of [`measure_one`] on the usable arms `arms` (`bins`: the coarse search's buffers).
#[inline(always)]
fn fit<const AVX2: bool>(
    arms: &[&ArmData],
    t: &Templates,
    pre: &Prepared,
    s: &RvSettings,
    res: &mut RvResult,
    bins: (&mut Vec<f64>, &mut Vec<f32>),
) {
    if arms.is_empty() {
        res.values[2] = RvValue::failed(res.values[0].status);
        return;
    }
    let (v0, edge) = coarse_search(arms, pre, bins.0, bins.1);
    if edge {
        for a in arms {
            res.values[a.arm] = RvValue::failed(RvStatus::WindowEdge);
        }
        res.values[2] = RvValue::failed(RvStatus::WindowEdge);
        return;
    }
    let s0 = (shift_of(v0) / t.dln + 0.5).floor() as i64;
    let step = ((shift_of(s.fine_kms) / t.dln + 0.5).floor() as i64).max(1);
    let best = best_template(arms, t, pre, s0);
    res.template = best as i32;
    let rows: Vec<&[f32]> = arms.iter().map(|a| t.row(best, a.arm)).collect();
    let mut scan = Scan::<AVX2> {
        arms,
        pre,
        rows: &rows,
        s0,
        step,
        s,
        cache: Vec::with_capacity(32),
    };
    let all: Vec<usize> = (0..arms.len()).collect();
    let (combined, k) = scan.locate(0, &all);
    res.values[2] = combined;
    for (i, a) in arms.iter().enumerate() {
        res.values[a.arm] = scan.locate(k, &[i]).0;
    }
}

/// Measure a batch of rows `[n, 7200]` in parallel (rayon); `out` has n entries.
pub fn measure_batch(
    flux: &[f32],
    ivar: &[f32],
    t: &Templates,
    s: &RvSettings,
    out: &mut [RvResult],
) -> Result<(), String> {
    if flux.len() != out.len() * N_PIX || ivar.len() != flux.len() {
        return Err(format!("flux and ivar must have shape (n, {N_PIX})"));
    }
    if !(s.window_kms > 0.0 && s.coarse_kms > 0.0 && s.fine_kms > 0.0) {
        return Err("window, coarse and fine steps must be positive".into());
    }
    let pre = Prepared::new(t, s);
    flux.par_chunks(N_PIX)
        .zip(ivar.par_chunks(N_PIX))
        .zip(out.par_iter_mut())
        .for_each(|((f, iv), o)| *o = measure_one(f, iv, t, &pre, s));
    Ok(())
}

/// The AVX2 kernels (x86-64 only), used by the AVX2 build ([`measure_avx2`]) alone.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Acc, ArmData, ArmGrid, LANES};

    /// [`super::chunks`] on AVX2 vectors, lane `p` the pixel `c + p`: one 64-bit load reads
    /// a pixel's two template samples (four loads and a shuffle per shift: a gather
    /// instruction measured slower), and the arithmetic is the scalar one, operation for
    /// operation (no fused multiply-adds), so the sums are bit for bit the same.
    ///
    /// # Safety
    /// The CPU has AVX2; `px` starts at a multiple of [`LANES`], has a multiple of
    /// [`LANES`] pixels, lies inside the arm, and each of its pixels lies inside `row` at
    /// every shift.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn chunks(
        a: &ArmData,
        g: &ArmGrid,
        row: &[f32],
        shifts: [i64; 3],
        px: Range<usize>,
        acc: &mut [Acc; 3],
    ) {
        debug_assert!(px.end <= a.w.len().min(a.d.len()).min(g.jfl.len()).min(g.frac.len()));
        let one = _mm256_set1_pd(1.0);
        let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let mut v = [[_mm256_setzero_pd(); 3]; 3];
        for s in 0..3 {
            for q in 0..3 {
                // SAFETY: a lane array has LANES = 4 f64.
                v[s][q] = unsafe { _mm256_loadu_pd(acc[s][q].as_ptr()) };
            }
        }
        let base = row.as_ptr();
        for c in px.step_by(LANES) {
            // SAFETY: c + 4 <= px.end, within every array (see above).
            let jf: &[i64; LANES] = g.jfl[c..c + LANES].try_into().unwrap();
            let (f, w, d) = unsafe {
                (
                    _mm256_loadu_pd(g.frac.as_ptr().add(c)),
                    _mm256_loadu_pd(a.w.as_ptr().add(c)),
                    _mm256_loadu_pd(a.d.as_ptr().add(c)),
                )
            };
            let f1 = _mm256_sub_pd(one, f);
            for s in 0..3 {
                // SAFETY: samples j and j + 1 lie inside the row (the caller's promise);
                // each load reads those 8 bytes (unaligned loads).
                let pair = unsafe {
                    let at = |p: usize| base.offset((jf[p] - shifts[s]) as isize) as *const f64;
                    let lo = _mm_loadh_pd(_mm_load_sd(at(0)), at(1));
                    let hi = _mm_loadh_pd(_mm_load_sd(at(2)), at(3));
                    _mm256_insertf128_pd::<1>(_mm256_castpd128_pd256(lo), hi)
                };
                let ab = _mm256_permutevar8x32_ps(_mm256_castpd_ps(pair), split);
                let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(ab));
                let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(ab));
                let t = _mm256_sub_pd(
                    _mm256_add_pd(_mm256_mul_pd(lo, f1), _mm256_mul_pd(hi, f)),
                    one,
                );
                let wt = _mm256_mul_pd(w, t);
                v[s][0] = _mm256_add_pd(v[s][0], wt);
                v[s][1] = _mm256_add_pd(v[s][1], _mm256_mul_pd(wt, t));
                v[s][2] = _mm256_add_pd(v[s][2], _mm256_mul_pd(wt, d));
            }
        }
        for s in 0..3 {
            for q in 0..3 {
                // SAFETY: as the loads above.
                unsafe { _mm256_storeu_pd(acc[s][q].as_mut_ptr(), v[s][q]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DLN: f64 = 1.0 / C_KMS; // 1 km/s per sample

    /// A template of Gaussian absorption lines (sigma 17 km/s) over both arms.
    fn template(depth_scale: f32) -> (Vec<f32>, [f64; 2], usize) {
        let ln0 = [4940f64.ln(), 6310f64.ln()];
        let len = ((5360f64.ln() - ln0[0]) / DLN) as usize;
        let mut data = vec![1.0f32; 2 * len];
        for arm in 0..2 {
            let mut seed: u64 = 12345 + arm as u64;
            for _ in 0..40 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let centre =
                    300.0 + (seed >> 11) as f64 / (1u64 << 53) as f64 * (len as f64 - 600.0);
                for j in 0..len {
                    let x = (j as f64 - centre) / 17.0;
                    data[arm * len + j] -= depth_scale * 0.5 * (-0.5 * x * x).exp() as f32;
                }
            }
        }
        (data, ln0, len)
    }

    fn observe(t: &Templates, rv: f64) -> Vec<f32> {
        let mut flux = vec![1.0f32; N_PIX];
        for arm in Arm::BOTH {
            for (i, lam) in arm.grid().iter().enumerate() {
                let p = (lam.ln() - shift_of(rv) - t.ln0[arm as usize]) / t.dln;
                flux[arm as usize * N_PIX_ARM + i] =
                    (1.0 + line_at(t.row(0, arm as usize), p)) as f32;
            }
        }
        flux
    }

    #[test]
    fn recovers_injected_velocity() {
        let (data, ln0, _) = template(1.0);
        let t = Templates::new(&data, 1, ln0, DLN).unwrap();
        let s = RvSettings::default();
        let pre = Prepared::new(&t, &s);
        let ivar = vec![1e4f32; N_PIX];
        for rv in [-437.3, -12.5, 0.0, 3.3, 251.7] {
            let r = measure_one(&observe(&t, rv), &ivar, &t, &pre, &s);
            for v in r.values {
                assert_eq!(v.status, RvStatus::Ok);
                assert!((v.rv - rv).abs() < 0.05, "{} vs {rv}", v.rv);
                assert!(v.err > 0.0 && v.err < 1.0);
            }
        }
    }

    #[test]
    fn three_steps_in_one_pass_equal_three_passes() {
        let (data, ln0, _) = template(1.0);
        let t = Templates::new(&data, 1, ln0, DLN).unwrap();
        let pre = Prepared::new(&t, &RvSettings::default());
        let flux = observe(&t, 37.4);
        let mut a = ArmData::default();
        arm_data(&flux[..N_PIX_ARM], &vec![1e4f32; N_PIX_ARM], &mut a).unwrap();
        let (g, row) = (&pre.grid[0], t.row(0, 0));
        // the first pixel on sample 1 and the last on sample len - 2: the three shifts
        // cover different pixels there
        let first = g.jfl[0] - 1;
        let last = *g.jfl.last().unwrap() - (row.len() as i64 - 2);
        for s0 in [37, first, last, 0] {
            let inside = [-3, 3].map(|o| g.inside(s0 + o, row.len()).len());
            assert!(s0 == 37 || s0 == 0 || inside[0] != inside[1]);
            let shifts = [-3, 0, 3].map(|o| s0 + o);
            let three = chi2_three::<false>(&a, g, row, shifts);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                assert_eq!(chi2_three::<true>(&a, g, row, shifts), three, "s0 {s0}");
            }
            for (k, &sh) in shifts.iter().enumerate() {
                let mut acc = [[0.0; LANES]; 3];
                template_sums(&a, g, g.inside(sh, row.len()), row, sh, &mut acc);
                assert_eq!(three[k], chi2_of(a.sums, &acc), "s0 {s0} shift {sh}");
            }
        }
    }

    #[test]
    fn vector_build_equals_portable_build_bit_for_bit() {
        let (data, ln0, _) = template(1.0);
        let t = Templates::new(&data, 1, ln0, DLN).unwrap();
        let s = RvSettings::default();
        let pre = Prepared::new(&t, &s);
        let mut ivar = vec![1e4f32; N_PIX];
        ivar[100..900].fill(0.0); // masked run: usable blocks differ from grid blocks
        let mut seed: u64 = 7;
        for rv in [-301.7, -2.2, 0.4, 45.3, 512.9] {
            let mut flux = observe(&t, rv);
            for x in flux.iter_mut() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                *x += ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
            }
            let fast = measure_one(&flux, &ivar, &t, &pre, &s);
            let portable =
                measure_impl::<false>(&mut Scratch::default(), &flux, &ivar, &t, &pre, &s);
            assert_eq!(fast, portable, "rv {rv}");
            assert_eq!(fast.values[2].status, RvStatus::Ok);
        }
    }

    #[test]
    fn flat_masked_and_edge_give_status() {
        let (data, ln0, _) = template(1.0);
        let t = Templates::new(&data, 1, ln0, DLN).unwrap();
        let s = RvSettings::default();
        let pre = Prepared::new(&t, &s);
        let flat = vec![1.0f32; N_PIX];
        let ivar = vec![1e4f32; N_PIX];
        let r = measure_one(&flat, &ivar, &t, &pre, &s);
        assert!(r.values.iter().all(|v| v.status == RvStatus::Flat));
        let r = measure_one(&flat, &vec![0.0; N_PIX], &t, &pre, &s);
        assert!(r.values.iter().all(|v| v.status == RvStatus::Masked));
        let r = measure_one(&observe(&t, 615.0), &ivar, &t, &pre, &s);
        assert!(r.values[2].status != RvStatus::Ok);
        let nan = vec![f32::NAN; N_PIX];
        let r = measure_one(&nan, &ivar, &t, &pre, &s);
        assert!(r.values.iter().all(|v| v.status == RvStatus::Masked));
    }
}
