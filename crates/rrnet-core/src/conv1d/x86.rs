//! The AVX2 + FMA build of the convolution kernels (x86-64 only): the runtime check of
//! the CPU and the three entry points compiled with those features.
//!
//! Every function here with `#[target_feature]` runs only after [`has_fma`] was true.

use super::{forward_impl, grad_input_impl, grad_weight_impl, Conv1dShape, Epilogue, Plan};

/// Whether the CPU has AVX2 and FMA (cached by the standard library).
pub(super) fn has_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// [`forward_impl`] with 8-lane vectors and fused multiply-adds.
#[target_feature(enable = "avx2,fma")]
pub(super) fn forward(
    s: &Conv1dShape,
    p: &Plan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: Epilogue,
    y: &mut [f32],
) {
    forward_impl::<true>(s, p, x, w, bias, epi, y);
}

/// [`grad_input_impl`] with 8-lane vectors and fused multiply-adds.
#[target_feature(enable = "avx2,fma")]
pub(super) fn grad_input(
    s: &Conv1dShape,
    p: &Plan,
    gy: &[f32],
    mask: Option<&[f32]>,
    w: &[f32],
    gx: &mut [f32],
) {
    grad_input_impl::<true>(s, p, gy, mask, w, gx);
}

/// [`grad_weight_impl`] with 8-lane vectors and fused multiply-adds.
#[target_feature(enable = "avx2,fma")]
pub(super) fn grad_weight(
    s: &Conv1dShape,
    p: &Plan,
    x: &[f32],
    gy: &[f32],
    mask: Option<&[f32]>,
    gw: &mut [f32],
    gb: Option<&mut [f32]>,
) {
    grad_weight_impl::<true>(s, p, x, gy, mask, gw, gb);
}
