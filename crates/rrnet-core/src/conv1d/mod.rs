//! Grouped 1-d convolution in float32 for small per-group channel counts: forward,
//! gradient of the input and gradient of the weight and bias.
//!
//! The layout is PyTorch's `conv1d` (`x` `[B, G*C_in, L]`, `w` `[G*C_out, C_in, K]`,
//! `y` `[B, G*C_out, L_out]`, all C-contiguous). Training RRNet's members as channel
//! groups runs convolutions of 1-16 channels per group, stride 1 (k = 3) and stride 2
//! (k = 4, the pool-folded convolution, and k = 2, the pooled shortcut); oneDNN runs
//! these at a few GFLOP/s. Here a stride-`S` convolution becomes a stride-1 one over
//! `S` phases of the zero-padded input (`xp[ci*S + ph][u] = x[u*S + ph - pad]`, with
//! `ceil(K/S)` taps per phase), so that every kernel reads contiguous rows:
//!
//! - forward and grad-input are the same register-tiled correlation ([`corr`]: 4
//!   output channels x 16 positions of accumulators, each input vector loaded once
//!   per tap), grad-input on the gradient padded by `taps - 1` with the weights
//!   transposed and flipped, then scattered back from the phases;
//! - grad-weight ([`wgrad`]) accumulates 8 lanes per (output channel, row, tap) over
//!   all positions and spectra, summed across the lanes at the end.
//!
//! On x86-64 with AVX2 and FMA the same code is compiled with those features and
//! fused multiply-adds (`x86`); elsewhere it is the portable build. The two differ
//! by roundoff only. One call is one thread: callers split work across threads.

#[cfg(target_arch = "x86_64")]
mod x86;

use crate::error::KernelError;

/// Output positions per tile of [`corr`].
const T: usize = 16;
/// Output channels per tile of [`corr`] and [`wgrad`].
const CB: usize = 4;
/// Partial sums per (output channel, row, tap) in [`wgrad`].
const LANES: usize = 8;
/// Most taps per phase (`ceil(kernel / stride)`) the kernels are compiled for.
pub const MAX_TAPS: usize = 4;

/// The sizes of one grouped convolution (channel counts per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dShape {
    /// Spectra (`B`).
    pub batch: usize,
    /// Groups (`G`).
    pub groups: usize,
    /// Input channels per group.
    pub c_in: usize,
    /// Output channels per group.
    pub c_out: usize,
    /// Input length `L`.
    pub len_in: usize,
    /// Kernel size `K`.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on both ends.
    pub pad: usize,
}

/// Derived sizes of the phase formulation.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Phased input rows per group: `c_in * stride`.
    rows: usize,
    /// Taps per phase.
    taps: usize,
    len_out: usize,
    /// Used length of a phased row: `len_out + taps - 1`.
    used: usize,
    /// Allocated length of a phased input row (room for whole tiles).
    lp: usize,
    /// Allocated length of a padded gradient row (grad-input).
    lq: usize,
}

impl Conv1dShape {
    /// Output length, as `conv1d` (`None` if the kernel is longer than the padded input).
    /// `None` too when the padded length overflows (a caller's absurd padding).
    pub fn len_out(&self) -> Option<usize> {
        let padded = self.len_in.checked_add(self.pad.checked_mul(2)?)?;
        (self.stride > 0 && padded >= self.kernel).then(|| (padded - self.kernel) / self.stride + 1)
    }

    /// Elements of `x`, `w` and `y` (`None` if a product overflows).
    pub fn lens(&self) -> Option<(usize, usize, usize)> {
        let product = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let lo = self.len_out()?;
        let x = product(&[self.batch, self.groups, self.c_in, self.len_in])?;
        let w = product(&[self.groups, self.c_out, self.c_in, self.kernel])?;
        Some((x, w, product(&[self.batch, self.groups, self.c_out, lo])?))
    }

