//! The BINTABLE subset LAMOST uses: fixed-width columns of big-endian numbers,
//! one row per pixel or a single row of vector columns.
//!
//! Columns are read flattened in row-major order (row 0's elements, then row
//! 1's ...), exactly as `numpy.asarray(table[name]).reshape(-1)` does.

use super::header::Hdu;
use super::Unsupported;

/// Element type of a column (TFORM letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    U8,
    I16,
    I32,
    I64,
    F32,
    F64,
    /// Any other letter: only its width is known.
    Other,
}

/// One column of a binary table.
#[derive(Debug, Clone)]
pub struct Column {
    /// TTYPE without trailing blanks, upper-cased.
    pub name: String,
    pub kind: Kind,
    /// Elements per row.
    pub repeat: usize,
    /// Byte offset within a row.
    pub offset: usize,
    /// TSCAL or TZERO present (cfitsio would rescale: not supported for reading).
    pub scaled: bool,
}

/// A binary table HDU's layout and data.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    pub columns: Vec<Column>,
    pub row_len: usize,
    pub n_rows: usize,
    data: &'a [u8],
}

/// (kind, bytes per element, elements per repeat unit) of a TFORM letter.
fn letter(c: char, repeat: usize) -> Option<(Kind, usize)> {
    let width = |w: usize| repeat.checked_mul(w);
    Some(match c {
        'B' => (Kind::U8, width(1)?),
        'I' => (Kind::I16, width(2)?),
        'J' => (Kind::I32, width(4)?),
        'K' => (Kind::I64, width(8)?),
        'E' => (Kind::F32, width(4)?),
        'D' => (Kind::F64, width(8)?),
        'L' | 'A' => (Kind::Other, width(1)?),
        'X' => (Kind::Other, repeat.div_ceil(8)),
        'C' => (Kind::Other, width(8)?),
        'M' => (Kind::Other, width(16)?),
        'P' => (Kind::Other, repeat.min(1) * 8),
        'Q' => (Kind::Other, repeat.min(1) * 16),
        _ => return None,
    })
}

/// Parse TFORM `rT...` into (kind, repeat, bytes per row).
fn tform(text: &str) -> Option<(Kind, usize, usize)> {
    let text = text.trim();
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let repeat = if digits == 0 {
        1
    } else {
        text[..digits].parse().ok()?
    };
    let c = text[digits..].chars().next()?;
    let (kind, width) = letter(c, repeat)?;
    Some((kind, repeat, width))
}

