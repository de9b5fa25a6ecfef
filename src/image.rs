//! Where an image and the tool's state about it live.
//!
//! An image is a series of tree versions. The current one is the directory
//! `<base-dir>/<name>`, the stable path that is exported to the nodes as
//! their root and that `exec`, the boot configs and admins name. A build,
//! restore, update or tree rollback never deletes the tree it replaces: the
//! new complete tree is exchanged into `<base-dir>/<name>` in one
//! `renameat2(RENAME_EXCHANGE)` and the old one is moved, not copied, to
//! `<base-dir>/.nfsroot/trees/<name>/<id>`, `<id>` being its release stamp's
//! BUILD_ID (each version gets its own). A node booted from it keeps using
//! it through its NFS file handles, which name inodes, not paths (the
//! kernel server with `no_subtree_check`, which `sync` writes, and
//! nfs-ganesha's VFS handles both serve a file moved out of the exported
//! path: the trees boot test proves it for ganesha); its next boot mounts
//! the stable path and so the new version. Rolling a tree back is the same
//! exchange the other way. `gc` removes old versions. Why not one export
//! per version named by the boot config: per-host tree pins would follow,
//! but every export, the kernel command line and the publish record would
//! have to learn versions; the stable path keeps them as they are.
//!
//! The switch is journaled: `<state>/trees/<name>.switch` records the
//! inodes of both trees before the exchange, so the next run that takes
//! the image's lock finishes an interrupted switch (moves the old tree to
//! its version directory) or undoes an unfinished one (removes an update's
//! clone) by comparing inodes, trusting nothing inside the trees.
//!
//! Everything the tool keeps about an image — its lock, build staging
//! trees, old versions, the record of what is published, snapshots — lives
//! under `<base-dir>/.nfsroot/`, outside every exported tree, so nodes
//! never reach it by path and a snapshot of the image never contains it.
//! Staging trees sit on the same file system as the image so the final
//! move is a rename.

use crate::fsutil::{self, Lock};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directories every command works in, from flags or environment.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where images live: `<base-dir>/<name>`.
    pub base_dir: PathBuf,
    /// The TFTP root that nodes load kernels and boot configs from.
    pub tftp_root: PathBuf,
    /// Where downloaded .debs are cached between builds.
    pub cache_dir: PathBuf,
}

impl Layout {
    /// The three directories side by side under `dir` (`base`, `tftp`,
    /// `cache`): the layout of unit tests' temp dirs and scratch runs.
    pub fn under(dir: &Path) -> Self {
        Self {
            base_dir: dir.join("base"),
            tftp_root: dir.join("tftp"),
            cache_dir: dir.join("cache"),
        }
    }

    /// Tool state, outside every image directory.
    pub fn state_dir(&self) -> PathBuf {
        self.base_dir.join(".nfsroot")
    }

