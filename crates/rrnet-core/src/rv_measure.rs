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
//!    ln-wavelength grid of `coarse_kms` bins, cross-correlated with the mean template
//!    over +-window; the maximum gives `v0` (at the window's edge: `WINDOW_EDGE`);
//! 2. the start shift `s0`: `v0` rounded to whole template samples; every usable pixel's
//!    template position `pos - s0 = j0 + f` is computed once, and a fine step is a whole
//!    number of samples (`fine_kms` rounded), so step k reads sample `j0 - k * step` with
//!    the same `f` for every step and every template;
//! 3. template choice: the template of least chi2 at `s0` (both usable arms, every 8th
//!    block of 64 pixels; all templates in one pass over templates interleaved by sample);
//! 4. fine search: chi2 of that template on the raw pixels at `s0 + k * step`, per arm, a
//!    step and its two neighbours in one pass; a parabola through the least point and its
//!    neighbours gives the sub-step minimum and the curvature `b` (converted to km/s at the
//!    minimum); `err = sqrt(max(1, chi2_red) / b)`.
//!    Blue, red and combined (summed chi2) are each located this way.

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

/// One arm's usable pixels: template-sample position at v = 0, residual `f - 1`, weight.
struct ArmData {
    pos: Vec<f64>,
    d: Vec<f64>,
    w: Vec<f64>,
}

/// Spare f64 and i64 buffers of one thread.
type Pool = std::cell::RefCell<(Vec<Vec<f64>>, Vec<Vec<i64>>)>;

thread_local! {
    /// Buffers of finished measurements, reused by the next one on this thread (why: the
    /// ~300 kB allocated and freed per spectrum went back to the system and every spectrum
    /// paid page faults to get it again).
    static POOL: Pool = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// An empty vector with room for `n`, from the pool if one is there.
fn take_f64(n: usize) -> Vec<f64> {
    let mut v = POOL.with(|p| p.borrow_mut().0.pop()).unwrap_or_default();
    v.clear();
    v.reserve(n);
    v
}

fn take_i64(n: usize) -> Vec<i64> {
    let mut v = POOL.with(|p| p.borrow_mut().1.pop()).unwrap_or_default();
    v.clear();
    v.reserve(n);
    v
}

/// Return the buffers of a finished measurement to the pool.
fn recycle(arms: Vec<ArmData>, ips: Vec<Interp>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        for a in arms {
            p.0.extend([a.pos, a.d, a.w]);
        }
        for ip in ips {
            p.0.push(ip.f);
            p.1.push(ip.j0);
        }
    });
}

/// ln(1 + v/c): the velocity's shift in ln(wavelength).
fn shift_of(v_kms: f64) -> f64 {
    (v_kms / C_KMS).ln_1p()
}

fn velocity_of(shift: f64) -> f64 {
    C_KMS * shift.exp_m1()
}

/// The usable pixels of one arm of a row, or the status saying why there are too few;
/// `pos` is every grid pixel's template-sample position at v = 0.
fn arm_data(flux: &[f32], ivar: &[f32], pos: &[f64]) -> Result<ArmData, RvStatus> {
    // branch-free compaction: every pixel is written, only usable ones advance
    let n = pos.len().min(flux.len()).min(ivar.len());
    let mut a = ArmData {
        pos: take_f64(n),
        d: take_f64(n),
        w: take_f64(n),
    };
    a.pos.resize(n, 0.0);
    a.d.resize(n, 0.0);
    a.w.resize(n, 0.0);
    let mut k = 0;
    for i in 0..n {
        let (f, iv) = (flux[i] as f64, ivar[i] as f64);
        a.pos[k] = pos[i];
        a.d[k] = f - 1.0;
        a.w[k] = iv;
        k += (f.is_finite() && iv.is_finite() && iv > 0.0) as usize;
    }
    a.pos.truncate(k);
    a.d.truncate(k);
    a.w.truncate(k);
    if (a.w.len() as f64) < MIN_GOOD_FRACTION * pos.len() as f64 {
        return Err(RvStatus::Masked);
    }
    let sw: f64 = a.w.iter().sum();
    let mean = a.w.iter().zip(&a.d).map(|(w, d)| w * d).sum::<f64>() / sw;
    let n = a.d.len() as f64;
    let var = a.d.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / n;
    if !(var > 1e-12) {
        return Err(RvStatus::Flat);
    }
    Ok(a)
}

