//! The kernels against naive loops over the definition of `conv1d`, both builds.

use super::*;

/// A small deterministic generator of values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * n as f32) as usize % n
    }
}

/// Index triples `(x, w, y)` of every product `x * w` that contributes to `y`.
fn taps(s: &Conv1dShape, mut f: impl FnMut(usize, usize, usize)) {
    let lo = s.len_out().unwrap();
    for b in 0..s.batch {
        for g in 0..s.groups {
            for co in 0..s.c_out {
                for t in 0..lo {
                    let yi = ((b * s.groups + g) * s.c_out + co) * lo + t;
                    for ci in 0..s.c_in {
                        for k in 0..s.kernel {
                            let v = (t * s.stride + k) as isize - s.pad as isize;
                            if v >= 0 && (v as usize) < s.len_in {
                                let xi = ((b * s.groups + g) * s.c_in + ci) * s.len_in + v as usize;
                                let wi = ((g * s.c_out + co) * s.c_in + ci) * s.kernel + k;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn epi(relu: bool) -> Epilogue {
    Epilogue {
        relu,
        accumulate: false,
    }
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// The three kernels against naive loops; with `relu`, the forward's ReLU and the
/// gradients masked by its output.
fn check(s: &Conv1dShape, seed: u64, fma: bool, relu: bool) {
    let mut rng = Lcg(seed);
    let (nx, nw, ny) = s.lens().unwrap();
    let (x, w, bias) = (rng.vec(nx), rng.vec(nw), rng.vec(s.groups * s.c_out));
    let gy_in = rng.vec(ny);
    let mut y_lin = vec![0.0f64; ny];
    let lo = s.len_out().unwrap();
    for (i, v) in y_lin.iter_mut().enumerate() {
        *v = bias[(i / lo) % (s.groups * s.c_out)] as f64;
    }
    taps(s, |xi, wi, yi| y_lin[yi] += x[xi] as f64 * w[wi] as f64);
    let y_ref: Vec<f64> = y_lin
        .iter()
        .map(|&v| if relu { v.max(0.0) } else { v })
        .collect();
    let mask_v: Vec<f32> = y_ref.iter().map(|&v| v as f32).collect();
    let mask = relu.then_some(&mask_v[..]);
    let gy: Vec<f32> = match mask {
        Some(m) => gy_in
            .iter()
            .zip(m)
            .map(|(&g, &m)| if m <= 0.0 { 0.0 } else { g })
            .collect(),
        None => gy_in.clone(),
    };
    let (mut gx_ref, mut gw_ref) = (vec![0.0f64; nx], vec![0.0f64; nw]);
    taps(s, |xi, wi, yi| {
        gx_ref[xi] += gy[yi] as f64 * w[wi] as f64;
        gw_ref[wi] += gy[yi] as f64 * x[xi] as f64;
    });
    let gb_ref: Vec<f64> = (0..s.groups * s.c_out)
        .map(|o| {
            (0..ny)
                .filter(|i| (i / lo) % (s.groups * s.c_out) == o)
                .map(|i| gy[i] as f64)
                .sum()
        })
        .collect();
    let p = s.plan().unwrap();
    let (mut y, mut gx, mut gw, mut gb) = (
        vec![9.0; ny],
        vec![9.0; nx],
        vec![9.0; nw],
        vec![9.0; s.groups * s.c_out],
    );
    if fma {
        #[cfg(target_arch = "x86_64")]
        {
            if !x86::has_fma() {
                return;
            }
            conv1d_forward(s, &x, &w, Some(&bias), epi(relu), &mut y).unwrap();
            conv1d_grad_input(s, &gy_in, mask, &w, &mut gx).unwrap();
            conv1d_grad_weight(s, &x, &gy_in, mask, &mut gw, Some(&mut gb)).unwrap();
        }
    } else {
        forward_impl::<false>(s, &p, &x, &w, Some(&bias), epi(relu), &mut y);
        grad_input_impl::<false>(s, &p, &gy_in, mask, &w, &mut gx);
        grad_weight_impl::<false>(s, &p, &x, &gy_in, mask, &mut gw, Some(&mut gb));
    }
    if fma && !cfg!(target_arch = "x86_64") {
        return;
    }
    close(&y, &y_ref, "y");
    close(&gx, &gx_ref, "gx");
    close(&gw, &gw_ref, "gw");
    close(&gb, &gb_ref, "gb");
}

#[allow(clippy::too_many_arguments)]
fn shape(
    batch: usize,
    groups: usize,
    c_in: usize,
    c_out: usize,
    len_in: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Conv1dShape {
    Conv1dShape {
        batch,
        groups,
        c_in,
        c_out,
        len_in,
        kernel,
        stride,
        pad,
    }
}

#[test]
fn rrnet_shapes_match_naive_loops() {
    // The three convolutions of the grouped training path (6 members, short maps).
    for (seed, s) in [
        shape(2, 1, 1, 24, 70, 3, 1, 1),
        shape(2, 6, 1, 4, 70, 3, 1, 1),
        shape(2, 6, 4, 4, 70, 4, 2, 1),
        shape(2, 6, 1, 4, 70, 2, 2, 0),
        shape(3, 6, 8, 16, 37, 3, 1, 1),
        shape(3, 6, 16, 16, 37, 4, 2, 1),
        shape(3, 6, 8, 16, 36, 2, 2, 0),
    ]
    .iter()
    .enumerate()
    {
        for relu in [false, true] {
            check(s, seed as u64 + 1, false, relu);
            check(s, seed as u64 + 1, true, relu);
        }
    }
}

#[test]
fn random_shapes_match_naive_loops() {
    let mut rng = Lcg(99);
    for seed in 0..200 {
        let stride = 1 + rng.below(3);
        let kernel = 1 + rng.below(MAX_TAPS * stride);
        let s = shape(
            1 + rng.below(3),
            1 + rng.below(4),
            1 + rng.below(6),
            1 + rng.below(9),
            1 + rng.below(40),
            kernel,
            stride,
            rng.below(4) + kernel / 2,
        );
        if s.len_out().is_none() {
            continue;
        }
        check(&s, seed + 10, false, seed % 2 == 1);
        check(&s, seed + 10, true, seed % 2 == 1);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let s = shape(1, 1, 1, 1, 8, 3, 1, 1);
    let (x, w, mut y) = (vec![0.0; 8], vec![0.0; 3], vec![0.0; 8]);
    assert!(conv1d_forward(&s, &x, &w, None, Epilogue::default(), &mut y).is_ok());
    assert!(conv1d_forward(&s, &x[..7], &w, None, Epilogue::default(), &mut y).is_err());
    assert!(conv1d_grad_input(&s, &y, Some(&x[..7]), &w, &mut [0.0; 8]).is_err());
    assert!(conv1d_forward(&s, &x, &w, Some(&[0.0, 0.0]), Epilogue::default(), &mut y).is_err());
    let long = shape(1, 1, 1, 1, 2, 9, 1, 0);
    assert!(conv1d_forward(&long, &x[..2], &[0.0; 9], None, Epilogue::default(), &mut y).is_err());
    let many_taps = shape(1, 1, 1, 1, 8, 5, 1, 2);
    assert!(conv1d_grad_input(&many_taps, &y, None, &[0.0; 5], &mut [0.0; 8]).is_err());
}

#[test]
fn accumulate_adds_onto_the_output_before_the_relu() {
    for (seed, s) in [
        shape(2, 6, 4, 4, 50, 4, 2, 1),
        shape(2, 3, 2, 5, 33, 3, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        let mut rng = Lcg(seed as u64 + 7);
        let (nx, nw, ny) = s.lens().unwrap();
        let (x, w, y0) = (rng.vec(nx), rng.vec(nw), rng.vec(ny));
        let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
        taps(s, |xi, wi, yi| want[yi] += x[xi] as f64 * w[wi] as f64);
        for v in want.iter_mut() {
            *v = v.max(0.0);
        }
        let both = Epilogue {
            relu: true,
            accumulate: true,
        };
        let mut y = y0.clone();
        conv1d_forward(s, &x, &w, None, both, &mut y).unwrap();
        close(&y, &want, "accumulated");
        let mut y = y0.clone();
        forward_impl::<false>(s, &s.plan().unwrap(), &x, &w, None, both, &mut y);
        close(&y, &want, "accumulated, portable");
    }
}
