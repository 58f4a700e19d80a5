//! Reading LAMOST MRS files in memory: gzip inflation ([`inflate`]), FITS
//! headers and HDUs ([`header`]), the binary-table subset LAMOST uses
//! ([`bintable`]) and the per-file reader with its batch form ([`lamost`]).
//!
//! The reader is exact or silent: whatever it does not fully understand is an
//! [`Unsupported`] outcome with a reason, and the caller reads that file with
//! cfitsio (the reference reader) instead.

pub mod bintable;
pub mod header;
pub mod inflate;
pub mod lamost;

use thiserror::Error;

/// The file uses FITS features outside the supported subset (the reason says which).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Unsupported(pub String);
