//! The one confined view of an image tree: every read and write that the
//! host side makes inside `<base-dir>/<image>` goes through [`ImageRoot`].
//!
//! The tree is untrusted input. Nodes of a read-write image, restored
//! archives and every package apt installs write it, and nfsroot runs as
//! root on the master. So a path inside an image is never handed to the
//! host's own path resolution: [`ImageRoot`] resolves it with the `pathrs`
//! crate (`openat2` with `RESOLVE_IN_ROOT`, falling back to a checked
//! user-space resolver on old kernels). Symlinks, absolute or relative,
//! resolve as the node would see them, inside the image, and `..` stops at
//! its root. On top of that:
//!
//! - files opened for reading must be regular files: a device node, FIFO or
//!   socket at a kernel's or module's name is refused (opening one could
//!   block, or read host memory through a planted `/dev/mem` twin);
//! - writes go to a temp file created `O_CREAT|O_EXCL|O_NOFOLLOW` under an
//!   unpredictable name in the already-resolved parent directory, then
//!   `renameat` over the final name in that same directory: a symlink at the
//!   final name is replaced, never written through;
//! - nothing here executes anything from the image; binaries of an image
//!   only ever run inside its chroot ([`crate::exec::chroot_cmd`]).
//!
//! `pathrs` is used rather than hand-written `openat2` calls: it is the
//! maintained library runc's and other container runtimes' authors wrote
//! for exactly this job, and it keeps the fallback for kernels without
//! `openat2`. The few directory and `*at` calls it does not wrap come from
//! `rustix`, which `pathrs` already depends on.

use anyhow::{Context, Result, bail};
use pathrs::Root;
use pathrs::flags::OpenFlags;
use rustix::fs::{Mode, OFlags};
use std::ffi::OsString;
use std::fs::{File, Metadata, Permissions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::fsutil::temp_name;

/// One image tree, opened once; every path below is resolved inside it.
#[derive(Debug)]
pub struct ImageRoot {
    root: Root,
    path: PathBuf,
}

/// One directory entry: its name and what it is (not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
}

/// The kinds of inode an image may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// `rel` as a path relative to the image root: leading `/` dropped, so
/// `/etc/hosts` and `etc/hosts` name the same file.
fn relative(rel: &Path) -> PathBuf {
    rel.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect()
}

/// Whether an error means "no such file" (or a component is not a dir).
fn is_missing(e: &pathrs::error::Error) -> bool {
    matches!(
        e.kind(),
        pathrs::error::ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))
    )
}

impl ImageRoot {
    /// Open the image at `path` (a host path from the layout, trusted).
    pub fn open(path: &Path) -> Result<Self> {
        let root = Root::open(path).with_context(|| format!("opening image {}", path.display()))?;
        Ok(Self {
            root,
            path: path.to_path_buf(),
        })
    }

    /// The image's host path, for messages and for chroot.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as the host path it names, for messages only (never opened).
    pub fn show(&self, rel: impl AsRef<Path>) -> String {
        self.path.join(relative(rel.as_ref())).display().to_string()
    }

    fn resolve(&self, rel: &Path, follow: bool) -> Result<Option<pathrs::Handle>> {
        // An empty path is the root itself (pathrs refuses "").
        let r = match relative(rel) {
            r if r.as_os_str().is_empty() => PathBuf::from("."),
            r => r,
        };
        let res = if follow {
            self.root.resolve(&r)
        } else {
            self.root.resolve_nofollow(&r)
        };
        match res {
            Ok(h) => Ok(Some(h)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("resolving {}", self.show(rel))),
        }
    }

    fn stat(&self, rel: &Path, follow: bool) -> Result<Option<Metadata>> {
        let Some(h) = self.resolve(rel, follow)? else {
            return Ok(None);
        };
        let f = File::from(OwnedFd::from(h));
        let md = f
            .metadata()
            .with_context(|| format!("reading metadata of {}", self.show(rel)))?;
        Ok(Some(md))
    }

    /// Metadata of `rel`, symlinks followed inside the image; `None` when
    /// it does not exist (or a symlink on the way dangles).
    pub fn metadata(&self, rel: impl AsRef<Path>) -> Result<Option<Metadata>> {
        self.stat(rel.as_ref(), true)
    }

