//! A small pax/ustar writer and a strict streaming reader.
//!
//! Written here rather than taken from the `tar` crate because snapshots
//! need what it cannot write: GNU sparse 1.0 members, ACLs in GNU tar's
//! `SCHILY.acl.*` text form beside the raw `SCHILY.xattr.*` values, and
//! nanosecond mtimes. The writer emits a ustar header for every member and a
//! pax `x` header only when a field does not fit (long names, big ids or
//! sizes, sub-second mtimes, xattrs, sparse maps), the same layout GNU tar
//! uses with `--format=posix`. The reader accepts pax (local and global),
//! GNU long names and links, GNU sparse (old `S` members and pax 0.1/1.0)
//! and octal or base-256 numbers; it verifies every header checksum and
//! reports a short or corrupt archive naming the member it was in.

use super::acl;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One member as the writer takes it and the reader gives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// Path relative to the archive root, without `./` or a trailing slash;
    /// empty for the root itself.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Logical size of a regular file (the real size when sparse).
    pub size: u64,
    /// Symlink target, or for a hardlink the path of the member it links to.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, ACLs included as `system.posix_acl_*` values.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data segments `(offset, length)` of a sparse file.
    pub sparse: Option<Vec<(u64, u64)>>,
}

impl Header {
    /// Bytes of file data this member carries (excluding a sparse map).
    pub fn data_len(&self) -> u64 {
        match (&self.kind, &self.sparse) {
            (Kind::File, Some(segs)) => segs.iter().map(|s| s.1).sum(),
            (Kind::File, None) => self.size,
            _ => 0,
        }
    }

    /// The path for messages.
    pub fn display(&self) -> String {
        if self.path.is_empty() {
            "./".into()
        } else {
            String::from_utf8_lossy(&self.path).into_owned()
        }
    }
}

fn archive_name(path: &[u8], dir: bool) -> Vec<u8> {
    let mut n = b"./".to_vec();
    n.extend_from_slice(path);
    if dir && !path.is_empty() {
        n.push(b'/');
    }
    n
}

fn pax_record(buf: &mut Vec<u8>, key: &[u8], val: &[u8]) {
    let base = key.len() + val.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(val);
    buf.push(b'\n');
}

fn put_octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

fn put_bytes(field: &mut [u8], v: &[u8]) -> bool {
    if v.len() > field.len() {
        field.copy_from_slice(&v[..field.len()]);
        return false;
    }
    field[..v.len()].copy_from_slice(v);
    true
}

/// Split a name into ustar prefix and name, if it can be.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    if name.len() > 256 {
        return None;
    }
    // The name part must be <= 100, the prefix <= 155, split at a slash.
    (0..name.len())
        .filter(|&i| name[i] == b'/')
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&name[..i], &name[i + 1..]))
}

fn ustar_block(
    name: &[u8],
    h: &Header,
    flag: u8,
    size: u64,
    link: &[u8],
    pax: &mut Vec<u8>,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    match split_ustar(name) {
        Some((prefix, n)) => {
            put_bytes(&mut b[0..100], n);
            put_bytes(&mut b[345..500], prefix);
        }
        None => {
            put_bytes(&mut b[0..100], name);
            pax_record(pax, b"path", name);
        }
    }
    put_octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    if !put_octal(&mut b[108..116], u64::from(h.uid)) {
        put_octal(&mut b[108..116], 0);
        pax_record(pax, b"uid", h.uid.to_string().as_bytes());
    }
    if !put_octal(&mut b[116..124], u64::from(h.gid)) {
        put_octal(&mut b[116..124], 0);
        pax_record(pax, b"gid", h.gid.to_string().as_bytes());
    }
    if !put_octal(&mut b[124..136], size) {
        put_octal(&mut b[124..136], 0);
        pax_record(pax, b"size", size.to_string().as_bytes());
    }
    let secs_ok = h.mtime >= 0 && put_octal(&mut b[136..148], h.mtime as u64);
    if !secs_ok {
        put_octal(&mut b[136..148], 0);
    }
    if !secs_ok || h.mtime_nsec != 0 {
        pax_record(pax, b"mtime", fmt_time(h.mtime, h.mtime_nsec).as_bytes());
    }
    b[156] = flag;
    if !put_bytes(&mut b[157..257], link) {
        pax_record(pax, b"linkpath", link);
    }
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if !h.uname.is_empty() && (!h.uname.is_ascii() || !put_bytes(&mut b[265..296], &h.uname)) {
        b[265..297].fill(0);
        pax_record(pax, b"uname", &h.uname);
    }
    if !h.gname.is_empty() && (!h.gname.is_ascii() || !put_bytes(&mut b[297..328], &h.gname)) {
        b[297..329].fill(0);
        pax_record(pax, b"gname", &h.gname);
    }
    if matches!(h.kind, Kind::Char | Kind::Block) {
        put_octal(&mut b[329..337], u64::from(h.dev_major));
        put_octal(&mut b[337..345], u64::from(h.dev_minor));
    }
    b
}

