//! Typed errors of the kernels and the per-spectrum status codes they map to.

use thiserror::Error;

/// Outcome of preprocessing one spectrum. The numeric values are part of the
/// public interface (stored in the manifest); `rrnet.preprocess.status.Status`
/// mirrors them.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    NonFiniteFlux = 1,
    DegenerateArm = 2,
    GridOutOfRange = 3,
    BadWavelength = 4,
    TooFewPoints = 5,
    LengthMismatch = 6,
    NonPositiveContinuum = 7,
}

impl Status {
    /// Every status with its name, in code order (exported so Python can check its copy).
    pub const ALL: [(Status, &'static str); 8] = [
        (Status::Ok, "OK"),
        (Status::NonFiniteFlux, "NON_FINITE_FLUX"),
        (Status::DegenerateArm, "DEGENERATE_ARM"),
        (Status::GridOutOfRange, "GRID_OUT_OF_RANGE"),
        (Status::BadWavelength, "BAD_WAVELENGTH"),
        (Status::TooFewPoints, "TOO_FEW_POINTS"),
        (Status::LengthMismatch, "LENGTH_MISMATCH"),
        (Status::NonPositiveContinuum, "NONPOSITIVE_CONTINUUM"),
    ];
}

/// Why a kernel could not process a spectrum (or a call was malformed).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KernelError {
    #[error("flux contains NaN or inf")]
    NonFiniteFlux,
    #[error("degenerate arm: flux has zero standard deviation (constant or all-zero)")]
    DegenerateArm,
    #[error(
        "grid {grid_lo:.3}-{grid_hi:.3} A leaves the observed range {obs_lo:.3}-{obs_hi:.3} A"
    )]
    GridOutOfRange {
        grid_lo: f64,
        grid_hi: f64,
        obs_lo: f64,
        obs_hi: f64,
    },
    #[error("bad wavelength array: {0}")]
    BadWavelength(&'static str),
    #[error("too few points: got {got}, need at least {need}")]
    TooFewPoints { got: usize, need: usize },
    #[error("length mismatch: {what} ({a} vs {b})")]
    LengthMismatch {
        what: &'static str,
        a: usize,
        b: usize,
    },
    #[error("the fitted continuum is zero or negative somewhere")]
    NonPositiveContinuum,
    /// A malformed call (not bad data): wrong shapes, bad offsets, bad arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl KernelError {
    /// The status code a spectrum gets for this error.
    pub fn status(&self) -> Status {
        match self {
            KernelError::NonFiniteFlux => Status::NonFiniteFlux,
            KernelError::DegenerateArm => Status::DegenerateArm,
            KernelError::GridOutOfRange { .. } => Status::GridOutOfRange,
            KernelError::BadWavelength(_) => Status::BadWavelength,
            KernelError::TooFewPoints { .. } => Status::TooFewPoints,
            KernelError::LengthMismatch { .. } | KernelError::InvalidArgument(_) => {
                Status::LengthMismatch
            }
            KernelError::NonPositiveContinuum => Status::NonPositiveContinuum,
        }
    }
}
