//! `rrnet._core`: thin PyO3 bindings of `rrnet-core` (numpy in, numpy out, no logic).
//!
//! Arrays are borrowed, not copied: they must be C-contiguous with the exact
//! dtype (the Python gateway `rrnet.preprocess` converts and checks). Batch calls
//! release the GIL through [`run_detached`], the convolutions (one thread's share of
//! work the caller splits, `rrnet.training.conv`) through [`detach_here`]; callers
//! must not mutate the input arrays while a call runs.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::ndarray::Array2;
use numpy::{
    Element, IntoPyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use rrnet_core::batch::{self, ArmBatch, NormalizeStats, Ragged, ResampleStats};
use rrnet_core::conv1d::{self, Conv1dShape, Epilogue};
use rrnet_core::fits::lamost::{self, ArmData, FileData, ReadFailure, ReadOptions};
use rrnet_core::grid::{Arm, N_PIX};
use rrnet_core::rv_inputs::{rv_inputs_batch, RawArms};
use rrnet_core::rv_measure::{self, RvResult, RvSettings, RvStatus, RvValue, Templates};
use rrnet_core::{KernelError, Status};

pyo3::import_exception!(rrnet.preprocess.status, PreprocessError);

/// Rows per GIL-free chunk; Ctrl-C is checked between chunks.
const ROWS_PER_CHUNK: usize = 4096;

fn to_pyerr(err: KernelError) -> PyErr {
    match err {
        KernelError::InvalidArgument(msg) => PyValueError::new_err(msg),
        other => PreprocessError::new_err((other.to_string(), other.status() as u8)),
    }
}

/// Thread count: the `threads` argument, else `RRNET_NUM_THREADS`, else all cores (0);
/// an empty value counts as unset, as in `rrnet.utils.cores.compute_threads`.
/// At most `MAX_THREADS_PER_CORE` per core (as `rrnet.utils.cores`, which refuses more):
/// a huge count spent minutes starting threads, deaf to SIGTERM.
fn thread_count(threads: Option<usize>) -> PyResult<usize> {
    let n = match threads {
        Some(n) => n,
        None => match std::env::var("RRNET_NUM_THREADS") {
            Ok(v) if v.trim().is_empty() => 0,
            Ok(v) => v.trim().parse::<usize>().map_err(|_| {
                PyValueError::new_err(format!("RRNET_NUM_THREADS must be an integer, got {v:?}"))
            })?,
            Err(_) => 0,
        },
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    Ok(n.min(MAX_THREADS_PER_CORE * cores))
}

/// See `rrnet.utils.cores.MAX_THREADS_PER_CORE`.
const MAX_THREADS_PER_CORE: usize = 4;

/// Rayon pools by thread count (0 = rayon's default: all cores), and the process that
/// started their threads.
struct Pools {
    pid: u32,
    by_count: HashMap<usize, Arc<ThreadPool>>,
}

/// A cached rayon pool per thread count.
///
/// A forked child (`multiprocessing` on Linux) inherits the cache but not the threads:
/// a job given to an inherited pool waits forever. So a cache made by another
/// process is set aside, never dropped (dropping would signal threads that are not
/// there), and the child starts its own pools. The lock is held only to look up and
/// insert, never while threads start, so that a fork meanwhile rarely finds it held.
fn pool(threads: Option<usize>) -> PyResult<Arc<ThreadPool>> {
    static POOLS: Mutex<Option<Pools>> = Mutex::new(None);
    let n = thread_count(threads)?;
    if let Some(p) = this_process_pools(&POOLS, |pools| pools.by_count.get(&n).cloned()) {
        return Ok(p);
    }
    let started = ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map(Arc::new)
        .map_err(|e| PyValueError::new_err(format!("cannot start {n} threads: {e}")))?;
    // another thread may have started one meanwhile: the first stays, ours is dropped
    Ok(this_process_pools(&POOLS, |pools| {
        pools.by_count.entry(n).or_insert(started).clone()
    }))
}

/// `with` applied to this process's pool cache (another process's is set aside first).
fn this_process_pools<T>(cache: &Mutex<Option<Pools>>, with: impl FnOnce(&mut Pools) -> T) -> T {
    let pid = std::process::id();
    let mut guard = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.as_ref().is_some_and(|pools| pools.pid != pid) {
        std::mem::forget(guard.take());
    }
    with(guard.get_or_insert_with(|| Pools {
        pid,
        by_count: HashMap::new(),
    }))
}

/// The one place that releases the GIL: run `work` on row chunks of `0..n_rows`
/// inside the chosen rayon pool, converting errors and honouring Ctrl-C between chunks.
fn run_detached<F>(
    py: Python<'_>,
    threads: Option<usize>,
    n_rows: usize,
    mut work: F,
) -> PyResult<()>
where
    F: FnMut(Range<usize>) -> Result<(), KernelError> + Send,
{
    let pool = pool(threads)?;
    let mut start = 0;
    while start < n_rows {
        let end = (start + ROWS_PER_CHUNK).min(n_rows);
        py.detach(|| pool.install(|| work(start..end)))
            .map_err(to_pyerr)?;
        py.check_signals()?;
        start = end;
    }
    Ok(())
}

/// A zeroed float32 `[n, 7200]` array from numpy's allocator, which asks the kernel
/// for huge pages on large arrays: filling a fresh output then costs a fraction of
/// the page faults of a plain allocation (measured: ~15 us per spectrum less CPU).
fn output_rows(py: Python<'_>, n: usize) -> Bound<'_, PyArray2<f32>> {
    PyArray2::zeros(py, [n, N_PIX], false)
}

/// The output rows of a batch call: the caller's `out` (C-contiguous float32
/// `[n, 7200]`, writeable, not aliasing an input: e.g. rows of a store shard being
/// built, so nothing is allocated and copied) or a fresh array.
fn output_or_new<'py>(
    py: Python<'py>,
    out: Option<Bound<'py, PyArray2<f32>>>,
    n: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let Some(out) = out else {
        return Ok(output_rows(py, n));
    };
    if out.shape() != [n, N_PIX] || !out.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "out must be a C-contiguous float32 array of shape ({n}, {N_PIX}), got shape {:?}",
            out.shape()
        )));
    }
    Ok(out)
}

