//! Extracting an archive into a staging directory, refusing anything that
//! could reach outside it or hand a node more than the image should.
//!
//! Every member path must be relative and free of `..`. Nothing is done
//! through a path string: the staging root is opened once and every
//! directory on the way to a member is opened relative to its parent with
//! `O_DIRECTORY|O_NOFOLLOW` ([`super::at`]), created when missing,
//! refused naming the member when it is a symlink or not a directory. The
//! final name is unlinked, never followed, and created relative to its
//! parent's fd (`O_CREAT|O_EXCL|O_NOFOLLOW` for files, `mkdirat`,
//! `symlinkat`, `mknodat`); a hard link must point at a member already
//! extracted under the same rules. The first refused member stops the
//! restore with its name. Restore extracts into a fresh staging directory
//! that nothing else writes, so the fds matter only against a racing
//! writer that should not be there; the residual risk is a process of
//! the master's root that writes into `<base-dir>/.nfsroot/staging`
//! during a restore, and even it cannot redirect a write outside, since
//! no step follows a link it could plant.
//!
//! What the archive says is kept except where it would hand a node the
//! master: the image root becomes `root:root 0755` without ACLs whatever
//! the archive says; device nodes are refused outside `/dev` (naming the
//! member) unless the admin passes `--allow-devices`; setuid and setgid
//! files are kept, since Debian needs them, and listed in the result so
//! the admin sees them.
//!
//! Metadata goes on in the order the kernel demands: owner first (chown
//! clears setuid bits and file capabilities), then the mode, then xattrs
//! and ACLs (a chmod after an ACL would overwrite its mask with the group
//! bits, which bsdtar does not set to the mask), then the mtime;
//! directories last and deepest first, since creating their contents
//! moves their mtimes.

use super::acl;
use super::at::{self, components, open_dir_at, proc_path};
use super::tar::{Header, Kind, TarReader};
use anyhow::{Context, Result, bail};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What an extraction may do beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOpts {
    /// Restore device nodes outside `/dev` too.
    pub allow_devices: bool,
}

/// What an extraction did.
#[derive(Debug, Default)]
pub struct Extracted {
    pub entries: usize,
    pub bytes: u64,
    /// Setuid or setgid files, as `/path`, in archive order.
    pub setid: Vec<String>,
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

/// The directory holding `rel` inside the staging root and `rel`'s last
/// name, opened component by component without following a symlink;
/// missing directories are created when `create`.
fn open_parent<'a>(
    root: BorrowedFd<'_>,
    rel: &'a Path,
    create: bool,
    member: &str,
) -> Result<(OwnedFd, &'a OsStr)> {
    let comps = components(rel).with_context(|| format!("refusing member {member}"))?;
    let (last, dirs) = comps.split_last().context("empty member path")?;
    let mut cur = rfs::openat(root, ".", at::dir_flags(), Mode::empty())
        .context("opening the staging root")?;
    let mut so_far = PathBuf::new();
    for c in dirs {
        so_far.push(c);
        cur = match open_dir_at(cur.as_fd(), c) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                // A directory the archive does not list: 0755 as tar
                // makes it.
                rfs::mkdirat(&cur, *c, Mode::from_raw_mode(0o755))
                    .with_context(|| format!("creating {}", so_far.display()))?;
                open_dir_at(cur.as_fd(), c)
                    .with_context(|| format!("opening {}", so_far.display()))?
            }
            Err(e) => {
                let why = match rfs::statat(&cur, *c, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        "is a symlink; writing through it could leave the staging tree"
                    }
                    Ok(_) => "is not a directory",
                    Err(_) => "cannot be opened",
                };
                return Err(anyhow::Error::from(e).context(format!(
                    "refusing member {member}: its parent {} {why}",
                    so_far.display()
                )));
            }
        };
    }
    Ok((cur, last))
}

fn timestamps(h: &Header) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: h.mtime,
            tv_nsec: i64::from(h.mtime_nsec) as _,
        },
    }
}

/// Owner, mode, xattrs, mtime of an open file or directory.
fn apply_meta_fd(fd: BorrowedFd<'_>, h: &Header, mode: u32) -> Result<()> {
    let (uid, gid) = ids(h)?;
    rfs::fchown(fd, Some(uid), Some(gid)).context("setting owner")?;
    rfs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777)).context("setting mode")?;
    for (k, v) in &h.xattrs {
        rfs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty())
            .with_context(|| format!("setting xattr {}", String::from_utf8_lossy(k)))?;
    }
    rfs::futimens(fd, &timestamps(h)).context("setting mtime")?;
    Ok(())
}

