//! One LAMOST MRS file read in memory: primary-header cards, extension names
//! and the requested arm tables (FLUX, IVAR, LOGLAM and masks), with the same
//! per-file and per-arm statuses as the Python (cfitsio) reader.

use std::path::Path;

use rayon::prelude::*;

use super::bintable::{Column, Table};
use super::header::{ascii_lossy, hdus, Hdu};
use super::inflate::{gunzip, InflateError, GZIP_MAGIC};
use super::Unsupported;

/// Columns every arm table must have (LOGLAM or, from DR9 v1.0 on, WAVELENGTH).
pub const REQUIRED: [&str; 3] = ["FLUX", "IVAR", "LOGLAM"];
/// The observed wavelength in Angstrom, which MRS files hold instead of LOGLAM from
/// DR9 v1.0 on; read as `log10(WAVELENGTH)`, LOGLAM winning when a table has both.
pub const WAVELENGTH: &str = "WAVELENGTH";
/// Mask columns; the first present of ANDMASK, PIXMASK is the arm's mask.
pub const MASKS: [&str; 3] = ["ANDMASK", "PIXMASK", "ORMASK"];
/// Default limit of an inflated file: 256 MiB (a LAMOST MRS file is ~2 MB).
pub const DEFAULT_MAX_INFLATED: usize = 256 << 20;

/// Outcome class of a file or an arm, named as the pipeline's row statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    MissingFile,
    BadFits,
    TooLarge,
    MissingExtension,
    BadColumns,
    /// Outside the supported subset: read this file with cfitsio instead.
    Unsupported,
    /// A fault of the machine (I/O error, no memory, too many open files), not of
    /// the file: the caller stops the run instead of recording a row status.
    Environment,
}

impl ReadStatus {
    /// The pipeline's status name ("unsupported" never reaches a manifest).
    pub fn name(self) -> &'static str {
        match self {
            ReadStatus::MissingFile => "missing_file",
            ReadStatus::BadFits => "bad_fits",
            ReadStatus::TooLarge => "too_large",
            ReadStatus::MissingExtension => "missing_extension",
            ReadStatus::BadColumns => "bad_columns",
            ReadStatus::Unsupported => "unsupported",
            ReadStatus::Environment => "environment",
        }
    }
}

/// Why a file or an arm could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ReadFailure {
    pub status: ReadStatus,
    pub reason: String,
}

impl ReadFailure {
    fn new(status: ReadStatus, reason: String) -> Self {
        ReadFailure { status, reason }
    }
}

impl From<Unsupported> for ReadFailure {
    fn from(u: Unsupported) -> Self {
        ReadFailure::new(ReadStatus::Unsupported, u.0)
    }
}

/// Raw header values `(keyword, value field)` of the requested keywords.
pub type Cards = Vec<(String, String)>;

/// One arm table, columns converted to native types.
#[derive(Debug, Clone, Default)]
pub struct ArmData {
    pub loglam: Vec<f64>,
    pub flux: Vec<f32>,
    pub ivar: Vec<f32>,
    /// ANDMASK, else PIXMASK.
    pub mask: Option<Vec<i32>>,
    pub ormask: Option<Vec<i32>>,
    pub cards: Cards,
}

/// One file: primary cards, EXTNAME value fields of HDUs 1.., and the arms asked for.
#[derive(Debug, Clone, Default)]
pub struct FileData {
    pub primary: Cards,
    pub extnames: Vec<Option<String>>,
    pub n_hdus: usize,
    pub arms: Vec<Result<ArmData, ReadFailure>>,
}

/// What to read besides the tables.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub max_inflated: usize,
    pub primary_keys: Vec<String>,
    pub arm_keys: Vec<String>,
    /// Decode the mask columns (false: checked exactly as when decoded, same
    /// statuses, but `mask` and `ormask` are None; the pipeline never uses them).
    pub masks: bool,
}

fn cards(hdu: &Hdu<'_>, keys: &[String]) -> Cards {
    keys.iter()
        .filter_map(|k| hdu.value(k).map(|v| (k.clone(), ascii_lossy(v))))
        .collect()
}

