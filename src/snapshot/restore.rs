//! `nfsroot restore`: check the archive's checksum, extract it into a
//! staging directory on the image's file system ([`super::extract`], which
//! refuses anything that could escape it), give the tree a version id of
//! its own, then exchange it with the image atomically under the image's
//! lock. The old tree stays as a version for the nodes running from it,
//! and the restored tree's kernel is published when the image was.

use super::{
    RestoreOpts, RestoreResult, check_checksum, checksum_path, compress, extract, read_manifest,
};
use crate::fsutil;
use crate::image::{self, Layout};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Instant;

/// A new tree of an image that was published gets its kernel published
/// with the image's saved profile, like a kernel upgrade (lock held).
pub fn publish_if_published(
    layout: &Layout,
    name: &str,
) -> Result<Option<crate::publish::Outcome>> {
    if crate::publish::Record::load(layout, name)?.is_none() {
        return Ok(None);
    }
    let loaded = crate::state::saved_profile(layout, name)?;
    let root = layout.image_dir(name);
    crate::publish::publish(layout, &loaded, &root, &mut |l| eprintln!("{l}")).map(Some)
}

/// The restored tree keeps its stamp (a faithful restore) unless the
/// image already has a version by its BUILD_ID: then it gets a new one,
/// each version its own. A tree without a BUILD_ID (not built by nfsroot)
/// stays as it is; it gets an id only when a later swap keeps it as an old
/// version ([`image::swap_into_place`]). Returns (id, the id it had if
/// changed).
fn version_of_restored(
    layout: &Layout,
    name: &str,
    staging: &Path,
) -> Result<(String, Option<String>)> {
    let Some(had) = image::tree_id(staging) else {
        return Ok(("(no BUILD_ID)".into(), None));
    };
    if !image::versions(layout, name)?.iter().any(|v| v.id == had) {
        return Ok((had, None));
    }
    let now = crate::clock::now_secs();
    let version = image::new_version_id(now);
    let img = crate::imagefs::ImageRoot::open(staging)?;
    let old = crate::fixups::release::restamp(&img, &version, &crate::clock::rfc3339(now))?;
    Ok((version, old))
}

/// `nfsroot restore`: checksum, extract into staging, swap in atomically.
pub fn run_restore(layout: &Layout, opts: &RestoreOpts) -> Result<RestoreResult> {
    let started = Instant::now();
    let file = &opts.file;
    let name = target_image(opts)?;
    let sha256 = check_checksum(file)?;
    if sha256.is_none() && !opts.no_checksum {
        bail!(
            "{} has no checksum file {}; pass --no-checksum to restore it unverified",
            file.display(),
            checksum_path(file).display()
        );
    }
    let dest = layout.image_dir(&name);
    fsutil::mkdir_p(&layout.base_dir)?;
    let _lock = layout.lock(&name, "restore", opts.wait)?;
    check_replaceable(&name, &dest, opts.force)?;
    let staging_parent = layout.staging_dir(&name);
    let staging = staging_parent.join("restore");
    let extracted = extract_into(opts, &staging).map_err(|e| {
        let cleanup = fsutil::remove_tree(&staging);
        let _ = std::fs::remove_dir(&staging_parent);
        let e = e.context(format!(
            "restoring {} into image {name} failed; the image is untouched",
            file.display()
        ));
        match cleanup {
            Ok(()) => e,
            Err(c) => e.context(format!("and cleaning up staging failed: {c:#}")),
        }
    })?;
    crate::crash_point!("restore.extracted");
    let (version, restored_from) = version_of_restored(layout, &name, &staging)?;
    let previous = image::swap_into_place(layout, &name, &staging, opts.force, false)?;
    let _ = std::fs::remove_dir(&staging_parent);
    let published = publish_if_published(layout, &name)?;
    Ok(RestoreResult {
        image: name,
        path: dest,
        replaced: previous.is_some(),
        version,
        restored_from,
        previous,
        published,
        entries: extracted.entries,
        bytes: extracted.bytes,
        sha256,
        setid_files: extracted.setid,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The image to restore into: `--image`, or the one the manifest names.
fn target_image(opts: &RestoreOpts) -> Result<String> {
    let file = &opts.file;
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let name = match &opts.image {
        Some(n) => n.clone(),
        None => read_manifest(file).map(|m| m.image).with_context(|| {
            format!(
                "name the image to restore {} into with --image",
                file.display()
            )
        })?,
    };
    image::check_name(&name)?;
    Ok(name)
}

/// An existing image is replaced only with `--force`, and never while
/// something is mounted inside it (lock held).
fn check_replaceable(name: &str, dest: &Path, force: bool) -> Result<()> {
    if std::fs::symlink_metadata(dest).is_err() {
        return Ok(());
    }
    if !force {
        bail!(
            "image {name} exists at {}; pass --force to replace it (the old tree \
             stays in place until the restored one is ready)",
            dest.display()
        );
    }
    if let Some(m) = fsutil::mounts_below(dest)?.first() {
        bail!(
            "{} is mounted inside image {name}; unmount it before restoring",
            m.display()
        );
    }
    Ok(())
}

/// Extract the archive into a fresh `staging` directory, with a progress
/// bar when asked.
fn extract_into(opts: &RestoreOpts, staging: &Path) -> Result<extract::Extracted> {
    fsutil::remove_tree(staging)?;
    fsutil::mkdir_p(staging)?;
    let total = std::fs::metadata(&opts.file).map(|m| m.len()).unwrap_or(0);
    let bar = crate::progress::bytes_bar(total, opts.progress);
    let extracted = compress::open_decompressed(&opts.file, bar.clone()).and_then(|input| {
        let o = extract::ExtractOpts {
            allow_devices: opts.allow_devices,
        };
        extract::extract(input, staging, &o)
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    extracted
}
