//! Extracting an archive into a staging directory, refusing anything that
//! could reach outside it.
//!
//! Every member path must be relative and free of `..`; every directory on
//! the way to it must be a real directory created inside the staging tree
//! (never a symlink, which is how "write through a link" attacks work);
//! the final name is unlinked, never followed, before it is created with
//! `O_EXCL|O_NOFOLLOW`; a hard link must point at a member already
//! extracted under the same rules. The first refused member stops the
//! restore with its name. Metadata goes on in the order the kernel demands:
//! owner first (chown clears setuid bits and file capabilities), then the
//! mode, then xattrs and ACLs (a chmod after an ACL would overwrite its
//! mask with the group bits, which bsdtar does not set to the mask), then
//! the mtime; directories last and
//! deepest first, since creating their contents moves their mtimes.

use super::tar::{Header, Kind, TarReader};
use super::tree;
use anyhow::{Context, Result, bail};
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What an extraction did.
#[derive(Debug, Default)]
pub struct Extracted {
    pub entries: usize,
    pub bytes: u64,
}

/// Member path to a safe relative path, or a refusal naming the member.
fn safe_rel(p: &[u8], what: &str, member: &str) -> Result<PathBuf> {
    if p.starts_with(b"/") {
        bail!("refusing member {member}: {what} is an absolute path");
    }
    let mut out = PathBuf::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("refusing member {member}: {what} contains '..'"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Make sure every directory above `rel` inside `root` is a real
/// directory, creating missing ones.
fn prepare_parents(root: &Path, rel: &Path, member: &str) -> Result<()> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => bail!(
                "refusing member {member}: its parent {} is a symlink; writing \
                 through it could leave the staging tree",
                cur.strip_prefix(root).unwrap_or(&cur).display()
            ),
            Ok(_) => bail!(
                "refusing member {member}: its parent {} is not a directory",
                cur.strip_prefix(root).unwrap_or(&cur).display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).with_context(|| format!("creating {}", cur.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", cur.display())),
        }
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", p.display()))
}

fn os_err(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(what);
    }
    Ok(())
}

/// Owner, mode, xattrs, mtime, in that order.
fn apply_meta(path: &Path, h: &Header) -> Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is a valid C string.
    let rc = unsafe { libc::lchown(c.as_ptr(), h.uid, h.gid) };
    os_err(rc, || format!("setting owner of {}", path.display()))?;
    if h.kind != Kind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(h.mode & 0o7777))
            .with_context(|| format!("setting mode of {}", path.display()))?;
    }
    for (k, v) in &h.xattrs {
        tree::set_xattr(path, k, v)?;
    }
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: h.mtime as libc::time_t,
            tv_nsec: i64::from(h.mtime_nsec) as _,
        },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    os_err(rc, || format!("setting mtime of {}", path.display()))
}

/// Extract `input` (a decompressed tar stream) into the existing empty
/// directory `root`.
pub fn extract(input: impl Read, root: &Path) -> Result<Extracted> {
    let mut tar = TarReader::new(input);
    let mut dirs: Vec<(PathBuf, Header)> = Vec::new();
    let mut done = Extracted::default();
    while let Some(h) = tar.next_header()? {
        let member = h.display();
        let rel = safe_rel(&h.path, "its path", &member)?;
        done.entries += 1;
        if rel.as_os_str().is_empty() {
            if h.kind != Kind::Dir {
                bail!("refusing member {member}: the archive root is not a directory");
            }
            dirs.push((root.to_path_buf(), h));
            continue;
        }
        prepare_parents(root, &rel, &member)?;
        let path = root.join(&rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                if h.kind == Kind::Dir {
                    dirs.push((path, h));
                    continue;
                }
                bail!("refusing member {member}: it would replace a directory");
            }
            Ok(_) => {
                fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let c = cstr(&path)?;
        match h.kind {
            Kind::Dir => {
                fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
                dirs.push((path, h));
                continue;
            }
            Kind::File => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let segs = h.sparse.clone().unwrap_or_else(|| vec![(0, h.size)]);
                let mut buf = vec![0u8; 256 * 1024];
                let mut data = tar.data();
                for (off, len) in segs {
                    let mut at = 0u64;
                    while at < len {
                        let want = (len - at).min(buf.len() as u64) as usize;
                        let n = data
                            .read(&mut buf[..want])
                            .with_context(|| format!("reading member {member}"))?;
                        if n == 0 {
                            bail!("archive is truncated inside member {member}");
                        }
                        f.write_all_at(&buf[..n], off + at)
                            .with_context(|| format!("writing {}", path.display()))?;
                        at += n as u64;
                    }
                    done.bytes += len;
                }
                f.set_len(h.size)
                    .with_context(|| format!("sizing {}", path.display()))?;
                drop(f);
            }
            Kind::Symlink => {
                let t = CString::new(h.link.clone()).context("symlink target has a NUL")?;
                // SAFETY: valid C strings.
                let rc = unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) };
                os_err(rc, || format!("creating symlink {}", path.display()))?;
            }
            Kind::Hardlink => {
                let trel = safe_rel(&h.link, "its link target", &member)?;
                let target = root.join(&trel);
                let ok = !trel.as_os_str().is_empty()
                    && prepare_parents_exist(root, &trel)
                    && fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir());
                if !ok {
                    bail!(
                        "refusing member {member}: hard link to {} which is not a \
                         file already extracted from this archive",
                        trel.display()
                    );
                }
                fs::hard_link(&target, &path)
                    .with_context(|| format!("linking {}", path.display()))?;
                continue;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let fmt = match h.kind {
                    Kind::Char => libc::S_IFCHR,
                    Kind::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(h.dev_major, h.dev_minor);
                // SAFETY: valid C string.
                let rc = unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev) };
                os_err(rc, || format!("creating node {}", path.display()))?;
            }
        }
        apply_meta(&path, &h).with_context(|| format!("member {member}"))?;
    }
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, h) in &dirs {
        apply_meta(p, h).with_context(|| format!("member {}", h.display()))?;
    }
    Ok(done)
}

/// Whether every directory above `rel` exists as a real directory.
fn prepare_parents_exist(root: &Path, rel: &Path) -> bool {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        if !fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_dir()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_named() {
        let e = safe_rel(b"/etc/passwd", "its path", "/etc/passwd").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = safe_rel(b"a/../../x", "its path", "a/../../x").unwrap_err();
        assert!(e.to_string().contains("'..'"), "{e}");
        assert_eq!(safe_rel(b"a//./b", "p", "m").unwrap(), PathBuf::from("a/b"));
    }
}
