//! GNU sparse maps, each parsed in one pass with a cap on its size.
//!
//! Three forms reach the reader: pax 0.1 (`GNU.sparse.map` holding
//! `offset,size,...` in the pax header), pax 1.0 (decimal numbers one a
//! line at the start of the member's data, padded to a block: the count,
//! then offset and size pairs) and the old GNU `S` member (four entries in
//! the header, 21 more in each extension block). The 1.0 text is fed block
//! by block to [`MapParser`], which keeps only the number being read, so a
//! map costs its length once whatever its shape.

use super::{MAX_SPARSE_SEGMENTS, octal_or_256, parse_dec};
use anyhow::{Context, Result, bail};

/// `GNU.sparse.map` of pax sparse 0.1.
pub fn parse_map_01(map: &[u8]) -> Result<Vec<(u64, u64)>> {
    let mut nums: Vec<u64> = Vec::new();
    for s in map.split(|&c| c == b',').filter(|s| !s.is_empty()) {
        if nums.len() >= 2 * MAX_SPARSE_SEGMENTS {
            bail!("GNU.sparse.map holds more than {MAX_SPARSE_SEGMENTS} segments");
        }
        nums.push(parse_dec(s).context("GNU.sparse.map")?);
    }
    if nums.len() % 2 != 0 {
        bail!("GNU.sparse.map has an odd count of numbers");
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Longest decimal number accepted in a 1.0 map (`u64::MAX` has 20 digits).
const MAX_DIGITS: usize = 20;

/// A pax sparse 1.0 map read block by block.
#[derive(Debug, Default)]
pub struct MapParser {
    /// Segments announced by the first line.
    want: Option<usize>,
    /// The offset of a segment whose size is not read yet.
    pending: Option<u64>,
    segs: Vec<(u64, u64)>,
    cur: u64,
    digits: usize,
    /// Archive offset of the next byte fed, for messages.
    at: u64,
}

impl MapParser {
    /// A parser for a map starting at archive byte `at`.
    pub fn new(at: u64) -> Self {
        Self {
            at,
            ..Self::default()
        }
    }

    /// Whether every announced segment has been read.
    pub fn done(&self) -> bool {
        self.want.is_some_and(|w| self.segs.len() == w)
    }

    /// Feed the next bytes of the map; stops at the end of the map (the
    /// rest of the block is padding).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        for &c in bytes {
            if self.done() {
                return Ok(());
            }
            match c {
                b'0'..=b'9' => {
                    self.digits += 1;
                    if self.digits > MAX_DIGITS {
                        bail!(
                            "sparse map number at byte {} is longer than {MAX_DIGITS} digits",
                            self.at
                        );
                    }
                    self.cur = self
                        .cur
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(c - b'0')))
                        .with_context(|| {
                            format!("sparse map number at byte {} overflows", self.at)
                        })?;
                }
                b'\n' if self.digits > 0 => self.number()?,
                _ => bail!(
                    "sparse map holds {:?} at byte {} where a digit or newline belongs",
                    c as char,
                    self.at
                ),
            }
            self.at += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<()> {
        let v = std::mem::take(&mut self.cur);
        self.digits = 0;
        match (self.want, self.pending.take()) {
            (None, _) => {
                if v > MAX_SPARSE_SEGMENTS as u64 {
                    bail!(
                        "sparse map at byte {} announces {v} segments, more than the cap \
                         of {MAX_SPARSE_SEGMENTS}",
                        self.at
                    );
                }
                self.want = Some(v as usize);
                self.segs.reserve(v as usize);
            }
            (Some(_), None) => self.pending = Some(v),
            (Some(_), Some(off)) => self.segs.push((off, v)),
        }
        Ok(())
    }

    /// The segments, once [`MapParser::done`].
    pub fn into_segments(self) -> Vec<(u64, u64)> {
        self.segs
    }
}

/// Append the entries of an old GNU sparse header or extension block
/// (24 bytes each: octal offset and size); `(0, 0)` entries are unused.
pub fn push_old_entries(fields: &[u8], segs: &mut Vec<(u64, u64)>) -> Result<()> {
    for f in fields.chunks_exact(24) {
        let o = octal_or_256(&f[..12], "sparse offset")?;
        let n = octal_or_256(&f[12..24], "sparse size")?;
        if o == 0 && n == 0 {
            continue;
        }
        if segs.len() >= MAX_SPARSE_SEGMENTS {
            bail!("sparse map holds more than {MAX_SPARSE_SEGMENTS} segments");
        }
        segs.push((o, n));
    }
    Ok(())
}

/// Check a map against the real size and the stored data; drop empty
/// segments (GNU tar ends a map with one at the real size).
pub fn check(segs: Vec<(u64, u64)>, real: u64, stored: u64) -> Result<Vec<(u64, u64)>> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(o, l) in &segs {
        if o < end {
            bail!("sparse map segments overlap or are out of order");
        }
        end = o.checked_add(l).context("sparse segment overflows")?;
        total += l;
    }
    if end > real {
        bail!("sparse map reaches past the file's size {real}");
    }
    if total != stored {
        bail!("sparse map holds {total} bytes but the member stores {stored}");
    }
    Ok(segs.into_iter().filter(|s| s.1 > 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Vec<(u64, u64)>> {
        let mut p = MapParser::new(0);
        for chunk in text.chunks(7) {
            p.feed(chunk)?;
        }
        assert!(p.done(), "map incomplete");
        Ok(p.into_segments())
    }

    #[test]
    fn map_10_split_anywhere() {
        assert_eq!(
            parse(b"2\n0\n10\n4096\n5\n\0\0\0").unwrap(),
            [(0, 10), (4096, 5)]
        );
        assert_eq!(parse(b"0\n").unwrap(), []);
        let e = parse(b"1\n123456789012345678901\n1\n").unwrap_err();
        assert!(e.to_string().contains("byte 2"), "{e}");
        let e = parse(b"1\n\n").unwrap_err();
        assert!(e.to_string().contains("byte 2"), "{e}");
        let e = parse(b"99999999\n").unwrap_err();
        assert!(e.to_string().contains("cap"), "{e}");
        assert!(parse(b"1\n18446744073709551616\n").is_err());
    }

    #[test]
    fn map_01_and_checks() {
        assert_eq!(parse_map_01(b"0,3,10,0").unwrap(), [(0, 3), (10, 0)]);
        assert!(parse_map_01(b"1,2,3").is_err());
        assert_eq!(check(vec![(0, 3), (10, 0)], 10, 3).unwrap(), [(0, 3)]);
        assert!(check(vec![(5, 3), (0, 1)], 10, 4).is_err());
        assert!(check(vec![(0, 3)], 2, 3).is_err());
        assert!(check(vec![(0, 3)], 10, 4).is_err());
        assert!(check(vec![(u64::MAX, 3)], u64::MAX, 3).is_err());
    }
}