    /// Metadata of `rel` itself (a final symlink is not followed).
    pub fn symlink_metadata(&self, rel: impl AsRef<Path>) -> Result<Option<Metadata>> {
        self.stat(rel.as_ref(), false)
    }

    /// Whether `rel` is a directory (following symlinks inside the image).
    pub fn is_dir(&self, rel: impl AsRef<Path>) -> bool {
        matches!(self.metadata(rel), Ok(Some(m)) if m.is_dir())
    }

    /// Whether `rel` is a regular file (following symlinks inside the image).
    pub fn is_file(&self, rel: impl AsRef<Path>) -> bool {
        matches!(self.metadata(rel), Ok(Some(m)) if m.is_file())
    }

    /// Open a regular file for reading; `None` when it does not exist.
    /// Anything but a regular file is refused, naming the path.
    pub fn open_file_opt(&self, rel: impl AsRef<Path>) -> Result<Option<File>> {
        let rel = rel.as_ref();
        let Some(h) = self.resolve(rel, true)? else {
            return Ok(None);
        };
        let md = File::from(OwnedFd::from(
            h.try_clone()
                .with_context(|| format!("opening {}", self.show(rel)))?,
        ))
        .metadata()
        .with_context(|| format!("reading metadata of {}", self.show(rel)))?;
        if !md.is_file() {
            bail!(
                "{} is not a regular file ({}); refusing to read it",
                self.show(rel),
                kind_word(&md)
            );
        }
        let f = h
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC | OpenFlags::O_NOCTTY)
            .with_context(|| format!("opening {}", self.show(rel)))?;
        Ok(Some(f))
    }

    /// Open a regular file for reading; a missing file is an error.
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File> {
        let rel = rel.as_ref();
        self.open_file_opt(rel)?
            .with_context(|| format!("{} does not exist", self.show(rel)))
    }

    /// The bytes of a regular file; `None` when it does not exist.
    pub fn read_opt(&self, rel: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let rel = rel.as_ref();
        let Some(mut f) = self.open_file_opt(rel)? else {
            return Ok(None);
        };
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .with_context(|| format!("reading {}", self.show(rel)))?;
        Ok(Some(v))
    }

    /// The bytes of a regular file; a missing file is an error.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<Vec<u8>> {
        let rel = rel.as_ref();
        self.read_opt(rel)?
            .with_context(|| format!("{} does not exist", self.show(rel)))
    }

    /// A text file (lossy UTF-8); `None` when it does not exist.
    pub fn read_to_string_opt(&self, rel: impl AsRef<Path>) -> Result<Option<String>> {
        Ok(self
            .read_opt(rel)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The target of the symlink `rel`; `None` when `rel` is missing or
    /// not a symlink. The target is data, never a host path.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> Result<Option<PathBuf>> {
        let rel = rel.as_ref();
        match self.symlink_metadata(rel)? {
            Some(m) if m.file_type().is_symlink() => {}
            _ => return Ok(None),
        }
        let t = self
            .root
            .readlink(relative(rel))
            .with_context(|| format!("reading link {}", self.show(rel)))?;
        Ok(Some(t))
    }

    /// The entries of directory `rel` (resolved inside the image), sorted
    /// by name; `None` when it does not exist.
    pub fn read_dir(&self, rel: impl AsRef<Path>) -> Result<Option<Vec<Entry>>> {
        let rel = rel.as_ref();
        let Some(h) = self.resolve(rel, true)? else {
            return Ok(None);
        };
        let fd = h
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY | OpenFlags::O_CLOEXEC)
            .with_context(|| format!("opening directory {}", self.show(rel)))?;
        let mut dir = rustix::fs::Dir::read_from(&fd)
            .with_context(|| format!("reading directory {}", self.show(rel)))?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e.with_context(|| format!("reading directory {}", self.show(rel)))?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match e.file_type() {
                rustix::fs::FileType::RegularFile => Kind::File,
                rustix::fs::FileType::Directory => Kind::Dir,
                rustix::fs::FileType::Symlink => Kind::Symlink,
                rustix::fs::FileType::Unknown => {
                    let st = rustix::fs::statat(
                        &fd,
                        e.file_name(),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .with_context(|| format!("reading metadata in {}", self.show(rel)))?;
                    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                        rustix::fs::FileType::RegularFile => Kind::File,
                        rustix::fs::FileType::Directory => Kind::Dir,
                        rustix::fs::FileType::Symlink => Kind::Symlink,
                        _ => Kind::Other,
                    }
                }
                _ => Kind::Other,
            };
            out.push(Entry {
                name: std::ffi::OsStr::from_bytes(name).to_os_string(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    /// Create directory `rel` and its parents (inside the image) with
    /// `mode` for the ones it creates; returns the directory's handle.
    fn mkdir_all(&self, rel: &Path, mode: u32) -> Result<pathrs::Handle> {
        let r = relative(rel);
        if r.as_os_str().is_empty() {
            return self
                .root
                .resolve(".")
                .with_context(|| format!("opening image {}", self.path.display()));
        }
        self.root
            .mkdir_all(&r, &Permissions::from_mode(mode))
            .with_context(|| format!("creating directory {}", self.show(rel)))
    }

    /// Create directory `rel` (and parents) unless it exists; returns
    /// whether it created the last one. The mode applies to new ones.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>, mode: u32) -> Result<bool> {
        let rel = rel.as_ref();
        if self.is_dir(rel) {
            return Ok(false);
        }
        self.mkdir_all(rel, mode)?;
        Ok(true)
    }

    /// The parent directory (created if missing) and file name of `rel`.
    fn parent_and_name(&self, rel: &Path) -> Result<(pathrs::Handle, OsString)> {
        let r = relative(rel);
        let name = match r.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => bail!("{} names no file", self.show(rel)),
        };
        let parent = r.parent().unwrap_or(Path::new(""));
        Ok((self.mkdir_all(parent, 0o755)?, name))
    }

    /// Write `data` at `rel` atomically with `mode` (owner root): temp file
    /// in the resolved parent, fsync, rename over the name, fsync the
    /// directory. A symlink at `rel` is replaced, not followed.
    pub fn write(&self, rel: impl AsRef<Path>, data: &[u8], mode: u32) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_and_name(rel)?;
        let tmp = temp_name(&name);
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_os_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .with_context(|| format!("creating a temp file for {}", self.show(rel)))?;
        let mut f = File::from(fd);
        let res = (|| -> Result<()> {
            f.write_all(data)?;
            // umask may have narrowed the mode; set it exactly.
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
            f.sync_all()?;
            rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str())?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), rustix::fs::AtFlags::empty());
            return Err(e).with_context(|| format!("writing {}", self.show(rel)));
        }
        self.sync_dir(&dir, rel)
    }

    fn sync_dir(&self, dir: &pathrs::Handle, rel: &Path) -> Result<()> {
        let d = dir
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY | OpenFlags::O_CLOEXEC)
            .with_context(|| format!("opening the directory of {}", self.show(rel)))?;
        d.sync_all()
            .with_context(|| format!("syncing the directory of {}", self.show(rel)))
    }

    /// Make `rel` a symlink to `target` (replacing what is there by rename).
    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_and_name(rel)?;
        let tmp = temp_name(&name);
        rustix::fs::symlinkat(target.as_ref(), &dir, tmp.as_os_str())
            .with_context(|| format!("creating symlink {}", self.show(rel)))?;
        if let Err(e) = rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str()) {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), rustix::fs::AtFlags::empty());
            return Err(e).with_context(|| format!("replacing {}", self.show(rel)));
        }
        self.sync_dir(&dir, rel)
    }

    /// Remove the file or symlink `rel` (not a directory); whether it was
    /// there.
    pub fn remove_file(&self, rel: impl AsRef<Path>) -> Result<bool> {
        let rel = rel.as_ref();
        match self.root.remove_file(relative(rel)) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.show(rel))),
        }
    }

    /// Set the permission bits of `rel` itself (a symlink is refused).
    pub fn set_mode(&self, rel: impl AsRef<Path>, mode: u32) -> Result<()> {
        let rel = rel.as_ref();
        let f = self.open_nofollow(rel)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
            .with_context(|| format!("setting mode of {}", self.show(rel)))
    }

    /// Set the owner of `rel` itself (a symlink is refused).
    pub fn chown(&self, rel: impl AsRef<Path>, uid: u32, gid: u32) -> Result<()> {
        let rel = rel.as_ref();
        let f = self.open_nofollow(rel)?;
        rustix::fs::fchown(
            &f,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .with_context(|| format!("changing owner of {}", self.show(rel)))
    }

    /// A file or directory opened for metadata changes, never a symlink.
    fn open_nofollow(&self, rel: &Path) -> Result<File> {
        let h = self
            .resolve(rel, false)?
            .with_context(|| format!("{} does not exist", self.show(rel)))?;
        let f = File::from(OwnedFd::from(h));
        let md = f
            .metadata()
            .with_context(|| format!("reading metadata of {}", self.show(rel)))?;
        if !(md.is_file() || md.is_dir()) {
            bail!(
                "{} is a {}; refusing to change it",
                self.show(rel),
                kind_word(&md)
            );
        }
        // fchmod/fchown need a real descriptor, not O_PATH: reopen it.
        let flags = if md.is_dir() {
            OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY
        } else {
            OpenFlags::O_RDONLY
        };
        pathrs::Handle::from(OwnedFd::from(f))
            .reopen(flags | OpenFlags::O_CLOEXEC | OpenFlags::O_NOCTTY)
            .with_context(|| format!("opening {}", self.show(rel)))
    }
}

