//! In-memory gzip inflation with libdeflate, bounded by a maximum inflated size.
//!
//! Semantics follow the Python reader (`rrnet.io.lamost._gunzip`): every gzip
//! member is inflated and concatenated; trailing zero bytes after a member are
//! allowed; a stream cut short or failing its CRC/length check is an error.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE,
    libdeflate_result_LIBDEFLATE_SUCCESS,
};
use thiserror::Error;

/// The gzip magic bytes.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a gzip file could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InflateError {
    #[error("corrupt or truncated gzip stream (bad header, data or checksum, or cut short)")]
    Corrupt,
    #[error("inflates to more than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot allocate a decompressor")]
    NoMemory,
}

/// An owned libdeflate decompressor (freed on drop).
struct Decompressor(NonNull<libdeflate_decompressor>);

impl Decompressor {
    fn new() -> Result<Self, InflateError> {
        // SAFETY: plain allocation call; a null result is handled.
        NonNull::new(unsafe { libdeflate_alloc_decompressor() })
            .map(Decompressor)
            .ok_or(InflateError::NoMemory)
    }

    /// Inflate the gzip member at the start of `input` into `out`; returns
    /// `(bytes read, bytes written)`, or `None` when `out` is too small.
    fn member(
        &mut self,
        input: &[u8],
        out: &mut [MaybeUninit<u8>],
    ) -> Result<Option<(usize, usize)>, ()> {
        let (mut read, mut written) = (0usize, 0usize);
        // SAFETY: the pointers and lengths come from live slices; libdeflate
        // writes at most `out.len()` bytes and reads at most `input.len()`.
        let ret = unsafe {
            libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut read,
                &mut written,
            )
        };
        #[allow(non_upper_case_globals)]
        match ret {
            libdeflate_result_LIBDEFLATE_SUCCESS => Ok(Some((read, written))),
            libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Ok(None),
            _ => Err(()),
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// The ISIZE trailer (inflated size mod 2^32) of the last member, if present.
fn trailer_size(raw: &[u8]) -> Option<usize> {
    let tail: [u8; 4] = raw.get(raw.len().checked_sub(4)?..)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(tail)).ok()
}

/// Whether the data after a member is only zero padding (or nothing).
fn only_padding(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0)
}

/// Inflate every gzip member of `raw` into one buffer of at most `max_size` bytes.
///
/// The buffer is sized from the ISIZE trailer (exact for the usual single
/// member) and grown by doubling only when a member needs more, never beyond
/// `max_size`: a gzip bomb is refused after at most `max_size` bytes of work.
pub fn gunzip(raw: &[u8], max_size: usize) -> Result<Vec<u8>, InflateError> {
    let too_large = InflateError::TooLarge { limit: max_size };
    // One byte over the limit proves a file too large.
    let cap = max_size.saturating_add(1);
    let mut dec = Decompressor::new()?;
    let first_guess = trailer_size(raw).unwrap_or(0).max(4096);
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    while pos < raw.len() {
        let input = &raw[pos..];
        let start = out.len();
        let mut room = first_guess.clamp(1, cap.saturating_sub(start).max(1));
        loop {
            // Inflated straight into the spare capacity: no zero-fill pass over
            // the (~2.8 MB) buffer before libdeflate writes it.
            out.reserve_exact(room);
            match dec.member(input, &mut out.spare_capacity_mut()[..room]) {
                Ok(Some((read, written))) => {
                    debug_assert!(written <= room);
                    // SAFETY: on success libdeflate has written the first
                    // `written` (<= room, within the capacity) bytes after `start`.
                    unsafe { out.set_len(start + written) };
                    pos += read;
                    break;
                }
                Ok(None) if start + room >= cap => return Err(too_large),
                Ok(None) => room = room.saturating_mul(2).min(cap.saturating_sub(start)),
                Err(()) => return Err(InflateError::Corrupt),
            }
        }
        if out.len() > max_size {
            return Err(too_large);
        }
        if only_padding(&raw[pos..]) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdeflate_sys::{
        libdeflate_alloc_compressor, libdeflate_free_compressor, libdeflate_gzip_compress,
    };

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; data.len() + 1024];
        // SAFETY: test helper; buffers are live slices.
        let n = unsafe {
            let c = libdeflate_alloc_compressor(6);
            let n = libdeflate_gzip_compress(
                c,
                data.as_ptr().cast(),
                data.len(),
                out.as_mut_ptr().cast(),
                out.len(),
            );
            libdeflate_free_compressor(c);
            n
        };
        out.truncate(n);
        out
    }

    #[test]
    fn round_trip_members_and_padding() {
        let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second member".to_vec();
        let mut raw = gzip(&a);
        raw.extend(gzip(&b));
        raw.extend([0u8; 100]);
        let out = gunzip(&raw, 1 << 30).unwrap();
        assert_eq!(out, [a, b].concat());
    }

    #[test]
    fn a_wrong_size_trailer_only_costs_a_regrowth() {
        // The buffer is sized from the last member's trailer: members larger than
        // it (or a lying trailer) make it grow, the bytes are the same.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let small = vec![3u8; 10];
        let raw = [gzip(&big), gzip(&small), gzip(&big), gzip(&small)].concat();
        let want = [big.clone(), small.clone(), big.clone(), small.clone()].concat();
        assert_eq!(gunzip(&raw, 1 << 30).unwrap(), want);
        let mut lying = gzip(&big);
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(gunzip(&lying, 1 << 30), Err(InflateError::Corrupt));
        assert_eq!(gunzip(&[], 10).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn limit_is_enforced_and_corruption_reported() {
        let a = vec![7u8; 1_000_000];
        let raw = gzip(&a);
        assert_eq!(
            gunzip(&raw, 999_999),
            Err(InflateError::TooLarge { limit: 999_999 })
        );
        assert_eq!(gunzip(&raw, 1_000_000).unwrap().len(), 1_000_000);
        // Several members, the limit reached between them.
        let two = [raw.clone(), raw.clone()].concat();
        assert!(gunzip(&two, 1_500_000).is_err());
        assert_eq!(gunzip(&two, 2_000_000).unwrap().len(), 2_000_000);
        assert!(gunzip(&two, 0).is_err());
        let mut bad = raw.clone();
        let n = bad.len();
        bad[n - 6] ^= 0xff; // CRC
        assert!(gunzip(&bad, 1 << 30).is_err());
        assert!(gunzip(&raw[..raw.len() / 2], 1 << 30).is_err());
    }
}
