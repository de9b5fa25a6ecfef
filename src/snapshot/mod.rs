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
//! The CLI (`snapshot`, `snapshot list|verify`, `restore`, `diff`) lives in
//! `cli.rs`; each command here returns a `Serialize` result for `--json`.

pub mod acl;
pub mod at;
pub mod compress;
mod create;
pub mod extract;
pub mod pgz;
pub mod tar;
pub mod tree;

pub use crate::compression::Compression;
pub use crate::facts::Package;
pub use create::run_snapshot;
pub use tree::{Change, EntryMeta, TreeDiff, diff_maps, scan_tree};

use crate::fsutil;
use crate::image::{self, Layout};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tar::{Kind, TarReader};

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

/// Read the manifest beside `archive`.
pub fn read_manifest(archive: &Path) -> Result<Manifest> {
    let p = manifest_path(archive);
    let text = std::fs::read(&p).with_context(|| format!("reading manifest {}", p.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing manifest {}", p.display()))
}

/// Check `archive` against its `.sha256` file; returns the digest.
/// `Ok(None)` when there is no checksum file.
pub fn check_checksum(archive: &Path) -> Result<Option<String>> {
    let sums = checksum_path(archive);
    let text = match std::fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sums.display())),
    };
    let want = text
        .split_whitespace()
        .next()
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("{} holds no sha256 digest", sums.display()))?
        .to_ascii_lowercase();
    let got = fsutil::sha256_file(archive)?;
    if got != want {
        bail!(
            "checksum mismatch for {}: {} says {want}, the file hashes to {got}; \
             the archive is damaged or was replaced",
            archive.display(),
            sums.display()
        );
    }
    Ok(Some(got))
}

/// Content hash of a member's data, holes of a sparse file as zeros.
fn hash_member(h: &tar::Header, data: &mut impl Read) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let segs = h.sparse.clone().unwrap_or_else(|| vec![(0, h.size)]);
    let mut buf = vec![0u8; 256 * 1024];
    let zeros = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    let zero_to = |hasher: &mut Sha256, pos: &mut u64, to: u64| {
        while *pos < to {
            let n = (to - *pos).min(zeros.len() as u64) as usize;
            hasher.update(&zeros[..n]);
            *pos += n as u64;
        }
    };
    for (off, len) in segs {
        zero_to(&mut hasher, &mut pos, off);
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = data.read(&mut buf[..want])?;
            if n == 0 {
                bail!("archive is truncated inside {}", h.display());
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
            pos += n as u64;
        }
    }
    zero_to(&mut hasher, &mut pos, h.size);
    Ok(hex::encode(hasher.finalize()))
}

/// The [`EntryMeta`] records of every member of an archive.
pub fn archive_meta(archive: &Path) -> Result<BTreeMap<PathBuf, EntryMeta>> {
    archive_meta_against(archive, None)
}

/// [`archive_meta`] for a comparison with `expect`: a file whose kind or
/// size differs from its expected entry (or that has none) is not hashed,
/// since it differs anyway. Hashing a sparse file costs its logical size
/// (holes hash as zeros), which an archive sets at will; this bounds the
/// cost by what the other side of the comparison holds.
fn archive_meta_against(
    archive: &Path,
    expect: Option<&BTreeMap<PathBuf, EntryMeta>>,
) -> Result<BTreeMap<PathBuf, EntryMeta>> {
    let input = compress::open_decompressed(archive, None)?;
    let mut tar = TarReader::new(input);
    let mut out: BTreeMap<PathBuf, EntryMeta> = BTreeMap::new();
    let mut groups: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    let ctx = || format!("reading {}", archive.display());
    while let Some(h) = tar.next_header().with_context(ctx)? {
        use std::os::unix::ffi::OsStrExt;
        let key = tree::key_of(Path::new(std::ffi::OsStr::from_bytes(&h.path)));
        if h.kind == Kind::Hardlink {
            let t = tree::key_of(Path::new(std::ffi::OsStr::from_bytes(&h.link)));
            let mut m = out.get(&t).cloned().with_context(|| {
                format!("member {}: hard link to a missing member", h.display())
            })?;
            m.link_group = None;
            groups
                .entry(t.clone())
                .or_insert_with(|| vec![t])
                .push(key.clone());
            out.insert(key, m);
            continue;
        }
        let wanted = expect.is_none_or(|e| {
            e.get(&key)
                .is_some_and(|m| m.kind == Kind::File && m.size == h.size)
        });
        let sha256 = if h.kind == Kind::File && wanted {
            Some(hash_member(&h, &mut tar.data()).with_context(ctx)?)
        } else {
            None
        };
        out.insert(
            key,
            EntryMeta {
                kind: h.kind,
                mode: h.mode,
                uid: h.uid,
                gid: h.gid,
                mtime: h.mtime,
                mtime_nsec: h.mtime_nsec,
                size: if h.kind == Kind::File { h.size } else { 0 },
                sha256,
                target: (h.kind == Kind::Symlink)
                    .then(|| String::from_utf8_lossy(&h.link).into_owned()),
                rdev: matches!(h.kind, Kind::Char | Kind::Block)
                    .then_some((h.dev_major, h.dev_minor)),
                xattrs: tree::xattr_map(&h.xattrs),
                link_group: None,
            },
        );
    }
    tree::set_link_groups(&mut out, groups.into_values());
    Ok(out)
}