fn set_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// `secs.nanos` as pax writes times, negative times included.
pub fn fmt_time(secs: i64, nsec: u32) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    if secs < 0 {
        // -1.25 means secs -2 + 0.75; pax wants the real value.
        let total = -(secs as i128) * 1_000_000_000 - i128::from(nsec);
        return format!("-{}.{:09}", total / 1_000_000_000, total % 1_000_000_000);
    }
    format!("{secs}.{nsec:09}")
}

fn parse_time(s: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(s).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    let mut ns = String::from(frac);
    ns.truncate(9);
    while ns.len() < 9 {
        ns.push('0');
    }
    let nsec: u32 = ns.parse().ok()?;
    if !neg {
        return Some((secs, nsec));
    }
    if nsec == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nsec))
    }
}

/// Streams members into a tar archive.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    /// Archive bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Append one member. `data` must yield exactly `h.data_len()` bytes
    /// (for a sparse file: the segments' bytes, back to back).
    pub fn append(&mut self, h: &Header, data: Option<&mut dyn Read>) -> Result<()> {
        let name = archive_name(&h.path, h.kind == Kind::Dir);
        let mut pax = Vec::new();
        let mut sparse_map = Vec::new();
        let data_len = h.data_len();
        let (hdr_name, stored) = match (&h.kind, &h.sparse) {
            (Kind::File, Some(segs)) => {
                pax_record(&mut pax, b"GNU.sparse.major", b"1");
                pax_record(&mut pax, b"GNU.sparse.minor", b"0");
                pax_record(&mut pax, b"GNU.sparse.name", &name);
                pax_record(
                    &mut pax,
                    b"GNU.sparse.realsize",
                    h.size.to_string().as_bytes(),
                );
                // Like GNU tar, end the map with an empty segment at the
                // real size when the file ends in a hole: extractors size
                // the file from the map.
                let mut segs = segs.clone();
                if segs.last().is_none_or(|&(o, l)| o + l < h.size) {
                    segs.push((h.size, 0));
                }
                let mut map = format!("{}\n", segs.len());
                for (o, l) in segs {
                    map.push_str(&format!("{o}\n{l}\n"));
                }
                sparse_map = map.into_bytes();
                let padded = sparse_map.len().div_ceil(BLOCK) * BLOCK;
                sparse_map.resize(padded, 0);
                let base = h.path.rsplit(|&c| c == b'/').next().unwrap_or(b"f");
                let mut n = b"./GNUSparseFile.0/".to_vec();
                n.extend_from_slice(&base[..base.len().min(80)]);
                (n, padded as u64 + data_len)
            }
            (Kind::File, None) => (name.clone(), data_len),
            _ => (name.clone(), 0),
        };
        let flag = h.kind.flag();
        let mut block = ustar_block(&hdr_name, h, flag, stored, &h.link, &mut pax);
        for (k, v) in acl::pax_records(&h.xattrs) {
            pax_record(&mut pax, &k, &v);
        }
        for (k, v) in &h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let base = name
                .strip_suffix(b"/")
                .unwrap_or(&name)
                .rsplit(|&c| c == b'/')
                .next()
                .unwrap_or(b".");
            let mut pname = b"./PaxHeaders/".to_vec();
            pname.extend_from_slice(&base[..base.len().min(80)]);
            let ph = Header {
                mode: 0o644,
                mtime: h.mtime.max(0),
                ..Header::default()
            };
            let mut scratch = Vec::new();
            let mut pb = ustar_block(&pname, &ph, b'x', pax.len() as u64, b"", &mut scratch);
            set_checksum(&mut pb);
            self.put(&pb)?;
            self.put(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        set_checksum(&mut block);
        self.put(&block)?;
        self.put(&sparse_map)?;
        if let Some(r) = data {
            let n = copy_exact(r, self, data_len)
                .with_context(|| format!("archiving {}", h.display()))?;
            if n != data_len {
                bail!(
                    "{} changed while being archived: read {n} of {data_len} bytes",
                    h.display()
                );
            }
        } else if data_len != 0 {
            bail!("no data given for {}", h.display());
        }
        self.pad(stored)?;
        Ok(())
    }

    /// Write the end-of-archive marker and pad to a 10 KiB record, as tar does.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; BLOCK * 2])?;
        let rec = 20 * BLOCK as u64;
        let rem = self.written % rec;
        if rem != 0 {
            let zeros = vec![0u8; (rec - rem) as usize];
            self.put(&zeros)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for TarWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Copy at most `len` bytes; returns how many were copied. Reading past
/// `len` would mean the file grew, which the caller reports.
fn copy_exact(r: &mut dyn Read, w: &mut impl Write, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(done)
}

// ---------------------------------------------------------------- reader

/// Reads members one at a time; call [`TarReader::data`] to read a
/// member's bytes (unread bytes are skipped by the next `next_header`).
#[derive(Debug)]
pub struct TarReader<R: Read> {
    r: R,
    offset: u64,
    remaining: u64,
    pad: u64,
    global: HashMap<Vec<u8>, Vec<u8>>,
    last: String,
    ended: bool,
}

/// A numeric field: octal text, or GNU base-256 (high bit set, two's
/// complement, so negative mtimes from before 1970 come through).
fn signed_field(f: &[u8], what: &str) -> Result<i64> {
    if f.first().is_some_and(|&c| c & 0x80 != 0) {
        let neg = f[0] & 0x40 != 0;
        let mut v: i128 = i128::from(f[0] & 0x3f) - if neg { 0x40 } else { 0 };
        for &c in &f[1..] {
            v = v * 256 + i128::from(c);
            if v.abs() > i128::from(i64::MAX) {
                bail!("{what} field overflows");
            }
        }
        return Ok(v as i64);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .take_while(|&c| c != 0)
        .filter(|&c| c != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&s).ok();
    s.and_then(|s| i64::from_str_radix(s, 8).ok())
        .with_context(|| format!("{what} field is not an octal number"))
}

fn octal_or_256(f: &[u8], what: &str) -> Result<u64> {
    let v = signed_field(f, what)?;
    u64::try_from(v).with_context(|| format!("negative {what} field"))
}

fn cstr(f: &[u8]) -> &[u8] {
    let n = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    &f[..n]
}

fn parse_pax(data: &[u8], into: &mut HashMap<Vec<u8>, Vec<u8>>) -> Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest
            .iter()
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

/// Strip `./` prefixes and trailing slashes; the archive root becomes empty.
pub fn normalize_name(n: &[u8]) -> Vec<u8> {
    let mut s = n;
    while let Some(r) = s.strip_prefix(b"./") {
        s = r;
    }
    while s.len() > 1 && s.ends_with(b"/") {
        s = &s[..s.len() - 1];
    }
    if s == b"." || s == b"./" {
        s = b"";
    }
    s.to_vec()
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

    fn read_member_data(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > 64 << 20 {
            bail!("{what} of {size} bytes after {} is implausible", self.last);
        }
        let mut v = vec![0u8; size as usize];
        if self.read_full(&mut v)? < v.len() {
            bail!("archive is truncated inside {what} after {}", self.last);
        }
        self.skip(pad_of(size))?;
        Ok(v)
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
        let mut local: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
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
                self.ended = true;
                return Ok(None);
            }
            let want = signed_field(&b[148..156], "checksum").ok();
            let mut unsigned: u32 = 0;
            let mut signed: i32 = 0;
            for (i, &c) in b.iter().enumerate() {
                let c = if (148..156).contains(&i) { b' ' } else { c };
                unsigned += u32::from(c);
                signed += i32::from(c as i8);
            }
            let ok = want.is_some_and(|w| w == i64::from(unsigned) || w == i64::from(signed));
            if !ok {
                bail!(
                    "corrupt tar header at byte {at}, after {}: its size field is wrong \
                     or the archive is damaged",
                    self.last
                );
            }
            let flag = b[156];
            let raw_name = {
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
            };
            let member = String::from_utf8_lossy(&raw_name).into_owned();
            let size =
                octal_or_256(&b[124..136], "size").with_context(|| format!("member {member}"))?;
            match flag {
                b'x' => {
                    let d = self.read_member_data(size, "a pax header")?;
                    parse_pax(&d, &mut local)
                        .with_context(|| format!("pax header before byte {}", self.offset))?;
                    continue;
                }
                b'g' => {
                    let d = self.read_member_data(size, "a global pax header")?;
                    let mut g = std::mem::take(&mut self.global);
                    parse_pax(&d, &mut g).context("global pax header")?;
                    self.global = g;
                    continue;
                }
                b'L' => {
                    let d = self.read_member_data(size, "a GNU long name")?;
                    long_name = Some(cstr(&d).to_vec());
                    continue;
                }
                b'K' => {
                    let d = self.read_member_data(size, "a GNU long link")?;
                    long_link = Some(cstr(&d).to_vec());
                    continue;
                }
                _ => {}
            }
            let mut pax = self.global.clone();
            pax.extend(local);
            let name = pax
                .get(&b"path"[..])
                .cloned()
                .or(long_name)
                .unwrap_or(raw_name);
            let mut h = Header {
                path: normalize_name(&name),
                ..Header::default()
            };
            self.last = h.display();
            let ctx = || format!("member {}", String::from_utf8_lossy(&name));
            h.kind = match flag {
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' | b'D' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => Kind::File,
                other => bail!(
                    "member {}: unsupported tar entry type {:?}",
                    h.display(),
                    other as char
                ),
            };
            if flag == 0 && name.ends_with(b"/") {
                h.kind = Kind::Dir;
            }
            h.mode = (octal_or_256(&b[100..108], "mode").with_context(ctx)? & 0o7777) as u32;
            h.uid = num_field(&pax, b"uid", &b[108..116], "uid").with_context(ctx)?;
            h.gid = num_field(&pax, b"gid", &b[116..124], "gid").with_context(ctx)?;
            let stored = match pax.get(&b"size"[..]) {
                Some(v) => parse_dec(v).with_context(|| format!("{}: pax size", ctx()))?,
                None => size,
            };
            match pax.get(&b"mtime"[..]) {
                Some(v) => {
                    (h.mtime, h.mtime_nsec) =
                        parse_time(v).with_context(|| format!("{}: pax mtime", ctx()))?
                }
                None => h.mtime = signed_field(&b[136..148], "mtime").with_context(ctx)?,
            }
            h.link = pax
                .get(&b"linkpath"[..])
                .cloned()
                .or(long_link)
                .unwrap_or_else(|| cstr(&b[157..257]).to_vec());
            if h.kind == Kind::Hardlink {
                h.link = normalize_name(&h.link);
            }
            h.uname = pax
                .get(&b"uname"[..])
                .cloned()
                .unwrap_or_else(|| cstr(&b[265..297]).to_vec());
            h.gname = pax
                .get(&b"gname"[..])
                .cloned()
                .unwrap_or_else(|| cstr(&b[297..329]).to_vec());
            if matches!(h.kind, Kind::Char | Kind::Block) {
                h.dev_major = octal_or_256(&b[329..337], "devmajor").with_context(ctx)? as u32;
                h.dev_minor = octal_or_256(&b[337..345], "devminor").with_context(ctx)? as u32;
            }
            let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = pax
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(b"SCHILY.xattr.")
                        .map(|n| (n.to_vec(), v.clone()))
                })
                .collect();
            acl::merge_text_acls(&pax, &mut xattrs).with_context(ctx)?;
            xattrs.sort();
            h.xattrs = xattrs;

            self.remaining = if matches!(h.kind, Kind::File | Kind::Dir) || flag == b'1' {
                stored
            } else {
                // Links, devices and fifos carry no data whatever the
                // size field claims; GNU tar skips none either, so a
                // nonzero size here is a lie.
                if stored != 0 {
                    bail!(
                        "member {}: a {:?} with {stored} data bytes",
                        h.display(),
                        h.kind
                    );
                }
                0
            };
            if h.kind == Kind::Hardlink {
                // GNU tar may store data for hardlinks in pax archives; skip it.
                h.size = 0;
            }
            self.pad = pad_of(stored);
            if h.kind == Kind::Dir {
                h.size = 0;
            } else if h.kind == Kind::File {
                h.size = stored;
                if flag == b'S' {
                    self.read_old_sparse(&b, &mut h, stored).with_context(ctx)?;
                } else if pax.contains_key(&b"GNU.sparse.major"[..])
                    || pax.contains_key(&b"GNU.sparse.map"[..])
                    || pax.contains_key(&b"GNU.sparse.size"[..])
                {
                    self.read_pax_sparse(&pax, &mut h, stored)
                        .with_context(ctx)?;
                }
            }
            return Ok(Some(h));
        }
    }

    fn read_pax_sparse(
        &mut self,
        pax: &HashMap<Vec<u8>, Vec<u8>>,
        h: &mut Header,
        stored: u64,
    ) -> Result<()> {
        if let Some(n) = pax.get(&b"GNU.sparse.name"[..]) {
            h.path = normalize_name(n);
            self.last = h.display();
        }
        let real = pax
            .get(&b"GNU.sparse.realsize"[..])
            .or_else(|| pax.get(&b"GNU.sparse.size"[..]))
            .map(|v| parse_dec(v))
            .transpose()?
            .context("sparse member without a real size")?;
        let major = pax.get(&b"GNU.sparse.major"[..]).map(|v| v.as_slice());
        let segs = if major == Some(b"1") {
            // Map at the start of the data: decimal numbers, one a line,
            // padded to a block.
            let mut text = Vec::new();
            let mut nums: Vec<u64> = Vec::new();
            let mut want: Option<usize> = None;
            let mut consumed = 0u64;
            loop {
                if want.is_some_and(|w| nums.len() == 1 + 2 * w) {
                    break;
                }
                if text.is_empty() || !text.contains(&b'\n') {
                    let mut b = [0u8; BLOCK];
                    if consumed + BLOCK as u64 > stored || self.read_full(&mut b)? < BLOCK {
                        bail!("sparse map runs past the member's data");
                    }
                    consumed += BLOCK as u64;
                    text.extend_from_slice(&b);
                    continue;
                }
                let nl = text.iter().position(|&c| c == b'\n').expect("checked");
                let v = parse_dec(&text[..nl]).context("sparse map")?;
                text.drain(..=nl);
                nums.push(v);
                if nums.len() == 1 {
                    if v > 1 << 20 {
                        bail!("sparse map of {v} segments is implausible");
                    }
                    want = Some(v as usize);
                }
            }
            self.remaining = stored - consumed;
            nums[1..].chunks(2).map(|c| (c[0], c[1])).collect()
        } else if let Some(map) = pax.get(&b"GNU.sparse.map"[..]) {
            let nums: Vec<u64> = map
                .split(|&c| c == b',')
                .filter(|s| !s.is_empty())
                .map(parse_dec)
                .collect::<Result<_>>()
                .context("GNU.sparse.map")?;
            if nums.len() % 2 != 0 {
                bail!("GNU.sparse.map has an odd count of numbers");
            }
            nums.chunks(2).map(|c| (c[0], c[1])).collect()
        } else {
            bail!("GNU sparse format 0.0 is not supported; re-create with GNU tar 1.27+");
        };
        self.finish_sparse(h, segs, real)
    }

    fn read_old_sparse(&mut self, b: &[u8; BLOCK], h: &mut Header, stored: u64) -> Result<()> {
        let mut segs = Vec::new();
        let mut push = |f: &[u8]| -> Result<()> {
            let o = octal_or_256(&f[..12], "sparse offset")?;
            let n = octal_or_256(&f[12..24], "sparse size")?;
            if !(o == 0 && n == 0) {
                segs.push((o, n));
            }
            Ok(())
        };
        for i in 0..4 {
            push(&b[386 + i * 24..386 + (i + 1) * 24])?;
        }
        let real = octal_or_256(&b[483..495], "real size")?;
        let mut ext = b[482] != 0;
        let mut used = 0u64;
        while ext {
            let mut e = [0u8; BLOCK];
            if self.read_full(&mut e)? < BLOCK {
                bail!("archive is truncated in a sparse map");
            }
            used += BLOCK as u64;
            for i in 0..21 {
                push(&e[i * 24..(i + 1) * 24])?;
            }
            ext = e[504] != 0;
        }
        let _ = used;
        self.remaining = stored;
        self.finish_sparse(h, segs, real)
    }

    fn finish_sparse(&mut self, h: &mut Header, segs: Vec<(u64, u64)>, real: u64) -> Result<()> {
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
        if total != self.remaining {
            bail!(
                "sparse map holds {total} bytes but the member stores {}",
                self.remaining
            );
        }
        h.size = real;
        h.sparse = Some(segs.into_iter().filter(|s| s.1 > 0).collect());
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

fn pad_of(n: u64) -> u64 {
    (BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64
}

fn parse_dec(v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("{:?} is not a number", String::from_utf8_lossy(v)))
}

fn num_field(pax: &HashMap<Vec<u8>, Vec<u8>>, key: &[u8], f: &[u8], what: &str) -> Result<u32> {
    let v = match pax.get(key) {
        Some(v) => parse_dec(v)?,
        None => octal_or_256(f, what)?,
    };
    u32::try_from(v).with_context(|| format!("{what} {v} is out of range"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        for n in [0usize, 1, 5, 90, 91, 95, 96, 995, 996, 997, 998, 999, 1000] {
            let mut b = Vec::new();
            pax_record(&mut b, b"k", &vec![b'x'; n]);
            let sp = b.iter().position(|&c| c == b' ').unwrap();
            let len: usize = std::str::from_utf8(&b[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, b.len(), "value length {n}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(fmt_time(5, 0), "5");
        assert_eq!(fmt_time(5, 7), "5.000000007");
        assert_eq!(fmt_time(-2, 750_000_000), "-1.250000000");
        for (s, n) in [(5, 7), (-2, 750_000_000), (-3, 0), (0, 1)] {
            assert_eq!(parse_time(fmt_time(s, n).as_bytes()), Some((s, n)));
        }
    }

    #[test]
    fn base256_numbers() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 5;
        assert_eq!(signed_field(&f, "x").unwrap(), 5);
        let f = [0xffu8; 12];
        assert_eq!(signed_field(&f, "x").unwrap(), -1);
        assert!(octal_or_256(&f, "x").is_err());
        assert_eq!(signed_field(b"0000755\0", "x").unwrap(), 0o755);
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name(b"./"), b"");
        assert_eq!(normalize_name(b"."), b"");
        assert_eq!(normalize_name(b"./a/b/"), b"a/b");
        assert_eq!(normalize_name(b"a"), b"a");
    }

    #[test]
    fn roundtrip_members() {
        let long = vec![b'n'; 150];
        let mut path = b"dir/".to_vec();
        path.extend_from_slice(&long);
        let hs = vec![
            Header {
                kind: Kind::Dir,
                mode: 0o755,
                ..Default::default()
            },
            Header {
                path: path.clone(),
                mode: 0o4755,
                uid: 3_000_000,
                gid: 7,
                uname: b"someone".to_vec(),
                mtime: 1_700_000_000,
                mtime_nsec: 123_456_789,
                size: 3,
                xattrs: vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0xff])],
                ..Default::default()
            },
            Header {
                path: b"sp".to_vec(),
                mode: 0o644,
                size: 1 << 30,
                sparse: Some(vec![(4096, 2), (1 << 20, 1)]),
                ..Default::default()
            },
            Header {
                path: b"l".to_vec(),
                kind: Kind::Symlink,
                mode: 0o777,
                link: vec![b'/'; 120],
                ..Default::default()
            },
            Header {
                path: b"c".to_vec(),
                kind: Kind::Char,
                mode: 0o600,
                dev_major: 1,
                dev_minor: 3,
                ..Default::default()
            },
        ];
        let mut w = TarWriter::new(Vec::new());
        for h in &hs {
            let data: Vec<u8> = vec![b'a'; h.data_len() as usize];
            w.append(h, Some(&mut &data[..])).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 10240, 0);
        let mut r = TarReader::new(&bytes[..]);
        for want in &hs {
            let got = r.next_header().unwrap().unwrap();
            assert_eq!(&got, want);
            let mut d = Vec::new();
            r.data().read_to_end(&mut d).unwrap();
            assert_eq!(d.len() as u64, want.data_len());
        }
        assert!(r.next_header().unwrap().is_none());
        // GNU tar lists it without complaint.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tar");
        std::fs::write(&p, &bytes).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(list.contains("./sp"), "{list}");
        assert!(
            list.contains(&String::from_utf8_lossy(&long).to_string()),
            "{list}"
        );
    }

    #[test]
    fn truncated_and_corrupt_are_named() {
        let h = Header {
            path: b"file".to_vec(),
            mode: 0o644,
            size: 2000,
            ..Default::default()
        };
        let mut w = TarWriter::new(Vec::new());
        w.append(&h, Some(&mut &vec![1u8; 2000][..])).unwrap();
        let bytes = w.finish().unwrap();
        let cut = &bytes[..1024];
        let mut r = TarReader::new(cut);
        r.next_header().unwrap().unwrap();
        let e = io::copy(&mut r.data(), &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("truncated inside file"), "{e}");
        // No end marker.
        let cut = &bytes[..512 + 2048];
        let mut r = TarReader::new(cut);
        r.next_header().unwrap().unwrap();
        let e = r.next_header().unwrap_err();
        assert!(format!("{e:#}").contains("after file"), "{e:#}");
    }
}
