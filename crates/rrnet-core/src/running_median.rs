//! Running median of each row over an odd window, edges extended with the end value
//! (scipy's `median_filter(size=(1, width), mode="nearest")`): the out-of-distribution
//! test's despiking, which scipy's general rank filter made its most expensive step;
//! and that despiking itself ([`despike`]), which needs the median only where a sample
//! could be a spike.

use rayon::prelude::*;

/// The window that gives the same medians as `width` on a row of `n > 0` samples: at
/// most `2n - 1` wide. With a half-width `h >= n - 1` every window holds the whole row
/// once, the first value `h - i + 1` times and the last `h + i - n + 2` times; the
/// middle element is then the smallest `x` between the two end values (in order) with
/// at least `i` interior values `<= x`, else the larger end value: it does not depend on
/// `h`. So a wider window (a width of 2**31 once exhausted memory) changes nothing.
fn effective_width(width: usize, n: usize) -> usize {
    width.min(2 * n - 1)
}

/// The running median of `row` over `width` (odd) samples into `out` (same length).
///
/// The window is kept sorted and updated by one removal and one insertion per step
/// (`O(width)` moves, no allocation per sample), so a 7200-sample row of width 25
/// costs ~0.5 ms. Values are ordered by `f64::total_cmp`; callers pass finite rows.
pub fn running_median(row: &[f64], width: usize, out: &mut [f64], window: &mut Vec<f64>) {
    let n = row.len();
    debug_assert_eq!(out.len(), n);
    if n == 0 || width == 0 {
        return;
    }
    let half = effective_width(width, n) / 2;
    let at = |i: isize| row[i.clamp(0, n as isize - 1) as usize];
    window.clear();
    window.extend((-(half as isize)..=half as isize).map(at));
    window.sort_unstable_by(f64::total_cmp);
    for (i, o) in out.iter_mut().enumerate() {
        *o = window[half];
        if i + 1 == n {
            break;
        }
        let leaving = at(i as isize - half as isize);
        let entering = at((i + half + 1) as isize);
        let gone = window.partition_point(|v| v.total_cmp(&leaving).is_lt());
        window.remove(gone);
        let place = window.partition_point(|v| v.total_cmp(&entering).is_lt());
        window.insert(place, entering);
    }
}

/// [`running_median`] of every row of the row-major `[values.len() / n_cols, n_cols]`
/// array, rows in parallel on the current rayon pool.
pub fn running_median_rows(values: &[f64], n_cols: usize, width: usize, out: &mut [f64]) {
    if n_cols == 0 {
        return;
    }
    out.par_chunks_mut(n_cols)
        .zip(values.par_chunks(n_cols))
        .for_each_init(Vec::new, |window, (o, row)| {
            running_median(row, width, o, window)
        });
}

/// Fewer candidates than a row's length over this: their window medians one by one
/// (a selection of `width` values each); more: the running median of the whole row.
const CANDIDATE_FRACTION: usize = 4;

/// `row` with spikes replaced by their running median: a sample above `factor` times
/// `max(median, 1)` of its `width`-sample window (edges extended, as [`running_median`])
/// takes that median, every other sample is copied.
///
/// Since `max(median, 1) >= 1`, only samples above `factor` (>= 0) can be spikes, ~0.3 %
/// of a chi-square residual at 9: the median is selected only at those, unless more than
/// a quarter of the row are. The same element as the sorted window's middle
/// (`f64::total_cmp` order), so the output equals the whole-row form bit for bit.
pub fn despike(row: &[f64], width: usize, factor: f64, out: &mut [f64], scratch: &mut Vec<f64>) {
    let n = row.len();
    debug_assert_eq!(out.len(), n);
    debug_assert!(
        factor >= 0.0,
        "factor must be >= 0: samples at or below it stay"
    );
    out.copy_from_slice(row);
    if n == 0 || width == 0 {
        return;
    }
    let width = effective_width(width, n);
    let candidates = row.iter().filter(|&&v| v > factor).count();
    if candidates == 0 {
        return;
    }
    let replace = |v: f64, median: f64| v > factor * median.max(1.0);
    if candidates > n / CANDIDATE_FRACTION {
        let mut medians = vec![0.0; n];
        running_median(row, width, &mut medians, scratch);
        for ((o, &v), &m) in out.iter_mut().zip(row).zip(&medians) {
            if replace(v, m) {
                *o = m;
            }
        }
        return;
    }
    let half = width / 2;
    for (i, o) in out.iter_mut().enumerate() {
        let v = row[i];
        if !(v > factor) {
            continue;
        }
        scratch.clear();
        scratch.extend(
            (i as isize - half as isize..=(i + half) as isize)
                .map(|j| row[j.clamp(0, n as isize - 1) as usize]),
        );
        let (_, &mut median, _) = scratch.select_nth_unstable_by(half, f64::total_cmp);
        if replace(v, median) {
            *o = median;
        }
    }
}