/// Summarize a non-empty diff in a few lines for an error message.
fn diff_summary(d: &TreeDiff) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.extend(d.added.iter().map(|p| format!("only in archive: {p}")));
    lines.extend(d.removed.iter().map(|p| format!("only in manifest: {p}")));
    lines.extend(
        d.modified
            .iter()
            .chain(&d.metadata)
            .map(|c| format!("{}: {}", c.path, c.fields.join(", "))),
    );
    let n = lines.len();
    lines.truncate(10);
    if n > 10 {
        lines.push(format!("... and {} more", n - 10));
    }
    lines.join("\n")
}

/// `nfsroot snapshot verify`: the checksum, then every archive member
/// against the manifest.
pub fn run_verify(opts: &VerifyOpts) -> Result<VerifyResult> {
    let sha256 = check_checksum(&opts.file)?.with_context(|| {
        format!(
            "{} has no checksum file {}",
            opts.file.display(),
            checksum_path(&opts.file).display()
        )
    })?;
    let manifest_checked = manifest_path(&opts.file).exists();
    let man = match manifest_checked {
        true => Some(read_manifest(&opts.file)?),
        false => None,
    };
    let have = archive_meta_against(&opts.file, man.as_ref().map(|m| &m.entries))?;
    if let Some(man) = man {
        if man.sha256 != sha256 {
            bail!(
                "manifest of {} names sha256 {} but the archive is {sha256}",
                opts.file.display(),
                man.sha256
            );
        }
        let d = diff_maps(&man.entries, &have);
        if !d.is_empty() {
            bail!(
                "{} does not match its manifest:\n{}",
                opts.file.display(),
                diff_summary(&d)
            );
        }
    }
    Ok(VerifyResult {
        path: opts.file.clone(),
        sha256,
        entries: have.len(),
        manifest_checked,
    })
}

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
    let exists = std::fs::symlink_metadata(&dest).is_ok();
    if exists && !opts.force {
        bail!(
            "image {name} exists at {}; pass --force to replace it (the old tree \
             stays in place until the restored one is ready)",
            dest.display()
        );
    }
    if exists && let Some(m) = fsutil::mounts_below(&dest)?.first() {
        bail!(
            "{} is mounted inside image {name}; unmount it before restoring",
            m.display()
        );
    }
    let staging_parent = layout.staging_dir(&name);
    let staging = staging_parent.join("restore");
    fsutil::remove_tree(&staging)?;
    fsutil::mkdir_p(&staging)?;
    let total = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = crate::progress::bytes_bar(total, opts.progress);
    let extracted = compress::open_decompressed(file, bar.clone()).and_then(|input| {
        let o = extract::ExtractOpts {
            allow_devices: opts.allow_devices,
        };
        extract::extract(input, &staging, &o)
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let extracted = match extracted {
        Ok(x) => x,
        Err(e) => {
            let cleanup = fsutil::remove_tree(&staging);
            let _ = std::fs::remove_dir(&staging_parent);
            let e = e.context(format!(
                "restoring {} into image {name} failed; the image is untouched",
                file.display()
            ));
            return Err(match cleanup {
                Ok(()) => e,
                Err(c) => e.context(format!("and cleaning up staging failed: {c:#}")),
            });
        }
    };
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