/// One field of every per-spectrum statistic as a 1-d numpy array (the one
/// conversion of the batch calls' statistics).
fn column<'py, S, T: Element>(
    py: Python<'py>,
    stats: &[S],
    field: impl Fn(&S) -> T,
) -> Bound<'py, PyArray1<T>> {
    stats.iter().map(field).collect::<Vec<T>>().into_pyarray(py)
}

/// Status codes and names, in code order.
#[pyfunction]
fn status_codes() -> Vec<(u8, &'static str)> {
    Status::ALL
        .iter()
        .map(|&(s, name)| (s as u8, name))
        .collect()
}

/// The fixed grid of `arm` ("blue" or "red") in Angstrom.
#[pyfunction]
fn grid<'py>(py: Python<'py>, arm: &str) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let arm = match arm {
        "blue" => Arm::Blue,
        "red" => Arm::Red,
        other => {
            return Err(PyValueError::new_err(format!(
                "arm must be 'blue' or 'red', got {other:?}"
            )))
        }
    };
    Ok(PyArray1::from_slice(py, arm.grid()))
}

#[pyfunction]
fn rv_correct<'py>(
    py: Python<'py>,
    loglam: PyReadonlyArray1<'py, f64>,
    rv_kms: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    Ok(rrnet_core::rv::rv_correct(loglam.as_slice()?, rv_kms).into_pyarray(py))
}

#[pyfunction]
fn resample<'py>(
    py: Python<'py>,
    wave: PyReadonlyArray1<'py, f64>,
    flux: PyReadonlyArray1<'py, f32>,
    grid: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let grid = grid.as_slice()?;
    let mut out = vec![0.0f32; grid.len()];
    rrnet_core::resample::resample_into(wave.as_slice()?, flux.as_slice()?, grid, &mut out)
        .map_err(to_pyerr)?;
    Ok(out.into_pyarray(py))
}

#[pyfunction]
fn snr_ivar(
    wave: PyReadonlyArray1<'_, f64>,
    flux: PyReadonlyArray1<'_, f32>,
    ivar: PyReadonlyArray1<'_, f32>,
    lo: f64,
    hi: f64,
) -> PyResult<f64> {
    let (wave, flux, ivar) = (wave.as_slice()?, flux.as_slice()?, ivar.as_slice()?);
    rrnet_core::snr::snr_ivar(wave, flux, ivar, lo, hi, &mut Vec::new()).map_err(to_pyerr)
}

/// Running median of each row of float64 `[n, m]` over `width` (odd) samples, edges
/// extended with the end value (`rrnet_core::running_median`).
#[pyfunction]
#[pyo3(signature = (values, width, threads=None))]
fn running_median_rows<'py>(
    py: Python<'py>,
    values: PyReadonlyArray2<'py, f64>,
    width: usize,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    odd_width(width)?;
    map_rows_f64(py, values, threads, |input, m, out| {
        rrnet_core::running_median::running_median_rows(input, m, width, out)
    })
}