    /// The exported root of image `name`.
    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.base_dir.join(name)
    }

    /// Where staging trees for `name` are built.
    pub fn staging_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("staging").join(name)
    }

    /// Where the old versions of `name` are kept: `<trees>/<id>`.
    pub fn trees_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("trees").join(name)
    }

    /// The journal of a tree switch of `name` in progress.
    fn switch_journal(&self, name: &str) -> PathBuf {
        self.state_dir()
            .join("trees")
            .join(format!("{name}.switch"))
    }

    /// The lock file of image `name`.
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.state_dir().join("locks").join(format!("{name}.lock"))
    }

    /// The record of what is published for `name` (JSON).
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.state_dir()
            .join("published")
            .join(format!("{name}.json"))
    }

    /// Default directory for snapshots of `name`.
    pub fn snapshots_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("snapshots").join(name)
    }

    /// Server-side per-host log tree for `name` (exported read-write when
    /// the root is read-only).
    pub fn logs_dir(&self, name: &str) -> PathBuf {
        self.base_dir.join(".logs").join(name)
    }

    /// Create the state directory root-only (0700; tightened if an older
    /// nfsroot left it open): it holds saved profiles, snapshots and ssh
    /// host keys. Every operation that writes state takes a lock through
    /// here first.
    pub fn ensure_state_dir(&self) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let d = self.state_dir();
        crate::fsutil::mkdir_p(&d)?;
        let md = std::fs::symlink_metadata(&d)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", d.display()))?;
        if md.permissions().mode() & 0o7777 != 0o700 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| anyhow::anyhow!("setting mode of {}: {e}", d.display()))?;
        }
        Ok(d)
    }

    /// Take the lock of image `name` for operation `op`.
    pub fn lock(&self, name: &str, op: &str, wait: bool) -> Result<Lock> {
        self.ensure_state_dir()?;
        let lock = Lock::acquire(&self.lock_path(name), &format!("image {name}"), op, wait)?;
        if let Some(done) = recover(self, name)? {
            eprintln!("nfsroot: {done}");
        }
        Ok(lock)
    }

    /// The image directory, which must exist and look like a root tree.
    pub fn existing_image(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        let dir = self.image_dir(name);
        if !dir.join("etc").is_dir() {
            bail!(
                "image {name} not found: {} is not an image root (no etc/); \
                 build it with: nfsroot build PROFILE",
                dir.display()
            );
        }
        Ok(dir)
    }

    /// Image names present under the base directory.
    pub fn list_images(&self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        let rd = match std::fs::read_dir(&self.base_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
            Err(e) => return Err(e.into()),
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with('.') && e.path().join("etc").is_dir() {
                v.push(n);
            }
        }
        v.sort();
        Ok(v)
    }

    /// Resolve an optional image argument: the one given, or the only image.
    pub fn resolve_image(&self, name: Option<&str>) -> Result<String> {
        if let Some(n) = name {
            check_name(n)?;
            return Ok(n.to_string());
        }
        let imgs = self.list_images()?;
        match imgs.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "no image under {}; build one with: nfsroot build PROFILE",
                self.base_dir.display()
            ),
            many => bail!(
                "several images under {} ({}); name one",
                self.base_dir.display(),
                many.join(", ")
            ),
        }
    }
}

/// Image names become directory and file names: keep them plain.
pub fn check_name(name: &str) -> Result<()> {
    let ok = is_plain(name, |b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok {
        bail!(
            "invalid image name {name:?}: use 1-64 characters a-z 0-9 . _ -, \
             starting with a letter or digit"
        );
    }
    Ok(())
}

/// A version id names a directory: the same plain rule as image names,
/// upper case allowed (`20260101T000000Z-abcdef`).
pub fn check_version_id(id: &str) -> Result<()> {
    if !is_plain(id, |b| b.is_ascii_alphanumeric()) {
        bail!("invalid tree version {id:?}: use 1-64 characters A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// 1-64 bytes, each `-`, `_`, `.` or one `letter` accepts, the first an
/// ASCII letter or digit: names that are safe as one path component.
fn is_plain(s: &str, letter: impl Fn(u8) -> bool) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| letter(b) || b"-_.".contains(&b))
}

/// A new version id (the BUILD_ID a build, restore or update stamps):
/// the UTC time, then 6 random hex digits, so ids sort by age.
pub fn new_version_id(now: i64) -> String {
    format!(
        "{}-{}",
        crate::clock::compact(now),
        &fsutil::random_hex()[..6]
    )
}

/// The version id of the tree at `root`: its release stamp's BUILD_ID,
/// read through the tree's confined view, when it is a plain name.
pub fn tree_id(root: &Path) -> Option<String> {
    let img = crate::imagefs::ImageRoot::open(root).ok()?;
    let id = crate::facts::release(&img).ok()?.remove("BUILD_ID")?;
    check_version_id(&id).ok().map(|()| id)
}

/// One version of an image's tree.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub id: String,
    pub path: PathBuf,
    /// The tree at `<base-dir>/<name>`: what the boot configs and the
    /// next boot of every node use.
    pub current: bool,
}

/// The versions of image `name`: the current one first, then the kept
/// ones newest first.
pub fn versions(layout: &Layout, name: &str) -> Result<Vec<Version>> {
    let mut v = Vec::new();
    let dest = layout.image_dir(name);
    if dest.is_dir() {
        v.push(Version {
            id: tree_id(&dest).unwrap_or_else(|| "(no BUILD_ID)".into()),
            path: dest,
            current: true,
        });
    }
    let dir = layout.trees_dir(name);
    let mut kept = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.with_context(|| format!("reading {}", dir.display()))?;
                let id = e.file_name().to_string_lossy().into_owned();
                if !id.starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()) {
                    kept.push(Version {
                        id,
                        path: e.path(),
                        current: false,
                    });
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    kept.sort_by(|a, b| b.id.cmp(&a.id));
    v.extend(kept);
    Ok(v)
}

/// A tree switch in progress: both trees by inode, so recovery trusts
/// nothing inside them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    /// Where the new tree was; after the exchange it holds the old one.
    staging: PathBuf,
    old_id: String,
    old_ino: u64,
    new_ino: u64,
    /// The new tree is a kept version (a tree rollback): an unfinished
    /// switch leaves it; otherwise (a build, restore or update) it goes.
    keep_unswitched: bool,
}

