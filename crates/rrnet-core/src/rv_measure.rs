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
//! 2. template choice: the template of least chi2 at `v0` (both usable arms);
//! 3. fine search: chi2 of that template on the raw pixels at `v0 + k * fine_kms`,
//!    k = -K..K, per arm; a parabola through the least point and its neighbours gives
//!    the sub-step minimum and the curvature `b`; `err = sqrt(max(1, chi2_red) / b)`.
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

/// ln(1 + v/c): the velocity's shift in ln(wavelength).
fn shift_of(v_kms: f64) -> f64 {
    (v_kms / C_KMS).ln_1p()
}

fn velocity_of(shift: f64) -> f64 {
    C_KMS * shift.exp_m1()
}

/// The usable pixels of one arm of a row, or the status saying why there are too few.
fn arm_data(flux: &[f32], ivar: &[f32], arm: Arm, t: &Templates) -> Result<ArmData, RvStatus> {
    let grid = ln_grid(arm);
    let ln0 = t.ln0[arm as usize];
    let mut a = ArmData {
        pos: Vec::with_capacity(N_PIX_ARM),
        d: Vec::with_capacity(N_PIX_ARM),
        w: Vec::with_capacity(N_PIX_ARM),
    };
    for ((&f, &iv), &lam) in flux.iter().zip(ivar).zip(grid) {
        let (f, iv) = (f as f64, iv as f64);
        if f.is_finite() && iv.is_finite() && iv > 0.0 {
            a.pos.push((lam - ln0) / t.dln);
            a.d.push(f - 1.0);
            a.w.push(iv);
        }
    }
    if (a.w.len() as f64) < MIN_GOOD_FRACTION * grid.len() as f64 {
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

/// Where the selected pixels fall on a template row at one shift: `(pixel, sample, fraction)`
/// of the pixels inside the row (outside it the template minus one is 0 and adds nothing).
/// Computed once per shift and shared by every template (why: the template choice
/// evaluated the same positions for each of its templates).
fn interp_at(a: &ArmData, len: usize, shift_samples: f64, stride: usize) -> Vec<(u32, u32, f64)> {
    let mut out = Vec::with_capacity(a.pos.len() / stride.max(1) + BLOCK);
    let mut push = |i: usize, p: f64| {
        if p >= 0.0 {
            let j = p as usize;
            if j + 1 < len {
                out.push((i as u32, j as u32, p - j as f64));
            }
        }
    };
    if stride <= 1 {
        // every pixel: a plain loop (the block iterator does not vectorise)
        for (i, &x) in a.pos.iter().enumerate() {
            push(i, x - shift_samples);
        }
    } else {
        for i in selected(a.pos.len(), stride) {
            push(i, a.pos[i] - shift_samples);
        }
    }
    out
}

/// Profiled chi2 of `a + s * t` and the chi2 of the flat model from the data sums and
/// the interpolation of one template row (same sums, in the same order, as a direct
/// per-pixel evaluation with [`line_at`]).
fn chi2_from(
    a: &ArmData,
    sums: (f64, f64, f64),
    at: &[(u32, u32, f64)],
    row: &[f32],
) -> (f64, f64) {
    let (sw, sd, sdd) = sums;
    let (mut st, mut stt, mut sdt) = (0.0, 0.0, 0.0);
    for &(i, j, f) in at {
        let (i, j) = (i as usize, j as usize);
        let t = (row[j] as f64) * (1.0 - f) + (row[j + 1] as f64) * f - 1.0;
        let wt = a.w[i] * t;
        st += wt;
        stt += wt * t;
        sdt += wt * a.d[i];
    }
    let var_d = sdd - sd * sd / sw;
    let cov_tt = stt - st * st / sw;
    let cov_dt = sdt - sd * st / sw;
    if cov_tt > 0.0 && cov_dt > 0.0 {
        (var_d - cov_dt * cov_dt / cov_tt, var_d)
    } else {
        (var_d, var_d)
    }
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
        for i in 0..a.pos.len() {
            let j = ((a.pos[i] - p_first) / bin) as usize;
            if let Some(b) = bins.get_mut(j) {
                *b += (a.w[i] * (a.d[i] - mean)) as f32;
            }
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

/// Lazily evaluated chi2 per arm at `v0 + k * fine_kms` (shared by the three fits).
struct Scan<'a> {
    arms: &'a [&'a ArmData],
    rows: &'a [&'a [f32]],
    sums: Vec<(f64, f64, f64)>,
    v0: f64,
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
                    let v = self.v0 + k as f64 * self.s.fine_kms;
                    let row = self.rows[i];
                    let at = interp_at(self.arms[i], row.len(), shift_of(v) / self.t.dln, 1);
                    let c = chi2_from(self.arms[i], self.sums[i], &at, row);
                    self.cache.push((k, i, c));
                    c
                }
            };
            sum = (sum.0 + c.0, sum.1 + c.1);
        }
        sum
    }

    /// Walk from step `k` downhill to a local minimum of the summed chi2 of `sel`, then
    /// fit a parabola; returns the value and the minimum's step.
    fn locate(&mut self, mut k: i64, sel: &[usize]) -> (RvValue, i64) {
        let n_pix: usize = sel.iter().map(|&i| self.arms[i].w.len()).sum();
        let h = self.s.fine_kms;
        let max_k = (2.0 * self.s.window_kms / h) as i64 + 2;
        for _ in 0..MAX_WALK {
            let (cm, c0, cp) = (self.at(k - 1, sel), self.at(k, sel), self.at(k + 1, sel));
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
            let b = (cm.0 + cp.0 - 2.0 * c0.0) / (2.0 * h * h);
            if !(b > 0.0) {
                return (RvValue::failed(RvStatus::NoPeak), k);
            }
            let dx = (cm.0 - cp.0) / (4.0 * b * h);
            let chi2_red = (c0.0 - b * dx * dx) / (n_pix as f64 - 3.0).max(1.0);
            let rv = self.v0 + k as f64 * h + dx;
            let status = if rv.abs() > self.s.window_kms {
                RvStatus::WindowEdge
            } else {
                RvStatus::Ok
            };
            let err = (chi2_red.max(1.0) / b).sqrt();
            return (
                RvValue {
                    rv,
                    err,
                    chi2_red,
                    status,
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

/// Measure one spectrum: `flux`, `ivar` of length 7200 on the fixed grids, read as
/// observed-frame wavelengths, continuum-normalised.
pub fn measure_one(
    flux: &[f32],
    ivar: &[f32],
    t: &Templates,
    mean_t: &[Vec<f32>; 2],
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
            arm_data(&flux[px.clone()], &ivar[px], arm, t)
        })
        .collect();
    let mut good: Vec<(&ArmData, usize)> = Vec::new();
    for (arm, d) in data.iter().enumerate() {
        match d {
            Ok(a) => good.push((a, arm)),
            Err(st) => res.values[arm] = RvValue::failed(*st),
        }
    }
    if good.is_empty() {
        res.values[2] = RvValue::failed(res.values[0].status);
        return res;
    }
    let arms: Vec<&ArmData> = good.iter().map(|g| g.0).collect();
    let ids: Vec<usize> = good.iter().map(|g| g.1).collect();
    let (v0, edge) = coarse_search(&arms, mean_t, &ids, t, s);
    if edge {
        for &arm in &ids {
            res.values[arm] = RvValue::failed(RvStatus::WindowEdge);
        }
        res.values[2] = RvValue::failed(RvStatus::WindowEdge);
        return res;
    }
    let sh = shift_of(v0) / t.dln;
    let choice: Vec<_> = good
        .iter()
        .map(|(a, _)| {
            let at = interp_at(a, t.len, sh, TEMPLATE_STRIDE);
            (data_sums(a, TEMPLATE_STRIDE), at)
        })
        .collect();
    let best = (0..t.n)
        .map(|m| {
            let c: f64 = good
                .iter()
                .zip(&choice)
                .map(|((a, arm), (sums, at))| chi2_from(a, *sums, at, t.row(m, *arm)).0)
                .sum();
            (m, c)
        })
        .fold(
            (0usize, f64::INFINITY),
            |b, x| if x.1 < b.1 { x } else { b },
        )
        .0;
    res.template = best as i32;
    let rows: Vec<&[f32]> = ids.iter().map(|&arm| t.row(best, arm)).collect();
    let mut scan = Scan {
        arms: &arms,
        rows: &rows,
        sums: arms.iter().map(|a| data_sums(a, 1)).collect(),
        v0,
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
    res
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
    let mean_t = mean_templates(t);
    flux.par_chunks(N_PIX)
        .zip(ivar.par_chunks(N_PIX))
        .zip(out.par_iter_mut())
        .for_each(|((f, iv), o)| *o = measure_one(f, iv, t, &mean_t, s));
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
        let mean_t = mean_templates(&t);
        let ivar = vec![1e4f32; N_PIX];
        for rv in [-437.3, -12.5, 0.0, 3.3, 251.7] {
            let r = measure_one(&observe(&t, rv), &ivar, &t, &mean_t, &s);
            for v in r.values {
                assert_eq!(v.status, RvStatus::Ok);
                assert!((v.rv - rv).abs() < 0.05, "{} vs {rv}", v.rv);
                assert!(v.err > 0.0 && v.err < 1.0);
            }
        }
    }

    #[test]
    fn flat_masked_and_edge_give_status() {
        let (data, ln0, _) = template(1.0);
        let t = Templates::new(&data, 1, ln0, DLN).unwrap();
        let s = RvSettings::default();
        let mean_t = mean_templates(&t);
        let flat = vec![1.0f32; N_PIX];
        let ivar = vec![1e4f32; N_PIX];
        let r = measure_one(&flat, &ivar, &t, &mean_t, &s);
        assert!(r.values.iter().all(|v| v.status == RvStatus::Flat));
        let r = measure_one(&flat, &vec![0.0; N_PIX], &t, &mean_t, &s);
        assert!(r.values.iter().all(|v| v.status == RvStatus::Masked));
        let r = measure_one(&observe(&t, 615.0), &ivar, &t, &mean_t, &s);
        assert!(r.values[2].status != RvStatus::Ok);
        let nan = vec![f32::NAN; N_PIX];
        let r = measure_one(&nan, &ivar, &t, &mean_t, &s);
        assert!(r.values.iter().all(|v| v.status == RvStatus::Masked));
    }
}
