//! File-system primitives that every stage shares.
//!
//! Anything a node or an admin depends on is written through [`AtomicFile`]:
//! a temp file in the destination's own directory, fsynced, renamed over the
//! final name, and the directory fsynced, so a crash leaves either the old or
//! the new file, never a torn one. Temp names start with `.nfsroot-tmp-` so a
//! later run (holding the lock) can sweep leftovers with [`sweep_temps`].
//!
//! [`Lock`] is an advisory `flock` on a file outside the exported tree. The
//! kernel drops it when the holder dies, so a killed run never wedges the next
//! one; the holder's pid and operation are written into the file so a second
//! run can say who holds it.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Prefix of every temp file this tool creates next to a final name.
pub const TEMP_PREFIX: &str = ".nfsroot-tmp-";

/// 16 random hex digits (64 bits from getrandom(2)), for names that must
/// not be guessed: temp files, build ids, scratch files.
pub fn random_hex() -> String {
    let mut r = [0u8; 8];
    if rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Only before the kernel's pool is ready; still unique per run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        r = (t ^ u64::from(std::process::id()) << 40).to_le_bytes();
    }
    hex::encode(r)
}

/// An unpredictable temp name beside `name`: the pid (so a sweep can tell a
/// live writer from a dead one), 64 random bits, then the final name.
pub fn temp_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(format!(
        "{TEMP_PREFIX}{}-{}-",
        std::process::id(),
        random_hex()
    ));
    s.push(name);
    s
}

/// fsync a directory so that renames and unlinks inside it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).with_context(|| format!("opening directory {}", dir.display()))?;
    d.sync_all()
        .with_context(|| format!("syncing directory {}", dir.display()))
}

fn parent_of(path: &Path) -> Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        Some(_) => Ok(Path::new(".")),
        None => bail!("{} has no parent directory", path.display()),
    }
}

/// A file being written under a temp name beside its final path.
///
/// Writes go straight to the file (callers add their own buffering); every
/// [`WRITE_BEHIND`] bytes the kernel is asked to start writing the range
/// back (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so
/// the fsync in [`AtomicFile::commit`] finds little left to do. For a 358 MB
/// snapshot that fsync took 0.16 s on its own at the end of the run, after
/// all compression had finished; written behind, the disk works while the
/// compressor does.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
    /// Bytes written so far, and how many of them writeback was started on.
    written: u64,
    behind: u64,
}

/// How much is written before writeback of it is started.
const WRITE_BEHIND: u64 = 8 << 20;

impl AtomicFile {
    /// Start writing `dest` (mode 0644).
    pub fn create(dest: &Path) -> Result<Self> {
        Self::create_mode(dest, 0o644)
    }

    /// Start writing `dest` with the given permission bits. The temp name
    /// is unpredictable and created `O_EXCL|O_NOFOLLOW`, so a link planted
    /// at a guessed name cannot redirect the write.
    pub fn create_mode(dest: &Path, mode: u32) -> Result<Self> {
        let dir = parent_of(dest)?;
        let name = dest
            .file_name()
            .with_context(|| format!("{} has no file name", dest.display()))?;
        let tmp = dir.join(temp_name(name));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // umask may have narrowed the mode; set it exactly (on the fd).
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| format!("setting mode of {}", tmp.display()))?;
        Ok(Self {
            file,
            tmp,
            dest: dest.to_path_buf(),
            done: false,
            written: 0,
            behind: 0,
        })
    }

    /// Start writeback of what was written since the last call, once it is
    /// [`WRITE_BEHIND`] bytes. Only a hint: an error here (a file system
    /// without the call) leaves the work to the fsync, which reports it.
    fn write_behind(&mut self) {
        use std::os::fd::AsRawFd;
        if self.written - self.behind < WRITE_BEHIND {
            return;
        }
        let (off, len) = (self.behind as i64, (self.written - self.behind) as i64);
        // SAFETY: plain syscall on an fd this struct owns; no memory is
        // passed.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.behind = self.written;
    }

    /// The open temp file, for callers that need `Seek` or metadata.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// fsync, rename over the destination, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        self.file
            .flush()
            .and_then(|_| self.file.sync_all())
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        crate::crash_point!("atomic.before_rename");
        fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("renaming into place {}", self.dest.display()))?;
        self.done = true;
        fsync_dir(parent_of(&self.dest)?)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.write_behind();
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `data` to `dest` atomically (mode 0644).
pub fn atomic_write(dest: &Path, data: &[u8]) -> Result<()> {
    atomic_write_mode(dest, data, 0o644)
}

