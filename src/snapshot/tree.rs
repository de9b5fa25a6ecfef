//! Walking an image tree, and recording every field a snapshot keeps.
//!
//! [`walk`] is the one definition of what a snapshot contains: the tree in
//! sorted depth-first order (a directory before its contents), the mount
//! point directories `proc sys dev run tmp` at the top without their
//! contents, any directory on another file system (something mounted in the
//! image) as an empty directory, and no sockets. [`scan_tree`] turns that
//! into [`EntryMeta`] records, the same records a snapshot's manifest holds
//! and [`super::archive_meta`] rebuilds from an archive, so `diff`, `verify`
//! and the tests compare like with like.
//!
//! The tree is live and written by nodes, so nothing here follows a path
//! string that a node could redirect ([`super::at`]): the walk opens each
//! directory relative to its parent with `O_NOFOLLOW|O_DIRECTORY` and
//! checks it is the inode it listed; [`Confined`] re-opens each listed
//! entry below the image root the same way (its parent by `openat2`
//! beneath the root, the entry by name with no-follow flags) and checks
//! its type and inode again. An entry that changed in between (a directory
//! swapped for a symlink, a file replaced) is skipped with a note naming
//! it, never followed. The checks cost an `openat` per directory and an
//! `lstat` per entry beyond what the walk did before.

use super::at::{self, open_dir_at, proc_path};
use super::tar::Kind;
use anyhow::{Context, Result};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Top-level directories kept as empty mount points.
pub const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "run", "tmp"];

/// Every field of one tree entry that a snapshot must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Regular files only; 0 otherwise.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device numbers (major, minor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// xattr name to hex value, ACLs included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// For a file with other hard links in the tree: the first path of the
    /// group, in sorted order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_group: Option<String>,
}

/// One entry found by [`walk`].
#[derive(Debug)]
pub struct Walked {
    /// Relative to the root; empty for the root.
    pub rel: PathBuf,
    pub md: Metadata,
}

/// What [`walk`] found and what it left out.
#[derive(Debug, Default)]
pub struct WalkResult {
    pub entries: Vec<Walked>,
    /// Human notes on skipped things (sockets, mounts, entries that
    /// changed while being read).
    pub notes: Vec<String>,
}

/// `/rel` for notes.
fn slash(rel: &Path) -> String {
    format!("/{}", rel.display())
}

fn changed_note(rel: &Path) -> String {
    format!(
        "skipped {}: it changed while being read (replaced, or a directory swapped \
         for a symlink); nothing was followed",
        slash(rel)
    )
}

/// Walk `root` by the snapshot's rules.
pub fn walk(root: &Path) -> Result<WalkResult> {
    let fd = at::open_dir(root).with_context(|| format!("opening {}", root.display()))?;
    let md = fs::symlink_metadata(proc_path(&fd, OsStr::new(".")))
        .with_context(|| format!("reading {}", root.display()))?;
    let dev = md.dev();
    let mut res = WalkResult::default();
    res.entries.push(Walked {
        rel: PathBuf::new(),
        md,
    });
    walk_dir(&fd, root, Path::new(""), dev, &mut res)?;
    Ok(res)
}

fn same_inode(st: &rfs::Stat, md: &Metadata) -> bool {
    st.st_dev == md.dev() && st.st_ino == md.ino() && st.st_mode & 0o170000 == md.mode() & 0o170000
}

fn walk_dir(dir: &OwnedFd, root: &Path, rel: &Path, dev: u64, res: &mut WalkResult) -> Result<()> {
    let ctx = || format!("reading directory {}", root.join(rel).display());
    let mut names: Vec<OsString> = Vec::new();
    for e in rfs::Dir::read_from(dir).with_context(ctx)? {
        let e = e.with_context(ctx)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let r = rel.join(&name);
        // lstat through the parent's fd: the last name is not followed.
        let md = match fs::symlink_metadata(proc_path(dir, &name)) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                res.notes.push(changed_note(&r));
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", root.join(&r).display()));
            }
        };
        let ft = md.file_type();
        if ft.is_socket() {
            res.notes.push(format!(
                "skipped socket {} (sockets cannot be archived)",
                slash(&r)
            ));
            continue;
        }
        let is_dir = ft.is_dir();
        let other_fs = is_dir && md.dev() != dev;
        let mount_point = is_dir
            && rel.as_os_str().is_empty()
            && MOUNT_POINTS.iter().any(|m| OsStr::new(m) == name);
        if !is_dir || other_fs || mount_point {
            res.entries.push(Walked { rel: r.clone(), md });
            if other_fs {
                res.notes.push(format!(
                    "{} is a mount point; kept as an empty directory",
                    slash(&r)
                ));
            }
            continue;
        }
        // Descend only into the very directory that was listed.
        let sub = match open_dir_at(dir.as_fd(), &name) {
            Ok(fd) => fd,
            Err(_) => {
                res.notes.push(changed_note(&r));
                continue;
            }
        };
        if !rfs::fstat(&sub).is_ok_and(|st| same_inode(&st, &md)) {
            res.notes.push(changed_note(&r));
            continue;
        }
        res.entries.push(Walked { rel: r.clone(), md });
        walk_dir(&sub, root, &r, dev, res)?;
    }
    Ok(())
}

