//! `nfsroot snapshot`: one pass over the image under its lock.
//!
//! The tree is walked first (sorted, by [`super::tree::walk`]'s rules) so the
//! progress bar knows the total; then each entry is read once, its bytes
//! hashed for the manifest on the way into the tar stream, and the stream
//! compressed on worker threads into a temp file beside the final name. The
//! checksum and manifest are committed first and the archive renamed last,
//! so a failed or interrupted run leaves nothing under the archive's name;
//! pruning removes an archive before its side files. Side files a killed run
//! left without their archive are swept, with its temp files, by the next
//! run into the default directory.

use super::compress::Compressor;
use super::tar::{Header, Kind, TarWriter};
use super::tree::{self, EntryMeta};
use super::{Manifest, SnapshotOpts, SnapshotResult};
use crate::clock;
use crate::fsutil::{self, AtomicFile, HashingWriter};
use crate::image::Layout;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Mode of a snapshot and the files beside it: the archive holds
/// `/etc/shadow`, host keys and authorized keys.
const SECRET: u32 = 0o600;

/// Create `dir` and its missing parents 0700.
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

pub fn run_snapshot(layout: &Layout, opts: &SnapshotOpts) -> Result<SnapshotResult> {
    let started = Instant::now();
    let name = layout.resolve_image(opts.image.as_deref())?;
    layout.existing_image(&name)?;
    let _lock = layout.lock(&name, "snapshot", opts.wait)?;
    // Under the lock: gc cannot remove a kept version meanwhile.
    let root = crate::image::version_path(layout, &name, opts.tree.as_deref())?;
    let facts = crate::facts::image_facts(&crate::imagefs::ImageRoot::open(&root)?)?;
    let now = clock::now_secs();
    let kernel = facts.kernels.last().cloned();
    let default_dir = layout.snapshots_dir(&name);
    let out = match &opts.output {
        Some(p) => p.clone(),
        None => free_name(&default_dir, |n| {
            super::archive_name(
                &name,
                &clock::compact(now),
                n,
                kernel.as_deref().unwrap_or("nokernel"),
                opts.format.extension(),
            )
        })?,
    };
    prepare_output(&out, &default_dir, &root, &name)?;

    let mut file = AtomicFile::create_mode(&out, SECRET)?;
    let written = write_archive(&root, opts, &mut file, &out)?;
    crate::crash_point!("snapshot.archive_written");
    let file_name = out
        .file_name()
        .context("output has no file name")?
        .to_string_lossy()
        .into_owned();
    let entry_count = written.entries.len();
    let manifest = Manifest {
        format: 1,
        image: name.clone(),
        created: clock::rfc3339(now),
        archive: file_name,
        compression: opts.format,
        sha256: written.sha256.clone(),
        release: facts.release,
        kernels: facts.kernels,
        packages: facts.packages,
        users: written.users,
        groups: written.groups,
        notes: written.notes.clone(),
        entries: written.entries,
    };
    let (sums, man_path) = commit(file, &out, &manifest)?;
    let pruned = match opts.keep {
        Some(k) if out.parent() == Some(default_dir.as_path()) => prune(&default_dir, &name, k)?,
        _ => Vec::new(),
    };
    Ok(SnapshotResult {
        image: name,
        path: out,
        checksum_path: sums,
        manifest_path: man_path,
        sha256: written.sha256,
        bytes: written.bytes,
        tar_bytes: written.tar_bytes,
        entries: entry_count,
        sparse_files: written.sparse_files,
        kernel,
        notes: written.notes,
        pruned,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The first of `name(1)`, `name(2)`, ... in `dir` that neither an
/// archive nor its side files use (the image lock keeps other snapshots
/// of the image from taking it meanwhile).
fn free_name(dir: &Path, name: impl Fn(u32) -> String) -> Result<PathBuf> {
    for n in 1..=1000 {
        let p = dir.join(name(n));
        let taken = [
            p.clone(),
            super::checksum_path(&p),
            super::manifest_path(&p),
        ]
        .iter()
        .any(|q| std::fs::symlink_metadata(q).is_ok());
        if !taken {
            return Ok(p);
        }
    }
    bail!(
        "no free snapshot name like {} in {}",
        name(1),
        dir.display()
    )
}

/// Create the archive's directory (0700: archives hold secrets), sweep
/// leftovers of killed runs from the default directory, and refuse an
/// existing name or one inside the image.
fn prepare_output(out: &Path, default_dir: &Path, root: &Path, name: &str) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
        if dir == default_dir {
            // Also those made by older versions, 0755.
            for d in [default_dir.parent(), Some(dir)].into_iter().flatten() {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("setting mode of {}", d.display()))?;
            }
            fsutil::sweep_temps(dir)?;
            sweep_orphans(dir, name)?;
        }
    }
    if out.exists() {
        bail!(
            "{} already exists; choose another name with -o",
            out.display()
        );
    }
    if out.starts_with(root) {
        bail!(
            "{} is inside the image {}; write snapshots outside the exported tree",
            out.display(),
            root.display()
        );
    }
    Ok(())
}

