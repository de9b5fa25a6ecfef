//! Listing an image's snapshots: how archive files are named and how they
//! sort (by the UTC time in the name, then the same-second number), so
//! `snapshot list`, `--keep` and the next default name agree.

use super::{ListOpts, SnapshotInfo, checksum_path, read_manifest};
use crate::image::Layout;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The default file name of a snapshot of image `name`:
/// `<name>-<UTC time>[.<n>]-<kernel>.<ext>`. The time is to the second, as
/// `snapshot list` shows it; `.<n>` (2, 3, ...) tells apart snapshots taken
/// within one second, so a second snapshot never replaces or refuses to
/// follow the first.
pub(crate) fn archive_name(name: &str, stamp: &str, n: u32, kernel: &str, ext: &str) -> String {
    let seq = if n > 1 {
        format!(".{n}")
    } else {
        String::new()
    };
    format!("{name}-{stamp}{seq}-{kernel}.{ext}")
}

/// How archives of image `name` sort, oldest first: by time, then by the
/// same-second number of [`archive_name`] (numerically: `.10` after `.9`),
/// then by name. Names made otherwise (`-o` into the snapshot directory)
/// sort by name among them.
fn archive_order(file: &str, name: &str) -> (String, u32, String) {
    let rest = file.strip_prefix(name).and_then(|r| r.strip_prefix('-'));
    let stamp = rest.and_then(|r| r.split_once('-')).map(|(s, _)| s);
    let (time, n) = match stamp.map(|s| s.split_once('.').unwrap_or((s, "1"))) {
        Some((t, n)) if t.ends_with('Z') => (t, n.parse().unwrap_or(0)),
        _ => (rest.unwrap_or(file), 0),
    };
    (time.to_string(), n, file.to_string())
}

/// Whether `file` is the name of an archive of image `name` (a temp file
/// is not).
pub(crate) fn is_archive_name(file: &str, name: &str) -> bool {
    file.starts_with(&format!("{name}-"))
        && (file.ends_with(".tar.gz") || file.ends_with(".tar.zst") || file.ends_with(".tar"))
}

/// Archives of `name` in `dir` (not temp files), oldest first
/// ([`archive_order`]).
pub(crate) fn snapshot_files(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut v: Vec<(_, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            is_archive_name(&f, name).then(|| (archive_order(&f, name), e.path()))
        })
        .collect();
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// `nfsroot snapshot list`: the image's snapshots, oldest first.
pub fn run_list(layout: &Layout, opts: &ListOpts) -> Result<Vec<SnapshotInfo>> {
    let name = layout.resolve_image(opts.image.as_deref())?;
    let files = snapshot_files(&layout.snapshots_dir(&name), &name)?;
    let mut out = Vec::new();
    for p in files {
        let man = read_manifest(&p).ok();
        out.push(SnapshotInfo {
            bytes: std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0),
            created: man.as_ref().map(|m| m.created.clone()),
            kernels: man.as_ref().map(|m| m.kernels.clone()).unwrap_or_default(),
            entries: man.as_ref().map(|m| m.entries.len()),
            has_checksum: checksum_path(&p).exists(),
            has_manifest: man.is_some(),
            path: p,
        });
    }
    Ok(out)
}