/// ln(wavelength) of the fixed grid of `arm`, computed once.
fn ln_grid(arm: Arm) -> &'static [f64] {
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

/// The pixels of every `stride`-th block of [`BLOCK`] (in order).
fn selected(n: usize, stride: usize) -> impl Iterator<Item = usize> {
    (0..n)
        .step_by(BLOCK * stride.max(1))
        .flat_map(move |b| b..(b + BLOCK).min(n))
}

/// Template-independent sums over the selected pixels: `(sum w, sum w d, sum w d^2)`.
fn data_sums(a: &ArmData, stride: usize) -> (f64, f64, f64) {
    let (mut sw, mut sd, mut sdd) = (0.0, 0.0, 0.0);
    for i in selected(a.pos.len(), stride) {
        let (w, d) = (a.w[i], a.d[i]);
        sw += w;
        sd += w * d;
        sdd += w * d * d;
    }
    (sw, sd, sdd)
}

/// Every pixel's template sample at shift `s0` (whole samples): `pos - s0 = j0 + f`,
/// `0 <= f < 1`. A step of the fine grid moves by whole samples, so `f` serves every step
/// and every template (why: the positions were recomputed per shift and per template).
struct Interp {
    j0: Vec<i64>,
    f: Vec<f64>,
}

impl Interp {
    fn new(a: &ArmData, s0: i64) -> Self {
        let s0 = s0 as f64;
        // floor without the libm call (x86-64 baseline has no rounding instruction)
        let mut j0 = take_i64(a.pos.len());
        j0.extend(a.pos.iter().map(|&p| {
            let x = p - s0;
            let j = x as i64;
            j - ((j as f64) > x) as i64
        }));
        let mut f = take_f64(a.pos.len());
        f.extend(a.pos.iter().zip(&j0).map(|(&p, &j)| (p - s0) - j as f64));
        Interp { j0, f }
    }

    /// Pixels whose sample pair `j0 - off`, `j0 - off + 1` lies inside a row of `len`
    /// (`j0` increases with the pixel, so they form one range).
    fn inside(&self, off: i64, len: usize) -> std::ops::Range<usize> {
        let lo = self.j0.partition_point(|&j| j < off);
        let hi = self.j0.partition_point(|&j| j + 1 - off < len as i64);
        lo..hi.max(lo)
    }
}

/// Sums `(sum w t, sum w t^2, sum w d t)` over `pixels`, the template row read `off`
/// samples before each pixel's `j0` (the pixels must lie inside the row at `off`).
fn template_sums(
    a: &ArmData,
    ip: &Interp,
    pixels: impl Iterator<Item = usize>,
    row: &[f32],
    off: i64,
    acc: &mut [f64; 3],
) {
    for i in pixels {
        let j = (ip.j0[i] - off) as usize;
        let f = ip.f[i];
        let t = (row[j] as f64) * (1.0 - f) + (row[j + 1] as f64) * f - 1.0;
        let wt = a.w[i] * t;
        acc[0] += wt;
        acc[1] += wt * t;
        acc[2] += wt * a.d[i];
    }
}

/// Profiled chi2 of `a + s * t` and the chi2 of the flat model from the data sums and
/// the template sums (outside the row the template minus one is 0 and adds nothing).
fn chi2_of(sums: (f64, f64, f64), acc: &[f64; 3]) -> (f64, f64) {
    let (sw, sd, sdd) = sums;
    let [st, stt, sdt] = *acc;
    let var_d = sdd - sd * sd / sw;
    let cov_tt = stt - st * st / sw;
    let cov_dt = sdt - sd * st / sw;
    if cov_tt > 0.0 && cov_dt > 0.0 {
        (var_d - cov_dt * cov_dt / cov_tt, var_d)
    } else {
        (var_d, var_d)
    }
}

