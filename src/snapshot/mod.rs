//! Snapshots: faithful, fast, verifiable archives of an image.
//!
//! A snapshot is a standard pax tar (GNU tar and bsdtar restore it),
//! compressed on every core into one ordinary `.tar.gz` or `.tar.zst`, with
//! two files beside it: `<file>.sha256` for `sha256sum -c`, and
//! `<file>.manifest.json` recording the image's release stamp, kernels,
//! installed packages and, per entry, every field a restore must bring back
//! ([`EntryMeta`]). Owners are numeric in the archive, as `tar
//! --numeric-owner` writes them, so no extractor can remap them through the
//! host's user database; the image's own names are in the manifest.
//! Snapshot and restore hold the image's lock, so neither
//! sees a half-built tree. Restore checks the checksum, extracts into a
//! staging directory on the image's file system refusing anything that
//! could escape it ([`extract`]), stamps a new BUILD_ID when the image
//! already has a version by the archive's one, and only then exchanges the trees atomically; the old
//! tree is kept as a version for the nodes running from it ([`image`]),
//! and the restored tree's kernel is published when the image was.
//! `verify` re-reads an archive against its manifest and `diff` compares a
//! live image with a snapshot through the same [`EntryMeta`] records.
//!
//! Both ends are untrusted: the live image is written by nodes, an archive
//! by whoever hands it over. The walk never follows a symlink out of the
//! image ([`tree`]), the reader is linear in the archive's size with a cap
//! on every header ([`tar`]), and restore makes the image root `root:root
//! 0755`, refuses device nodes outside `/dev` unless asked, and lists the
//! setuid and setgid files it restored ([`extract`]). Snapshots, their
//! `.sha256` and manifests hold `/etc/shadow` and keys, so they are written
//! 0600 in 0700 directories.
//!
//! Each command has a file of its own: `create.rs` (`snapshot`), `list.rs`,
//! `verify.rs` (which also reads an archive's records back), `diff.rs` and
//! `restore.rs`; this file holds their options and results, and the two
//! files beside an archive. The CLI lives in `cli.rs`; each command here
//! returns a `Serialize` result for `--json`.

pub mod acl;
pub mod at;
pub mod compress;
mod create;
mod diff;
pub mod extract;
mod list;
pub mod pgz;
mod restore;
pub mod tar;
pub mod tree;
mod verify;

pub use crate::compression::Compression;
pub use crate::facts::Package;
pub use create::run_snapshot;
pub use diff::run_diff;
pub use list::run_list;
pub(crate) use list::{archive_name, is_archive_name, snapshot_files};
pub use restore::{publish_if_published, run_restore};
pub use tree::{Change, EntryMeta, TreeDiff, diff_maps, scan_tree};
pub use verify::{archive_meta, check_checksum, run_verify};

use crate::image::Layout;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of `nfsroot snapshot`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOpts {
    /// Image name; `None` for the only image.
    pub image: Option<String>,
    /// Tree version (BUILD_ID); `None` for the current tree.
    pub tree: Option<String>,
    /// Archive path; `None` for the default name in the snapshots dir.
    pub output: Option<PathBuf>,
    pub format: Compression,
    pub level: Option<u32>,
    /// Keep only the newest N snapshots in the snapshots dir.
    pub keep: Option<usize>,
    /// Compression threads; `None` for all cores.
    pub threads: Option<usize>,
    /// Wait for the image lock.
    pub wait: bool,
    /// Progress bar: `None` to show it on a terminal.
    pub progress: Option<bool>,
}

/// What `nfsroot snapshot` made.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotResult {
    pub image: String,
    pub path: PathBuf,
    pub checksum_path: PathBuf,
    pub manifest_path: PathBuf,
    pub sha256: String,
    /// Compressed size.
    pub bytes: u64,
    /// Uncompressed tar size.
    pub tar_bytes: u64,
    pub entries: usize,
    pub sparse_files: usize,
    pub kernel: Option<String>,
    /// Things left out (sockets, mounts), one line each.
    pub notes: Vec<String>,
    /// Older snapshots removed by `--keep`.
    pub pruned: Vec<PathBuf>,
    pub seconds: f64,
}

/// Options of `nfsroot restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    pub file: PathBuf,
    /// Target image; `None` for the image named in the manifest.
    pub image: Option<String>,
    /// Replace an existing image.
    pub force: bool,
    /// Allow an archive without a `.sha256` file.
    pub no_checksum: bool,
    /// Restore device nodes outside `/dev` too.
    pub allow_devices: bool,
    pub wait: bool,
    pub progress: Option<bool>,
}

