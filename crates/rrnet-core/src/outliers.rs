//! Outlier statistics of the median-filter test (SPEC 2.3.1).
//!
//! An *outlier pixel* is one the median test replaces: with `m = medfilt(f, 3)`,
//! `d = m - f` and `s = std(d)`, a pixel with NOT (`d < 3 s` and `d > -4 s`),
//! counted only when `s > 0` (when `s == 0`, `d` is zero everywhere and the
//! replacement changes nothing).

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

    pub fn finish(self) -> OutlierStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