/// Each row of float64 `[n, m]` with its spikes replaced by the running median over
/// `width` (odd) samples: a sample above `factor` (>= 0) times `max(median, 1)`
/// (`rrnet_core::running_median::despike`).
#[pyfunction]
#[pyo3(signature = (values, width, factor, threads=None))]
fn despike_rows<'py>(
    py: Python<'py>,
    values: PyReadonlyArray2<'py, f64>,
    width: usize,
    factor: f64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    odd_width(width)?;
    if factor.is_nan() || factor < 0.0 {
        return Err(PyValueError::new_err(format!(
            "factor must be >= 0, got {factor}"
        )));
    }
    map_rows_f64(py, values, threads, |input, m, out| {
        rrnet_core::running_median::despike_rows(input, m, width, factor, out)
    })
}

fn odd_width(width: usize) -> PyResult<()> {
    if width.is_multiple_of(2) {
        return Err(PyValueError::new_err(format!(
            "width must be odd, got {width}"
        )));
    }
    Ok(())
}

/// A fresh float64 `[n, m]` array from `kernel(rows of values, m, the same rows of
/// out)`, run on blocks of rows with the GIL released.
fn map_rows_f64<'py>(
    py: Python<'py>,
    values: PyReadonlyArray2<'py, f64>,
    threads: Option<usize>,
    kernel: impl Fn(&[f64], usize, &mut [f64]) + Send + Sync,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let [n, m] = [values.shape()[0], values.shape()[1]];
    let input = values.as_slice()?;
    let mut out = vec![0.0; n * m];
    let out_ref = &mut out;
    run_detached(py, threads, n, |rows| {
        let px = rows.start * m..rows.end * m;
        kernel(&input[px.clone()], m, &mut out_ref[px]);
        Ok(())
    })?;
    Array2::from_shape_vec((n, m), out)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

type NormalizeOut<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<u32>>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u8>>,
);

/// Normalise float32 `[n, 7200]`; returns (flux, iterations, cap_hit, n_outliers,
/// max_outlier_run, status).
#[pyfunction]
#[pyo3(signature = (flux, max_iter, threads=None, out=None))]
fn normalize_batch<'py>(
    py: Python<'py>,
    flux: PyReadonlyArray2<'py, f32>,
    max_iter: u32,
    threads: Option<usize>,
    out: Option<Bound<'py, PyArray2<f32>>>,
) -> PyResult<NormalizeOut<'py>> {
    let n = flux.shape()[0];
    let input = flux.as_slice()?;
    if input.len() != n * N_PIX {
        return Err(PyValueError::new_err(format!(
            "flux must have shape (n, {N_PIX})"
        )));
    }
    let out = output_or_new(py, out, n)?;
    let mut rows = out.try_readwrite()?; // numpy's borrow check: writeable, no alias
    let mut stats = vec![NormalizeStats::default(); n];
    let (out_ref, stats_ref) = (rows.as_slice_mut()?, &mut stats);
    run_detached(py, threads, n, |rows| {
        let px = rows.start * N_PIX..rows.end * N_PIX;
        batch::normalize_batch(
            &input[px.clone()],
            &mut out_ref[px],
            &mut stats_ref[rows],
            max_iter,
        )
    })?;
    drop(rows);
    let iterations: Vec<u32> = stats.iter().flat_map(|s| s.iterations).collect();
    Ok((
        out,
        Array2::from_shape_vec((n, 2), iterations)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py),
        column(py, &stats, |s| s.cap_hit),
        column(py, &stats, |s| s.outliers.count),
        column(py, &stats, |s| s.outliers.max_run),
        column(py, &stats, |s| s.status as u8),
    ))
}

type ResampleOut<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
);

/// One arm's ragged inputs from Python: (loglam f64, loglam offsets, flux f32, flux
/// offsets, ivar f32 or None, ivar offsets or None). Each array has its own offsets
/// so a per-spectrum length mismatch becomes a status, not a misalignment.
type ArmTuple<'py> = (
    PyReadonlyArray1<'py, f64>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, f32>,
    PyReadonlyArray1<'py, i64>,
    Option<PyReadonlyArray1<'py, f32>>,
    Option<PyReadonlyArray1<'py, i64>>,
);

