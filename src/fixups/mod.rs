//! The diskless fixups: small, idempotent edits of a root tree.
//!
//! Each fixup is one module with `fn apply(root, ctx) -> Result<bool>`
//! (true when it changed something), working only below `root` and never
//! following a symlink out of it: files are replaced by rename, so a
//! symlink at the destination is replaced rather than written through.
//! Running the whole list twice changes nothing the second time.

use crate::fsutil;
use crate::profile::Profile;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub mod fstab;
pub mod hostname;
pub mod identity;
pub mod logs;
pub mod mtab;
pub mod network;
pub mod release;

/// What the fixups know about the build.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub profile: &'a Profile,
    /// `server:/path` of the per-host log export, if the nodes mount one.
    pub logs_export: Option<String>,
    pub build_id: String,
    pub build_date: String,
    pub profile_digest: String,
}

/// A fixup: its name (for progress and errors) and its function.
pub type Fixup = (&'static str, fn(&Path, &Ctx<'_>) -> Result<bool>);

/// Every fixup, in the order they run.
pub const ALL: &[Fixup] = &[
    ("fstab", fstab::apply),
    ("network", network::apply),
    ("mtab", mtab::apply),
    ("hostname", hostname::apply),
    ("logs", logs::apply),
    ("identity", identity::apply),
    ("release", release::apply),
];

/// Run every fixup; returns the names of those that changed something.
pub fn apply_all(root: &Path, ctx: &Ctx<'_>) -> Result<Vec<&'static str>> {
    let mut changed = Vec::new();
    for (name, f) in ALL {
        if f(root, ctx).with_context(|| format!("fixup {name}"))? {
            changed.push(*name);
        }
    }
    Ok(changed)
}

/// `rel` (absolute inside the image) as a host path below `root`.
pub fn at(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// Write `content` at `rel` unless it is already exactly that (same bytes,
/// regular file, same mode). Returns whether it wrote.
pub fn write_file(root: &Path, rel: &str, content: &str, mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let p = at(root, rel);
    if let Ok(m) = std::fs::symlink_metadata(&p)
        && m.is_file()
        && m.permissions().mode() & 0o7777 == mode
        && std::fs::read(&p).ok().as_deref() == Some(content.as_bytes())
    {
        return Ok(false);
    }
    if let Some(dir) = p.parent() {
        fsutil::mkdir_p(dir)?;
    }
    fsutil::atomic_write_mode(&p, content.as_bytes(), mode)?;
    Ok(true)
}

/// Make `rel` a symlink to `target` unless it already is.
pub fn symlink(root: &Path, rel: &str, target: &str) -> Result<bool> {
    let p = at(root, rel);
    if std::fs::read_link(&p).ok().as_deref() == Some(Path::new(target)) {
        return Ok(false);
    }
    if let Some(dir) = p.parent() {
        fsutil::mkdir_p(dir)?;
    }
    let tmp = p.with_file_name(format!(
        "{}{}-link",
        fsutil::TEMP_PREFIX,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("replacing {}", p.display()))?;
    Ok(true)
}

/// Remove `rel` (a file or symlink) if present.
pub fn remove(root: &Path, rel: &str) -> Result<bool> {
    let p = at(root, rel);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// Create a directory (and parents) with `mode` unless it exists.
pub fn dir(root: &Path, rel: &str, mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let p = at(root, rel);
    if p.is_dir() {
        return Ok(false);
    }
    fsutil::mkdir_p(&p)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

#[cfg(test)]
pub mod testutil {
    //! A fake root and a context for fixup unit tests.
    use super::*;

    pub fn profile(extra: &str) -> Profile {
        crate::profile::parse(
            &format!("name = \"t\"\n{extra}"),
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap()
        .profile
    }

    pub fn ctx(p: &Profile) -> Ctx<'_> {
        Ctx {
            profile: p,
            logs_export: if p.nfs.root_mode == "ro" {
                Some("10.0.2.2:/srv/logs/t".into())
            } else {
                None
            },
            build_id: "20260101T000000Z-abcdef".into(),
            build_date: "2026-01-01T00:00:00Z".into(),
            profile_digest: "00".repeat(32),
        }
    }

    /// A root with the files a freshly bootstrapped Debian has.
    pub fn fake_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "etc/network",
            "etc/ssh",
            "usr/share/zoneinfo/Etc",
            "usr/sbin",
            "var/lib/dbus",
            "root",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("etc/hostname"), "buildhost\n").unwrap();
        std::fs::write(r.join("etc/resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
        std::fs::write(
            r.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key.pub"), "pub").unwrap();
        std::fs::write(r.join("usr/sbin/sshd"), "").unwrap();
        std::fs::write(
            r.join("etc/shadow"),
            "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/mtab"), "stale\n").unwrap();
        std::fs::write(r.join("usr/share/zoneinfo/Etc/UTC"), "TZif").unwrap();
        std::fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        d
    }

    /// Apply `f` twice: the first run must change, the second must not.
    pub fn idempotent(f: fn(&Path, &Ctx<'_>) -> Result<bool>, root: &Path, c: &Ctx<'_>) {
        assert!(f(root, c).unwrap(), "first run should change the tree");
        assert!(!f(root, c).unwrap(), "second run should change nothing");
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;

    #[test]
    fn all_fixups_are_idempotent_together() {
        for extra in ["", "[nfs]\nroot_mode = \"rw\"\n"] {
            let p = profile(extra);
            let c = ctx(&p);
            let d = fake_root();
            assert!(!super::apply_all(d.path(), &c).unwrap().is_empty());
            assert!(super::apply_all(d.path(), &c).unwrap().is_empty());
        }
    }
}
