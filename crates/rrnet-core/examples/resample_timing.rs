//! Single-thread loop of the resampling kernels, for profiling (`perf record`,
//! `valgrind --tool=callgrind --branch-sim=yes`).
//!
//! `cargo run --release -p rrnet-core --example resample_timing -- ARMS.bin [REPEATS]`
//! where `ARMS.bin` holds a u64 count `n`, then per arm (blue, red) and spectrum a
//! u64 length `len` and `len` float64 LOGLAM, float32 FLUX, float32 IVAR (little
//! endian). Prints the best repeat's wall microseconds per spectrum and a checksum.

use std::time::Instant;

use rrnet_core::batch::{resample_batch, ArmBatch, ResampleStats};
use rrnet_core::grid::N_PIX;

/// One arm's LOGLAM, FLUX and IVAR per spectrum.
type Arm = (Vec<Vec<f64>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Reads `k` little-endian values of `N` bytes at `*at`.
fn take<const N: usize, T>(bytes: &[u8], at: &mut usize, k: usize, f: fn([u8; N]) -> T) -> Vec<T> {
    let out = bytes[*at..*at + N * k]
        .chunks_exact(N)
        .map(|b| f(b.try_into().unwrap()))
        .collect();
    *at += N * k;
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(
        args.get(1)
            .expect("usage: resample_timing ARMS.bin [REPEATS]"),
    )
    .expect("readable file");
    let repeats: usize = args.get(2).map_or(20, |r| r.parse().expect("REPEATS"));
    let mut at = 0;
    let n = take(&bytes, &mut at, 1, u64::from_le_bytes)[0] as usize;
    let mut arms: Vec<Arm> = Vec::new();
    for _ in 0..2 {
        let (mut l, mut f, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let len = take(&bytes, &mut at, 1, u64::from_le_bytes)[0] as usize;
            l.push(take(&bytes, &mut at, len, f64::from_le_bytes));
            f.push(take(&bytes, &mut at, len, f32::from_le_bytes));
            v.push(take(&bytes, &mut at, len, f32::from_le_bytes));
        }
        arms.push((l, f, v));
    }
    let slices: Vec<_> = arms
        .iter()
        .map(|(l, f, v)| {
            let l: Vec<&[f64]> = l.iter().map(|x| &x[..]).collect();
            let f: Vec<&[f32]> = f.iter().map(|x| &x[..]).collect();
            let v: Vec<&[f32]> = v.iter().map(|x| &x[..]).collect();
            (l, f, v)
        })
        .collect();
    let batch = |k: usize| ArmBatch {
        loglam: &slices[k].0,
        flux: &slices[k].1,
        ivar: Some(&slices[k].2),
    };
    let arms = [batch(0), batch(1)];
    let rv: Vec<f64> = (0..n).map(|i| -40.0 + 80.0 * i as f64 / n as f64).collect();
    let mut out = vec![0.0f32; n * N_PIX];
    let mut stats = vec![ResampleStats::default(); n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        pool.install(|| resample_batch(&arms, &rv, true, &mut out, &mut stats))
            .unwrap();
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    let sum: f64 = out.iter().map(|&v| f64::from(v)).sum();
    let snr: f64 = stats.iter().map(|s| s.snr[0] + s.snr[1]).sum();
    println!("{n} spectra: best {best:.2} us/spectrum; flux sum {sum:.6}, snr sum {snr:.9}");
}
