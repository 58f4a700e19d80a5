//! Running median of each row over an odd window, edges extended with the end value
//! (scipy's `median_filter(size=(1, width), mode="nearest")`): the out-of-distribution
//! test's despiking, which scipy's general rank filter made its most expensive step.

use rayon::prelude::*;

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
    let half = width / 2;
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
        for &(n, width) in &[(1, 1), (1, 25), (7, 3), (30, 25), (200, 5), (7200, 25)] {
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
}