/// Remove the `.sha256` and `.manifest.json` files of `name`'s snapshots in
/// `dir` whose archive is gone: a run killed before its archive's rename,
/// or while pruning, leaves them. The image lock is held, so no live run is
/// writing them.
fn sweep_orphans(dir: &Path, name: &str) -> Result<()> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(archive) = n
            .strip_suffix(".sha256")
            .or_else(|| n.strip_suffix(".manifest.json"))
        else {
            continue;
        };
        if !super::is_archive_name(archive, name)
            || std::fs::symlink_metadata(dir.join(archive)).is_ok()
        {
            continue;
        }
        match std::fs::remove_file(e.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("removing {}", e.path().display()));
            }
        }
    }
    Ok(())
}

/// Commit the manifest and the checksum file, then the archive under its
/// name, last; on failure the first two go again.
fn commit(file: AtomicFile, out: &Path, manifest: &Manifest) -> Result<(PathBuf, PathBuf)> {
    let sums = super::checksum_path(out);
    let man_path = super::manifest_path(out);
    let json = serde_json::to_vec_pretty(manifest)?;
    let line = format!("{}  {}\n", manifest.sha256, manifest.archive);
    let result = (|| -> Result<()> {
        fsutil::atomic_write_mode(&man_path, &json, SECRET)?;
        crate::crash_point!("snapshot.manifest");
        fsutil::atomic_write_mode(&sums, line.as_bytes(), SECRET)?;
        crate::crash_point!("snapshot.checksum");
        file.commit()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&man_path);
        let _ = std::fs::remove_file(&sums);
        return Err(e);
    }
    Ok((sums, man_path))
}

/// What writing the archive produced, for the manifest and the result.
struct Written {
    entries: BTreeMap<PathBuf, EntryMeta>,
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
    notes: Vec<String>,
    sparse_files: usize,
    tar_bytes: u64,
    /// Compressed size and sha256.
    bytes: u64,
    sha256: String,
}

/// Walk the tree, then stream every entry through tar, the compressor and
/// a hash into `file`.
fn write_archive(
    root: &Path,
    opts: &SnapshotOpts,
    file: &mut AtomicFile,
    out: &Path,
) -> Result<Written> {
    let level = opts.level.unwrap_or(opts.format.default_level());
    let workers = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let walked = tree::walk(root)?;
    let total: u64 = walked
        .entries
        .iter()
        .filter(|w| w.md.is_file())
        .map(|w| w.md.len())
        .sum();
    let bar = crate::progress::bytes_bar(total, opts.progress);
    let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let comp = Compressor::new(hashing, opts.format, level, workers)?;
    let mut a = Archiver {
        root,
        tar: TarWriter::new(comp),
        owners: Owners::load(root),
        bar: bar.as_ref(),
        entries: BTreeMap::new(),
        first_link: HashMap::new(),
        links: HashMap::new(),
        users: BTreeMap::new(),
        groups: BTreeMap::new(),
        notes: walked.notes.clone(),
        sparse_files: 0,
    };
    let mut confined = tree::Confined::new(root)?;
    for w in &walked.entries {
        match confined.open(w)? {
            Some(o) => a.add(&o, w)?,
            None => a.notes.push(tree::changed(w)),
        }
    }
    tree::set_link_groups(&mut a.entries, a.links.into_values());
    let tar_bytes = a.tar.written();
    let comp = a.tar.finish().context("finishing the tar stream")?;
    let hashing = comp
        .finish()
        .with_context(|| format!("compressing into {}", out.display()))?;
    let bytes = hashing.count();
    let (sha256, mut bw) = hashing.into_parts();
    bw.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(Written {
        entries: a.entries,
        users: a.users,
        groups: a.groups,
        notes: a.notes,
        sparse_files: a.sparse_files,
        tar_bytes,
        bytes,
        sha256,
    })
}

