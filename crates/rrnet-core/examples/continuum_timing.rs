//! Single-thread timing loop of the continuum kernel, for profiling (`perf record`).
//!
//! `cargo run --release -p rrnet-core --example continuum_timing -- FLUX.f32 [REPEATS]`
//! where `FLUX.f32` holds raw little-endian float32 rows of 7200 values (blue then
//! red). Prints the thread's CPU microseconds per spectrum (Linux schedstat; wall time
//! elsewhere) of the best repeat and a checksum of the outputs and iteration counts.

use std::time::Instant;

/// This thread's CPU time in microseconds (Linux), else wall time.
fn cpu_us(start: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| start.elapsed().as_secs_f64() * 1e6, |ns| ns * 1e-3)
}

use rrnet_core::batch::normalize_spectrum;
use rrnet_core::continuum::{ArmScratch, DEFAULT_MAX_ITER};
use rrnet_core::grid::N_PIX;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: continuum_timing FLUX.f32 [REPEATS]");
    let repeats: usize = args.get(2).map_or(10, |r| r.parse().expect("REPEATS"));
    let bytes = std::fs::read(path).expect("readable flux file");
    let flux: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = flux.len() / N_PIX;
    let mut out = vec![0.0f32; flux.len()];
    let mut scratch = ArmScratch::default();
    let mut best = f64::INFINITY;
    let mut check = (0u64, 0.0f64);
    for _ in 0..repeats {
        let wall = Instant::now();
        let start = cpu_us(wall);
        check = (0, 0.0);
        for (f, o) in flux.chunks_exact(N_PIX).zip(out.chunks_exact_mut(N_PIX)) {
            let stats = normalize_spectrum(f, DEFAULT_MAX_ITER, &mut scratch, o);
            check.0 += u64::from(stats.iterations[0] + stats.iterations[1]);
        }
        best = best.min((cpu_us(wall) - start) / n as f64);
        check.1 = out.iter().map(|&v| f64::from(v)).sum();
    }
    println!(
        "{n} spectra: best {best:.2} us/spectrum; iterations {}, sum {:.6}",
        check.0, check.1
    );
}
