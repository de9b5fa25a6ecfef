//! Compression on every core, decompression by magic number.
//!
//! gzip goes through [`super::pgz::ParGzWriter`] (one standard member,
//! blocks deflated in parallel); zstd through libzstd's own multithreaded
//! mode, which also writes one standard frame (at the default level with
//! a cheaper match finder than zstd's own level 3: see
//! `ZSTD_DEFAULT_STRATEGY`). Readers are picked from the
//! first bytes of the file, so restore and verify take `.tar.gz`, `.tar.zst`
//! and plain `.tar` whatever the file is called.

use super::pgz::ParGzWriter;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use crate::compression::Compression;

/// The default zstd level (3) runs with zstd's `fast` match finder (one
/// hash table) instead of level 3's `dfast` (a second table for longer
/// matches); the window, the 128 Ki-entry hash table and the 5-byte
/// shortest match stay level 3's. nfsroot's tar stream is sorted and has
/// no atime/ctime records, and libzstd 1.5.7 (the crate's) splits blocks
/// better than Debian 12's zstd 1.5.4, so the archive stays smaller than
/// `tar | zstd -T0 -3` makes it while taking less CPU; that CPU pays for
/// the manifest's sha256 of every file and the archive's sha256, which
/// `tar | zstd` does not compute (18% of nfsroot's CPU here: sha2 runs at
/// OpenSSL's speed, SHA-NI). Measured on a 1.2 GB image, 2 cores, two
/// runs each (`tar | zstd -T0 -3`: 3.2-3.6 s, 6.2-6.9 s CPU, 395.7 MB):
///
/// | match finder, hash/chain bits, shortest match | wall | CPU | size |
/// |---|---|---|---|
/// | `dfast` 16/15/5 (the previous choice) | 3.36-3.39 s | 6.3 s | 386.5 MB |
/// | `dfast` 16/14/5 | 3.26-3.34 s | 6.2 s | 388.3 MB |
/// | `fast` 17/-/5 (this) | 3.06-3.14 s | 5.7-5.8 s | 390.0 MB |
/// | `fast` 17/-/6 | 2.95-3.02 s | 5.5 s | 391.9 MB |
/// | `fast` 16/-/5 | 3.01-3.05 s | 5.5-5.6 s | 393.6 MB |
/// | `fast` 16/-/6 | 2.86-3.00 s | 5.2-5.5 s | 396.6 MB (larger) |
///
/// This one keeps a 1.4% size margin on that image for 7-10% less time.
const ZSTD_DEFAULT_STRATEGY: zstd::zstd_safe::Strategy = zstd::zstd_safe::Strategy::ZSTD_fast;

/// A compressing writer of either format.
pub enum Compressor<W: Write> {
    Gz(ParGzWriter<W>),
    Zst(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compressor::Gz(_) => "Compressor::Gz",
            Compressor::Zst(_) => "Compressor::Zst",
        })
    }
}

impl<W: Write> Compressor<W> {
    pub fn new(out: W, format: Compression, level: u32, workers: usize) -> Result<Self> {
        format.check_level(level)?;
        Ok(match format {
            Compression::Gzip => Compressor::Gz(ParGzWriter::new(out, level, workers)),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, level as i32)
                    .context("starting zstd")?;
                e.multithread(workers as u32)
                    .context("starting zstd workers")?;
                e.include_checksum(true)?;
                if level == format.default_level() {
                    use zstd::zstd_safe::CParameter;
                    e.set_parameter(CParameter::Strategy(ZSTD_DEFAULT_STRATEGY))
                        .context("choosing zstd's match finder")?;
                }
                Compressor::Zst(e)
            }
        })
    }

    /// End the stream and hand back the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gz(g) => g.finish(),
            Compressor::Zst(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gz(g) => g.write(buf),
            Compressor::Zst(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gz(g) => g.flush(),
            Compressor::Zst(z) => z.flush(),
        }
    }
}

/// Counts compressed bytes read into a progress bar.
struct Progress<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Open an archive and decompress it by its magic number; `bar`, if
/// given, advances by compressed bytes read.
pub fn open_decompressed(
    path: &Path,
    bar: Option<indicatif::ProgressBar>,
) -> Result<Box<dyn Read + Send>> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    drop(f);
    let raw = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let raw: Box<dyn Read + Send> = match bar {
        Some(bar) => Box::new(Progress { inner: raw, bar }),
        None => Box::new(raw),
    };
    let f = BufReader::with_capacity(1 << 20, raw);
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::bufread::MultiGzDecoder::new(f))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(f)
                .with_context(|| format!("starting zstd on {}", path.display()))?,
        )
    } else {
        Box::new(f)
    })
}