/// The state of one archive being written: the tar stream and what the
/// manifest will say about each entry.
struct Archiver<'a, W: Write> {
    root: &'a Path,
    tar: TarWriter<W>,
    owners: Owners,
    bar: Option<&'a indicatif::ProgressBar>,
    entries: BTreeMap<PathBuf, EntryMeta>,
    /// The first path written of each multiply linked inode.
    first_link: HashMap<(u64, u64), PathBuf>,
    /// Every path of each multiply linked inode.
    links: HashMap<(u64, u64), Vec<PathBuf>>,
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
    notes: Vec<String>,
    sparse_files: usize,
}

impl<W: Write> Archiver<'_, W> {
    /// Add one opened entry. One that changed since the walk is left out,
    /// with a note, never followed.
    fn add(&mut self, o: &tree::Opened, w: &tree::Walked) -> Result<()> {
        let Some(xattrs) = o.xattrs()? else {
            self.notes.push(o.changed());
            return Ok(());
        };
        let Some((mut meta, link)) = tree::entry_meta(o, &xattrs)? else {
            self.notes.push(o.changed());
            return Ok(());
        };
        if let Some(n) = self.owners.user(meta.uid) {
            self.users.insert(meta.uid, n);
        }
        if let Some(n) = self.owners.group(meta.gid) {
            self.groups.insert(meta.gid, n);
        }
        // Opened before the header is written.
        let file = if meta.kind == Kind::File {
            match o.open_file()? {
                Some(f) => Some(f),
                None => {
                    self.notes.push(o.changed());
                    return Ok(());
                }
            }
        } else {
            None
        };
        let mut h = header(w, &meta, xattrs);
        // Raw bytes; the manifest's target is their text, from one read.
        h.link = link;
        let key = tree::key_of(&w.rel);
        if meta.kind != Kind::Dir
            && w.md.nlink() > 1
            && let Some(first) = self.add_hardlink(w, &key, &mut h)?
        {
            let first = tree::key_of(&first);
            meta.sha256 = self.entries.get(&first).and_then(|m| m.sha256.clone());
            self.entries.insert(key, meta);
            return Ok(());
        }
        if let Some(f) = file {
            meta.sha256 = Some(self.add_file(&f, w, &meta, h)?);
        } else {
            self.tar.append(&h, None)?;
        }
        self.entries.insert(key, meta);
        Ok(())
    }

    /// Record a path of a multiply linked inode; every one after the first
    /// is written as a hard link to it (its path is returned then).
    fn add_hardlink(
        &mut self,
        w: &tree::Walked,
        key: &Path,
        h: &mut Header,
    ) -> Result<Option<PathBuf>> {
        let ino = (w.md.dev(), w.md.ino());
        self.links.entry(ino).or_default().push(key.to_path_buf());
        let Some(first) = self.first_link.get(&ino) else {
            self.first_link.insert(ino, w.rel.clone());
            return Ok(None);
        };
        h.kind = Kind::Hardlink;
        h.link = first.as_os_str().as_bytes().to_vec();
        h.size = 0;
        self.tar.append(h, None)?;
        Ok(Some(first.clone()))
    }

    /// Stream a regular file's data (holes as pax sparse) into the archive;
    /// returns its sha256.
    fn add_file(
        &mut self,
        f: &File,
        w: &tree::Walked,
        meta: &EntryMeta,
        mut h: Header,
    ) -> Result<String> {
        let path = self.root.join(&w.rel);
        let segs = data_segments(f, &w.md)
            .with_context(|| format!("finding holes in {}", path.display()))?;
        let mut reader = SegmentReader::new(f, &path, segs.clone(), meta.size, self.bar);
        if let Some(s) = segs {
            self.sparse_files += 1;
            h.sparse = Some(s);
        }
        self.tar.append(&h, Some(&mut reader))?;
        reader.finish()
    }
}

