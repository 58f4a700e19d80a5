//! Outlier (bad-pixel) statistics, the basis of the paper's quality cut
//! (more than 100 outliers, or more than 30 consecutive ones, rejects a spectrum).
//!
//! With `m = medfilt(f, 3)`, `d = m - f` and `s = std(d)` from the median test of
//! method §2.3.1, an *outlier pixel* of the resampled flux `f` is
//! - a positive spike: `d <= -4 s` (the upper side of that test; cosmic rays,
//!   hot pixels), counted only when `s > 0`; or
//! - a dead pixel: `f <= 0` (bad columns, gaps, zeroed pixels).
//!
//! The test's other side (`d >= 3 s`) also replaces pixels, but on real spectra it
//! mostly catches the cores of narrow absorption lines (about 40-60 pixels per arm
//! on the real LAMOST file at S/N 90), so those are not counted as bad pixels.

/// Whether a pixel of flux `f` with median residual `d = m - f` is a bad pixel,
/// given the test's lower bound `lower = -4 s` (minus infinity where the test does
/// not apply, `s = 0`). The AVX2 path of `continuum` computes the same two tests.
#[inline(always)]
pub fn is_bad_pixel(f: f64, d: f64, lower: f64) -> bool {
    (f <= 0.0) | (d <= lower) // no short-circuit: branch-free
}

/// Counts over one arm (or, combined, one spectrum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutlierStats {
    /// Outlier pixels.
    pub count: u32,
    /// Longest run of consecutive outlier pixels.
    pub max_run: u32,
}

impl OutlierStats {
    /// Statistics of a spectrum from its arms: counts add, the longest run is per arm.
    pub fn combine(self, other: OutlierStats) -> OutlierStats {
        OutlierStats {
            count: self.count + other.count,
            max_run: self.max_run.max(other.max_run),
        }
    }
}

/// Incremental counter fed one pixel at a time in order.
#[derive(Debug, Default)]
pub struct RunCounter {
    stats: OutlierStats,
    run: u32,
}

impl RunCounter {
    #[inline]
    pub fn push(&mut self, is_outlier: bool) {
        if is_outlier {
            self.run += 1;
            self.stats.count += 1;
            self.stats.max_run = self.stats.max_run.max(self.run);
        } else {
            self.run = 0;
        }
    }

    /// Feed `len` (<= 64) pixels at once: bit `i` of `mask` is pixel `i`.
    #[inline]
    pub fn push_block(&mut self, mask: u64, len: usize) {
        debug_assert!(len <= 64);
        let valid = if len >= 64 {
            u64::MAX
        } else {
            (1u64 << len) - 1
        };
        let mask = mask & valid;
        if mask == 0 {
            self.run = 0;
            return;
        }
        self.stats.count += mask.count_ones();
        let head = (!mask).trailing_zeros().min(len as u32); // ones from pixel 0
        if head as usize == len {
            self.run += head;
            self.stats.max_run = self.stats.max_run.max(self.run);
            return;
        }
        self.stats.max_run = self.stats.max_run.max(self.run + head);
        // Longest run inside the block: each step shortens every run by one.
        let (mut x, mut longest) = (mask, 0);
        while x != 0 {
            x &= x << 1;
            longest += 1;
        }
        self.stats.max_run = self.stats.max_run.max(longest);
        // Ones ending at the last pixel continue into the next block.
        self.run = (!(mask << (64 - len))).leading_zeros();
    }

    pub fn finish(self) -> OutlierStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_count_as_single_pixels() {
        // Masks with runs inside, across and filling blocks, and short last blocks.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..2000 {
            let lens: Vec<usize> = (0..5)
                .map(|b| if b == 4 { 1 + case % 64 } else { 64 })
                .collect();
            let (mut single, mut blocks) = (RunCounter::default(), RunCounter::default());
            for &len in &lens {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mask = match case % 4 {
                    0 => state,
                    1 => state & (state >> 1) & (state >> 2), // sparse
                    2 => !(state & (state >> 3)),             // dense, long runs
                    _ => u64::MAX,
                };
                for i in 0..len {
                    single.push(mask >> i & 1 == 1);
                }
                blocks.push_block(mask, len);
            }
            assert_eq!(single.finish(), blocks.finish(), "case {case}");
        }
    }

    #[test]
    fn counts_and_longest_run() {
        let mut c = RunCounter::default();
        for b in [true, false, true, true, true, false, true] {
            c.push(b);
        }
        assert_eq!(
            c.finish(),
            OutlierStats {
                count: 5,
                max_run: 3
            }
        );
    }
}