/// One arm's inputs as borrowed per-spectrum slices (from a ragged buffer or
/// from separate arrays); [`Self::batch`] hands a row range to the kernel.
struct ArmSlices<'a> {
    loglam: Vec<&'a [f64]>,
    flux: Vec<&'a [f32]>,
    ivar: Option<Vec<&'a [f32]>>,
}

/// The first `n` arrays of a ragged buffer (`offsets` needs at least `n + 1` entries).
fn ragged_slices<'a, T>(
    values: &'a [T],
    offsets: &'a [i64],
    n: usize,
) -> Result<Vec<&'a [T]>, KernelError> {
    let off = offsets
        .get(..=n)
        .ok_or_else(|| KernelError::InvalidArgument("offsets must have n + 1 entries".into()))?;
    Ok(Ragged::new(values, off)?.slices())
}

/// Borrow each array of a list (C-contiguous, exact dtype).
fn list_slices<'a, T: Element>(arrays: &'a [PyReadonlyArray1<'_, T>]) -> PyResult<Vec<&'a [T]>> {
    arrays
        .iter()
        .map(|a| a.as_slice().map_err(PyErr::from))
        .collect()
}

impl<'a> ArmSlices<'a> {
    fn from_ragged(arm: &'a ArmTuple<'_>, n: usize) -> PyResult<Self> {
        let ivar = match (&arm.4, &arm.5) {
            (Some(v), Some(o)) => Some(ragged_slices(v.as_slice()?, o.as_slice()?, n)),
            (None, None) => None,
            _ => return Err(PyValueError::new_err("ivar and its offsets go together")),
        };
        Ok(ArmSlices {
            loglam: ragged_slices(arm.0.as_slice()?, arm.1.as_slice()?, n).map_err(to_pyerr)?,
            flux: ragged_slices(arm.2.as_slice()?, arm.3.as_slice()?, n).map_err(to_pyerr)?,
            ivar: ivar.transpose().map_err(to_pyerr)?,
        })
    }

    fn from_lists(arm: &'a ArmLists<'_>) -> PyResult<Self> {
        Ok(ArmSlices {
            loglam: list_slices(&arm.0)?,
            flux: list_slices(&arm.1)?,
            ivar: arm.2.as_deref().map(list_slices).transpose()?,
        })
    }

    /// Rows `rows` of this arm (every list was checked to hold all rows).
    fn batch(&self, rows: Range<usize>) -> ArmBatch<'_> {
        ArmBatch {
            loglam: &self.loglam[rows.clone()],
            flux: &self.flux[rows.clone()],
            ivar: self.ivar.as_ref().map(|v| &v[rows]),
        }
    }
}

/// Resample the spectra of two arms' slices (the shared body of the entry points).
fn resample_slices<'py>(
    py: Python<'py>,
    arms: [ArmSlices<'_>; 2],
    rv: &[f64],
    correct_rv: bool,
    threads: Option<usize>,
    out: Option<Bound<'py, PyArray2<f32>>>,
) -> PyResult<ResampleOut<'py>> {
    let n = rv.len();
    for arm in &arms {
        let counts = [
            arm.loglam.len(),
            arm.flux.len(),
            arm.ivar.as_ref().map_or(n, Vec::len),
        ];
        if counts.iter().any(|&c| c != n) {
            return Err(PyValueError::new_err(format!(
                "every input must hold {n} spectra (one per RV), got {counts:?}"
            )));
        }
    }
    let out = output_or_new(py, out, n)?;
    let mut rows = out.try_readwrite()?; // numpy's borrow check: writeable, no alias
    let mut stats = vec![ResampleStats::default(); n];
    let (out_ref, stats_ref, arms_ref) = (rows.as_slice_mut()?, &mut stats, &arms);
    run_detached(py, threads, n, |rows| {
        let chunk = [
            arms_ref[0].batch(rows.clone()),
            arms_ref[1].batch(rows.clone()),
        ];
        let px = rows.start * N_PIX..rows.end * N_PIX;
        batch::resample_batch(
            &chunk,
            &rv[rows.clone()],
            correct_rv,
            &mut out_ref[px],
            &mut stats_ref[rows],
        )
    })?;
    drop(rows);
    Ok((
        out,
        column(py, &stats, |s| s.status as u8),
        column(py, &stats, |s| s.snr[0]),
        column(py, &stats, |s| s.snr[1]),
    ))
}