    fn plan(&self) -> Result<Plan, KernelError> {
        let bad = |what: &str| Err(KernelError::InvalidArgument(format!("conv1d: {what}")));
        let dims = [self.batch, self.groups, self.c_in, self.c_out, self.len_in];
        if dims.contains(&0) || self.kernel == 0 || self.stride == 0 {
            return bad("every size, the kernel and the stride must be positive");
        }
        let Some(len_out) = self.len_out() else {
            return bad("kernel longer than the padded input, or the padding too large");
        };
        if self.lens().is_none() || len_out.checked_next_multiple_of(T).is_none() {
            return bad("sizes too large (the padding?)");
        }
        let taps = self.kernel.div_ceil(self.stride);
        if taps > MAX_TAPS {
            return bad(&format!(
                "at most {MAX_TAPS} taps per stride phase, got {taps}"
            ));
        }
        let used = len_out + taps - 1;
        Ok(Plan {
            rows: self.c_in * self.stride,
            taps,
            len_out,
            used,
            lp: len_out.next_multiple_of(T) + taps - 1,
            lq: used.next_multiple_of(T) + taps - 1,
        })
    }

    fn check(&self, pairs: &[(&str, usize, usize)]) -> Result<Plan, KernelError> {
        let plan = self.plan()?;
        for &(name, got, want) in pairs {
            if got != want {
                return Err(KernelError::InvalidArgument(format!(
                    "conv1d: {name} has {got} elements, the shape needs {want}"
                )));
            }
        }
        Ok(plan)
    }
}

/// What the forward does with its result before storing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Epilogue {
    /// Add the values already in `y` (a second convolution onto the first's output:
    /// a residual block's shortcut).
    pub accumulate: bool,
    /// Then apply a ReLU (NaN kept, as torch's).
    pub relu: bool,
}

/// `y = conv1d(x, w, bias, stride, pad, groups)` (plus `y` and / or a ReLU per `epi`).
pub fn conv1d_forward(
    s: &Conv1dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: Epilogue,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let (nx, nw, ny) = s.lens().unwrap_or_default();
    let nb = bias.map_or(s.groups * s.c_out, <[f32]>::len);
    let plan = s.check(&[
        ("x", x.len(), nx),
        ("w", w.len(), nw),
        ("bias", nb, s.groups * s.c_out),
        ("y", y.len(), ny),
    ])?;
    #[cfg(target_arch = "x86_64")]
    if x86::has_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { x86::forward(s, &plan, x, w, bias, epi, y) };
        return Ok(());
    }
    forward_impl::<false>(s, &plan, x, w, bias, epi, y);
    Ok(())
}

/// `gx`: the gradient of `sum(gy * conv1d(x, w))` with respect to `x`.
pub fn conv1d_grad_input(
    s: &Conv1dShape,
    gy: &[f32],
    mask: Option<&[f32]>,
    w: &[f32],
    gx: &mut [f32],
) -> Result<(), KernelError> {
    let (nx, nw, ny) = s.lens().unwrap_or_default();
    let plan = s.check(&[
        ("gy", gy.len(), ny),
        ("mask", mask.map_or(ny, <[f32]>::len), ny),
        ("w", w.len(), nw),
        ("gx", gx.len(), nx),
    ])?;
    #[cfg(target_arch = "x86_64")]
    if x86::has_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { x86::grad_input(s, &plan, gy, mask, w, gx) };
        return Ok(());
    }
    grad_input_impl::<false>(s, &plan, gy, mask, w, gx);
    Ok(())
}

/// `gw` (and `gb`, if given): the gradients of `sum(gy * conv1d(x, w, b))` with
/// respect to the weight and the bias (overwritten, not accumulated).
pub fn conv1d_grad_weight(
    s: &Conv1dShape,
    x: &[f32],
    gy: &[f32],
    mask: Option<&[f32]>,
    gw: &mut [f32],
    gb: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let (nx, nw, ny) = s.lens().unwrap_or_default();
    let nb = gb.as_ref().map_or(s.groups * s.c_out, |b| b.len());
    let plan = s.check(&[
        ("x", x.len(), nx),
        ("gy", gy.len(), ny),
        ("mask", mask.map_or(ny, <[f32]>::len), ny),
        ("gw", gw.len(), nw),
        ("gb", nb, s.groups * s.c_out),
    ])?;
    #[cfg(target_arch = "x86_64")]
    if x86::has_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { x86::grad_weight(s, &plan, x, gy, mask, gw, gb) };
        return Ok(());
    }
    grad_weight_impl::<false>(s, &plan, x, gy, mask, gw, gb);
    Ok(())
}

/// `a * b + c`, fused (one rounding) in the FMA build.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Weights in [`corr`]'s order `[out block][in][tap][CB]` (zero past `outs`), from
/// `get(out, in, tap)`.
fn pack(
    outs: usize,
    ins: usize,
    taps: usize,
    get: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let blocks = outs.div_ceil(CB);
    let mut wk = vec![0.0; blocks * ins * taps * CB];
    for (i, v) in wk.iter_mut().enumerate() {
        let (c, rest) = (i % CB, i / CB);
        let (j, rest) = (rest % taps, rest / taps);
        let (r, ob) = (rest % ins, rest / ins);
        let o = ob * CB + c;
        if o < outs {
            *v = get(o, r, j);
        }
    }
    wk
}

