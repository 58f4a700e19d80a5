//! FITS headers (80-byte cards in 2880-byte blocks) and the HDU layout of a file.
//!
//! Only what a LAMOST MRS file needs: the mandatory structural keywords, a
//! value lookup that mirrors the Python reader's card parser, and the walk
//! over HDUs. Anything outside that subset is [`Unsupported`] so the caller
//! can hand the file to cfitsio instead of guessing.

use super::Unsupported;

/// FITS block size in bytes.
pub const BLOCK: usize = 2880;
/// Card size in bytes.
pub const CARD: usize = 80;

/// One header-data unit of an in-memory file.
#[derive(Debug, Clone)]
pub struct Hdu<'a> {
    /// Header cards up to and including END.
    pub header: &'a [u8],
    /// The data bytes (without the block padding).
    pub data: &'a [u8],
}

/// A byte Python's `str.strip` removes.
fn is_space(b: &u8) -> bool {
    b.is_ascii_whitespace() || (0x1c..=0x1f).contains(b) || *b == 0x0b
}

/// The 8-character keyword of a card, trimmed as Python's `str.strip` does.
fn card_key(card: &[u8]) -> &[u8] {
    let key = &card[..8.min(card.len())];
    let start = key.iter().position(|b| !is_space(b)).unwrap_or(key.len());
    let end = key
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |e| e + 1);
    &key[start..end]
}

/// A quoted value field: the text between its opening quote and the closing one (`''`
/// read as one quote) and what follows the closing quote (`None` when the field ends
/// before one); `None` when the field does not start with a quote.
fn unquote(field: &[u8]) -> Option<(Vec<u8>, Option<&[u8]>)> {
    let inner = field.strip_prefix(b"'")?;
    let mut text = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        if b == b'\'' {
            if inner.get(i + 1) != Some(&b'\'') {
                return Some((text, Some(&inner[i + 1..])));
            }
            i += 1; // '' is one quote
        }
        text.push(b);
        i += 1;
    }
    Some((text, None))
}

/// Whether the keyword field (columns 1-8) holds a space before its last non-space
/// byte: not a name padded with spaces.
fn key_has_inner_space(card: &[u8]) -> bool {
    let key = &card[..8.min(card.len())];
    let end = key.iter().rposition(|&b| b != b' ').map_or(0, |e| e + 1);
    key[..end].contains(&b' ')
}

/// `card_key(card) == key`, rejecting most cards on their first byte: a card
/// that starts with a non-blank byte other than the key's has another keyword.
fn key_is(card: &[u8], key: &[u8]) -> bool {
    match (card.first(), key.first()) {
        (Some(c), Some(k)) if !is_space(c) && c != k => false,
        _ => card_key(card) == key,
    }
}

impl<'a> Hdu<'a> {
    /// Cards before END.
    pub fn cards(&self) -> impl Iterator<Item = &'a [u8]> {
        self.header
            .chunks_exact(CARD)
            .take_while(|card| !key_is(card, b"END"))
    }

    /// The value field (bytes 10..80) of the last card `key = ...`, as the
    /// Python reader takes it (a card without "= " in columns 9-10 has no value).
    pub fn value(&self, key: &str) -> Option<&'a [u8]> {
        self.cards()
            .filter(|card| &card[8..10] == b"= " && key_is(card, key.as_bytes()))
            .last()
            .map(|card| &card[10..])
    }

    /// An integer keyword (the token before any comment); None if absent or not an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        let field = self.value(key)?;
        let token = field.split(|&b| b == b'/').next()?;
        std::str::from_utf8(token).ok()?.trim().parse().ok()
    }

    /// A string keyword, quotes removed, '' unescaped, trailing blanks dropped.
    pub fn string(&self, key: &str) -> Option<String> {
        let field = std::str::from_utf8(self.value(key)?).ok()?.trim();
        let (text, _) = unquote(field.as_bytes())?;
        // Only ASCII quotes were taken out of valid UTF-8: still valid.
        Some(String::from_utf8(text).ok()?.trim_end().to_string())
    }

    /// [`Hdu::string`] where the card `key` reads the same to cfitsio: `Ok(None)`
    /// without one, `Err` for several, or where it is not `key = 'text'` followed by at most a comment
    /// (no "= ", no opening or closing quote, other text after it), which cfitsio reads
    /// its own way (e.g. as an unquoted string).
    pub fn quoted(&self, key: &str) -> Result<Option<String>, Unsupported> {
        let bad = || Unsupported(format!("{key} is not a quoted string"));
        if self
            .cards()
            .filter(|card| key_is(card, key.as_bytes()))
            .count()
            > 1
        {
            // cfitsio finds an HDU by its first such card, header values by the last
            return Err(Unsupported(format!("several {key} cards")));
        }
        for card in self.cards().filter(|card| key_is(card, key.as_bytes())) {
            if &card[8..10] != b"= " {
                return Err(bad());
            }
            let Some((_, Some(rest))) = unquote(card[10..].trim_ascii_start()) else {
                return Err(bad());
            };
            let rest = rest.trim_ascii_start();
            if !(rest.is_empty() || rest[0] == b'/') {
                return Err(bad());
            }
        }
        Ok(self.string(key))
    }

    /// The first card's keyword (SIMPLE or XTENSION).
    fn first_key(&self) -> &'a [u8] {
        self.header.get(..8).map_or(&[][..], card_key)
    }
}

