//! A deterministic cpio "newc" writer and a reader for checking archives.
//!
//! The archive is built in memory as a sorted map from path to entry, so
//! the output depends only on the entries: paths in byte order (a parent
//! always sorts before its children), inode numbers assigned in that order
//! from 1, uid/gid 0, one fixed mtime, and every parent directory present.
//! That is all the kernel's initramfs unpacker needs, and the same inputs
//! always give the same bytes.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Write;

/// What one archive path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Entry {
    /// Full st_mode (type and permission bits).
    pub fn st_mode(&self) -> u32 {
        match self {
            Entry::Dir { mode } => S_IFDIR | (mode & 0o7777),
            Entry::File { mode, .. } => S_IFREG | (mode & 0o7777),
            Entry::Symlink { .. } => S_IFLNK | 0o777,
            Entry::CharDev { mode, .. } => S_IFCHR | (mode & 0o7777),
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            Entry::File { data, .. } => data,
            Entry::Symlink { target } => target.as_bytes(),
            _ => &[],
        }
    }
}

/// An archive being assembled; paths are relative (`bin/sh`, not `/bin/sh`).
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) `path`, creating missing parent directories 0755.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<()> {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("invalid archive path {path:?}");
        }
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => bail!("archive path {parent} is not a directory (adding {path})"),
            }
        }
        self.entries.insert(path.to_string(), entry);
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        self.add(path, Entry::File { mode, data })
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.add(path, Entry::Dir { mode: 0o755 })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.add(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the newc archive with every mtime set to `mtime`; returns the
    /// number of bytes written.
    pub fn write(&self, out: &mut dyn Write, mtime: u32) -> Result<u64> {
        let mut n = 0u64;
        for (i, (path, e)) in self.entries.iter().enumerate() {
            let (major, minor) = match e {
                Entry::CharDev { major, minor, .. } => (*major, *minor),
                _ => (0, 0),
            };
            let nlink = if matches!(e, Entry::Dir { .. }) { 2 } else { 1 };
            n += write_one(
                out,
                i as u32 + 1,
                e.st_mode(),
                nlink,
                mtime,
                (major, minor),
                path,
                e.data(),
            )?;
        }
        n += write_one(out, 0, 0, 1, 0, (0, 0), "TRAILER!!!", &[])?;
        // The kernel does not need it, but pad to 512 like cpio(1) does.
        let pad = (512 - (n % 512)) % 512;
        out.write_all(&vec![0u8; pad as usize])?;
        Ok(n + pad)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_one(
    out: &mut dyn Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> Result<u64> {
    let namesize = name.len() + 1;
    let hdr = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{mtime:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        0
    );
    let mut buf = Vec::with_capacity(hdr.len() + namesize + 3);
    buf.extend_from_slice(hdr.as_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
    out.write_all(&buf).context("writing cpio header")?;
    out.write_all(data).context("writing cpio data")?;
    let pad = (4 - data.len() % 4) % 4;
    out.write_all(&[0u8; 3][..pad])?;
    Ok((buf.len() + data.len() + pad) as u64)
}

/// One entry read back from an archive: path, st_mode, data (a symlink's
/// data is its target).
pub type ReadEntry = (String, u32, Vec<u8>);

/// Parse an uncompressed newc archive (one or more concatenated).
pub fn parse(mut b: &[u8]) -> Result<Vec<ReadEntry>> {
    let mut v = Vec::new();
    let field = |h: &[u8], i: usize| -> Result<usize> {
        let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).context("cpio header not ASCII")?;
        usize::from_str_radix(s, 16).with_context(|| format!("bad cpio header field {s:?}"))
    };
    loop {
        // Skip zero padding between/after archives.
        while let Some((0, rest)) = b.split_first() {
            b = rest;
        }
        if b.is_empty() {
            break;
        }
        if b.len() < 110 || (&b[..6] != b"070701" && &b[..6] != b"070702") {
            bail!("not a newc cpio archive (bad magic)");
        }
        let mode = field(b, 1)? as u32;
        let size = field(b, 6)?;
        let namesize = field(b, 11)?;
        let name_end = 110 + namesize;
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size;
        if namesize == 0 || b.len() < data_end {
            bail!("truncated cpio archive");
        }
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        let data = b[data_start..data_end].to_vec();
        b = &b[(data_end.div_ceil(4) * 4).min(b.len())..];
        if name == "TRAILER!!!" {
            continue;
        }
        v.push((name, mode, data));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_parents() {
        let mut a = Archive::new();
        a.file("bin/busybox", 0o755, b"elf".to_vec()).unwrap();
        a.symlink("bin/sh", "busybox").unwrap();
        a.add(
            "dev/console",
            Entry::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        )
        .unwrap();
        a.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        let mut out = Vec::new();
        let n = a.write(&mut out, 0).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 512, 0);
        let e = parse(&out).unwrap();
        let names: Vec<_> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"]
        );
        assert_eq!(e[0].1, 0o040755);
        assert_eq!(e[1].1, 0o100755);
        assert_eq!(e[1].2, b"elf");
        assert_eq!(e[2].1, 0o120777);
        assert_eq!(e[2].2, b"busybox");
        assert_eq!(e[4].1, 0o020600);
    }

    #[test]
    fn deterministic_and_mtime() {
        let build = |order: &[&str]| {
            let mut a = Archive::new();
            for p in order {
                a.file(p, 0o644, p.as_bytes().to_vec()).unwrap();
            }
            let mut out = Vec::new();
            a.write(&mut out, 1234).unwrap();
            out
        };
        let x = build(&["a/b", "c", "a/a"]);
        assert_eq!(x, build(&["c", "a/a", "a/b"]));
        // mtime field of the first header.
        assert_eq!(&x[6 + 5 * 8..14 + 5 * 8], b"000004d2");
    }

    #[test]
    fn rejects_bad_paths_and_files_as_dirs() {
        let mut a = Archive::new();
        assert!(a.file("../x", 0o644, vec![]).is_err());
        a.file("f", 0o644, vec![]).unwrap();
        assert!(a.file("f/g", 0o644, vec![]).is_err());
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn reads_system_cpio_output() {
        // Interoperability with GNU cpio (scripts/setup installs it).
        let cpio = crate::exec::find_tool("cpio").expect("no cpio: run scripts/setup");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), "hello").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && echo x | {} -o -H newc 2>/dev/null",
                d.path().display(),
                cpio.display()
            ))
            .output()
            .unwrap();
        let e = parse(&out.stdout).unwrap();
        assert_eq!(e[0].0, "x");
        assert_eq!(e[0].2, b"hello");
    }
}
