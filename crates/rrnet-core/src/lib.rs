//! Preprocessing kernels for RRNet on LAMOST medium-resolution spectra.
//!
//! Pure Rust, no Python: RV correction ([`rv`]), linear resampling onto the fixed
//! grids ([`resample`], [`grid`]), continuum normalisation ([`continuum`]) with
//! outlier statistics ([`outliers`]), S/N estimates ([`snr`]), a running median
//! ([`running_median`], for the out-of-distribution test) and rayon batch
//! entry points ([`batch`]). Errors are values ([`error::KernelError`]); no code
//! path panics on bad data.

// Method §2.3 writes its tests as NOT (a < b and ...): a NaN must fail them, so the
// negated comparisons are deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod batch;
pub mod continuum;
pub mod conv1d;
pub mod error;
pub mod fits;
pub mod grid;
pub mod outliers;
pub mod resample;
pub mod running_median;
pub mod rv;
pub mod rv_inputs;
pub mod rv_measure;
pub mod snr;

pub use error::{KernelError, Status};

/// Build every table the kernels compute once (the grids, the continuum bases, the RV
/// fit's log grids) now instead of at first use.
///
/// A process forked while another thread was building one inherits it half-built and
/// its threads wait for it forever; a host that forks (Python's `multiprocessing`)
/// calls this when it loads the kernels.
pub fn init_tables() {
    for arm in grid::Arm::BOTH {
        let _ = arm.grid();
        let _ = continuum::ArmBasis::for_arm(arm);
        let _ = rv_measure::ln_grid(arm);
    }
}