/// The same for a symlink, device node or fifo, by name in its parent.
fn apply_meta_at(dir: BorrowedFd<'_>, name: &OsStr, h: &Header) -> Result<()> {
    let (uid, gid) = ids(h)?;
    rfs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .context("setting owner")?;
    if h.kind != Kind::Symlink {
        // fchmodat has no no-follow flag before Linux 6.6; the name was
        // just created by mknodat in a directory opened without
        // following links, so it is not a symlink.
        rfs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(h.mode & 0o7777),
            AtFlags::empty(),
        )
        .context("setting mode")?;
    }
    if !h.xattrs.is_empty() {
        let p = proc_path(&dir, name);
        for (k, v) in &h.xattrs {
            rfs::lsetxattr(&p, OsStr::from_bytes(k), v, XattrFlags::empty())
                .with_context(|| format!("setting xattr {}", String::from_utf8_lossy(k)))?;
        }
    }
    rfs::utimensat(dir, name, &timestamps(h), AtFlags::SYMLINK_NOFOLLOW)
        .context("setting mtime")?;
    Ok(())
}

/// The member's owner; `-1` would mean "leave unchanged" to chown.
fn ids(h: &Header) -> Result<(rfs::Uid, rfs::Gid)> {
    if h.uid == u32::MAX || h.gid == u32::MAX {
        bail!("owner {}:{} is not a valid id", h.uid, h.gid);
    }
    Ok((
        rfs::Uid::from_raw_unchecked(h.uid),
        rfs::Gid::from_raw_unchecked(h.gid),
    ))
}

/// Write a regular member's data into the new file `f`.
fn write_file(f: &File, h: &Header, data: &mut impl Read, member: &str) -> Result<u64> {
    let segs = h.sparse.clone().unwrap_or_else(|| vec![(0, h.size)]);
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0;
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
            f.write_all_at(&buf[..n], off + at)?;
            at += n as u64;
        }
        written += len;
    }
    f.set_len(h.size)?;
    Ok(written)
}

/// Whether a member may be restored at all.
fn check_allowed(h: &Header, rel: &Path, member: &str, opts: &ExtractOpts) -> Result<()> {
    let in_dev = rel.components().count() > 1 && rel.starts_with("dev");
    if matches!(h.kind, Kind::Char | Kind::Block) && !in_dev && !opts.allow_devices {
        bail!(
            "refusing member {member}: a device node outside /dev gives whoever can \
             read or write it on a node the device itself; pass --allow-devices to \
             restore it anyway"
        );
    }
    Ok(())
}

/// Extract `input` (a decompressed tar stream) into the existing empty
/// directory `root`.
pub fn extract(input: impl Read, root: &Path, opts: &ExtractOpts) -> Result<Extracted> {
    let root_fd =
        at::open_dir(root).with_context(|| format!("opening staging {}", root.display()))?;
    let mut tar = TarReader::new(input);
    let mut dirs: Vec<(PathBuf, Header)> = Vec::new();
    let mut root_hdr: Option<Header> = None;
    let mut done = Extracted::default();
    while let Some(h) = tar.next_header()? {
        let member = h.display();
        let rel = safe_rel(&h.path, "its path", &member)?;
        done.entries += 1;
        if rel.as_os_str().is_empty() {
            if h.kind != Kind::Dir {
                bail!("refusing member {member}: the archive root is not a directory");
            }
            root_hdr = Some(h);
            continue;
        }
        check_allowed(&h, &rel, &member, opts)?;
        let (dir, name) = open_parent(root_fd.as_fd(), &rel, true, &member)?;
        match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if h.kind == Kind::Dir {
                    dirs.push((rel, h));
                    continue;
                }
                bail!("refusing member {member}: it would replace a directory");
            }
            Ok(_) => rfs::unlinkat(&dir, name, AtFlags::empty())
                .with_context(|| format!("replacing {member}"))?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {member}")),
        }
        let ctx = || format!("member {member}");
        match h.kind {
            Kind::Dir => {
                rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)).with_context(ctx)?;
                dirs.push((rel, h));
            }
            Kind::File => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd =
                    rfs::openat(&dir, name, flags, Mode::from_raw_mode(0o600)).with_context(ctx)?;
                let f = File::from(fd);
                done.bytes += write_file(&f, &h, &mut tar.data(), &member).with_context(ctx)?;
                apply_meta_fd(f.as_fd(), &h, h.mode).with_context(ctx)?;
                if h.mode & 0o6000 != 0 {
                    done.setid.push(format!("/{}", rel.display()));
                }
            }
            Kind::Symlink => {
                let t = OsStr::from_bytes(&h.link);
                rfs::symlinkat(t, &dir, name).with_context(ctx)?;
                apply_meta_at(dir.as_fd(), name, &h).with_context(ctx)?;
            }
            Kind::Hardlink => link_member(root_fd.as_fd(), &dir, name, &h, &member)?,
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match h.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rfs::makedev(h.dev_major, h.dev_minor);
                rfs::mknodat(&dir, name, ft, Mode::from_raw_mode(0o600), dev).with_context(ctx)?;
                apply_meta_at(dir.as_fd(), name, &h).with_context(ctx)?;
            }
        }
    }
    finish_dirs(root_fd.as_fd(), dirs, root_hdr)?;
    Ok(done)
}