/// Resample a ragged batch; returns (flux [n, 7200], status, snr_blue, snr_red).
#[pyfunction]
#[pyo3(signature = (blue, red, rv_kms, correct_rv=true, threads=None, out=None))]
fn resample_batch<'py>(
    py: Python<'py>,
    blue: ArmTuple<'py>,
    red: ArmTuple<'py>,
    rv_kms: PyReadonlyArray1<'py, f64>,
    correct_rv: bool,
    threads: Option<usize>,
    out: Option<Bound<'py, PyArray2<f32>>>,
) -> PyResult<ResampleOut<'py>> {
    let rv = rv_kms.as_slice()?;
    let n = rv.len();
    let arms = [
        ArmSlices::from_ragged(&blue, n)?,
        ArmSlices::from_ragged(&red, n)?,
    ];
    resample_slices(py, arms, rv, correct_rv, threads, out)
}

/// One arm's inputs as lists of 1-d arrays, one per spectrum: (loglam f64, flux
/// f32, ivar f32 or None). Each array is borrowed where it is (no concatenation).
type ArmLists<'py> = (
    Vec<PyReadonlyArray1<'py, f64>>,
    Vec<PyReadonlyArray1<'py, f32>>,
    Option<Vec<PyReadonlyArray1<'py, f32>>>,
);

/// Resample spectra given as per-spectrum arrays (e.g. the reader's, as they
/// are); same outputs as [`resample_batch`].
#[pyfunction]
#[pyo3(signature = (blue, red, rv_kms, correct_rv=true, threads=None, out=None))]
fn resample_arrays<'py>(
    py: Python<'py>,
    blue: ArmLists<'py>,
    red: ArmLists<'py>,
    rv_kms: PyReadonlyArray1<'py, f64>,
    correct_rv: bool,
    threads: Option<usize>,
    out: Option<Bound<'py, PyArray2<f32>>>,
) -> PyResult<ResampleOut<'py>> {
    let arms = [ArmSlices::from_lists(&blue)?, ArmSlices::from_lists(&red)?];
    resample_slices(py, arms, rv_kms.as_slice()?, correct_rv, threads, out)
}

/// Two float32 `[n, 7200]` arrays.
type RowPair<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>);

/// The RV fit's inputs from raw arms, each (wavelength [Angstrom] f64, flux f32, ivar
/// f32) lists, and their unshifted normalised rows `[n, 7200]`: (flux with NaN as 1,
/// IVAR on the grid), each `[n, 7200]` float32; rows not `usable` are 1 and 0.
#[pyfunction]
#[pyo3(signature = (blue, red, normalised, usable, threads=None))]
fn rv_inputs<'py>(
    py: Python<'py>,
    blue: ArmLists<'py>,
    red: ArmLists<'py>,
    normalised: PyReadonlyArray2<'py, f32>,
    usable: PyReadonlyArray1<'py, bool>,
    threads: Option<usize>,
) -> PyResult<RowPair<'py>> {
    let arms = [ArmSlices::from_lists(&blue)?, ArmSlices::from_lists(&red)?];
    let (Some(ivar_blue), Some(ivar_red)) = (&arms[0].ivar, &arms[1].ivar) else {
        return Err(PyValueError::new_err("ivar is required"));
    };
    let ivars = [ivar_blue, ivar_red];
    let (normalised, usable) = (normalised.as_slice()?, usable.as_slice()?);
    let n = usable.len();
    let (flux, ivar) = (output_rows(py, n), output_rows(py, n));
    {
        let (mut flux_rw, mut ivar_rw) = (flux.readwrite(), ivar.readwrite());
        let (flux_out, ivar_out) = (flux_rw.as_slice_mut()?, ivar_rw.as_slice_mut()?);
        if normalised.len() != n * N_PIX {
            return Err(PyValueError::new_err(format!(
                "normalised must have shape ({n}, {N_PIX})"
            )));
        }
        run_detached(py, threads, n, |rows| {
            let px = rows.start * N_PIX..rows.end * N_PIX;
            let raw = |k: usize| RawArms {
                wave: &arms[k].loglam[rows.clone()],
                flux: &arms[k].flux[rows.clone()],
                ivar: &ivars[k][rows.clone()],
            };
            rv_inputs_batch(
                &[raw(0), raw(1)],
                &normalised[px.clone()],
                &usable[rows],
                &mut flux_out[px.clone()],
                &mut ivar_out[px],
            )
        })?;
    }
    Ok((flux, ivar))
}

type RvOut<'py> = (
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<u8>>,
    Bound<'py, PyArray1<i32>>,
);