/// [`despike`] of every row of the row-major `[values.len() / n_cols, n_cols]` array,
/// rows in parallel on the current rayon pool.
pub fn despike_rows(values: &[f64], n_cols: usize, width: usize, factor: f64, out: &mut [f64]) {
    if n_cols == 0 {
        return;
    }
    out.par_chunks_mut(n_cols)
        .zip(values.par_chunks(n_cols))
        .for_each_init(Vec::new, |scratch, (o, row)| {
            despike(row, width, factor, o, scratch)
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition: sort each clamped window.
    fn naive(row: &[f64], width: usize) -> Vec<f64> {
        let (n, half) = (row.len() as isize, (width / 2) as isize);
        (0..n)
            .map(|i| {
                let mut w: Vec<f64> = (i - half..=i + half)
                    .map(|j| row[j.clamp(0, n - 1) as usize])
                    .collect();
                w.sort_by(f64::total_cmp);
                w[width / 2]
            })
            .collect()
    }

    #[test]
    fn equals_sorting_each_window() {
        let mut state = 12345u64;
        for &(n, width) in &[
            (1, 1),
            (1, 25),
            (7, 3),
            (7, 13),
            (7, 15),
            (7, 61),
            (30, 25),
            (30, 201),
            (200, 5),
            (7200, 25),
        ] {
            let row: Vec<f64> = (0..n)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if i % 17 == 0 {
                        3.0
                    } else {
                        (state >> 11) as f64 / (1u64 << 53) as f64
                    }
                })
                .collect();
            let mut out = vec![0.0; n];
            running_median(&row, width, &mut out, &mut Vec::new());
            assert_eq!(out, naive(&row, width), "n={n} width={width}");
        }
    }

    #[test]
    fn a_window_wider_than_twice_the_row_needs_no_more_memory() {
        let row: Vec<f64> = (0..10).map(|i| ((i * 7) % 11) as f64).collect();
        let (mut wide, mut widest) = (vec![0.0; 10], vec![0.0; 10]);
        running_median(&row, 19, &mut wide, &mut Vec::new());
        running_median(&row, (1 << 31) + 1, &mut widest, &mut Vec::new());
        assert_eq!(wide, naive(&row, 19));
        assert_eq!(widest, wide);
        despike(&row, (1 << 31) + 1, 0.5, &mut widest, &mut Vec::new());
        assert_eq!(widest, despike_naive(&row, 19, 0.5));
    }

    #[test]
    fn rows_are_independent() {
        let values: Vec<f64> = (0..40).map(|i| ((i * 7) % 11) as f64).collect();
        let mut out = vec![0.0; 40];
        running_median_rows(&values, 10, 3, &mut out);
        for r in 0..4 {
            assert_eq!(
                out[r * 10..(r + 1) * 10],
                naive(&values[r * 10..(r + 1) * 10], 3)[..]
            );
        }
    }

    /// The whole-row definition: every sample against its running median.
    fn despike_naive(row: &[f64], width: usize, factor: f64) -> Vec<f64> {
        let med = naive(row, width);
        row.iter()
            .zip(&med)
            .map(|(&v, &m)| if v > factor * m.max(1.0) { m } else { v })
            .collect()
    }

    #[test]
    fn despike_equals_the_whole_row_rule_with_few_and_many_candidates() {
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // spike rates from none to most of the row: both paths of `despike`
        for &(n, width, rate) in &[
            (1, 1, 0.5),
            (30, 25, 0.1),
            (200, 5, 0.01),
            (7200, 25, 0.003),
            (7200, 25, 0.3),
            (7200, 25, 0.9),
            (50, 3, 0.0),
            (9, 41, 0.2),
            (9, 41, 0.6),
        ] {
            let row: Vec<f64> = (0..n)
                .map(|_| {
                    if next() < rate {
                        20.0 + 100.0 * next()
                    } else {
                        3.0 * next()
                    }
                })
                .collect();
            let mut out = vec![0.0; n];
            despike(&row, width, 9.0, &mut out, &mut Vec::new());
            assert_eq!(
                out,
                despike_naive(&row, width, 9.0),
                "n={n} width={width} rate={rate}"
            );
        }
    }
}