/// The tar header of an entry.
fn header(w: &tree::Walked, meta: &EntryMeta, xattrs: tree::Xattrs) -> Header {
    Header {
        path: w.rel.as_os_str().as_bytes().to_vec(),
        kind: meta.kind,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        // Numeric ids only, as `tar --numeric-owner` writes: the names
        // belong to the image's user database, and an extractor that maps
        // names through the host's (GNU tar without --numeric-owner) would
        // silently change owners. The names go into the manifest instead.
        uname: Vec::new(),
        gname: Vec::new(),
        mtime: meta.mtime,
        mtime_nsec: meta.mtime_nsec,
        size: meta.size,
        link: Vec::new(),
        dev_major: meta.rdev.map(|r| r.0).unwrap_or(0),
        dev_minor: meta.rdev.map(|r| r.1).unwrap_or(0),
        xattrs,
        sparse: None,
    }
}

/// The data segments of a file with holes, or `None` when it has none
/// worth keeping (fewer allocated bytes than its size is the hint).
fn data_segments(f: &File, md: &std::fs::Metadata) -> io::Result<Option<Vec<(u64, u64)>>> {
    let size = md.len();
    if size == 0 || md.blocks() * 512 >= size {
        return Ok(None);
    }
    use rustix::fs::{SeekFrom, seek};
    let mut segs = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        let data = match seek(f, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let hole = seek(f, SeekFrom::Hole(data))?;
        let end = hole.min(size);
        if end > data {
            segs.push((data, end - data));
        }
        pos = hole;
    }
    seek(f, SeekFrom::Start(0))?;
    let stored: u64 = segs.iter().map(|s| s.1).sum();
    if stored >= size {
        return Ok(None);
    }
    Ok(Some(segs))
}

/// Reads a file's bytes (or, when sparse, its data segments back to back)
/// and hashes the whole logical content, holes as zeros, for the manifest.
///
/// A file that grew after it was stat'ed is an error: the read that ends
/// at the stat'ed size asks for one byte more when the buffer has room,
/// so most files need no separate read past their end (one system call
/// per file, about 1% of a snapshot's CPU).
struct SegmentReader<'a> {
    f: &'a File,
    path: &'a Path,
    segs: Vec<(u64, u64)>,
    idx: usize,
    off: u64,
    hashed_to: u64,
    size: u64,
    hasher: Sha256,
    bar: Option<&'a indicatif::ProgressBar>,
    /// What the read past the stat'ed size found: `None` until one was made.
    grew: Option<bool>,
}

impl<'a> SegmentReader<'a> {
    fn new(
        f: &'a File,
        path: &'a Path,
        segs: Option<Vec<(u64, u64)>>,
        size: u64,
        bar: Option<&'a indicatif::ProgressBar>,
    ) -> Self {
        Self {
            f,
            path,
            segs: segs.unwrap_or_else(|| vec![(0, size)]),
            idx: 0,
            off: 0,
            hashed_to: 0,
            size,
            hasher: Sha256::new(),
            bar,
            grew: None,
        }
    }

    fn hash_zeros_to(&mut self, to: u64) {
        static Z: [u8; 65536] = [0; 65536];
        while self.hashed_to < to {
            let n = (to - self.hashed_to).min(Z.len() as u64) as usize;
            self.hasher.update(&Z[..n]);
            self.hashed_to += n as u64;
        }
    }