/// Re-opens walked entries beneath the image root, never through a
/// symlink, and checks each is still the inode that was listed.
#[derive(Debug)]
pub struct Confined {
    root: Rc<OwnedFd>,
    /// The last parent opened: the walk is sorted, so siblings share it.
    parent: Option<(PathBuf, Rc<OwnedFd>)>,
}

/// One walked entry, re-opened: its parent directory and its name.
#[derive(Debug)]
pub struct Opened<'a> {
    dir: Rc<OwnedFd>,
    name: OsString,
    pub w: &'a Walked,
}

impl Confined {
    pub fn new(root: &Path) -> Result<Self> {
        let fd = at::open_dir(root).with_context(|| format!("opening {}", root.display()))?;
        Ok(Self {
            root: Rc::new(fd),
            parent: None,
        })
    }

    /// The entry, or `None` if it is no longer what the walk listed.
    pub fn open<'a>(&mut self, w: &'a Walked) -> Result<Option<Opened<'a>>> {
        let (dir, name) = match (w.rel.parent(), w.rel.file_name()) {
            (Some(p), Some(n)) => {
                let dir = match &self.parent {
                    Some((q, fd)) if q == p => fd.clone(),
                    _ => match at::open_dir_beneath(self.root.as_fd(), p) {
                        Ok(fd) => {
                            let fd = Rc::new(fd);
                            self.parent = Some((p.to_path_buf(), fd.clone()));
                            fd
                        }
                        Err(_) => return Ok(None),
                    },
                };
                (dir, n.to_owned())
            }
            _ => (self.root.clone(), OsString::from(".")),
        };
        match rfs::statat(&*dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if same_inode(&st, &w.md) => Ok(Some(Opened { dir, name, w })),
            _ => Ok(None),
        }
    }
}

impl Opened<'_> {
    /// `/proc/self/fd/<parent>/<name>`, for the `l*` calls.
    fn proc(&self) -> PathBuf {
        proc_path(&*self.dir, &self.name)
    }

    /// Every xattr, not following a symlink, sorted by name; `None` when
    /// the name vanished after it was checked (a node renamed it away): the
    /// entry has changed, as [`Confined::open`] would have said a moment
    /// later.
    pub fn xattrs(&self) -> Result<Option<Xattrs>> {
        match read_xattrs(&self.proc()) {
            Ok(x) => Ok(Some(x)),
            Err(e) if vanished(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("xattrs of {}", slash(&self.w.rel))),
        }
    }

    /// A symlink's target; `None` when the name no longer holds a symlink
    /// (removed, or swapped for a directory or file by a node: readlinkat
    /// then says `EINVAL`). Either way the entry changed since it was
    /// listed.
    pub fn read_link(&self) -> Result<Option<Vec<u8>>> {
        match rfs::readlinkat(&*self.dir, &self.name, Vec::new()) {
            Ok(t) => Ok(Some(t.into_bytes())),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading link {}", slash(&self.w.rel))),
        }
    }

    /// A regular file opened for reading (no atime update where
    /// permitted); `None` if the name no longer holds the listed file.
    /// The name is pinned with `O_PATH|O_NOFOLLOW` and checked before it
    /// is opened for reading through that fd, so a fifo or device swapped
    /// in is never opened (which could block or have side effects).
    pub fn open_file(&self) -> Result<Option<File>> {
        let ctx = || format!("opening {}", slash(&self.w.rel));
        let pin = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let pinned = match rfs::openat(&*self.dir, &self.name, pin, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e).with_context(ctx),
        };
        let st = rfs::fstat(&pinned).with_context(ctx)?;
        if !self.w.md.is_file() || !same_inode(&st, &self.w.md) {
            return Ok(None);
        }
        // The magic link names the pinned inode itself.
        let again = PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rfs::open(&again, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => rfs::open(&again, flags, Mode::empty()),
            r => r,
        }
        .with_context(ctx)?;
        Ok(Some(File::from(fd)))
    }

    /// The note for an entry skipped because it changed.
    pub fn changed(&self) -> String {
        changed_note(&self.w.rel)
    }
}

/// The note for a walked entry that could not be re-opened as listed.
pub fn changed(w: &Walked) -> String {
    changed_note(&w.rel)
}