fn ino(p: &Path) -> Result<u64> {
    Ok(std::fs::symlink_metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .ino())
}

/// Make the complete tree at `staging` the current version of `name`.
/// Without `force` an existing image is an error; with it the trees are
/// exchanged atomically and the old one is kept as a version (never
/// deleted: nodes may run from it). Returns the old version's id.
/// `keep_unswitched`: see [`Switch`].
pub fn swap_into_place(
    layout: &Layout,
    name: &str,
    staging: &Path,
    force: bool,
    keep_unswitched: bool,
) -> Result<Option<String>> {
    let dest = layout.image_dir(name);
    let parent = dest.parent().unwrap_or(Path::new("/"));
    if std::fs::symlink_metadata(&dest).is_err() {
        std::fs::rename(staging, &dest).map_err(|e| {
            anyhow::anyhow!("moving {} to {}: {e}", staging.display(), dest.display())
        })?;
        fsutil::fsync_dir(parent)?;
        return Ok(None);
    }
    if !force {
        bail!(
            "{} already exists; pass --force to replace it (the old tree \
             stays in place until the new one is ready, then is kept as a version)",
            dest.display()
        );
    }
    let j = Switch {
        staging: staging.to_path_buf(),
        old_id: tree_id(&dest).unwrap_or_else(|| new_version_id(crate::clock::now_secs())),
        old_ino: ino(&dest)?,
        new_ino: ino(staging)?,
        keep_unswitched,
    };
    fsutil::mkdir_p(&layout.trees_dir(name))?;
    fsutil::atomic_write(&layout.switch_journal(name), &serde_json::to_vec(&j)?)?;
    crate::crash_point!("swap.before_exchange");
    fsutil::exchange(staging, &dest)?;
    fsutil::fsync_dir(parent)?;
    crate::crash_point!("swap.after_exchange");
    keep_old(layout, name, &j).map(Some)
}

