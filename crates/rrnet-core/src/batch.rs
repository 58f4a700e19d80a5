//! Batch entry points over many spectra, parallel with rayon.
//!
//! Bad data never fails a batch: each spectrum gets a [`Status`] and, if it is
//! not OK, an all-NaN output row. Only a malformed call (wrong lengths, bad
//! offsets) returns an error. The functions run on the current rayon pool; the
//! caller chooses the pool (e.g. `ThreadPool::install`).

use rayon::prelude::*;

use crate::continuum::{normalize_arm, ArmBasis, ArmReport, ArmScratch};
use crate::error::{KernelError, Status};
use crate::grid::{Arm, N_PIX, N_PIX_ARM};
use crate::outliers::OutlierStats;
use crate::resample::resample_into;
use crate::rv::rv_correct_incremental_into;
use crate::snr::snr_ivar;

/// Diagnostics of one normalised spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizeStats {
    pub status: Status,
    /// Fits made in the clipping loop, blue and red.
    pub iterations: [u32; 2],
    /// Some arm stopped at the iteration cap.
    pub cap_hit: bool,
    /// Median-test outliers over both arms; longest run within an arm.
    pub outliers: OutlierStats,
}

impl Default for NormalizeStats {
    fn default() -> Self {
        NormalizeStats {
            status: Status::Ok,
            iterations: [0; 2],
            cap_hit: false,
            outliers: OutlierStats::default(),
        }
    }
}

/// Normalise one spectrum (7200 pixels, blue then red) into `out`.
pub fn normalize_spectrum(
    flux: &[f32],
    max_iter: u32,
    scratch: &mut ArmScratch,
    out: &mut [f32],
) -> NormalizeStats {
    let mut stats = NormalizeStats::default();
    if flux.len() != N_PIX || out.len() != N_PIX {
        stats.status = Status::LengthMismatch;
        out.fill(f32::NAN);
        return stats;
    }
    let mut reports = [ArmReport::default(); 2];
    let mut first_error = None;
    for arm in Arm::BOTH {
        let span = arm as usize * N_PIX_ARM..(arm as usize + 1) * N_PIX_ARM;
        let basis = ArmBasis::for_arm(arm);
        let (report, result) = normalize_arm(
            &flux[span.clone()],
            basis,
            max_iter,
            scratch,
            &mut out[span],
        );
        reports[arm as usize] = report;
        if let Err(err) = result {
            first_error.get_or_insert(err.status());
        }
    }
    stats.iterations = reports.map(|r| r.iterations);
    stats.cap_hit = reports.iter().any(|r| r.cap_hit);
    stats.outliers = reports[0].outliers.combine(reports[1].outliers);
    if let Some(status) = first_error {
        stats.status = status;
        out.fill(f32::NAN);
    }
    stats
}

/// Normalise `n` spectra: `flux` and `out` are row-major `[n, 7200]`, `stats` has `n` entries.
pub fn normalize_batch(
    flux: &[f32],
    out: &mut [f32],
    stats: &mut [NormalizeStats],
    max_iter: u32,
) -> Result<(), KernelError> {
    let n = stats.len();
    if flux.len() != n * N_PIX || out.len() != n * N_PIX {
        return Err(KernelError::InvalidArgument(format!(
            "flux and output must hold {n} x {N_PIX} values, got {} and {}",
            flux.len(),
            out.len()
        )));
    }
    if max_iter == 0 {
        return Err(KernelError::InvalidArgument("max_iter must be >= 1".into()));
    }
    flux.par_chunks(N_PIX)
        .zip(out.par_chunks_mut(N_PIX))
        .zip(stats.par_iter_mut())
        .for_each_init(ArmScratch::default, |scratch, ((f, o), st)| {
            *st = normalize_spectrum(f, max_iter, scratch, o);
        });
    Ok(())
}

/// Many 1-D arrays of different lengths: spectrum `i` is `values[offsets[i]..offsets[i+1]]`.
#[derive(Debug, Clone, Copy)]
pub struct Ragged<'a, T> {
    values: &'a [T],
    offsets: &'a [i64],
}