/// The value field as Python's `bytes.decode("ascii", errors="replace")` gives it.
pub fn ascii_lossy(field: &[u8]) -> String {
    field
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                char::from(b)
            } else {
                '\u{fffd}'
            }
        })
        .collect()
}

/// Bytes of a header starting at `start`: up to and including the END card.
fn header_at(content: &[u8], start: usize) -> Result<&[u8], Unsupported> {
    let mut pos = start;
    while pos + CARD <= content.len() {
        if card_key(&content[pos..pos + CARD]) == b"END" {
            return Ok(&content[start..pos + CARD]);
        }
        pos += CARD;
    }
    Err(Unsupported(format!(
        "header at byte {start} has no END card before the end of the file"
    )))
}

fn round_up(n: usize) -> Option<usize> {
    n.checked_add(BLOCK - 1).map(|m| m / BLOCK * BLOCK)
}

/// Data size in bytes from BITPIX, NAXISn, PCOUNT and GCOUNT.
fn data_size(hdu: &Hdu<'_>, primary: bool) -> Result<usize, Unsupported> {
    let bad = |what: &str| Unsupported(format!("structural keyword {what} missing or invalid"));
    let bitpix = hdu.int("BITPIX").ok_or_else(|| bad("BITPIX"))?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(bad("BITPIX"));
    }
    let naxis = hdu.int("NAXIS").ok_or_else(|| bad("NAXIS"))?;
    if !(0..=999).contains(&naxis) {
        return Err(bad("NAXIS"));
    }
    if primary && hdu.value("GROUPS").is_some() {
        return Err(Unsupported("random-groups primary HDU".into()));
    }
    if naxis == 0 {
        return Ok(0);
    }
    let mut pixels: usize = 1;
    for i in 1..=naxis {
        let n = hdu.int(&format!("NAXIS{i}")).ok_or_else(|| bad("NAXISn"))?;
        let n = usize::try_from(n).map_err(|_| bad("NAXISn"))?;
        pixels = pixels.checked_mul(n).ok_or_else(|| bad("NAXISn"))?;
    }
    // Absent from a primary HDU: the defaults; absent from an extension, where the
    // standard requires them (cfitsio then stops reading HDUs), or present but not an
    // integer: cfitsio's call, not a guess.
    let count = |key: &str, default: i64| match hdu.value(key) {
        None if primary => Ok(default),
        None => Err(bad(key)),
        Some(_) => hdu.int(key).ok_or_else(|| bad(key)),
    };
    let pcount = usize::try_from(count("PCOUNT", 0)?).map_err(|_| bad("PCOUNT"))?;
    let gcount = usize::try_from(count("GCOUNT", 1)?).map_err(|_| bad("GCOUNT"))?;
    let bytes = bitpix.unsigned_abs() as usize / 8;
    pixels
        .checked_add(pcount)
        .and_then(|n| n.checked_mul(gcount))
        .and_then(|n| n.checked_mul(bytes))
        .ok_or_else(|| bad("NAXISn/PCOUNT/GCOUNT"))
}