/// Write `data` to `dest` atomically with the given mode.
pub fn atomic_write_mode(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create_mode(dest, mode)?;
    f.write_all(data)
        .with_context(|| format!("writing {}", dest.display()))?;
    f.commit()
}

/// Copy `src` to `dest` atomically; returns the sha256 of what was written,
/// re-read from the temp file before the rename so a short write is caught.
pub fn atomic_copy(src: &Path, dest: &Path, mode: u32) -> Result<String> {
    let input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    atomic_copy_from(input, dest, mode)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))
}

/// Copy everything `input` yields to `dest` atomically (see
/// [`atomic_copy`]); for files opened through [`crate::imagefs`].
pub fn atomic_copy_from(mut input: impl Read, dest: &Path, mode: u32) -> Result<String> {
    let mut out = AtomicFile::create_mode(dest, mode)?;
    let mut hasher = HashingWriter::new(&mut out);
    io::copy(&mut input, &mut hasher).with_context(|| format!("writing {}", dest.display()))?;
    let want = hasher.finish_hex();
    out.file().flush()?;
    out.file().rewind()?;
    let got = sha256_reader(out.file())?;
    if got != want {
        bail!(
            "verifying {}: sha256 {got} after writing, expected {want}",
            dest.display()
        );
    }
    out.commit()?;
    Ok(want)
}

/// A `Write` adapter that hashes everything passing through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The hex digest of everything written.
    pub fn finish_hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
    /// Digest and the inner writer.
    pub fn into_parts(self) -> (String, W) {
        (hex::encode(self.hasher.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of everything a reader yields, as hex.
pub fn sha256_reader(mut r: impl Read) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 of a file, as hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    sha256_reader(f).with_context(|| format!("reading {}", path.display()))
}

/// sha256 of a byte slice, as hex.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The pid a temp name was made by (`.nfsroot-tmp-<pid>-<name>`).
fn temp_owner(name: &str) -> Option<u32> {
    name.strip_prefix(TEMP_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Remove temp files left in `dir` by runs that died. A temp file whose
/// maker is still running is left alone: directories such as
/// `pxelinux.cfg/` are shared by every image, so another image's publish
/// may be writing there right now under its own lock.
pub fn sweep_temps(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let alive =
            temp_owner(&name).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        // Only files and links are ours: a directory with such a name is
        // someone else's business, not an error.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !alive && !is_dir {
            match fs::remove_file(entry.path()) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing stale {}", entry.path().display()));
                }
            }
        }
    }
    Ok(n)
}

/// Create a directory and its parents, naming it in the error.
pub fn mkdir_p(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))
}