/// A hard link to a member already extracted (never a directory).
fn link_member(
    root: BorrowedFd<'_>,
    dir: &OwnedFd,
    name: &OsStr,
    h: &Header,
    member: &str,
) -> Result<()> {
    let trel = safe_rel(&h.link, "its link target", member)?;
    let refuse = || {
        anyhow::anyhow!(
            "refusing member {member}: hard link to {} which is not a file already \
             extracted from this archive",
            trel.display()
        )
    };
    if trel.as_os_str().is_empty() {
        return Err(refuse());
    }
    let (tdir, tname) = open_parent(root, &trel, false, member).map_err(|_| refuse())?;
    match rfs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {}
        _ => return Err(refuse()),
    }
    rfs::linkat(&tdir, tname, dir, name, AtFlags::empty())
        .with_context(|| format!("linking member {member}"))?;
    Ok(())
}

/// Directory metadata, deepest first; the root last, as `root:root 0755`.
fn finish_dirs(
    root: BorrowedFd<'_>,
    mut dirs: Vec<(PathBuf, Header)>,
    root_hdr: Option<Header>,
) -> Result<()> {
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, h) in &dirs {
        let member = h.display();
        let (parent, name) = open_parent(root, rel, false, &member)?;
        let fd = open_dir_at(parent.as_fd(), name).with_context(|| format!("member {member}"))?;
        apply_meta_fd(fd.as_fd(), h, h.mode).with_context(|| format!("member {member}"))?;
    }
    let fd = rfs::openat(root, ".", at::dir_flags(), Mode::empty()).context("opening staging")?;
    // The image root is every node's `/`: whatever the archive says, it
    // belongs to root, is 0755 and carries no ACL that could widen that.
    let Some(mut h) = root_hdr else {
        rfs::fchown(&fd, Some(rfs::Uid::ROOT), Some(rfs::Gid::ROOT))
            .context("setting owner of the image root")?;
        rfs::fchmod(&fd, Mode::from_raw_mode(0o755)).context("setting mode of the image root")?;
        return Ok(());
    };
    h.uid = 0;
    h.gid = 0;
    h.xattrs
        .retain(|(k, _)| k != acl::ACCESS && k != acl::DEFAULT);
    apply_meta_fd(fd.as_fd(), &h, 0o755).context("the image root")
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

    #[test]
    fn devices_only_under_dev() {
        let h = Header {
            kind: Kind::Char,
            ..Header::default()
        };
        let o = ExtractOpts::default();
        assert!(check_allowed(&h, Path::new("dev/null"), "dev/null", &o).is_ok());
        for p in ["dev", "etc/null", "devices/x"] {
            let e = check_allowed(&h, Path::new(p), p, &o).unwrap_err();
            assert!(e.to_string().contains(&format!("member {p}:")), "{e}");
            assert!(e.to_string().contains("--allow-devices"), "{e}");
        }
        let allow = ExtractOpts {
            allow_devices: true,
        };
        assert!(check_allowed(&h, Path::new("etc/null"), "etc/null", &allow).is_ok());
    }
}
