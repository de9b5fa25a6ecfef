//! The streaming tar reader: one member at a time, every header checked.
//!
//! [`TarReader::next_header`] reads the extension headers before a member
//! (pax `x` and `g`, GNU `L` and `K`), each capped (see the module above),
//! then the member's own block, and resolves every field from the member's
//! pax records first, the last global header second and the ustar block
//! last. Its data is read through [`TarReader::data`]; unread bytes are
//! skipped by the next call.

use super::{
    BLOCK, Header, Kind, MAX_LONG_NAME, MAX_PAX_HEADER, MAX_SPARSE_MAP, cstr, normalize_name,
    octal_or_256, pad_of, parse_dec, parse_time, signed_field, sparse,
};
use crate::snapshot::acl;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::io::{self, Read};

type Records = HashMap<Vec<u8>, Vec<u8>>;

/// Reads members one at a time; call [`TarReader::data`] to read a
/// member's bytes (unread bytes are skipped by the next `next_header`).
#[derive(Debug)]
pub struct TarReader<R: Read> {
    r: R,
    offset: u64,
    remaining: u64,
    pad: u64,
    global: Records,
    last: String,
    ended: bool,
}

/// A member's pax records over the last global header's.
#[derive(Clone, Copy)]
struct Pax<'a> {
    local: &'a Records,
    global: &'a Records,
}

impl<'a> Pax<'a> {
    fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.local
            .get(key)
            .or_else(|| self.global.get(key))
            .map(Vec::as_slice)
    }
}

/// What came before a member's own header block.
#[derive(Default)]
struct Extensions {
    local: Records,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

fn parse_pax(data: &[u8], into: &mut Records) -> Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest[0] == 0 && rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest
            .iter()
            .take(20)
            .position(|&c| c == b' ')
            .context("pax record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("pax record length is not a number")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            bail!("pax record length does not match its text");
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .context("pax record without '='")?;
        into.insert(rec[..eq].to_vec(), rec[eq + 1..].to_vec());
        rest = &rest[len..];
    }
    Ok(())
}

fn num_field(pax: Pax<'_>, key: &[u8], f: &[u8], what: &str) -> Result<u32> {
    let v = match pax.get(key) {
        Some(v) => parse_dec(v)?,
        None => octal_or_256(f, what)?,
    };
    u32::try_from(v).with_context(|| format!("{what} {v} is out of range"))
}

/// The name in a header block, ustar prefix included.
fn block_name(b: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&b[0..100]);
    let prefix = if &b[257..263] == b"ustar\0" {
        cstr(&b[345..500])
    } else {
        &[][..]
    };
    if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    }
}

fn checksum_ok(b: &[u8; BLOCK]) -> bool {
    let want = signed_field(&b[148..156], "checksum").ok();
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += u32::from(c);
        signed += i32::from(c as i8);
    }
    want.is_some_and(|w| w == i64::from(unsigned) || w == i64::from(signed))
}