/// Measure RVs of normalised observed-frame rows `[n, 7200]` against templates
/// `[m, 2, len]` (ln wavelength `ln0[arm] + j * dln`); returns (rv, err, chi2_red,
/// status) each `[n, 3]` (blue, red, combined) and the best template `[n]`.
#[pyfunction]
#[pyo3(signature = (flux, ivar, templates, ln0, dln, window_kms=600.0, coarse_kms=15.0, fine_kms=3.0, threads=None))]
#[allow(clippy::too_many_arguments)]
fn rv_measure_batch<'py>(
    py: Python<'py>,
    flux: PyReadonlyArray2<'py, f32>,
    ivar: PyReadonlyArray2<'py, f32>,
    templates: PyReadonlyArray3<'py, f32>,
    ln0: (f64, f64),
    dln: f64,
    window_kms: f64,
    coarse_kms: f64,
    fine_kms: f64,
    threads: Option<usize>,
) -> PyResult<RvOut<'py>> {
    let n = flux.shape()[0];
    let (flux, ivar) = (flux.as_slice()?, ivar.as_slice()?);
    if flux.len() != n * N_PIX || ivar.len() != flux.len() {
        return Err(PyValueError::new_err(format!(
            "flux and ivar must have shape (n, {N_PIX})"
        )));
    }
    let shape = templates.shape();
    if shape[1] != 2 {
        return Err(PyValueError::new_err(
            "templates must have shape (m, 2, len)",
        ));
    }
    let t = Templates::new(templates.as_slice()?, shape[0], [ln0.0, ln0.1], dln)
        .map_err(PyValueError::new_err)?;
    let s = RvSettings {
        window_kms,
        coarse_kms,
        fine_kms,
    };
    let mut out = vec![RvResult::default(); n];
    let out_ref = &mut out;
    run_detached(py, threads, n, |rows| {
        let px = rows.start * N_PIX..rows.end * N_PIX;
        rv_measure::measure_batch(&flux[px.clone()], &ivar[px], &t, &s, &mut out_ref[rows])
            .map_err(KernelError::InvalidArgument)
    })?;
    let shape_err = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
    let field = |f: fn(&RvValue) -> f64| -> PyResult<Array2<f64>> {
        let v = out.iter().flat_map(|r| r.values.iter().map(f)).collect();
        Array2::from_shape_vec((n, 3), v).map_err(shape_err)
    };
    let status = out
        .iter()
        .flat_map(|r| r.values.iter().map(|v| v.status as u8))
        .collect();
    Ok((
        field(|v| v.rv)?.into_pyarray(py),
        field(|v| v.err)?.into_pyarray(py),
        field(|v| v.chi2_red)?.into_pyarray(py),
        Array2::from_shape_vec((n, 3), status)
            .map_err(shape_err)?
            .into_pyarray(py),
        out.iter()
            .map(|r| r.template)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    ))
}

/// RV status codes and names, in code order.
#[pyfunction]
fn rv_status_codes() -> Vec<(u8, &'static str)> {
    RvStatus::ALL
        .iter()
        .map(|&(s, name)| (s as u8, name))
        .collect()
}

/// One arm as returned to Python: (status, reason, cards, loglam, flux, ivar, mask, ormask).
type ArmOut<'py> = (
    &'static str,
    String,
    Vec<(String, String)>,
    Option<Bound<'py, PyArray1<f64>>>,
    Option<Bound<'py, PyArray1<f32>>>,
    Option<Bound<'py, PyArray1<f32>>>,
    Option<Bound<'py, PyArray1<i32>>>,
    Option<Bound<'py, PyArray1<i32>>>,
);

/// One file as returned to Python: (status, reason, primary cards, extnames, n_hdus, arms).
type FileOut<'py> = (
    &'static str,
    String,
    Vec<(String, String)>,
    Vec<Option<String>>,
    usize,
    Vec<ArmOut<'py>>,
);