/// chi2 over all pixels at three offsets in one pass (why: the walk needs neighbouring
/// steps, and one pass reads each pixel and its template window once). Per offset the
/// sums run over the same pixels in the same order as three separate passes.
fn chi2_three(
    a: &ArmData,
    ip: &Interp,
    sums: (f64, f64, f64),
    row: &[f32],
    offs: [i64; 3],
) -> [(f64, f64); 3] {
    let ranges = offs.map(|o| ip.inside(o, row.len()));
    let lo = ranges.iter().map(|r| r.start).max().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.end).min().unwrap_or(0).max(lo);
    let mut acc = [[0.0f64; 3]; 3];
    for s in 0..3 {
        let r = &ranges[s];
        template_sums(a, ip, r.start..lo.min(r.end), row, offs[s], &mut acc[s]);
    }
    let (j0, f) = (&ip.j0[lo..hi], &ip.f[lo..hi]);
    let (w, d) = (&a.w[lo..hi], &a.d[lo..hi]);
    for (((&j0, &f), &w), &d) in j0.iter().zip(f).zip(w).zip(d) {
        for s in 0..3 {
            let j = (j0 - offs[s]) as usize;
            let t = (row[j] as f64) * (1.0 - f) + (row[j + 1] as f64) * f - 1.0;
            let wt = w * t;
            acc[s][0] += wt;
            acc[s][1] += wt * t;
            acc[s][2] += wt * d;
        }
    }
    for s in 0..3 {
        let r = &ranges[s];
        template_sums(a, ip, hi.max(r.start)..r.end, row, offs[s], &mut acc[s]);
    }
    [0, 1, 2].map(|s| chi2_of(sums, &acc[s]))
}

/// Dot product in f32 with eight independent accumulators (so it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Coarse velocity [km/s] maximising the binned cross-correlation with `mean_t`
/// (refined by a parabola through the best lag), and whether it lies at the edge.
fn coarse_search(
    arms: &[&ArmData],
    mean_t: &[Vec<f32>; 2],
    arm_ids: &[usize],
    t: &Templates,
    s: &RvSettings,
) -> (f64, bool) {
    let bin = shift_of(s.coarse_kms) / t.dln; // bin width in template samples
    let half = (shift_of(s.window_kms) / t.dln / bin).ceil() as usize;
    let n_lag = 2 * half + 1;
    let mut ccf = vec![0.0f64; n_lag];
    for (a, &arm) in arms.iter().zip(arm_ids) {
        let (Some(&p_first), Some(&p_last)) = (a.pos.first(), a.pos.last()) else {
            continue;
        };
        let nb = ((p_last - p_first) / bin) as usize + 1;
        let mut bins = vec![0.0f32; nb];
        let (sw, sd) =
            a.w.iter()
                .zip(&a.d)
                .fold((0.0, 0.0), |(x, y), (w, d)| (x + w, y + w * d));
        let mean = sd / sw;
        // pixels come in increasing position: sum each bin's run in a register
        let (mut cur, mut acc) = (0usize, 0.0f32);
        for i in 0..a.pos.len() {
            let j = ((a.pos[i] - p_first) / bin) as usize;
            if j != cur {
                if let Some(b) = bins.get_mut(cur) {
                    *b += acc;
                }
                (cur, acc) = (j, 0.0);
            }
            acc += (a.w[i] * (a.d[i] - mean)) as f32;
        }
        if let Some(b) = bins.get_mut(cur) {
            *b += acc;
        }
        // template at the bin centres: lag l puts bin j at q = j - l + half
        let tc: Vec<f32> = (0..nb + n_lag)
            .map(|q| line_at(&mean_t[arm], p_first + (q as f64 - half as f64 + 0.5) * bin) as f32)
            .collect();
        for (k, c) in ccf.iter_mut().enumerate() {
            let off = 2 * half - k;
            *c += dot(&bins, &tc[off..off + nb]) as f64;
        }
    }
    let best = ccf
        .iter()
        .enumerate()
        .fold(0usize, |b, (k, &c)| if c > ccf[b] { k } else { b });
    if best == 0 || best + 1 == n_lag {
        return (velocity_of((best as f64 - half as f64) * bin * t.dln), true);
    }
    let (cm, c0, cp) = (ccf[best - 1], ccf[best], ccf[best + 1]);
    let curv = cm + cp - 2.0 * c0;
    let dx = if curv < 0.0 {
        (0.5 * (cm - cp) / curv).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    (
        velocity_of((best as f64 - half as f64 + dx) * bin * t.dln),
        false,
    )
}

/// Lazily evaluated chi2 per arm at shift `s0 + k * step` samples (shared by the three fits).
struct Scan<'a> {
    arms: &'a [&'a ArmData],
    ips: &'a [Interp],
    rows: &'a [&'a [f32]],
    sums: Vec<(f64, f64, f64)>,
    s0: i64,
    step: i64,
    t: &'a Templates<'a>,
    s: &'a RvSettings,
    cache: Vec<(i64, usize, (f64, f64))>,
}

