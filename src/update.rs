//! `nfsroot update IMAGE -- CMD...`: change an image by a new version of
//! its tree, never under running nodes.
//!
//! Under the image's lock: clone the current tree into a staging directory
//! (`cp -a -x --reflink=auto`: shared extents where the file system has
//! reflinks, else a full copy keeping what a snapshot keeps — hard links,
//! owners, modes, times, xattrs and so ACLs and capabilities, holes), run
//! the command in the clone as `exec` does, refresh the diskless fixups
//! with a new BUILD_ID, then swap the clone in through the journaled
//! exchange of [`image::swap_into_place`] (the old tree is kept as a
//! version: nodes booted from it keep running) and publish its kernels.
//! The command failing removes the clone; a killed update leaves the
//! current version published and the clone for the next run, which removes
//! it (a clone left before the swap is plain staging; one caught in the
//! exchange is settled by the switch journal when the lock is taken).

use crate::exec::{self, Tool};
use crate::fsutil;
use crate::image::{self, Layout};
use crate::imagefs::ImageRoot;
use anyhow::{Result, bail};
use serde::Serialize;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

const CP: Tool = Tool {
    name: "cp",
    package: "coreutils",
};

/// What `update` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub image: String,
    pub command: Vec<OsString>,
    pub wait: bool,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub image: String,
    /// The new version (its BUILD_ID), now current.
    pub version: String,
    /// The version it replaced, kept until `gc`.
    pub previous: Option<String>,
    pub clone_seconds: f64,
    pub command_seconds: f64,
    pub seconds: f64,
    pub published: Option<crate::publish::Outcome>,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "image {}: version {} is current (cloned in {:.1} s, command {:.1} s){}\n",
            self.image,
            self.version,
            self.clone_seconds,
            self.command_seconds,
            match &self.previous {
                Some(p) => format!("; version {p} kept for the nodes still running it"),
                None => String::new(),
            }
        );
        if let Some(p) = &self.published {
            s += &p.text(false);
        }
        s
    }
}

pub fn run(layout: &Layout, opts: &Options) -> Result<Summary> {
    exec::require_root("nfsroot update")?;
    exec::require(CP)?;
    exec::require(exec::UNSHARE)?;
    let name = &opts.image;
    let current = layout.existing_image(name)?;
    let loaded = crate::state::saved_profile(layout, name)?;
    let _lock = layout.lock(name, "update", opts.wait)?;
    let started = Instant::now();
    let clone = layout.staging_dir(name).join("update");
    fsutil::remove_tree(&clone)?;
    fsutil::mkdir_p(clone.parent().expect("clone has a parent"))?;
    clone_tree(&current, &clone)?;
    crate::crash_point!("update.cloned");
    let clone_seconds = started.elapsed().as_secs_f64();
    let code = exec::chroot_cmd(&clone, &opts.command)?.run_inherit()?;
    let command_seconds = started.elapsed().as_secs_f64() - clone_seconds;
    if code != 0 {
        fsutil::remove_tree(&clone)?;
        bail!(
            "the command exited {code} in a clone of image {name}; nothing changed \
             (the clone is removed, the current version stays)"
        );
    }
    let now = crate::clock::now_secs();
    let version = image::new_version_id(now);
    let ctx = crate::build::fixup_ctx(layout, &loaded, &version, now);
    let changed = crate::fixups::apply_all(&ImageRoot::open(&clone)?, &ctx)?;
    eprintln!("fixups: {}", changed.join(" "));
    crate::crash_point!("update.ready");
    let previous = image::swap_into_place(layout, name, &clone, true, false)?;
    let published = crate::snapshot::publish_if_published(layout, name)?;
    Ok(Summary {
        image: name.clone(),
        version,
        previous,
        clone_seconds,
        command_seconds,
        seconds: started.elapsed().as_secs_f64(),
        published,
    })
}

/// Copy the tree at `from` to the new directory `to` with every attribute
/// a snapshot keeps, sharing extents when the file system can (reflinks),
/// never crossing into a file system mounted inside it.
pub fn clone_tree(from: &Path, to: &Path) -> Result<()> {
    exec::Cmd::new(CP.name)
        .args(["-a", "-x", "--reflink=auto", "--"])
        .arg(from)
        .arg(to)
        .run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Hard links, modes, times, xattrs and holes survive the clone.
    #[test]
    fn clone_keeps_attributes() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir_all(a.join("etc")).unwrap();
        std::fs::write(a.join("etc/f"), "x").unwrap();
        std::fs::hard_link(a.join("etc/f"), a.join("etc/g")).unwrap();
        std::fs::set_permissions(
            a.join("etc/f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4751),
        )
        .unwrap();
        let sparse = std::fs::File::create(a.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::setxattr(a.join("etc/f"), "user.t", b"v", flags).unwrap();
        let b = d.path().join("b");
        clone_tree(&a, &b).unwrap();
        let (f, g) = (b.join("etc/f"), b.join("etc/g"));
        let (mf, mg) = (f.metadata().unwrap(), g.metadata().unwrap());
        assert_eq!(mf.ino(), mg.ino(), "hard link kept");
        assert_eq!(mf.mode() & 0o7777, 0o4751);
        let ma = a.join("etc/f").metadata().unwrap();
        assert_eq!((mf.mtime(), mf.mtime_nsec()), (ma.mtime(), ma.mtime_nsec()));
        let ms = b.join("sparse").metadata().unwrap();
        assert_eq!(ms.len(), 64 << 20);
        assert!(ms.blocks() < 1024, "holes kept: {} blocks", ms.blocks());
        let mut v = [0u8; 8];
        let n = rustix::fs::getxattr(&f, "user.t", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"v");
    }
}