fn arm_out(py: Python<'_>, arm: Result<ArmData, ReadFailure>) -> ArmOut<'_> {
    match arm {
        Ok(a) => (
            "ok",
            String::new(),
            a.cards,
            Some(a.loglam.into_pyarray(py)),
            Some(a.flux.into_pyarray(py)),
            Some(a.ivar.into_pyarray(py)),
            a.mask.map(|m| m.into_pyarray(py)),
            a.ormask.map(|m| m.into_pyarray(py)),
        ),
        Err(e) => (
            e.status.name(),
            e.reason,
            vec![],
            None,
            None,
            None,
            None,
            None,
        ),
    }
}

fn file_out(py: Python<'_>, file: Result<FileData, ReadFailure>) -> FileOut<'_> {
    match file {
        Ok(f) => {
            let arms = f.arms.into_iter().map(|a| arm_out(py, a)).collect();
            ("ok", String::new(), f.primary, f.extnames, f.n_hdus, arms)
        }
        Err(e) => (e.status.name(), e.reason, vec![], vec![], 0, vec![]),
    }
}

/// Read LAMOST MRS files in memory, one rayon task per file (GIL released).
/// Status "unsupported" means: read that file with cfitsio instead. With
/// `masks=False` the mask columns are checked (same statuses) but not returned.
#[pyfunction]
#[pyo3(signature = (paths, extnames, primary_keys, arm_keys, max_inflated, threads=None, masks=true))]
#[allow(clippy::too_many_arguments)]
fn read_lamost_batch(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    extnames: Vec<Vec<String>>,
    primary_keys: Vec<String>,
    arm_keys: Vec<String>,
    max_inflated: usize,
    threads: Option<usize>,
    masks: bool,
) -> PyResult<Vec<FileOut<'_>>> {
    if paths.len() != extnames.len() {
        return Err(PyValueError::new_err(
            "paths and extnames must have the same length",
        ));
    }
    let opts = ReadOptions {
        max_inflated,
        primary_keys,
        arm_keys,
        masks,
    };
    let files: Vec<_> = paths
        .iter()
        .zip(&extnames)
        .map(|(p, e)| (p.as_path(), e.as_slice()))
        .collect();
    let mut results = Vec::with_capacity(files.len());
    run_detached(py, threads, files.len(), |rows| {
        results.extend(lamost::read_files(&files[rows], &opts));
        Ok(())
    })?;
    Ok(results.into_iter().map(|f| file_out(py, f)).collect())
}

/// Run `work` (one thread's share of a job the caller already split across threads,
/// e.g. a convolution of some ensemble members) on this thread without the GIL: no
/// pool hand-off, so concurrent Python threads run concurrently.
fn detach_here<F>(py: Python<'_>, work: F) -> PyResult<()>
where
    F: FnOnce() -> Result<(), KernelError> + Send,
{
    py.detach(work).map_err(to_pyerr)
}

/// The [`Conv1dShape`] of `conv1d(x, w, stride=stride, padding=padding, groups=groups)`
/// from the shapes of `x` `[B, G*C_in, L]` and `w` `[G*C_out, C_in, K]`.
fn conv_shape(
    x: &[usize],
    w: &[usize],
    stride: usize,
    padding: usize,
    groups: usize,
) -> PyResult<Conv1dShape> {
    if groups == 0 || x[1] != groups * w[1] || !w[0].is_multiple_of(groups) {
        return Err(PyValueError::new_err(format!(
            "conv1d: x {x:?} and w {w:?} do not fit groups={groups}"
        )));
    }
    Ok(Conv1dShape {
        batch: x[0],
        groups,
        c_in: w[1],
        c_out: w[0] / groups,
        len_in: x[2],
        kernel: w[2],
        stride,
        pad: padding,
    })
}

/// Grouped conv1d of float32 C-contiguous arrays into `out` `[B, G*C_out, L_out]`
/// (added to what `out` holds if `accumulate`), then a ReLU if `relu`
/// (`rrnet_core::conv1d`; one thread, GIL released).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn conv1d_forward(
    py: Python<'_>,
    x: PyReadonlyArray3<'_, f32>,
    w: PyReadonlyArray3<'_, f32>,
    bias: Option<PyReadonlyArray1<'_, f32>>,
    out: Bound<'_, PyArray3<f32>>,
    stride: usize,
    padding: usize,
    groups: usize,
    relu: bool,
    accumulate: bool,
) -> PyResult<()> {
    let s = conv_shape(x.shape(), w.shape(), stride, padding, groups)?;
    let (x, w) = (x.as_slice()?, w.as_slice()?);
    let bias = bias.as_ref().map(|b| b.as_slice()).transpose()?;
    let mut out = out.try_readwrite()?; // numpy's borrow check: writeable, no alias
    let y = out.as_slice_mut()?;
    let epi = Epilogue { accumulate, relu };
    detach_here(py, || conv1d::conv1d_forward(&s, x, w, bias, epi, y))
}

/// The input gradient of [`conv1d_forward`] into `gx` `[B, G*C_in, L]`; `mask`: the
/// forward's output if it had a ReLU (the gradient is 0 where it is <= 0).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn conv1d_grad_input(
    py: Python<'_>,
    gy: PyReadonlyArray3<'_, f32>,
    mask: Option<PyReadonlyArray3<'_, f32>>,
    w: PyReadonlyArray3<'_, f32>,
    gx: Bound<'_, PyArray3<f32>>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> PyResult<()> {
    let mut gx = gx.try_readwrite()?; // numpy's borrow check: writeable, no alias
    let s = conv_shape(gx.shape(), w.shape(), stride, padding, groups)?;
    let (gy, w) = (gy.as_slice()?, w.as_slice()?);
    let mask = mask.as_ref().map(|m| m.as_slice()).transpose()?;
    let gx = gx.as_slice_mut()?;
    detach_here(py, || conv1d::conv1d_grad_input(&s, gy, mask, w, gx))
}