/// Whether an error means the name no longer holds what was checked: it
/// was removed, or a directory on the way was swapped for something else.
pub(crate) fn vanished(e: &anyhow::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        e.root_cause().downcast_ref::<Errno>(),
        Some(&Errno::NOENT | &Errno::NOTDIR | &Errno::LOOP)
    )
}

/// Extended attributes as `(name, value)` pairs, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every xattr of `path` (not following a final symlink), sorted by name.
/// The `xattr` crate does the listing and the buffer sizing; its errors
/// are turned back into errnos so [`vanished`] recognises a file that went
/// away under the walk.
pub fn read_xattrs(path: &Path) -> Result<Xattrs> {
    use rustix::io::Errno;
    let errno = |e: std::io::Error| Errno::from_io_error(&e).unwrap_or(Errno::IO);
    let names = match xattr::list(path).map_err(errno) {
        Ok(names) => names,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", path.display())),
    };
    let mut out = Vec::new();
    for name in names {
        let value = xattr::get(path, &name).map_err(errno).with_context(|| {
            format!(
                "reading xattr {} of {}",
                name.to_string_lossy(),
                path.display()
            )
        })?;
        // None: removed between the listing and the read.
        if let Some(v) = value {
            out.push((std::os::unix::ffi::OsStringExt::into_vec(name), v));
        }
    }
    out.sort();
    Ok(out)
}

/// The tar kind of a file type (sockets have none).
pub fn kind_of(md: &Metadata) -> Option<Kind> {
    let ft = md.file_type();
    Some(if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        return None;
    })
}

/// Device numbers of a device node.
pub fn dev_numbers(md: &Metadata) -> (u32, u32) {
    let r = md.rdev();
    (libc::major(r), libc::minor(r))
}

/// Map key for a relative path: `.` for the root.
pub fn key_of(rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    }
}

/// Hex-encode xattrs for [`EntryMeta`].
pub fn xattr_map(x: &[(Vec<u8>, Vec<u8>)]) -> BTreeMap<String, String> {
    x.iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), hex::encode(v)))
        .collect()
}

/// Metadata of one re-opened entry without its content hash, and a
/// symlink's target as raw bytes (empty for other kinds; the manifest's
/// `target` is its text form, from the same read); `xattrs` as read by
/// [`Opened::xattrs`]. `None` when the entry changed since it was listed.
pub fn entry_meta(
    o: &Opened<'_>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<Option<(EntryMeta, Vec<u8>)>> {
    let md = &o.w.md;
    let Some(kind) = kind_of(md) else {
        return Ok(None);
    };
    let link = if kind == Kind::Symlink {
        match o.read_link()? {
            Some(t) => t,
            // Removed or replaced since it was listed: leave it out.
            None => return Ok(None),
        }
    } else {
        Vec::new()
    };
    let target = (kind == Kind::Symlink).then(|| String::from_utf8_lossy(&link).into_owned());
    let meta = EntryMeta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        size: if kind == Kind::File { md.len() } else { 0 },
        sha256: None,
        target,
        rdev: matches!(kind, Kind::Char | Kind::Block).then(|| dev_numbers(md)),
        xattrs: xattr_map(xattrs),
        link_group: None,
    };
    Ok(Some((meta, link)))
}

/// Every entry under `root` that a snapshot would hold, with content
/// hashes, xattrs and hardlink groups. Entries that change while being
/// read are left out.
pub fn scan_tree(root: &Path) -> Result<BTreeMap<PathBuf, EntryMeta>> {
    let walked = walk(root)?;
    let mut confined = Confined::new(root)?;
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for w in &walked.entries {
        let Some(o) = confined.open(w)? else {
            continue;
        };
        let Some(x) = o.xattrs()? else { continue };
        let Some((mut m, _)) = entry_meta(&o, &x)? else {
            continue;
        };
        if m.kind == Kind::File {
            let Some(f) = o.open_file()? else { continue };
            m.sha256 = Some(
                crate::fsutil::sha256_reader(f)
                    .with_context(|| format!("hashing {}", root.join(&w.rel).display()))?,
            );
        }
        if m.kind != Kind::Dir && w.md.nlink() > 1 {
            inodes
                .entry((w.md.dev(), w.md.ino()))
                .or_default()
                .push(key_of(&w.rel));
        }
        out.insert(key_of(&w.rel), m);
    }
    set_link_groups(&mut out, inodes.into_values());
    Ok(out)
}

/// Mark each group of two or more paths with its smallest path.
pub fn set_link_groups(
    map: &mut BTreeMap<PathBuf, EntryMeta>,
    groups: impl IntoIterator<Item = Vec<PathBuf>>,
) {
    for g in groups {
        if g.len() < 2 {
            continue;
        }
        let first = g
            .iter()
            .min()
            .expect("non-empty")
            .to_string_lossy()
            .into_owned();
        for p in g {
            if let Some(m) = map.get_mut(&p) {
                m.link_group = Some(first.clone());
            }
        }
    }
}