/// EIO, ENOMEM, ENFILE, EMFILE, ETIMEDOUT, ESTALE: errors of the machine rather than of
/// one file (the Python side's `rrnet.io.lamost.ENVIRONMENT_ERRNOS` for reads).
fn is_environment_fault(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(5 | 12 | 23 | 24 | 110 | 116))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// The system's text of an error without Rust's " (os error N)" (as Python's strerror).
fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// The file's bytes, inflated when gzip; statuses as the Python reader's (one stat:
/// not found, not readable, a directory, not a regular file; a machine fault stops).
fn load(path: &Path, name: &str, max_inflated: usize) -> Result<Vec<u8>, ReadFailure> {
    let missing = |why: String| ReadFailure::new(ReadStatus::MissingFile, why);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if is_environment_fault(&e) => {
            let why = format!("cannot stat {}: {}", path.display(), strerror(&e));
            return Err(ReadFailure::new(ReadStatus::Environment, why));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(missing(format!("file not found: {}", path.display())));
        }
        Err(e) => {
            // no permission, a symbolic link loop, a name too long, a file as a folder
            let why = format!("file not readable: {}: {}", path.display(), strerror(&e));
            return Err(missing(why));
        }
    };
    if meta.is_dir() {
        let why = format!("{} is a directory, not a spectrum file", path.display());
        return Err(missing(why));
    }
    if !meta.is_file() {
        let why = format!(
            "{} is not a regular file (device, socket or pipe)",
            path.display()
        );
        return Err(missing(why));
    }
    if meta.len() > max_inflated as u64 {
        // read whole, a huge file would exhaust memory (the limit bounds plain files too)
        let why = format!(
            "{name} is {} bytes, more than the limit of {max_inflated} bytes",
            meta.len()
        );
        return Err(ReadFailure::new(ReadStatus::TooLarge, why));
    }
    let raw = std::fs::read(path).map_err(|e| {
        let why = format!("file not readable: {}: {}", path.display(), strerror(&e));
        if is_environment_fault(&e) {
            ReadFailure::new(ReadStatus::Environment, why)
        } else {
            missing(why)
        }
    })?;
    if raw.get(..2) != Some(&GZIP_MAGIC[..]) {
        return Ok(raw);
    }
    gunzip(&raw, max_inflated).map_err(|e| match e {
        InflateError::TooLarge { limit } => ReadFailure::new(
            ReadStatus::TooLarge,
            format!("{name} inflates to more than the limit of {limit} bytes"),
        ),
        other => ReadFailure::new(ReadStatus::BadFits, format!("{other}: {name}")),
    })
}

/// The HDU named `extname`; several or a case-only match are left to cfitsio.
fn find<'h, 'a>(
    list: &'h [Hdu<'a>],
    names: &[Option<String>],
    extname: &str,
) -> Result<Option<&'h Hdu<'a>>, Unsupported> {
    let loose: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(extname))
        })
        .map(|(i, _)| i)
        .collect();
    match loose.as_slice() {
        [] => Ok(None),
        [i] if names[*i].as_deref() == Some(extname) && *i > 0 => Ok(list.get(*i)),
        _ => Err(Unsupported(format!(
            "extension name {extname:?} is ambiguous (case, duplicates or primary)"
        ))),
    }
}

fn column<'t>(table: &'t Table<'_>, name: &str) -> Result<&'t Column, ReadFailure> {
    table
        .column(name)?
        .ok_or_else(|| Unsupported(format!("column {name} vanished")).into())
}