/// Every HDU of an uncompressed FITS file, which must end exactly after the
/// last HDU's padded data (a cut or trailing bytes are left to cfitsio).
pub fn hdus(content: &[u8]) -> Result<Vec<Hdu<'_>>, Unsupported> {
    let mut list = Vec::new();
    let mut pos = 0usize;
    while pos < content.len() {
        let header = header_at(content, pos)?;
        // FITS headers are printable ASCII; a damaged byte (which cfitsio may or may not
        // reject, depending on the card) is left to cfitsio.
        if let Some(at) = header.iter().position(|b| !(b' '..=b'~').contains(b)) {
            return Err(Unsupported(format!(
                "header byte {} is not printable ASCII",
                pos + at
            )));
        }
        // A keyword field is a name padded with spaces. cfitsio reads one with a space
        // inside ("TTYPE1 t", found by the random-damage property test) as the name
        // before the space, the Python card parser as the whole field: left to cfitsio.
        if let Some(at) = header.chunks_exact(CARD).position(key_has_inner_space) {
            return Err(Unsupported(format!(
                "card {} of the header at byte {pos}: keyword field is not a name padded with spaces",
                at + 1
            )));
        }
        let hdu = Hdu { header, data: &[] };
        let primary = list.is_empty();
        let expected: &[u8] = if primary { b"SIMPLE" } else { b"XTENSION" };
        if hdu.first_key() != expected {
            return Err(Unsupported(format!(
                "HDU at byte {pos} does not start with {}",
                String::from_utf8_lossy(expected)
            )));
        }
        if primary && !simple_is_true(&hdu) {
            return Err(Unsupported("SIMPLE is not T".into()));
        }
        let data_start = round_up(pos + header.len()).ok_or_else(|| overflow(pos))?;
        let size = data_size(&hdu, primary)?;
        let data_end = data_start.checked_add(size).ok_or_else(|| overflow(pos))?;
        let next = round_up(data_end).ok_or_else(|| overflow(pos))?;
        if next > content.len() {
            return Err(Unsupported(format!(
                "file cut short: {} bytes, HDU {} ends at byte {next}",
                content.len(),
                list.len()
            )));
        }
        list.push(Hdu {
            header,
            data: &content[data_start..data_end],
        });
        pos = next;
    }
    if list.is_empty() {
        return Err(Unsupported("empty file".into()));
    }
    Ok(list)
}

/// `SIMPLE = T` as the standard writes it: the value `T` in column 30, nothing else
/// before the comment (cfitsio rejects other values).
fn simple_is_true(hdu: &Hdu<'_>) -> bool {
    hdu.value("SIMPLE").is_some_and(|field| {
        let (value, rest) = field.split_at(20.min(field.len()));
        value.iter().rev().skip(1).all(|&b| b == b' ')
            && value.last() == Some(&b'T')
            && rest.iter().take_while(|&&b| b != b'/').all(|&b| b == b' ')
    })
}