/// After the exchange: move the old tree (now at `j.staging`) to its
/// version directory, then drop the journal. Returns the id it got.
fn keep_old(layout: &Layout, name: &str, j: &Switch) -> Result<String> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let dir = layout.trees_dir(name);
    let mut id = j.old_id.clone();
    // A tree's BUILD_ID is not unique when a node or an admin wrote it.
    while let Err(e) = renameat_with(CWD, &j.staging, CWD, dir.join(&id), RenameFlags::NOREPLACE) {
        if e != rustix::io::Errno::EXIST && e != rustix::io::Errno::NOTEMPTY {
            bail!("moving {} to {}: {e}", j.staging.display(), dir.display());
        }
        id = format!("{}-{}", j.old_id, &fsutil::random_hex()[..6]);
    }
    fsutil::fsync_dir(&dir)?;
    if let Some(p) = j.staging.parent() {
        fsutil::fsync_dir(p)?;
    }
    crate::crash_point!("swap.kept");
    let jp = layout.switch_journal(name);
    std::fs::remove_file(&jp).with_context(|| format!("removing {}", jp.display()))?;
    fsutil::fsync_dir(jp.parent().expect("journal has a parent"))?;
    Ok(id)
}

/// Finish or undo a switch a killed run left (under the image's lock).
/// Returns what it did.
pub fn recover(layout: &Layout, name: &str) -> Result<Option<String>> {
    let jp = layout.switch_journal(name);
    let text = match std::fs::read(&jp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", jp.display())),
    };
    let j: Switch =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", jp.display()))?;
    let dest = ino(&layout.image_dir(name)).ok();
    let staged = ino(&j.staging).ok();
    if dest == Some(j.new_ino) && staged == Some(j.old_ino) {
        let id = keep_old(layout, name, &j)?;
        return Ok(Some(format!(
            "finished an interrupted switch of image {name}: the previous tree is version {id}"
        )));
    }
    if dest == Some(j.new_ino) && staged.is_none() {
        std::fs::remove_file(&jp).with_context(|| format!("removing {}", jp.display()))?;
        return Ok(Some(format!(
            "image {name}: an interrupted switch was complete; its journal is removed"
        )));
    }
    let mut done = format!("image {name}: an interrupted switch had not happened");
    if dest == Some(j.old_ino) && staged == Some(j.new_ino) && !j.keep_unswitched {
        fsutil::remove_tree(&j.staging)?;
        done += &format!("; removed its new tree {}", j.staging.display());
    }
    std::fs::remove_file(&jp).with_context(|| format!("removing {}", jp.display()))?;
    Ok(Some(done))
}

/// The tree of version `id` of image `name` (`None`: the current one),
/// to read through its confined view (snapshot, diff). An unknown id is
/// an error naming the versions there are.
pub fn version_path(layout: &Layout, name: &str, id: Option<&str>) -> Result<PathBuf> {
    let Some(id) = id else {
        return layout.existing_image(name);
    };
    check_version_id(id)?;
    let all = versions(layout, name)?;
    if let Some(v) = all.iter().find(|v| v.id == id) {
        return Ok(v.path.clone());
    }
    let have: Vec<&str> = all.iter().map(|v| v.id.as_str()).collect();
    bail!(
        "image {name} has no tree version {id} (versions: {})",
        if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        }
    )
}