/// Weight of group `g` for output channel `co`, phased row `r`, tap `j` (0 past `K`).
fn phased_weight(s: &Conv1dShape, w: &[f32], g: usize, co: usize, r: usize, j: usize) -> f32 {
    let k = j * s.stride + r % s.stride;
    if k < s.kernel {
        w[((g * s.c_out + co) * s.c_in + r / s.stride) * s.kernel + k]
    } else {
        0.0
    }
}

/// The phased rows of one group's input `x` (`c_in` rows of `len_in`) into `xp` (rows of
/// `p.lp`): `xp[ci*S + ph][u] = x[ci][u*S + ph - pad]` for `u < p.used`, 0 elsewhere.
fn phase_rows(s: &Conv1dShape, p: &Plan, x: &[f32], xp: &mut [f32]) {
    let st = s.stride;
    for (ci, row) in x.chunks_exact(s.len_in).enumerate() {
        let rows = &mut xp[ci * st * p.lp..][..st * p.lp];
        if st == 2 {
            phase_rows2(s.pad, p, row, rows);
            continue;
        }
        for (ph, out) in rows.chunks_exact_mut(p.lp).enumerate() {
            // u*S + ph - pad in [0, len_in) and u < used
            let lo = s.pad.saturating_sub(ph).div_ceil(st).min(p.used);
            let hi = (s.len_in + s.pad)
                .saturating_sub(ph)
                .div_ceil(st)
                .min(p.used)
                .max(lo);
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            let first = (lo * st + ph).saturating_sub(s.pad).min(row.len());
            for (o, &v) in out[lo..hi].iter_mut().zip(row[first..].iter().step_by(st)) {
                *o = v;
            }
        }
    }
}

/// Where stride 2 puts the even and the odd elements of an input row: `x[2i]` at
/// `(phase, u) = (pad % 2, i + pad / 2)`, `x[2i+1]` at `((pad + 1) % 2, i + (pad + 1) / 2)`;
/// returns `(even phase, even offset, odd offset)`.
fn stride2_offsets(pad: usize) -> (usize, usize, usize) {
    (pad % 2, pad / 2, pad.div_ceil(2))
}

/// [`phase_rows`] of one row for stride 2: one pass over the element pairs (vectorised
/// as a deinterleave), `rows` = the two phase rows of `p.lp`.
fn phase_rows2(pad: usize, p: &Plan, row: &[f32], rows: &mut [f32]) {
    let (even_ph, e_off, o_off) = stride2_offsets(pad);
    let (r0, r1) = rows.split_at_mut(p.lp);
    let (even, odd) = if even_ph == 0 { (r0, r1) } else { (r1, r0) };
    let n_even = row.len().div_ceil(2).min(p.used.saturating_sub(e_off));
    let n_odd = (row.len() / 2).min(p.used.saturating_sub(o_off));
    let e_off = e_off.min(p.used);
    let o_off = o_off.min(p.used);
    even[..e_off].fill(0.0);
    even[e_off + n_even..].fill(0.0);
    odd[..o_off].fill(0.0);
    odd[o_off + n_odd..].fill(0.0);
    let n = n_even.min(n_odd);
    let pairs = row
        .chunks_exact(2)
        .zip(&mut even[e_off..][..n])
        .zip(&mut odd[o_off..][..n]);
    for ((pair, e), o) in pairs {
        *e = pair[0];
        *o = pair[1];
    }
    for i in n..n_even {
        even[e_off + i] = row[2 * i];
    }
    for i in n..n_odd {
        odd[o_off + i] = row[2 * i + 1];
    }
}