/// The weight (and bias, if `gb` is given) gradients of [`conv1d_forward`] into `gw`
/// `[G*C_out, C_in, K]` and `gb` `[G*C_out]`; `mask` as in [`conv1d_grad_input`].
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn conv1d_grad_weight(
    py: Python<'_>,
    x: PyReadonlyArray3<'_, f32>,
    gy: PyReadonlyArray3<'_, f32>,
    mask: Option<PyReadonlyArray3<'_, f32>>,
    gw: Bound<'_, PyArray3<f32>>,
    gb: Option<Bound<'_, PyArray1<f32>>>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> PyResult<()> {
    let mut gw = gw.try_readwrite()?; // numpy's borrow check: writeable, no alias
    let mut gb = gb.as_ref().map(|b| b.try_readwrite()).transpose()?;
    let s = conv_shape(x.shape(), gw.shape(), stride, padding, groups)?;
    let (x, gy) = (x.as_slice()?, gy.as_slice()?);
    let mask = mask.as_ref().map(|m| m.as_slice()).transpose()?;
    let gw = gw.as_slice_mut()?;
    let gb = gb.as_mut().map(|b| b.as_slice_mut()).transpose()?;
    detach_here(py, || conv1d::conv1d_grad_weight(&s, x, gy, mask, gw, gb))
}

/// What the libraries under us set up on first use, each under a once-lock: rust-numpy
/// numpy's C API and its borrow checking, crossbeam (rayon's work queues) its global
/// epoch collector. Done here, at import, as [`rrnet_core::init_tables`], so that a
/// process forked during another thread's first call does not inherit one half-done
/// and wait forever (13 of 1,500 such forks did, 1 of 1,500 with the first two done).
fn init_shared_state(py: Python<'_>) -> PyResult<()> {
    let probe = PyArray1::<f32>::zeros(py, 2, false);
    drop(probe.try_readonly()?);
    drop(probe.try_readwrite()?);
    drop(crossbeam_epoch::pin());
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    rrnet_core::init_tables(); // before any thread of ours can fork mid-build
    init_shared_state(m.py())?;
    m.add("N_PIX", N_PIX)?;
    m.add("DEFAULT_MAX_ITER", rrnet_core::continuum::DEFAULT_MAX_ITER)?;
    m.add_function(wrap_pyfunction!(status_codes, m)?)?;
    m.add_function(wrap_pyfunction!(grid, m)?)?;
    m.add_function(wrap_pyfunction!(rv_correct, m)?)?;
    m.add_function(wrap_pyfunction!(resample, m)?)?;
    m.add_function(wrap_pyfunction!(snr_ivar, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_batch, m)?)?;
    m.add_function(wrap_pyfunction!(resample_batch, m)?)?;
    m.add_function(wrap_pyfunction!(resample_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(rv_measure_batch, m)?)?;
    m.add_function(wrap_pyfunction!(rv_inputs, m)?)?;
    m.add_function(wrap_pyfunction!(rv_status_codes, m)?)?;
    m.add_function(wrap_pyfunction!(read_lamost_batch, m)?)?;
    m.add_function(wrap_pyfunction!(running_median_rows, m)?)?;
    m.add_function(wrap_pyfunction!(despike_rows, m)?)?;
    m.add_function(wrap_pyfunction!(conv1d_forward, m)?)?;
    m.add_function(wrap_pyfunction!(conv1d_grad_input, m)?)?;
    m.add_function(wrap_pyfunction!(conv1d_grad_weight, m)?)?;
    m.add("DEFAULT_MAX_INFLATED", lamost::DEFAULT_MAX_INFLATED)?;
    Ok(())
}