    fn finish(mut self) -> Result<String> {
        let grew = match self.grew {
            Some(g) => g,
            None => {
                let mut probe = [0u8; 1];
                self.f.read_at(&mut probe, self.size).unwrap_or(0) != 0
            }
        };
        if grew {
            bail!("{} grew while being archived", self.path.display());
        }
        self.hash_zeros_to(self.size);
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl Read for SegmentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(start, len)) = self.segs.get(self.idx) {
            if self.off == len {
                self.idx += 1;
                self.off = 0;
                continue;
            }
            self.hash_zeros_to(start + self.off);
            let want = (len - self.off).min(buf.len() as u64) as usize;
            // The last bytes before the stat'ed size: one more, if it fits.
            let at_end = start + self.off + want as u64 == self.size;
            let ask = if at_end && want < buf.len() {
                want + 1
            } else {
                want
            };
            let n = self.f.read_at(&mut buf[..ask], start + self.off)?;
            if ask > want && n >= want {
                self.grew = Some(n > want);
            }
            let n = n.min(want);
            if n == 0 {
                return Ok(0);
            }
            self.hasher.update(&buf[..n]);
            self.hashed_to += n as u64;
            self.off += n as u64;
            if let Some(b) = self.bar {
                b.inc(n as u64);
            }
            return Ok(n);
        }
        Ok(0)
    }
}

/// Owner names from the image's own passwd and group files.
struct Owners {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl Owners {
    fn load(root: &Path) -> Self {
        let parse = |p: &str| -> HashMap<u32, Vec<u8>> {
            let mut m = HashMap::new();
            let text = super::at::read_beneath(root, Path::new(p))
                .ok()
                .flatten()
                .unwrap_or_default();
            for line in text.split(|&c| c == b'\n') {
                let f: Vec<&[u8]> = line.split(|&c| c == b':').collect();
                if f.len() >= 3
                    && let Some(id) = std::str::from_utf8(f[2]).ok().and_then(|s| s.parse().ok())
                {
                    m.entry(id).or_insert_with(|| f[0].to_vec());
                }
            }
            m
        };
        Self {
            users: parse("etc/passwd"),
            groups: parse("etc/group"),
        }
    }
    fn user(&self, id: u32) -> Option<String> {
        self.users
            .get(&id)
            .map(|n| String::from_utf8_lossy(n).into_owned())
    }
    fn group(&self, id: u32) -> Option<String> {
        self.groups
            .get(&id)
            .map(|n| String::from_utf8_lossy(n).into_owned())
    }
}

/// Keep the newest `keep` snapshots of `name` in `dir`; return what went.
/// The archive goes before its side files: a run killed in between leaves
/// side files (swept by the next run), never an archive that does not
/// verify.
fn prune(dir: &Path, name: &str, keep: usize) -> Result<Vec<PathBuf>> {
    let all = super::snapshot_files(dir, name)?;
    let mut gone = Vec::new();
    let n = all.len().saturating_sub(keep);
    for p in all.into_iter().take(n) {
        for q in [
            p.clone(),
            super::checksum_path(&p),
            super::manifest_path(&p),
        ] {
            match std::fs::remove_file(&q) {
                Ok(()) => crate::crash_point!("snapshot.prune"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", q.display())),
            }
        }
        gone.push(p);
    }
    fsutil::fsync_dir(dir)?;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read `f` (stat'ed at `size`) through a [`SegmentReader`] in reads
    /// of at most `chunk` bytes, as the tar writer does; then finish.
    fn read_through(f: &File, size: u64, chunk: usize) -> (Vec<u8>, Result<String>) {
        let path = Path::new("/f");
        let mut r = SegmentReader::new(f, path, None, size, None);
        let (mut got, mut buf) = (Vec::new(), vec![0u8; chunk]);
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        (got, r.finish())
    }

    #[test]
    fn a_file_that_grew_after_its_stat_is_refused_however_it_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        // Room for the extra byte in the last read (the usual case), none
        // (the probe after the last read), and reads ending mid-file.
        for chunk in [4096, 900, 300, 7] {
            let (got, r) = read_through(&f, 900, chunk);
            assert_eq!(got, data[..900], "chunk {chunk}");
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("/f grew while being archived"),
                "chunk {chunk}: {e}"
            );
            // The same file stat'ed at its real size is read whole.
            let (got, r) = read_through(&f, 1000, chunk);
            assert_eq!(got, data, "chunk {chunk}");
            assert_eq!(r.unwrap(), hex::encode(Sha256::digest(&data)));
        }
    }

    #[test]
    fn same_second_snapshots_get_numbered_names_that_sort_in_order() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let name =
            |n| super::super::archive_name("img", "20260101T000000Z", n, "6.1.0-9-amd64", "tar.gz");
        assert_eq!(name(1), "img-20260101T000000Z-6.1.0-9-amd64.tar.gz");
        assert_eq!(free_name(dir, name).unwrap(), dir.join(name(1)));
        // Taken by an archive, or by a side file alone: the next number.
        std::fs::write(dir.join(name(1)), "").unwrap();
        std::fs::write(dir.join(format!("{}.sha256", name(2))), "").unwrap();
        assert_eq!(
            free_name(dir, name).unwrap(),
            dir.join("img-20260101T000000Z.3-6.1.0-9-amd64.tar.gz")
        );
        for n in [2, 3, 9, 10, 11] {
            std::fs::write(dir.join(name(n)), "").unwrap();
        }
        std::fs::write(dir.join("img-20251231T235959Z.4-x.tar.gz"), "").unwrap();
        std::fs::write(dir.join("img-20260101T000001Z-6.1.0-9-amd64.tar.gz"), "").unwrap();
        let order: Vec<String> = super::super::snapshot_files(dir, "img")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut want = vec!["img-20251231T235959Z.4-x.tar.gz".to_string()];
        want.extend([1, 2, 3, 9, 10, 11].map(name));
        want.push("img-20260101T000001Z-6.1.0-9-amd64.tar.gz".into());
        assert_eq!(order, want);
        // --keep 2 keeps the two newest by that order.
        let gone = prune(dir, "img", 2).unwrap();
        assert_eq!(gone.len(), 6);
        assert!(dir.join(name(11)).exists() && !dir.join(name(10)).exists());
    }