fn overflow(pos: usize) -> Unsupported {
    Unsupported(format!("HDU at byte {pos}: sizes overflow"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cards: &[&str]) -> Vec<u8> {
        let mut h: Vec<u8> = cards
            .iter()
            .chain(std::iter::once(&"END"))
            .flat_map(|c| format!("{c:<80}").into_bytes())
            .collect();
        h.resize(h.len().div_ceil(BLOCK) * BLOCK, b' ');
        h
    }

    #[test]
    fn walks_primary_and_table() {
        let mut file = header(&[
            "SIMPLE  =                    T",
            "BITPIX  =                    8",
            "NAXIS   =                    0",
            "OBSID   =            123 / id",
            "DESIG   = 'J01''s  '",
        ]);
        file.extend(header(&[
            "XTENSION= 'BINTABLE'",
            "BITPIX  =                    8",
            "NAXIS   =                    2",
            "NAXIS1  =                    4",
            "NAXIS2  =                    3",
            "PCOUNT  =                    0",
            "GCOUNT  =                    1",
        ]));
        file.extend(vec![1u8; 12]);
        file.resize(file.len().div_ceil(BLOCK) * BLOCK, 0);
        let list = hdus(&file).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].data, &[1u8; 12]);
        assert_eq!(list[0].int("OBSID"), Some(123));
        assert_eq!(list[0].string("DESIG").as_deref(), Some("J01's"));
        assert!(hdus(&file[..file.len() - 1]).is_err());
        assert!(hdus(&file[..100]).is_err());
        // Left to cfitsio: a damaged structural value, a byte outside printable ASCII,
        // SIMPLE other than T in column 30.
        let damaged = |from: &[u8], to: &[u8]| {
            let at = file.windows(from.len()).position(|w| w == from).unwrap();
            let mut copy = file.clone();
            copy[at..at + to.len()].copy_from_slice(to);
            hdus(&copy).map(|l| l.len())
        };
        assert_eq!(
            damaged(b"PCOUNT  =   ", b"PCOUNT  = s "),
            Err(Unsupported(
                "structural keyword PCOUNT missing or invalid".into()
            ))
        );
        // PCOUNT or GCOUNT missing from an extension (the standard requires them;
        // cfitsio stops reading HDUs there): found by the random-damage property test.
        assert_eq!(
            damaged(b"PCOUNT  =   ", b"QCOUNT  =   "),
            Err(Unsupported(
                "structural keyword PCOUNT missing or invalid".into()
            ))
        );
        assert!(damaged(b"GCOUNT  =   ", b"XCOUNT  =   ").is_err());
        // a space inside a keyword field: cfitsio and the Python parser disagree
        assert!(damaged(b"NAXIS1  =", b"NAXIS1 t=").is_err());
        assert!(damaged(b"OBSID   =", b" OBSID  =").is_err());
        assert!(damaged(b"OBSID   =  ", b"OBSID   =\t").is_err());
        assert!(damaged(
            b"SIMPLE  =                    T",
            b"SIMPLE  =                   T "
        )
        .is_err());
        assert!(damaged(
            b"SIMPLE  =                    T",
            b"SIMPLE  =            1       T"
        )
        .is_err());
        assert_eq!(damaged(b"OBSID   =  ", b"OBSID   =  "), Ok(2));
    }

    #[test]
    fn quoted_strings_are_read_only_when_cfitsio_reads_them_alike() {
        let quoted = |card: &str| {
            let h = header(&["SIMPLE  =                    T", card]);
            Hdu {
                header: &h,
                data: &[],
            }
            .quoted("EXTNAME")
        };
        let ok = |s: &str| Ok(Some(s.to_string()));
        assert_eq!(
            quoted("EXTNAME = 'COADD_B '           / name"),
            ok("COADD_B")
        );
        assert_eq!(quoted("EXTNAME = 'it''s'"), ok("it's"));
        assert_eq!(quoted("EXTNAME =    'B-1'   "), ok("B-1"));
        assert_eq!(quoted("OBJECT  = 'x'"), Ok(None));
        // found by the random-damage property test: cfitsio reads these unquoted
        for card in [
            "EXTNAME = `B-83555772'         / name",
            "EXTNAME =d'COADD_B '",
            "EXTNAME = 'COADD_B ",
            "EXTNAME = 'COADD_B ' x / name",
        ] {
            assert!(quoted(card).is_err(), "{card}");
        }
    }

    #[test]
    fn keywords_match_as_the_python_parser_strips_them() {
        let h = header(&[
            "SIMPLE  =                    T",
            "  SNR   =                  1.5",
            "SNR     =                  2.5",
            "\tLMJM   =                    7",
            "EXPTIME                    900",
            "XSNR    =                    9",
        ]);
        let hdu = Hdu {
            header: &h,
            data: &[],
        };
        let snr = hdu.value("SNR").map(ascii_lossy);
        assert_eq!(snr.as_deref().map(str::trim), Some("2.5")); // the last card wins
        assert_eq!(hdu.int("LMJM"), Some(7)); // a leading tab is stripped too
        assert_eq!(hdu.value("EXPTIME"), None); // no "= ": no value
        assert!(key_is(b"  SNR   = 1", b"SNR") && !key_is(b"XSNR    = 1", b"SNR"));
        assert!(!key_is(b"SNRX    = 1", b"SNR") && key_is(b"END", b"END"));
        let cut = header(&["SIMPLE  =                    T", "  END", "SNR     =    3"]);
        let hdu = Hdu {
            header: &cut,
            data: &[],
        };
        assert_eq!(hdu.value("SNR"), None); // cards stop at a blank-led END
    }
}
