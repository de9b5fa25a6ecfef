//! File operations relative to an open directory that never follow a
//! symlink, for the two places snapshots meet a tree someone else may be
//! changing: walking a live image and extracting an archive.
//!
//! A path string is resolved again by the kernel at every use, so a node
//! that swaps a directory for a symlink between a check and a use steers
//! the next open outside the image. Here every directory is opened with
//! `O_DIRECTORY|O_NOFOLLOW` relative to its already-open parent (or in one
//! `openat2` call with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS` where the
//! kernel has it), and the final name is acted on through that parent's fd
//! with no-follow flags. Calls that have no `*at` form (the `l*xattr`
//! family) go through `/proc/self/fd/<parent>/<name>`, which resolves the
//! parent through its fd and leaves the last name unfollowed.

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Flags to open a directory that must not be a symlink.
pub fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Open the directory `path` itself (not following a final symlink).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, dir_flags(), Mode::empty())?)
}

/// Open the directory `name` inside `dir`, never through a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, name, dir_flags(), Mode::empty())?)
}

/// The normal components of a relative path (`.` and empty ones dropped);
/// `None` if it has `..` or is absolute.
pub fn components(rel: &Path) -> Option<Vec<&OsStr>> {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Open the directory `rel` beneath `root`, never following a symlink nor
/// leaving `root`'s file system: `openat2` where the kernel has it, one
/// component at a time otherwise.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let comps = components(rel).ok_or_else(|| io::Error::from(Errno::XDEV))?;
    if comps.is_empty() {
        return Ok(rfs::openat(root, ".", dir_flags(), Mode::empty())?);
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
    match rfs::openat2(root, rel, dir_flags(), Mode::empty(), resolve) {
        Err(Errno::NOSYS) | Err(Errno::PERM) => {}
        // ELOOP: a symlink on the way, which is what we refuse anyway.
        r => return Ok(r?),
    }
    let mut cur = open_dir_at(root, comps[0])?;
    for c in &comps[1..] {
        cur = open_dir_at(cur.as_fd(), c)?;
    }
    Ok(cur)
}

/// `/proc/self/fd/<dir>/<name>`: a path to `name` inside the open `dir`
/// for calls without an `*at` form; used with the `l*` variants, the last
/// name is not followed.
pub fn proc_path(dir: &impl AsRawFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    // `.` too: the magic link itself would be left unfollowed by `l*`.
    p.push(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    });
    p
}

/// The regular file `rel` beneath `root`, read whole without following a
/// symlink anywhere on the way; `None` if it is missing or not a regular
/// file (a node may have planted a link to a host file there).
pub fn read_beneath(root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(None);
    };
    let found = open_dir(root)
        .and_then(|r| open_dir_beneath(r.as_fd(), parent))
        .and_then(|d| {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
            Ok(rfs::openat(d, name, flags, Mode::empty())?)
        });
    let fd = match found {
        Ok(fd) => fd,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Ok(None);
    }
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v)?;
    Ok(Some(v))
}