/// What `nfsroot restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    pub image: String,
    pub path: PathBuf,
    /// Whether an existing image was replaced.
    pub replaced: bool,
    /// The restored tree's version id; the id it had when it needed a
    /// new one (the image already had a version by that id).
    pub version: String,
    pub restored_from: Option<String>,
    /// The version it replaced (kept until `gc`).
    pub previous: Option<String>,
    pub published: Option<crate::publish::Outcome>,
    pub entries: usize,
    pub bytes: u64,
    /// The checksum that was verified, if any.
    pub sha256: Option<String>,
    /// Setuid and setgid files restored, as `/path`: kept because Debian
    /// needs them, listed so the admin sees what an archive grants.
    pub setid_files: Vec<String>,
    pub seconds: f64,
}

impl SnapshotResult {
    /// The archive and its checksum file, as `nfsroot snapshot` prints them.
    pub fn text(&self) -> String {
        format!(
            "wrote {}\n      {}\n",
            self.path.display(),
            self.checksum_path.display()
        )
    }
}

impl SnapshotInfo {
    /// One line of `nfsroot snapshot list`.
    pub fn line(&self) -> String {
        format!(
            "{}  {:>8.1} MB  {}  {}\n",
            self.created.as_deref().unwrap_or("-"),
            self.bytes as f64 / 1e6,
            self.kernels.join(","),
            self.path.display()
        )
    }
}

/// The text of `nfsroot snapshot list`: a line per snapshot, or a sentence
/// saying there are none.
pub fn list_text(layout: &Layout, image: &str, v: &[SnapshotInfo]) -> String {
    if v.is_empty() {
        let dir = layout.snapshots_dir(image);
        return format!("no snapshots of {image} (in {})\n", dir.display());
    }
    v.iter().map(SnapshotInfo::line).collect()
}

impl VerifyResult {
    pub fn text(&self) -> String {
        format!(
            "{}: ok ({} entries, sha256 {})\n",
            self.path.display(),
            self.entries,
            self.sha256
        )
    }
}

impl RestoreResult {
    /// Human-readable summary, setuid and setgid files listed.
    pub fn text(&self) -> String {
        let mut s = format!(
            "restored {} entries ({:.0} MB) into {} as version {}{} in {:.1} s\n",
            self.entries,
            self.bytes as f64 / 1e6,
            self.path.display(),
            self.version,
            match &self.previous {
                Some(p) => format!(", keeping version {p}"),
                None => String::new(),
            },
            self.seconds
        );
        if let Some(p) = &self.published {
            s += &p.text(false);
        }
        if !self.setid_files.is_empty() {
            s.push_str(&format!(
                "{} setuid/setgid files:\n",
                self.setid_files.len()
            ));
            for f in &self.setid_files {
                s.push_str(&format!("  {f}\n"));
            }
        }
        s
    }
}

/// Options of `nfsroot snapshot list`.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    pub image: Option<String>,
}

/// One snapshot on disk.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub bytes: u64,
    pub created: Option<String>,
    pub kernels: Vec<String>,
    pub entries: Option<usize>,
    pub has_checksum: bool,
    pub has_manifest: bool,
}

/// Options of `nfsroot snapshot verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOpts {
    pub file: PathBuf,
}

/// A verified snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyResult {
    pub path: PathBuf,
    pub sha256: String,
    pub entries: usize,
    pub manifest_checked: bool,
}

/// Options of `nfsroot diff`.
#[derive(Debug, Clone, Default)]
pub struct DiffOpts {
    pub image: String,
    /// Tree version (BUILD_ID); `None` for the current tree.
    pub tree: Option<String>,
    pub file: PathBuf,
}

/// The JSON manifest beside a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub image: String,
    pub created: String,
    pub archive: String,
    #[serde(with = "crate::compression::short")]
    pub compression: Compression,
    pub sha256: String,
    /// `/etc/nfsroot-release` as key=value pairs.
    pub release: BTreeMap<String, String>,
    /// Kernel versions from `/boot/vmlinuz-*`, oldest first.
    pub kernels: Vec<String>,
    pub packages: Vec<Package>,
    /// Names of the uids and gids in the tree, from the image's own
    /// passwd and group files (the archive itself carries numeric ids).
    pub users: BTreeMap<u32, String>,
    pub groups: BTreeMap<u32, String>,
    pub notes: Vec<String>,
    pub entries: BTreeMap<PathBuf, EntryMeta>,
}

/// `<file>.sha256`.
pub fn checksum_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// `<file>.manifest.json`.
pub fn manifest_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".manifest.json");
    PathBuf::from(s)
}

/// Read the manifest beside `archive`.
pub fn read_manifest(archive: &Path) -> Result<Manifest> {
    let p = manifest_path(archive);
    let text = std::fs::read(&p).with_context(|| format!("reading manifest {}", p.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing manifest {}", p.display()))
}
