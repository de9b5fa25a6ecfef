//! `nfsroot diff IMAGE FILE`: a live tree (or a kept version) against a
//! snapshot, both as [`EntryMeta`](super::EntryMeta) records: the
//! snapshot's from its manifest, or read from the archive itself when it
//! has none.

use super::verify::archive_meta_against;
use super::{DiffOpts, TreeDiff, diff_maps, manifest_path, read_manifest, scan_tree};
use crate::image::{self, Layout};
use anyhow::Result;

/// `nfsroot diff IMAGE FILE`: what changed in the live image since the
/// snapshot (from its manifest, or the archive itself if it has none).
pub fn run_diff(layout: &Layout, opts: &DiffOpts) -> Result<TreeDiff> {
    let root = image::version_path(layout, &opts.image, opts.tree.as_deref())?;
    let new = scan_tree(&root)?;
    let old = match read_manifest(&opts.file) {
        Ok(m) => m.entries,
        Err(_) if !manifest_path(&opts.file).exists() => {
            archive_meta_against(&opts.file, Some(&new))?
        }
        Err(e) => return Err(e),
    };
    Ok(diff_maps(&old, &new))
}
