//! Compression on every core, decompression by magic number.
//!
//! gzip goes through [`super::pgz::ParGzWriter`] (one standard member,
//! blocks deflated in parallel); zstd through libzstd's own multithreaded
//! mode, which also writes one standard frame (at the default level with
//! a cheaper match finder and a larger window than zstd's own level 3:
//! see `ZSTD_DEFAULT_STRATEGY`). Readers are picked from the
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
/// matches), and a 4 MiB window instead of 2 MiB; the 128 Ki-entry hash
/// table and the 5-byte shortest match stay level 3's. The window costs
/// no CPU and wins back what `fast` loses: libzstd's workers compress
/// jobs of four windows, and fewer job edges and longer reach find more
/// matches. nfsroot's tar stream is also sorted, without atime/ctime
/// records, and libzstd 1.5.7 (the crate's) splits blocks better than
/// Debian 12's zstd 1.5.4. The CPU saved pays for the manifest's sha256
/// of every file and the archive's sha256, which `tar | zstd` does not
/// compute (18% of nfsroot's CPU; sha2 runs at OpenSSL's speed, SHA-NI).
/// The cost is memory: 155 MB peak, against 72 MB for `tar | zstd -T0 -3`
/// (2 workers). Measured with nfsroot itself, 2 cores, on a 1.2 GB image
/// (`tar | zstd -T0 -3`: 3.2-3.6 s, 6.2-6.9 s CPU, 395.7 MB) and the
/// 724 MB `minimal` (1.8-2.0 s, 3.5-3.8 s, 223.9 MB):
///
/// | match finder (hash, chain bits; shortest match; window) | 1.2 GB: CPU, size | `minimal`: CPU, size |
/// |---|---|---|
/// | `dfast` (16, 15; 5; 2 MiB), the previous choice | 6.3 s, 386.5 MB | 221.7 MB |
/// | `dfast` (16, 14; 5; 2 MiB) | 6.2 s, 388.3 MB | |
/// | `fast` (17; 5; 2 MiB) | 5.7-6.2 s, 390.0 MB | 3.4-3.5 s, 224.2 MB (larger) |
/// | `fast` (17; 5; 4 MiB), this | 6.0-6.1 s, 385.0 MB | 3.4 s, 222.0 MB |
/// | `fast` (17; 5; 8 MiB) | 5.9 s, 382.9 MB, 248 MB peak | 3.5 s, 221.2 MB |
/// | `fast` (17; 6; 2 MiB) | 5.5 s, 391.9 MB | |
/// | `fast` (16; 5; 2 MiB) | 5.5-5.6 s, 393.6 MB | |
/// | `fast` (16; 6; 2 MiB) | 5.2-5.5 s, 396.6 MB (larger) | |
const ZSTD_DEFAULT_STRATEGY: zstd::zstd_safe::Strategy = zstd::zstd_safe::Strategy::ZSTD_fast;
/// The default level's window, log2 bytes (see `ZSTD_DEFAULT_STRATEGY`).
const ZSTD_DEFAULT_WINDOW_LOG: u32 = 22;

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
                    e.set_parameter(CParameter::WindowLog(ZSTD_DEFAULT_WINDOW_LOG))
                        .context("sizing zstd's window")?;
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