    #[test]
    fn manifest_sums_match_the_files() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("img");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // Empty, small and big files (several read buffers), a file with
        // a hole, and a hard link: each sum against sha2 over the bytes.
        let mut want = BTreeMap::new();
        let sizes = [(0, "a0"), (65535, "b-small"), (65536, "c-at")];
        let sizes = sizes
            .into_iter()
            .chain([(1 << 20 | 7, "d-big"), (10, "e-tiny")]);
        for (i, (size, name)) in sizes.enumerate() {
            let data: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
            std::fs::write(root.join("etc").join(name), &data).unwrap();
            want.insert(format!("etc/{name}"), fsutil::sha256_bytes(&data));
        }
        let f = File::create(root.join("sparse")).unwrap();
        f.write_at(b"middle", 5 << 20).unwrap();
        f.set_len(9 << 20).unwrap();
        let mut logical = vec![0u8; 9 << 20];
        logical[5 << 20..(5 << 20) + 6].copy_from_slice(b"middle");
        want.insert("sparse".into(), fsutil::sha256_bytes(&logical));
        std::fs::hard_link(root.join("etc/d-big"), root.join("hl")).unwrap();
        want.insert("hl".into(), want["etc/d-big"].clone());

        let out = d.path().join("x.tar.zst");
        let mut file = AtomicFile::create_mode(&out, SECRET).unwrap();
        let opts = SnapshotOpts {
            format: crate::compression::Compression::Zstd,
            ..SnapshotOpts::default()
        };
        let w = write_archive(&root, &opts, &mut file, &out).unwrap();
        let got: BTreeMap<String, String> = w
            .entries
            .iter()
            .filter_map(|(k, m)| Some((k.to_string_lossy().into_owned(), m.sha256.clone()?)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(w.sparse_files, 1);
    }

    #[test]
    fn sweep_orphans_removes_only_side_files_of_missing_archives() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let kept = "img-20000101T000000Z-x.tar.zst";
        let gone = "img-20010101T000000Z-x.tar.zst";
        std::fs::write(dir.join(kept), "").unwrap();
        for f in [
            format!("{kept}.sha256"),
            format!("{kept}.manifest.json"),
            format!("{gone}.sha256"),
            format!("{gone}.manifest.json"),
            // Not side files of this image's archives: left alone.
            "img-notes.sha256".to_string(),
            "other-20010101T000000Z-x.tar.zst.sha256".to_string(),
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        sweep_orphans(dir, "img").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "img-20000101T000000Z-x.tar.zst",
                "img-20000101T000000Z-x.tar.zst.manifest.json",
                "img-20000101T000000Z-x.tar.zst.sha256",
                "img-notes.sha256",
                "other-20010101T000000Z-x.tar.zst.sha256",
            ]
        );
    }
}
