//! Reading an archive back: its `.sha256`, and the [`EntryMeta`] of every
//! member (contents hashed as the manifest hashes them, holes as zeros),
//! which `snapshot verify` compares with the manifest and `diff` with a
//! live tree when an archive has no manifest. The reader is linear in the
//! archive's size; hashing a member is bounded by what the other side of a
//! comparison holds ([`archive_meta_against`]).

use super::tar::{self, Kind, TarReader};
use super::{
    EntryMeta, TreeDiff, VerifyOpts, VerifyResult, checksum_path, compress, diff_maps,
    manifest_path, read_manifest, tree,
};
use crate::fsutil;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

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
pub(super) fn archive_meta_against(
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