impl<'a> Table<'a> {
    /// The table of a BINTABLE HDU.
    pub fn parse(hdu: &Hdu<'a>) -> Result<Self, Unsupported> {
        let bad = |what: String| Unsupported(format!("binary table: {what}"));
        let int = |key: &str| {
            hdu.int(key)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| bad(format!("{key} missing or invalid")))
        };
        let (row_len, n_rows, n_fields) = (int("NAXIS1")?, int("NAXIS2")?, int("TFIELDS")?);
        if hdu.int("NAXIS") != Some(2) || hdu.int("BITPIX") != Some(8) || n_fields > 999 {
            return Err(bad(
                "NAXIS, BITPIX or TFIELDS not as a binary table has them".into(),
            ));
        }
        let mut columns = Vec::with_capacity(n_fields);
        let mut offset = 0usize;
        for i in 1..=n_fields {
            let form = hdu
                .string(&format!("TFORM{i}"))
                .ok_or_else(|| bad(format!("TFORM{i} missing")))?;
            let (kind, repeat, width) =
                tform(&form).ok_or_else(|| bad(format!("TFORM{i} = {form:?} not understood")))?;
            let name = hdu
                .string(&format!("TTYPE{i}"))
                .unwrap_or_default() // leading blanks are part of the name, as in cfitsio
                .to_ascii_uppercase();
            let scaled = hdu.value(&format!("TSCAL{i}")).is_some()
                || hdu.value(&format!("TZERO{i}")).is_some();
            columns.push(Column {
                name,
                kind,
                repeat,
                offset,
                scaled,
            });
            offset = offset
                .checked_add(width)
                .ok_or_else(|| bad("row width overflows".into()))?;
        }
        if offset != row_len {
            return Err(bad(format!(
                "columns take {offset} bytes per row, NAXIS1 is {row_len}"
            )));
        }
        let need = row_len
            .checked_mul(n_rows)
            .ok_or_else(|| bad("size overflows".into()))?;
        let data = hdu
            .data
            .get(..need)
            .ok_or_else(|| bad("data shorter than NAXIS1 x NAXIS2".into()))?;
        Ok(Table {
            columns,
            row_len,
            n_rows,
            data,
        })
    }

    /// The column named `name` (upper case); an error if it appears twice.
    pub fn column(&self, name: &str) -> Result<Option<&Column>, Unsupported> {
        let mut found = self.columns.iter().filter(|c| c.name == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(Unsupported(format!("column {name} appears twice")));
        }
        Ok(first)
    }

    /// Every element of `col`, flattened row-major, decoded by `decode` from
    /// its `N` big-endian bytes.
    fn elements<const N: usize, T>(&self, col: &Column, decode: impl Fn([u8; N]) -> T) -> Vec<T> {
        let rows = self.data.chunks_exact(self.row_len);
        if col.repeat == 1 {
            // One value per row (LAMOST's layout): a plain map, no per-row extend.
            let at = col.offset..col.offset + N;
            return rows
                .map(|row| decode(row[at.clone()].try_into().unwrap_or([0; N])))
                .collect();
        }
        let mut out = Vec::with_capacity(self.n_rows * col.repeat);
        let span = col.repeat * N;
        for row in rows {
            let cell = &row[col.offset..col.offset + span];
            out.extend(
                cell.chunks_exact(N)
                    .map(|b| decode(b.try_into().unwrap_or([0; N]))),
            );
        }
        out
    }

    fn check_plain(col: &Column) -> Result<(), Unsupported> {
        if col.scaled {
            return Err(Unsupported(format!(
                "column {} is scaled (TSCAL/TZERO)",
                col.name
            )));
        }
        Ok(())
    }

    /// A float column as f64 (E widened exactly, D as is).
    pub fn f64s(&self, col: &Column) -> Result<Vec<f64>, Unsupported> {
        Self::check_plain(col)?;
        match col.kind {
            Kind::F32 => Ok(self.elements(col, |b| f64::from(f32::from_be_bytes(b)))),
            Kind::F64 => Ok(self.elements(col, f64::from_be_bytes)),
            _ => Err(not_float(col)),
        }
    }

    /// A float column as f32 (D rounded to nearest, as numpy casts).
    pub fn f32s(&self, col: &Column) -> Result<Vec<f32>, Unsupported> {
        Self::check_plain(col)?;
        match col.kind {
            Kind::F32 => Ok(self.elements(col, f32::from_be_bytes)),
            Kind::F64 => Ok(self.elements(col, |b| f64::from_be_bytes(b) as f32)),
            _ => Err(not_float(col)),
        }
    }

    /// An integer column as i32 (K wrapped, as numpy casts).
    pub fn i32s(&self, col: &Column) -> Result<Vec<i32>, Unsupported> {
        self.check_i32s(col)?;
        Ok(match col.kind {
            Kind::U8 => self.elements(col, |b: [u8; 1]| i32::from(b[0])),
            Kind::I16 => self.elements(col, |b| i32::from(i16::from_be_bytes(b))),
            Kind::I32 => self.elements(col, i32::from_be_bytes),
            _ => self.elements(col, |b| i64::from_be_bytes(b) as i32),
        })
    }

    /// What [`Table::i32s`] checks, without decoding: the number of elements it
    /// would return, or the same error (for callers that do not need the values).
    pub fn check_i32s(&self, col: &Column) -> Result<usize, Unsupported> {
        Self::check_plain(col)?;
        match col.kind {
            Kind::U8 | Kind::I16 | Kind::I32 | Kind::I64 => Ok(self.n_rows * col.repeat),
            _ => Err(Unsupported(format!(
                "column {} is not an integer column",
                col.name
            ))),
        }
    }
}

fn not_float(col: &Column) -> Unsupported {
    Unsupported(format!("column {} is not a float column", col.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tform_widths() {
        assert_eq!(tform("E"), Some((Kind::F32, 1, 4)));
        assert_eq!(tform("3900E"), Some((Kind::F32, 3900, 15600)));
        assert_eq!(tform("1J"), Some((Kind::I32, 1, 4)));
        assert_eq!(tform("16X"), Some((Kind::Other, 16, 2)));
        assert_eq!(tform("1PE(100)"), Some((Kind::Other, 1, 8)));
        assert_eq!(tform("Z"), None);
    }
}