impl Scan<'_> {
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
                    let offs = ks.map(|k| k * self.step);
                    let c3 =
                        chi2_three(self.arms[i], &self.ips[i], self.sums[i], self.rows[i], offs);
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
    fn locate(&mut self, mut k: i64, sel: &[usize]) -> (RvValue, i64) {
        let n_pix: usize = sel.iter().map(|&i| self.arms[i].w.len()).sum();
        let h = velocity_of(self.step as f64 * self.t.dln);
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
            let u = (self.s0 as f64 + (k as f64 + dx) * self.step as f64) * self.t.dln;
            let rv = velocity_of(u);
            if rv.abs() > self.s.window_kms {
                // a peak beyond the window is not a measurement: no value, like other failures
                return (RvValue::failed(RvStatus::WindowEdge), k);
            }
            let dv_dstep = C_KMS * u.exp() * self.step as f64 * self.t.dln;
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

/// The template of least chi2 at the start shift over every [`TEMPLATE_STRIDE`]-th block
/// of pixels of the usable arms (all templates in one pass over the pixels).
fn best_template(
    arms: &[&ArmData],
    ids: &[usize],
    ips: &[Interp],
    t: &Templates,
    pre: &Prepared,
) -> usize {
    let mut chi2 = vec![0.0f64; t.n];
    for ((a, ip), &arm) in arms.iter().zip(ips).zip(ids) {
        let inside = ip.inside(0, t.len);
        let (sw, sd, sdd) = data_sums(a, TEMPLATE_STRIDE);
        let var_d = sdd - sd * sd / sw;
        for (g, group) in pre.groups[arm].chunks_exact(GROUP * t.len).enumerate() {
            let (mut st, mut stt, mut sdt) = ([0.0f64; GROUP], [0.0f64; GROUP], [0.0f64; GROUP]);
            for i in selected(a.pos.len(), TEMPLATE_STRIDE).filter(|i| inside.contains(i)) {
                let j = ip.j0[i] as usize * GROUP;
                let (f, w, d) = (ip.f[i], a.w[i], a.d[i]);
                let (lo, hi) = (&group[j..j + GROUP], &group[j + GROUP..j + 2 * GROUP]);
                for m in 0..GROUP {
                    let tm = (lo[m] as f64) * (1.0 - f) + (hi[m] as f64) * f - 1.0;
                    let wt = w * tm;
                    st[m] += wt;
                    stt[m] += wt * tm;
                    sdt[m] += wt * d;
                }
            }
            for m in 0..GROUP.min(t.n.saturating_sub(g * GROUP)) {
                let cov_tt = stt[m] - st[m] * st[m] / sw;
                let cov_dt = sdt[m] - sd * st[m] / sw;
                chi2[g * GROUP + m] += if cov_tt > 0.0 && cov_dt > 0.0 {
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

/// What every spectrum of a batch shares, computed once per batch: the mean template, the
/// grid pixels' template positions at v = 0 and the templates interleaved by sample (why:
/// the template choice read 14 rows far apart per pixel, mostly cache misses; interleaved,
/// one pass reads them as one stream).
pub struct Prepared {
    mean: [Vec<f32>; 2],
    pos: [Vec<f64>; 2],
    groups: [Vec<f32>; 2],
}

impl Prepared {
    pub fn new(t: &Templates) -> Self {
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
        let pos = Arm::BOTH.map(|arm| {
            let ln0 = t.ln0[arm as usize];
            ln_grid(arm).iter().map(|&l| (l - ln0) / t.dln).collect()
        });
        Prepared {
            mean: mean_templates(t),
            pos,
            groups,
        }
    }
}

/// Measure one spectrum: `flux`, `ivar` of length 7200 on the fixed grids, read as
/// observed-frame wavelengths, continuum-normalised; `pre` is `Prepared::new(t)`.
pub fn measure_one(
    flux: &[f32],
    ivar: &[f32],
    t: &Templates,
    pre: &Prepared,
    s: &RvSettings,
) -> RvResult {
    let mut res = RvResult::default();
    if flux.len() != N_PIX || ivar.len() != N_PIX {
        return res;
    }
    let data: Vec<Result<ArmData, RvStatus>> = Arm::BOTH
        .iter()
        .map(|&arm| {
            let px = arm as usize * N_PIX_ARM..(arm as usize + 1) * N_PIX_ARM;
            arm_data(&flux[px.clone()], &ivar[px], &pre.pos[arm as usize])
        })
        .collect();
    let mut ips = Vec::new();
    fit(&data, t, pre, s, &mut res, &mut ips);
    recycle(data.into_iter().flatten().collect(), ips);
    res
}

/// The fit of [`measure_one`] on the arms' usable pixels; `ips` keeps the interpolation
/// buffers for reuse.
fn fit(
    data: &[Result<ArmData, RvStatus>],
    t: &Templates,
    pre: &Prepared,
    s: &RvSettings,
    res: &mut RvResult,
    ips: &mut Vec<Interp>,
) {
    let mut good: Vec<(&ArmData, usize)> = Vec::new();
    for (arm, d) in data.iter().enumerate() {
        match d {
            Ok(a) => good.push((a, arm)),
            Err(st) => res.values[arm] = RvValue::failed(*st),
        }
    }
    if good.is_empty() {
        res.values[2] = RvValue::failed(res.values[0].status);
        return;
    }
    let arms: Vec<&ArmData> = good.iter().map(|g| g.0).collect();
    let ids: Vec<usize> = good.iter().map(|g| g.1).collect();
    let (v0, edge) = coarse_search(&arms, &pre.mean, &ids, t, s);
    if edge {
        for &arm in &ids {
            res.values[arm] = RvValue::failed(RvStatus::WindowEdge);
        }
        res.values[2] = RvValue::failed(RvStatus::WindowEdge);
        return;
    }
    let s0 = (shift_of(v0) / t.dln + 0.5).floor() as i64;
    let step = ((shift_of(s.fine_kms) / t.dln + 0.5).floor() as i64).max(1);
    ips.extend(arms.iter().map(|a| Interp::new(a, s0)));
    let best = best_template(&arms, &ids, ips, t, pre);
    res.template = best as i32;
    let rows: Vec<&[f32]> = ids.iter().map(|&arm| t.row(best, arm)).collect();
    let mut scan = Scan {
        arms: &arms,
        ips,
        rows: &rows,
        sums: arms.iter().map(|a| data_sums(a, 1)).collect(),
        s0,
        step,
        t,
        s,
        cache: Vec::with_capacity(32),
    };
    let all: Vec<usize> = (0..ids.len()).collect();
    let (combined, k) = scan.locate(0, &all);
    res.values[2] = combined;
    for (i, &arm) in ids.iter().enumerate() {
        res.values[arm] = scan.locate(k, &[i]).0;
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
    let pre = Prepared::new(t);
    flux.par_chunks(N_PIX)
        .zip(ivar.par_chunks(N_PIX))
        .zip(out.par_iter_mut())
        .for_each(|((f, iv), o)| *o = measure_one(f, iv, t, &pre, s));
    Ok(())
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
        let pre = Prepared::new(&t);
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
        let pre = Prepared::new(&t);
        let flux = observe(&t, 37.4);
        let a = arm_data(&flux[..N_PIX_ARM], &vec![1e4f32; N_PIX_ARM], &pre.pos[0]).unwrap();
        let row = t.row(0, 0);
        let sums = data_sums(&a, 1);
        // the first pixel on sample 1 and the last on sample len - 2: the three offsets
        // cover different pixels there
        let first = a.pos[0].floor() as i64 - 1;
        let last = *a.pos.last().unwrap() as i64 - (row.len() as i64 - 2);
        for s0 in [37, first, last, 0] {
            let ip = Interp::new(&a, s0);
            let inside = [-3, 3].map(|o| ip.inside(o, row.len()).len());
            assert!(s0 == 37 || s0 == 0 || inside[0] != inside[1]);
            let offs = [-3, 0, 3];
            let three = chi2_three(&a, &ip, sums, row, offs);
            for (k, &off) in offs.iter().enumerate() {
                let mut acc = [0.0; 3];
                template_sums(&a, &ip, ip.inside(off, row.len()), row, off, &mut acc);
                assert_eq!(three[k], chi2_of(sums, &acc), "s0 {s0} off {off}");
            }
        }
    }

    #[test]
    fn flat_masked_and_edge_give_status() {
        let (data, ln0, _) = template(1.0);
        let t = Templates::new(&data, 1, ln0, DLN).unwrap();
        let s = RvSettings::default();
        let pre = Prepared::new(&t);
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