/// An exclusive advisory lock, held until dropped (or the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Take the lock at `path` for `op` on `what` (e.g. `image minimal`).
    /// With `wait`, block until it is free; otherwise fail naming the holder.
    pub fn acquire(path: &Path, what: &str, op: &str, wait: bool) -> Result<Self> {
        if let Some(dir) = path.parent() {
            mkdir_p(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        use rustix::fs::{FlockOperation, flock};
        if let Err(errno) = try_lock_settled(&mut file) {
            let err = io::Error::from(errno);
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
            // The holder writes "pid op" just after it locks; give it a
            // moment rather than report an empty name.
            let mut holder = String::new();
            for _ in 0..50 {
                holder.clear();
                file.rewind()?;
                let _ = file.read_to_string(&mut holder);
                if holder.trim().contains(' ') {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let holder = holder.trim();
            let (pid, hop) = holder.split_once(' ').unwrap_or((holder, "?"));
            if !wait {
                bail!(
                    "{what} is locked by pid {pid} ({hop}); wait for it to finish, \
                     or pass --wait to queue behind it"
                );
            }
            eprintln!("nfsroot: {what} is locked by pid {pid} ({hop}); waiting");
            flock(&file, FlockOperation::LockExclusive)
                .with_context(|| format!("locking {}", path.display()))?;
        }
        // Overwrite in place, then cut: a reader never sees an empty file.
        let who = format!("{} {op}", std::process::id());
        file.rewind()?;
        file.write_all(who.as_bytes())?;
        file.set_len(who.len() as u64)?;
        file.flush()?;
        Ok(Self {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// Where the lock lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Try the lock; when the file names this very process as the holder, try
/// again for up to two seconds. A child this process is forking (another
/// thread running a tool) holds a copy of every descriptor until its exec
/// closes them, so a lock just released here can look held for a moment.
fn try_lock_settled(file: &mut File) -> rustix::io::Result<()> {
    use rustix::fs::{FlockOperation, flock};
    let me = format!("{} ", std::process::id());
    let mut tries = 0;
    loop {
        match flock(&*file, FlockOperation::NonBlockingLockExclusive) {
            Err(e) if e == rustix::io::Errno::WOULDBLOCK && tries < 200 => {
                let mut holder = String::new();
                let _ = file.rewind().map(|_| file.read_to_string(&mut holder));
                if !holder.starts_with(&me) {
                    return Err(e);
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Swap two directory entries atomically (renameat2 RENAME_EXCHANGE).
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)
        .with_context(|| format!("exchanging {} and {}", a.display(), b.display()))
}

/// Remove a tree if it exists. Refuses `/` and paths with mounts below them
/// (a bind mount left inside a tree must never be followed by rm -rf).
pub fn remove_tree(path: &Path) -> Result<()> {
    if path == Path::new("/") {
        bail!("refusing to remove /");
    }
    if !path.exists() && fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if let Some(m) = mounts_below(path)?.first() {
        bail!(
            "refusing to remove {}: {} is mounted inside it; unmount it first",
            path.display(),
            m.display()
        );
    }
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub fn mounts_below(path: &Path) -> Result<Vec<PathBuf>> {
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(&canon))
        .collect())
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writeback is started behind the writer in [`WRITE_BEHIND`] steps,
    /// and the file still holds exactly what was written.
    #[test]
    fn large_writes_are_written_behind() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("big");
        let mut f = AtomicFile::create(&dest).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
        for _ in 0..20 {
            f.write_all(&chunk).unwrap();
        }
        assert_eq!(f.written, 20 << 20);
        assert_eq!(f.behind, 16 << 20);
        f.commit().unwrap();
        let got = fs::read(&dest).unwrap();
        assert_eq!(got.len(), 20 << 20);
        assert!(got.chunks(1 << 20).all(|c| c == &chunk[..]));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn dropped_atomic_file_keeps_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(sweep_temps(d.path()).unwrap(), 0);
    }

    #[test]
    fn sweep_keeps_temps_of_live_runs() {
        let d = tempfile::tempdir().unwrap();
        let mine = d
            .path()
            .join(format!("{TEMP_PREFIX}{}-f", std::process::id()));
        // Above the kernel's pid_max limit (2^22), so never a live process.
        let dead = d.path().join(format!("{TEMP_PREFIX}999999999-f"));
        let odd = d.path().join(format!("{TEMP_PREFIX}x-f"));
        for p in [&mine, &dead, &odd] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep_temps(d.path()).unwrap(), 2);
        assert!(mine.exists());
        assert!(!dead.exists() && !odd.exists());
    }

    #[test]
    fn planted_links_and_dirs_do_not_redirect_writes() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let dir = d.path().join("etc");
        fs::create_dir(&dir).unwrap();
        // The old predictable names, for this pid and the next ones.
        let pid = std::process::id();
        for p in pid..pid + 50 {
            std::os::unix::fs::symlink(&outside, dir.join(format!("{TEMP_PREFIX}{p}-hosts")))
                .unwrap();
        }
        fs::create_dir(dir.join(format!("{TEMP_PREFIX}999999999-dir"))).unwrap();
        atomic_write(&dir.join("hosts"), b"new").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert_eq!(fs::read(dir.join("hosts")).unwrap(), b"new");
        // The sweep removes the dead links and leaves the directory.
        sweep_temps(&dir).unwrap();
        assert!(dir.join(format!("{TEMP_PREFIX}999999999-dir")).is_dir());
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn temp_names_differ() {
        let a = temp_name(std::ffi::OsStr::new("hosts"));
        let b = temp_name(std::ffi::OsStr::new("hosts"));
        assert_ne!(a, b);
        assert!(a.to_string_lossy().starts_with(TEMP_PREFIX));
        assert!(a.to_string_lossy().ends_with("-hosts"));
        assert_eq!(temp_owner(&a.to_string_lossy()), Some(std::process::id()));
    }

    #[test]
    fn atomic_copy_hashes() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("s");
        fs::write(&s, b"abc").unwrap();
        let h = atomic_copy(&s, &d.path().join("t"), 0o644).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn second_lock_names_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let _l = Lock::acquire(&p, "image x", "build", false).unwrap();
        let err = Lock::acquire(&p, "image x", "snapshot", false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "image x is locked by pid {} (build)",
                std::process::id()
            )),
            "{msg}"
        );
    }

    #[test]
    fn exchange_swaps_dirs() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("ma"), "").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("ma").exists());
        assert!(!a.join("ma").exists());
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
    }
}