/// One path whose entry differs, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    /// The fields that differ, e.g. `mode 0644 -> 0755`.
    pub fields: Vec<String>,
}

/// What changed between a snapshot (`old`) and a tree (`new`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Type, content, size, link target or device numbers changed.
    pub modified: Vec<Change>,
    /// Only mode, owner, mtime, xattrs or hardlink grouping changed.
    pub metadata: Vec<Change>,
}

impl TreeDiff {
    /// One line per change, as `nfsroot diff` prints them.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for p in &self.added {
            s += &format!("added     {p}\n");
        }
        for p in &self.removed {
            s += &format!("removed   {p}\n");
        }
        for (what, list) in [("modified", &self.modified), ("metadata", &self.metadata)] {
            for c in list {
                s += &format!("{what}  {}  ({})\n", c.path, c.fields.join("; "));
            }
        }
        if self.is_empty() {
            s += "no changes since the snapshot\n";
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.modified.is_empty()
            && self.metadata.is_empty()
    }
}

fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "none".into(),
    }
}

/// Compare two scans field by field.
pub fn diff_maps(
    old: &BTreeMap<PathBuf, EntryMeta>,
    new: &BTreeMap<PathBuf, EntryMeta>,
) -> TreeDiff {
    let mut d = TreeDiff::default();
    let name = |p: &Path| {
        if p == Path::new(".") {
            "/".to_string()
        } else {
            format!("/{}", p.display())
        }
    };
    for (p, o) in old {
        let Some(n) = new.get(p) else {
            d.removed.push(name(p));
            continue;
        };
        let mut content = Vec::new();
        let mut meta = Vec::new();
        if o.kind != n.kind {
            content.push(format!("type {:?} -> {:?}", o.kind, n.kind));
        } else {
            if o.size != n.size {
                content.push(format!("size {} -> {}", o.size, n.size));
            }
            if o.sha256 != n.sha256 {
                content.push("content".into());
            }
            if o.target != n.target {
                content.push(format!("target {} -> {}", show(&o.target), show(&n.target)));
            }
            if o.rdev != n.rdev {
                content.push(format!("device {} -> {}", show(&o.rdev), show(&n.rdev)));
            }
        }
        if o.mode != n.mode {
            meta.push(format!("mode {:04o} -> {:04o}", o.mode, n.mode));
        }
        if (o.uid, o.gid) != (n.uid, n.gid) {
            meta.push(format!("owner {}:{} -> {}:{}", o.uid, o.gid, n.uid, n.gid));
        }
        if (o.mtime, o.mtime_nsec) != (n.mtime, n.mtime_nsec) {
            meta.push("mtime".into());
        }
        if o.xattrs != n.xattrs {
            let keys: std::collections::BTreeSet<_> =
                o.xattrs.keys().chain(n.xattrs.keys()).collect();
            for k in keys {
                if o.xattrs.get(k) != n.xattrs.get(k) {
                    meta.push(format!("xattr {k}"));
                }
            }
        }
        if o.link_group != n.link_group {
            meta.push(format!(
                "hardlinks {} -> {}",
                show(&o.link_group),
                show(&n.link_group)
            ));
        }
        if !content.is_empty() {
            content.extend(meta);
            d.modified.push(Change {
                path: name(p),
                fields: content,
            });
        } else if !meta.is_empty() {
            d.metadata.push(Change {
                path: name(p),
                fields: meta,
            });
        }
    }
    for p in new.keys() {
        if !old.contains_key(p) {
            d.added.push(name(p));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink that a node replaces by a directory (or removes) between
    /// the check and the read is an entry that changed, not an error that
    /// stops the snapshot (readlinkat says `EINVAL` or `ENOENT`).
    #[test]
    fn a_link_replaced_after_the_check_has_changed() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("swap")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("gone")).unwrap();
        let walked = walk(d.path()).unwrap();
        let mut confined = Confined::new(d.path()).unwrap();
        let find = |n: &str| {
            walked
                .entries
                .iter()
                .find(|w| w.rel == Path::new(n))
                .unwrap()
        };
        let (swap, gone) = (find("swap"), find("gone"));
        let swap = confined.open(swap).unwrap().unwrap();
        assert_eq!(swap.read_link().unwrap().as_deref(), Some(&b"/etc"[..]));
        let gone = confined.open(gone).unwrap().unwrap();
        fs::remove_file(d.path().join("swap")).unwrap();
        fs::create_dir(d.path().join("swap")).unwrap();
        fs::remove_file(d.path().join("gone")).unwrap();
        assert_eq!(swap.read_link().unwrap(), None);
        assert!(entry_meta(&swap, &[]).unwrap().is_none());
        assert_eq!(gone.read_link().unwrap(), None);
    }
}