/// The inverse of [`phase_rows`] for gradients: `gx[ci][v - pad] = gxp[ci*S + ph][u]`
/// with `v = u*S + ph`, 0 where `u >= p.used` (inputs no output reads).
fn unphase_rows(s: &Conv1dShape, p: &Plan, gxp: &[f32], gx: &mut [f32]) {
    let st = s.stride;
    for (ci, row) in gx.chunks_exact_mut(s.len_in).enumerate() {
        let src = &gxp[ci * st * p.used..][..st * p.used];
        if st == 2 {
            unphase_rows2(s.pad, p, src, row);
            continue;
        }
        for (ph, src) in src.chunks_exact(p.used).enumerate() {
            let lo = s.pad.saturating_sub(ph).div_ceil(st);
            let first = (lo * st + ph).saturating_sub(s.pad); // first x index of this phase
            for (i, o) in row.iter_mut().skip(first).step_by(st).enumerate() {
                *o = src.get(lo + i).copied().unwrap_or(0.0);
            }
        }
    }
}

/// [`unphase_rows`] of one row for stride 2 (an interleave of the two phase rows).
fn unphase_rows2(pad: usize, p: &Plan, src: &[f32], row: &mut [f32]) {
    let (even_ph, e_off, o_off) = stride2_offsets(pad);
    let (r0, r1) = src.split_at(p.used);
    let (even, odd) = if even_ph == 0 { (r0, r1) } else { (r1, r0) };
    let n_even = row.len().div_ceil(2);
    let n_odd = row.len() / 2;
    let n = n_odd
        .min(p.used.saturating_sub(e_off))
        .min(p.used.saturating_sub(o_off));
    let pairs = row
        .chunks_exact_mut(2)
        .zip(&even[e_off..][..n])
        .zip(&odd[o_off..][..n]);
    for ((pair, &e), &o) in pairs {
        pair[0] = e;
        pair[1] = o;
    }
    for i in n..n_even {
        row[2 * i] = even.get(e_off + i).copied().unwrap_or(0.0);
    }
    for i in n..n_odd {
        row[2 * i + 1] = odd.get(o_off + i).copied().unwrap_or(0.0);
    }
}

#[inline(always)]
fn forward_impl<const FMA: bool>(
    s: &Conv1dShape,
    p: &Plan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: Epilogue,
    y: &mut [f32],
) {
    match p.taps {
        1 => forward_taps::<1, FMA>(s, p, x, w, bias, epi, y),
        2 => forward_taps::<2, FMA>(s, p, x, w, bias, epi, y),
        3 => forward_taps::<3, FMA>(s, p, x, w, bias, epi, y),
        _ => forward_taps::<4, FMA>(s, p, x, w, bias, epi, y),
    }
}

#[inline(always)]
fn forward_taps<const J: usize, const FMA: bool>(
    s: &Conv1dShape,
    p: &Plan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: Epilogue,
    y: &mut [f32],
) {
    let blocks = s.c_out.div_ceil(CB);
    let mut xp = vec![0.0; p.rows * p.lp];
    for g in 0..s.groups {
        let wk = pack(s.c_out, p.rows, J, |o, r, j| {
            phased_weight(s, w, g, o, r, j)
        });
        let mut bk = vec![0.0; blocks * CB];
        if let Some(b) = bias {
            bk[..s.c_out].copy_from_slice(&b[g * s.c_out..][..s.c_out]);
        }
        for b in 0..s.batch {
            let bg = b * s.groups + g;
            phase_rows(
                s,
                p,
                &x[bg * s.c_in * s.len_in..][..s.c_in * s.len_in],
                &mut xp,
            );
            let out = &mut y[bg * s.c_out * p.len_out..][..s.c_out * p.len_out];
            corr::<J, FMA>(&xp, p.lp, p.rows, &wk, &bk, out, p.len_out, s.c_out, epi);
        }
    }
}

#[inline(always)]
fn grad_input_impl<const FMA: bool>(
    s: &Conv1dShape,
    p: &Plan,
    gy: &[f32],
    mask: Option<&[f32]>,
    w: &[f32],
    gx: &mut [f32],
) {
    match p.taps {
        1 => grad_input_taps::<1, FMA>(s, p, gy, mask, w, gx),
        2 => grad_input_taps::<2, FMA>(s, p, gy, mask, w, gx),
        3 => grad_input_taps::<3, FMA>(s, p, gy, mask, w, gx),
        _ => grad_input_taps::<4, FMA>(s, p, gy, mask, w, gx),
    }
}