impl<'a, T> Ragged<'a, T> {
    /// Validate `offsets` (`n + 1` non-negative, non-decreasing entries, all within
    /// `values`; a sub-slice of a batch's offsets is valid too).
    pub fn new(values: &'a [T], offsets: &'a [i64]) -> Result<Self, KernelError> {
        let valid = offsets.first().is_some_and(|&o| o >= 0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets
                .last()
                .is_some_and(|&end| usize::try_from(end).is_ok_and(|e| e <= values.len()));
        if !valid {
            return Err(KernelError::InvalidArgument(format!(
                "offsets must be >= 0, never decrease and end <= {} (the values length)",
                values.len()
            )));
        }
        Ok(Ragged { values, offsets })
    }

    /// Number of arrays.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Array `i` (offsets were validated in `new`).
    pub fn get(&self, i: usize) -> &'a [T] {
        &self.values[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Every array, as the per-spectrum slices an [`ArmBatch`] holds.
    pub fn slices(&self) -> Vec<&'a [T]> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// One arm of a batch, one slice per spectrum: log10 wavelengths, fluxes and
/// (optional) inverse variances. The slices may come from one ragged buffer
/// ([`Ragged::slices`]) or from separate arrays (the reader's, borrowed as they
/// are: no concatenation copy).
#[derive(Debug, Clone, Copy)]
pub struct ArmBatch<'a> {
    pub loglam: &'a [&'a [f64]],
    pub flux: &'a [&'a [f32]],
    pub ivar: Option<&'a [&'a [f32]]>,
}

/// Outcome of resampling one spectrum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResampleStats {
    pub status: Status,
    /// Median `flux * sqrt(ivar)` in each arm's grid window (NaN without ivar).
    pub snr: [f64; 2],
}

impl Default for ResampleStats {
    fn default() -> Self {
        ResampleStats {
            status: Status::Ok,
            snr: [f64::NAN; 2],
        }
    }
}

/// Per-thread buffers of the resampling batch.
#[derive(Debug, Default)]
struct ResampleScratch {
    wave: Vec<f64>,
    snr: Vec<u64>,
}

/// Resample one arm of one spectrum into `out` (3600 values); S/N is computed
/// whether or not resampling succeeds.
fn resample_arm(
    arm: Arm,
    batch: &ArmBatch<'_>,
    i: usize,
    rv_kms: f64,
    scratch: &mut ResampleScratch,
    out: &mut [f32],
) -> (Result<(), KernelError>, f64) {
    let (loglam, flux) = (batch.loglam[i], batch.flux[i]);
    if loglam.len() != flux.len() {
        let err = KernelError::LengthMismatch {
            what: "loglam and flux",
            a: loglam.len(),
            b: flux.len(),
        };
        return (Err(err), f64::NAN);
    }
    scratch.wave.resize(loglam.len(), 0.0);
    rv_correct_incremental_into(loglam, rv_kms, &mut scratch.wave);
    let grid = arm.grid();
    let snr = match batch.ivar {
        Some(ivar) => snr_ivar(
            &scratch.wave,
            flux,
            ivar[i],
            grid[0],
            grid[N_PIX_ARM - 1],
            &mut scratch.snr,
        )
        .unwrap_or(f64::NAN),
        None => f64::NAN,
    };
    let result = match batch.ivar {
        Some(ivar) if ivar[i].len() != flux.len() => Err(KernelError::LengthMismatch {
            what: "ivar and flux",
            a: ivar[i].len(),
            b: flux.len(),
        }),
        _ => resample_into(&scratch.wave, flux, grid, out).and_then(|()| {
            // A fold, not `all`: no early exit, so it vectorises (one branch per row).
            if out.iter().fold(true, |ok, v| ok & v.is_finite()) {
                Ok(())
            } else {
                Err(KernelError::NonFiniteFlux)
            }
        }),
    };
    (result, snr)
}

