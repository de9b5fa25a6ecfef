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

use super::tar::Kind;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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
    /// Human notes on skipped things (sockets, mounts).
    pub notes: Vec<String>,
}

/// Walk `root` by the snapshot's rules.
pub fn walk(root: &Path) -> Result<WalkResult> {
    let md = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    let dev = md.dev();
    let mut res = WalkResult::default();
    res.entries.push(Walked {
        rel: PathBuf::new(),
        md,
    });
    walk_dir(root, Path::new(""), dev, &mut res)?;
    Ok(res)
}

fn walk_dir(root: &Path, rel: &Path, dev: u64, res: &mut WalkResult) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let r = rel.join(&name);
        let p = root.join(&r);
        let md = fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        let ft = md.file_type();
        if ft.is_socket() {
            res.notes.push(format!(
                "skipped socket /{} (sockets cannot be archived)",
                r.display()
            ));
            continue;
        }
        let is_dir = ft.is_dir();
        let other_fs = is_dir && md.dev() != dev;
        let mount_point = is_dir
            && rel.as_os_str().is_empty()
            && MOUNT_POINTS.iter().any(|m| OsStr::new(m) == name);
        res.entries.push(Walked { rel: r.clone(), md });
        if other_fs {
            res.notes.push(format!(
                "/{} is a mount point; kept as an empty directory",
                r.display()
            ));
        } else if is_dir && !mount_point {
            walk_dir(root, &r, dev, res)?;
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", p.display()))
}

/// Every xattr of `path` (not following symlinks), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let ctx = || format!("listing xattrs of {}", path.display());
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: c is a valid path; names is writable for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e).with_context(ctx),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("split on NUL");
        let mut val = vec![0u8; 256];
        let n = loop {
            // SAFETY: valid C strings; val is writable for its length.
            let n = unsafe {
                libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len())
            };
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => val.resize(val.len() * 16, 0),
                Some(libc::ENODATA) => break usize::MAX,
                _ => {
                    return Err(e).with_context(|| {
                        format!(
                            "reading xattr {} of {}",
                            String::from_utf8_lossy(name),
                            path.display()
                        )
                    });
                }
            }
        };
        if n == usize::MAX {
            continue;
        }
        val.truncate(n);
        out.push((name.to_vec(), val));
    }
    out.sort();
    Ok(out)
}

/// Set one xattr on `path` (not following symlinks).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let c = cpath(path)?;
    let cn = CString::new(name).context("xattr name contains a NUL byte")?;
    // SAFETY: valid C strings and a readable buffer of value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "setting xattr {} on {}",
                String::from_utf8_lossy(name),
                path.display()
            )
        });
    }
    Ok(())
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

/// Metadata of one walked entry without its content hash.
pub fn entry_meta(root: &Path, w: &Walked) -> Result<Option<EntryMeta>> {
    let Some(kind) = kind_of(&w.md) else {
        return Ok(None);
    };
    let p = root.join(&w.rel);
    let target = if kind == Kind::Symlink {
        Some(
            fs::read_link(&p)
                .with_context(|| format!("reading link {}", p.display()))?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(Some(EntryMeta {
        kind,
        mode: w.md.mode() & 0o7777,
        uid: w.md.uid(),
        gid: w.md.gid(),
        mtime: w.md.mtime(),
        mtime_nsec: w.md.mtime_nsec() as u32,
        size: if kind == Kind::File { w.md.len() } else { 0 },
        sha256: None,
        target,
        rdev: matches!(kind, Kind::Char | Kind::Block).then(|| dev_numbers(&w.md)),
        xattrs: xattr_map(&read_xattrs(&p)?),
        link_group: None,
    }))
}

/// Every entry under `root` that a snapshot would hold, with content
/// hashes, xattrs and hardlink groups.
pub fn scan_tree(root: &Path) -> Result<BTreeMap<PathBuf, EntryMeta>> {
    let walked = walk(root)?;
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for w in &walked.entries {
        let Some(mut m) = entry_meta(root, w)? else {
            continue;
        };
        if m.kind == Kind::File {
            m.sha256 = Some(crate::fsutil::sha256_file(&root.join(&w.rel))?);
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