fn kind_of_flag(flag: u8, name: &[u8]) -> Option<Kind> {
    Some(match flag {
        0 if name.ends_with(b"/") => Kind::Dir,
        b'0' | 0 | b'7' | b'S' => Kind::File,
        b'1' => Kind::Hardlink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' | b'D' => Kind::Dir,
        b'6' => Kind::Fifo,
        _ => return None,
    })
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        Self {
            r,
            offset: 0,
            remaining: 0,
            pad: 0,
            global: HashMap::new(),
            last: "the start".into(),
            ended: false,
        }
    }

    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("reading archive after {}", self.last));
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.read_full(&mut buf[..want])?;
            if got < want {
                bail!("archive is truncated inside {}", self.last);
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// The data of an extension header named `name` whose block starts at
    /// byte `at`, refused above `cap` before anything is read.
    fn read_extension(
        &mut self,
        size: u64,
        cap: u64,
        what: &str,
        name: &[u8],
        at: u64,
    ) -> Result<Vec<u8>> {
        let name = String::from_utf8_lossy(name);
        if size > cap {
            bail!(
                "{what} {name} at byte {at} (after {}) holds {size} bytes, more than the \
                 cap of {} MiB",
                self.last,
                cap >> 20
            );
        }
        let mut v = vec![0u8; size as usize];
        if self.read_full(&mut v)? < v.len() {
            bail!("archive is truncated inside {what} {name} at byte {at}");
        }
        self.skip(pad_of(size))?;
        Ok(v)
    }

    /// The next header block and its offset; `None` at the end marker.
    fn read_block(&mut self) -> Result<Option<([u8; BLOCK], u64)>> {
        let mut b = [0u8; BLOCK];
        let at = self.offset;
        let got = self.read_full(&mut b)?;
        if got == 0 {
            bail!(
                "archive is truncated: it ends after {} without an end-of-archive marker",
                self.last
            );
        }
        if got < BLOCK {
            bail!("archive is truncated inside the header after {}", self.last);
        }
        if b.iter().all(|&c| c == 0) {
            return Ok(None);
        }
        if !checksum_ok(&b) {
            bail!(
                "corrupt tar header at byte {at}, after {}: its size field is wrong \
                 or the archive is damaged",
                self.last
            );
        }
        Ok(Some((b, at)))
    }

    /// The next member's header, or `None` at the end-of-archive marker.
    pub fn next_header(&mut self) -> Result<Option<Header>> {
        if self.ended {
            return Ok(None);
        }
        let rest = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(rest)?;
        let mut ext = Extensions::default();
        loop {
            let Some((b, at)) = self.read_block()? else {
                self.ended = true;
                return Ok(None);
            };
            let raw_name = block_name(&b);
            let size = octal_or_256(&b[124..136], "size").with_context(|| {
                format!("member {} at byte {at}", String::from_utf8_lossy(&raw_name))
            })?;
            match b[156] {
                b'x' => {
                    let d =
                        self.read_extension(size, MAX_PAX_HEADER, "pax header", &raw_name, at)?;
                    parse_pax(&d, &mut ext.local)
                        .with_context(|| format!("pax header at byte {at}"))?;
                }
                b'g' => {
                    let d = self.read_extension(
                        size,
                        MAX_PAX_HEADER,
                        "global pax header",
                        &raw_name,
                        at,
                    )?;
                    // A new global header replaces the fields it names.
                    parse_pax(&d, &mut self.global)
                        .with_context(|| format!("global pax header at byte {at}"))?;
                }
                b'L' => {
                    let d =
                        self.read_extension(size, MAX_LONG_NAME, "GNU long name", &raw_name, at)?;
                    ext.long_name = Some(cstr(&d).to_vec());
                }
                b'K' => {
                    let d =
                        self.read_extension(size, MAX_LONG_NAME, "GNU long link", &raw_name, at)?;
                    ext.long_link = Some(cstr(&d).to_vec());
                }
                _ => return self.member(&b, at, raw_name, size, ext).map(Some),
            }
        }
    }

    /// Build the member from its block and the extensions before it.
    fn member(
        &mut self,
        b: &[u8; BLOCK],
        at: u64,
        raw_name: Vec<u8>,
        size: u64,
        ext: Extensions,
    ) -> Result<Header> {
        // Borrowed out and back so the lookups need no copy of it.
        let global = std::mem::take(&mut self.global);
        let r = self.member_with(b, at, raw_name, size, ext, &global);
        self.global = global;
        r
    }

    fn member_with(
        &mut self,
        b: &[u8; BLOCK],
        at: u64,
        raw_name: Vec<u8>,
        size: u64,
        ext: Extensions,
        global: &Records,
    ) -> Result<Header> {
        let Extensions {
            local,
            long_name,
            long_link,
        } = ext;
        let pax = Pax {
            local: &local,
            global,
        };
        let flag = b[156];
        let name = pax
            .get(b"path")
            .map(<[u8]>::to_vec)
            .or(long_name)
            .unwrap_or(raw_name);
        let mut h = Header {
            path: normalize_name(&name),
            ..Header::default()
        };
        self.last = h.display();
        let ctx = || format!("member {} at byte {at}", String::from_utf8_lossy(&name));
        h.kind = kind_of_flag(flag, &name)
            .with_context(|| format!("{}: unsupported tar entry type {:?}", ctx(), flag as char))?;
        h.mode = (octal_or_256(&b[100..108], "mode").with_context(ctx)? & 0o7777) as u32;
        h.uid = num_field(pax, b"uid", &b[108..116], "uid").with_context(ctx)?;
        h.gid = num_field(pax, b"gid", &b[116..124], "gid").with_context(ctx)?;
        let stored = match pax.get(b"size") {
            Some(v) => parse_dec(v).with_context(|| format!("{}: pax size", ctx()))?,
            None => size,
        };
        match pax.get(b"mtime") {
            Some(v) => {
                (h.mtime, h.mtime_nsec) =
                    parse_time(v).with_context(|| format!("{}: pax mtime", ctx()))?
            }
            None => h.mtime = signed_field(&b[136..148], "mtime").with_context(ctx)?,
        }
        h.link = pax
            .get(b"linkpath")
            .map(<[u8]>::to_vec)
            .or(long_link)
            .unwrap_or_else(|| cstr(&b[157..257]).to_vec());
        if h.kind == Kind::Hardlink {
            h.link = normalize_name(&h.link);
        }
        h.uname = pax
            .get(b"uname")
            .map_or_else(|| cstr(&b[265..297]).to_vec(), <[u8]>::to_vec);
        h.gname = pax
            .get(b"gname")
            .map_or_else(|| cstr(&b[297..329]).to_vec(), <[u8]>::to_vec);
        if matches!(h.kind, Kind::Char | Kind::Block) {
            h.dev_major = octal_or_256(&b[329..337], "devmajor").with_context(ctx)? as u32;
            h.dev_minor = octal_or_256(&b[337..345], "devminor").with_context(ctx)? as u32;
        }
        // xattrs and ACLs from the member's own records only.
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = pax
            .local
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(b"SCHILY.xattr.")
                    .map(|n| (n.to_vec(), v.clone()))
            })
            .collect();
        acl::merge_text_acls(pax.local, &mut xattrs).with_context(ctx)?;
        xattrs.sort();
        h.xattrs = xattrs;
        self.set_data(&mut h, flag, stored, pax, b, at)
            .with_context(ctx)?;
        Ok(h)
    }

    /// How much data follows the member, and its sparse map if any.
    fn set_data(
        &mut self,
        h: &mut Header,
        flag: u8,
        stored: u64,
        pax: Pax<'_>,
        b: &[u8; BLOCK],
        at: u64,
    ) -> Result<()> {
        self.remaining = if matches!(h.kind, Kind::File | Kind::Dir) || flag == b'1' {
            stored
        } else {
            // Links, devices and fifos carry no data whatever the size
            // field claims; GNU tar skips none either, so a nonzero size
            // here is a lie.
            if stored != 0 {
                bail!("a {:?} with {stored} data bytes", h.kind);
            }
            0
        };
        self.pad = pad_of(stored);
        match h.kind {
            // GNU tar may store data for hardlinks in pax archives; it is
            // skipped.
            Kind::Hardlink | Kind::Dir => h.size = 0,
            Kind::File => {
                h.size = stored;
                if flag == b'S' {
                    self.read_old_sparse(b, h, stored, at)?;
                } else if [
                    &b"GNU.sparse.major"[..],
                    b"GNU.sparse.map",
                    b"GNU.sparse.size",
                ]
                .iter()
                .any(|k| pax.get(k).is_some())
                {
                    self.read_pax_sparse(pax, h, stored)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn read_pax_sparse(&mut self, pax: Pax<'_>, h: &mut Header, stored: u64) -> Result<()> {
        if let Some(n) = pax.get(b"GNU.sparse.name") {
            h.path = normalize_name(n);
            self.last = h.display();
        }
        let real = pax
            .get(b"GNU.sparse.realsize")
            .or_else(|| pax.get(b"GNU.sparse.size"))
            .map(parse_dec)
            .transpose()?
            .context("sparse member without a real size")?;
        let segs = if pax.get(b"GNU.sparse.major") == Some(b"1") {
            self.read_map_10(stored)?
        } else if let Some(map) = pax.get(b"GNU.sparse.map") {
            sparse::parse_map_01(map)?
        } else {
            bail!("GNU sparse format 0.0 is not supported; re-create with GNU tar 1.27+");
        };
        h.sparse = Some(sparse::check(segs, real, self.remaining)?);
        h.size = real;
        Ok(())
    }

    /// The 1.0 map at the start of the data, block by block.
    fn read_map_10(&mut self, stored: u64) -> Result<Vec<(u64, u64)>> {
        let start = self.offset;
        let mut p = sparse::MapParser::new(start);
        let mut consumed = 0u64;
        let mut b = [0u8; BLOCK];
        while !p.done() {
            if consumed + BLOCK as u64 > stored {
                bail!("sparse map at byte {start} runs past the member's data");
            }
            if consumed + BLOCK as u64 > MAX_SPARSE_MAP {
                bail!(
                    "sparse map at byte {start} is longer than the cap of {} MiB",
                    MAX_SPARSE_MAP >> 20
                );
            }
            if self.read_full(&mut b)? < BLOCK {
                bail!("archive is truncated in the sparse map at byte {start}");
            }
            consumed += BLOCK as u64;
            p.feed(&b)?;
        }
        self.remaining = stored - consumed;
        Ok(p.into_segments())
    }

    fn read_old_sparse(
        &mut self,
        b: &[u8; BLOCK],
        h: &mut Header,
        stored: u64,
        at: u64,
    ) -> Result<()> {
        let mut segs = Vec::new();
        sparse::push_old_entries(&b[386..482], &mut segs)?;
        let real = octal_or_256(&b[483..495], "real size")?;
        let mut more = b[482] != 0;
        while more {
            let mut e = [0u8; BLOCK];
            if self.read_full(&mut e)? < BLOCK {
                bail!("archive is truncated in the sparse map after byte {at}");
            }
            sparse::push_old_entries(&e[..504], &mut segs).with_context(|| {
                format!(
                    "sparse extension header at byte {}",
                    self.offset - BLOCK as u64
                )
            })?;
            more = e[504] != 0;
        }
        self.remaining = stored;
        h.sparse = Some(sparse::check(segs, real, stored)?);
        h.size = real;
        Ok(())
    }

    /// The current member's data (the segments' bytes for a sparse file).
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { t: self }
    }

    /// Bytes read from the (decompressed) archive so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// Reads one member's data; a short archive is an error naming the member.
#[derive(Debug)]
pub struct DataReader<'a, R: Read> {
    t: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.t.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.t.remaining) as usize;
        let n = self.t.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive is truncated inside {}", self.t.last),
            ));
        }
        self.t.remaining -= n as u64;
        self.t.offset += n as u64;
        Ok(n)
    }
}
