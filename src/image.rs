//! Where an image and the tool's state about it live.
//!
//! An image is the directory `<base-dir>/<name>`, which is exported to the
//! nodes as their root. Everything the tool keeps about an image — its lock,
//! build staging trees, the record of what is published, snapshots — lives
//! under `<base-dir>/.nfsroot/`, outside every exported tree, so nodes never
//! see it and a snapshot of the image never contains it.
//!
//! Staging trees sit on the same file system as the image so the final move
//! is a rename (an atomic exchange when replacing an image).

use crate::fsutil::{self, Lock};
use anyhow::{Result, bail};
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
        Lock::acquire(&self.lock_path(name), &format!("image {name}"), op, wait)
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
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        bail!(
            "invalid image name {name:?}: use 1-64 characters a-z 0-9 . _ -, \
             starting with a letter or digit"
        );
    }
    Ok(())
}

/// Move a finished staging tree to `dest`. Without `force` an existing image
/// is an error; with it the two trees are exchanged atomically and the old
/// one is removed afterwards. Returns whether an old image was replaced.
pub fn swap_into_place(staging: &Path, dest: &Path, force: bool) -> Result<bool> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    if std::fs::symlink_metadata(dest).is_ok() {
        if !force {
            bail!(
                "{} already exists; pass --force to replace it (the old tree \
                 stays in place until the new one is ready)",
                dest.display()
            );
        }
        crate::crash_point!("swap.before_exchange");
        fsutil::exchange(staging, dest)?;
        fsutil::fsync_dir(parent)?;
        crate::crash_point!("swap.after_exchange");
        // `staging` now holds the old image.
        fsutil::remove_tree(staging)?;
        Ok(true)
    } else {
        std::fs::rename(staging, dest).map_err(|e| {
            anyhow::anyhow!("moving {} to {}: {e}", staging.display(), dest.display())
        })?;
        fsutil::fsync_dir(parent)?;
        Ok(false)
    }
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

    #[test]
    fn swap_refuses_without_force_and_replaces_with() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("s");
        let t = d.path().join("t");
        std::fs::create_dir(&s).unwrap();
        std::fs::write(s.join("new"), "").unwrap();
        assert!(!swap_into_place(&s, &t, false).unwrap());
        std::fs::create_dir(&s).unwrap();
        std::fs::write(s.join("newer"), "").unwrap();
        let e = swap_into_place(&s, &t, false).unwrap_err();
        assert!(format!("{e}").contains("--force"));
        assert!(swap_into_place(&s, &t, true).unwrap());
        assert!(t.join("newer").exists() && !t.join("new").exists());
        assert!(!s.exists());
    }
}