/// Resample `n` spectra onto the fixed grids: `out` is row-major `[n, 7200]`.
///
/// `rv_kms` has one velocity per spectrum; with `correct_rv = false` the
/// wavelengths are used as observed.
pub fn resample_batch(
    arms: &[ArmBatch<'_>; 2],
    rv_kms: &[f64],
    correct_rv: bool,
    out: &mut [f32],
    stats: &mut [ResampleStats],
) -> Result<(), KernelError> {
    let n = stats.len();
    for batch in arms {
        let counts = [
            batch.loglam.len(),
            batch.flux.len(),
            batch.ivar.map_or(n, <[_]>::len),
        ];
        if counts.iter().any(|&c| c != n) {
            return Err(KernelError::InvalidArgument(format!(
                "every input must hold {n} spectra, got {counts:?}"
            )));
        }
    }
    if rv_kms.len() != n || out.len() != n * N_PIX {
        return Err(KernelError::InvalidArgument(format!(
            "rv must have {n} values and the output {n} x {N_PIX}, got {} and {}",
            rv_kms.len(),
            out.len()
        )));
    }
    out.par_chunks_mut(N_PIX)
        .zip(stats.par_iter_mut())
        .enumerate()
        .for_each_init(ResampleScratch::default, |scratch, (i, (row, st))| {
            let rv = if correct_rv { rv_kms[i] } else { 0.0 };
            *st = ResampleStats::default();
            let mut first_error = None;
            for arm in Arm::BOTH {
                let span = arm as usize * N_PIX_ARM..(arm as usize + 1) * N_PIX_ARM;
                let (result, snr) =
                    resample_arm(arm, &arms[arm as usize], i, rv, scratch, &mut row[span]);
                st.snr[arm as usize] = snr;
                if let Err(err) = result {
                    first_error.get_or_insert(err.status());
                }
            }
            if let Some(status) = first_error {
                st.status = status;
                row.fill(f32::NAN);
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm_data(arm: Arm, descending: bool) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
        let grid = arm.grid();
        let (lo, hi) = (grid[0] - 20.0, grid[N_PIX_ARM - 1] + 20.0);
        let n = 4000;
        let mut loglam: Vec<f64> = (0..n)
            .map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64).log10())
            .collect();
        let mut flux: Vec<f32> = (0..n).map(|i| 100.0 + (i as f32 * 0.1).sin()).collect();
        if descending {
            loglam.reverse();
            flux.reverse();
        }
        (loglam, flux, vec![1.0; n])
    }

    #[test]
    fn resample_then_normalize_good_and_bad_spectra() {
        let (lb, fb, ib) = arm_data(Arm::Blue, false);
        let (lr, fr, ir) = arm_data(Arm::Red, true);
        // Spectrum 1 has a huge RV that pushes the grid out of range.
        let (lb2, fb2, ib2) = (
            [lb.clone(), lb].concat(),
            [fb.clone(), fb].concat(),
            [ib.clone(), ib].concat(),
        );
        let (lr2, fr2, ir2) = (
            [lr.clone(), lr].concat(),
            [fr.clone(), fr].concat(),
            [ir.clone(), ir].concat(),
        );
        let off: Vec<i64> = vec![0, 4000, 8000];
        let (lb2, fb2, ib2) = (
            Ragged::new(&lb2, &off).unwrap().slices(),
            Ragged::new(&fb2, &off).unwrap().slices(),
            Ragged::new(&ib2, &off).unwrap().slices(),
        );
        let (lr2, fr2, ir2) = (
            Ragged::new(&lr2, &off).unwrap().slices(),
            Ragged::new(&fr2, &off).unwrap().slices(),
            Ragged::new(&ir2, &off).unwrap().slices(),
        );
        let arms = [
            ArmBatch {
                loglam: &lb2,
                flux: &fb2,
                ivar: Some(&ib2),
            },
            ArmBatch {
                loglam: &lr2,
                flux: &fr2,
                ivar: Some(&ir2),
            },
        ];
        let mut out = vec![0.0f32; 2 * N_PIX];
        let mut stats = vec![ResampleStats::default(); 2];
        resample_batch(&arms, &[0.0, 5000.0], true, &mut out, &mut stats).unwrap();
        assert_eq!(stats[0].status, Status::Ok);
        assert_eq!(stats[1].status, Status::GridOutOfRange);
        assert!(out[N_PIX..].iter().all(|v| v.is_nan()));
        assert!((stats[0].snr[0] - 100.0).abs() < 1.0);

        let mut normed = vec![0.0f32; 2 * N_PIX];
        let mut nstats = vec![NormalizeStats::default(); 2];
        normalize_batch(&out, &mut normed, &mut nstats, 100).unwrap();
        assert_eq!(nstats[0].status, Status::Ok);
        assert_eq!(nstats[1].status, Status::NonFiniteFlux);
        assert!(nstats[0].iterations[0] >= 1);
    }

    #[test]
    fn bad_offsets_are_rejected() {
        let v = [1.0f64; 4];
        assert!(Ragged::new(&v, &[0, 5]).is_err());
        assert!(Ragged::new(&v, &[-1, 2]).is_err());
        assert_eq!(Ragged::new(&v, &[1, 2]).unwrap().get(0), &[1.0]);
        assert!(Ragged::new(&v, &[0, 3, 2]).is_err());
        assert!(Ragged::new(&v, &[]).is_err());
        assert_eq!(Ragged::new(&v, &[0, 1, 4]).unwrap().get(1).len(), 3);
    }
}