/// What a non-regular inode is, in words.
pub fn kind_word(md: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake image with an outside secret and links that try to reach it.
    fn hostile() -> (tempfile::TempDir, ImageRoot, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("img");
        let outside = d.path().join("secret");
        std::fs::write(&outside, "SECRET").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("etc/secret"), "inside").unwrap();
        symlink("/usr/lib", root.join("lib")).unwrap();
        symlink(&outside, root.join("etc/abs")).unwrap();
        symlink("../../secret", root.join("etc/rel")).unwrap();
        symlink(d.path(), root.join("up")).unwrap();
        let img = ImageRoot::open(&root).unwrap();
        (d, img, outside)
    }

    #[test]
    fn absolute_and_relative_links_stay_inside() {
        let (_d, img, _) = hostile();
        // /tmp/.../secret resolves inside the image, where it is missing.
        assert!(img.read_opt("etc/abs").unwrap().is_none());
        // ../../secret stops at the image root: /secret, missing.
        assert!(img.read_opt("etc/rel").unwrap().is_none());
        std::fs::write(img.path().join("secret"), "image's own").unwrap();
        assert_eq!(img.read("etc/rel").unwrap(), b"image's own");
        assert_eq!(img.read("/etc/secret").unwrap(), b"inside");
    }

    #[test]
    fn writes_replace_links_and_never_follow_them() {
        let (_d, img, outside) = hostile();
        img.write("etc/abs", b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"SECRET");
        assert_eq!(img.read("etc/abs").unwrap(), b"new");
        assert!(img.symlink_metadata("etc/abs").unwrap().unwrap().is_file());
        // A directory link that dangles inside the image is refused,
        // naming the path; nothing appears outside.
        let e = img.write("up/x/f", b"1", 0o600).unwrap_err();
        assert!(format!("{e:#}").contains("img/up/x"), "{e:#}");
        assert!(!outside.parent().unwrap().join("x").exists());
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        let (_d, img, _) = hostile();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            img.path().join("etc/fifo").as_path(),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = img.read("etc/fifo").unwrap_err();
        assert!(
            format!("{e:#}").contains("not a regular file (fifo)"),
            "{e:#}"
        );
    }

    #[test]
    fn lists_and_links() {
        let (_d, img, outside) = hostile();
        let names: Vec<_> = img
            .read_dir("etc")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.into_string().unwrap(), e.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("abs".to_string(), Kind::Symlink),
                ("rel".to_string(), Kind::Symlink),
                ("secret".to_string(), Kind::File)
            ]
        );
        assert_eq!(img.read_link("etc/abs").unwrap().unwrap(), outside);
        assert!(img.read_link("etc/secret").unwrap().is_none());
        assert!(img.is_dir("lib"));
        img.symlink("etc/l", "secret").unwrap();
        assert_eq!(img.read("etc/l").unwrap(), b"inside");
        assert!(img.remove_file("etc/l").unwrap());
        assert!(!img.remove_file("etc/l").unwrap());
    }

    #[test]
    fn mode_and_owner_changes_refuse_links() {
        let (_d, img, outside) = hostile();
        let e = img.set_mode("etc/abs", 0o777).unwrap_err();
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o777, 0o644);
        img.set_mode("etc/secret", 0o600).unwrap();
        assert_eq!(
            img.metadata("etc/secret").unwrap().unwrap().mode() & 0o777,
            0o600
        );
    }
}