/// Make kept version `id` of `name` current again (the current one is
/// kept as a version). Returns the id of the version it replaced.
pub fn switch_to(layout: &Layout, name: &str, id: &str) -> Result<String> {
    check_version_id(id)?;
    let from = layout.trees_dir(name).join(id);
    if !from.join("etc").is_dir() {
        let have: Vec<String> = versions(layout, name)?.into_iter().map(|v| v.id).collect();
        bail!(
            "image {name} has no kept tree version {id} (versions: {})",
            have.join(", ")
        );
    }
    swap_into_place(layout, name, &from, true, true)?.context("no current tree to replace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("minimal").is_ok());
        assert!(check_name("node-img_2.1").is_ok());
        for bad in ["", "../x", "a/b", "Upper", ".hidden", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    /// A staged tree with release stamp `id`.
    fn staged(l: &Layout, id: &str) -> PathBuf {
        let s = l.staging_dir("img");
        std::fs::create_dir_all(s.join("etc")).unwrap();
        std::fs::write(s.join("etc/nfsroot-release"), format!("BUILD_ID={id}\n")).unwrap();
        s
    }

    #[test]
    fn swap_keeps_the_old_tree_as_a_version() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::under(d.path());
        l.ensure_state_dir().unwrap();
        let s = staged(&l, "v1");
        assert_eq!(swap_into_place(&l, "img", &s, false, false).unwrap(), None);
        let s = staged(&l, "v2");
        let e = swap_into_place(&l, "img", &s, false, false).unwrap_err();
        assert!(format!("{e}").contains("--force"));
        let old_ino = ino(&l.image_dir("img")).unwrap();
        assert_eq!(
            swap_into_place(&l, "img", &s, true, false)
                .unwrap()
                .as_deref(),
            Some("v1")
        );
        assert!(!s.exists());
        assert_eq!(tree_id(&l.image_dir("img")).as_deref(), Some("v2"));
        // Moved, not copied: a node's handles still name these inodes.
        assert_eq!(ino(&l.trees_dir("img").join("v1")).unwrap(), old_ino);
        let ids: Vec<_> = versions(&l, "img")
            .unwrap()
            .into_iter()
            .map(|v| v.id)
            .collect();
        assert_eq!(ids, ["v2", "v1"]);
        // A third tree claiming an existing id gets its own directory.
        let s = staged(&l, "v1");
        assert_eq!(
            swap_into_place(&l, "img", &s, true, false)
                .unwrap()
                .unwrap(),
            "v2"
        );
        let s = staged(&l, "v3");
        let got = swap_into_place(&l, "img", &s, true, false)
            .unwrap()
            .unwrap();
        assert!(got.starts_with("v1-") && got.len() == 9, "{got}");
        assert_eq!(versions(&l, "img").unwrap().len(), 4);
        // Tree rollback: v1 current again, v3 kept.
        assert_eq!(switch_to(&l, "img", "v1").unwrap(), "v3");
        assert_eq!(tree_id(&l.image_dir("img")).as_deref(), Some("v1"));
        assert!(
            switch_to(&l, "img", "nope")
                .unwrap_err()
                .to_string()
                .contains("v3")
        );
        assert!(switch_to(&l, "img", "../x").is_err());
    }

    #[test]
    fn recovery_finishes_or_undoes_by_inode() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::under(d.path());
        l.ensure_state_dir().unwrap();
        let s = staged(&l, "v1");
        swap_into_place(&l, "img", &s, false, false).unwrap();
        // Killed after the exchange: the old tree still sits at staging.
        let s = staged(&l, "v2");
        let j = Switch {
            staging: s.clone(),
            old_id: "v1".into(),
            old_ino: ino(&l.image_dir("img")).unwrap(),
            new_ino: ino(&s).unwrap(),
            keep_unswitched: false,
        };
        std::fs::create_dir_all(l.trees_dir("img")).unwrap();
        std::fs::write(l.switch_journal("img"), serde_json::to_vec(&j).unwrap()).unwrap();
        fsutil::exchange(&s, &l.image_dir("img")).unwrap();
        assert!(recover(&l, "img").unwrap().unwrap().contains("version v1"));
        assert_eq!(
            tree_id(&l.trees_dir("img").join("v1")).as_deref(),
            Some("v1")
        );
        assert!(!s.exists() && !l.switch_journal("img").exists());
        // Killed before the exchange: an update's clone goes, nothing else.
        let s = staged(&l, "v3");
        let j = Switch {
            old_id: "v2".into(),
            old_ino: ino(&l.image_dir("img")).unwrap(),
            new_ino: ino(&s).unwrap(),
            ..j
        };
        std::fs::write(l.switch_journal("img"), serde_json::to_vec(&j).unwrap()).unwrap();
        assert!(recover(&l, "img").unwrap().unwrap().contains("removed"));
        assert!(!s.exists());
        assert_eq!(tree_id(&l.image_dir("img")).as_deref(), Some("v2"));
        assert_eq!(recover(&l, "img").unwrap(), None);
    }
}