/// Grad-input as [`corr`] of the gradient padded by `J - 1` zeros on both ends with
/// the weights transposed (rows <-> output channels) and flipped, into the phased
/// rows, then [`unphase_rows`].
#[inline(always)]
fn grad_input_taps<const J: usize, const FMA: bool>(
    s: &Conv1dShape,
    p: &Plan,
    gy: &[f32],
    mask: Option<&[f32]>,
    w: &[f32],
    gx: &mut [f32],
) {
    let lo = p.len_out;
    let mut gyp = vec![0.0; s.c_out * p.lq]; // the pads stay zero
    let mut gxp = vec![0.0; p.rows * p.used];
    let zeros = vec![0.0; p.rows.div_ceil(CB) * CB];
    for g in 0..s.groups {
        let wk = pack(p.rows, s.c_out, J, |r, co, j| {
            phased_weight(s, w, g, co, r, J - 1 - j)
        });
        for b in 0..s.batch {
            let bg = b * s.groups + g;
            for co in 0..s.c_out {
                let at = (bg * s.c_out + co) * lo..(bg * s.c_out + co + 1) * lo;
                let dst = &mut gyp[co * p.lq + J - 1..][..lo];
                masked_copy(&gy[at.clone()], mask.map(|m| &m[at]), dst);
            }
            corr::<J, FMA>(
                &gyp,
                p.lq,
                s.c_out,
                &wk,
                &zeros,
                &mut gxp,
                p.used,
                p.rows,
                Epilogue::default(),
            );
            unphase_rows(
                s,
                p,
                &gxp,
                &mut gx[bg * s.c_in * s.len_in..][..s.c_in * s.len_in],
            );
        }
    }
}

#[inline(always)]
fn grad_weight_impl<const FMA: bool>(
    s: &Conv1dShape,
    p: &Plan,
    x: &[f32],
    gy: &[f32],
    mask: Option<&[f32]>,
    gw: &mut [f32],
    gb: Option<&mut [f32]>,
) {
    match p.taps {
        1 => grad_weight_taps::<1, FMA>(s, p, x, gy, mask, gw, gb),
        2 => grad_weight_taps::<2, FMA>(s, p, x, gy, mask, gw, gb),
        3 => grad_weight_taps::<3, FMA>(s, p, x, gy, mask, gw, gb),
        _ => grad_weight_taps::<4, FMA>(s, p, x, gy, mask, gw, gb),
    }
}

/// `dst = src` where `mask > 0` (or everywhere without a mask), else 0: the gradient
/// through a ReLU whose output is `mask` (0 where the output is <= 0, as torch's
/// `threshold_backward`).
fn masked_copy(src: &[f32], mask: Option<&[f32]>, dst: &mut [f32]) {
    match mask {
        None => dst.copy_from_slice(src),
        Some(m) => {
            for ((d, &g), &m) in dst.iter_mut().zip(src).zip(m) {
                *d = if m <= 0.0 { 0.0 } else { g };
            }
        }
    }
}

/// Sum of 8 lanes, pairwise.
fn lane_sum(v: &[f32]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
    (h[0] + h[2]) + (h[1] + h[3])
}

#[inline(always)]
fn grad_weight_taps<const J: usize, const FMA: bool>(
    s: &Conv1dShape,
    p: &Plan,
    x: &[f32],
    gy: &[f32],
    mask: Option<&[f32]>,
    gw: &mut [f32],
    mut gb: Option<&mut [f32]>,
) {
    let (lo, lg) = (p.len_out, p.len_out.next_multiple_of(LANES));
    let outs = s.c_out.div_ceil(CB) * CB;
    let mut xp = vec![0.0; p.rows * p.lp];
    let mut gyz = vec![0.0; outs * lg]; // tails and rows past c_out stay zero
    let mut acc = vec![0.0; outs * p.rows * J * LANES];
    let mut acc_b = vec![0.0; s.c_out * LANES];
    for g in 0..s.groups {
        acc.fill(0.0);
        acc_b.fill(0.0);
        for b in 0..s.batch {
            let bg = b * s.groups + g;
            phase_rows(
                s,
                p,
                &x[bg * s.c_in * s.len_in..][..s.c_in * s.len_in],
                &mut xp,
            );
            for co in 0..s.c_out {
                let at = (bg * s.c_out + co) * lo..(bg * s.c_out + co + 1) * lo;
                masked_copy(
                    &gy[at.clone()],
                    mask.map(|m| &m[at]),
                    &mut gyz[co * lg..][..lo],
                );
                let lanes = &mut acc_b[co * LANES..][..LANES];
                for chunk in gyz[co * lg..][..lg].chunks_exact(LANES) {
                    for (a, &v) in lanes.iter_mut().zip(chunk) {
                        *a += v;
                    }
                }
            }
            wgrad::<J, FMA>(&xp, p.lp, p.rows, &gyz, lg, outs, &mut acc);
        }
        for co in 0..s.c_out {
            for ci in 0..s.c_in {
                for k in 0..s.kernel {
                    let r = ci * s.stride + k % s.stride;
                    let at = ((co * p.rows + r) * J + k / s.stride) * LANES;
                    gw[((g * s.c_out + co) * s.c_in + ci) * s.kernel + k] =
                        lane_sum(&acc[at..at + LANES]);
                }
            }
            if let Some(gb) = gb.as_deref_mut() {
                gb[g * s.c_out + co] = lane_sum(&acc_b[co * LANES..][..LANES]);
            }
        }
    }
}

