//! Disk cost of tree versions: the bytes two versions of an image share
//! on disk. `update` clones with `cp --reflink=auto`, so on a file system
//! with shared extents (XFS made with `reflink=1`, btrfs) a new version
//! shares every file its command did not rewrite with the version it was
//! cloned from. [`shared_bytes`] walks the newer tree (one file system,
//! no symlink followed, hard links once) and, for each regular file,
//! intersects the physical extents (the `FIEMAP` ioctl, through the
//! `fiemap` crate) of the file at the same path in both trees. Both
//! trees are opened through their confined views ([`ImageRoot`]): only
//! regular files inside them are opened, and only their extent maps are
//! read. On other file systems nothing can be shared and nothing is
//! walked: the answer is `None`, "not applicable".

use crate::imagefs::ImageRoot;
use anyhow::Result;
use fiemap::{Fiemap, FiemapExtentFlags};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `statfs` magic numbers of the file systems with shared extents.
const REFLINK_FS: [i64; 2] = [
    0x5846_5342, // XFS
    0x9123_683e, // btrfs
];

/// Whether the file system holding `path` can share extents between
/// files (XFS may still have been made without `reflink=1`: then
/// nothing is shared and [`shared_bytes`] says 0).
#[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, narrower elsewhere
pub fn reflinks_possible(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| REFLINK_FS.contains(&(s.f_type as i64)))
}

/// One file's physical extents, `(start, length)`.
type Extents = Vec<(u64, u64)>;

enum Map {
    /// The file system has no FIEMAP: nothing to say for any file.
    Unsupported,
    /// Not a readable regular file at that path (or it changed).
    Missing,
    /// `(dev, ino)`, length, extents.
    Extents((u64, u64), u64, Extents),
}

/// The physical extents of regular file `rel` in `root`, with its
/// `(dev, ino)` and length. Extents whose location is unknown, pending
/// or not block aligned (inline data) are left out: their offsets name
/// no blocks.
fn extents(root: &ImageRoot, rel: &Path) -> Map {
    let Ok(Some(f)) = root.open_file_opt(rel) else {
        return Map::Missing;
    };
    let Ok(md) = f.metadata() else {
        return Map::Missing;
    };
    let vague =
        FiemapExtentFlags::UNKNOWN | FiemapExtentFlags::ENCODED | FiemapExtentFlags::NOT_ALIGNED;
    let mut v = Vec::new();
    for x in Fiemap::new(&f) {
        match x {
            Ok(x) if !x.fe_flags.intersects(vague) => v.push((x.fe_physical, x.fe_length)),
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => {
                return Map::Unsupported;
            }
            Err(_) => return Map::Missing,
        }
    }
    Map::Extents((md.dev(), md.ino()), md.len(), v)
}

/// Bytes of `a`'s extents that `b`'s cover.
pub fn overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    a.iter()
        .flat_map(|&(p, l)| {
            b.iter().map(move |&(q, m)| {
                (p.saturating_add(l))
                    .min(q.saturating_add(m))
                    .saturating_sub(p.max(q))
            })
        })
        .sum()
}

/// The bytes of tree `new` that share physical extents with the file at
/// the same path in tree `old`, at most each file's length (extents are
/// whole blocks; `status`' sizes are lengths); `None` when their file systems cannot
/// share extents or do not map them.
pub fn shared_bytes(new: &Path, old: &Path) -> Result<Option<u64>> {
    if !reflinks_possible(new) || !reflinks_possible(old) {
        return Ok(None);
    }
    let (n, o) = (ImageRoot::open(new)?, ImageRoot::open(old)?);
    let mut seen = HashSet::new();
    let mut total = 0;
    let walk = walkdir::WalkDir::new(new).same_file_system(true);
    for e in walk.into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(new) else {
            continue;
        };
        let (id, len, mine) = match extents(&n, rel) {
            Map::Unsupported => return Ok(None),
            Map::Missing => continue,
            Map::Extents(id, len, v) => (id, len, v),
        };
        if mine.is_empty() || !seen.insert(id) {
            continue;
        }
        if let Map::Extents(theirs_id, _, theirs) = extents(&o, rel) {
            if theirs_id != id {
                total += overlap(&mine, &theirs).min(len);
            }
        }
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_the_common_bytes() {
        assert_eq!(overlap(&[(0, 10)], &[(5, 10)]), 5);
        assert_eq!(overlap(&[(0, 10)], &[(10, 10)]), 0);
        assert_eq!(overlap(&[(0, 4096), (8192, 4096)], &[(0, 12288)]), 8192);
        assert_eq!(overlap(&[(100, 10)], &[]), 0);
        assert_eq!(overlap(&[(u64::MAX - 1, 10)], &[(u64::MAX - 5, 10)]), 1);
    }

    #[test]
    fn copies_written_apart_share_nothing() {
        let d = tempfile::tempdir().unwrap();
        for t in ["a", "b"] {
            std::fs::create_dir_all(d.path().join(t).join("etc")).unwrap();
            std::fs::write(d.path().join(t).join("etc/f"), [7u8; 9000]).unwrap();
        }
        // Written apart, the files share nothing even where they could.
        let want = reflinks_possible(d.path()).then_some(0);
        let got = shared_bytes(&d.path().join("b"), &d.path().join("a")).unwrap();
        assert_eq!(got, want);
    }
}
