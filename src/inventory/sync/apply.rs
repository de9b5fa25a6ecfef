//! Applying a planned sync: write only the items that differ, phase by
//! phase, each file atomically, with the directories of a phase synced
//! before the next phase starts (see the parent module for the order).
//! The owned-names record is widened before anything is written and
//! narrowed only after everything is, so a crash never leaves a file the
//! tool made but does not know it owns.

use super::items::{Change, Item, Phase, Place, Roots};
use super::names::{load_names, save_names};
use super::plan::SyncPlan;
use crate::fsutil;
use crate::image::Layout;
use crate::publish::cfg_dir;
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Write the `changes` of plan `p`.
pub(super) fn apply(
    layout: &Layout,
    p: &SyncPlan,
    changes: &[(&Item, Change)],
    roots: &Roots,
) -> Result<()> {
    // Record the superset of names first, so a crash never leaves a file
    // the tool made but does not know it owns.
    let union: BTreeSet<String> = p.names_before.union(&p.names_now).cloned().collect();
    if union != load_names(layout)? {
        save_names(layout, &union)?;
    }
    make_new_host_keys(layout, changes)?;
    let cfgd = cfg_dir(layout);
    let mut dirty_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut phase = None;
    for (it, _) in changes {
        if phase != Some(it.phase()) {
            for d in std::mem::take(&mut dirty_dirs) {
                fsutil::fsync_dir(&d)?;
            }
            phase = Some(it.phase());
            if it.phase() == Phase::HostFiles || it.phase() == Phase::HostLinks {
                for d in [&cfgd, &crate::publish::grub_dir(layout)] {
                    fsutil::mkdir_p(d)?;
                    fsutil::sweep_temps(d)?;
                }
            }
        }
        apply_item(layout, roots, it, &mut dirty_dirs)?;
    }
    for d in dirty_dirs {
        fsutil::fsync_dir(&d)?;
    }
    if p.names_now != union {
        save_names(layout, &p.names_now)?;
    }
    Ok(())
}

/// New hosts' ssh keys first, all cores at once.
fn make_new_host_keys(layout: &Layout, changes: &[(&Item, Change)]) -> Result<()> {
    let keygen: Vec<String> = changes
        .iter()
        .filter_map(|(it, _)| match it {
            Item::HostKeys { host, .. } => Some(host.clone()),
            _ => None,
        })
        .collect();
    crate::hostkeys::ensure_many(layout, &keygen)?;
    Ok(())
}

/// Make one item true; directories whose entries changed go to `dirty`.
fn apply_item(
    layout: &Layout,
    roots: &Roots,
    it: &Item,
    dirty: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    match it {
        Item::File { place, text, .. } => write_file(roots, place, text),
        Item::Link { path, target } => {
            replace_link(path, target)?;
            dirty.insert(path.parent().context("link has a parent")?.to_path_buf());
            Ok(())
        }
        Item::HostKeys { host, .. } => {
            crate::hostkeys::ensure(layout, host)?;
            Ok(())
        }
        Item::RemoveKeys { host, .. } => {
            crate::hostkeys::remove(layout, host)?;
            Ok(())
        }
        Item::Remove { path } => {
            remove_file(path)?;
            if let Some(d) = path.parent() {
                dirty.insert(d.to_path_buf());
            }
            Ok(())
        }
        Item::Dir {
            place,
            uid,
            gid,
            mode,
        } => make_log_dir(roots, place, *uid, *gid, *mode),
    }
}

/// Write a file atomically, keeping the mode of a regular file in place
/// (a link's target never lends its mode).
fn write_file(roots: &Roots, place: &Place, text: &str) -> Result<()> {
    let mode = roots
        .lstat(place)?
        .filter(|m| m.is_file())
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    match place {
        Place::Host(path) => {
            fsutil::mkdir_p(path.parent().context("file has a parent")?)?;
            fsutil::atomic_write_mode(path, text.as_bytes(), mode)
        }
        Place::Confined { root, rel } => roots.get(root)?.write(rel, text.as_bytes(), mode),
    }
}

/// Point `path` at `target`, replacing what is there by rename.
fn replace_link(path: &Path, target: &str) -> Result<()> {
    let dir = path.parent().context("link has a parent")?;
    let tmp = dir.join(format!(
        "{}{}-{}",
        fsutil::TEMP_PREFIX,
        std::process::id(),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into place {}", path.display()))
}

/// Remove a file; one already gone is fine.
fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Create a per-host log directory with its owner and mode, through the
/// confined view of the tree it lives in.
fn make_log_dir(roots: &Roots, place: &Place, uid: u32, gid: u32, mode: u32) -> Result<()> {
    match place {
        Place::Host(path) => bail!("{}: log directories are confined", path.display()),
        Place::Confined { root, rel } => {
            let r = roots.get(root)?;
            r.create_dir_all(rel, mode)?;
            r.chown(rel, uid, gid)
                .context("changing a log directory's owner (run sync as root)")?;
            r.set_mode(rel, mode)
        }
    }
}