/// `dst[o][t] = bias[o] + sum_{r, j} wk(o, r, j) * src[r][t + j]` for `t < n`, `o < outs`:
/// tiles of [`CB`] outputs x [`T`] positions held in registers over all rows and taps.
/// `src` rows have length `ls >= n.next_multiple_of(T) + J - 1`; `wk` is [`pack`]ed;
/// `bias` has `outs.div_ceil(CB) * CB` entries; `dst` has `outs` rows of `n`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn corr<const J: usize, const FMA: bool>(
    src: &[f32],
    ls: usize,
    rows: usize,
    wk: &[f32],
    bias: &[f32],
    dst: &mut [f32],
    n: usize,
    outs: usize,
    epi: Epilogue,
) {
    let blocks = outs.div_ceil(CB);
    for t0 in (0..n).step_by(T) {
        let len = T.min(n - t0);
        for ob in 0..blocks {
            let mut acc = [[0.0f32; T]; CB];
            for (a, &b) in acc.iter_mut().zip(&bias[ob * CB..][..CB]) {
                *a = [b; T];
            }
            if epi.accumulate {
                for (c, a) in acc.iter_mut().enumerate().take(outs - ob * CB) {
                    let d = &dst[(ob * CB + c) * n + t0..][..len];
                    for (v, &o) in a.iter_mut().zip(d) {
                        *v += o;
                    }
                }
            }
            let wb = &wk[ob * rows * J * CB..][..rows * J * CB];
            for r in 0..rows {
                let row = &src[r * ls + t0..][..T + J - 1];
                for j in 0..J {
                    let xs: &[f32] = &row[j..j + T];
                    let ws = &wb[(r * J + j) * CB..][..CB];
                    for c in 0..CB {
                        let wv = ws[c];
                        for l in 0..T {
                            acc[c][l] = madd::<FMA>(wv, xs[l], acc[c][l]);
                        }
                    }
                }
            }
            for (c, a) in acc.iter_mut().enumerate().take(outs - ob * CB) {
                if epi.relu {
                    for v in a.iter_mut() {
                        *v = if *v < 0.0 { 0.0 } else { *v }; // NaN kept, as torch's relu
                    }
                }
                dst[(ob * CB + c) * n + t0..][..len].copy_from_slice(&a[..len]);
            }
        }
    }
}

/// `acc[o][r][j][l] += sum_t gy[o][t*8 + l] * xp[r][t*8 + l + j]` over `lg` positions,
/// [`CB`] output channels x `J` taps of 8-lane sums in registers per row.
#[inline(always)]
fn wgrad<const J: usize, const FMA: bool>(
    xp: &[f32],
    lp: usize,
    rows: usize,
    gy: &[f32],
    lg: usize,
    outs: usize,
    acc_out: &mut [f32],
) {
    for ob in 0..outs / CB {
        let gb = &gy[ob * CB * lg..][..CB * lg];
        for r in 0..rows {
            let xr = &xp[r * lp..][..lg + J - 1];
            let mut acc = [[[0.0f32; LANES]; J]; CB];
            for t0 in (0..lg).step_by(LANES) {
                for j in 0..J {
                    let xs = &xr[t0 + j..][..LANES];
                    for c in 0..CB {
                        let gs = &gb[c * lg + t0..][..LANES];
                        for l in 0..LANES {
                            acc[c][j][l] = madd::<FMA>(gs[l], xs[l], acc[c][j][l]);
                        }
                    }
                }
            }
            for (c, ac) in acc.iter().enumerate() {
                for (j, aj) in ac.iter().enumerate() {
                    let at = (((ob * CB + c) * rows + r) * J + j) * LANES;
                    for (o, &v) in acc_out[at..at + LANES].iter_mut().zip(aj) {
                        *o += v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