/// Read one arm table; statuses and checks in the order of the Python reader.
fn read_arm(
    hdu: &Hdu<'_>,
    extname: &str,
    file: &str,
    keys: &[String],
    decode_masks: bool,
) -> Result<ArmData, ReadFailure> {
    let bad_columns = |why: String| ReadFailure::new(ReadStatus::BadColumns, why);
    match hdu.string("XTENSION").as_deref() {
        Some("BINTABLE") => {}
        Some("IMAGE") => {
            return Err(bad_columns(format!(
                "extension {extname:?} of {file} is not a table"
            )))
        }
        other => return Err(Unsupported(format!("XTENSION {other:?}")).into()),
    }
    let table = Table::parse(hdu)?;
    if table.n_rows == 0 {
        return Err(Unsupported("table has no rows".into()).into());
    }
    let wavelength = table.column("LOGLAM")?.is_none() && table.column(WAVELENGTH)?.is_some();
    let loglam_column = if wavelength { WAVELENGTH } else { "LOGLAM" };
    let mut missing = Vec::new();
    for name in REQUIRED.map(|c| if c == "LOGLAM" { loglam_column } else { c }) {
        if table.column(name)?.is_none() {
            missing.push(if name == "LOGLAM" {
                "LOGLAM (or WAVELENGTH)"
            } else {
                name
            });
        }
    }
    if !missing.is_empty() {
        return Err(bad_columns(format!(
            "extension {extname:?} of {file} lacks column(s) {}",
            missing.join(", ")
        )));
    }
    let mut loglam = table.f64s(column(&table, loglam_column)?)?;
    if wavelength {
        loglam.iter_mut().for_each(|w| *w = w.log10());
    }
    let flux = table.f32s(column(&table, "FLUX")?)?;
    let ivar = table.f32s(column(&table, "IVAR")?)?;
    if !(loglam.len() == flux.len() && flux.len() == ivar.len()) {
        return Err(bad_columns(format!(
            "extension {extname:?} of {file}: column lengths differ ({loglam_column} {}, FLUX {}, IVAR {})",
            loglam.len(),
            flux.len(),
            ivar.len()
        )));
    }
    let mut masks: [Option<Vec<i32>>; 3] = [None, None, None];
    for (slot, name) in masks.iter_mut().zip(MASKS) {
        if let Some(col) = table.column(name)? {
            let n = table.check_i32s(col)?;
            if n != flux.len() {
                return Err(bad_columns(format!(
                    "extension {extname:?} of {file}: {name} has {n} values, FLUX {}",
                    flux.len()
                )));
            }
            if decode_masks {
                *slot = Some(table.i32s(col)?);
            }
        }
    }
    let [and, pix, or] = masks;
    Ok(ArmData {
        loglam,
        flux,
        ivar,
        mask: and.or(pix),
        ormask: or,
        cards: cards(hdu, keys),
    })
}

/// Read the arms `extnames` of the file at `path`.
///
/// `Err` is a failure of the whole file; each arm has its own result. Any
/// [`ReadStatus::Unsupported`] (file or arm) means: read this file with cfitsio.
pub fn read_file(
    path: &Path,
    extnames: &[String],
    opts: &ReadOptions,
) -> Result<FileData, ReadFailure> {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let content = load(path, &name, opts.max_inflated)?;
    let list = hdus(&content)?;
    let names = list
        .iter()
        .map(|h| h.quoted("EXTNAME"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut arms = Vec::with_capacity(extnames.len());
    for extname in extnames {
        let arm = match find(&list, &names, extname)? {
            None => Err(ReadFailure::new(
                ReadStatus::MissingExtension,
                format!("extension {extname:?} not in {name}"),
            )),
            Some(hdu) => read_arm(hdu, extname, &name, &opts.arm_keys, opts.masks),
        };
        if let Err(ReadFailure {
            status: ReadStatus::Unsupported,
            reason,
        }) = &arm
        {
            return Err(Unsupported(format!("extension {extname:?}: {reason}")).into());
        }
        arms.push(arm);
    }
    Ok(FileData {
        primary: cards(&list[0], &opts.primary_keys),
        extnames: names.into_iter().skip(1).collect(),
        n_hdus: list.len(),
        arms,
    })
}

/// Read many files in parallel on the current rayon pool, one task per file.
pub fn read_files(
    files: &[(&Path, &[String])],
    opts: &ReadOptions,
) -> Vec<Result<FileData, ReadFailure>> {
    files
        .par_iter()
        .map(|(path, extnames)| read_file(path, extnames, opts))
        .collect()
}
