//! Single-thread cost of reading one LAMOST MRS `.fits.gz`: inflation alone against
//! the whole read (inflate, walk the HDUs, decode every arm's columns), for the
//! floor analysis of issue 20 (`benchmarks/RESULTS.md`).
//!
//! `cargo run --release -p rrnet-core --example read_timing -- FILE.fits.gz [REPEATS]`
//! reads every binary-table extension of FILE (mask columns not decoded, as the
//! pipeline asks) and prints the median and best microseconds per file of each step,
//! alternated repeat by repeat, and inflation's share of the read.

use std::path::Path;
use std::time::Instant;

use rrnet_core::fits::inflate::gunzip;
use rrnet_core::fits::lamost::{read_file, ReadOptions};

const MAX_INFLATED: usize = 1 << 30;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = Path::new(
        args.get(1)
            .expect("usage: read_timing FILE.fits.gz [REPEATS]"),
    );
    let repeats: usize = args.get(2).map_or(200, |r| r.parse().expect("REPEATS"));
    let raw = std::fs::read(path).expect("readable file");
    let opts = ReadOptions {
        max_inflated: MAX_INFLATED,
        primary_keys: vec!["OBSID".into(), "RA".into(), "DEC".into(), "DESIG".into()],
        arm_keys: vec!["SNR".into()],
        masks: false,
    };
    let first = read_file(path, &[], &opts).expect("a readable LAMOST file");
    let arms: Vec<String> = first.extnames.iter().flatten().cloned().collect();
    let (mut inflate, mut read) = (Vec::new(), Vec::new());
    let mut checksum = 0usize;
    for _ in 0..repeats {
        let t = Instant::now();
        checksum += gunzip(&raw, MAX_INFLATED).expect("gzip").len();
        inflate.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let data = read_file(path, &arms, &opts).expect("read");
        read.push(t.elapsed().as_secs_f64() * 1e6);
        checksum += data.arms.iter().filter(|a| a.is_ok()).count();
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (mi, mr) = (median(inflate.clone()), median(read.clone()));
    println!(
        "{} arms, {} compressed bytes; us per file, median (best) of {repeats}:",
        arms.len(),
        raw.len()
    );
    println!("  inflate alone {mi:.0} ({:.0})", best(&inflate));
    println!("  whole read    {mr:.0} ({:.0})", best(&read));
    println!("  inflation's share of the read: {:.0} %", 100.0 * mi / mr);
    println!("checksum {checksum}");
}
